/* sample.c: `dapt sample MODEL --prompt TEXT`, text generation from a dapt
 * checkpoint or an HF model directory, so users can see what domain
 * adaptation did.
 *
 * Generation recomputes the forward pass over the whole context for every
 * new token (no KV cache yet): fine for the small models of a CPU session,
 * O(n^2) in the generated length. The context is the last max_seq_len
 * tokens. Sampling: softmax(logits / temperature) restricted to the top_k
 * most likely tokens, drawn with a seeded generator (temperature 0: argmax),
 * so the same seed gives the same text.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/spm.h"
#include "trainer/cli.h"
#include "trainer/hf.h"
#include "trainer/model.h"
#include "trainer/rng.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dapt sample MODEL --prompt TEXT [options]\n\n"
            "Generates text from MODEL (a dapt checkpoint or an HF model directory).\n\n"
            "  --prompt TEXT        the text to continue\n"
            "  --tokenizer PATH     sentencepiece model (default: MODEL/tokenizer.model)\n"
            "  --max-new N          tokens to generate (default 64)\n"
            "  --temperature T      0 = greedy (default 0.8)\n"
            "  --top-k K            sample among the K most likely tokens, 0 = all (default 40)\n"
            "  --seed S             sampling seed (default 1)\n"
            "  --start bos|eos|none token put before the prompt (default: eos for a dapt\n"
            "                       checkpoint, whose documents are separated by EOS; bos\n"
            "                       for an HF model)\n");
}

/* index of the token drawn from logits (V) */
static int draw(const float *logits, int V, float temperature, int top_k, Rng *rng, float *prob) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature <= 0.0f) return best;
    int k = top_k > 0 && top_k < V ? top_k : V;
    /* threshold: the k-th largest logit (selection by repeated max over a copy
     * is O(kV), cheap at sampling sizes) */
    float thresh = -INFINITY;
    if (k < V) {
        float *tmp = malloc(sizeof(float) * V);
        memcpy(tmp, logits, sizeof(float) * V);
        for (int j = 0; j < k; j++) {
            int a = 0;
            for (int i = 1; i < V; i++)
                if (tmp[i] > tmp[a]) a = i;
            thresh = tmp[a];
            tmp[a] = -INFINITY;
        }
        free(tmp);
    }
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        prob[i] = logits[i] >= thresh ? (float)exp((logits[i] - logits[best]) / temperature) : 0.0f;
        sum += prob[i];
    }
    double u = rng_uniform(rng) * sum, acc = 0.0;
    for (int i = 0; i < V; i++) {
        acc += prob[i];
        if (prob[i] > 0.0f && u < acc) return i;
    }
    return best;
}

