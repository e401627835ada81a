/* test_cuda_ops.c: every op of the CUDA backend against the CPU backend
 * (the reference), on fresh random inputs, in the fp32 table ("cuda-fp32")
 * and the bf16 table ("cuda").
 *
 * For each op: inputs are drawn at random, rounded through the device act
 * type (so both backends see the same values), uploaded to both backends;
 * outputs the op overwrites are poisoned with NaN first (an element the op
 * fails to write stays NaN, and NaN never passes); outputs the op
 * accumulates into start from the same random values on both sides. The
 * score is ||dev - ref|| / ||ref|| over each output, which must stay under
 * 1e-5 in fp32 mode (cuBLASLt without TF32 vs OpenBLAS, fp32 everywhere:
 * the differences are summation order, ~1e-6 at these sizes) and 1e-2 in
 * bf16 mode (outputs rounded to bf16, relative step 2^-8 = 3.9e-3, plus TF32
 * inside attention). Shapes come in three sets: sizes that are multiples of
 * 8 (16-byte vector paths), odd sizes (scalar paths), and large sizes past
 * every kernel's size thresholds. Deterministic ops
 * (embedding backward, norm backward, sumsq, the fused attention) are also
 * run twice and must agree bitwise. The attention group checks the bf16
 * table's fused attention (unless --cuda.flash_attention=false) and, with
 * GQA, its backward at every split of a group over dK/dV blocks (rows
 * dqkv@hpbN).
 *
 * Usage: test_cuda_ops [--mode fp32|bf16|both] [--seed N] [--json FILE] [--digest FILE]
 *                      [--device cpu] [--only GROUP] [--long-t T] [--cuda.KEY=VALUE ...]
 * --digest: a line per checked output with a hash of the device's values
 * (tests/cuemu/order_check.sh compares two runs' bitwise).
 * --long-t: the sequence length of the attention group's two long shapes
 * (default 1000: 7 whole 128-row tiles and a partial one); the host
 * emulator's runs take 520 (4 whole tiles and a partial one, the same
 * paths at a quarter of the work: at 1000 those two shapes were 87% of the
 * group's time there).
 * GROUP: memory, embed, norms, matmul, attention, activations, lmhead,
 * optimizer, moe (moe includes the opt-in grouped expert GEMMs: the
 * program creates the backend with cuda.moe_grouped_gemm on) or arch (the
 * newer architectures' ops: qk_norm_fwd/bwd, rope with Llama 3 scaled
 * frequencies; the attention group runs the rope checks too)
 * (tools/gpu-check runs each group in its own process, so a fatal CUDA
 * error in one group does not hide the results of the others).
 * --cuda.KEY=VALUE: the CUDA backend's options, as the config's [cuda] keys
 * (docs/config.md; parsed by config_override), e.g.
 * --cuda.lmhead_chunk_rows=100 or --cuda.sync_debug=true. Whatever they say,
 * the program creates the backend with cuda.fused_norm and
 * cuda.moe_grouped_gemm on, so the tables carry the fused residual + norm
 * kernels and the grouped expert GEMMs and the norms and moe groups test
 * them (the fused norms against the CPU, and bitwise against the device's
 * own residual_fwd + norm).
 * --device cpu compares the CPU backend with itself: a harness self-check
 * that runs without a GPU. Exit 0: all passed; 1: a failure; 77: no GPU.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "trainer/config.h"
#include "trainer/model.h"

#define SKIP 77

typedef struct {
    const Ops *ref, *dev;
    const char *mode; /* "fp32", "bf16", or "cpu" (self-check) */
    const char *shape;
    double tol;
    uint64_t rng;
    int n_pass, n_fail;
    FILE *json;
    FILE *digest; /* --digest: a hash of each checked device output */
} Ctx;

/* a buffer on both backends: b[0] on ref, b[1] on dev */
typedef struct {
    void *b[2];
    size_t n;
    int f32; /* 1: fp32 (or int32) bytes; 0: act type */
} Pair;

#define S(p) ((p).b[s])
#define SF(p) ((float *)(p).b[s])
#define SI(p) ((const int32_t *)(p).b[s])
#define SIDE(c, s) ((s) ? (c)->dev : (c)->ref)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_cuda_ops: out of memory\n");
        exit(1);
    }
    return p;
}

static float urand(Ctx *c) {
    c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
    return (float)((c->rng >> 40) / 16777216.0);
}
static float *hrand(Ctx *c, size_t n, float lo, float hi) {
    float *h = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * urand(c);
    return h;
}

static void *dev_alloc(const Ops *o, size_t n_bytes) {
    void *p = o->alloc(n_bytes);
    if (!p) {
        fprintf(stderr, "test_cuda_ops: %s alloc of %zu bytes failed\n", o->name, n_bytes);
        exit(1);
    }
    return p;
}

/* round host values to what the device act type can hold */
static void quantize(Ctx *c, float *h, size_t n) {
    if (c->dev->act_bytes == 4) return;
    void *d = dev_alloc(c->dev, n * c->dev->act_bytes);
    c->dev->upload(d, h, n);
    c->dev->download(h, d, n);
    c->dev->free(d);
}

static Pair pair_new(Ctx *c, const float *h, size_t n, int f32) {
    Pair p = {{0, 0}, n, f32};
    for (int s = 0; s < 2; s++) {
        const Ops *o = SIDE(c, s);
        p.b[s] = dev_alloc(o, n * (f32 ? 4 : o->act_bytes));
        if (f32)
            o->upload_bytes(p.b[s], h, n * 4);
        else
            o->upload(p.b[s], h, n);
    }
    return p;
}
/* act-type input drawn in [lo, hi), identical on both sides */
static Pair pair_rand(Ctx *c, size_t n, float lo, float hi) {
    float *h = hrand(c, n, lo, hi);
    quantize(c, h, n);
    Pair p = pair_new(c, h, n, 0);
    free(h);
    return p;
}
static Pair pair_rand_f32(Ctx *c, size_t n, float lo, float hi) {
    float *h = hrand(c, n, lo, hi);
    Pair p = pair_new(c, h, n, 1);
    free(h);
    return p;
}
/* an output the op must overwrite: NaN on both sides */
static Pair pair_poison(Ctx *c, size_t n, int f32) {
    float *h = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    Pair p = pair_new(c, h, n, f32);
    free(h);
    return p;
}
static Pair pair_i32(Ctx *c, const int32_t *h, size_t n) {
    return pair_new(c, (const float *)(const void *)h, n, 1);
}
static void pair_free(Ctx *c, Pair *p) {
    for (int s = 0; s < 2; s++) SIDE(c, s)->free(p->b[s]);
}

static float *fetch(const Ops *o, const void *d, size_t n, int f32) {
    float *h = xmalloc(n * sizeof(float));
    if (f32)
        o->download_bytes(h, d, n * 4);
    else
        o->download(h, d, n);
    return h;
}

static void record(Ctx *c, const char *op, const char *what, double err, int pass) {
    if (pass)
        c->n_pass++;
    else
        c->n_fail++;
    printf("%-14s %-8s %-5s %-10s rel_err %-10.3g tol %-8.1g %s\n", op, what, c->mode, c->shape, err,
           c->tol, pass ? "ok" : "FAIL");
    if (c->json)
        fprintf(c->json,
                "{\"op\":\"%s\",\"output\":\"%s\",\"mode\":\"%s\",\"shape\":\"%s\","
                "\"rel_err\":%.6g,\"tol\":%g,\"pass\":%s}\n",
                op, what, c->mode, c->shape, isfinite(err) ? err : -1.0, c->tol,
                pass ? "true" : "false");
}

