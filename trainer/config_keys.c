/* config_keys.c: the table of every config key (type, default, range, doc)
 * and the typing of parsed values (trainer/toml.h) into a Config: type,
 * choices and range checks with a message that says what was expected.
 */
#include "trainer/config_keys.h"
#include "kernels/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(field) offsetof(Config, field)
#define SZ(field) sizeof(((Config *)0)->field)
#define BIG 1e9

/* clang-format off */
const KeyDef config_keys[] = {
    {"run", "name", K_STR, F(run.name), SZ(run.name), 1, 0, 0, 0, NULL, "\"dapt\"",
     "run name: letters, digits, '.', '_', '-' (the run directory is out_dir/name)"},
    {"run", "out_dir", K_STR, F(run.out_dir), SZ(run.out_dir), 1, 0, 0, 0, NULL, "\"runs\"",
     "directory that holds run directories"},
    {"run", "seed", K_INT64, F(run.seed), 0, 0, 1e18, 0, 0, NULL, "1",
     "seed of weight initialisation and data order"},
    {"run", "device", K_STR, F(run.device), SZ(run.device), 1, 0, 0, 0, "cpu|cuda|cuda-fp32",
     "\"cpu\"", "compute backend (cuda: bf16 with fp32 master weights; cuda-fp32: fp32 "
     "throughout, for parity checks)"},
    {"model", "init_from", K_STR, F(model.init_from), SZ(model.init_from), 0, 0, 0, 0, NULL, "\"\"",
     "\"\" trains from scratch; else an HF model directory or a dapt checkpoint (its config.json "
     "gives the model's shape, so the shape keys below must not be set)"},
    {"model", "init_optimizer", K_BOOL, F(model.init_optimizer), 0, 0, 0, 0, 0, NULL, "false",
     "with init_from a dapt checkpoint: continue its run: take its Adam moments and step count "
     "too (docs/train.md, \"Continuing a run\"); false: fresh moments"},
    {"model", "arch", K_STR, F(model.arch), SZ(model.arch), 1, 0, 0, 0, "gpt2|llama", "\"llama\"",
     "architecture"},
    {"model", "n_layer", K_INT, F(model.n_layer), 0, 1, 1024, 0, 0, NULL, "12", "transformer blocks"},
    {"model", "n_head", K_INT, F(model.n_head), 0, 1, 1024, 0, 0, NULL, "12", "query heads"},
    {"model", "n_kv_head", K_INT, F(model.n_kv_head), 0, 0, 1024, 0, 0, NULL, "0",
     "key/value heads (grouped-query attention); 0 = n_head"},
    {"model", "d_model", K_INT, F(model.d_model), 0, 1, 65536, 0, 0, NULL, "768", "residual width"},
    {"model", "d_ff", K_INT, F(model.d_ff), 0, 1, 1048576, 0, 0, NULL, "2048", "MLP hidden width"},
    {"model", "vocab_size", K_INT, F(model.vocab_size), 0, 1, 16777216, 0, 0, NULL, "32000",
     "vocabulary size"},
    {"model", "max_seq_len", K_INT, F(model.max_seq_len), 0, 1, 1048576, 0, 0, NULL, "1024",
     "longest sequence (gpt2: learned positions)"},
    {"model", "rope_theta", K_FLOAT, F(model.rope_theta), 0, 0, 1e9, 1, 0, NULL, "10000.0",
     "RoPE base (llama)"},
    {"model", "norm_eps", K_FLOAT, F(model.norm_eps), 0, 0, 0.1, 1, 0, NULL, "1e-05",
     "epsilon of LayerNorm / RMSNorm"},
    {"model", "tie_embeddings", K_BOOL, F(model.tie_embeddings), 0, 0, 0, 0, 0, NULL, "false",
     "LM head shares the token embedding"},
    {"model", "qkv_bias", K_BOOL, F(model.qkv_bias), 0, 0, 0, 0, 0, NULL, "false",
     "llama: biases on q, k, v (Qwen2)"},
    {"model", "head_dim", K_INT, F(model.head_dim), 0, 0, 65536, 0, 0, NULL, "0",
     "llama: size of a head; 0 = d_model / n_head (Qwen3 sets it apart)"},
    {"model", "qk_norm", K_BOOL, F(model.qk_norm), 0, 0, 0, 0, 0, NULL, "false",
     "llama: RMSNorm on every q and k head before RoPE (Qwen3)"},
    {"model", "rope_scaling", K_STR, F(model.rope_scaling), SZ(model.rope_scaling), 1, 0, 0, 0,
     "none|linear|llama3", "\"none\"",
     "llama: RoPE frequency scaling (Hugging Face rope_type; linear: frequencies / rope_factor)"},
    {"model", "rope_factor", K_FLOAT, F(model.rope_factor), 0, 0, 1e6, 1, 0, NULL, "8.0",
     "linear, llama3: the scaling factor"},
    {"model", "rope_low_freq_factor", K_FLOAT, F(model.rope_low_freq_factor), 0, 0, 1e6, 1, 0,
     NULL, "1.0", "llama3: low_freq_factor"},
    {"model", "rope_high_freq_factor", K_FLOAT, F(model.rope_high_freq_factor), 0, 0, 1e6, 1, 0,
     NULL, "4.0", "llama3: high_freq_factor (> rope_low_freq_factor)"},
    {"model", "rope_original_max_seq_len", K_INT, F(model.rope_original_max_seq_len), 0, 1,
     1073741824, 0, 0, NULL, "8192", "llama3: original_max_position_embeddings"},
    {"data", "seq_len", K_INT, F(data.seq_len), 0, 1, 1048576, 0, 0, NULL, "1024",
     "tokens per training sequence (<= model.max_seq_len)"},
    {"data", "domain", K_GLOBS, F(data.domain), 0, 0, 0, 0, 0, NULL, "[]",
     "globs of the domain corpus' .tok.zst shards"},
    {"data", "general", K_GLOBS, F(data.general), 0, 0, 0, 0, 0, NULL, "[]",
     "globs of the general corpus' shards"},
    {"data", "val_domain", K_GLOBS, F(data.val_domain), 0, 0, 0, 0, 0, NULL, "[]",
     "globs of held-out domain shards"},
    {"data", "val_general", K_GLOBS, F(data.val_general), 0, 0, 0, 0, 0, NULL, "[]",
     "globs of held-out general shards"},
    {"data", "tokenizer", K_STR, F(data.tokenizer), SZ(data.tokenizer), 0, 0, 0, 0, NULL, "\"\"",
     "tokenizer the shards were made with (an HF model directory, a tokenizer.json or a "
     "sentencepiece .model): checked against the shards' tokenizer hash, and its files copied "
     "into every checkpoint (\"\": init_from's tokenizer.json or tokenizer.model, if any)"},
    {"data", "doc_mask", K_BOOL, F(data.doc_mask), 0, 0, 0, 0, 0, NULL, "false",
     "a token attends only to its own document within a packed window (documents end at the "
     "shards' EOS); the CPU backend has it, CUDA not yet"},
    {"data", "reset_positions", K_BOOL, F(data.reset_positions), 0, 0, 0, 0, 0, NULL, "false",
     "with doc_mask: RoPE positions count from each document's start (llama-family models)"},
    {"mix", "domain_frac", K_FLOAT, F(mix.domain_frac), 0, 0, 1, 0, 0, NULL, "0.3",
     "constant fraction of domain samples (not with schedule)"},
    {"mix", "schedule", K_POINTS, F(mix.schedule), 0, 0, 1, 0, 0, NULL, "[]",
     "[[progress, frac], ...]: piecewise-linear domain fraction over training progress; "
     "progress non-decreasing in [0, 1] (two equal progresses make a step), frac in [0, 1]"},
    {"mix", "upsample_start", K_FLOAT, F(mix.upsample_start), 0, 0, 1, 0, 0, NULL, "1.0",
     "progress at which the domain fraction steps up to upsample_domain_frac (with domain_frac)"},
    {"mix", "upsample_domain_frac", K_FLOAT, F(mix.upsample_domain_frac), 0, 0, 1, 0, 0, NULL,
     "0.0", "domain fraction from upsample_start to the end"},
    {"train", "micro_batch", K_INT, F(train.micro_batch), 0, 1, 65536, 0, 0, NULL, "8",
     "sequences per forward/backward pass"},
    {"train", "global_batch", K_INT, F(train.global_batch), 0, 1, 16777216, 0, 0, NULL, "64",
     "sequences per optimizer step (a multiple of micro_batch)"},
    {"train", "steps", K_INT, F(train.steps), 0, 1, BIG, 0, 0, NULL, "1000", "optimizer steps"},
    {"train", "lr", K_FLOAT, F(train.lr), 0, 0, 10, 1, 0, NULL, "0.0003", "peak learning rate"},
    {"train", "min_lr", K_FLOAT, F(train.min_lr), 0, 0, 10, 0, 0, NULL, "3e-05",
     "final learning rate (<= lr)"},
    {"train", "warmup_steps", K_INT, F(train.warmup_steps), 0, 0, BIG, 0, 0, NULL, "100",
     "linear warmup steps (<= steps)"},
    {"train", "lr_schedule", K_STR, F(train.lr_schedule), SZ(train.lr_schedule), 1, 0, 0, 0,
     "cosine|linear|wsd", "\"cosine\"", "decay after warmup"},
    {"train", "decay_frac", K_FLOAT, F(train.decay_frac), 0, 0, 1, 0, 0, NULL, "0.2",
     "wsd: fraction of the steps spent decaying"},
    {"train", "weight_decay", K_FLOAT, F(train.weight_decay), 0, 0, 10, 0, 0, NULL, "0.1",
     "AdamW decoupled weight decay (matrices and embeddings)"},
    {"train", "grad_clip", K_FLOAT, F(train.grad_clip), 0, 0, 1e6, 0, 0, NULL, "1.0",
     "global gradient-norm clip; 0 = none"},
    {"train", "beta1", K_FLOAT, F(train.beta1), 0, 0, 1, 0, 1, NULL, "0.9", "Adam beta1"},
    {"train", "beta2", K_FLOAT, F(train.beta2), 0, 0, 1, 0, 1, NULL, "0.95", "Adam beta2"},
    {"train", "eps", K_FLOAT, F(train.eps), 0, 0, 1, 1, 0, NULL, "1e-08", "Adam epsilon"},
    {"train", "on_nonfinite", K_STR, F(train.on_nonfinite), SZ(train.on_nonfinite), 1, 0, 0, 0,
     "skip|stop", "\"stop\"", "a NaN/Inf loss or gradient: skip the step, or stop the run"},
    {"train", "recompute", K_STR, F(train.recompute), SZ(train.recompute), 1, 0, 0, 0,
     "none|block", "\"none\"",
     "activation recomputation: block keeps each block's input and reruns the block's forward "
     "before its backward (bitwise the same gradients; about one more forward per step)"},
    {"train", "offload_optimizer", K_BOOL, F(train.offload_optimizer), 0, 0, 0, 0, 0, NULL,
     "false",
     "keep the fp32 master weights and Adam moments (of this rank's ZeRO shard) in host memory "
     "(pinned on CUDA) and run AdamW on the CPU: 12 bytes a parameter off the GPU on the bf16 "
     "table, for a gradient download and a parameter upload each step"},
    {"eval", "every", K_INT, F(eval.every), 0, 0, BIG, 0, 0, NULL, "100",
     "steps between evaluations; 0 = never"},
    {"eval", "batches", K_INT, F(eval.batches), 0, 1, 1e6, 0, 0, NULL, "20",
     "batches of each held-out source per evaluation"},
    {"eval", "tasks", K_GLOBS, F(eval.tasks), 0, 0, 0, 0, 0, NULL, "[]",
     "globs of `dapt eval` task files (docs/eval.md) scored at each checkpoint: \"task\" records "
     "in metrics.jsonl"},
    {"eval", "shots", K_INT, F(eval.shots), 0, 0, 1000, 0, 0, NULL, "0",
     "few-shot examples before each multiple_choice item of eval.tasks"},
    {"eval", "command", K_STR, F(eval.command), SZ(eval.command), 0, 0, 0, 0, NULL, "\"\"",
     "a shell command run in the background after each checkpoint on rank 0, {ckpt} replaced by "
     "the checkpoint directory: \"hook\" records of its exit status and the JSON object of its "
     "last output line (docs/train.md); \"\" = none"},
    {"eval", "command_wait_s", K_INT, F(eval.command_wait_s), 0, 0, 1e6, 0, 0, NULL, "600",
     "at the end of training, seconds to wait for eval.command runs still going (then they are "
     "killed and reported)"},
    {"ckpt", "every", K_INT, F(ckpt.every), 0, 0, BIG, 0, 0, NULL, "1000",
     "steps between checkpoints; 0 = no periodic checkpoints"},
    {"ckpt", "keep", K_INT, F(ckpt.keep), 0, 0, 1e6, 0, 0, NULL, "3",
     "newest checkpoints of this run kept (another run id's are never deleted); 0 = all"},
    {"log", "tensorboard", K_BOOL, F(log.tensorboard), 0, 0, 0, 0, 0, NULL, "false",
     "also write every number of metrics.jsonl as TensorBoard events under RUN/tb (rank 0; "
     "docs/train.md \"TensorBoard\")"},
    {"model", "upcycle_from", K_STR, F(moe.upcycle_from), SZ(moe.upcycle_from), 0, 0, 0, 0, NULL,
     "\"\"", "\"\" or a dense llama checkpoint / HF directory: build an MoE ([moe]) whose experts "
     "start as copies of its FFNs and whose routers are new (not with init_from)"},
    {"model", "upcycle_noise", K_FLOAT, F(moe.upcycle_noise), 0, 0, 1, 0, 0, NULL, "0.0",
     "upcycling: std of Gaussian noise added to every expert copy"},
    {"moe", "n_experts", K_INT, F(moe.n_experts), 0, 0, 65536, 0, 0, NULL, "0",
     "experts per MoE layer (llama only); 0 = dense, else >= 2"},
    {"moe", "top_k", K_INT, F(moe.top_k), 0, 1, 65536, 0, 0, NULL, "2",
     "experts per token (<= n_experts)"},
    {"moe", "layer_start", K_INT, F(moe.layer_start), 0, 0, 1024, 0, 0, NULL, "0",
     "first MoE layer"},
    {"moe", "layer_step", K_INT, F(moe.layer_step), 0, 1, 1024, 0, 0, NULL, "1",
     "every layer_step-th layer from layer_start is MoE (1 = all, as Mixtral)"},
    {"moe", "norm_topk_prob", K_BOOL, F(moe.norm_topk_prob), 0, 0, 0, 0, 0, NULL, "true",
     "renormalise the top-k routing weights to sum 1 (Mixtral); false = Qwen-MoE"},
    {"moe", "lbl", K_STR, F(moe.lbl), SZ(moe.lbl), 1, 0, 0, 0, "global|micro|none", "\"global\"",
     "load-balancing loss: expert counts of the global batch (all ranks and micro-batches of "
     "the step, Qiu et al. 2025), of each micro-batch, or none"},
    {"moe", "lbl_norm", K_STR, F(moe.lbl_norm), SZ(moe.lbl_norm), 1, 0, 0, 0, "paper|hf",
     "\"paper\"", "LBL normalisation: paper (balanced minimum 1) or hf (top_k times larger)"},
    {"moe", "lbl_coef", K_FLOAT, F(moe.lbl_coef), 0, 0, 1e3, 0, 0, NULL, "0.008",
     "weight of the load-balancing loss, summed over MoE layers"},
    {"moe", "z_loss_coef", K_FLOAT, F(moe.z_loss_coef), 0, 0, 1e3, 0, 0, NULL, "0.0",
     "weight of the router z-loss, summed over MoE layers; 0 = off"},
    {"dist", "zero", K_INT, F(dist.zero), 0, 0, 3, 0, 0, NULL, "0",
     "ZeRO stage: 0 = every rank keeps the whole AdamW state; 1 = each rank keeps and updates "
     "1/world of it (gradients reduce-scattered, parameters all-gathered); 2 = also 1/world of "
     "the gradients (reduce-scattered block by block during the backward); 3 = also 1/world of "
     "the parameters (each block all-gathered before its forward and again before its "
     "backward)"},
    {"dist", "backend", K_STR, F(dist.backend), SZ(dist.backend), 1, 0, 0, 0, "auto|nccl",
     "\"auto\"", "collectives on gradients and parameters: auto = NCCL when run.device = cuda "
     "and the job has more than one rank, else MPI on host buffers; nccl = NCCL even for one "
     "rank (needs run.device = cuda; the one-GPU check of the NCCL path)"},
    {"dist", "timeout", K_FLOAT, F(dist.timeout), 0, 1, 1e6, 0, 0, NULL, "600.0",
     "seconds a NCCL collective may take before the job is aborted (a dead or stuck peer)"},
    {"dist", "bucket_mb", K_FLOAT, F(dist.bucket_mb), 0, 0, 1e5, 0, 0, NULL, "0.0",
     "NCCL only: 0 = gradients summed after the last micro-batch's backward; > 0 = summed "
     "during it, in buckets of about this many MiB, beside the backward's kernels, and with "
     "dist.zero = 1 the parameters gathered in such chunks during the next forward (the MPI "
     "backend ignores it)"},
    {"dist", "nccl_grouped", K_BOOL, F(dist.nccl_grouped), 0, 0, 0, 0, 0, NULL, "false",
     "NCCL only: reduce-scatter and all-gather always as one ncclReduce / ncclBroadcast per "
     "rank's piece in one NCCL group (the path pieces of unequal length take anyway), also "
     "when the pieces are equal; the same bits, for checking that path on one GPU"},
    {"cuda", "flash_attention", K_BOOL, F(cuda.flash_attention), 0, 0, 0, 0, 0, NULL, "true",
     "fused flash-style attention on run.device = \"cuda\" for head dims 64 and 128 (other "
     "head dims and cuda-fp32 always take the GEMM + softmax path); false = the GEMM path, for "
     "A/B runs"},
    {"cuda", "flash_heads_per_block", K_INT, F(cuda.flash_heads_per_block), 0, 0, 1024, 0, 0,
     NULL, "0",
     "query heads of a GQA group one dK/dV block of the fused attention's backward owns: 0 = "
     "chosen from the shape and the card's SM count; else a divisor of n_head / n_kv_head. "
     "The same bits whatever the choice"},
    {"cuda", "fused_norm", K_BOOL, F(cuda.fused_norm), 0, 0, 0, 0, 0, NULL, "true",
     "residual add fused with the next norm's forward (bitwise the two ops); false = the two "
     "ops, for A/B runs"},
    {"cuda", "moe_grouped_gemm", K_BOOL, F(cuda.moe_grouped_gemm), 0, 0, 0, 0, 0, NULL, "false",
     "MoE experts' GEMMs as one cuBLAS grouped GEMM per op (libcublas loaded at start; without "
     "it a warning and the per-expert GEMMs); false = one cuBLASLt GEMM per expert (faster on "
     "the benchmark's MoE)"},
    {"cuda", "lmhead_chunk_rows", K_INT, F(cuda.lmhead_chunk_rows), 0, 1, 1048576, 0, 0, NULL,
     "1024",
     "rows of logits (tokens) the fused LM head + cross-entropy computes at once; scratch is "
     "rows x vocab x 6 bytes on cuda (4 on cuda-fp32)"},
    {"cuda", "sync_debug", K_BOOL, F(cuda.sync_debug), 0, 0, 0, 0, 0, NULL, "false",
     "synchronise after every kernel, so an asynchronous fault is reported at the launch that "
     "caused it (slow: for debugging and tools/gpu-check's op tests)"},
};
/* clang-format on */
const int config_num_keys = (int)(sizeof config_keys / sizeof *config_keys);
const char *const config_sections[] = {"run",  "model", "data", "mix",  "train",
                                       "eval", "ckpt",  "log",  "moe",  "dist", "cuda"};
