/* test_moe.c: MoE properties that need no PyTorch: the hand-computed router
 * / LBL / z-loss vector, config errors, the refusal of a backend without MoE
 * kernels, global-vs-micro LBL counts through the non-blocking sum hooks
 * (finished before the gradient is used),
 * upcycling's equivalence with the dense model, the routing metrics, and
 * the [moe] config section. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/c/check.h"
#include "trainer/config.h"
#include "trainer/hf.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

/* E = 4 experts, K = 2, 4 tokens. Router logits = ln(p) + c_t with the
 * probability rows p below (each sums to 1) and shifts c = (0, 1, -1, 2),
 * so softmax(logits) = p and logsumexp(logits) = c_t.
 *   t0: .40 .30 .20 .10  -> top-2 {0, 1}, weights .4/.7, .3/.7
 *   t1: .10 .20 .30 .40  -> {3, 2}
 *   t2: .50 .10 .10 .30  -> {0, 3}
 *   t3: .25 .45 .20 .10  -> {1, 0}
 * counts = (3, 2, 1, 2), sum 8 = K * 4 tokens; paper f = counts / 8.
 * P = column means = (1.25, 1.05, 0.80, 0.90) / 4 = (.3125, .2625, .2, .225).
 * sum_i f_i P_i = (3*.3125 + 2*.2625 + 1*.2 + 2*.225) / 8 = 2.1125 / 8
 *               = 0.2640625
 * LBL (paper) = E * 0.2640625 = 1.05625 (balanced routing would give 1);
 * LBL (HF, f_i = counts / 4 tokens) = K * 1.05625 = 2.1125.
 * z-loss = mean(c_t^2) = (0 + 1 + 1 + 4) / 4 = 1.5.
 * Tolerance 1e-6: the logits are fp32 roundings of ln(p) + c (relative
 * error ~6e-8 each), which moves each prob by ~1e-7. */
static void test_hand_vector(void) {
    const float p[4][4] = {{.40f, .30f, .20f, .10f},
                           {.10f, .20f, .30f, .40f},
                           {.50f, .10f, .10f, .30f},
                           {.25f, .45f, .20f, .10f}};
    const float shift[4] = {0.0f, 1.0f, -1.0f, 2.0f};
    const int want_idx[4][2] = {{0, 1}, {3, 2}, {0, 3}, {1, 0}};
    float logits[16], probs[16], lse[4], top_w[8], stats[5];
    int32_t top_idx[8];
    for (int t = 0; t < 4; t++)
        for (int e = 0; e < 4; e++) logits[t * 4 + e] = logf(p[t][e]) + shift[t];
    const Ops *o = ops_cpu();
    o->moe_route_fwd(probs, lse, top_idx, top_w, stats, logits, 4, 4, 2, 1);
    for (int t = 0; t < 4; t++) {
        for (int k = 0; k < 2; k++)
            CHECK(top_idx[t * 2 + k] == want_idx[t][k], "token %d slot %d: expert %d, want %d", t,
                  k, top_idx[t * 2 + k], want_idx[t][k]);
        float a = p[t][want_idx[t][0]], b = p[t][want_idx[t][1]];
        CHECK(fabsf(top_w[t * 2] - a / (a + b)) < 1e-6f && fabsf(top_w[t * 2 + 1] - b / (a + b)) < 1e-6f,
              "token %d: weights %g %g", t, top_w[t * 2], top_w[t * 2 + 1]);
        CHECK(fabsf(lse[t] - shift[t]) < 1e-6f, "token %d: lse %g", t, lse[t]);
    }
    int64_t counts[4] = {0};
    for (int i = 0; i < 8; i++) counts[top_idx[i]]++;
    CHECK(counts[0] == 3 && counts[1] == 2 && counts[2] == 1 && counts[3] == 2, "counts");
    double f[4], P[4];
    double paper = moe_lbl(counts, stats, 4, 2, 4, MOE_LBL_NORM_PAPER, f, P);
    double hf = moe_lbl(counts, stats, 4, 2, 4, MOE_LBL_NORM_HF, f, P);
    CHECK(fabs(paper - 1.05625) < 1e-6, "paper LBL %.9f, want 1.05625", paper);
    CHECK(fabs(hf - 2.1125) < 1e-6, "HF LBL %.9f, want 2.1125", hf);
    CHECK(fabs(f[0] - 0.375) < 1e-12 && fabs(f[2] - 0.125) < 1e-12, "f %g %g", f[0], f[2]);
    CHECK(fabs(P[1] - 0.2625) < 1e-6, "P_1 %g", P[1]);
    CHECK(fabs(stats[4] / 4.0 - 1.5) < 1e-6, "z-loss %g, want 1.5", stats[4] / 4.0);

    /* Qwen-MoE semantics: no renormalisation, the weights are the probs */
    o->moe_route_fwd(probs, lse, top_idx, top_w, stats, logits, 4, 4, 2, 0);
    CHECK(fabsf(top_w[0] - 0.4f) < 1e-6f && fabsf(top_w[1] - 0.3f) < 1e-6f, "unnormalised %g %g",
          top_w[0], top_w[1]);
}

