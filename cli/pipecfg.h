/* What `sluice run` and `sluice serve` share: building the pl_config of
 * -m FILE or -c CONFIG with the command-line overrides, and rendering the
 * Prometheus text of an open pipeline. */
#ifndef SLUICE_CLI_PIPECFG_H
#define SLUICE_CLI_PIPECFG_H

#include <getopt.h>
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
    int threads;                /* -t; 0: the pool's default */
    const char *draft;          /* --draft FILE, or NULL */
    int draft_k, draft_threads; /* --draft-k N (when draft_k_set), --draft-threads */
    bool draft_k_set, draft_auto;
} cli_pipe_opts;

/* The options of cli_pipe_opts, which `sluice run` and `sluice serve` both
 * take (with -h): the first entries of their long option tables and the
 * start of their short option strings. */
#define CLI_PIPE_SHORTOPTS "hm:c:t:"
#define CLI_PIPE_LONGOPTS                                                                       \
    CLI_LONGOPT_HELP, {"model", required_argument, NULL, 'm'},                                  \
        {"config", required_argument, NULL, 'c'}, CLI_LONGOPT_THREADS,                          \
        {"ctx", required_argument, NULL, 'X'}, {"kv-type", required_argument, NULL, 'V'},       \
        {"draft", required_argument, NULL, 'D'}, {"draft-k", required_argument, NULL, 'k'},     \
        {"draft-threads", required_argument, NULL, 'd'}

/* Takes option c of CLI_PIPE_LONGOPTS (not -h) with its value arg: 0, 1
 * when c is not one of them, CLI_USAGE after a message. */
int cli_pipe_option(const char *cmd, int c, const char *arg, cli_pipe_opts *o);
/* What these options need of each other (exactly one of -m and -c; the
 * --draft settings only with --draft): 0, or CLI_USAGE after a message. */
int cli_pipe_check(const char *cmd, const cli_pipe_opts *o);

/* Fills cfg from the config file or the model's one-process default,
 * resolves `layers: auto`, checks its numa/threads against this machine, applies --ctx and --kv-type, and refuses --draft
 * with a config that has a speculative section already. */
int cli_pipeline_config(pl_config *cfg, const cli_pipe_opts *o, sl_err *err);

/* --draft FILE: adds the draft stage (o's --draft-k and --draft-threads). */
int cli_pipeline_add_draft(pl_config *cfg, const cli_pipe_opts *o, sl_err *err);

/* Prometheus text of every stage (worker nodes' as last reported) and the client's request
 * counters (malloc'd; NULL: out of memory). Safe from any thread while the
 * pipeline is open. */
char *cli_pipeline_prometheus(sl_pipeline *p);

#endif
