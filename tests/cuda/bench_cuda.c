/* bench_cuda.c: training throughput of the CUDA backend (bf16 table) on three
 * model shapes: GPT-2 124M (B=8, T=1024: llm.c's side-by-side shape), a
 * ~1.1B Llama (the TinyLlama shape: 22 layers, d_model 2048, 32 heads over 4
 * kv heads, d_ff 5632) at the T=2048 with B=16 (most of an 80 GB
 * H100, below), and a Mixtral-shaped MoE Llama (8 layers, d_model 1024, 16
 * heads over 8 kv heads, 8 experts of hidden size 2816, top-2, B=4,
 * T=1024), timed twice: lbl = "global", then "micro", each from the same
 * initial weights (seed 1, restored, Adam state zeroed) on the same tokens,
 * then the ratio of their tokens/s. Before them, an untimed replay of the
 * global run's steps fills the GEMM plan cache (per process, kernels/cuda/
 * gemm.cu), so neither timed run pays for plans the other made. One rank
 * and one micro-batch per step: the global mode's f is the micro-batch's
 * own, the same as micro's, so the two train the same routings (equal
 * losses and loads, up to run-to-run nondeterminism of the backend) and the
 * ratio is the cost of the global mode's bookkeeping; the cost of a sum
 * over NCCL is not measured here. After each MoE run's timed steps: the
 * routing imbalance of its last step, max/mean expert load per layer (1 =
 * balanced, E = all tokens on one expert), worst and mean over layers. With
 * --cuda.moe_grouped_gemm=true (the opt-in grouped expert GEMMs) the MoE lines
 * are named moe-e8k2-grouped-global / -micro. A timed step is zero_grad +
 * `--accum` forward_backward passes (micro-batches of B x T tokens each,
 * gradients accumulated with grad_scale 1 / (all tokens of the step), as
 * `dapt train` does) + AdamW, after warm-up steps; the clock stops after
 * the backend's sync.
 *
 * The llama's batch: device memory by model.c's allocations (bf16 table) is
 * 16 bytes a parameter (bf16 weights and gradients, fp32 master, Adam m
 * and v: 17.6 GB for 1.10G parameters) plus ~1.38 MB a token of a
 * micro-batch at T=2048 (per layer and token: x, ln1, atty, x_mid, ln2 of
 * C, qkv of (NH + 2 NKV) HD = 2560, up of 2F, act of F: 29,696 bf16 values,
 * plus rstds and the fused attention's NH log-sum-exps: 59.5 KB, x 22
 * layers; once: the backward's scratch and lnf, 54 KB; the GQA attention
 * backward's fp32 partials in the backend scratch, 16 KB), plus the LM
 * head's 197 MB of chunk scratch and the 32 MB cuBLASLt workspace. B=16 x
 * 2048: 17.6 + 45.2 + 0.2 + ~0.7 (CUDA context) = ~64 GB of an H100's 80;
 * B=20 would be ~75 GB, too close to the 80 GB (docs/performance.md).
 * `--batch 4 --seq 1024` is a smaller llama shape.
 *
 * tokens/s = B*T*accum*steps / seconds. MFU = flops per token * tokens/s / peak,
 * flops per token = 6 * (parameters used in matmuls: all but the position
 * table, and the input embedding when the head is untied; of an MoE layer's
 * experts only the top_k a token is routed to) + 12 * L * NH * HD * T
 * for attention scores and values (the usual count: forward 1x, backward 2x;
 * causal masking not discounted). --peak-tflops is the card's dense bf16
 * peak (default 989.4, H100 SXM); tools/gpu-check picks it from the card.
 * A line ends in "fused residual+norm" when the table has the fused
 * residual + norm forward for the shape's norm (ops.h; on CUDA unless
 * --cuda.fused_norm=false; the CPU table always has it); the JSON record's
 * "fused_norm" says the same.
 *
 * --profile: after the timed steps, 3 more steps (--profile-steps N) on the
 * profiling wrapper (kernels/ops_profile.h) and its per-op table: ms/step,
 * calls, TFLOP/s of the matmuls, GB/s of the memory-bound ops, and the time
 * outside ops. The model then runs on the wrapper from the start, switched
 * off (a straight pass-through) for the warm-up and timed steps, so the
 * timed figures stay unprofiled; the profiled steps sync around every op.
 * The profiled steps also time the kernels inside the fused attention ops
 * (ops_cuda_ktime_enable, ops.h): the forward, and the backward's D,
 * dK/dV, GQA-sum (when a group is split over blocks) and dQ kernels, a line
 * each after the op table.
 * --device picks another backend by name (cpu, cuda-fp32; default cuda),
 * e.g. `--device cpu --only gpt2 --warmup 1 --steps 1 --profile` for a
 * CPU profile at the GPU shapes (slow: tens of seconds per step). --warmup and
 * --steps override the per-shape step counts; --batch and --seq the batch
 * size and sequence length (B x T per micro-batch) of the shapes run;
 * --accum N the micro-batches per optimizer step (default 1); --layers N
 * the layer count of every shape (a smaller model of the same width, e.g.
 * for the emulator's smoke run, tests/cuemu); --recompute block the
 * activation recomputation of train.recompute (model.h ModelRecompute; the
 * line and the record then give the activation bytes too).
 * --cuda.KEY=VALUE: the CUDA
 * backend's options, as the config's [cuda] keys (docs/config.md; parsed
 * by config_override), for A/B runs (tools/gpu-check).
 *
 * Usage: bench_cuda [--json FILE] [--peak-tflops X] [--only gpt2|llama|moe] [--profile]
 *                   [--profile-steps N] [--device NAME] [--warmup N] [--steps N]
 *                   [--batch B] [--seq T] [--accum N] [--layers N] [--recompute none|block]
 *                   [--cuda.KEY=VALUE ...]
 * Exit 0, 1 on failure, 2 on bad usage, 77 without a GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops_profile.h"
#include "kernels/util.h"
#include "trainer/config.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/plan.h"

#define SKIP 77

typedef struct {
    const char *name, *alias; /* alias: what --only names it by */
    ModelConfig cfg;
    int B, T, warmup, steps, accum;
    int recompute; /* ModelRecompute (--recompute) */
    int offload;   /* train.offload_optimizer (--offload) */
} Shape;

