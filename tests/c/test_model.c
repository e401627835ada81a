/* test_model.c: properties of the model graph that need no oracle:
 * config validation messages, a tiny model overfitting one batch, NaN
 * detection, bitwise determinism, the initial weights against their
 * definition, and the LR schedules' values. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "tests/c/check.h"
#include "trainer/model.h"
#include "trainer/rng.h"
#include "trainer/sched.h"

static ModelConfig tiny(Arch arch) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = arch == ARCH_LLAMA ? 2 : 4;
    c.d_model = 32;
    c.d_ff = 64;
    c.vocab_size = 50;
    c.max_seq_len = 16;
    return c;
}

static void test_config_errors(void) {
    char err[256] = "";
    Arch a;
    CHECK(model_arch_parse("gpt3", &a, err, sizeof err) != 0, "unknown arch accepted");
    CHECK_MSG(err, "'gpt3'");

    ModelConfig c = tiny(ARCH_LLAMA);
    c.n_head = 6;
    c.n_kv_head = 4;
    c.d_model = 48;
    CHECK(model_create(&c, ops_cpu(), err, sizeof err) == NULL, "6 heads over 4 kv heads accepted");
    CHECK_MSG(err, "n_head (6)");
    CHECK_MSG(err, "n_kv_head (4)");

    c = tiny(ARCH_GPT2);
    c.d_model = 50;
    CHECK(model_config_check(&c, err, sizeof err) != 0, "d_model 50 over 4 heads accepted");
    CHECK_MSG(err, "d_model (50)");
    CHECK_MSG(err, "n_head (4)");

    c = tiny(ARCH_LLAMA);
    c.d_model = 36; /* head size 9: odd, RoPE rotates pairs */
    CHECK(model_config_check(&c, err, sizeof err) != 0, "odd head size accepted for llama");
    CHECK_MSG(err, "even head size");

    c = tiny(ARCH_GPT2);
    c.n_kv_head = 2;
    CHECK(model_config_check(&c, err, sizeof err) != 0, "gpt2 with GQA accepted");

    c = tiny(ARCH_LLAMA);
    c.n_layer = 0;
    CHECK(model_config_check(&c, err, sizeof err) != 0, "zero layers accepted");
    CHECK_MSG(err, "n_layer");

    /* run-time input checks */
    c = tiny(ARCH_LLAMA);
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "tiny llama: %s", err);
    if (!m) return;
    int32_t tok[2 * 20] = {0}, tgt[2 * 20] = {0};
    float loss;
    CHECK(model_forward(m, tok, tgt, 2, 20, &loss, err, sizeof err) != 0, "T above max accepted");
    CHECK_MSG(err, "sequence length 20");
    CHECK_MSG(err, "max_seq_len 16");
    tok[5] = 50;
    CHECK(model_forward(m, tok, tgt, 2, 8, &loss, err, sizeof err) != 0, "token 50 accepted");
    CHECK_MSG(err, "token id 50 at position 5");
    model_free(m);
}

static void random_tokens(Rng *r, int32_t *x, int n, int V) {
    for (int i = 0; i < n; i++) x[i] = (int32_t)rng_below(r, V);
}

/* A tiny model memorises one batch of random tokens: the loss must fall below
 * 5% of its start (ln 50 = 3.9) within 300 AdamW steps. */
static void test_overfit(Arch arch) {
    char err[256];
    ModelConfig c = tiny(arch);
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "%s", err);
    if (!m) return;
    model_init_weights(m, 7);
    enum { B = 4, T = 16 };
    int32_t tok[B * T], tgt[B * T];
    Rng r;
    rng_seed(&r, 3);
    random_tokens(&r, tok, B * T, c.vocab_size);
    random_tokens(&r, tgt, B * T, c.vocab_size);
    AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.0f, 1.0f};
    float first = 0.0f, loss = 0.0f;
    for (int s = 0; s < 300; s++) {
        model_zero_grad(m);
        if (model_forward_backward(m, tok, tgt, B, T, 1.0f / (B * T), &loss, err, sizeof err)) {
            CHECK(0, "%s", err);
            break;
        }
        if (s == 0) first = loss;
        model_adamw_step(m, &opt, 1e-2f, s + 1);
        CHECK(model_find_nonfinite(m) == NULL, "non-finite at step %d", s);
        if (loss < 0.05f * first) break;
    }
    printf("overfit %s: loss %.4f -> %.4f\n", model_arch_name(arch), first, loss);
    CHECK(fabsf(first - logf(c.vocab_size)) < 0.5f, "initial loss %.3f far from ln V", first);
    CHECK(loss < 0.05f * first, "%s did not overfit: %.4f -> %.4f", model_arch_name(arch), first,
          loss);
    model_free(m);
}

