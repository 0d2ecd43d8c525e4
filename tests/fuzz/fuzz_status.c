/* libFuzzer target for what `sluice status` and the metrics port take from
 * outside: a worker's STATUS answer (a header frame decoded by the wire
 * layer, its text sanitised for a terminal) and the [IP:]PORT of
 * --metrics-port. The input's first byte picks which; the rest is the
 * header frame or the address text.
 *
 * A sanitised answer holds only printable ASCII, tabs and newlines, and
 * keeps its length; an accepted address has a port in [1, 65535] and a
 * dotted IPv4 host. Stage names from the answer's text are also rendered
 * as Prometheus labels, which must stay on one line each. Broken
 * invariants trap. */
#include "pipeline/metrics.h"
#include "pipeline/metrics_http.h"
#include "pipeline/status.h"
#include "pipeline/wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_text(const char *text)
{
    size_t len = strlen(text);
    char *copy = strdup(text);
    require(copy != NULL);
    pl_status_sanitize(copy);
    require(strlen(copy) == len);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)copy[i];
        require(ch == '\n' || ch == '\t' || (ch >= 0x20 && ch < 0x7f));
    }
    free(copy);
    /* the text as a stage name: each sample stays one line */
    pl_stage_metrics m;
    pl_stage_metrics_init(&m, text, 0);
    char *prom = pl_metrics_prometheus(&m, 1);
    require(prom != NULL);
    size_t samples = 0;
    for (const char *line = prom; *line;) {
        const char *nl = strchr(line, '\n');
        require(nl != NULL);
        if (*line != '#') {
            samples++;
            require(strncmp(line, "sluice_stage_", 13) == 0);
        }
        line = nl + 1;
    }
    /* 8 counters (foreign among them), the step histogram, the depth
     * histogram and the pool's 7 (threads, calls, split calls, threads
     * summed over split calls, op seconds, split seconds, barrier wait) */
    require(samples == (size_t)(8 + pl_n_step_bounds + 3 + pl_n_depth_bounds + 3 + 7));
    free(prom);
    char *plain = pl_metrics_text(&m, 1);
    require(plain != NULL);
    free(plain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        char *spec = malloc(n + 1);
        require(spec != NULL);
        memcpy(spec, body, n);
        spec[n] = '\0';
        char ip[64];
        int port = 0;
        sl_err err;
        if (pl_metrics_http_parse(spec, ip, sizeof ip, &port, &err) == 0)
            require(port >= 1 && port <= 65535 && strlen(ip) >= 7 && strspn(ip, "0123456789.") == strlen(ip));
        else
            require(strstr(err.msg, "metrics address") != NULL);
        free(spec);
        return 0;
    }
    uint8_t *frame = malloc(n ? n : 1);
    require(frame != NULL);
    memcpy(frame, body, n);
    const void *frames[1] = {frame};
    size_t sizes[1] = {n};
    pl_msg m;
    sl_err err;
    if (pl_msg_decode(&m, frames, sizes, 1, NULL, &err) == 0) {
        if (m.hdr->kind == SLUICE__MSG_KIND__MSG_STATUS && m.hdr->text)
            check_text(m.hdr->text);
        pl_msg_close(&m);
    }
    free(frame);
    return 0;
}
