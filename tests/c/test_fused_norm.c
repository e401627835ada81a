/* test_fused_norm.c: the fused residual + norm ops of the CPU backend
 * (kernels/ops.h residual_layernorm_fwd, residual_rmsnorm_fwd) and the model
 * graph's use of them.
 *
 * Oracles: (1) the two-op sequence on the same backend, residual_fwd then
 * layernorm_fwd / rmsnorm_fwd, which the contract says the fused op equals
 * bit for bit (also with res_out aliasing a or b); (2) a double-precision
 * computation here, within 1e-5 (relative, row by row), so that both sequences being wrong the
 * same way is caught too; (3) whole training steps of tiny GPT-2, Llama and
 * MoE models on the CPU table and on a copy of it without the fused entries
 * (the model then calls the two ops): losses, gradients and parameters
 * bitwise equal. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/c/check.h"
#include "tests/c/tiny_model.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

static float *rand_host(Rng *r, size_t n, float lo, float hi) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * (float)rng_uniform(r);
    return p;
}

static float *dup(const float *p, size_t n) {
    float *q = malloc(n * sizeof *q);
    memcpy(q, p, n * sizeof *q);
    return q;
}

static int same(const float *a, const float *b, size_t n) {
    return !memcmp(a, b, n * sizeof *a);
}

/* the worst row's relative error (statistics, and the output row's
 * ||out - ref|| / ||ref||) against a double-precision norm of a + b */
static double err_vs_double(const float *out, const float *mean, const float *rstd, const float *a,
                            const float *b, const float *w, const float *bias, int N, int C,
                            float eps, int rms) {
    double worst = 0.0;
    for (int n = 0; n < N; n++) {
        const float *x = a + (size_t)n * C, *y = b + (size_t)n * C;
        double m = 0.0, v = 0.0;
        if (!rms) {
            for (int c = 0; c < C; c++)
                m += (double)(x[c] + y[c]);
            m /= C;
        }
        for (int c = 0; c < C; c++) {
            double d = (double)(x[c] + y[c]) - m;
            v += d * d;
        }
        double s = 1.0 / sqrt(v / C + eps);
        double e = fabs(rstd[n] - s) / s;
        if (!rms) e = fmax(e, fabs(mean[n] - m) / (fabs(m) + 1.0));
        double dd = 0.0, rr = 0.0; /* ||out - ref|| / ||ref|| over the row */
        for (int c = 0; c < C; c++) {
            double r = ((double)(x[c] + y[c]) - m) * s * w[c] + (rms ? 0.0 : bias[c]);
            dd += (out[(size_t)n * C + c] - r) * (out[(size_t)n * C + c] - r);
            rr += r * r;
        }
        worst = fmax(worst, fmax(e, sqrt(dd / rr)));
    }
    return worst;
}

/* alias: 0 res_out separate, 1 res_out == a, 2 res_out == b */
static void test_op(int N, int C, int alias) {
    const Ops *o = ops_cpu();
    Rng r;
    rng_seed(&r, 1000u * N + 10u * C + alias);
    size_t NC = (size_t)N * C;
    float *a = rand_host(&r, NC, -2, 2), *b = rand_host(&r, NC, -2, 2);
    float *w = rand_host(&r, C, 0.5f, 1.5f), *bias = rand_host(&r, C, -0.5f, 0.5f);
    const float eps = 1e-5f;
    for (int rms = 0; rms < 2; rms++) {
        const char *op = rms ? "residual_rmsnorm_fwd" : "residual_layernorm_fwd";
        /* two-op reference: res into its own buffer */
        float *res0 = malloc(NC * 4), *out0 = malloc(NC * 4), *mean0 = malloc(N * 4),
              *rstd0 = malloc(N * 4);
        o->residual_fwd(res0, a, b, NC);
        if (rms)
            o->rmsnorm_fwd(out0, rstd0, res0, w, N, C, eps);
        else
            o->layernorm_fwd(out0, mean0, rstd0, res0, w, bias, N, C, eps);
        /* fused, res_out as selected (the aliased input is a copy) */
        float *ca = dup(a, NC), *cb = dup(b, NC), *res1 = malloc(NC * 4);
        float *out1 = malloc(NC * 4), *mean1 = malloc(N * 4), *rstd1 = malloc(N * 4);
        for (size_t i = 0; i < NC; i++)
            out1[i] = NAN, res1[i] = NAN;
        for (int i = 0; i < N; i++)
            mean1[i] = rstd1[i] = NAN;
        float *res = alias == 1 ? ca : alias == 2 ? cb : res1;
        if (rms)
            o->residual_rmsnorm_fwd(res, out1, rstd1, ca, cb, w, N, C, eps);
        else
            o->residual_layernorm_fwd(res, out1, mean1, rstd1, ca, cb, w, bias, N, C, eps);
        CHECK(same(res, res0, NC), "%s N=%d C=%d alias=%d: res_out differs", op, N, C, alias);
        CHECK(same(out1, out0, NC), "%s N=%d C=%d alias=%d: norm_out differs", op, N, C, alias);
        CHECK(same(rstd1, rstd0, N), "%s N=%d C=%d alias=%d: rstd differs", op, N, C, alias);
        if (!rms)
            CHECK(same(mean1, mean0, N), "%s N=%d C=%d alias=%d: mean differs", op, N, C, alias);
        double e = err_vs_double(out1, mean1, rstd1, a, b, w, bias, N, C, eps, rms);
        CHECK(e < 1e-5, "%s N=%d C=%d: %g from the double-precision norm", op, N, C, e);
        free(res0), free(out0), free(mean0), free(rstd0);
        free(ca), free(cb), free(res1), free(out1), free(mean1), free(rstd1);
    }
    free(a), free(b), free(w), free(bias);
}

