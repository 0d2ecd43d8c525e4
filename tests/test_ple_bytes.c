/* Bytes per token across a pipeline boundary under both PLE placements. */
#include "model/ple.h"
#include "tests/test.h"

int main(void)
{
    /* Gemma 4 E2B-like: 35 layers, d_model 1536, 256 per-layer dims, f32. */
    size_t local = ple_boundary_bytes(PLE_AT_LAYERS, 35, 1536, 256, 17, 4);
    CHECK(local == 1536 * 4 + 4);
    /* Cut before layer 17: the 18 layers ahead still need their rows (and
     * nobody needs the token id). */
    size_t sent = ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 17, 4);
    CHECK(sent == 1536 * 4 + 18 * 256 * 4);
    /* The embed stage's output carries every layer's rows. */
    CHECK(ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 0, 4) == (1536 + 35 * 256) * 4);
    /* Gathering at the layers never costs more on the wire while layers
     * remain (after the last one only its token id is extra). */
    for (int cut = 0; cut < 35; cut++)
        CHECK(ple_boundary_bytes(PLE_AT_LAYERS, 35, 1536, 256, cut, 2) <=
              ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, cut, 2));
    /* After the last layer no per-layer rows remain to send. */
    CHECK(ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 35, 2) == 1536 * 2);
    /* bf16 halves the activation part; the per-layer rows stay f32. */
    CHECK(ple_boundary_bytes(PLE_AT_EMBED, 35, 1536, 256, 1, 2) == 1536 * 2 + 34 * 256 * 4);
    return test_finish("test_ple_bytes");
}
