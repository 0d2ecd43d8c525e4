/* Per-layer embeddings (Gemma 3n/4): where the per-layer rows are gathered
 * decides how many bytes cross each pipeline boundary. */
#ifndef SLUICE_PLE_H
#define SLUICE_PLE_H

#include <stddef.h>

typedef enum ple_mode {
    PLE_AT_LAYERS = 0, /* each layer stage gathers its own layers' slices locally (default:
                        * as fast in bench/ple.sh, fewer bytes per boundary) */
    PLE_AT_EMBED = 1   /* embed stage gathers all layers' rows and sends them on */
} ple_mode;

/* Bytes per token crossing the boundary before layer `cut` (0 < cut <=
 * n_layer) under `mode`, for activations of act_size bytes per element:
 * the residual row, and under PLE_AT_LAYERS the token id (each stage
 * gathers from it), under PLE_AT_EMBED instead the per-layer rows of the
 * layers still ahead (a stage drops the slices it consumed). cut 0 is the
 * embed stage's output. */
size_t ple_boundary_bytes(ple_mode mode, int n_layer, int d_model, int n_embd_per_layer,
                          int cut, size_t act_size);

#endif