const int config_num_sections = 11;

#define FS(field) offsetof(ConfigSource, field)
#define SZS(field) sizeof(((ConfigSource *)0)->field)
/* clang-format off */
const KeyDef source_keys[] = {
    {"data.sources", "name", K_STR, FS(name), SZS(name), 1, 0, 0, 0, NULL, NULL,
     "the source's name (letters, digits, '.', '_', '-'; not \"domain\" or \"general\"): "
     "its key in metrics.jsonl's samples and loss_by_source, its eval split val/NAME"},
    {"data.sources", "role", K_STR, FS(role), SZS(role), 1, 0, 0, 0, "domain|general", NULL,
     "which share of the mixture schedule the source draws from"},
    {"data.sources", "train", K_GLOBS, FS(train), 0, 0, 0, 0, 0, NULL, NULL,
     "globs of its .tok.zst train shards (at least one shard)"},
    {"data.sources", "val", K_GLOBS, FS(val), 0, 0, 0, 0, 0, NULL, "[]",
     "globs of its held-out shards ([]: no eval split for it)"},
    {"data.sources", "weight", K_FLOAT, FS(weight), 0, 0, 1e12, 1, 0, NULL, "1.0",
     "its share within its role: weight / (sum of the role's weights)"},
};
/* clang-format on */
const int source_num_keys = (int)(sizeof source_keys / sizeof *source_keys);