static OpsOptions g_opt; /* the [cuda] options, for the memory plan */
static size_t g_used0;   /* device memory in use before the model (context, ...) */

/* Device memory after the timed steps (cudaMemGetInfo: everything a step
 * allocates stays allocated, so this is the step's peak) less what was in
 * use before the model was created (the CUDA context, the backend's
 * start-up buffers: the cuBLASLt workspace), against `dapt plan`'s peak for
 * the same run without its context allowance and that workspace; printed with the total in use, in the JSON
 * record, and a FAIL beyond 5%. */
static int memory_line(const Shape *s, const char *name, const Ops *ops, FILE *json) {
    size_t used, total;
    if (ops_cuda_mem(&used, &total)) return 0;
    PlanSetup ps = {.act_bytes = ops->act_bytes, .cuda = 1,
                    .flash_attention = g_opt.cuda.flash_attention,
                    .lmhead_chunk_rows = g_opt.cuda.lmhead_chunk_rows, .B = s->B, .T = s->T,
                    .recompute = s->recompute, .offload = s->offload};
    Plan p;
    plan_compute(&s->cfg, &ps, &p);
    /* the cuBLASLt workspace is allocated when the backend starts: in g_used0 */
    size_t run = used > g_used0 ? used - g_used0 : 0, want = p.peak - p.cuda_workspace;
    double r = (double)run / (double)want;
    int ok = fabs(r - 1.0) <= 0.05;
    printf("%-16s device memory %.2f GiB for the run (%.2f GiB in use of %.1f, cudaMemGetInfo), "
           "dapt plan %.2f GiB: %.3fx %s%s\n",
           name, run / 1073741824.0, used / 1073741824.0, total / 1073741824.0,
           want / 1073741824.0, r, ok ? "(within 5%)" : "FAIL: more than 5% apart",
           s->offload ? "; optimizer state offloaded to host memory" : "");
    if (json)
        fprintf(json,
                "{\"bench\":\"%s-memory\",\"used_bytes\":%zu,\"plan_bytes\":%zu,\"ratio\":%.4f,"
                "\"offload\":%d,\"recompute\":\"%s\",\"pass\":%s}\n",
                name, run, want, r, s->offload, model_recompute_name(s->recompute),
                ok ? "true" : "false");
    return ok ? 0 : 1;
}

