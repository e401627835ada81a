/* test_ops_profile.c: the profiling Ops wrapper (kernels/ops_profile.h) on
 * the CPU backend. Oracle: the plain CPU table. Wrapped ops must give
 * bitwise the same results on the same inputs (single ops, and whole
 * training steps of tiny GPT-2, Llama and MoE models, which reach every op
 * of the table); the call counts must match the model graph (one
 * matmul_fwd and one matmul_bwd per linear layer, counted from the model's
 * parameter list); times are non-negative and sum to at most the wall time
 * around the calls; switched off, the wrapper counts nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops_profile.h"
#include "kernels/util.h"
#include "tests/c/check.h"
#include "tests/c/tiny_model.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

static float *rand_host(Rng *r, size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)rng_uniform(r) * 2.0f - 1.0f;
    return p;
}

static int same_bits(const void *a, const void *b, size_t n_bytes) {
    return !memcmp(a, b, n_bytes);
}

static void test_table(void) {
    const Ops *cpu = ops_cpu();
    CHECK(ops_profiled(NULL) == NULL, "NULL inner gave a table");
    const Ops *p = ops_profiled(cpu);
    CHECK(p && p != cpu, "no wrapper table");
    CHECK(!strcmp(p->name, cpu->name), "name '%s', inner '%s'", p->name, cpu->name);
    CHECK(p->act_bytes == cpu->act_bytes && p->alloc == cpu->alloc && p->free == cpu->free &&
              p->sync == cpu->sync && p->lmhead_scratch_bytes == cpu->lmhead_scratch_bytes,
          "memory functions not the inner ones");
    CHECK(p->matmul_fwd != cpu->matmul_fwd && p->adamw != cpu->adamw && p->zero != cpu->zero,
          "ops not wrapped");
    CHECK(ops_profiled(p) == p, "wrapping the wrapper gave another table");

    /* an op the inner table lacks stays NULL (model_create relies on it) */
    static Ops partial;
    partial = *cpu;
    partial.moe_route_fwd = NULL;
    partial.moe_combine_bwd = NULL;
    p = ops_profiled(&partial);
    CHECK(p->moe_route_fwd == NULL && p->moe_combine_bwd == NULL, "NULL op wrapped");
    CHECK(p->moe_permute != NULL, "present MoE op not wrapped");
}