/* NaN detection: a poisoned parameter is named, and its loss is not finite. */
static void test_nonfinite(void) {
    char err[256];
    ModelConfig c = tiny(ARCH_GPT2);
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) {
        CHECK(0, "%s", err);
        return;
    }
    model_init_weights(m, 1);
    CHECK(model_find_nonfinite(m) == NULL, "fresh model reported non-finite");
    size_t P = model_num_params(m);
    float *h = malloc(P * sizeof(float));
    model_get_params(m, h);
    int t = model_find_tensor(m, "transformer.h.1.mlp.c_fc.weight");
    CHECK(t >= 0, "tensor not found");
    h[model_tensor(m, t)->offset + 17] = NAN;
    model_set_params(m, h);
    const char *bad = model_find_nonfinite(m);
    CHECK(bad && !strcmp(bad, "transformer.h.1.mlp.c_fc.weight"), "reported '%s'",
          bad ? bad : "(none)");
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8}, tgt[8] = {2, 3, 4, 5, 6, 7, 8, 9};
    float loss = 0.0f;
    model_zero_grad(m);
    CHECK(model_forward_backward(m, tok, tgt, 1, 8, 0.125f, &loss, err, sizeof err) == 0, "%s",
          err);
    CHECK(!isfinite(loss), "loss %f is finite with a NaN weight", loss);
    CHECK(!isfinite(model_grad_norm(m)), "grad norm finite with a NaN weight");
    /* a NaN only in a gradient is named with the grad: prefix */
    model_init_weights(m, 1);
    model_zero_grad(m);
    model_forward_backward(m, tok, tgt, 1, 8, NAN, &loss, err, sizeof err);
    bad = model_find_nonfinite(m);
    CHECK(bad && !strncmp(bad, "grad:", 5), "NaN gradient reported as '%s'", bad ? bad : "(none)");
    free(h);
    model_free(m);
}

/* model_init_weights against its definition, written out here: the matrices
 * draw rng_normal from one stream in tensor order (scaled by 0.02, the
 * residual projections by 0.02 / sqrt(2 n_layer)), norm weights are 1 and
 * biases 0. The embedding (1.6M elements) crosses the init's 1M-value chunks
 * and runs its parallel path; the values must be bitwise the sequential
 * ones, with 1 thread and with several. */
static void test_init_weights(void) {
    char err[256];
    ModelConfig c = tiny(ARCH_GPT2);
    c.vocab_size = 25000;
    c.d_model = 64;
    c.d_ff = 96;
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) {
        CHECK(0, "%s", err);
        return;
    }
    size_t P = model_num_params(m);
    float *want = malloc(P * sizeof(float)), *got = malloc(P * sizeof(float));
    Rng r;
    rng_seed(&r, 42);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *t = model_tensor(m, i);
        float *w = want + t->offset;
        int proj = strstr(t->name, "attn.c_proj.weight") || strstr(t->name, "mlp.c_proj.weight");
        float std = proj ? 0.02f / sqrtf(2.0f * c.n_layer) : 0.02f;
        for (size_t k = 0; k < t->numel; k++)
            if (t->ndim == 2) w[k] = (float)(std * rng_normal(&r));
            else w[k] = strstr(t->name, "ln_") && strstr(t->name, ".weight") ? 1.0f : 0.0f;
    }
    CHECK(P > ((size_t)1 << 20) + 65536, "the test model (%zu params) is too small", P);
    for (int threads = 1; threads <= 3; threads += 2) {
        omp_set_num_threads(threads);
        model_init_weights(m, 42);
        model_get_params(m, got);
        size_t bad = 0;
        for (size_t k = 0; k < P; k++) bad += memcmp(&want[k], &got[k], sizeof(float)) != 0;
        CHECK(bad == 0, "%zu of %zu initial weights differ from the definition (%d threads)", bad,
              P, threads);
    }
    omp_set_num_threads(omp_get_num_procs());
    free(want), free(got);
    model_free(m);
}