static ModelConfig tiny_moe(void) {
    ModelConfig c = model_config_default(ARCH_LLAMA);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = 2;
    c.d_model = 32;
    c.d_ff = 24;
    c.vocab_size = 40;
    c.max_seq_len = 16;
    c.n_experts = 4;
    c.top_k = 2;
    return c;
}

static void test_config_errors(void) {
    char err[300] = "";
    ModelConfig c = tiny_moe();
    c.top_k = 5;
    CHECK(model_config_check(&c, err, sizeof err), "top_k 5 of 4 experts accepted");
    CHECK_MSG(err, "top_k");
    c = tiny_moe();
    c.n_experts = 1;
    CHECK(model_config_check(&c, err, sizeof err), "1 expert accepted");
    CHECK_MSG(err, "n_experts must be 0 (dense) or >= 2");
    c = tiny_moe();
    c.arch = ARCH_GPT2;
    c.n_kv_head = c.n_head;
    CHECK(model_config_check(&c, err, sizeof err), "MoE gpt2 accepted");
    CHECK_MSG(err, "gpt2");
    c = tiny_moe();
    c.moe_layer_start = 2;
    CHECK(model_config_check(&c, err, sizeof err), "layer_start beyond the model accepted");
    CHECK_MSG(err, "layer_start");
    int mode = -1;
    CHECK(moe_lbl_mode_parse("globl", &mode, err, sizeof err), "misspelled lbl mode accepted");
    CHECK_MSG(err, "did you mean \"global\"");
    CHECK(moe_lbl_mode_parse("micro", &mode, err, sizeof err) == 0 && mode == MOE_LBL_MICRO, "micro");
}

static void test_backend_without_moe(void) {
    Ops no_moe = *ops_cpu();
    no_moe.name = "cuda";
    no_moe.moe_route_fwd = NULL;
    char err[300] = "";
    ModelConfig c = tiny_moe();
    Model *m = model_create(&c, &no_moe, err, sizeof err);
    CHECK(m == NULL, "MoE model created on a backend without MoE kernels");
    model_free(m);
    CHECK_MSG(err, "cuda backend has no MoE kernels");
    c.n_experts = 0; /* dense models still work there */
    m = model_create(&c, &no_moe, err, sizeof err);
    CHECK(m != NULL, "dense model refused: %s", err);
    model_free(m);
}

/* A fake non-blocking sum over ranks: begin keeps the values and poisons
 * buf (which the hook may do: buf is the hook's until finish), finish
 * writes the values plus another rank's counts (1, 2, 3, 4 per expert;
 * other = 0: a second rank that routed nothing, i.e. the identity). So
 * counts used before the finish, or a skipped finish, give huge or
 * negative f and wrong gradients. */
