/* sluice convert: Hugging Face checkpoint directory to GGUF. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "model/convert.h"

static const char USAGE[] =
    "usage: sluice convert DIR -o FILE.gguf [--type T] [--force]\n"
    "\n"
    "Converts a Hugging Face checkpoint directory (config.json, one or more\n"
    "*.safetensors shards, tokenizer.model) of a Gemma, Gemma 2, Gemma 3 (text),\n"
    "Gemma 4 (dense text: Gemma4ForCausalLM, or the language model of a\n"
    "Gemma4ForConditionalGeneration) or Llama model into a GGUF file with\n"
    "llama.cpp's keys and tensor names, including the tokenizer vocabulary\n"
    "(from tokenizer.model, a sentencepiece model; for Gemma 4 without one, from\n"
    "tokenizer.json as a merge-ranked \"gemma4\" vocabulary). A Gemma 4 assistant\n"
    "(Gemma4AssistantForCausalLM, the drafter) becomes a gemma4-assistant GGUF\n"
    "with its centroid head; its tokenizer files are optional.\n"
    "\n"
    "  -o, --output FILE   GGUF file to write (required); checked before the\n"
    "                      work starts\n"
    "  -f, --force         replace FILE when it exists (refused otherwise)\n"
    "      --type T        type of the weight matrices: " CLI_QTYPE_NAMES "\n"
    "                      (default f32; norms always stay f32)\n"
    "  -q, --quiet         no progress on stderr\n"
    "  -h, --help          this text\n";

/* Conversion takes minutes on a real model: an output that cannot be
 * written, or one that would silently replace a file, fails before any of
 * the work. The writer creates FILE.tmp beside FILE and renames it, so the
 * directory is what must be writable. */
static int check_output(const char *cmd, const char *out, bool force)
{
    struct stat st;
    if (stat(out, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return cli_fail(cmd, "%s: is a directory; -o names the GGUF file to write", out);
        if (!force)
            return cli_fail(cmd, "%s: exists; give --force to replace it", out);
    }
    char dir[4096];
    const char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == out)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - out), out);
    if (stat(dir, &st) != 0)
        return cli_fail(cmd, "%s: cannot write there: directory %s: %s", out, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return cli_fail(cmd, "%s: cannot write there: %s is not a directory", out, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return cli_fail(cmd, "%s: cannot write there: directory %s: %s", out, dir, strerror(errno));
    return CLI_OK;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"type", required_argument, NULL, 'T'},
        {"quiet", no_argument, NULL, 'q'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL;
    bool force = false;
    sl_convert_opts opts = {.type = SL_TYPE_F32, .verbose = 1};
    int c;
    optind = 1;
    while ((c = cli_getopt(argc, argv, "o:qfh", longopts, USAGE)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'q': opts.verbose = 0; break;
        case 'f': force = true; break;
        case 'h': fputs(USAGE, stdout); return CLI_OK;
        case 'T': {
            cli_qtype q;
            if (cli_parse_qtype(optarg, &q) || q.k_m_mix)
                return cli_usage(argv[0], USAGE, "unknown or unsupported --type '%s'", optarg);
            opts.type = q.base;
            break;
        }
        default: return CLI_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_usage(argv[0], USAGE, "expected one checkpoint directory");
    if (!out)
        return cli_usage(argv[0], USAGE, "missing -o FILE.gguf");
    if (check_output(argv[0], out, force) != CLI_OK)
        return CLI_FAIL;
    sl_err err;
    if (sl_convert_hf(argv[optind], out, &opts, &err))
        return cli_fail(argv[0], "%s", err.msg);
    if (opts.verbose)
        fprintf(stderr, "convert: wrote %s\n", out);
    return CLI_OK;
}
