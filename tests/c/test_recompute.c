/* test_recompute.c: activation recomputation (model.h ModelRecompute,
 * [train] recompute) on the CPU backend.
 *
 * Oracle: the same model without recomputation. Two AdamW steps of tiny
 * GPT-2, Llama (GQA), Qwen3-shaped (q/k norms, head size apart from
 * d_model / n_head, tied) and MoE models (every layer; every other layer,
 * so that dense and MoE blocks share the buffers) from the same weights and
 * batches: losses, gradients and parameters bitwise equal (the same ops on
 * the same inputs: no tolerance), and the MoE statistics (LBL, z-loss,
 * counts) equal, so the recomputed forward counted nothing twice. The
 * activation bytes (model_activation_bytes) of both modes are printed for
 * these and for the shapes of configs/demo-base.toml and
 * configs/moe-lbl.toml (docs/train.md quotes them); "block" must need less
 * for every model of more than one layer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/c/check.h"
#include "tests/c/tiny_model.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

#define STEPS 2

static int same(const void *a, const void *b, size_t n_floats) {
    return !memcmp(a, b, n_floats * sizeof(float));
}

/* a batch of B rows of T tokens from seed; every 7th target ignored */
static void make_batch(int32_t *tok, int32_t *tgt, int N, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)(rng_uniform(&r) * V);
    for (int i = 0; i < N; i++)
        tgt[i] = i % 7 == 6 ? -1 : tok[(i + 1) % N];
}

typedef struct {
    float loss[STEPS];
    double aux[STEPS]; /* model_moe_aux_loss */
    float *params, *grads;
    size_t act_bytes;
} RunOut;

static int run(const char *what, const ModelConfig *c, int mode, int B, int T, RunOut *out) {
    char err[256];
    int N = B * T;
    Model *m = model_create(c, ops_cpu(), err, sizeof err);
    if (!m) {
        CHECK(0, "%s: model_create: %s", what, err);
        return 1;
    }
    model_set_recompute(m, mode);
    model_init_weights(m, 5);
    size_t P = model_num_params(m);
    int32_t *tok = malloc(N * sizeof *tok), *tgt = malloc(N * sizeof *tgt);
    AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    int rc = 0;
    for (int step = 1; step <= STEPS && !rc; step++) {
        make_batch(tok, tgt, N, c->vocab_size, 100 + step);
        model_zero_grad(m);
        if (model_moe_begin_step(m, N, err, sizeof err) ||
            model_forward_backward(m, tok, tgt, B, T, 1.0f / N, &out->loss[step - 1], err,
                                   sizeof err)) {
            CHECK(0, "%s recompute=%s: forward_backward: %s", what, model_recompute_name(mode),
                  err);
            rc = 1;
        }
        out->aux[step - 1] = model_moe_aux_loss(m);
        /* the last step's gradients are compared before they are applied */
        if (step == STEPS) {
            out->grads = malloc(P * sizeof(float));
            model_get_grads(m, out->grads);
        }
        model_adamw_step(m, &opt, 1e-2f, step);
    }
    out->params = malloc(P * sizeof(float));
    model_get_params(m, out->params);
    out->act_bytes = model_activation_bytes(m);
    free(tok), free(tgt);
    model_free(m);
    return rc;
}

static void test_model(const char *what, ModelConfig c) {
    int B = 2, T = 12;
    RunOut o[2];
    memset(o, 0, sizeof o);
    if (run(what, &c, MODEL_RECOMPUTE_NONE, B, T, &o[0]) ||
        run(what, &c, MODEL_RECOMPUTE_BLOCK, B, T, &o[1]))
        goto done;
    size_t P = 0;
    {
        char err[256];
        Model *m = model_create(&c, ops_cpu(), err, sizeof err);
        P = m ? model_num_params(m) : 0;
        model_free(m);
    }
    CHECK(isfinite(o[0].loss[0]) && same(o[0].loss, o[1].loss, STEPS),
          "%s: losses %.9g %.9g none, %.9g %.9g block", what, o[0].loss[0], o[0].loss[1],
          o[1].loss[0], o[1].loss[1]);
    CHECK(!memcmp(o[0].aux, o[1].aux, sizeof o[0].aux), "%s: MoE aux loss %.17g none, %.17g block",
          what, o[0].aux[STEPS - 1], o[1].aux[STEPS - 1]);
    CHECK(same(o[0].grads, o[1].grads, P), "%s: gradients differ", what);
    CHECK(same(o[0].params, o[1].params, P), "%s: parameters differ", what);
    CHECK(o[1].act_bytes < o[0].act_bytes, "%s: block needs %zu activation bytes, none %zu", what,
          o[1].act_bytes, o[0].act_bytes);
    printf("%-10s B=%d T=%d: activations %zu bytes (none), %zu (block): %.2fx\n", what, B, T,
           o[0].act_bytes, o[1].act_bytes, (double)o[0].act_bytes / (double)o[1].act_bytes);
done:
    for (int k = 0; k < 2; k++)
        free(o[k].params), free(o[k].grads);
}

/* activation bytes of both modes for a config's shape after one forward
 * (no backward: the memory is allocated by the forward) */
