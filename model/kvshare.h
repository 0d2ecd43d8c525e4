/* KV-cache sharing between layers (Gemma 3n/4): the last layers of the
 * stack read the K/V cache of an earlier layer instead of writing their
 * own. A pipeline may only cut the stack where no layer after the cut
 * reads a cache that lives before it. */
#ifndef SLUICE_KVSHARE_H
#define SLUICE_KVSHARE_H

#include <stdbool.h>

#include "util/err.h"

/* Fills src[il] with the layer whose cache layer il reads, or -1 when it
 * keeps its own. The last n_shared layers reuse the last own-cache layer of
 * the same kind: as in llama.cpp, that is layer n_own-2 for a sliding layer
 * and n_own-1 for a global one, where n_own = n_layer - n_shared. */
int kvshare_sources(int n_layer, int n_shared, const bool *is_swa, int *src, sl_err *err);

/* 0 when the stack may be cut before layer `cut` (0 < cut < n_layer);
 * otherwise -1 and an error naming a reading layer and its source. */
int kvshare_check_cut(int n_layer, const int *src, int cut, sl_err *err);

#endif