typedef struct {
    int begins, finishes, other;
    size_t n;
    int64_t *buf, kept[64];
    void *req;
} FakeDist;
static int fake_begin(void *ctx, int64_t *buf, size_t n, void **req, char *err, size_t err_len) {
    FakeDist *d = ctx;
    if (n > 64 || d->begins != d->finishes)
        return snprintf(err, err_len, "fake sum: n %zu, or begun twice", n), 1;
    d->begins++;
    d->n = n, d->buf = buf;
    for (size_t i = 0; i < n; i++) d->kept[i] = buf[i], buf[i] = (int64_t)(i % 3) << 40;
    *req = d->req = &d->kept;
    return 0;
}
static int fake_finish(void *ctx, void *req, char *err, size_t err_len) {
    FakeDist *d = ctx;
    if (req != d->req || d->finishes != d->begins - 1)
        return snprintf(err, err_len, "fake sum: finish of another request, or without begin"), 1;
    d->finishes++;
    for (size_t i = 0; i < d->n; i++) d->buf[i] = d->kept[i] + d->other * (int64_t)(i % 4 + 1);
    return 0;
}

static void random_tokens(Rng *r, int32_t *tok, int32_t *tgt, int n, int V) {
    for (int i = 0; i < n; i++) tok[i] = (int32_t)rng_below(r, V), tgt[i] = (int32_t)rng_below(r, V);
}

static void test_global_counts(void) {
    char err[300];
    for (int mode = MOE_LBL_MICRO; mode <= MOE_LBL_GLOBAL; mode++) {
        ModelConfig c = tiny_moe();
        c.lbl_mode = mode;
        Model *m = model_create(&c, ops_cpu(), err, sizeof err);
        CHECK(m != NULL, "%s", err);
        if (!m) return;
        model_init_weights(m, 5);
        FakeDist d = {.other = 1};
        model_moe_set_allreduce(m, fake_begin, fake_finish, &d);
        Rng r;
        rng_seed(&r, 9);
        int32_t tok[3][16], tgt[3][16];
        for (int j = 0; j < 3; j++) random_tokens(&r, tok[j], tgt[j], 16, c.vocab_size);
        CHECK(model_forward_backward(m, tok[0], tgt[0], 2, 8, 1.0f / 48, NULL, err, sizeof err),
              "training without model_moe_begin_step accepted");
        CHECK_MSG(err, "model_moe_begin_step");
        CHECK(model_moe_begin_step(m, 48, err, sizeof err) == 0, "%s", err);
        int64_t sum[2][4] = {{0}};
        for (int j = 0; j < 3; j++) {
            CHECK(model_forward_backward(m, tok[j], tgt[j], 2, 8, 1.0f / 48, NULL, err, sizeof err) == 0,
                  "%s", err);
            for (int i = 0; i < 2; i++) {
                MoeLayerStats st;
                model_moe_layer_stats(m, i, &st);
                double tot = 0, want[4];
                for (int e = 0; e < 4; e++) {
                    sum[i][e] += st.counts[e] + (e + 1); /* fake rank's 1,2,3,4 per micro-batch */
                    want[e] = mode == MOE_LBL_GLOBAL ? (double)sum[i][e] : (double)st.counts[e];
                    tot += want[e];
                }
                double worst = 0;
                for (int e = 0; e < 4; e++) worst = fmax(worst, fabs(st.f[e] - want[e] / tot));
                CHECK(worst < 1e-12, "%s micro-batch %d layer %d: f off by %g",
                      moe_lbl_mode_name(mode), j, i, worst);
            }
        }
        CHECK(d.begins == (mode == MOE_LBL_GLOBAL ? 3 : 0) && d.finishes == d.begins &&
                  (mode != MOE_LBL_GLOBAL || d.n == 8),
              "%s: sum begun %d, finished %d times with %zu values", moe_lbl_mode_name(mode),
              d.begins, d.finishes, d.n);
        /* a new step starts from zero counts */
        model_moe_begin_step(m, 16, err, sizeof err);
        model_forward_backward(m, tok[0], tgt[0], 2, 8, 1.0f / 16, NULL, err, sizeof err);
        MoeLayerStats st;
        model_moe_layer_stats(m, 0, &st);
        double tot = 0;
        for (int e = 0; e < 4; e++) tot += st.counts[e] + (mode == MOE_LBL_GLOBAL ? e + 1 : 0);
        CHECK(fabs(st.f[3] - (st.counts[3] + (mode == MOE_LBL_GLOBAL ? 4 : 0)) / tot) < 1e-12,
              "%s: counts not reset by model_moe_begin_step", moe_lbl_mode_name(mode));
        model_free(m);
    }
}

