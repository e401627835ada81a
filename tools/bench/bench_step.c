/* bench_step.c: dapt-bench, the dapt side of tools/bench. Times full
 * training steps (zero grad, forward + backward, clip + AdamW) of a
 * GPT-2-124M or a ~110M Llama-shaped model on the CPU backend and prints the
 * median, with the phases timed separately and the BLAS in use.
 *
 * With --profile, a second model runs on the profiling wrapper of the CPU
 * ops table (kernels/ops_profile.h; the CPU backend is synchronous, so the
 * wrapper's syncs cost nothing): a per-op breakdown of one step. With --sgemm, the machine's sgemm
 * rate at the step's matrix shapes, for the floor of a step.
 *
 * The last line of the output is "RESULT {json}" for tools/bench/run to read.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/ops_profile.h"
#include "kernels/util.h"
#include "trainer/model.h"

/* ---------------- model presets ---------------- */

typedef struct {
    const char *name;
    Arch arch;
    int n_layer, n_head, n_kv_head, d_model, d_ff, vocab_size, max_seq_len, tied;
} Preset;

static const Preset presets[] = {
    {"gpt2-124m", ARCH_GPT2, 12, 12, 12, 768, 3072, 50257, 1024, 1},
    {"llama-110m", ARCH_LLAMA, 12, 12, 12, 768, 2048, 32000, 1024, 0},
    /* --quick smoke shapes (GQA in the llama one) */
    {"gpt2-tiny", ARCH_GPT2, 2, 4, 4, 128, 512, 1000, 128, 1},
    {"llama-tiny", ARCH_LLAMA, 2, 4, 2, 128, 384, 1000, 128, 0},
};

static const Preset *preset_find(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

/* ---------------- per-op profile ---------------- */

/* FLOPs the profiler counted (matmuls, lm head, causal attention) */
static double profile_flops(void) {
    OpsProfileEntry e[256];
    int n = ops_profile_entries(e, 256);
    double flops = 0.0;
    for (int i = 0; i < n && i < 256; i++) flops += e[i].flops;
    return flops;
}

/* ---------------- sgemm rate ---------------- */

/* GFLOP/s of C(M,N) = A(M,K) op B, best of `reps`, row-major, in the three
 * layouts the CPU backend uses (fwd NT, bwd dinp NN, bwd dw TN). */
static double sgemm_rate(char kind, int M, int N, int K, int reps) {
    float *a = malloc(sizeof(float) * (size_t)M * K);
    float *b = malloc(sizeof(float) * (size_t)K * N);
    float *c = calloc((size_t)M * N, sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 7) * 0.01f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (kind == 'f') /* a (M,K), b (N,K) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f,
                        c, N);
        else if (kind == 'd') /* a (M,K), b (K,N) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N,
                        0.0f, c, N);
        else /* a (K,M) transposed, b (K,N) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, a, M, b, N, 1.0f,
                        c, N);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * M * N * K / best * 1e-9;
}

/* ---------------- BLAS identification ---------------- */

/* The mapped file that defines cblas_sgemm's code, from /proc/self/maps. */
static void blas_mapped_path(char *out, size_t len) {
    snprintf(out, len, "?");
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (path && strstr(path, "blas")) {
            path[strcspn(path, "\n")] = 0;
            snprintf(out, len, "%s", path);
            break;
        }
    }
    fclose(f);
}

/* ---------------- main ---------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *x, int n) {
    double *y = malloc(sizeof(double) * n);
    memcpy(y, x, sizeof(double) * n);
    qsort(y, n, sizeof(double), cmp_double);
    double r = n % 2 ? y[n / 2] : 0.5 * (y[n / 2 - 1] + y[n / 2]);
    free(y);
    return r;
}

/* One training step: zero grads, forward + backward (mean loss), clip +
 * AdamW. ms[0] the whole step, ms[1..3] zero / fwd+bwd / adamw. */
static int bench_step(Model *m, const AdamWConfig *adamw, float lr, int step,
                      const int32_t *tokens, const int32_t *targets, int B, int T, double ms[4],
                      float *loss) {
    char err[512];
    double t0 = now_s();
    model_zero_grad(m);
    double t1 = now_s();
    if (model_forward_backward(m, tokens, targets, B, T, 1.0f / (B * T), loss, err, sizeof err)) {
        fprintf(stderr, "dapt-bench: %s\n", err);
        return 1;
    }
    double t2 = now_s();
    model_adamw_step(m, adamw, lr, step);
    double t3 = now_s();
    if (!isfinite(*loss)) {
        fprintf(stderr, "dapt-bench: loss is %f at step %d\n", *loss, step);
        return 1;
    }
    ms[0] = 1e3 * (t3 - t0);
    ms[1] = 1e3 * (t1 - t0);
    ms[2] = 1e3 * (t2 - t1);
    ms[3] = 1e3 * (t3 - t2);
    return 0;
}

/* --serve: after "READY", one step per "step" line on stdin, answered with
 * "STEP total_ms zero_ms fwd_bwd_ms adamw_ms loss"; "quit" or EOF ends. This
 * lets tools/bench/run interleave dapt and torch steps, so both sides see
 * the same machine load (the machine is shared). */
static int serve_loop(Model *m, const AdamWConfig *adamw, float lr, const int32_t *tokens,
                      const int32_t *targets, int B, int T) {
    char line[64];
    int step = 0;
    printf("READY\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        if (strncmp(line, "step", 4)) {
            fprintf(stderr, "dapt-bench: unknown command on stdin: %s", line);
            return 2;
        }
        double ms[4];
        float loss;
        if (bench_step(m, adamw, lr, ++step, tokens, targets, B, T, ms, &loss)) return 1;
        printf("STEP %.3f %.3f %.3f %.3f %.5f\n", ms[0], ms[1], ms[2], ms[3], loss);
        fflush(stdout);
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: dapt-bench [--model NAME] [--batch B] [--seq T] [--warmup N] [--steps N]\n"
            "                  [--profile] [--sgemm] [--serve]\n"
            "  --model    gpt2-124m (default) | llama-110m | gpt2-tiny | llama-tiny\n"
            "  --batch/--seq  batch size and sequence length (default 4 x 64)\n"
            "  --warmup   untimed steps first (default 1); --steps timed steps (default 3)\n"
            "  --profile  after the timed steps, one more step timed op by op\n"
            "  --sgemm    also measure the machine's sgemm rate at the step's shapes\n"
            "  --serve    one step per \"step\" line on stdin (for tools/bench/run)\n"
            "Threads: OMP_NUM_THREADS and OPENBLAS_NUM_THREADS, as set by tools/bench/run.\n");
}