/* ||a - b|| / ||b|| (||a - b|| alone when b == 0); any non-finite a fails */
static double rel_err(const float *a, const float *b, size_t n, int *finite) {
    double d = 0.0, r = 0.0;
    *finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) *finite = 0;
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        r += (double)b[i] * b[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* --digest: "op output mode shape fnv1a-64" of the device's values, so
 * that two runs (the emulator's forward and reverse block and thread
 * orders, tests/cuemu/order_check.sh) can be compared bitwise */
static void digest(Ctx *c, const char *op, const char *what, const float *dev, size_t n) {
    if (!c->digest) return;
    uint64_t h = 1469598103934665603ull;
    const unsigned char *b = (const unsigned char *)dev;
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    fprintf(c->digest, "%s %s %s %s %016llx\n", op, what, c->mode, c->shape, (unsigned long long)h);
}

static void check_host(Ctx *c, const char *op, const char *what, const float *dev, const float *ref,
                       size_t n) {
    int finite;
    digest(c, op, what, dev, n);
    double e = rel_err(dev, ref, n, &finite);
    record(c, op, what, finite ? e : NAN, finite && e <= c->tol);
}

static void check(Ctx *c, const char *op, const char *what, const Pair *p) {
    c->dev->sync();
    float *r = fetch(c->ref, p->b[0], p->n, p->f32), *d = fetch(c->dev, p->b[1], p->n, p->f32);
    check_host(c, op, what, d, r, p->n);
    free(r);
    free(d);
}

/* an accumulated output (+=) against the reference by its update: both
 * sides minus the common start, so an op that leaves the buffer as it was
 * fails (the start would otherwise dominate the norm) */
static void check_update(Ctx *c, const char *op, const char *what, const Pair *p,
                         const float *start) {
    c->dev->sync();
    float *r = fetch(c->ref, p->b[0], p->n, p->f32), *d = fetch(c->dev, p->b[1], p->n, p->f32);
    for (size_t i = 0; i < p->n; i++) r[i] -= start[i], d[i] -= start[i];
    check_host(c, op, what, d, r, p->n);
    free(r);
    free(d);
}

/* the dev buffer equals a saved host copy bit for bit */
static void check_same(Ctx *c, const char *op, const char *what, const Pair *p, const float *saved) {
    float *d = fetch(c->dev, p->b[1], p->n, p->f32);
    int same = memcmp(d, saved, p->n * sizeof(float)) == 0;
    record(c, op, what, same ? 0.0 : 1.0, same);
    free(d);
}

/* ---- the ops ---- */

static void test_embed(Ctx *c, int B, int T, int C, int V) {
    int N = B * T;
    int32_t *tok = xmalloc(N * sizeof(int32_t));
    for (int n = 0; n < N; n++) tok[n] = (int32_t)(urand(c) * V) % V; /* repeats likely */
    Pair t = pair_i32(c, tok, N), wte = pair_rand(c, (size_t)V * C, -1, 1);
    Pair wpe = pair_rand(c, (size_t)T * C, -1, 1);
    for (int with_pos = 0; with_pos < 2; with_pos++) {
        Pair out = pair_poison(c, (size_t)N * C, 0);
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->embed_fwd(S(out), SI(t), S(wte), with_pos ? S(wpe) : NULL, B, T, C);
        check(c, with_pos ? "embed_fwd+pos" : "embed_fwd", "out", &out);
        pair_free(c, &out);
    }
    Pair dout = pair_rand(c, (size_t)N * C, -1, 1);
    Pair dwte = pair_rand(c, (size_t)V * C, -1, 1), dwpe = pair_rand(c, (size_t)T * C, -1, 1);
    float *w0 = fetch(c->dev, dwte.b[1], dwte.n, 0), *p0 = fetch(c->dev, dwpe.b[1], dwpe.n, 0);
    for (int s = 0; s < 2; s++) SIDE(c, s)->embed_bwd(S(dwte), S(dwpe), S(dout), SI(t), B, T, C);
    check(c, "embed_bwd", "dwte", &dwte);
    check(c, "embed_bwd", "dwpe", &dwpe);
    /* again from the same start on the device only: bitwise the same */
    float *w1 = fetch(c->dev, dwte.b[1], dwte.n, 0), *p1 = fetch(c->dev, dwpe.b[1], dwpe.n, 0);
    c->dev->upload(dwte.b[1], w0, dwte.n);
    c->dev->upload(dwpe.b[1], p0, dwpe.n);
    c->dev->embed_bwd(dwte.b[1], dwpe.b[1], dout.b[1], t.b[1], B, T, C);
    c->dev->sync();
    check_same(c, "embed_bwd", "determ", &dwte, w1);
    check_same(c, "embed_bwd", "determ", &dwpe, p1);
    free(w0), free(p0), free(w1), free(p1), free(tok);
    pair_free(c, &t), pair_free(c, &wte), pair_free(c, &wpe), pair_free(c, &dout);
    pair_free(c, &dwte), pair_free(c, &dwpe);
}

/* woff: w is a view one element into its allocation (unaligned: the
 * kernels' per-row paths, and the column sums' 8-column path in the
 * LayerNorm backward) */
static void test_norms_w(Ctx *c, int N, int C, int woff) {
    Pair inp = pair_rand(c, (size_t)N * C, -2, 2), w = pair_rand(c, C + woff, 0.5f, 1.5f);
    Pair b = pair_rand(c, C, -0.5f, 0.5f), dout = pair_rand(c, (size_t)N * C, -1, 1);
#define WV(s) ((char *)w.b[s] + (woff ? SIDE(c, s)->act_bytes : 0))
    for (int rms = 0; rms < 2; rms++) {
        const char *fwd = rms ? "rmsnorm_fwd" : "layernorm_fwd";
        const char *bwd = rms ? "rmsnorm_bwd" : "layernorm_bwd";
        Pair out = pair_poison(c, (size_t)N * C, 0);
        Pair mean = pair_poison(c, N, 1), rstd = pair_poison(c, N, 1);
        for (int s = 0; s < 2; s++) {
            if (rms)
                SIDE(c, s)->rmsnorm_fwd(S(out), SF(rstd), S(inp), WV(s), N, C, 1e-5f);
            else
                SIDE(c, s)->layernorm_fwd(S(out), SF(mean), SF(rstd), S(inp), WV(s), S(b), N, C,
                                          1e-5f);
        }
        check(c, fwd, "out", &out);
        if (!rms) check(c, fwd, "mean", &mean);
        check(c, fwd, "rstd", &rstd);
        /* backward from the reference statistics, copied to the device */
        float *hm = fetch(c->ref, mean.b[0], N, 1), *hr = fetch(c->ref, rstd.b[0], N, 1);
        c->dev->upload_bytes(mean.b[1], hm, (size_t)N * 4);
        c->dev->upload_bytes(rstd.b[1], hr, (size_t)N * 4);
        Pair dinp = pair_rand(c, (size_t)N * C, -1, 1), dw = pair_rand(c, C, -1, 1);
        Pair db = pair_rand(c, C, -1, 1);
        float *dw0 = fetch(c->dev, dw.b[1], C, 0);
        for (int s = 0; s < 2; s++) {
            if (rms)
                SIDE(c, s)->rmsnorm_bwd(S(dinp), S(dw), S(dout), S(inp), WV(s), SF(rstd), N, C);
            else
                SIDE(c, s)->layernorm_bwd(S(dinp), S(dw), S(db), S(dout), S(inp), WV(s), SF(mean),
                                          SF(rstd), N, C);
        }
        check(c, bwd, "dinp", &dinp);
        check(c, bwd, "dw", &dw);
        if (!rms) check(c, bwd, "db", &db);
        float *dw1 = fetch(c->dev, dw.b[1], C, 0);
        c->dev->upload(dw.b[1], dw0, C);
        if (rms)
            c->dev->rmsnorm_bwd(dinp.b[1], dw.b[1], dout.b[1], inp.b[1], WV(1), rstd.b[1], N, C);
        else
            c->dev->layernorm_bwd(dinp.b[1], dw.b[1], db.b[1], dout.b[1], inp.b[1], WV(1),
                                  mean.b[1], rstd.b[1], N, C);
        c->dev->sync();
        check_same(c, bwd, "determ", &dw, dw1);
        free(hm), free(hr), free(dw0), free(dw1);
        pair_free(c, &out), pair_free(c, &mean), pair_free(c, &rstd);
        pair_free(c, &dinp), pair_free(c, &dw), pair_free(c, &db);
    }
#undef WV
    pair_free(c, &inp), pair_free(c, &w), pair_free(c, &b), pair_free(c, &dout);
}
/* the per-head q/k RMSNorm (ops.h qk_norm_fwd/bwd, Qwen3): the normalised
 * heads in place, the saved input and rstd; the backward's dqkv (q and k
 * parts overwritten, v untouched) and the accumulated dwq, dwk, whose
 * column sums must also be bitwise the same when run again */
static void test_qk_norm(Ctx *c, int N, int NH, int NKV, int HD) {
    size_t width = (size_t)(NH + 2 * NKV) * HD, H = (size_t)NH + NKV;
    Pair wq = pair_rand(c, HD, 0.5f, 1.5f), wk = pair_rand(c, HD, 0.5f, 1.5f);
    Pair x = pair_rand(c, N * width, -2, 2), saved = pair_poison(c, N * H * HD, 0);
    Pair rstd = pair_poison(c, N * H, 1);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->qk_norm_fwd(S(x), S(saved), SF(rstd), S(wq), S(wk), N, NH, NKV, HD, 1e-6f);
    check(c, "qk_norm_fwd", "qkv", &x);
    check(c, "qk_norm_fwd", "saved", &saved);
    check(c, "qk_norm_fwd", "rstd", &rstd);
    /* backward from the reference's saved state, copied to the device */
    float *hs = fetch(c->ref, saved.b[0], saved.n, 0), *hr = fetch(c->ref, rstd.b[0], N * H, 1);
    c->dev->upload(saved.b[1], hs, saved.n);
    c->dev->upload_bytes(rstd.b[1], hr, N * H * 4);
    Pair d = pair_rand(c, N * width, -1, 1);
    Pair dwq = pair_rand(c, HD, -1, 1), dwk = pair_rand(c, HD, -1, 1);
    float *d0 = fetch(c->dev, d.b[1], d.n, 0), *q0 = fetch(c->dev, dwq.b[1], HD, 0);
    float *k0 = fetch(c->dev, dwk.b[1], HD, 0);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->qk_norm_bwd(S(d), S(dwq), S(dwk), S(saved), S(wq), S(wk), SF(rstd), N, NH, NKV,
                                HD);
    check(c, "qk_norm_bwd", "dqkv", &d);
    check(c, "qk_norm_bwd", "dwq", &dwq);
    check(c, "qk_norm_bwd", "dwk", &dwk);
    float *d1 = fetch(c->dev, d.b[1], d.n, 0), *q1 = fetch(c->dev, dwq.b[1], HD, 0);
    float *k1 = fetch(c->dev, dwk.b[1], HD, 0);
    int same = 1;
    for (size_t n = 0; n < (size_t)N; n++)
        for (size_t i = H * HD; i < width; i++) same &= d1[n * width + i] == d0[n * width + i];
    record(c, "qk_norm_bwd", "v_kept", same ? 0.0 : 1.0, same);
    c->dev->upload(d.b[1], d0, d.n);
    c->dev->upload(dwq.b[1], q0, HD);
    c->dev->upload(dwk.b[1], k0, HD);
    c->dev->qk_norm_bwd(d.b[1], dwq.b[1], dwk.b[1], saved.b[1], wq.b[1], wk.b[1], rstd.b[1], N, NH,
                        NKV, HD);
    c->dev->sync();
    check_same(c, "qk_norm_bwd", "determ dqkv", &d, d1);
    check_same(c, "qk_norm_bwd", "determ dwq", &dwq, q1);
    check_same(c, "qk_norm_bwd", "determ dwk", &dwk, k1);
    free(hs), free(hr), free(d0), free(q0), free(k0), free(d1), free(q1), free(k1);
    pair_free(c, &wq), pair_free(c, &wk), pair_free(c, &x), pair_free(c, &saved);
    pair_free(c, &rstd), pair_free(c, &d), pair_free(c, &dwq), pair_free(c, &dwk);
}

/* the fused residual add + norm forward (ops.h residual_layernorm_fwd,
 * residual_rmsnorm_fwd; the CUDA kernels are on unless cuda.fused_norm is
 * false, main sets it on): the device's fused op against the CPU's two ops
 * (residual_fwd, then the norm), with res_out separate and aliasing a; and
 * bit for bit against the device's own two ops, as the contract requires.
 * aoff: a is a view one element into its allocation (unaligned: the
 * two-launch fallback) */
static void test_residual_norms(Ctx *c, int N, int C, int aoff) {
    size_t NC = (size_t)N * C;
    Pair a = pair_rand(c, NC + aoff, -2, 2), b = pair_rand(c, NC, -2, 2);
    Pair w = pair_rand(c, C, 0.5f, 1.5f), bias = pair_rand(c, C, -0.5f, 0.5f);
    float *ha = fetch(c->ref, a.b[0], NC + aoff, 0); /* (the ref side is fp32: exact) */
#define AV(p, s) ((char *)(p).b[s] + (aoff ? SIDE(c, s)->act_bytes : 0))
    for (int rms = 0; rms < 2; rms++) {
        const char *op = rms ? "resid_rmsnorm" : "resid_layernorm";
        if (rms ? !c->dev->residual_rmsnorm_fwd : !c->dev->residual_layernorm_fwd) {
            record(c, op, "missing", NAN, 0);
            continue;
        }
        for (int alias = 0; alias < 2; alias++) {
            Pair ca = pair_new(c, ha, NC + aoff, 0); /* a fresh copy: res may overwrite it */
            Pair res = alias ? ca : pair_poison(c, NC + aoff, 0);
            Pair out = pair_poison(c, NC, 0), mean = pair_poison(c, N, 1), rstd = pair_poison(c, N, 1);
            void *r0 = AV(res, 0), *r1 = AV(res, 1);
            c->ref->residual_fwd(r0, AV(ca, 0), b.b[0], NC);
            if (rms) {
                c->ref->rmsnorm_fwd(out.b[0], rstd.b[0], r0, w.b[0], N, C, 1e-5f);
                c->dev->residual_rmsnorm_fwd(r1, out.b[1], rstd.b[1], AV(ca, 1), b.b[1], w.b[1], N,
                                             C, 1e-5f);
            } else {
                c->ref->layernorm_fwd(out.b[0], mean.b[0], rstd.b[0], r0, w.b[0], bias.b[0], N, C,
                                      1e-5f);
                c->dev->residual_layernorm_fwd(r1, out.b[1], mean.b[1], rstd.b[1], AV(ca, 1),
                                               b.b[1], w.b[1], bias.b[1], N, C, 1e-5f);
            }
            Pair res_v = res; /* the checked part: past the view offset */
            res_v.b[0] = r0, res_v.b[1] = r1, res_v.n = NC;
            check(c, op, alias ? "res@a" : "res", &res_v);
            check(c, op, "out", &out);
            if (!rms) check(c, op, "mean", &mean);
            check(c, op, "rstd", &rstd);
            if (!alias) {
                /* the device's two ops on the same inputs, res2 at res's
                 * offset (a norm's reduction order may depend on its
                 * input's alignment): bitwise */
                Pair res2 = pair_poison(c, NC + aoff, 0), out2 = pair_poison(c, NC, 0);
                Pair mean2 = pair_poison(c, N, 1), rstd2 = pair_poison(c, N, 1);
                void *r2 = AV(res2, 1);
                c->dev->residual_fwd(r2, AV(ca, 1), b.b[1], NC);
                if (rms)
                    c->dev->rmsnorm_fwd(out2.b[1], rstd2.b[1], r2, w.b[1], N, C, 1e-5f);
                else
                    c->dev->layernorm_fwd(out2.b[1], mean2.b[1], rstd2.b[1], r2, w.b[1],
                                          bias.b[1], N, C, 1e-5f);
                c->dev->sync();
                float *h[4] = {fetch(c->dev, r2, NC, 0), fetch(c->dev, out2.b[1], NC, 0),
                               fetch(c->dev, mean2.b[1], N, 1), fetch(c->dev, rstd2.b[1], N, 1)};
                check_same(c, op, "bits-res", &res_v, h[0]);
                check_same(c, op, "bits-out", &out, h[1]);
                if (!rms) check_same(c, op, "bits-mean", &mean, h[2]);
                check_same(c, op, "bits-rstd", &rstd, h[3]);
                for (int i = 0; i < 4; i++) free(h[i]);
                pair_free(c, &res2), pair_free(c, &out2), pair_free(c, &mean2), pair_free(c, &rstd2);
            }
            if (!alias) pair_free(c, &res);
            pair_free(c, &ca), pair_free(c, &out), pair_free(c, &mean), pair_free(c, &rstd);
        }
    }
#undef AV
    free(ha);
    pair_free(c, &a), pair_free(c, &b), pair_free(c, &w), pair_free(c, &bias);
}

static void test_norms(Ctx *c, int N, int C) {
    test_norms_w(c, N, C, 0);
    test_residual_norms(c, N, C, 0);
}

/* variant 0: no bias; 1: bias; 2: bias, with inp, w and bias views one
 * element off their allocation (unaligned, as views into a parameter buffer
 * can be) */
static void test_matmul(Ctx *c, int N, int IC, int OC) {
    Pair inp = pair_rand(c, (size_t)N * IC + 1, -1, 1);
    Pair w = pair_rand(c, (size_t)OC * IC + 1, -0.3f, 0.3f);
    Pair bias = pair_rand(c, OC + 1, -1, 1), dout = pair_rand(c, (size_t)N * OC, -1, 1);
    static const char *fwd[3] = {"matmul_fwd", "matmul_fwd+b", "matmul_fwd+b@1"};
    static const char *bwd[3] = {"matmul_bwd", "matmul_bwd+b", "matmul_bwd+b@1"};
    for (int v = 0; v < 3; v++) {
#define VIEW(p) ((char *)S(p) + (v == 2 ? SIDE(c, s)->act_bytes : 0))
        Pair out = pair_poison(c, (size_t)N * OC, 0);
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->matmul_fwd(S(out), VIEW(inp), VIEW(w), v ? VIEW(bias) : NULL, N, IC, OC);
        check(c, fwd[v], "out", &out);
        pair_free(c, &out);
        Pair dinp = pair_poison(c, (size_t)N * IC, 0), dw = pair_rand(c, (size_t)OC * IC, -1, 1);
        Pair db = pair_rand(c, OC, -1, 1);
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->matmul_bwd(v ? S(dinp) : NULL, S(dw), v ? S(db) : NULL, S(dout), VIEW(inp),
                                   VIEW(w), N, IC, OC);
#undef VIEW
        if (v) check(c, bwd[v], "dinp", &dinp);
        check(c, bwd[v], "dw", &dw);
        if (v) check(c, bwd[v], "dbias", &db);
        pair_free(c, &dinp), pair_free(c, &dw), pair_free(c, &db);
    }
    pair_free(c, &inp), pair_free(c, &w), pair_free(c, &bias), pair_free(c, &dout);
}

/* Row counts that change from call to call, as the tokens of an MoE expert
 * do. gemm.cu asks cuBLASLt's heuristic once per bucket of row counts (up
 * to a multiple of 128) and checks that algorithm for each exact shape:
 * 300, 301 and 257 share the bucket 384 (fwd/dinp: M varies; dw: K
 * varies), 384 is the bucket's own shape, 129 and 1000 are other buckets.
 * Each run is checked against the CPU. Then the bits: 301 and 300 again
 * after the others must reproduce their first runs, and so must 300 after
 * the plan caches were emptied and 257 ran first (a shape's algorithm, so
 * its bits, must not depend on which shape of its bucket came first; 257
 * rather than 301 because an algorithm picked for 257 is likelier to differ
 * from one picked for 300). The outputs
 * the GEMMs overwrite have a poisoned tail past their N rows, which must
 * stay NaN (a plan laid out for the bucket's rows would write there). */
static Pair pair_poison_tail(Ctx *c, size_t n, size_t tail) {
    Pair p = pair_poison(c, n + tail, 0);
    p.n = n; /* check() and check_same() see the n elements; the tail is guarded */
    return p;
}
static void check_tail(Ctx *c, const char *op, const Pair *p, size_t tail) {
    float *d = fetch(c->dev, p->b[1], p->n + tail, 0);
    size_t bad = 0;
    for (size_t i = p->n; i < p->n + tail; i++) bad += !isnan(d[i]);
    record(c, op, "tail", (double)bad, bad == 0);
    free(d);
}

static void test_matmul_rows(Ctx *c, int IC, int OC) {
    enum { NMAX = 1000, RUNS = 9 };
    static const int rows[RUNS] = {300, 301, 384, 257, 129, 1000, 301, 300, 300};
    const char *shape0 = c->shape;
    Pair inp = pair_rand(c, (size_t)NMAX * IC, -1, 1);
    Pair w = pair_rand(c, (size_t)OC * IC, -0.3f, 0.3f);
    Pair dout = pair_rand(c, (size_t)NMAX * OC, -1, 1);
    float *dw0 = hrand(c, (size_t)OC * IC, -1, 1);
    quantize(c, dw0, (size_t)OC * IC);
    float *first[2][3] = {{NULL}}; /* [300, 301][out, dinp, dw] device bits */
    char shape[32];
    for (int r = 0; r < RUNS; r++) {
        int N = rows[r], slot = N == 300 ? 0 : N == 301 ? 1 : -1;
        if (r == RUNS - 1) { /* empty caches; 257 (same bucket) first */
            ops_cuda_forget_gemm_plans();
            Pair o2 = pair_poison(c, (size_t)257 * OC, 0);
            c->dev->matmul_fwd(o2.b[1], inp.b[1], w.b[1], NULL, 257, IC, OC);
            Pair d2 = pair_poison(c, (size_t)257 * IC, 0);
            Pair w2 = pair_new(c, dw0, (size_t)OC * IC, 0);
            c->dev->matmul_bwd(d2.b[1], w2.b[1], NULL, dout.b[1], inp.b[1], w.b[1], 257, IC, OC);
            c->dev->sync();
            pair_free(c, &o2), pair_free(c, &d2), pair_free(c, &w2);
        }
        snprintf(shape, sizeof shape, "rows%d%s", N, r == RUNS - 1 ? "+forget" : "");
        c->shape = shape;
        size_t tail_o = (size_t)128 * OC, tail_i = (size_t)128 * IC;
        Pair out = pair_poison_tail(c, (size_t)N * OC, tail_o);
        for (int s = 0; s < 2; s++) SIDE(c, s)->matmul_fwd(S(out), S(inp), S(w), NULL, N, IC, OC);
        check(c, "matmul_fwd", "out", &out);
        check_tail(c, "matmul_fwd", &out, tail_o);
        Pair dinp = pair_poison_tail(c, (size_t)N * IC, tail_i);
        Pair dw = pair_new(c, dw0, (size_t)OC * IC, 0);
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->matmul_bwd(S(dinp), S(dw), NULL, S(dout), S(inp), S(w), N, IC, OC);
        check(c, "matmul_bwd", "dinp", &dinp);
        check_tail(c, "matmul_bwd", &dinp, tail_i);
        check(c, "matmul_bwd", "dw", &dw);
        Pair *res[3] = {&out, &dinp, &dw};
        static const char *same[3] = {"out=1st", "dinp=1st", "dw=1st"};
        for (int k = 0; slot >= 0 && k < 3; k++) {
            if (!first[slot][k])
                first[slot][k] = fetch(c->dev, res[k]->b[1], res[k]->n, 0);
            else
                check_same(c, k ? "matmul_bwd" : "matmul_fwd", same[k], res[k], first[slot][k]);
        }
        pair_free(c, &out), pair_free(c, &dinp), pair_free(c, &dw);
    }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++) free(first[i][k]);
    free(dw0);
    pair_free(c, &inp), pair_free(c, &w), pair_free(c, &dout);
    c->shape = shape0;
}