/* flops per token: 6 * the parameters a token's matmuls use + attention.
 * In an MoE model a token uses K of the E experts of each MoE layer. */
static double flops_per_token(const Model *m, const ModelConfig *c, int T) {
    double p_mm = (double)model_num_params(m);
    if (c->arch == ARCH_GPT2) p_mm -= (double)c->max_seq_len * c->d_model;
    if (!c->tie_embeddings) p_mm -= (double)c->vocab_size * c->d_model;
    if (c->n_experts) {
        double expert = 3.0 * c->d_ff * c->d_model;
        p_mm -= (double)model_moe_num_layers(m) * (c->n_experts - c->top_k) * expert;
    }
    return 6.0 * p_mm + 12.0 * c->n_layer * c->n_head * model_head_dim(c) * T;
}

/* one optimizer step: zero_grad, s->accum micro-batches of N = B*T tokens
 * (tok, tgt hold all of them), AdamW; the last micro-batch's loss in *loss */
static int one_step(const Shape *s, const char *name, Model *m, const int32_t *tok,
                    const int32_t *tgt, int step, float *loss) {
    char err[256];
    int N = s->B * s->T;
    AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    model_zero_grad(m);
    if (model_moe_begin_step(m, (int64_t)N * s->accum, err, sizeof err)) {
        fprintf(stderr, "bench_cuda: %s: %s\n", name, err);
        return 1;
    }
    for (int k = 0; k < s->accum; k++) {
        if (model_forward_backward(m, tok + (size_t)k * N, tgt + (size_t)k * N, s->B, s->T,
                                   1.0f / ((float)N * s->accum), loss, err, sizeof err)) {
            fprintf(stderr, "bench_cuda: %s: %s\n", name, err);
            return 1;
        }
    }
    model_adamw_step(m, &opt, 1e-4f, step + 1);
    return 0;
}

/* max/mean expert load of the last forward: worst and mean over MoE layers */
static void moe_imbalance(const Model *m, double *worst, double *mean) {
    int Lm = model_moe_num_layers(m);
    *worst = *mean = 0.0;
    for (int i = 0; i < Lm; i++) {
        MoeLayerStats st;
        if (model_moe_layer_stats(m, i, &st)) continue;
        if (st.load_max > *worst) *worst = st.load_max;
        *mean += st.load_max / Lm;
    }
}

/* warm-up and timed steps of m under the name `name`; *tok_s_out: the
 * timed tokens/s; quiet: report nothing (and no profile) */
