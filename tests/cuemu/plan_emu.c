/* plan_emu.c: the memory plan (trainer/plan.h) against the CUDA backend's
 * device allocations on the host emulator (cuemu_device_bytes: every
 * cudaMalloc'd byte, the backend's padding to 256 included). One training
 * step of a dense llama, a GPT-2 and an MoE llama on the bf16 table (the
 * fused attention: head dim 64) and of the llama on cuda-fp32: the plan's
 * peak, with no context allowance (the emulator has no CUDA context), must
 * be within 5% of the measured peak, and a plan for twice the micro-batch
 * must miss. The shapes are wide enough (vocabulary 4096, d_model
 * 256) that the 32 MiB cuBLASLt workspace is not most of the total. What
 * the plan leaves out (the kernels' growing scratch, the RoPE table) is the
 * difference printed. One case a process (the argument): the peak is the
 * process's, the backend's workspace included. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/c/check.h"
#include "tests/cuemu/cuemu_export.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/plan.h"
#include "trainer/rng.h"

enum { B = 4, T = 64, N = B * T };

static ModelConfig shape(Arch arch, int n_experts) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = arch == ARCH_LLAMA ? 2 : 4;
    c.d_model = 256;
    c.d_ff = 512;
    c.vocab_size = 4096;
    c.max_seq_len = T;
    if (n_experts) c.n_experts = n_experts, c.top_k = 2;
    return c;
}

/* the device bytes' peak of one step, since the process started */
static size_t measure_step(const Ops *ops, const ModelConfig *cfg) {
    char err[256] = "";
    Model *m = model_create(cfg, ops, err, sizeof err);
    CHECK(m, "%s", err);
    if (!m) return 0;
    model_init_weights(m, 7);
    Rng r;
    rng_seed(&r, 3);
    int32_t tok[N], tgt[N];
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)rng_below(&r, (uint64_t)cfg->vocab_size);
    for (int i = 0; i < N; i++)
        tgt[i] = (int32_t)rng_below(&r, (uint64_t)cfg->vocab_size);
    float loss;
    if (cfg->n_experts) CHECK_OK(model_moe_begin_step(m, N, err, sizeof err), err);
    CHECK_OK(model_forward_backward(m, tok, tgt, B, T, 1.0f / N, &loss, err, sizeof err), err);
    CHECK(isfinite(loss));
    AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    model_adamw_step(m, &opt, 1e-3f, 1);
    ops->sync();
    size_t live, peak;
    cuemu_device_bytes(&live, &peak);
    model_free(m);
    return peak;
}

static int within(size_t predicted, size_t measured) {
    return fabs((double)predicted - (double)measured) <= 0.05 * (double)measured;
}

static void check_case(const char *table, const char *name, const ModelConfig *cfg) {
    char err[256] = "";
    const Ops *ops = ops_get(table, NULL, err, sizeof err);
    CHECK(ops, "%s", err);
    if (!ops) return;
    size_t measured = measure_step(ops, cfg);
    OpsOptions o = ops_options_default();
    PlanSetup s = {.act_bytes = ops->act_bytes,
                   .cuda = 1,
                   .flash_attention = o.cuda.flash_attention,
                   .lmhead_chunk_rows = o.cuda.lmhead_chunk_rows,
                   .B = B,
                   .T = T};
    Plan p;
    plan_compute(cfg, &s, &p);
    printf("%-10s %-6s predicted %9zu bytes, measured %9zu (%+.3f%%)\n", table, name, p.peak,
           measured, 100.0 * ((double)p.peak - (double)measured) / (double)measured);
    CHECK(within(p.peak, measured), "%s %s: plan %zu vs measured %zu", table, name, p.peak,
          measured);
    /* wrong on purpose: twice the micro-batch (fp32 and bf16 with its
     * master weights both keep 16 bytes of state a parameter, so element
     * sizes alone would not show) */
    PlanSetup wrong = s;
    wrong.B = 2 * B;
    Plan q;
    plan_compute(cfg, &wrong, &q);
    CHECK(!within(q.peak, measured), "%s %s: a plan for micro-batch %d passes (%zu)", table, name,
          wrong.B, q.peak);
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "";
    ModelConfig llama = shape(ARCH_LLAMA, 0), gpt2 = shape(ARCH_GPT2, 0);
    ModelConfig moe = shape(ARCH_LLAMA, 4);
    if (!strcmp(which, "llama"))
        check_case("cuda", "llama", &llama);
    else if (!strcmp(which, "gpt2"))
        check_case("cuda", "gpt2", &gpt2);
    else if (!strcmp(which, "moe"))
        check_case("cuda", "moe", &moe);
    else if (!strcmp(which, "fp32"))
        check_case("cuda-fp32", "llama", &llama);
    else
        CHECK(0, "usage: plan_emu llama|gpt2|moe|fp32 (got '%s')", which);
    return CHECK_DONE();
}