/* a device-only output next to the reference's: b[0] is ref's (already
 * computed), b[1] a fresh NaN-poisoned device buffer of n elements (0: as
 * many as ref's; a fused kernel's saved state needs fewer than the
 * reference's probabilities) */
static Pair dev_twin(Ctx *c, const Pair *ref, size_t n) {
    Pair p = *ref;
    if (n) p.n = n;
    float *h = xmalloc(p.n * sizeof(float));
    for (size_t i = 0; i < p.n; i++) h[i] = NAN;
    p.b[1] = dev_alloc(c->dev, p.n * (p.f32 ? 4 : c->dev->act_bytes));
    if (p.f32)
        c->dev->upload_bytes(p.b[1], h, p.n * 4);
    else
        c->dev->upload(p.b[1], h, p.n);
    free(h);
    return p;
}
/* the fused kernels are deterministic (no atomics): the forward and the
 * backward run again on the device give bitwise the same out and dqkv */
static void flash_determ(Ctx *c, const char *bwd, const Pair *dout, const Pair *out,
                         const Pair *qkv, const Pair *att, const Pair *datt, const Pair *dqkv,
                         int B, int T, int NH, int NKV, int HD) {
    float *o1 = fetch(c->dev, out->b[1], out->n, 0), *d1 = fetch(c->dev, dqkv->b[1], dqkv->n, 0);
    size_t keep = c->dev->attention_saved_floats(B, T, NH, HD);
    Pair o2 = dev_twin(c, out, 0), d2 = dev_twin(c, dqkv, 0), a2 = dev_twin(c, att, keep);
    c->dev->attention_fwd(o2.b[1], a2.b[1], qkv->b[1], B, T, NH, NKV, HD);
    c->dev->attention_bwd(d2.b[1], datt->b[1], dout->b[1], o2.b[1], qkv->b[1], a2.b[1], B, T, NH,
                          NKV, HD);
    c->dev->sync();
    check_same(c, bwd, "out=1st", &o2, o1);
    check_same(c, bwd, "dqkv=1st", &d2, d1);
    free(o1), free(d1);
    c->dev->free(o2.b[1]), c->dev->free(d2.b[1]), c->dev->free(a2.b[1]);
}
/* the options the CUDA backend was created with (main) */
static OpsOptions g_opt;

