/* cmd_export.c: `dapt export gguf MODEL OUT.gguf [--dtype f32|f16|bf16|q8_0]
 * [--tokenizer tokenizer.model] [--name NAME] [--force]`: the CLI layer over
 * gguf_export_model. MODEL is a dapt checkpoint or an HF model directory;
 * the tokenizer defaults to MODEL/tokenizer.model.
 *
 * Invariants: it prints and returns exit codes (0 ok, 1 failure, 2 usage);
 * all checks and the writing are the library's.
 */
#include <stdio.h>
#include <string.h>

#include "tools/gguf/gguf.h"
#include "trainer/cli.h"
#include "trainer/hf.h"

static void export_usage(FILE *f) {
    fprintf(f,
            "usage: dapt export gguf MODEL OUT.gguf [--dtype f32|f16|bf16|q8_0]\n"
            "                        [--tokenizer tokenizer.model] [--name NAME] [--force]\n\n"
            "Writes MODEL (a dapt checkpoint or HF model directory, arch llama or gpt2) as a\n"
            "GGUF v3 file for llama.cpp. Norm weights and biases stay F32; with q8_0, matrices\n"
            "whose rows are not a multiple of 32 are written F16. The vocabulary comes from\n"
            "the sentencepiece model (default MODEL/tokenizer.model). OUT.gguf must not exist\n"
            "unless --force. An MoE (Mixtral) model gets llama.cpp's MoE tensors\n"
            "(ffn_gate_inp, ffn_{gate,up,down}_exps) and keys (llama.expert_count,\n"
            "llama.expert_used_count); one with dense layers in between or without top-k\n"
            "renormalisation (Qwen-MoE) is refused: llama.cpp cannot run it.\n");
}

int cmd_export(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        export_usage(stdout);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "gguf")) {
        fprintf(stderr, "dapt export: the only format is gguf\n");
        export_usage(stderr);
        return 2;
    }
    const char *model_dir = NULL, *out = NULL, *tok = NULL;
    GgufExportOptions o = {.dtype = GGML_F32};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            export_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
        } else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "f32")) o.dtype = GGML_F32;
            else if (!strcmp(d, "f16")) o.dtype = GGML_F16;
            else if (!strcmp(d, "bf16")) o.dtype = GGML_BF16;
            else if (!strcmp(d, "q8_0")) o.dtype = GGML_Q8_0;
            else {
                fprintf(stderr, "dapt export: --dtype '%s' is not one of f32, f16, bf16, q8_0\n", d);
                return 2;
            }
        } else if (!strcmp(a, "--tokenizer") && i + 1 < argc) {
            tok = argv[++i];
        } else if (!strcmp(a, "--name") && i + 1 < argc) {
            o.name = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "dapt export: unknown or incomplete option '%s'\n", a);
            return 2;
        } else if (!model_dir) {
            model_dir = a;
        } else if (!out) {
            out = a;
        } else {
            fprintf(stderr, "dapt export: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!model_dir || !out) {
        export_usage(stderr);
        return 2;
    }
    char tok_path[4200];
    if (!tok && hf_find_tokenizer(model_dir, tok_path, sizeof tok_path)) tok = tok_path;
    o.tokenizer = tok;
    char err[1024];
    Model *m = hf_load_model(model_dir, ops_cpu(), err, sizeof err);
    if (!m) {
        fprintf(stderr, "dapt export: %s\n", err);
        return 1;
    }
    int rc = gguf_export_model(m, out, &o, err, sizeof err);
    if (rc) fprintf(stderr, "dapt export: %s\n", err);
    else printf("wrote %s (%zu parameters)\n", out, model_num_params(m));
    model_free(m);
    return rc ? 1 : 0;
}