/* Global LBL through the non-blocking hooks at "one rank" (the fake's
 * other = 0: the sum is the identity) gives bitwise the gradients, LBL and
 * aux loss of the model without hooks (which computes f right after the
 * forward): the finish comes before any LBL gradient is used, and the
 * poisoned buffer is never read. lbl_coef 1 makes the LBL gradient a
 * visible part of the router gradient; the check that it is visible: the
 * same model with lbl = "none" has other router gradients. */
static void test_sum_before_backward(void) {
    char err[300];
    ModelConfig c = tiny_moe();
    c.lbl_coef = 1.0f;
    Model *m[3];
    FakeDist d = {.other = 0};
    for (int k = 0; k < 3; k++) {
        c.lbl_mode = k == 2 ? MOE_LBL_NONE : MOE_LBL_GLOBAL;
        m[k] = model_create(&c, ops_cpu(), err, sizeof err);
        CHECK(m[k] != NULL, "%s", err);
        if (!m[k]) return;
        model_init_weights(m[k], 21);
    }
    model_moe_set_allreduce(m[1], fake_begin, fake_finish, &d);
    size_t n = model_num_params(m[0]);
    float *g[3];
    double aux[3];
    Rng r;
    rng_seed(&r, 4);
    int32_t tok[2][16], tgt[2][16];
    for (int j = 0; j < 2; j++) random_tokens(&r, tok[j], tgt[j], 16, c.vocab_size);
    for (int k = 0; k < 3; k++) {
        g[k] = malloc(n * sizeof(float));
        model_zero_grad(m[k]);
        CHECK(model_moe_begin_step(m[k], 32, err, sizeof err) == 0, "%s", err);
        aux[k] = 0;
        for (int j = 0; j < 2; j++) {
            CHECK(model_forward_backward(m[k], tok[j], tgt[j], 2, 8, 1.0f / 32, NULL, err,
                                         sizeof err) == 0,
                  "%s", err);
            aux[k] += model_moe_aux_loss(m[k]);
        }
        model_get_grads(m[k], g[k]);
    }
    CHECK(d.begins == 2 && d.finishes == 2, "sum begun %d, finished %d times", d.begins,
          d.finishes);
    size_t diff = 0, diff_none = 0;
    for (size_t i = 0; i < n; i++) diff += g[0][i] != g[1][i], diff_none += g[0][i] != g[2][i];
    CHECK(diff == 0 && aux[0] == aux[1], "hooks vs none: %zu of %zu gradients differ, aux %g vs %g",
          diff, n, aux[0], aux[1]);
    CHECK(diff_none > 0, "the LBL gradient did not change any gradient (coef 1)");
    for (int k = 0; k < 3; k++) model_free(m[k]), free(g[k]);
}

