/* sluice run's requests: one prompt (-p, its answer streamed) or a file of
 * them (--prompts) as a batch: any number of prompts, at most max_requests
 * in flight, each answer printed as soon as it is complete and labelled
 * with its line in the file (or as JSON lines), progress on stderr, and the
 * failures summarised one line per cause. */
#ifndef SLUICE_CLI_BATCH_H
#define SLUICE_CLI_BATCH_H

#include <signal.h>
#include <stdbool.h>

#include "pipeline/client.h"
#include "util/err.h"

/* The prompts of a file: blank lines are skipped, and each prompt keeps its
 * line number in the file. */
typedef struct cli_prompts {
    char **text;
    int *line;     /* 1-based line in the file (0: given with -p) */
    int n;
    int n_blank;   /* blank lines skipped */
} cli_prompts;

int cli_prompts_read(cli_prompts *p, const char *path, sl_err *err);
/* One prompt given on the command line (not copied). */
int cli_prompts_single(cli_prompts *p, const char *text, sl_err *err);
void cli_prompts_free(cli_prompts *p, bool owned);

typedef struct cli_batch_opts {
    const sl_gen_params *gp;   /* everything but the prompt */
    int max_in_flight;
    bool report;               /* print answers and the summary (false: a baseline run) */
    bool jsonl;                /* answers as JSON lines */
    bool print_ids;            /* token ids of every answer on stderr, in the file's order */
    /* set by a signal handler: the signal number (SIGINT, SIGTERM) */
    volatile sig_atomic_t *stop_signal;
} cli_batch_opts;

typedef struct cli_batch_result {
    double t_total;            /* first submit to last answer */
    long tokens;               /* generated, all answers */
    int n_done, n_failed, n_unstarted;
    double decode_tok_s;       /* one prompt: its decode rate; several: aggregate */
    sl_event last;             /* one prompt: its final event */
    char first_error[600];     /* the first failure ("line N: why"), or "" */
} cli_batch_result;

/* Runs every prompt through p. Returns 0 when the batch ran (some requests
 * may have failed: res says), -1 on a pipeline failure (err). */
int cli_batch_run(sl_pipeline *p, const cli_prompts *pr, const cli_batch_opts *o, cli_batch_result *res,
                  sl_err *err);

#endif