/* ---------------- typing and ranges ---------------- */

static const char *type_name(KeyType t) {
    switch (t) {
    case K_STR: return "a string";
    case K_INT:
    case K_INT64: return "an integer";
    case K_FLOAT: return "a number";
    case K_BOOL: return "true or false";
    case K_GLOBS: return "an array of strings";
    case K_POINTS: return "an array of [progress, fraction] pairs";
    }
    return "?";
}

void key_expectation(const KeyDef *k, char *buf, size_t n) {
    if (k->type == K_STR && k->choices) {
        snprintf(buf, n, "one of \"%s\"", k->choices);
        for (char *p = buf; *p; p++)
            if (*p == '|') *p = '/';
    } else if (k->type == K_INT || k->type == K_INT64 || k->type == K_FLOAT) {
        snprintf(buf, n, "%s in %c%.10g, %.10g%c", type_name(k->type), k->lo_open ? '(' : '[',
                 k->lo, k->hi, k->hi_open ? ')' : ']');
    } else if (k->type == K_STR && k->lo > 0) {
        snprintf(buf, n, "a non-empty string");
    } else {
        snprintf(buf, n, "%s", type_name(k->type));
    }
}

static int in_range(const KeyDef *k, double x) {
    return (k->lo_open ? x > k->lo : x >= k->lo) && (k->hi_open ? x < k->hi : x <= k->hi);
}

