/* libFuzzer target: the Gemma 4 assistant loader (model/mtp.c) on any byte
 * string. A file either fails with a message naming it, or loads an
 * assistant whose centroid clusters (when it has a centroid head) hold every
 * token of the vocabulary exactly once. Broken invariants trap. */
#include "model/mtp.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    sl_err err;
    if (gguf_open_mem(&f, data, size, "fuzz.gguf", &err) != 0)
        return 0;
    sl_mtp *m = NULL;
    if (sl_mtp_from_gguf(&m, f, &err) != 0) {
        require(m == NULL && memchr(err.msg, '\0', sizeof err.msg) != NULL);
        require(strstr(err.msg, "fuzz.gguf") != NULL || strstr(err.msg, "out of memory") != NULL);
        return 0;
    }
    const sl_config *c = &m->cfg;
    require(c->d_backbone > 0 && c->n_layer >= 1 && m->lm_head.data && m->pre_proj.data &&
            m->post_proj.data && m->output_norm);
    if (m->centroids.data) {
        int V = c->n_vocab;
        require(m->per_centroid >= 2 && (int64_t)m->per_centroid * c->n_centroids == V);
        require(c->centroid_top_k >= 1 && c->centroid_top_k <= c->n_centroids);
        unsigned char *seen = calloc((size_t)V, 1);
        require(seen != NULL);
        for (int i = 0; i < V; i++) {
            int32_t t = m->cluster[i];
            require(t >= 0 && t < V && !seen[t]);
            seen[t] = 1;
        }
        free(seen);
    }
    sl_mtp_free(m);
    return 0;
}
