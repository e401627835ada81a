/* cmd_import.c: `dapt import gguf FILE.gguf OUT_DIR [--force]`: the CLI
 * layer over gguf_import_to_dir (an F32/F16/BF16 llama or gpt2 GGUF to a
 * dapt checkpoint directory that `init_from` and `dapt logits` accept).
 *
 * Invariants: it prints and returns exit codes (0 ok, 1 failure, 2 usage);
 * all checks and the writing are the library's.
 */
#include <stdio.h>
#include <string.h>

#include "tools/gguf/gguf.h"
#include "trainer/cli.h"

static void import_usage(FILE *f) {
    fprintf(f,
            "usage: dapt import gguf FILE.gguf OUT_DIR [--force]\n\n"
            "Converts an F32, F16 or BF16 llama/gpt2 GGUF file into a dapt checkpoint\n"
            "directory (config.json + model.safetensors, F32); an MoE file (llama.expert_count\n"
            "> 0) becomes a Mixtral checkpoint. Quantized files are refused.\n"
            "OUT_DIR must not exist unless --force.\n");
}

int cmd_import(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        import_usage(stdout);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "gguf")) {
        fprintf(stderr, "dapt import: the only format is gguf\n");
        import_usage(stderr);
        return 2;
    }
    const char *in = NULL, *out = NULL;
    int force = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--force")) force = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "dapt import: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else {
            fprintf(stderr, "dapt import: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!in || !out) {
        import_usage(stderr);
        return 2;
    }
    char err[1024];
    if (gguf_import_to_dir(in, out, force, err, sizeof err)) {
        fprintf(stderr, "dapt import: %s\n", err);
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}