int cmd_sample(int argc, char **argv) {
    const char *model_dir = NULL, *prompt = NULL, *tok_path = NULL, *start = NULL;
    int max_new = 64, top_k = 40;
    float temperature = 0.8f;
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (a[0] != '-') {
            if (model_dir) return fprintf(stderr, "dapt sample: unexpected '%s'\n", a), 2;
            model_dir = a;
            continue;
        }
        if (!v) return fprintf(stderr, "dapt sample: %s needs a value\n", a), 2;
        char *end = NULL;
        if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--start")) start = v;
        else if (!strcmp(a, "--max-new")) max_new = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--top-k")) top_k = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--temperature")) temperature = strtof(v, &end);
        else if (!strcmp(a, "--seed")) seed = strtol(v, &end, 10);
        else return fprintf(stderr, "dapt sample: unknown option %s (see --help)\n", a), 2;
        if (end && *end) return fprintf(stderr, "dapt sample: %s: '%s' is not a number\n", a, v), 2;
        i++;
    }
    if (!model_dir || !prompt) return usage(stderr), 2;
    if (max_new < 1 || max_new > 100000 || top_k < 0 || !(temperature >= 0.0f) ||
        temperature > 100.0f)
        return fprintf(stderr, "dapt sample: --max-new in [1, 100000], --top-k >= 0, "
                               "--temperature in [0, 100]\n"),
               2;
    char err[2048], found[2048];
    if (!tok_path) {
        if (!hf_find_tokenizer(model_dir, found, sizeof found))
            return fprintf(stderr,
                           "dapt sample: %s has no tokenizer.model: pass --tokenizer PATH\n",
                           model_dir),
                   1;
        tok_path = found;
    }
    if (!start) {
        char p[2048];
        struct stat sb;
        hf_path(p, sizeof p, model_dir, "trainer_state.json");
        start = stat(p, &sb) == 0 ? "eos" : "bos";
    }
    if (strcmp(start, "bos") && strcmp(start, "eos") && strcmp(start, "none"))
        return fprintf(stderr, "dapt sample: --start must be bos, eos or none\n"), 2;

    SpmModel *sp = NULL;
    if (spm_load(&sp, tok_path, err, sizeof err))
        return fprintf(stderr, "dapt sample: %s\n", err), 1;
    Model *m = hf_load_model(model_dir, ops_cpu(), err, sizeof err);
    if (!m) {
        spm_free(sp);
        return fprintf(stderr, "dapt sample: %s\n", err), 1;
    }
    const ModelConfig *mc = model_config(m);
    int rc = 1;
    uint32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    if (spm_encode(sp, prompt, strlen(prompt), &ids, &n_ids, &cap, err, sizeof err)) {
        fprintf(stderr, "dapt sample: %s\n", err);
        goto done;
    }
    int first = !strcmp(start, "bos") ? spm_bos_id(sp) : !strcmp(start, "eos") ? spm_eos_id(sp) : -1;
    if (spm_vocab_size(sp) > (uint32_t)mc->vocab_size) {
        fprintf(stderr, "dapt sample: the tokenizer has %u tokens, the model only %d\n",
                spm_vocab_size(sp), mc->vocab_size);
        goto done;
    }
    size_t total = n_ids + max_new + 1;
    int32_t *seq = malloc(sizeof(int32_t) * total);
    int n = 0;
    if (first >= 0) seq[n++] = first;
    for (size_t i = 0; i < n_ids; i++) seq[n++] = (int32_t)ids[i];
    int n_prompt = n;
    float *logits = NULL, *prob = malloc(sizeof(float) * mc->vocab_size);
    Rng rng;
    rng_seed(&rng, (uint64_t)seed);
    int eos = spm_eos_id(sp);
    for (int k = 0; k < max_new; k++) {
        int T = n < mc->max_seq_len ? n : mc->max_seq_len;
        const int32_t *ctx = seq + n - T;
        free(logits);
        logits = malloc(sizeof(float) * (size_t)T * mc->vocab_size);
        if (model_forward(m, ctx, NULL, 1, T, NULL, err, sizeof err)) {
            fprintf(stderr, "dapt sample: %s\n", err);
            goto gen_done;
        }
        model_logits(m, logits);
        int next = draw(logits + (size_t)(T - 1) * mc->vocab_size, mc->vocab_size, temperature,
                        top_k, &rng, prob);
        if (next == eos) break;
        seq[n++] = next;
    }
    uint32_t *out = malloc(sizeof(uint32_t) * (n - n_prompt + n_ids + 1));
    size_t n_out = 0;
    for (int i = first >= 0 ? 1 : 0; i < n; i++) out[n_out++] = (uint32_t)seq[i];
    char *text = NULL;
    if (spm_decode(sp, out, n_out, &text, err, sizeof err)) {
        fprintf(stderr, "dapt sample: %s\n", err);
    } else {
        printf("%s\n", text);
        rc = 0;
    }
    free(text);
    free(out);
gen_done:
    free(logits);
    free(prob);
    free(seq);
done:
    free(ids);
    model_free(m);
    spm_free(sp);
    return rc;
}