/* the device table reconfigured with opt (ops.h: the CUDA backend is one per
 * process; the table pointer stays the same) */
static void reconfigure(const Ctx *c, const OpsOptions *opt) {
    char err[256];
    if (ops_get(c->dev->name, opt, err, sizeof err) != c->dev) {
        fprintf(stderr, "test_cuda_ops: reconfiguring %s: %s\n", c->dev->name, err);
        exit(1);
    }
}

/* The fused backward's dK/dV blocks own 1 to NH / NKV query heads of a GQA
 * group (cuda.flash_heads_per_block; by default the backend picks from the
 * shape and the card's SM count, so a test shape exercises one choice):
 * every divisor of the group, from the device's own forward, against the
 * reference's dqkv (rows dqkv@hpbN), and bitwise repeatable. The backend
 * is reconfigured for each and then back to g_opt. */
static void test_flash_hpb(Ctx *c, const Pair *qkv, const Pair *out, const Pair *att,
                           const Pair *datt, const Pair *dout, const Pair *dqkv, int B, int T,
                           int NH, int NKV, int HD) {
    for (int hpb = 1; hpb <= NH / NKV; hpb++) {
        if ((NH / NKV) % hpb) continue;
        char what[32];
        OpsOptions o = g_opt;
        o.cuda.flash_heads_per_block = hpb;
        reconfigure(c, &o);
        Pair x = dev_twin(c, dqkv, 0);
        c->dev->attention_bwd(x.b[1], datt->b[1], dout->b[1], out->b[1], qkv->b[1], att->b[1], B,
                              T, NH, NKV, HD);
        snprintf(what, sizeof what, "dqkv@hpb%d", hpb);
        check(c, "flash_attn_bwd", what, &x);
        float *first = fetch(c->dev, x.b[1], x.n, 0);
        c->dev->attention_bwd(x.b[1], datt->b[1], dout->b[1], out->b[1], qkv->b[1], att->b[1], B,
                              T, NH, NKV, HD);
        c->dev->sync();
        snprintf(what, sizeof what, "dqkv@hpb%d=1st", hpb);
        check_same(c, "flash_attn_bwd", what, &x, first);
        free(first);
        c->dev->free(x.b[1]);
    }
    reconfigure(c, &g_opt);
}

/* RoPE with plain frequencies (theta 10000), then Llama 3.1's scaled ones
 * (model_rope_inv_freq: factor 8, low/high 1/4, an original context of T/2
 * so that every band of the remap occurs): the second call on the same
 * shape must not reuse the first one's cos/sin table. */
