/* sluice <command> [options]: dispatch to one file per command. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "generate text from a prompt"},
    {"inspect", cmd_inspect, "show a GGUF file's metadata, tensors and configuration"},
    {"synth", cmd_synth, "write a model with random weights and real shapes"},
    {"quantize", cmd_quantize, "requantise a GGUF model's weights"},
    {"perplexity", cmd_perplexity, "measure perplexity on a text file (llama.cpp's method)"},
    {"convert", cmd_convert, "convert a Hugging Face checkpoint to GGUF"},
    {"worker", cmd_worker, "serve pipeline stages for a coordinator on another process or host"},
    {"bench", cmd_bench, "measure prefill and decode speed against the memory roofline"},
    {"plan", cmd_plan, "place layers on NUMA nodes or cluster hosts and write the config"},
    {"keygen", cmd_keygen, "write a CURVE key pair for a pipeline node"},
    {"status", cmd_status, "show a worker's stages and their metrics"},
    {"tokenize", cmd_tokenize, "show a prompt's tokens from a GGUF's vocabulary (no weights loaded)"},
    {"version", cmd_version, "show the version built and the kernel path this CPU gets"},
    {"serve", cmd_serve, "serve a pipeline over HTTP (OpenAI-style API and a chat page)"},
};

static void print_usage(FILE *out)
{
    fprintf(out, "usage: sluice <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'sluice <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "sluice: missing command\ntry 'sluice --help'\n");
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_usage(stdout);
        return CLI_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0)
        return cmd_version(1, (char *[]){"version", NULL});
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command '%s'\ntry 'sluice --help'\n", name);
    return CLI_USAGE;
}
