/* sample.h: text generation from a model, token ids in and out (the library
 * behind `dapt sample`).
 *
 * Generation recomputes the forward pass over the whole context for every
 * new token (no KV cache): fine for the small models a CPU runs,
 * O(n^2) in the generated length. The context is the last max_seq_len
 * tokens. Sampling: softmax(logits / temperature) restricted to the top_k
 * most likely tokens, drawn with a seeded generator (temperature 0: argmax),
 * so the same seed gives the same tokens. */
#ifndef DAPT_TRAINER_SAMPLE_H
#define DAPT_TRAINER_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model.h"

typedef struct {
    int max_new;       /* tokens to generate at most, >= 1 */
    float temperature; /* 0: greedy */
    int top_k;         /* 0: all tokens */
    uint64_t seed;
    int eos_id; /* generation stops before this token; -1: never */
} SampleOptions;

/* Continues prompt (n_prompt ids) with at most o->max_new tokens. *out
 * (malloc'd) receives the prompt followed by the generated ids, *n_out
 * their count. 1 with a message on failure. */
int sample_generate(Model *m, const int32_t *prompt, int n_prompt, const SampleOptions *o,
                    int32_t **out, int *n_out, char *err, size_t err_len);

#endif