static void test_rope(Ctx *c, int B, int T, int NH, int NKV, int HD) {
    size_t N = (size_t)B * T, width = (size_t)(NH + 2 * NKV) * HD;
    ModelConfig mc = model_config_default(ARCH_LLAMA);
    mc.d_model = HD, mc.n_head = 1;
    float *inv = xmalloc((size_t)HD / 2 * sizeof(float));
    for (int scaled = 0; scaled < 2; scaled++) {
        if (scaled) {
            mc.rope_theta = 500000.0f;
            mc.rope_scaling = ROPE_SCALING_LLAMA3;
            mc.rope_factor = 8.0f, mc.rope_low_freq_factor = 1.0f;
            mc.rope_high_freq_factor = 4.0f, mc.rope_original_max_pos = T / 2 > 1 ? T / 2 : 1;
        }
        model_rope_inv_freq(&mc, inv);
        for (int bwd = 0; bwd < 2; bwd++) {
            const char *op = scaled ? (bwd ? "rope_bwd llama3" : "rope_fwd llama3")
                                    : (bwd ? "rope_bwd" : "rope_fwd");
            Pair x = pair_rand(c, N * width, -1, 1);
            float *h = fetch(c->ref, x.b[0], x.n, 0);
            for (int s = 0; s < 2; s++) {
                if (bwd) SIDE(c, s)->rope_bwd(S(x), B, T, NH, NKV, HD, inv);
                else SIDE(c, s)->rope_fwd(S(x), B, T, NH, NKV, HD, inv);
            }
            check(c, op, "qkv", &x);
            /* the v part must be left alone: compare the device with the input */
            float *d = fetch(c->dev, x.b[1], x.n, 0);
            int same = 1;
            for (size_t n = 0; n < N; n++)
                for (size_t i = (size_t)(NH + NKV) * HD; i < width; i++)
                    same &= d[n * width + i] == h[n * width + i];
            record(c, op, "v_kept", same ? 0.0 : 1.0, same);
            free(h), free(d);
            pair_free(c, &x);
        }
    }
    free(inv);
}

static void test_attention(Ctx *c, int B, int T, int NH, int NKV, int HD) {
    size_t N = (size_t)B * T, width = (size_t)(NH + 2 * NKV) * HD, A = (size_t)B * NH * T * T;
    Pair qkv = pair_rand(c, N * width, -1, 1);
    test_rope(c, B, T, NH, NKV, HD);
    /* A backend that keeps less than the probabilities (a fused kernel
     * saving log-sum-exps, ops.h attention_saved_floats) is checked through
     * its outputs and gradients; its saved state is its own business. */
    const char *fwd = "attention_fwd", *bwd = "attention_bwd";
    size_t keep = c->dev->attention_saved_floats
                      ? c->dev->attention_saved_floats(B, T, NH, HD)
                      : A;
    int fused = keep != A;
    if (fused) fwd = "flash_attn_fwd", bwd = "flash_attn_bwd";
    Pair out = pair_poison(c, N * NH * HD, 0), att = pair_poison(c, A, 1);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->attention_fwd(S(out), SF(att), S(qkv), B, T, NH, NKV, HD);
    check(c, fwd, "out", &out);
    if (!fused) {
        /* att: the lower triangle only (the upper one is never read) */
        c->dev->sync();
        float *ar = fetch(c->ref, att.b[0], A, 1), *ad = fetch(c->dev, att.b[1], A, 1);
        float *lr = xmalloc(A * sizeof(float)), *ld = xmalloc(A * sizeof(float));
        size_t k = 0;
        for (size_t r = 0; r < A / T; r++)
            for (int j = 0; j <= (int)(r % T); j++)
                lr[k] = ar[r * T + j], ld[k] = ad[r * T + j], k++;
        check_host(c, fwd, "att", ld, lr, k);
        /* backward from the reference att, whose upper triangle is still NaN */
        c->dev->upload_bytes(att.b[1], ar, A * 4);
        free(ar), free(ad), free(lr), free(ld);
    }
    Pair dout = pair_rand(c, N * NH * HD, -1, 1), dqkv = pair_poison(c, N * width, 0);
    Pair datt = pair_poison(c, A, 1);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->attention_bwd(S(dqkv), SF(datt), S(dout), S(out), S(qkv), SF(att), B, T, NH,
                                  NKV, HD);
    check(c, bwd, "dqkv", &dqkv);
    if (fused) flash_determ(c, bwd, &dout, &out, &qkv, &att, &datt, &dqkv, B, T, NH, NKV, HD);
    if (fused && NH != NKV)
        test_flash_hpb(c, &qkv, &out, &att, &datt, &dout, &dqkv, B, T, NH, NKV, HD);
    pair_free(c, &qkv), pair_free(c, &out), pair_free(c, &att), pair_free(c, &dout);
    pair_free(c, &dqkv), pair_free(c, &datt);
}

static void test_activations(Ctx *c, int N, int F) {
    size_t n = (size_t)N * F;
    Pair x = pair_rand(c, n, -4, 4), d = pair_rand(c, n, -1, 1), y = pair_rand(c, n, -1, 1);
    Pair out = pair_poison(c, n, 0), dinp = pair_poison(c, n, 0);
    for (int s = 0; s < 2; s++) {
        SIDE(c, s)->gelu_fwd(S(out), S(x), n);
        SIDE(c, s)->gelu_bwd(S(dinp), S(x), S(d), n);
    }
    check(c, "gelu_fwd", "out", &out);
    check(c, "gelu_bwd", "dinp", &dinp);
    Pair r = pair_poison(c, n, 0);
    for (int s = 0; s < 2; s++) {
        SIDE(c, s)->residual_fwd(S(r), S(x), S(y), n);
        SIDE(c, s)->residual_fwd(S(y), S(y), S(x), n); /* out aliases a */
    }
    check(c, "residual_fwd", "out", &r);
    check(c, "residual_fwd", "aliased", &y);
    Pair gu = pair_rand(c, 2 * n, -4, 4), sw = pair_poison(c, n, 0), dgu = pair_poison(c, 2 * n, 0);
    for (int s = 0; s < 2; s++) {
        SIDE(c, s)->swiglu_fwd(S(sw), S(gu), N, F);
        SIDE(c, s)->swiglu_bwd(S(dgu), S(d), S(gu), N, F);
    }
    check(c, "swiglu_fwd", "out", &sw);
    check(c, "swiglu_bwd", "dgu", &dgu);
    pair_free(c, &x), pair_free(c, &d), pair_free(c, &y), pair_free(c, &out);
    pair_free(c, &dinp), pair_free(c, &r), pair_free(c, &gu), pair_free(c, &sw);
    pair_free(c, &dgu);
}

/* the RMS of the reference's dw update (x^T dlogits) from a zero start */
static float lmhead_dw_rms(Ctx *c, const Pair *x, const Pair *w, const Pair *t, int N, int C,
                           int V) {
    const Ops *o = c->ref;
    size_t n = (size_t)V * C;
    float *h = xmalloc(n * sizeof(float));
    memset(h, 0, n * sizeof(float));
    void *dw = dev_alloc(o, n * o->act_bytes), *dx = dev_alloc(o, (size_t)N * C * o->act_bytes);
    void *loss = dev_alloc(o, (size_t)N * 4);
    void *scratch = dev_alloc(o, o->lmhead_scratch_bytes(N, V));
    o->upload(dw, h, n);
    o->lmhead_ce((float *)loss, dx, dw, x->b[0], w->b[0], (const int32_t *)t->b[0], N, C, V,
                 1.0f / N, scratch);
    o->sync();
    o->download(h, dw, n);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)h[i] * h[i];
    o->free(dw), o->free(dx), o->free(loss), o->free(scratch);
    free(h);
    return (float)sqrt(ss / (double)n);
}

static void test_lmhead(Ctx *c, int N, int C, int V) {
    int32_t *tg = xmalloc(N * sizeof(int32_t));
    for (int n = 0; n < N; n++) tg[n] = n % 5 == 3 ? -1 : (int32_t)(urand(c) * V) % V;
    Pair t = pair_i32(c, tg, N), x = pair_rand(c, (size_t)N * C, -1, 1);
    Pair w = pair_rand(c, (size_t)V * C, -0.5f, 0.5f);
    for (int train = 0; train < 2; train++) {
        Pair loss = pair_poison(c, N, 1), dx = pair_poison(c, (size_t)N * C, 0);
        /* dw accumulates: it starts at the size of the update (drawn at the
         * update's RMS), so that the act type's rounding of dw0 + update
         * stays small against the update that check_update compares (from
         * U(-1, 1), bf16's rounding of the start hid the update, and a
         * kernel that never wrote dw passed the whole-buffer check) */
        float a = lmhead_dw_rms(c, &x, &w, &t, N, C, V);
        Pair dw = pair_rand(c, (size_t)V * C, -a, a);
        float *dw0 = fetch(c->dev, dw.b[1], dw.n, 0);
        for (int s = 0; s < 2; s++) {
            const Ops *o = SIDE(c, s);
            void *scratch = dev_alloc(o, o->lmhead_scratch_bytes(N, V));
            o->lmhead_ce(SF(loss), train ? S(dx) : NULL, S(dw), S(x), S(w), SI(t), N, C, V,
                         1.0f / N, scratch);
            o->sync();
            o->free(scratch);
        }
        const char *name = train ? "lmhead_ce" : "lmhead_ce_eval";
        check(c, name, "losses", &loss);
        if (train) check(c, name, "dx", &dx);
        if (train)
            check_update(c, name, "dw", &dw, dw0); /* dw += x^T dlogits */
        else
            check_same(c, name, "dw", &dw, dw0); /* eval leaves dw as it was */
        free(dw0);
        pair_free(c, &loss), pair_free(c, &dx), pair_free(c, &dw);
    }
    free(tg);
    pair_free(c, &t), pair_free(c, &x), pair_free(c, &w);
}

