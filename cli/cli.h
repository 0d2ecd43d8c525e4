/* Shared pieces of the sluice command: the subcommands, strict number
 * parsing and the usage-error convention (exit status 2). */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/types.h"

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
int cmd_serve(int argc, char **argv);

/* Prints "sluice CMD: message" and the command's usage to stderr; returns
 * CLI_USAGE so a parser reads `return cli_usage(...)`. */
int cli_usage(const char *cmd, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
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

/* Long name of the option whose value is c (for messages). */
const char *cli_opt_name(const struct option *longopts, int c);

/* Monotonic seconds. */
double cli_now(void);

/* Weight types accepted by synth and quantize: the tensor types plus the
 * q4_K_M mix. */
typedef struct cli_qtype {
    sl_type base;   /* type of the ordinary 2-D weights */
    bool k_m_mix;   /* llama.cpp's Q4_K_M promotion rules */
    uint32_t ftype; /* general.file_type (llama_ftype) */
} cli_qtype;

int cli_parse_qtype(const char *s, cli_qtype *out);
#define CLI_QTYPE_NAMES "f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K, q4_K_M"

/* The type a 2-D weight gets: name is the GGUF tensor name, n_layer the
 * model's layer count, n_in the row length, tied true when token_embd also
 * serves as the output matrix. Falls back (as llama.cpp does) when the row
 * length is not a multiple of the type's block: K-quants to q8_0, and to f32
 * when even that does not fit. */
sl_type cli_weight_type(const cli_qtype *q, const char *name, int n_layer, int64_t n_in, bool tied);

/* Row conversion to and from f32 for every supported tensor type. */
void cli_row_from_f32(sl_type type, const float *src, void *dst, int64_t n);
void cli_row_to_f32(sl_type type, const void *src, float *dst, int64_t n);

#endif