static int parse_int(const char *s, const char *flag, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < 0 || v > 1000000) {
        fprintf(stderr, "dapt-bench: %s expects a non-negative integer, got '%s'\n", flag, s);
        return 1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    const char *model_name = "gpt2-124m";
    int B = 4, T = 64, warmup = 1, steps = 3, profile = 0, sgemm = 0, serve = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int *target = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 0;
        if (!strcmp(a, "--profile")) { profile = 1; continue; }
        if (!strcmp(a, "--sgemm")) { sgemm = 1; continue; }
        if (!strcmp(a, "--serve")) { serve = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "dapt-bench: unknown option or missing value: %s\n", a);
            return usage(stderr), 2;
        }
        if (!strcmp(a, "--model")) { model_name = argv[++i]; continue; }
        if (!strcmp(a, "--batch")) target = &B;
        else if (!strcmp(a, "--seq")) target = &T;
        else if (!strcmp(a, "--warmup")) target = &warmup;
        else if (!strcmp(a, "--steps")) target = &steps;
        else {
            fprintf(stderr, "dapt-bench: unknown option: %s\n", a);
            return usage(stderr), 2;
        }
        if (parse_int(argv[++i], a, target)) return 2;
    }
    const Preset *p = preset_find(model_name);
    if (!p) {
        fprintf(stderr, "dapt-bench: unknown model '%s'\n", model_name);
        return usage(stderr), 2;
    }
    if (B < 1 || T < 1 || steps < 1) {
        fprintf(stderr, "dapt-bench: --batch, --seq and --steps must be >= 1\n");
        return 2;
    }

    ModelConfig cfg = model_config_default(p->arch);
    cfg.n_layer = p->n_layer;
    cfg.n_head = p->n_head;
    cfg.n_kv_head = p->n_kv_head;
    cfg.d_model = p->d_model;
    cfg.d_ff = p->d_ff;
    cfg.vocab_size = p->vocab_size;
    cfg.max_seq_len = p->max_seq_len;
    cfg.tie_embeddings = p->tied;

    char err[512];
    /* timed steps run on the plain ops; the profiled model is a second one */
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    if (!m) {
        fprintf(stderr, "dapt-bench: %s\n", err);
        return 1;
    }
    model_init_weights(m, 1234);

    int N = B * T;
    int32_t *tokens = malloc(sizeof(int32_t) * (N + 1)), *targets = tokens + 1;
    uint64_t s = 42;
    for (int i = 0; i <= N; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)cfg.vocab_size);
    }
    AdamWConfig adamw = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                         .grad_clip = 1.0f};
    const float lr = 3e-4f;

    char blas_path[512];
    blas_mapped_path(blas_path, sizeof blas_path);
    printf("dapt %s: %zu parameters, B=%d T=%d", p->name, model_num_params(m), B, T);
    if (serve) printf(", steps on request\n");
    else printf(", %d warm-up + %d timed steps\n", warmup, steps);
    printf("BLAS: %s | core %s | %d threads | mapped %s\n", openblas_get_config(),
           openblas_get_corename(), openblas_get_num_threads(), blas_path);

    if (serve) {
        int rc = serve_loop(m, &adamw, lr, tokens, targets, B, T);
        free(tokens);
        model_free(m);
        return rc;
    }

    double *step_s = calloc(steps, sizeof(double));
    double *phase_s[3]; /* zero_grad, fwd+bwd, adamw */
    for (int ph = 0; ph < 3; ph++) phase_s[ph] = calloc(steps, sizeof(double));
    float loss = NAN;
    for (int k = 0; k < warmup + steps; k++) {
        double ms[4];
        if (bench_step(m, &adamw, lr, k + 1, tokens, targets, B, T, ms, &loss)) return 1;
        int j = k - warmup;
        printf("  step %d%s: %.1f ms (zero %.1f, fwd+bwd %.1f, adamw %.1f) loss %.4f\n", k + 1,
               j < 0 ? " (warm-up)" : "", ms[0], ms[1], ms[2], ms[3], loss);
        if (j >= 0) {
            step_s[j] = 1e-3 * ms[0];
            for (int ph = 0; ph < 3; ph++) phase_s[ph][j] = ms[ph + 1];
        }
    }
    double med = median(step_s, steps), med_ms = 1e3 * med;
    double fwd_bwd_ms = median(phase_s[1], steps), adamw_ms = median(phase_s[2], steps);
    printf("median %.1f ms/step, %.1f tokens/s (phase medians: zero %.1f, fwd+bwd %.1f, adamw "
           "%.1f ms)\n",
           med_ms, N / med, median(phase_s[0], steps), fwd_bwd_ms, adamw_ms);

    double step_flops = 0.0;
    if (profile) {
        Model *mp = model_create(&cfg, ops_profiled(ops_cpu()), err, sizeof err);
        if (!mp) {
            fprintf(stderr, "dapt-bench: %s\n", err);
            return 1;
        }
        model_init_weights(mp, 1234);
        /* a warm-up step, then one step op by op */
        double ms[4];
        if (bench_step(mp, &adamw, lr, 1, tokens, targets, B, T, ms, &loss)) return 1;
        ops_profile_reset();
        if (bench_step(mp, &adamw, lr, 2, tokens, targets, B, T, ms, &loss)) return 1;
        ops_profile_report(stdout, 1, 1e-3 * ms[0]);
        step_flops = profile_flops();
        printf("step FLOPs (matmuls + lm head + attention): %.1f GFLOP; %.1f GFLOP/s at the "
               "median step\n",
               1e-9 * step_flops, 1e-9 * step_flops / med);
        model_free(mp);
    }
    if (sgemm) {
        int C = cfg.d_model, F = cfg.d_ff, V = cfg.vocab_size;
        int UP = p->arch == ARCH_LLAMA ? 2 * F : F;
        struct { const char *what; char kind; int M, Nn, K; } shapes[] = {
            {"fwd  N x 4C  <- C (mlp up, gpt2)", 'f', N, 4 * C, C},
            {"fwd  N x UP  <- C (mlp up)", 'f', N, UP, C},
            {"fwd  N x C   <- F (mlp down)", 'f', N, C, F},
            {"dinp N x C   <- UP", 'd', N, C, UP},
            {"dw   UP x C  <- N rows", 'w', UP, C, N},
            {"lm head N x V <- C", 'f', N < 256 ? N : 256, V, C},
        };
        printf("sgemm rate at the step's shapes (best of 5, GFLOP/s):\n");
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            printf("  %-36s M=%-5d N=%-5d K=%-5d %7.1f\n", shapes[i].what, shapes[i].M,
                   shapes[i].Nn, shapes[i].K,
                   sgemm_rate(shapes[i].kind, shapes[i].M, shapes[i].Nn, shapes[i].K, 5));
    }

    printf("RESULT {\"side\": \"dapt\", \"model\": \"%s\", \"params\": %zu, \"B\": %d, \"T\": %d, "
           "\"warmup\": %d, \"steps\": %d, \"median_ms\": %.3f, \"tokens_per_s\": %.3f, "
           "\"fwd_bwd_ms\": %.3f, \"adamw_ms\": %.3f, \"loss\": %.5f, \"step_gflop\": %.3f, "
           "\"blas\": \"%s | core %s | %d threads | %s\"}\n",
           p->name, model_num_params(m), B, T, warmup, steps, med_ms, N / med,
           fwd_bwd_ms, adamw_ms, loss, 1e-9 * step_flops,
           openblas_get_config(), openblas_get_corename(), openblas_get_num_threads(), blas_path);
    free(step_s);
    for (int ph = 0; ph < 3; ph++) free(phase_s[ph]);
    free(tokens);
    model_free(m);
    return 0;
}