static void test_optimizer(Ctx *c, size_t n) {
    Pair g = pair_rand(c, n, -1, 1);
    double r = c->ref->sumsq(g.b[0], n), d = c->dev->sumsq(g.b[1], n), d2 = c->dev->sumsq(g.b[1], n);
    double e = fabs(d - r) / r;
    record(c, "sumsq", "value", isfinite(d) ? e : NAN, isfinite(d) && e <= c->tol);
    record(c, "sumsq", "determ", d == d2 ? 0.0 : 1.0, d == d2);
    /* AdamW: the reference keeps fp32 params; the device keeps an fp32
     * master in bf16 mode, whose rounding is its param */
    float *hp = hrand(c, n, -1, 1);
    quantize(c, hp, n);
    Pair p = pair_new(c, hp, n, 0), m = pair_rand_f32(c, n, -0.01f, 0.01f);
    Pair v = pair_rand_f32(c, n, 0.0f, 1e-4f);
    Pair master = pair_new(c, hp, n, 1);
    int use_master = c->dev->act_bytes != 4;
    for (int t = 1; t <= 3; t++)
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->adamw(S(p), s && use_master ? SF(master) : NULL, S(g), SF(m), SF(v), n,
                              1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.5f);
    check(c, "adamw", "param", &p);
    check(c, "adamw", "m", &m);
    check(c, "adamw", "v", &v);
    if (use_master) {
        c->dev->sync();
        float *pr = fetch(c->ref, p.b[0], n, 0), *md = fetch(c->dev, master.b[1], n, 1);
        check_host(c, "adamw", "master", md, pr, n);
        free(pr), free(md);
    }
    free(hp);
    pair_free(c, &g), pair_free(c, &p), pair_free(c, &m), pair_free(c, &v), pair_free(c, &master);
}

/* Memory ops: upload/download round trips of more than one 16M-element
 * staging chunk (fp32 bitwise; bf16 within half a bf16 step: 2^-8 relative,
 * and idempotent), raw byte copies, zero. */
static void test_memory(Ctx *c, size_t n) {
    const Ops *d = c->dev;
    float *h = hrand(c, n, -3, 3), *back = xmalloc(n * sizeof(float));
    float *again = xmalloc(n * sizeof(float));
    void *buf = dev_alloc(d, n * d->act_bytes);
    d->upload(buf, h, n);
    d->download(back, buf, n);
    double worst = 0.0;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)back[i] - h[i]) / fabs(h[i]);
        finite &= isfinite(back[i]);
        if (h[i] != 0.0f && !(e <= worst)) worst = e;
    }
    double mode_tol = c->tol;
    c->tol = d->act_bytes == 4 ? 0.0 : 1.0 / 256; /* unit roundoff of bf16 (8-bit precision) */
    record(c, "upload", "max_rel", finite ? worst : NAN, finite && worst <= c->tol);
    c->tol = mode_tol;
    d->upload(buf, back, n);
    d->download(again, buf, n);
    int same = !memcmp(back, again, n * sizeof(float));
    record(c, "upload", "idempot", same ? 0.0 : 1.0, same);
    d->zero(buf, n * d->act_bytes);
    d->download(again, buf, n);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) nonzero += again[i] != 0.0f;
    record(c, "zero", "nonzero", (double)nonzero, nonzero == 0);
    d->upload_bytes(buf, h, 1000 * sizeof(float));
    memset(again, 0, 1000 * sizeof(float));
    d->download_bytes(again, buf, 1000 * sizeof(float));
    same = !memcmp(h, again, 1000 * sizeof(float));
    record(c, "upload_bytes", "bitwise", same ? 0.0 : 1.0, same);
    d->free(buf);
    free(h), free(back), free(again);
}

/* int32 outputs: the dev buffer equals the ref buffer exactly (the value
 * printed is the number of differing elements) */
static void check_exact(Ctx *c, const char *op, const char *what, const Pair *p) {
    c->dev->sync();
    float *r = fetch(c->ref, p->b[0], p->n, 1), *d = fetch(c->dev, p->b[1], p->n, 1);
    size_t bad = 0;
    for (size_t i = 0; i < p->n; i++) bad += memcmp(&r[i], &d[i], sizeof(float)) != 0;
    double mode_tol = c->tol;
    c->tol = 0;
    record(c, op, what, (double)bad, bad == 0);
    c->tol = mode_tol;
    free(r);
    free(d);
}

/* the ref buffer's contents copied to the dev buffer (fp32 / int32 bytes):
 * a backward or a later stage starts from the reference's forward results,
 * so one wrong op does not cascade into the checks of the next */
static void copy_ref(Ctx *c, const Pair *p) {
    float *h = fetch(c->ref, p->b[0], p->n, 1);
    c->dev->upload_bytes(p->b[1], h, p->n * 4);
    free(h);
}

/* Mixture of experts: N tokens, E experts, K slots, C channels. Every op of
 * the MoE block against the reference; integer outputs (top_idx, counts,
 * row_token, pos) exactly. Each stage takes its integer inputs from the
 * reference's earlier stage. permute also runs on a skewed routing (experts
 * of very different sizes, the last expert empty). */
static void test_moe(Ctx *c, int N, int E, int K, int C, int norm_topk) {
    size_t NK = (size_t)N * K;
    char shape[64];
    const char *shape0 = c->shape;
    snprintf(shape, sizeof shape, "%s/E%dK%d%s", shape0, E, K, norm_topk ? "n" : "");
    c->shape = shape;
    /* route forward */
    Pair logits = pair_rand(c, (size_t)N * E, -3, 3);
    Pair probs = pair_poison(c, (size_t)N * E, 1), lse = pair_poison(c, N, 1);
    Pair top_idx = pair_poison(c, NK, 1), top_w = pair_poison(c, NK, 1);
    Pair stats = pair_poison(c, E + 1, 1);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->moe_route_fwd(SF(probs), SF(lse), (int32_t *)S(top_idx), SF(top_w), SF(stats),
                                  S(logits), N, E, K, norm_topk);
    check(c, "moe_route_fwd", "probs", &probs);
    check(c, "moe_route_fwd", "lse", &lse);
    check_exact(c, "moe_route_fwd", "top_idx", &top_idx);
    check(c, "moe_route_fwd", "top_w", &top_w);
    check(c, "moe_route_fwd", "stats", &stats);
    float *st1 = fetch(c->dev, stats.b[1], stats.n, 1);
    c->dev->moe_route_fwd(probs.b[1], lse.b[1], top_idx.b[1], top_w.b[1], stats.b[1],
                          logits.b[1], N, E, K, norm_topk);
    c->dev->sync();
    check_same(c, "moe_route_fwd", "determ", &stats, st1);
    free(st1);
    copy_ref(c, &probs), copy_ref(c, &lse), copy_ref(c, &top_idx), copy_ref(c, &top_w);
    /* route backward: with the LBL and z-loss terms, and without */
    Pair dtop_w = pair_rand_f32(c, NK, -1, 1), dprob = pair_rand_f32(c, E, -0.1f, 0.1f);
    for (int v = 0; v < 2; v++) {
        Pair dlogits = pair_poison(c, (size_t)N * E, 0);
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->moe_route_bwd(S(dlogits), SF(dtop_w), v ? NULL : SF(dprob),
                                      v ? 0.0f : 0.01f, SF(probs), SF(lse), SI(top_idx), SF(top_w),
                                      N, E, K, norm_topk);
        check(c, v ? "moe_route_bwd" : "moe_route_bwd+lz", "dlogits", &dlogits);
        pair_free(c, &dlogits);
    }
    /* permute: the routing above, then a skewed one */
    Pair counts = pair_poison(c, E, 1), row_token = pair_poison(c, NK, 1);
    Pair pos = pair_poison(c, NK, 1);
    for (int v = 0; v < 2; v++) {
        const char *op = v ? "moe_permute/sk" : "moe_permute";
        Pair idx = top_idx;
        if (v) {
            /* slot k of token n: expert (n*n + 3k) % m for a small m, or
             * expert 0 every third token (distinct experts per token as
             * route_fwd guarantees: m >= K) */
            int32_t *h = xmalloc(NK * sizeof(int32_t));
            int m = E - 1 > K ? E - 1 : K;
            for (int n = 0; n < N; n++) {
                int base = n % 3 == 0 ? 0 : (int)(((size_t)n * n) % (size_t)m);
                for (int k = 0; k < K; k++) h[(size_t)n * K + k] = (base + k) % m;
            }
            idx = pair_i32(c, h, NK);
            free(h);
        }
        for (int s = 0; s < 2; s++)
            SIDE(c, s)->moe_permute((int32_t *)S(counts), (int32_t *)S(row_token),
                                    (int32_t *)S(pos), SI(idx), N, E, K);
        check_exact(c, op, "counts", &counts);
        check_exact(c, op, "row_tok", &row_token);
        check_exact(c, op, "pos", &pos);
        if (v) pair_free(c, &idx);
    }
    /* the routing of route_fwd again (the ref's), for gather and combine */
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->moe_permute((int32_t *)S(counts), (int32_t *)S(row_token), (int32_t *)S(pos),
                                SI(top_idx), N, E, K);
    copy_ref(c, &counts), copy_ref(c, &row_token), copy_ref(c, &pos);
    /* gather */
    Pair x = pair_rand(c, (size_t)N * C, -1, 1), xs = pair_poison(c, NK * C, 0);
    for (int s = 0; s < 2; s++) SIDE(c, s)->moe_gather_fwd(S(xs), S(x), SI(row_token), (int)NK, C);
    check(c, "moe_gather_fwd", "xs", &xs);
    Pair dxs = pair_rand(c, NK * C, -1, 1), dx = pair_poison(c, (size_t)N * C, 0);
    for (int s = 0; s < 2; s++) SIDE(c, s)->moe_gather_bwd(S(dx), S(dxs), SI(pos), N, K, C);
    check(c, "moe_gather_bwd", "dx", &dx);
    /* combine */
    Pair ys = pair_rand(c, NK * C, -1, 1), out = pair_poison(c, (size_t)N * C, 0);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->moe_combine_fwd(S(out), S(ys), SF(top_w), SI(pos), N, K, C);
    check(c, "moe_combine_fwd", "out", &out);
    Pair dout = pair_rand(c, (size_t)N * C, -1, 1), dys = pair_poison(c, NK * C, 0);
    Pair dtw = pair_poison(c, NK, 1);
    for (int s = 0; s < 2; s++)
        SIDE(c, s)->moe_combine_bwd(S(dys), SF(dtw), S(dout), S(ys), SF(top_w), SI(pos), N, K, C);
    check(c, "moe_combine_bwd", "dys", &dys);
    check(c, "moe_combine_bwd", "dtop_w", &dtw);
    float *dt1 = fetch(c->dev, dtw.b[1], dtw.n, 1);
    c->dev->moe_combine_bwd(dys.b[1], dtw.b[1], dout.b[1], ys.b[1], top_w.b[1], pos.b[1], N, K, C);
    c->dev->sync();
    check_same(c, "moe_combine_bwd", "determ", &dtw, dt1);
    free(dt1);
    Pair *all[] = {&logits, &probs, &lse, &top_idx, &top_w, &stats, &dtop_w, &dprob,
                   &counts, &row_token, &pos, &x, &xs, &dxs, &dx, &ys, &out, &dout, &dys, &dtw};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pair_free(c, all[i]);
    c->shape = shape0;
}