/* Three training steps on the CPU table (fused) and on a copy without the
 * fused entries (two ops), from the same weights: bitwise equal. */
static void test_model(Arch arch, int n_experts) {
    const char *what = n_experts ? "moe" : arch == ARCH_GPT2 ? "gpt2" : "llama";
    ModelConfig c = test_tiny_config(arch, n_experts);
    char err[256];
    Ops plain = *ops_cpu();
    plain.residual_layernorm_fwd = NULL;
    plain.residual_rmsnorm_fwd = NULL;
    const Ops *tables[2] = {ops_cpu(), &plain};
    CHECK(tables[0]->residual_layernorm_fwd && tables[0]->residual_rmsnorm_fwd,
          "the CPU table lacks a fused residual + norm op");
    int B = 2, T = 12, N = B * T;
    int32_t tok[24], tgt[24];
    Rng r;
    rng_seed(&r, 17);
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)(rng_uniform(&r) * c.vocab_size);
    for (int i = 0; i < N; i++)
        tgt[i] = i % 7 == 6 ? -1 : tok[(i + 1) % N];
    AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    float *params[2] = {0}, *grads[2] = {0}, loss[2][3];
    size_t P = 0;
    for (int k = 0; k < 2; k++) {
        Model *m = model_create(&c, tables[k], err, sizeof err);
        if (!m) {
            CHECK(0, "%s: model_create: %s", what, err);
            return;
        }
        model_init_weights(m, 5);
        P = model_num_params(m);
        for (int step = 1; step <= 3; step++) {
            model_zero_grad(m);
            if (model_moe_begin_step(m, N, err, sizeof err) ||
                model_forward_backward(m, tok, tgt, B, T, 1.0f / N, &loss[k][step - 1], err,
                                       sizeof err))
                CHECK(0, "%s: forward_backward: %s", what, err);
            model_adamw_step(m, &opt, 1e-2f, step);
        }
        params[k] = malloc(P * sizeof(float));
        grads[k] = malloc(P * sizeof(float));
        model_get_params(m, params[k]);
        model_get_grads(m, grads[k]);
        model_free(m);
    }
    CHECK(isfinite(loss[0][0]) && same(loss[0], loss[1], 3),
          "%s: losses %.9g %.9g %.9g fused, "
          "%.9g %.9g %.9g two ops",
          what, loss[0][0], loss[0][1], loss[0][2], loss[1][0], loss[1][1], loss[1][2]);
    CHECK(loss[0][2] < loss[0][0], "%s: loss did not fall (%g -> %g)", what, loss[0][0],
          loss[0][2]);
    CHECK(same(grads[0], grads[1], P), "%s: gradients differ", what);
    CHECK(same(params[0], params[1], P), "%s: parameters differ", what);
    for (int k = 0; k < 2; k++)
        free(params[k]), free(grads[k]);
}

int main(void) {
    static const int shapes[][2] = {{1, 1}, {3, 7}, {13, 77}, {24, 256}, {5, 768}, {64, 2048}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int alias = 0; alias < 3; alias++)
            test_op(shapes[i][0], shapes[i][1], alias);
    test_model(ARCH_GPT2, 0);
    test_model(ARCH_LLAMA, 0);
    test_model(ARCH_LLAMA, 4);
    return CHECK_DONE();
}