static void report_memory(const char *name, ModelConfig c, int B, int T) {
    char err[256];
    size_t bytes[2] = {0, 0};
    int N = B * T;
    int32_t *tok = malloc(N * sizeof *tok), *tgt = malloc(N * sizeof *tgt);
    make_batch(tok, tgt, N, c.vocab_size, 7);
    for (int mode = 0; mode < 2; mode++) {
        Model *m = model_create(&c, ops_cpu(), err, sizeof err);
        if (!m) {
            CHECK(0, "%s: model_create: %s", name, err);
            break;
        }
        model_set_recompute(m, mode);
        CHECK(model_activation_bytes(m) == 0, "%s: activations before a forward", name);
        if (model_forward(m, tok, tgt, B, T, NULL, err, sizeof err))
            CHECK(0, "%s: forward: %s", name, err);
        bytes[mode] = model_activation_bytes(m);
        model_free(m);
    }
    CHECK(bytes[1] < bytes[0], "%s: block %zu bytes, none %zu", name, bytes[1], bytes[0]);
    printf("%-22s B=%d T=%d: activations %.2f MiB (none), %.2f MiB (block): %.2fx\n", name, B, T,
           bytes[0] / 1048576.0, bytes[1] / 1048576.0, (double)bytes[0] / (double)bytes[1]);
    free(tok), free(tgt);
}

/* the parse and the mode's round trip, and a mode change between passes
 * (activations reallocated) keeping the result */
static void test_api(void) {
    char err[256];
    int mode = -1;
    CHECK(!model_recompute_parse("block", &mode, err, sizeof err) && mode == MODEL_RECOMPUTE_BLOCK);
    CHECK(!model_recompute_parse("none", &mode, err, sizeof err) && mode == MODEL_RECOMPUTE_NONE);
    CHECK(model_recompute_parse("blocks", &mode, err, sizeof err) && strstr(err, "\"block\""),
          "parse error: %s", err);
    ModelConfig c = test_tiny_config(ARCH_LLAMA, 0);
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) {
        CHECK(0, "model_create: %s", err);
        return;
    }
    model_init_weights(m, 3);
    int B = 1, T = 8;
    int32_t tok[8], tgt[8];
    make_batch(tok, tgt, B * T, c.vocab_size, 9);
    size_t P = model_num_params(m);
    float *g[2] = {malloc(P * 4), malloc(P * 4)}, loss[2];
    for (int k = 0; k < 2; k++) {
        model_set_recompute(m, k ? MODEL_RECOMPUTE_BLOCK : MODEL_RECOMPUTE_NONE);
        CHECK(model_recompute(m) == (k ? MODEL_RECOMPUTE_BLOCK : MODEL_RECOMPUTE_NONE));
        model_zero_grad(m);
        if (model_forward_backward(m, tok, tgt, B, T, 1.0f / 7, &loss[k], err, sizeof err))
            CHECK(0, "forward_backward: %s", err);
        model_get_grads(m, g[k]);
    }
    CHECK(loss[0] == loss[1] && same(g[0], g[1], P), "mode switched on one model: results differ");
    free(g[0]), free(g[1]);
    model_free(m);
}

int main(void) {
    test_api();
    test_model("gpt2", test_tiny_config(ARCH_GPT2, 0));
    test_model("llama", test_tiny_config(ARCH_LLAMA, 0));
    ModelConfig q = test_tiny_config(ARCH_LLAMA, 0);
    q.qk_norm = 1, q.head_dim = 16, q.tie_embeddings = 1; /* 4 heads of 16 over d_model 32 */
    test_model("qwen3", q);
    /* MoE: global LBL and z-loss on, so that every router term runs */
    ModelConfig e = test_tiny_config(ARCH_LLAMA, 4);
    e.norm_topk_prob = 1;
    e.lbl_mode = MOE_LBL_GLOBAL;
    e.lbl_coef = 0.01f;
    e.z_loss_coef = 0.001f;
    test_model("moe", e);
    e.moe_layer_step = 2; /* layers 0 and 2 MoE, layer 1 dense */
    test_model("moe-mixed", e);

    /* configs/demo-base.toml's shape (llama, micro_batch 16, seq_len 128) */
    ModelConfig d = model_config_default(ARCH_LLAMA);
    d.n_layer = 4, d.n_head = 4, d.n_kv_head = 2, d.d_model = 128, d.d_ff = 352;
    d.vocab_size = 2048, d.max_seq_len = 128;
    report_memory("demo-base (llama)", d, 16, 128);
    /* configs/moe-lbl.toml's shape (8 experts, top-2, micro_batch 2, seq_len 64) */
    ModelConfig ml = model_config_default(ARCH_LLAMA);
    ml.n_layer = 2, ml.n_head = 4, ml.n_kv_head = 2, ml.d_model = 64, ml.d_ff = 128;
    ml.vocab_size = 2048, ml.max_seq_len = 64, ml.n_experts = 8, ml.top_k = 2;
    report_memory("moe-lbl (MoE)", ml, 2, 64);
    return CHECK_DONE();
}