static int timed(const Shape *s, const char *name, Model *m, const Ops *ops, double peak_flops,
                 int profile_steps, FILE *json, double *tok_s_out, int quiet) {
    const ModelConfig *c = &s->cfg;
    size_t N = (size_t)s->B * s->T, NA = N * s->accum;
    int32_t *tok = malloc(NA * sizeof(int32_t)), *tgt = malloc(NA * sizeof(int32_t));
    uint64_t r = 88172645463325252ull;
    for (size_t i = 0; i < NA; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        tok[i] = (int32_t)(r % c->vocab_size);
    }
    for (size_t i = 0; i < NA; i++) tgt[i] = tok[(i + 1) % NA];
    int fused = c->arch == ARCH_GPT2 ? ops->residual_layernorm_fwd != NULL
                                     : ops->residual_rmsnorm_fwd != NULL;
    float loss = NAN, first = NAN;
    double t0 = 0.0;
    for (int step = 0; step < s->warmup + s->steps; step++) {
        if (step == s->warmup) {
            ops->sync();
            t0 = now_s();
        }
        if (one_step(s, name, m, tok, tgt, step, &loss)) {
            free(tok), free(tgt);
            return 1;
        }
        if (step == 0) first = loss;
    }
    ops->sync();
    double sec = now_s() - t0;
    double tok_s = (double)NA * s->steps / sec;
    double mfu = flops_per_token(m, c, s->T) * tok_s / peak_flops;
    *tok_s_out = tok_s;
    if (quiet) {
        free(tok), free(tgt);
        return isfinite(loss) ? 0 : 1;
    }
    char accum[96] = "";
    size_t n_acc = 0;
    if (s->accum > 1) n_acc = (size_t)snprintf(accum, sizeof accum, " accum=%d", s->accum);
    if (s->recompute)
        n_acc += (size_t)snprintf(accum + n_acc, sizeof accum - n_acc,
                                  " recompute=%s (activations %.0f MiB)",
                                  model_recompute_name(s->recompute),
                                  model_activation_bytes(m) / 1048576.0);
    if (s->offload && n_acc < sizeof accum) snprintf(accum + n_acc, sizeof accum - n_acc, " offload");
    printf("%-16s params %7.1fM  B=%d T=%d%s  %6.1f ms/step  %9.0f tokens/s  MFU %5.1f%%  "
           "loss %.3f -> %.3f%s\n",
           name, model_num_params(m) / 1e6, s->B, s->T, accum, 1e3 * sec / s->steps, tok_s,
           100.0 * mfu, first, loss, fused ? "  fused residual+norm" : "");
    double load_worst = 0.0, load_mean = 0.0;
    if (c->n_experts) {
        moe_imbalance(m, &load_worst, &load_mean);
        printf("%-16s last step's expert load max/mean: worst layer %.3f, mean over %d layers "
               "%.3f (1 = balanced, %d = one expert)\n",
               name, load_worst, model_moe_num_layers(m), load_mean, c->n_experts);
    }
    if (json) {
        fprintf(json,
                "{\"bench\":\"%s\",\"params\":%zu,\"B\":%d,\"T\":%d,\"accum\":%d,"
                "\"recompute\":\"%s\",\"offload\":%d,\"act_bytes\":%zu,\"fused_norm\":%d,"
                "\"ms_per_step\":%.3f,"
                "\"tokens_per_s\":%.1f,\"mfu\":%.4f,\"peak_tflops\":%.1f,\"loss_first\":%.4f,"
                "\"loss_last\":%.4f",
                name, model_num_params(m), s->B, s->T, s->accum, model_recompute_name(s->recompute),
                s->offload, model_activation_bytes(m), fused, 1e3 * sec / s->steps, tok_s, mfu,
                peak_flops / 1e12, first, loss);
        if (c->n_experts)
            fprintf(json, ",\"moe_load_worst\":%.4f,\"moe_load_mean\":%.4f", load_worst,
                    load_mean);
        fprintf(json, "}\n");
    }
    int mem_fail = c->n_experts ? 0 : memory_line(s, name, ops, json);
    fflush(stdout);
    if (json) fflush(json);
    if (mem_fail) {
        free(tok), free(tgt);
        return 1;
    }
    /* the profiled steps, after the timed figures are out (the model runs on
     * the profiling wrapper, switched off until now) */
    if (profile_steps > 0) {
        float prof_loss;
        ops_profile_reset();
        ops_profile_enable(1);
        ops_cuda_ktime_enable(1);
        double p0 = now_s();
        for (int k = 0; k < profile_steps; k++) {
            if (one_step(s, name, m, tok, tgt, s->warmup + s->steps + k, &prof_loss)) {
                free(tok), free(tgt);
                return 1;
            }
        }
        ops->sync();
        double prof_wall_s = now_s() - p0;
        ops_profile_enable(0);
        ops_cuda_ktime_enable(0);
        printf("%s profile (%d step(s) after the timed ones; the timed figures above are "
               "unprofiled):\n",
               name, profile_steps);
        ops_profile_report(stdout, profile_steps, prof_wall_s);
        ops_cuda_ktime_report(stdout, profile_steps);
        fflush(stdout);
    }
    free(tok);
    free(tgt);
    return isfinite(loss) ? 0 : 1;
}

