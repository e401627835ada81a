/* model_random.h: weights of O(1) logits for parity tests (tests/runner's
 * hf_driver, the GGUF tests): matrices uniform in [-0.3, 0.3], norm weights
 * 1 +- 0.2, biases +- 0.2 (non-zero so that their layout is checked too),
 * from a seed. */
#ifndef DAPT_TEST_MODEL_RANDOM_H
#define DAPT_TEST_MODEL_RANDOM_H

#include <stdlib.h>
#include <string.h>

#include "trainer/model.h"
#include "trainer/rng.h"

static inline void test_model_randomize(Model *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *p = malloc(model_num_params(m) * sizeof *p);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *t = model_tensor(m, i);
        int norm = t->ndim == 1 && strstr(t->name, ".weight");
        for (size_t k = 0; k < t->numel; k++) {
            float u = (float)rng_uniform(&r) * 2.0f - 1.0f;
            p[t->offset + k] = t->ndim == 2 ? 0.3f * u : norm ? 1.0f + 0.2f * u : 0.2f * u;
        }
    }
    model_set_params(m, p);
    free(p);
}

#endif
