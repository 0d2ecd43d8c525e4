/* The pipeline setup `sluice run` and `sluice serve` share (see pipecfg.h). */
#include "cli/pipecfg.h"

#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/gguf.h"
#include "cli/cli.h"
#include "pipeline/autoplace.h"
#include "stages/spec.h"

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

int cli_pipeline_add_draft(pl_config *cfg, const cli_pipe_opts *o, sl_err *err)
{
    return pl_config_add_speculative(cfg, o->draft, o->draft_k_set ? o->draft_k : 8, !o->draft_k_set,
                                     o->draft_threads, err);
}

/* A whole number option of these; CLI_USAGE after a message. */
static int take_int(const char *cmd, const char *name, const char *arg, int lo, int hi, int *dst)
{
    return cli_parse_int(arg, lo, hi, dst) ? cli_bad_number(cmd, name, arg, lo, hi, false) : 0;
}

int cli_pipe_option(const char *cmd, int c, const char *arg, cli_pipe_opts *o)
{
    switch (c) {
    case 'm': o->model = arg; return 0;
    case 'c': o->config = arg; return 0;
    case 'D': o->draft = arg; return 0;
    case 't': return take_int(cmd, "threads", arg, 1, 4096, &o->threads);
    case 'X': return take_int(cmd, "ctx", arg, 16, 1 << 24, &o->n_ctx);
    case 'd': return take_int(cmd, "draft-threads", arg, 1, 4096, &o->draft_threads);
    case 'V':
        o->kv_type = cli_kv_type(arg);
        o->kv_type_set = true;
        if (o->kv_type < 0)
            return cli_usage(cmd, NULL, "bad value '%s' for --kv-type: must be f32, f16, bf16 or q8_0", arg);
        return 0;
    case 'k':
        o->draft_auto = strcmp(arg, "auto") == 0;
        o->draft_k_set = !o->draft_auto;
        if (!o->draft_auto && cli_parse_int(arg, 0, SL_SPEC_K_MAX, &o->draft_k))
            return cli_usage(cmd, NULL, "bad value '%s' for --draft-k: must be auto or 0..%d", arg, SL_SPEC_K_MAX);
        return 0;
    default: return 1;
    }
}

int cli_pipe_check(const char *cmd, const cli_pipe_opts *o)
{
    if (!o->model == !o->config)
        return cli_usage(cmd, NULL, "give exactly one of -m FILE and -c CONFIG");
    if (!o->draft && (o->draft_k_set || o->draft_auto || o->draft_threads))
        return cli_usage(cmd, NULL, "--draft-k and --draft-threads need --draft");
    return 0;
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