/* An MoE shape: an untimed replay of the global run (the plan cache), then
 * lbl = "global" and "micro" timed from the same initial weights and a
 * zero Adam state, and the ratio. */
static int bench_moe(const Shape *s, Model *m, const Ops *ops, double peak_flops,
                     int profile_steps, FILE *json) {
    static const int modes[3] = {MOE_LBL_GLOBAL, MOE_LBL_GLOBAL, MOE_LBL_MICRO};
    const char *tag = ops->moe_expert_matmul_fwd ? "-grouped" : "";
    size_t n = model_num_params(m);
    float *init = malloc(n * sizeof(float)), *zero = calloc(n, sizeof(float));
    if (!init || !zero) {
        free(init), free(zero);
        fprintf(stderr, "bench_cuda: %s: out of host memory for a copy of the weights\n", s->name);
        return 1;
    }
    model_get_params(m, init);
    double tok_s[3] = {0.0, 0.0, 0.0};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        char err[256], name[64];
        ModelConfig mc = s->cfg;
        mc.lbl_mode = modes[i];
        snprintf(name, sizeof name, "%s%s-%s", s->name, tag, moe_lbl_mode_name(modes[i]));
        if (model_moe_set_loss(m, &mc, err, sizeof err)) {
            fprintf(stderr, "bench_cuda: %s: %s\n", name, err);
            rc = 1;
            break;
        }
        if (i > 0) {
            model_set_params(m, init);
            model_set_adam_state(m, zero, zero);
        }
        rc = timed(s, name, m, ops, peak_flops, i ? profile_steps : 0, i ? json : NULL,
                   &tok_s[i], i == 0);
    }
    if (!rc)
        printf("%s%s global / micro LBL tokens/s = %.3f (same initial weights and tokens, plan "
               "cache warmed by an untimed replay)\n",
               s->name, tag, tok_s[1] / tok_s[2]);
    free(init), free(zero);
    return rc;
}

