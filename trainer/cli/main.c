/* main.c: the `dapt` binary's entry point. Dispatches git-style subcommands
 * (`dapt train`, `dapt tokenize`, ...) to the cmd_* functions of
 * trainer/cli/ (cli.h). Only the commands print usage or choose an exit
 * status; library code returns a status with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/cli/cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    {"sample", cmd_sample, "generate text from a checkpoint or HF model directory"},
    {"train", cmd_train, "continue pretraining a model on a domain/general mixture (config.toml)"},
    {"plan", cmd_plan, "the memory a training config needs per GPU and host, and what would fit"},
    {"tokenize", cmd_tokenize, "encode text/JSONL corpora into .tok.zst shards (+ val shard)"},
    {"inspect", cmd_inspect,
     "print the header and stats of a .tok.zst shard (verifying every frame) or a .gguf file"},
    {"law", cmd_law, "fit, predict and apply the D-CPT scaling law"},
    {"eval", cmd_eval, "score a model on multiple-choice and perplexity tasks (JSONL)"},
    {"logits", cmd_logits, "logits of a model on token ids (the parity instrument)"},
    {"export", cmd_export, "export a model: `dapt export gguf MODEL OUT.gguf`"},
    {"import", cmd_import, "import a model: `dapt import gguf FILE.gguf OUT_DIR`"},
    {"merge", cmd_merge,
     "merge models: linear, task arithmetic (chat vector), TIES, DARE, DELLA, experts into an MoE"},
    {NULL, NULL, NULL},
};

static void print_usage(FILE *f) {
    fprintf(f, "dapt %s: domain-adaptive continual pretraining for GPT-2 and Llama models\n\n",
            DAPT_VERSION);
    fprintf(f, "usage: dapt <command> [args]\n       dapt --help | --version\n\ncommands:\n");
    int n = 0;
    for (const Command *c = commands; c->name; c++, n++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    if (n == 0) fprintf(f, "  (none in this build)\n");
    fprintf(f, "\n`dapt <command> --help` describes each command.\n");
}

/* OpenMP threads that wait for work sleep instead of spinning, unless the
 * user chose otherwise (OMP_WAIT_POLICY: one of the few environment
 * variables dapt reads, all listed in docs/config.md, "Environment"):
 * libgomp's default spin-wait burns the cores that
 * OpenBLAS, the data thread or other processes need (measured on a shared
 * 2-core machine: 8 steps of a tiny model took 4.8 s spinning, 1.9 s
 * passive). libgomp reads the variable when it is loaded, before main, so
 * dapt sets it and executes itself again, once. OMP_WAIT_POLICY=active
 * restores spinning on a dedicated machine. */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argv);
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        print_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("dapt %s\n", DAPT_VERSION);
        return 0;
    }
    for (const Command *c = commands; c->name; c++)
        if (!strcmp(cmd, c->name)) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "dapt: unknown command '%s' (see `dapt --help`)\n", cmd);
    return 2;
}