/* single ops, wrapped against plain, on the same inputs */
static void test_single_ops(void) {
    const Ops *cpu = ops_cpu(), *p = ops_profiled(cpu);
    Rng r;
    rng_seed(&r, 7);
    int N = 24, IC = 40, OC = 56;
    float *x = rand_host(&r, (size_t)N * IC), *w = rand_host(&r, (size_t)OC * IC);
    float *b = rand_host(&r, OC), *dy = rand_host(&r, (size_t)N * OC);
    float *dw0 = rand_host(&r, (size_t)OC * IC); /* accumulation target */
    float *out[2], *dx[2], *dwv[2], *db[2];
    double t_wall = 0.0;
    for (int k = 0; k < 2; k++) {
        const Ops *o = k ? p : cpu;
        out[k] = o->alloc((size_t)N * OC * 4);
        dx[k] = o->alloc((size_t)N * IC * 4);
        dwv[k] = o->alloc((size_t)OC * IC * 4);
        db[k] = o->alloc((size_t)OC * 4);
        memcpy(dwv[k], dw0, (size_t)OC * IC * 4);
        double t0 = now_s();
        o->matmul_fwd(out[k], x, w, b, N, IC, OC);
        o->matmul_bwd(dx[k], dwv[k], db[k], dy, x, w, N, IC, OC);
        o->matmul_bwd(NULL, dwv[k], NULL, dy, x, w, N, IC, OC);
        if (k) t_wall = now_s() - t0;
    }
    CHECK(same_bits(out[0], out[1], (size_t)N * OC * 4), "matmul_fwd differs when wrapped");
    CHECK(same_bits(dx[0], dx[1], (size_t)N * IC * 4), "matmul_bwd dinp differs when wrapped");
    CHECK(same_bits(dwv[0], dwv[1], (size_t)OC * IC * 4), "matmul_bwd dw differs when wrapped");
    CHECK(same_bits(db[0], db[1], (size_t)OC * 4), "matmul_bwd dbias differs when wrapped");

    OpsProfileEntry e;
    CHECK(ops_profile_get("matmul_fwd", &e) == 0 && e.calls == 1, "matmul_fwd calls %ld", e.calls);
    CHECK(e.flops == 2.0 * N * IC * OC, "matmul_fwd flops %g", e.flops);
    double t_fwd = e.seconds;
    CHECK(ops_profile_get("matmul_bwd", &e) == 0 && e.calls == 2, "matmul_bwd calls %ld", e.calls);
    /* 4 N IC OC with dinp, 2 N IC OC without */
    CHECK(e.flops == 6.0 * N * IC * OC, "matmul_bwd flops %g", e.flops);
    CHECK(t_fwd >= 0 && e.seconds >= 0 && t_fwd + e.seconds <= t_wall,
          "op times %g + %g s over a wall of %g s", t_fwd, e.seconds, t_wall);
    CHECK(ops_profile_get("gelu_fwd", &e) == -1 && e.calls == 0, "gelu_fwd counted uncalled");

    /* a value-returning op, and switching off */
    size_t n = 1000;
    float *g = rand_host(&r, n);
    double s0 = cpu->sumsq(g, n), s1 = p->sumsq(g, n);
    CHECK(same_bits(&s0, &s1, sizeof s0), "sumsq %.17g wrapped, %.17g plain", s1, s0);
    CHECK(ops_profile_get("sumsq", &e) == 0 && e.calls == 1 && e.bytes == n * 4.0,
          "sumsq calls %ld bytes %g", e.calls, e.bytes);
    ops_profile_enable(0);
    s1 = p->sumsq(g, n);
    p->matmul_fwd(out[1], x, w, NULL, N, IC, OC);
    ops_profile_enable(1);
    CHECK(same_bits(&s0, &s1, sizeof s0), "sumsq differs when switched off");
    CHECK(ops_profile_get("sumsq", &e) == 0 && e.calls == 1, "counted while off: %ld", e.calls);
    cpu->matmul_fwd(out[0], x, w, NULL, N, IC, OC);
    CHECK(same_bits(out[0], out[1], (size_t)N * OC * 4), "matmul_fwd differs when switched off");
    ops_profile_reset();
    OpsProfileEntry all[4];
    CHECK(ops_profile_entries(all, 4) == 0, "entries after reset");

    for (int k = 0; k < 2; k++) {
        cpu->free(out[k]);
        cpu->free(dx[k]);
        cpu->free(dwv[k]);
        cpu->free(db[k]);
    }
    free(x), free(w), free(b), free(dy), free(dw0), free(g);
}

/* Two training steps (forward_backward + AdamW) on the plain and on the
 * profiled table from the same weights: parameters, gradients and losses
 * bitwise equal. Then the counters of one forward_backward. */
