/* pipeline_ids MODEL [--no-bos] PROMPT...: prints, one line per prompt, the
 * token ids the one-process pipeline of `sluice run -m MODEL` feeds for it
 * (sl_pipeline_tokenize), so tests can hold `sluice tokenize` to them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/gguf.h"
#include "pipeline/client.h"
#include "pipeline/config.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: pipeline_ids MODEL [--no-bos] PROMPT...\n");
        return 2;
    }
    sl_err err = {{0}};
    gguf_file *f;
    sl_config mc;
    if (gguf_open(&f, argv[1], &err) || sl_config_from_gguf(&mc, f, &err)) {
        fprintf(stderr, "pipeline_ids: %s\n", err.msg);
        return 1;
    }
    gguf_close(f);
    static pl_config cfg;
    pl_config_default(&cfg, argv[1], mc.n_layer);
    cfg.limits.context = 4096;
    sl_pipeline_opts po;
    sl_pipeline_opts_default(&po);
    sl_pipeline *p;
    if (sl_pipeline_open(&p, &cfg, &po, &err)) {
        fprintf(stderr, "pipeline_ids: %s\n", err.msg);
        return 1;
    }
    int first = 2, rc = 0;
    bool no_bos = argc > 2 && strcmp(argv[2], "--no-bos") == 0;
    if (no_bos)
        first = 3;
    for (int a = first; a < argc && rc == 0; a++) {
        sl_gen_params gp = {.prompt = argv[a], .max_tokens = 1, .no_bos = no_bos};
        int32_t *ids;
        int n;
        if (sl_pipeline_tokenize(p, &gp, &ids, &n, &err)) {
            fprintf(stderr, "pipeline_ids: %s\n", err.msg);
            rc = 1;
            break;
        }
        putchar('[');
        for (int i = 0; i < n; i++)
            printf("%s%d", i ? ", " : "", ids[i]);
        puts("]");
        free(ids);
    }
    sl_pipeline_close(p);
    return rc;
}