static int want(const KeyDef *k, const char *got, char *err, size_t err_len) {
    char exp[160];
    key_expectation(k, exp, sizeof exp);
    err_set(err, err_len, "expected %s, got %s", exp, got);
    return 1;
}

static int assign_list(void *c, const KeyDef *k, const Value *v, char *err, size_t err_len) {
    if (v->type != V_ARRAY) return want(k, value_type_name(v), err, err_len);
    for (int i = 0; i < v->n; i++)
        if (v->items[i].type != V_STR || !v->items[i].s[0])
            return err_set(err, err_len, "expected an array of non-empty strings, item %d is %s", i,
                           v->items[i].type == V_STR ? "empty" : value_type_name(&v->items[i]));
    ConfigList *l = (ConfigList *)((char *)c + k->off), nl = {NULL, 0};
    nl.items = calloc((size_t)v->n + 1, sizeof *nl.items);
    if (!nl.items) return err_set(err, err_len, "out of memory");
    for (; nl.n < v->n; nl.n++)
        if (!(nl.items[nl.n] = strdup(v->items[nl.n].s))) {
            for (int i = 0; i < nl.n; i++) free(nl.items[i]);
            free(nl.items);
            return err_set(err, err_len, "out of memory");
        }
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    *l = nl;
    return 0;
}

