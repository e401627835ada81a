/* export.c: `dapt export gguf MODEL OUT.gguf [--dtype f32|f16|bf16|q8_0]
 * [--tokenizer PATH] [--name NAME] [--force]`: the command over
 * gguf_export_dir (tensor by tensor from MODEL's safetensors, never the
 * whole model in memory). MODEL is a dapt checkpoint or an HF model directory;
 * the tokenizer defaults to MODEL's own (tokenizer.json or
 * tokenizer.model). All checks and the writing are the library's. */
#include <stdio.h>
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "tools/gguf/gguf.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"

static const char usage[] =
    "usage: dapt export gguf MODEL OUT.gguf [--dtype f32|f16|bf16|q8_0]\n"
    "                        [--tokenizer PATH] [--name NAME] [--force]\n\n"
    "Writes MODEL (a dapt checkpoint or HF model directory, arch llama or gpt2; a\n"
    "llama with q/k norms as llama.cpp's qwen3) as a GGUF v3 file for llama.cpp.\n"
    "Norm weights and biases stay F32; with q8_0, matrices\n"
    "whose rows are not a multiple of 32 are written F16. The vocabulary comes from\n"
    "the tokenizer: an HF model directory, a tokenizer.json (byte-level BPE: Llama 3,\n"
    "Qwen, GPT-2) or a sentencepiece .model (default: MODEL's tokenizer.json or\n"
    "tokenizer.model). OUT.gguf must not exist unless --force.\n"
    "An MoE (Mixtral) model gets llama.cpp's MoE tensors\n"
    "(ffn_gate_inp, ffn_{gate,up,down}_exps) and keys (llama.expert_count,\n"
    "llama.expert_used_count); one with dense layers in between or without top-k\n"
    "renormalisation (Qwen-MoE) is refused: llama.cpp cannot run it. Llama 3 rope\n"
    "scaling is written as rope_freqs.weight (and dapt.rope_scaling.* keys), linear\n"
    "scaling as rope.scaling.type/factor.\n";

int cmd_export(int argc, char **argv) {
    CliOpt opts[] = {{"--dtype", 1, 0, 0},
                     {"--tokenizer", 1, 0, 0},
                     {"--name", 1, 0, 0},
                     {"--force", 0, 0, 0},
                     {NULL, 0, 0, 0}};
    const CliSpec spec = {"export", usage, opts, 2, NULL, NULL};
    int rc = cli_format(&spec, argc, argv, "gguf");
    if (rc >= 0) return rc;
    const char *pos[2];
    int n_pos;
    rc = cli_parse(&spec, argc, argv, 2, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    if (n_pos < 2) return cli_usage(&spec);
    const char *model_dir = pos[0], *out = pos[1];
    GgufExportOptions o = {.dtype = GGML_F32};
    const char *d = cli_opt(&spec, "--dtype")->value;
    if (!d || !strcmp(d, "f32"))
        o.dtype = GGML_F32;
    else if (!strcmp(d, "f16"))
        o.dtype = GGML_F16;
    else if (!strcmp(d, "bf16"))
        o.dtype = GGML_BF16;
    else if (!strcmp(d, "q8_0"))
        o.dtype = GGML_Q8_0;
    else
        return cli_usage_error(&spec, "--dtype '%s' is not one of f32, f16, bf16, q8_0", d);
    o.force = cli_opt(&spec, "--force")->seen > 0;
    o.name = cli_opt(&spec, "--name")->value;
    const char *tok = cli_opt(&spec, "--tokenizer")->value;
    char tok_path[4200];
    if (!tok && tokenizer_find(model_dir, tok_path, sizeof tok_path)) tok = model_dir;
    o.tokenizer = tok;
    char err[1024];
    size_t n_params = 0;
    if (gguf_export_dir(model_dir, out, &o, &n_params, err, sizeof err))
        return cli_fail(&spec, "%s", err);
    printf("wrote %s (%zu parameters)\n", out, n_params);
    return 0;
}
