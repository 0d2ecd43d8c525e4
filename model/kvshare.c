#include "model/kvshare.h"

int kvshare_sources(int n_layer, int n_shared, const bool *is_swa, int *src, sl_err *err)
{
    int n_own = n_layer - n_shared;
    if (n_shared < 0 || n_own < 0)
        return sl_fail(err, "shared KV layers %d out of range for %d layers", n_shared, n_layer);
    /* A shared layer needs both a sliding and a global source below it. */
    if (n_shared > 0 && n_own < 2)
        return sl_fail(err, "%d shared KV layers leave %d own-cache layers; at least 2 are needed",
                       n_shared, n_own);
    for (int il = 0; il < n_layer; il++) {
        if (il < n_own) {
            src[il] = -1;
            continue;
        }
        int from = n_own - (is_swa[il] ? 2 : 1);
        if (is_swa[from] != is_swa[il])
            return sl_fail(err, "layer %d (%s) would share the KV cache of layer %d (%s)", il,
                           is_swa[il] ? "sliding" : "global", from,
                           is_swa[from] ? "sliding" : "global");
        src[il] = from;
    }
    return 0;
}

int kvshare_check_cut(int n_layer, const int *src, int cut, sl_err *err)
{
    if (cut <= 0 || cut >= n_layer)
        return sl_fail(err, "cut before layer %d is outside 1..%d", cut, n_layer - 1);
    for (int il = cut; il < n_layer; il++) {
        if (src[il] >= 0 && src[il] < cut)
            return sl_fail(err,
                           "cannot split before layer %d: layer %d reuses the KV cache of layer %d,"
                           " so layers %d..%d must run in the same stage",
                           cut, il, src[il], src[il], il);
    }
    return 0;
}