static int bench(const Shape *s, const Ops *ops, double peak_flops, int profile_steps,
                 FILE *json) {
    char err[256];
    /* with --profile the model runs on the wrapper, off until the timed
     * steps are done */
    const Ops *prof = profile_steps > 0 ? ops_profiled(ops) : NULL;
    if (prof) ops_profile_enable(0);
    size_t P = model_config_num_params(&s->cfg), total;
    ops->sync();
    if (ops_cuda_mem(&g_used0, &total)) g_used0 = 0;
    ModelShard sh = {.stage = 0, .world = 1, .rank = 0, .pieces = &P, .offload = s->offload};
    Model *m = model_create_sharded(&s->cfg, prof ? prof : ops, &sh, err, sizeof err);
    if (!m) {
        fprintf(stderr, "bench_cuda: %s: %s\n", s->name, err);
        return 1;
    }
    model_set_recompute(m, s->recompute);
    model_init_weights(m, 1);
    double tok_s;
    int rc = s->cfg.n_experts
                 ? bench_moe(s, m, ops, peak_flops, profile_steps, json)
                 : timed(s, s->name, m, ops, peak_flops, profile_steps, json, &tok_s, 0);
    model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    const char *json_path = NULL, *only = NULL, *device = "cuda";
    double peak_tflops = 989.4;
    int profile = 0, profile_steps = 3, warmup = -1, steps = -1, batch = 0, seq = 0, accum = 1;
    int layers = 0, recompute = -1, offload = -1;
    char err[256];
    Config cfg; /* only its [cuda] keys are used */
    config_init(&cfg);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "--cuda.", 7)) {
            if (config_override(&cfg, argv[i], err, sizeof err)) {
                fprintf(stderr, "bench_cuda: %s\n", err);
                return 2;
            }
        } else if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json_path = argv[++i];
        else if (!strcmp(argv[i], "--peak-tflops") && i + 1 < argc)
            peak_tflops = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--profile"))
            profile = 1;
        else if (!strcmp(argv[i], "--profile-steps") && i + 1 < argc && atoi(argv[i + 1]) >= 1)
            profile_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc)
            device = argv[++i];
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc && atoi(argv[i + 1]) >= 0)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc && atoi(argv[i + 1]) >= 1)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc && atoi(argv[i + 1]) >= 1)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seq") && i + 1 < argc && atoi(argv[i + 1]) >= 1)
            seq = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--accum") && i + 1 < argc && atoi(argv[i + 1]) >= 1)
            accum = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--layers") && i + 1 < argc && atoi(argv[i + 1]) >= 1)
            layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--recompute") && i + 1 < argc &&
                 !model_recompute_parse(argv[i + 1], &recompute, err, sizeof err))
            i++;
        else if (!strcmp(argv[i], "--offload"))
            offload = 1;
        else if (!strcmp(argv[i], "--no-offload"))
            offload = 0;
        else {
            fprintf(stderr,
                    "usage: bench_cuda [--json FILE] [--peak-tflops X] [--only gpt2|llama|moe] "
                    "[--profile]\n"
                    "                  [--profile-steps N >= 1] [--device cpu|cuda|cuda-fp32]"
                    " [--warmup N >= 0] [--steps N >= 1] [--batch B] [--seq T]"
                    " [--accum N >= 1] [--layers N >= 1] [--recompute none|block]"
                    " [--offload | --no-offload] [--cuda.KEY=VALUE ...]\n");
            return 2;
        }
    }
    if (only && strcmp(only, "gpt2") && strcmp(only, "llama") && strcmp(only, "moe") &&
        strcmp(only, "llama-3B") && strcmp(only, "llama-8B")) {
        fprintf(stderr,
                "bench_cuda: --only takes gpt2, llama, moe, llama-3B or llama-8B (got '%s')\n",
                only);
        return 2;
    }
    const OpsOptions opt = config_to_ops_options(&cfg);
    g_opt = opt;
    config_free(&cfg);
    const Ops *ops = ops_get(device, &opt, err, sizeof err);
    if (!ops) {
        if (strcmp(device, "cpu") && strcmp(device, "cuda") && strcmp(device, "cuda-fp32")) {
            fprintf(stderr, "bench_cuda: %s\n", err);
            return 2;
        }
        printf("%s: benchmark skipped\n", err);
        return SKIP;
    }
    FILE *json = NULL;
    if (json_path && !(json = fopen(json_path, "w"))) {
        fprintf(stderr, "bench_cuda: cannot write %s\n", json_path);
        return 1;
    }
    Shape shapes[5] = {0};
    shapes[0].name = "gpt2-124M", shapes[0].alias = "gpt2";
    shapes[0].cfg = model_config_default(ARCH_GPT2);
    shapes[0].cfg.n_layer = 12, shapes[0].cfg.n_head = shapes[0].cfg.n_kv_head = 12;
    shapes[0].cfg.d_model = 768, shapes[0].cfg.d_ff = 3072, shapes[0].cfg.vocab_size = 50257;
    shapes[0].cfg.max_seq_len = 1024;
    shapes[0].B = 8, shapes[0].T = 1024, shapes[0].warmup = 2, shapes[0].steps = 10;
    shapes[1].name = "llama-1.1B", shapes[1].alias = "llama";
    shapes[1].cfg = model_config_default(ARCH_LLAMA);
    shapes[1].cfg.n_layer = 22, shapes[1].cfg.n_head = 32, shapes[1].cfg.n_kv_head = 4;
    shapes[1].cfg.d_model = 2048, shapes[1].cfg.d_ff = 5632, shapes[1].cfg.vocab_size = 32000;
    shapes[1].cfg.max_seq_len = 2048, shapes[1].cfg.tie_embeddings = 0;
    /* T=2048 (the shape), B=16: ~64 GB of an 80 GB card (above) */
    shapes[1].B = 16, shapes[1].T = 2048, shapes[1].warmup = 2, shapes[1].steps = 5;
    shapes[2].name = "moe-e8k2", shapes[2].alias = "moe";
    shapes[2].cfg = model_config_default(ARCH_LLAMA);
    shapes[2].cfg.n_layer = 8, shapes[2].cfg.n_head = 16, shapes[2].cfg.n_kv_head = 8;
    shapes[2].cfg.d_model = 1024, shapes[2].cfg.d_ff = 2816, shapes[2].cfg.vocab_size = 32000;
    shapes[2].cfg.max_seq_len = 1024, shapes[2].cfg.tie_embeddings = 0;
    shapes[2].cfg.n_experts = 8, shapes[2].cfg.top_k = 2;
    shapes[2].cfg.lbl_coef = 0.01f, shapes[2].cfg.z_loss_coef = 0.001f;
    shapes[2].B = 4, shapes[2].T = 1024, shapes[2].warmup = 2, shapes[2].steps = 5;
    /* issue 24's goals, only when --only names them: a Llama-3.2-3B shape
     * (tied) at T=4096 on one GPU without offload, and the Llama-3.1-8B
     * shape at T=4096 on one GPU with recomputation and the optimizer
     * offloaded (host memory: 12 bytes a parameter, 96 GB) */
    shapes[3].name = shapes[3].alias = "llama-3B";
    shapes[3].cfg = model_config_default(ARCH_LLAMA);
    shapes[3].cfg.n_layer = 28, shapes[3].cfg.n_head = 24, shapes[3].cfg.n_kv_head = 8;
    shapes[3].cfg.d_model = 3072, shapes[3].cfg.d_ff = 8192, shapes[3].cfg.vocab_size = 128256;
    shapes[3].cfg.max_seq_len = 4096, shapes[3].cfg.tie_embeddings = 1;
    shapes[3].cfg.rope_theta = 500000.0f;
    shapes[3].B = 1, shapes[3].T = 4096, shapes[3].warmup = 1, shapes[3].steps = 3;
    shapes[4] = shapes[3];
    shapes[4].name = shapes[4].alias = "llama-8B";
    shapes[4].cfg.n_layer = 32, shapes[4].cfg.n_head = 32, shapes[4].cfg.d_model = 4096;
    shapes[4].cfg.d_ff = 14336, shapes[4].cfg.tie_embeddings = 0;
    shapes[4].recompute = MODEL_RECOMPUTE_BLOCK, shapes[4].offload = 1;
    shapes[4].steps = 2;
    int rc = 0;
    for (int i = 0; i < 5; i++) {
        if (only ? strcmp(shapes[i].alias, only) : i >= 3) continue;
        shapes[i].accum = accum;
        if (recompute >= 0) shapes[i].recompute = recompute;
        if (offload >= 0) shapes[i].offload = offload;
        if (warmup >= 0) shapes[i].warmup = warmup;
        if (steps >= 1) shapes[i].steps = steps;
        if (batch) shapes[i].B = batch;
        if (layers) shapes[i].cfg.n_layer = layers;
        if (seq) {
            shapes[i].T = seq;
            if (shapes[i].cfg.max_seq_len < seq) shapes[i].cfg.max_seq_len = seq;
        }
        rc |= bench(&shapes[i], ops, peak_tflops * 1e12, profile ? profile_steps : 0, json);
    }
    if (json) fclose(json);
    return rc;
}
