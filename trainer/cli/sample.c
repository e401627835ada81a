/* sample.c: `dapt sample MODEL --prompt TEXT`, text generation from a dapt
 * checkpoint or an HF model directory, so users can see what domain
 * adaptation did. Tokenizes the prompt, calls sample_generate
 * (trainer/sample.h) and prints the decoded continuation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/tokenizer.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"
#include "trainer/hf.h"
#include "trainer/sample.h"

static const char usage[] =
    "usage: dapt sample MODEL --prompt TEXT [options]\n\n"
    "Generates text from MODEL (a dapt checkpoint or an HF model directory).\n\n"
    "  --prompt TEXT        the text to continue\n"
    "  --tokenizer PATH     an HF model directory, tokenizer.json or sentencepiece\n"
    "                       .model (default: MODEL's tokenizer.json or tokenizer.model)\n"
    "  --max-new N          tokens to generate (default 64)\n"
    "  --temperature T      0 = greedy (default 0.8)\n"
    "  --top-k K            sample among the K most likely tokens, 0 = all (default 40)\n"
    "  --seed S             sampling seed (default 1)\n"
    "  --start bos|eos|none token put before the prompt (default: eos for a dapt\n"
    "                       checkpoint, whose documents are separated by EOS; bos\n"
    "                       for an HF model)\n";

/* The option's value as a number (strtof, or strtol when v_long), or def
 * when absent; 2 after a usage error. */
static int number(const CliSpec *spec, const char *name, long def, long *v_long, float *v_float) {
    const char *s = cli_opt(spec, name)->value;
    if (v_long) *v_long = def;
    if (v_float) *v_float = (float)def;
    if (!s) return 0;
    char *end;
    if (v_long)
        *v_long = strtol(s, &end, 10);
    else
        *v_float = strtof(s, &end);
    if (*end) return cli_usage_error(spec, "%s: '%s' is not a number", name, s);
    return 0;
}

/* The prompt's ids, after the start token first (-1: none). */
static int encode_prompt(const Tokenizer *tok, const char *prompt, int first, int32_t **seq, int *n,
                         char *err, size_t err_len) {
    uint32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    if (tokenizer_encode(tok, prompt, strlen(prompt), &ids, &n_ids, &cap, err, err_len)) {
        free(ids);
        return 1;
    }
    *seq = malloc(sizeof(int32_t) * (n_ids + 1));
    *n = 0;
    if (first >= 0) (*seq)[(*n)++] = first;
    for (size_t i = 0; i < n_ids; i++)
        (*seq)[(*n)++] = (int32_t)ids[i];
    free(ids);
    return 0;
}

int cmd_sample(int argc, char **argv) {
    CliOpt opts[] = {{"--prompt", 1, 0, 0},      {"--tokenizer", 1, 0, 0},
                     {"--start", 1, 0, 0},       {"--max-new", 1, 0, 0},
                     {"--temperature", 1, 0, 0}, {"--top-k", 1, 0, 0},
                     {"--seed", 1, 0, 0},        {NULL, 0, 0, 0}};
    const CliSpec spec = {"sample", usage, opts, 1, NULL, NULL};
    const char *pos[1];
    int n_pos, rc = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    const char *prompt = cli_opt(&spec, "--prompt")->value;
    const char *tok_path = cli_opt(&spec, "--tokenizer")->value;
    const char *start = cli_opt(&spec, "--start")->value;
    long max_new, top_k, seed;
    float temperature = 0.8f;
    if (number(&spec, "--max-new", 64, &max_new, NULL) ||
        number(&spec, "--top-k", 40, &top_k, NULL) || number(&spec, "--seed", 1, &seed, NULL) ||
        (cli_opt(&spec, "--temperature")->value &&
         number(&spec, "--temperature", 0, NULL, &temperature)))
        return CLI_USAGE;
    if (n_pos == 0 || !prompt) return cli_usage(&spec);
    const char *model_dir = pos[0];
    if (max_new < 1 || max_new > 100000 || top_k < 0 || top_k > 1 << 30 || !(temperature >= 0.0f) ||
        temperature > 100.0f)
        return cli_usage_error(&spec, "--max-new in [1, 100000], --top-k >= 0, "
                                      "--temperature in [0, 100]");
    char err[2048], found[2048];
    if (!tok_path) {
        if (!tokenizer_find(model_dir, found, sizeof found))
            return cli_fail(&spec,
                            "%s has neither tokenizer.json nor tokenizer.model: pass --tokenizer "
                            "PATH",
                            model_dir);
        tok_path = model_dir;
    }
    if (!start) {
        char p[2048];
        struct stat sb;
        hf_path(p, sizeof p, model_dir, "trainer_state.json");
        start = stat(p, &sb) == 0 ? "eos" : "bos";
    }
    if (strcmp(start, "bos") && strcmp(start, "eos") && strcmp(start, "none"))
        return cli_usage_error(&spec, "--start must be bos, eos or none");

    Tokenizer *tok = NULL;
    if (tokenizer_load(&tok, tok_path, err, sizeof err)) return cli_fail(&spec, "%s", err);
    Model *m = hf_load_model(model_dir, ops_cpu(), err, sizeof err);
    if (!m) {
        tokenizer_free(tok);
        return cli_fail(&spec, "%s", err);
    }
    const ModelConfig *mc = model_config(m);
    int first = !strcmp(start, "bos")   ? tokenizer_bos_id(tok)
                : !strcmp(start, "eos") ? tokenizer_eos_id(tok)
                                        : -1;
    SampleOptions so = {(int)max_new, temperature, (int)top_k, (uint64_t)seed,
                        tokenizer_eos_id(tok)};
    int32_t *seq = NULL, *gen = NULL;
    int n_seq = 0, n_gen = 0;
    rc = 1;
    if (encode_prompt(tok, prompt, first, &seq, &n_seq, err, sizeof err)) {
        cli_fail(&spec, "%s", err);
    } else if (tokenizer_vocab_size(tok) > (uint32_t)mc->vocab_size) {
        cli_fail(&spec, "the tokenizer has %u tokens, the model only %d", tokenizer_vocab_size(tok),
                 mc->vocab_size);
    } else if (sample_generate(m, seq, n_seq, &so, &gen, &n_gen, err, sizeof err)) {
        cli_fail(&spec, "%s", err);
    } else {
        /* the text: everything after the start token, special tokens
         * (BOS, EOS) dropped as sentencepiece drops its control tokens */
        int skip = first >= 0 ? 1 : 0;
        uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(n_gen + 1));
        for (int i = skip; i < n_gen; i++)
            ids[i - skip] = (uint32_t)gen[i];
        char *text = NULL;
        if (tokenizer_decode(tok, ids, (size_t)(n_gen - skip), 1, &text, NULL, err, sizeof err)) {
            cli_fail(&spec, "%s", err);
        } else {
            printf("%s\n", text);
            rc = 0;
        }
        free(text);
        free(ids);
    }
    free(gen);
    free(seq);
    model_free(m);
    tokenizer_free(tok);
    return rc;
}