/* The grouped expert GEMMs (moe_expert_matmul_fwd/bwd; the CUDA tables
 * have them because main sets cuda.moe_grouped_gemm) against the CPU
 * backend's matmul_fwd/bwd run once per expert on its rows: E experts with
 * counts[e] rows (zeros included: such an expert's weight gradient must
 * stay as it was), weights w_stride = OC*IC + 8*IC elements apart (the gap
 * must stay untouched too: dw is compared whole, from the same random
 * start on both sides). */
static void test_moe_grouped(Ctx *c, int E, int IC, int OC, const int32_t *counts) {
    if (!c->dev->moe_expert_matmul_fwd || !c->dev->moe_expert_matmul_bwd) {
        /* the CPU self-check has none; a CUDA table must (main asked for
         * them: stderr says why the backend could not) */
        int cpu = !strcmp(c->mode, "cpu");
        printf("moe_expert_mm   %-5s %s: the %s table has no grouped expert GEMMs\n", c->mode,
               cpu ? "skipped" : "FAIL", c->dev->name);
        if (!cpu) c->n_fail++;
        return;
    }
    char shape[64];
    const char *shape0 = c->shape;
    snprintf(shape, sizeof shape, "%s/E%d", shape0, E);
    c->shape = shape;
    size_t R = 0, stride = (size_t)OC * IC + (size_t)8 * IC;
    for (int e = 0; e < E; e++) R += (size_t)counts[e];
    Pair inp = pair_rand(c, R * IC, -1, 1), w = pair_rand(c, E * stride, -1, 1);
    Pair out = pair_poison(c, R * OC, 0);
    Pair dout = pair_rand(c, R * OC, -1, 1), dinp = pair_poison(c, R * IC, 0);
    Pair dw = pair_rand(c, E * stride, -1, 1);
    const Ops *ref = c->ref;
    size_t ab = ref->act_bytes, row = 0;
    for (int e = 0; e < E; e++) {
        int n = counts[e];
        if (n) {
            const char *we = (const char *)w.b[0] + e * stride * ab;
            const char *ie = (const char *)inp.b[0] + row * IC * ab;
            const char *de = (const char *)dout.b[0] + row * OC * ab;
            ref->matmul_fwd((char *)out.b[0] + row * OC * ab, ie, we, NULL, n, IC, OC);
            ref->matmul_bwd((char *)dinp.b[0] + row * IC * ab, (char *)dw.b[0] + e * stride * ab,
                            NULL, de, ie, we, n, IC, OC);
        }
        row += (size_t)n;
    }
    c->dev->moe_expert_matmul_fwd(out.b[1], inp.b[1], w.b[1], stride, counts, E, IC, OC);
    check(c, "moe_expert_mm_f", "out", &out);
    c->dev->moe_expert_matmul_bwd(dinp.b[1], dw.b[1], dout.b[1], inp.b[1], w.b[1], stride, counts,
                                  E, IC, OC);
    check(c, "moe_expert_mm_b", "dinp", &dinp);
    check(c, "moe_expert_mm_b", "dw", &dw);
    Pair *all[] = {&inp, &w, &out, &dout, &dinp, &dw};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pair_free(c, all[i]);
    c->shape = shape0;
}

static const char *g_only; /* --only GROUP, or NULL for all */
static int g_long_t = 1000; /* --long-t */
static const char *const GROUPS[] = {"memory",    "embed",       "norms",  "matmul",
                                     "attention", "activations", "lmhead", "optimizer",
                                     "moe",       "arch",        NULL};
static int want(const char *group) { return !g_only || !strcmp(g_only, group); }