/* Same seed and inputs: bitwise identical parameters after three steps. */
static void test_determinism(void) {
    char err[256];
    ModelConfig c = tiny(ARCH_LLAMA);
    float losses[2][3];
    float *params[2];
    size_t P = 0;
    for (int run = 0; run < 2; run++) {
        Model *m = model_create(&c, ops_cpu(), err, sizeof err);
        if (!m) {
            CHECK(0, "%s", err);
            return;
        }
        model_init_weights(m, 11);
        Rng r;
        rng_seed(&r, 5);
        int32_t tok[32], tgt[32];
        AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
        for (int s = 0; s < 3; s++) {
            random_tokens(&r, tok, 32, c.vocab_size);
            random_tokens(&r, tgt, 32, c.vocab_size);
            model_zero_grad(m);
            model_forward_backward(m, tok, tgt, 2, 16, 1.0f / 32, &losses[run][s], err, sizeof err);
            model_adamw_step(m, &opt, 1e-3f, s + 1);
        }
        P = model_num_params(m);
        params[run] = malloc(P * sizeof(float));
        model_get_params(m, params[run]);
        model_free(m);
    }
    CHECK(!memcmp(losses[0], losses[1], sizeof losses[0]), "losses differ between runs");
    CHECK(!memcmp(params[0], params[1], P * sizeof(float)), "parameters differ between runs");
    free(params[0]);
    free(params[1]);
}

static void test_schedules(void) {
    char err[128];
    LrSchedule s = {.kind = SCHED_COSINE, .lr = 1.0f, .min_lr = 0.1f, .warmup_steps = 10,
                    .total_steps = 110};
    CHECK(sched_check(&s, err, sizeof err) == 0, "%s", err);
    CHECK(fabsf(sched_lr(&s, 0) - 0.1f) < 1e-7f, "warmup step 0: %g", sched_lr(&s, 0));
    CHECK(fabsf(sched_lr(&s, 9) - 1.0f) < 1e-7f, "warmup step 9: %g", sched_lr(&s, 9));
    CHECK(fabsf(sched_lr(&s, 10) - 1.0f) < 1e-7f, "cosine start: %g", sched_lr(&s, 10));
    /* halfway through the decay: min + (max-min)/2 = 0.55 */
    CHECK(fabsf(sched_lr(&s, 60) - 0.55f) < 1e-6f, "cosine middle: %g", sched_lr(&s, 60));
    CHECK(fabsf(sched_lr(&s, 110) - 0.1f) < 1e-6f, "cosine end: %g", sched_lr(&s, 110));
    s.kind = SCHED_LINEAR;
    /* a quarter of the way: 1 - 0.25 * 0.9 = 0.775 */
    CHECK(fabsf(sched_lr(&s, 35) - 0.775f) < 1e-6f, "linear: %g", sched_lr(&s, 35));
    s.kind = SCHED_WSD;
    s.decay_frac = 0.2f; /* decay over the last 22 steps: from step 88 */
    CHECK(sched_lr(&s, 87) == 1.0f, "wsd stable: %g", sched_lr(&s, 87));
    CHECK(fabsf(sched_lr(&s, 99) - (1.0f - 0.9f * 11.0f / 22.0f)) < 1e-6f, "wsd decay: %g",
          sched_lr(&s, 99));
    SchedKind k;
    CHECK(sched_kind_parse("cosin", &k, err, sizeof err) != 0, "misspelt schedule accepted");
    CHECK_MSG(err, "'cosin'");
    s.min_lr = 2.0f;
    CHECK(sched_check(&s, err, sizeof err) != 0, "min_lr above lr accepted");
}

int main(void) {
    test_config_errors();
    test_overfit(ARCH_LLAMA);
    test_overfit(ARCH_GPT2);
    test_nonfinite();
    test_determinism();
    test_init_weights();
    test_schedules();
    return CHECK_DONE();
}
