/* cli/plan.c: `dapt plan CONFIG.toml [--world N] [--gpu-mem GiB] [--host-mem GiB]`:
 * the memory a `dapt train` of the config would allocate, per GPU (per
 * process on the CPU backend) and per host, from trainer/plan.h; the
 * largest micro-batch that fits --gpu-mem and the existing settings that
 * would make the config fit; features dapt lacks, estimated, marked so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"
#include "trainer/config.h"
#include "trainer/hf.h"
#include "trainer/plan.h"

static const char USAGE[] =
    "usage: dapt plan CONFIG.toml [--world N] [--gpu-mem GiB] [--host-mem GiB]\n"
    "                 [--section.key=value ...]\n\n"
    "Prints the memory `dapt train CONFIG.toml` allocates today, per GPU (per\n"
    "process on run.device = \"cpu\") and per host: parameters, gradients, fp32\n"
    "master weights and Adam moments (sharded over --world ranks as dist.zero\n"
    "says: 1 the optimizer state, 2 the gradients too, 3 the parameters too),\n"
    "activations for train.micro_batch x data.seq_len, attention\n"
    "and LM head scratch; then the largest micro-batch that fits --gpu-mem and\n"
    "which settings would make the config fit. The model shape comes from\n"
    "[model] or from init_from's (upcycle_from's) config.json.\n\n"
    "  --world N          data-parallel ranks (default 1)\n"
    "  --gpu-mem GiB      memory of one GPU (default 80; the CPU backend: the budget\n"
    "                     of one process)\n"
    "  --host-mem GiB     memory of one host (default 0: not checked)\n"
    "  --section.key=value  override one config key (any number)\n";

#define GIB           (1024.0 * 1024.0 * 1024.0)
#define CONTEXT_BYTES ((size_t)1 << 30) /* CUDA context, NCCL, kernel scratch: an assumption */
#define GPUS_PER_HOST 8                 /* ranks a host runs: an assumption */
#define MAX_MICRO     4096

/* the shape train_run builds: upcycled, from init_from's config.json, or [model] */
static int model_shape(const Config *c, ModelConfig *mc, char *err, size_t err_len) {
    char why[512];
    const char *dir = c->moe.upcycle_from[0] ? c->moe.upcycle_from : c->model.init_from;
    if (!dir[0]) return config_to_model_config(c, mc, err, err_len);
    if (hf_load_config(dir, mc, why, sizeof why)) return err_set(err, err_len, "%s: %s", dir, why);
    return config_apply_moe(c, mc, !c->moe.upcycle_from[0], err, err_len) ||
           model_config_check(mc, err, err_len) || config_check_model(c, mc, err, err_len);
}

static void row(const char *name, size_t bytes, const char *note) {
    printf("  %-34s %10.3f GiB  %s\n", name, bytes / GIB, note);
}

static void print_plan(const Plan *p, const PlanSetup *s, const ModelConfig *mc) {
    char note[160];
    int stage = s->zero_world > 1 ? (s->zero_stage ? s->zero_stage : 1) : 0;
    const char *opt = stage ? "1/world shard" : "whole";
    const char *ty = s->act_bytes == 2 ? "bf16" : "fp32";
    snprintf(note, sizeof note, "%s, %s", ty,
             stage >= 3 ? "1/world shard + 3 windows of the largest block" : "whole on every rank");
    row("parameters", p->params, note);
    snprintf(note, sizeof note, "%s, %s", ty,
             stage < 2             ? "whole on every rank"
             : mc->tie_embeddings ? "1/world shard + 2 windows of the largest block"
                                  : "1/world shard + a window of the largest block");
    row("gradients", p->grads, note);
    if (stage >= 2)
        row("  of which ZeRO windows", p->param_windows + p->grad_windows,
            "the largest unit being gathered / reduce-scattered");
    snprintf(note, sizeof note, "fp32, %s%s", opt,
             s->offload ? ", OFFLOADED: host memory, not in the sum" : "");
    if (p->master) row("master weights", p->master, note);
    row("Adam moments (m, v)", p->moments, note);
    snprintf(note, sizeof note, "%.0f bytes/token, B*T = %d x %d", p->act_bytes_per_token, s->B,
             s->T);
    row("activations (saved)", p->acts + p->moe_acts + p->io, note);
    row("  of which attention state", p->attention,
        p->attention_fused ? "log-sum-exps (B, NH, T) of the fused kernel"
                           : "probabilities (B, NH, T, T)");
    if (p->moe_acts) row("  of which MoE FFN", p->moe_acts, "");
    row("backward scratch", p->bwd_scratch, "input gradients, attention's datt");
    row("LM head scratch", p->lmhead_scratch,
        s->cuda ? "cuda.lmhead_chunk_rows x vocab" : "256 rows x vocab");
    if (stage < 2)
        row("communication buckets", 0, "none: gradient sums run in place in the gradient buffer");
    if (s->cuda) {
        row("cuBLASLt workspace", p->cuda_workspace, "");
        if (p->cuda_scratch)
            row("kernel scratch (at least)", p->cuda_scratch, "the bf16 upload/download staging");
        row("CUDA context allowance", p->context,
            "ASSUMPTION: context, NCCL buffers, kernel scratch");
    }
    row("= steady state (training step)", p->steady, "");
    char peak[96];
    snprintf(peak, sizeof peak, "%zu bytes %s", p->peak,
             s->cuda ? "per GPU" : "per process (cpu backend memory)");
    row("= peak", p->peak, peak);
}