/* Dense init with std 0.3 matrices (O(1) logits), then upcycle. */
static void test_upcycle(void) {
    char err[300];
    ModelConfig dc = tiny_moe();
    dc.n_experts = 0;
    Model *dense = model_create(&dc, ops_cpu(), err, sizeof err);
    CHECK(dense != NULL, "%s", err);
    if (!dense) return;
    float *p = malloc(model_num_params(dense) * sizeof *p);
    Rng r;
    rng_seed(&r, 77);
    for (int i = 0; i < model_num_tensors(dense); i++) {
        const ParamTensor *t = model_tensor(dense, i);
        for (size_t k = 0; k < t->numel; k++)
            p[t->offset + k] = t->ndim == 2 ? (float)(0.3 * rng_normal(&r)) : 1.0f;
    }
    model_set_params(dense, p);
    free(p);
    int32_t tok[16], tgt[16];
    random_tokens(&r, tok, tgt, 16, dc.vocab_size);
    size_t nl = (size_t)16 * dc.vocab_size;
    float *ld = malloc(nl * 4), *lm = malloc(nl * 4);
    model_forward(dense, tok, NULL, 2, 8, NULL, err, sizeof err);
    model_logits(dense, ld);
    float maxl = 0;
    for (size_t i = 0; i < nl; i++) maxl = fmaxf(maxl, fabsf(ld[i]));
    CHECK(maxl > 1.0f, "dense logits too small (%g) for a meaningful comparison", maxl);
    for (int K = 1; K <= 3; K++) {
        ModelConfig mc = dc;
        mc.n_experts = 4;
        mc.top_k = K;
        Model *m = model_upcycle(dense, &mc, 0.0f, 11, err, sizeof err);
        CHECK(m != NULL, "%s", err);
        if (!m) continue;
        CHECK(model_forward(m, tok, NULL, 2, 8, NULL, err, sizeof err) == 0, "%s", err);
        model_logits(m, lm);
        double worst = 0;
        for (size_t i = 0; i < nl; i++) worst = fmax(worst, fabs(lm[i] - ld[i]));
        /* K = 1: the weight is p/p = 1 exactly and each expert GEMM row is
         * the dense row's dot product: bitwise equal. K > 1: the weights
         * sum to 1 within an ulp, and row blocking of sgemm differs: the
         * difference stays at fp32 rounding (<= 1e-5 of max |logit|). */
        printf("upcycle top_k=%d: max |logit diff| %.3e (max |logit| %.3f)\n", K, worst, maxl);
        CHECK(worst <= 1e-5 * maxl, "top_k %d: upcycled logits differ by %g", K, worst);
        /* the routers are not trivial: they route to several experts */
        MoeLayerStats st;
        model_moe_layer_stats(m, 0, &st);
        int used = 0;
        for (int e = 0; e < 4; e++) used += st.counts[e] > 0;
        CHECK(used >= 2, "top_k %d: the router sent every token to one expert", K);
        model_free(m);
    }
    ModelConfig mc = dc;
    mc.n_experts = 4;
    Model *noisy = model_upcycle(dense, &mc, 0.01f, 11, err, sizeof err);
    model_forward(noisy, tok, NULL, 2, 8, NULL, err, sizeof err);
    model_logits(noisy, lm);
    double worst = 0;
    for (size_t i = 0; i < nl; i++) worst = fmax(worst, fabs(lm[i] - ld[i]));
    CHECK(worst > 1e-4, "noise 0.01 left the logits unchanged (%g)", worst);
    model_free(noisy);
    mc.d_ff = 32;
    CHECK(model_upcycle(dense, &mc, 0.0f, 1, err, sizeof err) == NULL, "d_ff mismatch accepted");
    CHECK_MSG(err, "must equal the dense checkpoint's");
    free(ld), free(lm);
    model_free(dense);
}

static void test_metrics(void) {
    char err[300];
    ModelConfig c = tiny_moe();
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) return;
    model_init_weights(m, 3);
    Rng r;
    rng_seed(&r, 4);
    int32_t tok[32], tgt[32];
    random_tokens(&r, tok, tgt, 32, c.vocab_size);
    model_forward(m, tok, NULL, 4, 8, NULL, err, sizeof err);
    int64_t counts0[4];
    MoeLayerStats st;
    model_moe_layer_stats(m, 0, &st);
    memcpy(counts0, st.counts, sizeof counts0);
    int all_domain[4] = {0, 0, 0, 0}, all_general[4] = {1, 1, 1, 1};
    model_moe_record_routing(m, all_domain, 4, err, sizeof err);
    MoeMetrics mm;
    model_moe_metrics(m, &mm, err, sizeof err);
    CHECK(isnan(mm.specialization), "specialization defined with one source only");
    for (int e = 0; e < 4; e++)
        CHECK(fabs(mm.dist[0][e] - counts0[e] / 64.0) < 1e-12, "domain distribution %d", e);
    moe_metrics_free(&mm);
    /* the same routings as general too: identical distributions, JSD 0 */
    model_moe_record_routing(m, all_general, 4, err, sizeof err);
    model_moe_metrics(m, &mm, err, sizeof err);
    CHECK(fabs(mm.specialization) < 1e-12, "identical routings: JSD %g", mm.specialization);
    moe_metrics_free(&mm);
    /* rows 0,1 domain, rows 2,3 general: JSD in [0, ln 2], distributions sum to 1 */
    model_moe_metrics_reset(m);
    int split[4] = {0, 0, 1, 1};
    model_moe_record_routing(m, split, 4, err, sizeof err);
    model_moe_metrics(m, &mm, err, sizeof err);
    for (int i = 0; i < mm.n_layers; i++) {
        double s0 = 0, s1 = 0;
        for (int e = 0; e < 4; e++) s0 += mm.dist[0][i * 4 + e], s1 += mm.dist[1][i * 4 + e];
        CHECK(fabs(s0 - 1) < 1e-12 && fabs(s1 - 1) < 1e-12, "layer %d: sums %g %g", i, s0, s1);
        CHECK(mm.jsd[i] >= 0 && mm.jsd[i] <= log(2.0) + 1e-12, "layer %d: JSD %g", i, mm.jsd[i]);
        CHECK(mm.load_max[i] >= 1.0 && mm.load_max[i] <= 4.0, "layer %d: load %g", i, mm.load_max[i]);
    }
    CHECK(mm.worst_load >= mm.load_max[0] && mm.worst_load >= mm.load_max[1], "worst load");
    moe_metrics_free(&mm);
    model_free(m);
}