static void run_all(Ctx *c) {
    c->shape = "aligned";
    if (want("embed")) test_embed(c, 2, 16, 64, 37);
    if (want("norms")) test_norms(c, 24, 256);
    if (want("arch")) test_qk_norm(c, 24, 4, 2, 16);
    if (want("arch")) test_rope(c, 2, 16, 4, 2, 16);
    if (want("matmul")) test_matmul(c, 48, 64, 96);
    if (want("attention")) test_attention(c, 2, 16, 4, 2, 16);
    if (want("activations")) test_activations(c, 12, 64);
    if (want("lmhead")) test_lmhead(c, 40, 64, 1000);
    if (want("optimizer")) test_optimizer(c, 4096);
    if (want("moe")) {
        test_moe(c, 64, 8, 2, 64, 1);
        test_moe(c, 64, 8, 2, 64, 0);
        static const int32_t cnt[8] = {37, 0, 128, 1, 64, 0, 9, 16};
        test_moe_grouped(c, 8, 64, 96, cnt);
    }
    c->shape = "odd";
    if (want("embed")) test_embed(c, 3, 7, 45, 11);
    if (want("norms")) test_norms(c, 13, 77);
    if (want("arch")) test_qk_norm(c, 13, 3, 1, 10);
    if (want("arch")) test_rope(c, 2, 33, 6, 2, 10);
    if (want("matmul")) test_matmul(c, 13, 35, 19);
    if (want("attention")) {
        test_attention(c, 1, 9, 3, 3, 6);
        test_attention(c, 2, 33, 6, 2, 10);
    }
    if (want("activations")) test_activations(c, 5, 13);
    if (want("lmhead")) test_lmhead(c, 7, 21, 333);
    if (want("optimizer")) test_optimizer(c, 1001);
    if (want("moe")) { /* N not a multiple of 32; several permute chunks */
        test_moe(c, 37, 4, 1, 45, 1);
        test_moe(c, 37, 4, 1, 45, 0);
        test_moe(c, 301, 6, 3, 21, 0);
        test_moe(c, 77, 6, 3, 13, 1);
        static const int32_t cnt[5] = {13, 0, 1, 30, 7};
        test_moe_grouped(c, 5, 45, 21, cnt);
    }
    /* sizes past the kernels' thresholds: several chunks per thread in the
     * norms' per-row kernels (C > 8 * 512; the RMSNorm fused backward at its
     * widest, 4 warps a block), several row chunks in the column sums, two LM-head
     * chunks (N > 1024) with 1024-thread blocks (V >= 4096), the sumsq block
     * cap, several staging chunks in upload/download */
    c->shape = "large";
    if (want("memory")) test_memory(c, ((size_t)1 << 24) + 13);
    if (want("embed")) test_embed(c, 4, 128, 96, 3000);
    if (want("norms")) test_norms(c, 300, 4104);
    /* Qwen3's head size with several row chunks in the weight gradients
     * (the last one partial), and a head wider than a warp's 8 elements a
     * lane; RoPE at Qwen3's head size (the 8-pair kernel) */
    if (want("arch")) test_qk_norm(c, 1000, 8, 2, 128);
    if (want("arch")) test_qk_norm(c, 37, 2, 1, 320);
    if (want("arch")) test_rope(c, 1, 130, 4, 1, 128);
    /* the bias column sum's 8-column path with 65 row chunks, the last one
     * 13 rows (not a multiple of its 4-row loads) */
    if (want("matmul")) test_matmul(c, 1037, 64, 200);
    if (want("attention")) test_attention(c, 2, 128, 8, 2, 32);
    if (want("lmhead")) test_lmhead(c, 1100, 64, 5000);
    /* GPT-2's vocabulary (a 17-column tail past the 64-aligned part), and one
     * with no tail */
    if (want("lmhead")) test_lmhead(c, 96, 64, 50257);
    if (want("lmhead")) test_lmhead(c, 33, 64, 1024);
    if (want("optimizer")) test_optimizer(c, 3000001);
    /* the norms' warp-per-row kernels (forward: row in registers, C <= 4096;
     * backward: per-block fp32 partials of dw/db and their ordered sum,
     * LayerNorm C <= 2048, RMSNorm C <= 4104): one row; one 8-column chunk;
     * C a multiple of 8 but not of 256 (a lane's last chunk batch partial)
     * with N not a multiple of the warps per block and more rows than warps
     * (fused backward at 2056: RMSNorm; at 1032: both); GPT-2's and the
     * llama's shapes (4 rows per warp); C = 4096 (LayerNorm backward
     * per-row, the rest warp-per-row); wider rows (the per-row kernels); an
     * unaligned w (the per-row kernels at C % 8 == 0) */
    c->shape = "normrows";
    if (want("norms")) {
        test_norms(c, 1, 768);
        test_norms(c, 5, 8);
        test_norms(c, 2101, 2056);
        test_norms(c, 8192, 768);
        test_norms(c, 4096, 2048);
        test_norms(c, 7, 4096);
        test_norms(c, 4000, 1032);
        test_norms(c, 40, 12296);
        test_norms(c, 3, 16392);
        test_norms(c, 4096, 1024); /* the MoE benchmark's C (GPT-2's 768, the llama's 2048 above) */
        c->shape = "w@1";
        test_norms_w(c, 300, 768, 1);
        c->shape = "a@1";
        test_residual_norms(c, 300, 768, 1);
        c->shape = "normrows";
    }
    if (want("matmul")) test_matmul_rows(c, 128, 192); /* sets its own shape names */
    /* the head dims of real models (the bf16 table's fused kernels:
     * test_attention): whole and partial 64- and 128-row tiles, several
     * tiles, GQA groups of 1, 2 and 4; then T = 1000 (7 whole 128-row tiles
     * and a partial one) with the benchmark llama's group of 8, and T = 77
     * (one partial tile) with enough heads that the kernels run several
     * waves on a 132-SM card (256 and 512 blocks) */
    c->shape = "heads";
    if (want("attention")) {
        test_attention(c, 2, 64, 4, 4, 64);
        test_attention(c, 2, 100, 4, 2, 64);
        test_attention(c, 1, 257, 8, 2, 64);
        test_attention(c, 1, 130, 4, 1, 128);
        test_attention(c, 2, 192, 2, 2, 128);
        test_attention(c, 2, g_long_t, 16, 2, 64);
        test_attention(c, 1, g_long_t, 8, 8, 128);
        test_attention(c, 16, 77, 32, 32, 64);
        test_attention(c, 8, 77, 32, 8, 128);
    }
    if (want("moe")) { /* many permute chunks; a Qwen-like 64 experts, top-8 */
        test_moe(c, 2051, 8, 2, 520, 1);
        test_moe(c, 1000, 64, 8, 96, 0);
        /* the Mixtral-like bench's expert shapes at a smaller width; 70
         * experts: more problems than one grouped call takes (128) */
        static const int32_t cnt8[8] = {517, 260, 0, 1024, 3, 700, 129, 8};
        test_moe_grouped(c, 8, 256, 704, cnt8);
        int32_t cnt70[70];
        for (int e = 0; e < 70; e++) cnt70[e] = e % 7 == 3 ? 0 : 1 + (e * 37) % 50;
        test_moe_grouped(c, 70, 32, 48, cnt70);
    }
}

/* The comparison itself must be able to fail: NaN, a 1e-3 error at fp32
 * tolerance, and an unwritten (poisoned) element are all caught. */
static int harness_selfcheck(void) {
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 4};
    int finite, ok = 1;
    ok &= rel_err(a, b, 4, &finite) == 0.0 && finite;
    a[2] = NAN;
    rel_err(a, b, 4, &finite);
    ok &= !finite;
    a[2] = 3.003f;
    ok &= rel_err(a, b, 4, &finite) > 1e-5;
    if (!ok) fprintf(stderr, "test_cuda_ops: the comparison cannot fail: harness broken\n");
    return ok;
}

int main(int argc, char **argv) {
    const char *mode = "both", *json_path = NULL, *digest_path = NULL, *device = "cuda";
    uint64_t seed = 1234;
    char err[256] = "";
    Config cfg; /* only its [cuda] keys are used */
    config_init(&cfg);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--cuda.", 7)) {
            if (config_override(&cfg, argv[i], err, sizeof err)) {
                fprintf(stderr, "test_cuda_ops: %s\n", err);
                return 2;
            }
        } else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json_path = argv[++i];
        else if (!strcmp(argv[i], "--digest") && i + 1 < argc)
            digest_path = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            g_only = argv[++i];
        else if (!strcmp(argv[i], "--long-t") && i + 1 < argc && atoi(argv[i + 1]) > 256)
            g_long_t = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: test_cuda_ops [--mode fp32|bf16|both] [--seed N] "
                            "[--json FILE] [--digest FILE] [--device cpu] [--only GROUP] "
                            "[--long-t T > 256] "
                            "[--cuda.KEY=VALUE ...]\n");
            return 2;
        }
    }
    int known = !g_only;
    for (int i = 0; GROUPS[i]; i++) known |= g_only && !strcmp(g_only, GROUPS[i]);
    if (!known) {
        fprintf(stderr, "test_cuda_ops: unknown group '%s' (memory, embed, norms, matmul, attention, "
                        "activations, lmhead, optimizer, moe, arch)\n", g_only);
        return 2;
    }
    if (!harness_selfcheck()) return 1;
    g_opt = config_to_ops_options(&cfg);
    config_free(&cfg);
    /* the fused residual + norm kernels (the default, forced on here): the
     * norms group tests them directly */
    g_opt.cuda.fused_norm = 1;
    /* every op, the opt-in ones too: the grouped expert GEMMs are in the
     * CUDA tables only with this option */
    g_opt.cuda.moe_grouped_gemm = 1;
    printf("test_cuda_ops: seed %llu%s%s\n", (unsigned long long)seed, g_only ? ", group " : "",
           g_only ? g_only : "");
    Ctx c = {0};
    c.ref = ops_cpu();
    c.rng = seed * 2654435761u + 88172645463325252ull;
    if (json_path && !(c.json = fopen(json_path, "w"))) {
        fprintf(stderr, "test_cuda_ops: cannot write %s\n", json_path);
        return 1;
    }
    if (digest_path && !(c.digest = fopen(digest_path, "w"))) {
        fprintf(stderr, "test_cuda_ops: cannot write %s\n", digest_path);
        return 1;
    }
    if (!strcmp(device, "cpu")) {
        c.dev = ops_cpu(), c.mode = "cpu", c.tol = 1e-5;
        run_all(&c);
    } else {
        const char *modes[2] = {"fp32", "bf16"};
        for (int k = 0; k < 2; k++) {
            if (strcmp(mode, "both") && strcmp(mode, modes[k])) continue;
            c.dev = ops_get(k ? "cuda" : "cuda-fp32", &g_opt, err, sizeof err);
            if (!c.dev) {
                printf("%s: CUDA op tests skipped\n", err);
                if (c.json) fclose(c.json);
                return SKIP;
            }
            c.mode = modes[k];
            c.tol = k ? 1e-2 : 1e-5;
            /* each mode from the seed: its inputs do not depend on whether
             * the other mode ran (--mode bf16 digests as the bf16 half of
             * --mode both) */
            c.rng = seed * 2654435761u + 88172645463325252ull;
            run_all(&c);
        }
    }
    if (c.json) fclose(c.json);
    if (c.digest && fclose(c.digest)) {
        fprintf(stderr, "test_cuda_ops: cannot write %s\n", digest_path);
        return 1;
    }
    printf("test_cuda_ops: %d passed, %d failed\n", c.n_pass, c.n_fail);
    return c.n_fail || c.n_pass == 0 ? 1 : 0;
}
