/* Bytes per token across a pipeline boundary under both PLE placements. */
#include "model/ple.h"
#include "tests/test.h"

int main(void)
{
    /* Gemma 4 E2B-like: 35 layers, d_model 1536, 256 per-layer dims, f32. */
    size_t local = ple_boundary_bytes(PLE_AT_LAYERS, 35, 1536, 256, 17, 4);
    CHECK(local == 1536 * 4 + 4);
    /* Cut before layer 17: the 18 layers ahead still need their rows. */
    size_t sent = ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 17, 4);
    CHECK(sent == local + 18 * 256 * 4);
    /* Gathering at the layers never costs more on the wire. */
    for (int cut = 1; cut <= 35; cut++)
        CHECK(ple_boundary_bytes(PLE_AT_LAYERS, 35, 1536, 256, cut, 2) <=
              ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, cut, 2));
    /* After the last layer no per-layer rows remain to send. */
    CHECK(ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 35, 2) == 1536 * 2 + 4);
    /* bf16 halves the activation part. */
    CHECK(ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 1, 2) == (1536 + 34 * 256) * 2 + 4);
    return test_finish("test_ple_bytes");
}