static const char *const SHAPE =
    "[model]\narch = \"llama\"\nn_layer = 4\nn_head = 4\nn_kv_head = 2\nd_model = 32\n"
    "d_ff = 48\nvocab_size = 64\nmax_seq_len = 64\n[data]\nseq_len = 32\n";

/* 0 when text loads and validates; else the message in err */
static int load_cfg(Config *c, const char *text, char *err, size_t err_len) {
    config_init(c);
    return config_load_string(c, text, "t.toml", err, err_len) || config_validate(c, err, err_len);
}

static void test_config_section(void) {
    char text[2048], err[600];
    Config c;
    ModelConfig m;
    snprintf(text, sizeof text,
             "%s[moe]\nn_experts = 4\ntop_k = 2\nlayer_start = 1\nlayer_step = 2\n"
             "norm_topk_prob = false\nlbl = \"micro\"\nlbl_norm = \"hf\"\nlbl_coef = 0.01\n"
             "z_loss_coef = 0.001\n",
             SHAPE);
    CHECK(load_cfg(&c, text, err, sizeof err) == 0, "%s", err);
    CHECK(config_to_model_config(&c, &m, err, sizeof err) == 0, "%s", err);
    CHECK(m.n_experts == 4 && m.top_k == 2 && m.moe_layer_start == 1 && m.moe_layer_step == 2 &&
              !m.norm_topk_prob && m.lbl_mode == MOE_LBL_MICRO && m.lbl_norm == MOE_LBL_NORM_HF &&
              fabsf(m.lbl_coef - 0.01f) < 1e-9f && fabsf(m.z_loss_coef - 0.001f) < 1e-9f,
          "[moe] values not in the ModelConfig");
    CHECK(moe_is_layer(&m, 1) && moe_is_layer(&m, 3) && !moe_is_layer(&m, 0) && !moe_is_layer(&m, 2),
          "layer selection");
    config_free(&c);
    /* defaults: dense */
    CHECK(load_cfg(&c, SHAPE, err, sizeof err) == 0, "%s", err);
    config_to_model_config(&c, &m, err, sizeof err);
    CHECK(m.n_experts == 0 && m.lbl_mode == MOE_LBL_GLOBAL && fabsf(m.lbl_coef - 0.008f) < 1e-9f,
          "defaults: n_experts %d lbl %d", m.n_experts, m.lbl_mode);
    config_free(&c);

    static const struct {
        const char *moe, *model_extra, *needle;
    } bad[] = {
        {"n_experts = 4\nlbl = \"globl\"\n", "", "moe.lbl"},
        {"n_experts = 4\ntop_k = 5\n", "", "top_k must be in [1, n_experts = 4]"},
        {"n_experts = 1\n", "", "n_experts must be 0 (dense) or >= 2"},
        {"n_experts = 4\nlayer_start = 4\n", "", "layer_start must be in [0, n_layer = 4)"},
        {"n_expert = 4\n", "", "did you mean"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(text, sizeof text, "%s%s[moe]\n%s", SHAPE, bad[i].model_extra, bad[i].moe);
        CHECK(load_cfg(&c, text, err, sizeof err) != 0, "bad [moe] %zu accepted", i);
        CHECK_MSG(err, bad[i].needle);
        config_free(&c);
    }
    /* MoE on gpt2 */
    CHECK(load_cfg(&c,
                   "[model]\narch = \"gpt2\"\nn_layer = 2\nn_head = 4\nd_model = 32\nd_ff = 64\n"
                   "vocab_size = 64\nmax_seq_len = 64\n[data]\nseq_len = 32\n[moe]\nn_experts = 4\n",
                   err, sizeof err) != 0,
          "MoE gpt2 accepted");
    CHECK_MSG(err, "gpt2 has no MoE FFN");
    config_free(&c);
    /* init_from keeps its experts; upcycling needs experts, excludes init_from */
    CHECK(load_cfg(&c, "[model]\ninit_from = \"x\"\n[moe]\ntop_k = 1\n", err, sizeof err) != 0,
          "top_k with init_from accepted");
    CHECK_MSG(err, "moe.top_k");
    config_free(&c);
    CHECK(load_cfg(&c, "[model]\ninit_from = \"x\"\n[moe]\nlbl = \"micro\"\n", err, sizeof err) == 0,
          "lbl with init_from refused: %s", err);
    config_free(&c);
    CHECK(load_cfg(&c, "[model]\nupcycle_from = \"d\"\n", err, sizeof err) != 0,
          "upcycle_from without experts accepted");
    CHECK_MSG(err, "n_experts >= 2");
    config_free(&c);
    CHECK(load_cfg(&c, "[model]\nupcycle_from = \"d\"\nn_layer = 3\n[moe]\nn_experts = 4\n", err,
                   sizeof err) != 0,
          "upcycle_from with shape keys accepted");
    CHECK_MSG(err, "upcycle_from");
    config_free(&c);
    /* the resolved config of an upcycling run parses back */
    CHECK(load_cfg(&c, "[model]\nupcycle_from = \"d\"\nupcycle_noise = 0.01\n[moe]\nn_experts = 4\n",
                   err, sizeof err) == 0,
          "%s", err);
    char *toml = config_to_toml(&c);
    Config c2;
    CHECK(toml && load_cfg(&c2, toml, err, sizeof err) == 0, "round trip: %s", err);
    CHECK(!strcmp(c2.moe.upcycle_from, "d") && c2.moe.n_experts == 4 && c2.moe.upcycle_noise == 0.01,
          "round trip values");
    free(toml);
    config_free(&c);
    config_free(&c2);
}

/* config.json: Mixtral for Mixtral layouts, dapt_* keys for the others,
 * both read back to the same MoE fields; jitter noise refused. */
static void test_hf_config(void) {
    char err[400];
    for (int variant = 0; variant < 2; variant++) {
        ModelConfig c = tiny_moe(), back;
        c.n_layer = 4;
        if (variant) c.moe_layer_start = 1, c.moe_layer_step = 2, c.norm_topk_prob = 0;
        char *json = hf_config_json(&c);
        CHECK(json && strstr(json, "\"MixtralForCausalLM\"") && strstr(json, "\"num_local_experts\": 4"),
              "variant %d: not a Mixtral config", variant);
        CHECK((strstr(json, "dapt_moe_layer_start") != NULL) == variant, "variant %d: dapt keys", variant);
        CHECK(hf_parse_config(json, "config.json", &back, err, sizeof err) == 0, "%s", err);
        CHECK(back.n_experts == 4 && back.top_k == 2 && back.moe_layer_start == c.moe_layer_start &&
                  back.moe_layer_step == c.moe_layer_step && back.norm_topk_prob == c.norm_topk_prob,
              "variant %d: MoE fields did not round-trip", variant);
        free(json);
    }
    const char *jit = "{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 32, "
                      "\"num_attention_heads\": 4, \"router_jitter_noise\": 0.1}";
    ModelConfig c;
    CHECK(hf_parse_config(jit, "config.json", &c, err, sizeof err) != 0, "jitter noise accepted");
    CHECK_MSG(err, "router_jitter_noise");
}

int main(void) {
    test_hf_config();
    test_config_section();
    test_hand_vector();
    test_config_errors();
    test_backend_without_moe();
    test_global_counts();
    test_sum_before_backward();
    test_upcycle();
    test_metrics();
    return CHECK_DONE();
}
