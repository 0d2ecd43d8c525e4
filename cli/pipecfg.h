/* What `sluice run` and `sluice serve` share: building the pl_config of
 * -m FILE or -c CONFIG with the command-line overrides, and rendering the
 * Prometheus text of an open pipeline. */
#ifndef SLUICE_CLI_PIPECFG_H
#define SLUICE_CLI_PIPECFG_H

#include <stdbool.h>

#include "pipeline/client.h"
#include "pipeline/config.h"
#include "util/err.h"

typedef struct cli_pipe_opts {
    const char *model, *config; /* exactly one */
    int max_sequences;          /* -m: KV slots of the one-process pipeline */
    int n_ctx;                  /* --ctx; 0: the config's, or min(training context, 4096) */
    int kv_type;                /* --kv-type when kv_type_set */
    bool kv_type_set;
    const char *draft;          /* --draft FILE, or NULL */
} cli_pipe_opts;

/* Fills cfg from the config file or the model's one-process default,
 * resolves `layers: auto`, checks its numa/threads against this machine, applies --ctx and --kv-type, and refuses --draft
 * with a config that has a speculative section already. */
int cli_pipeline_config(pl_config *cfg, const cli_pipe_opts *o, sl_err *err);

/* --draft FILE: adds the draft stage (k tokens a step, or auto). */
int cli_pipeline_add_draft(pl_config *cfg, const char *draft, int k, bool k_set, int threads, sl_err *err);

/* Prometheus text of every stage (worker nodes' as last reported) and the client's request
 * counters (malloc'd; NULL: out of memory). Safe from any thread while the
 * pipeline is open. */
char *cli_pipeline_prometheus(sl_pipeline *p);

#endif