int cmd_plan(int argc, char **argv) {
    char **ovr = calloc(argc, sizeof *ovr);
    int n_ovr = 0, n_pos = 0;
    const char *pos[1];
    CliOpt opts[] = {
        {"--world", 1, 0, 0}, {"--gpu-mem", 1, 0, 0}, {"--host-mem", 1, 0, 0}, {NULL, 0, 0, 0}};
    CliSpec spec = {"plan", USAGE, opts, 1, ovr, &n_ovr};
    if (!ovr) return cli_fail(&spec, "out of memory");
    int st = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (st == CLI_OK && n_pos == 0) st = cli_usage(&spec);
    uint64_t world = 1;
    if (st == CLI_OK) st = cli_u64(&spec, cli_opt(&spec, "--world"), 1, 65536, &world);
    double gpu_gib = 80.0, host_gib = 0.0;
    const char *g = cli_opt(&spec, "--gpu-mem")->value, *h = cli_opt(&spec, "--host-mem")->value;
    char *end;
    if (st == CLI_OK && g && (gpu_gib = strtod(g, &end), *end || !(gpu_gib > 0)))
        st = cli_usage_error(&spec, "--gpu-mem %s: expected GiB > 0", g);
    if (st == CLI_OK && h && (host_gib = strtod(h, &end), *end || !(host_gib >= 0)))
        st = cli_usage_error(&spec, "--host-mem %s: expected GiB >= 0", h);
    if (st != CLI_OK) {
        free(ovr);
        return st == CLI_HELP ? 0 : st;
    }
    Config cfg;
    ModelConfig mc;
    char err[4096] = "";
    int rc = config_from_args(&cfg, pos[0], n_ovr, ovr, err, sizeof err) ||
             model_shape(&cfg, &mc, err, sizeof err);
    free(ovr);
    if (rc) {
        cli_fail(&spec, "%s", err);
        config_free(&cfg);
        return 1;
    }
    const char *dev = cfg.run.device;
    PlanSetup s = {.act_bytes = strcmp(dev, "cuda") ? 4 : 2,
                   .cuda = strcmp(dev, "cpu") != 0,
                   .flash_attention = cfg.cuda.flash_attention,
                   .lmhead_chunk_rows = cfg.cuda.lmhead_chunk_rows,
                   .B = cfg.train.micro_batch,
                   .T = cfg.data.seq_len,
                   .zero_world = cfg.dist.zero ? (int)world : 0,
                   .zero_stage = cfg.dist.zero,
                   .recompute = !strcmp(cfg.train.recompute, "block"),
                   .offload = cfg.train.offload_optimizer,
                   .context_bytes = CONTEXT_BYTES};
    size_t budget = (size_t)(gpu_gib * GIB);
    Plan p;
    plan_compute(&mc, &s, &p);
    int per_rank = cfg.train.global_batch / (int)world;
    printf("model: %s, %d layers, d_model %d, %d/%d heads, d_ff %d, vocab %d",
           model_arch_name(mc.arch), mc.n_layer, mc.d_model, mc.n_head, mc.n_kv_head, mc.d_ff,
           mc.vocab_size);
    if (mc.n_experts) printf(", %d experts (top %d)", mc.n_experts, mc.top_k);
    printf("\n       %.3f B parameters\n", p.n_params / 1e9);
    printf("run:   run.device = \"%s\", world %d, dist.zero = %d, train.recompute = \"%s\", "
           "micro_batch %d x seq_len %d, global_batch %d (%d micro-batches a step per rank)\n\n",
           dev, (int)world, cfg.dist.zero, s.recompute ? "block" : "none", s.B, s.T,
           cfg.train.global_batch, s.B ? per_rank / s.B : 0);
    printf("per %s:\n", s.cuda ? "GPU" : "process");
    print_plan(&p, &s, &mc);
    size_t host_rank = p.host + (s.cuda ? 0 : p.peak);
    int ranks_host = (int)world < GPUS_PER_HOST ? (int)world : GPUS_PER_HOST;
    printf("\nper host (ASSUMPTION: %d rank%s a host):\n", ranks_host, ranks_host > 1 ? "s" : "");
    row("host buffers a rank", p.host,
        s.offload ? "the largest tensor (init, upcycle) or a 4 MiB chunk (loads, checkpoints), "
                    "the offloaded state"
                  : "the largest tensor (init, upcycle) or a 4 MiB chunk (loads, checkpoints)");
    row("= per host", host_rank * ranks_host,
        s.cuda ? "" : "CPU backend: its memory is host memory");

    printf("\nfit in --gpu-mem %.1f GiB: %s (peak %.1f GiB)\n", gpu_gib,
           p.peak <= budget ? "yes" : "NO", p.peak / GIB);
    if (host_gib > 0)
        printf("fit in --host-mem %.1f GiB: %s\n", host_gib,
               host_rank * ranks_host <= (size_t)(host_gib * GIB) ? "yes" : "NO");
    int maxB = plan_max_micro_batch(&mc, &s, budget, MAX_MICRO);
    printf("largest micro_batch that fits: %d%s\n", maxB, maxB ? "" : " (not even one sequence)");
    if (cfg.moe.upcycle_from[0] && cfg.dist.zero)
        printf("(model.upcycle_from: the upcycled model is built whole on every rank before it "
               "is moved into the shard: %.1f GiB more at start-up, not in the peak above)\n",
               (double)p.n_params * (2 * s.act_bytes + 8 + (s.act_bytes == 2 ? 4 : 0)) / GIB);
    printf("\nexisting settings that would fit:\n");
    int any = 0;
    if (p.peak > budget && maxB > 0) {
        int b = maxB;
        while (b > 1 && per_rank % b)
            b--;
        printf("  train.micro_batch = %d with gradient accumulation (%d micro-batches a step)\n", b,
               per_rank / b);
        any = 1;
    }
    /* a higher ZeRO stage over --world, then each stage over more ranks:
     * the fewest (powers of 2) at this micro-batch, else at one sequence */
    for (int z = cfg.dist.zero + 1; z <= 3 && world > 1 && p.peak > budget; z++) {
        PlanSetup t = s;
        t.zero_world = (int)world, t.zero_stage = z;
        Plan q;
        plan_compute(&mc, &t, &q);
        if (q.peak > budget) continue;
        printf("  dist.zero = %d over --world %d: peak %.1f GiB\n", z, (int)world, q.peak / GIB);
        any = 1;
        break;
    }
    for (int z = 1; z <= 3 && !any && p.peak > budget; z++)
        for (int pass = 0; pass < 2 && !any; pass++)
            for (int w = 2; w <= 65536 && !any; w *= 2) {
                PlanSetup t = s;
                t.zero_world = w, t.zero_stage = z;
                if (pass) t.B = 1;
                Plan q;
                plan_compute(&mc, &t, &q);
                if (q.peak > budget) continue;
                printf("  dist.zero = %d over %d ranks at train.micro_batch = %d: peak %.1f GiB\n",
                       z, w, t.B, q.peak / GIB);
                any = 1;
            }
    if (s.cuda && s.lmhead_chunk_rows > 256) {
        PlanSetup l = s;
        l.lmhead_chunk_rows = 256;
        Plan q;
        plan_compute(&mc, &l, &q);
        printf("  cuda.lmhead_chunk_rows = 256: saves %.2f GiB (scratch %.2f GiB)\n",
               (p.lmhead_scratch - q.lmhead_scratch) / GIB, q.lmhead_scratch / GIB);
    }
    if (!s.recompute) {
        PlanSetup r = s;
        r.recompute = 1;
        Plan q;
        plan_compute(&mc, &r, &q);
        printf("  train.recompute = \"block\": peak %.1f GiB (activations %.2f GiB; about one "
               "more forward a step)\n",
               q.peak / GIB, (q.acts + q.moe_acts) / GIB);
    }
    if (!s.offload) {
        PlanSetup r = s;
        r.offload = 1;
        Plan q, q2;
        plan_compute(&mc, &r, &q);
        r.recompute = 1;
        plan_compute(&mc, &r, &q2);
        printf("  train.offload_optimizer = true: peak %.1f GiB (%.1f GiB more host memory a "
               "rank)%s",
               q.peak / GIB, q.offloaded / GIB, s.recompute ? "\n" : "");
        if (!s.recompute) printf("; with train.recompute = \"block\": %.1f GiB\n", q2.peak / GIB);
    }
    if (p.peak <= budget)
        printf("  (it fits as it is)\n");
    else if (!any)
        printf("  none of micro_batch, dist.zero 1-3 (up to 65536 ranks) fit\n");

    config_free(&cfg);
    return 0;
}