static int assign_points(Config *c, const KeyDef *k, const Value *v, char *err, size_t err_len) {
    if (v->type != V_ARRAY) return want(k, value_type_name(v), err, err_len);
    if (v->n > CONFIG_MAX_MIX_POINTS)
        return err_set(err, err_len, "at most %d points (got %d)", CONFIG_MAX_MIX_POINTS, v->n);
    MixPoint pts[CONFIG_MAX_MIX_POINTS];
    for (int i = 0; i < v->n; i++) {
        const Value *p = &v->items[i];
        if (p->type != V_ARRAY || p->n != 2 || value_number(&p->items[0], &pts[i].progress) ||
            value_number(&p->items[1], &pts[i].fraction))
            return err_set(err, err_len, "point %d: expected [progress, fraction] (two numbers)",
                           i);
        if (!(pts[i].progress >= 0 && pts[i].progress <= 1) || !(pts[i].fraction >= 0 && pts[i].fraction <= 1))
            return err_set(err, err_len,
                           "point %d: [%g, %g]: progress and fraction must be in [0, 1]", i,
                           pts[i].progress, pts[i].fraction);
        if (i && pts[i].progress < pts[i - 1].progress)
            return err_set(err, err_len,
                           "point %d: progress %g comes before point %d's %g "
                           "(points must be sorted by progress)",
                           i, pts[i].progress, i - 1, pts[i - 1].progress);
    }
    (void)k;
    memcpy(c->mix.schedule, pts, (size_t)v->n * sizeof *pts);
    c->mix.n_schedule = v->n;
    return 0;
}

