/* Shared pieces of the sluice command: the subcommands, strict number
 * parsing and the usage-error convention (exit status 2). */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/types.h"
#include "util/err.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Each subcommand gets argv[0] = its own name. */
int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Prints "sluice CMD: message" and "try 'sluice CMD --help'" to stderr (not
 * the whole usage, which would bury the message); returns CLI_USAGE so a
 * parser reads `return cli_usage(...)`. usage may be NULL. */
int cli_usage(const char *cmd, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A usage error for a number out of its range or not a number at all:
 * "bad value 'V' for --OPT: must be a whole number LO..HI" (real: any number). */
int cli_bad_number(const char *cmd, const char *opt, const char *value, double lo, double hi, bool real);
/* Prints "sluice CMD: message" to stderr; returns CLI_FAIL. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict parsers: the whole string must be the number, within [lo, hi].
 * Return 0, or -1 for junk or out of range. */
int cli_parse_long(const char *s, long lo, long hi, long *out);
int cli_parse_int(const char *s, int lo, int hi, int *out);
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_float(const char *s, double lo, double hi, float *out);

/* Option scanning shared by the subcommands (getopt_long underneath with
 * its messages silenced): returns the option value, -1 at the end, or '?'
 * after printing a usage error for an unknown option or a missing value. */
struct option;
int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
               const char *usage);

/* Long options several subcommands take, each with one value everywhere
 * (CLI_OPT_* past the characters: a letter would clash in some table). */
enum { CLI_OPT_METRICS_PORT = 0x100 };
#define CLI_LONGOPT_HELP {"help", no_argument, NULL, 'h'}
#define CLI_LONGOPT_THREADS {"threads", required_argument, NULL, 't'}
#define CLI_LONGOPT_METRICS_PORT {"metrics-port", required_argument, NULL, CLI_OPT_METRICS_PORT}

/* --metrics-port [IP:]PORT: 0 when arg is one, else CLI_USAGE after a
 * message naming what is wrong. */
int cli_check_metrics_port(const char *cmd, const char *arg);

/* The KV cache type named s (f32, f16, bf16 or q8_0), or -1 for any other
 * name. */
int cli_kv_type(const char *s);

/* Sends SIGINT and SIGTERM to handler (the commands that stop in order). */
void cli_on_stop_signals(void (*handler)(int));

/* Long name of the option whose value is c (for messages). */
const char *cli_opt_name(const struct option *longopts, int c);

/* Checks, before anything loads, that the stages cfg runs on this machine
 * (the coordinator's and those of spawned workers) fit it: a numa: node it
 * lacks fails naming both machines' numbers; threads: past its cores warn.
 * what names the config in messages. */
struct pl_config;
int cli_check_machine(const struct pl_config *cfg, const char *what, sl_err *err);

/* Monotonic seconds. */
double cli_now(void);

/* Weight types accepted by synth and quantize: the tensor types and
 * llama.cpp's K-quant mixes. */
typedef struct cli_qtype {
    sl_type base;   /* type of the ordinary 2-D weights */
    bool k_m_mix;   /* a llama.cpp K-quant mix: per-tensor rules by ftype */
    uint32_t ftype; /* general.file_type (llama_ftype) */
} cli_qtype;

int cli_parse_qtype(const char *s, cli_qtype *out);
#define CLI_QTYPE_NAMES                                                                         \
    "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, q3_K, q4_K, q5_K, q6_K, "  \
    "q2_K, q3_K_S, q3_K_M, q3_K_L, q4_K_S, q4_K_M, q5_K_S, q5_K_M"

/* What the mixes' rules look at besides a tensor's name. */
typedef struct cli_qmodel {
    int n_layer; /* layer count */
    int n_gqa;   /* query heads per key/value head (q2_K's attn_v rule) */
    bool tied;   /* token_embd also serves as the output matrix */
} cli_qmodel;

/* The type a 2-D weight gets: name is the GGUF tensor name, n_in the row
 * length. Falls back as llama.cpp does when the row length is not a
 * multiple of the type's block: q2_K, q3_K and iq4_xs to iq4_nl, q4_K to
 * q5_0, q5_K to q5_1, q6_K to q8_0, and to f16 when even that does not fit. */
sl_type cli_weight_type(const cli_qtype *q, const char *name, const cli_qmodel *m, int64_t n_in);

/* Row conversion to and from f32 for every supported tensor type. */
void cli_row_from_f32(sl_type type, const float *src, void *dst, int64_t n);
void cli_row_to_f32(sl_type type, const void *src, float *dst, int64_t n);

#endif
