#include "model/ple.h"

#include <stdint.h>

size_t ple_boundary_bytes(ple_mode mode, int n_layer, int d_model, int n_embd_per_layer,
                          int cut, size_t act_size)
{
    size_t bytes = (size_t)d_model * act_size;
    if (mode == PLE_AT_LAYERS)
        return bytes + sizeof(int32_t);
    /* the per-layer rows are f32 whatever the activations travel as */
    if (cut < n_layer)
        bytes += (size_t)(n_layer - cut) * (size_t)n_embd_per_layer * sizeof(float);
    return bytes;
}