int key_assign(void *base, const KeyDef *k, const Value *v, char *err, size_t err_len) {
    void *dst = (char *)base + k->off;
    double x;
    switch (k->type) {
    case K_STR: {
        if (v->type != V_STR) return want(k, value_type_name(v), err, err_len);
        size_t len = strlen(v->s);
        if (len + 1 > k->size)
            return err_set(err, err_len, "string of %zu bytes is longer than %zu", len,
                           k->size - 1);
        if (len < (size_t)k->lo) return want(k, "\"\"", err, err_len);
        if (k->choices) {
            int ok = 0;
            for (const char *p = k->choices; *p;) {
                size_t n = strcspn(p, "|");
                if (n == len && !strncmp(p, v->s, n)) ok = 1;
                p += n + (p[n] == '|');
            }
            if (!ok) {
                char got[80];
                snprintf(got, sizeof got, "\"%.60s\"", v->s);
                return want(k, got, err, err_len);
            }
        }
        if (!strcmp(k->key, "name") && strspn(v->s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len)
            return err_set(err, err_len,
                           "expected letters, digits, '.', '_' or '-' only (it names a directory)");
        memcpy(dst, v->s, len + 1);
        return 0;
    }
    case K_INT:
    case K_INT64: {
        char got[64];
        if (v->type != V_INT) return want(k, value_type_name(v), err, err_len);
        if (!in_range(k, (double)v->i)) {
            snprintf(got, sizeof got, "%lld", (long long)v->i);
            return want(k, got, err, err_len);
        }
        if (k->type == K_INT) *(int *)dst = (int)v->i;
        else *(int64_t *)dst = v->i;
        return 0;
    }
    case K_FLOAT: {
        char got[64];
        if (value_number(v, &x)) return want(k, value_type_name(v), err, err_len);
        if (!in_range(k, x)) {
            snprintf(got, sizeof got, "%g", x);
            return want(k, got, err, err_len);
        }
        *(double *)dst = x;
        return 0;
    }
    case K_BOOL:
        if (v->type != V_BOOL) return want(k, value_type_name(v), err, err_len);
        *(int *)dst = v->b;
        return 0;
    case K_GLOBS: return assign_list(base, k, v, err, err_len);
    case K_POINTS: return assign_points(base, k, v, err, err_len);
    }
    return 1;
}
_Static_assert(sizeof source_keys / sizeof *source_keys == CONFIG_SOURCE_KEYS,
               "CONFIG_SOURCE_KEYS must count source_keys");
_Static_assert(sizeof config_sections / sizeof *config_sections <= CONFIG_MAX_SECTIONS,
               "raise CONFIG_MAX_SECTIONS");
_Static_assert(sizeof config_keys / sizeof *config_keys <=
                   sizeof(((Config *)0)->origin) / sizeof(((Config *)0)->origin[0]),
               "raise the size of Config.origin");
