/* sample.c: text generation from a model (sample.h). */
#include "trainer/sample.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/rng.h"

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

int sample_generate(Model *m, const int32_t *prompt, int n_prompt, const SampleOptions *o,
                    int32_t **out, int *n_out, char *err, size_t err_len) {
    const ModelConfig *mc = model_config(m);
    int32_t *seq = malloc(sizeof(int32_t) * ((size_t)n_prompt + (size_t)o->max_new + 1));
    float *logits = NULL, *prob = malloc(sizeof(float) * mc->vocab_size);
    if (!seq || !prob) {
        free(seq), free(prob);
        return err_set(err, err_len, "out of memory");
    }
    memcpy(seq, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int n = n_prompt, rc = 0;
    Rng rng;
    rng_seed(&rng, o->seed);
    for (int k = 0; k < o->max_new; k++) {
        int T = n < mc->max_seq_len ? n : mc->max_seq_len;
        const int32_t *ctx = seq + n - T;
        free(logits);
        logits = malloc(sizeof(float) * (size_t)T * mc->vocab_size);
        if (model_forward(m, ctx, NULL, 1, T, NULL, err, err_len)) {
            rc = 1;
            break;
        }
        model_logits(m, logits);
        int next = draw(logits + (size_t)(T - 1) * mc->vocab_size, mc->vocab_size, o->temperature,
                        o->top_k, &rng, prob);
        if (next == o->eos_id) break;
        seq[n++] = next;
    }
    free(logits);
    free(prob);
    if (rc) {
        free(seq);
        return 1;
    }
    *out = seq;
    *n_out = n;
    return 0;
}
