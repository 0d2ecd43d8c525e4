/* libFuzzer target for the stage metrics a worker sends its coordinator
 * (pl_metrics_decode): any text is read into at most 4 stages or refused
 * naming a line; what is read has histograms whose buckets add up to
 * their counts, and encodes back to text that reads back the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/metrics.h"

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void require_whole(const pl_hist *h)
{
    uint64_t total = 0;
    for (int i = 0; i <= h->n_bounds; i++)
        total += h->counts[i];
    require(total == h->n && h->sum >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    pl_stage_metrics m[4], back[4];
    sl_err err = {{0}};
    int n = pl_metrics_decode(text, m, 4, &err);
    if (n < 0) {
        require(strstr(err.msg, "stage metrics: ") == err.msg);
        free(text);
        return 0;
    }
    require(n <= 4);
    for (int i = 0; i < n; i++) {
        require(m[i].name[0] && memchr(m[i].name, '\0', sizeof m[i].name) && m[i].index >= 0);
        require_whole(&m[i].step_seconds);
        require_whole(&m[i].queue);
    }
    char *again = pl_metrics_encode(m, n);
    require(again != NULL);
    require(pl_metrics_decode(again, back, 4, &err) == n);
    for (int i = 0; i < n; i++)
        require(back[i].index == m[i].index && strcmp(back[i].name, m[i].name) == 0 &&
                back[i].tokens == m[i].tokens && back[i].step_seconds.n == m[i].step_seconds.n &&
                back[i].queue_depth == m[i].queue_depth);
    free(again);
    free(text);
    return 0;
}
