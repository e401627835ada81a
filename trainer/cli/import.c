/* import.c: `dapt import gguf FILE.gguf OUT_DIR [--force]`: the command over
 * gguf_import_to_dir (an F32/F16/BF16 llama, qwen3 or gpt2 GGUF to a dapt
 * checkpoint directory that `init_from` and `dapt logits` accept). All checks
 * and the writing are the library's. */
#include <stdio.h>
#include <string.h>

#include "tools/gguf/gguf.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"

static const char usage[] =
    "usage: dapt import gguf FILE.gguf OUT_DIR [--force]\n\n"
    "Converts an F32, F16 or BF16 llama/qwen3/gpt2 GGUF file into a dapt checkpoint\n"
    "directory (config.json + model.safetensors, F32); an MoE file (llama.expert_count\n"
    "> 0) becomes a Mixtral checkpoint, a qwen3 file a Qwen3 one. Quantized files are\n"
    "refused.\n"
    "OUT_DIR must not exist unless --force, which replaces only a directory of an\n"
    "import's files (config.json, model.safetensors, tokenizer.json,\n"
    "tokenizer_config.json); one holding anything else is refused, unchanged.\n";

int cmd_import(int argc, char **argv) {
    CliOpt opts[] = {{"--force", 0, 0, 0}, {NULL, 0, 0, 0}};
    const CliSpec spec = {"import", usage, opts, 2, NULL, NULL};
    int rc = cli_format(&spec, argc, argv, "gguf");
    if (rc >= 0) return rc;
    const char *pos[2];
    int n_pos;
    rc = cli_parse(&spec, argc, argv, 2, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    if (n_pos < 2) return cli_usage(&spec);
    char err[1024];
    if (gguf_import_to_dir(pos[0], pos[1], cli_opt(&spec, "--force")->seen > 0, err, sizeof err))
        return cli_fail(&spec, "%s", err);
    printf("wrote %s\n", pos[1]);
    return 0;
}