static void test_model(Arch arch, int n_experts) {
    const char *what = n_experts ? "moe" : arch == ARCH_GPT2 ? "gpt2" : "llama";
    ModelConfig c = test_tiny_config(arch, n_experts);
    char err[256];
    const Ops *cpu = ops_cpu(), *prof = ops_profiled(cpu);
    Model *m[2] = {model_create(&c, cpu, err, sizeof err), model_create(&c, prof, err, sizeof err)};
    if (!m[0] || !m[1]) {
        CHECK(0, "%s: model_create: %s", what, err);
        return;
    }
    int B = 2, T = 12, N = B * T;
    int32_t tok[24], tgt[24];
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)(rng_uniform(&r) * c.vocab_size);
    for (int i = 0; i < N; i++)
        tgt[i] = i % 5 == 4 ? -1 : tok[(i + 1) % N];
    AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    size_t P = model_num_params(m[0]);
    float *host[2], *grads[2], loss[2];
    for (int k = 0; k < 2; k++) {
        model_init_weights(m[k], 3);
        for (int step = 1; step <= 2; step++) {
            model_zero_grad(m[k]);
            if (model_moe_begin_step(m[k], N, err, sizeof err) ||
                model_forward_backward(m[k], tok, tgt, B, T, 1.0f / N, &loss[k], err, sizeof err))
                CHECK(0, "%s: forward_backward: %s", what, err);
            model_adamw_step(m[k], &opt, 1e-2f, step);
        }
        host[k] = malloc(P * sizeof(float));
        grads[k] = malloc(P * sizeof(float));
        model_get_params(m[k], host[k]);
        model_get_grads(m[k], grads[k]);
    }
    CHECK(isfinite(loss[0]) && same_bits(&loss[0], &loss[1], sizeof(float)),
          "%s: loss %.9g wrapped, %.9g plain", what, loss[1], loss[0]);
    CHECK(same_bits(host[0], host[1], P * sizeof(float)), "%s: params differ when wrapped", what);
    CHECK(same_bits(grads[0], grads[1], P * sizeof(float)), "%s: grads differ when wrapped", what);

    /* the counters of one forward_backward */
    ops_profile_reset();
    model_moe_begin_step(m[1], N, err, sizeof err);
    double t0 = now_s();
    if (model_forward_backward(m[1], tok, tgt, B, T, 1.0f / N, &loss[1], err, sizeof err))
        CHECK(0, "%s: forward_backward: %s", what, err);
    double wall = now_s() - t0;
    OpsProfileEntry e[64];
    int n = ops_profile_entries(e, 64);
    CHECK(n > 0 && n <= 64, "%s: %d entries", what, n);
    double sum = 0.0;
    for (int i = 0; i < n && i < 64; i++) {
        CHECK(e[i].seconds >= 0 && e[i].calls > 0, "%s: %s %g s, %ld calls", what, e[i].op,
              e[i].seconds, e[i].calls);
        sum += e[i].seconds;
    }
    CHECK(sum <= wall, "%s: ops sum to %g s over a wall of %g s", what, sum, wall);

    OpsProfileEntry f, b, x;
    ops_profile_get("matmul_fwd", &f);
    ops_profile_get("matmul_bwd", &b);
    if (!n_experts) {
        /* linear layers from the parameter list: 2-D tensors other than
         * the embeddings and the head. GPT-2 has one tensor per linear
         * layer; Llama stores q, k, v and gate, up as adjacent tensors
         * that the graph multiplies as one matrix each (ParamTensor). */
        int n_2d = 0;
        for (int i = 0; i < model_num_tensors(m[1]); i++) {
            const ParamTensor *t = model_tensor(m[1], i);
            if (t->ndim == 2 && !strstr(t->name, "wte") && !strstr(t->name, "wpe") &&
                !strstr(t->name, "embed_tokens") && !strstr(t->name, "lm_head"))
                n_2d++;
        }
        int n_linear = arch == ARCH_GPT2 ? n_2d : n_2d - 3 * c.n_layer;
        CHECK(n_linear == 4 * c.n_layer, "%s: %d linear layers", what, n_linear);
        CHECK(f.calls == n_linear, "%s: matmul_fwd calls %ld, linear layers %d", what, f.calls,
              n_linear);
        CHECK(b.calls == n_linear, "%s: matmul_bwd calls %ld, linear layers %d", what, b.calls,
              n_linear);
        /* the qkv projection: one shape entry, once per layer */
        int qkv_oc = (c.n_head + 2 * c.n_kv_head) * (c.d_model / c.n_head), found = 0;
        for (int i = 0; i < n && i < 64; i++)
            if (!strcmp(e[i].op, "matmul_fwd") && e[i].ic == c.d_model && e[i].oc == qkv_oc) {
                found = 1;
                CHECK(e[i].calls == c.n_layer, "%s: qkv calls %ld", what, e[i].calls);
            }
        CHECK(found, "%s: no matmul_fwd entry IC=%d OC=%d", what, c.d_model, qkv_oc);
    } else {
        /* MoE layers add the router and per-expert matmuls */
        CHECK(f.calls > 2 * c.n_layer && b.calls == f.calls, "%s: matmul calls fwd %ld bwd %ld",
              what, f.calls, b.calls);
        CHECK(ops_profile_get("moe_route_fwd", &x) == 0 && x.calls == c.n_layer,
              "%s: moe_route_fwd calls %ld", what, x.calls);
    }
    CHECK(ops_profile_get("attention_fwd", &x) == 0 && x.calls == c.n_layer,
          "%s: attention_fwd calls %ld", what, x.calls);
    CHECK(ops_profile_get("attention_bwd", &x) == 0 && x.calls == c.n_layer,
          "%s: attention_bwd calls %ld", what, x.calls);
    CHECK(ops_profile_get("lmhead_ce", &x) == 0 && x.calls == 1 &&
              x.flops == 6.0 * N * c.d_model * c.vocab_size,
          "%s: lmhead_ce calls %ld flops %g", what, x.calls, x.flops);
    /* the CPU table has the fused residual + norm op: the first block's
     * norm1 alone, then two fused calls a block (norm2; the next norm1 or
     * the final norm), and no plain residual add */
    const char *norm = arch == ARCH_GPT2 ? "layernorm_fwd" : "rmsnorm_fwd";
    const char *fused = arch == ARCH_GPT2 ? "residual_layernorm_fwd" : "residual_rmsnorm_fwd";
    CHECK(ops_profile_get(norm, &x) == 0 && x.calls == 1, "%s: %s calls %ld", what, norm, x.calls);
    CHECK(ops_profile_get(fused, &x) == 0 && x.calls == 2 * c.n_layer &&
              x.bytes == 2 * c.n_layer * 4.0 * N * c.d_model * 4,
          "%s: %s calls %ld bytes %g", what, fused, x.calls, x.bytes);
    if (!n_experts) /* (the MoE backward adds with residual_fwd) */
        CHECK(ops_profile_get("residual_fwd", &x) == -1, "%s: residual_fwd calls %ld", what,
              x.calls);
    CHECK(ops_profile_get("adamw", &x) == -1, "%s: adamw counted in forward_backward", what);

    /* the report: sorted by time, the ops' sum and the outside time */
    FILE *fp = tmpfile();
    ops_profile_report(fp, 1.0, wall);
    long len = ftell(fp);
    char *txt = calloc(len + 1, 1);
    rewind(fp);
    CHECK(fread(txt, 1, len, fp) == (size_t)len, "report unreadable");
    fclose(fp);
    CHECK_MSG(txt, "not the benchmark");
    CHECK_MSG(txt, "(outside ops");
    CHECK_MSG(txt, "(wall)");
    CHECK_MSG(txt, "matmul_bwd IC=");
    double prev = INFINITY;
    int rows = 0, sorted = 1;
    for (char *line = strchr(txt, '\n'); line; line = strchr(line + 1, '\n')) {
        char name[64];
        double calls, ms;
        if (sscanf(line + 1, "%63s", name) != 1 || name[0] == '(' || !strcmp(name, "op")) continue;
        /* label words up to the calls/step column */
        const char *q = line + 1 + 30;
        if (strlen(line + 1) < 40 || sscanf(q, "%lf %lf", &calls, &ms) != 2) continue;
        rows++;
        if (ms > prev + 1e-9) sorted = 0;
        prev = ms;
    }
    CHECK(rows == n, "%s: %d report rows, %d entries", what, rows, n);
    CHECK(sorted, "%s: report not sorted by time:\n%s", what, txt);
    free(txt);

    for (int k = 0; k < 2; k++) {
        free(host[k]);
        free(grads[k]);
        model_free(m[k]);
    }
}

int main(void) {
    test_table();
    test_single_ops();
    test_model(ARCH_GPT2, 0);
    test_model(ARCH_LLAMA, 0);
    test_model(ARCH_LLAMA, 4);
    return CHECK_DONE();
}
