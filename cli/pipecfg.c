/* The pipeline setup `sluice run` and `sluice serve` share (see pipecfg.h). */
#include "cli/pipecfg.h"

#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/gguf.h"
#include "cli/cli.h"
#include "pipeline/autoplace.h"

static int default_config(pl_config *cfg, const cli_pipe_opts *o, sl_err *err)
{
    gguf_file *f;
    sl_config mc;
    if (gguf_open(&f, o->model, err))
        return -1;
    int rc = sl_config_from_gguf(&mc, f, err);
    gguf_close(f);
    if (rc)
        return -1;
    pl_config_default(cfg, o->model, mc.n_layer);
    int seqs = o->max_sequences;
    cfg->limits.max_sequences = seqs < 64 ? (seqs > 0 ? seqs : 1) : 64;
    cfg->limits.context = mc.n_ctx_train < 4096 ? mc.n_ctx_train : 4096;
    return 0;
}

int cli_pipeline_config(pl_config *cfg, const cli_pipe_opts *o, sl_err *err)
{
    if (o->config ? pl_config_load(cfg, o->config, err) : default_config(cfg, o, err))
        return -1;
    if (pl_config_resolve_auto(cfg, err))
        return -1;
    if (cli_check_machine(cfg, o->config ? o->config : o->model, err))
        return -1;
    if (o->n_ctx)
        cfg->limits.context = o->n_ctx;
    if (o->kv_type_set)
        cfg->limits.kv_type = o->kv_type;
    if (o->draft && cfg->spec.on)
        return sl_fail(err, "%s has a speculative section already; leave out --draft", o->config);
    return 0;
}

int cli_pipeline_add_draft(pl_config *cfg, const char *draft, int k, bool k_set, int threads, sl_err *err)
{
    return pl_config_add_speculative(cfg, draft, k_set ? k : 8, !k_set, threads, err);
}

char *cli_pipeline_prometheus(sl_pipeline *p)
{
    pl_stage_metrics *m;
    int n;
    if (sl_pipeline_metrics_all(p, &m, &n))
        return NULL;
    char *stages = pl_metrics_prometheus(m, n);
    free(m);
    pl_client_metrics cm;
    sl_pipeline_client_metrics(p, &cm);
    char *client = pl_metrics_prometheus_client(&cm);
    char *text = NULL;
    if (stages && client && (text = malloc(strlen(stages) + strlen(client) + 1)))
        strcat(strcpy(text, stages), client);
    free(stages);
    free(client);
    return text;
}
