/* config.h: dapt's run configuration: a TOML subset (docs/config.md lists
 * every key with its type, default and range).
 *
 * Files are read line by line through libinih (sections, comments, key
 * lines) with dapt's own value parser on top: basic "..." and literal '...'
 * strings, integers, floats, booleans, single-line arrays (nested too), and
 * `#` comments. Everything accepted is valid TOML with the same meaning, so
 * Python's tomllib reads the same files.
 *
 * Invariants: every key has a type, a default and a range; a Config that
 * config_load / config_override accepted holds only in-range values, and
 * config_validate has checked the rules that tie keys together. Errors name
 * the file, line and key and say what was expected; unknown keys and
 * sections are errors with a "did you mean" suggestion. The resolved config
 * (config_to_toml) parses back to the same values.
 */
#ifndef DAPT_CONFIG_H
#define DAPT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "data/mix.h" /* MixPoint */
#include "kernels/ops.h" /* OpsOptions */
#include "trainer/model.h"
#include "trainer/sched.h"

#define CONFIG_MAX_MIX_POINTS 32
#define CONFIG_MAX_SECTIONS 16 /* >= config_num_sections */
#define CONFIG_PATH_LEN 1024

typedef struct {
    char **items; /* malloc'd strings */
    int n;
} ConfigList;

#define CONFIG_MAX_SOURCES 32
#define CONFIG_SOURCE_KEYS 5 /* name, role, train, val, weight */

/* One [[data.sources]] table. */
typedef struct {
    char name[64];
    char role[16];         /* "domain" | "general" */
    ConfigList train, val; /* globs */
    double weight;         /* share within its role, > 0 */
    int line;                        /* of its [[data.sources]] header */
    int key_line[CONFIG_SOURCE_KEYS]; /* where each key was set (source_keys order), 0: not */
} ConfigSource;


typedef struct {
    struct {
        char name[128];
        char out_dir[CONFIG_PATH_LEN];
        int64_t seed;
        char device[16]; /* "cpu" | "cuda" | "cuda-fp32" */
    } run;
    struct {
        char init_from[CONFIG_PATH_LEN]; /* "" = from scratch */
        int init_optimizer;              /* init_from's Adam moments and step count too */
        char arch[16];
        int n_layer, n_head, n_kv_head, d_model, d_ff, vocab_size, max_seq_len;
        double rope_theta, norm_eps;
        int tie_embeddings, qkv_bias, head_dim, qk_norm;
        char rope_scaling[8]; /* "none" | "linear" | "llama3" */
        double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
        int rope_original_max_seq_len;
    } model;
    struct {
        int seq_len;
        ConfigList domain, general, val_domain, val_general; /* globs: one source each */
        int n_sources;                                       /* [[data.sources]] tables */
        ConfigSource sources[CONFIG_MAX_SOURCES];
        char tokenizer[CONFIG_PATH_LEN]; /* HF dir, tokenizer.json or .model; "" = init_from's */
        int doc_mask;        /* attend within each document of a window (model_set_doc_mask) */
        int reset_positions; /* with doc_mask: RoPE positions from each document's start */
    } data;
    struct {
        double domain_frac;
        int n_schedule;
        MixPoint schedule[CONFIG_MAX_MIX_POINTS];
        double upsample_start, upsample_domain_frac;
    } mix;
    struct {
        int micro_batch, global_batch, steps, warmup_steps;
        double lr, min_lr, decay_frac, weight_decay, grad_clip, beta1, beta2, eps;
        char lr_schedule[16];
        char on_nonfinite[8]; /* "skip" | "stop" */
        char recompute[8];    /* "none" | "block" (model.h ModelRecompute) */
        int offload_optimizer; /* optimizer state in host memory, AdamW there (model.h ModelShard) */
    } train;
    struct {
        int every, batches;
        ConfigList tasks;   /* task files (globs) scored at each checkpoint (trainer/tasks.h) */
        int shots;          /* few-shot examples of their multiple_choice items */
        char command[CONFIG_PATH_LEN]; /* run after each checkpoint ({ckpt}); "" = none */
        int command_wait_s; /* at the end, how long to wait for running commands */
    } eval;
    struct {
        int every, keep;
    } ckpt;
    struct {
        int tensorboard; /* metrics also as TensorBoard events under RUN/tb (trainer/tb.h) */
    } log;
    struct { /* [moe] (trainer/moe.h), plus [model] upcycle_from / upcycle_noise */
        int n_experts, top_k, layer_start, layer_step, norm_topk_prob;
        char lbl[8];      /* "global" | "micro" | "none" */
        char lbl_norm[8]; /* "paper" | "hf" */
        double lbl_coef, z_loss_coef;
        char upcycle_from[CONFIG_PATH_LEN]; /* "" = no upcycling */
        double upcycle_noise;
    } moe;
    struct {
        int zero; /* ZeRO stage: 0..3 */
        char backend[8]; /* "auto" | "nccl" (device-buffer collectives) */
        double timeout;  /* seconds a NCCL collective may take (watchdog) */
        double bucket_mb; /* > 0: NCCL sums (and ZeRO-1 gathers) overlapped, MiB a bucket */
        int nccl_grouped; /* 1: reduce-scatter / all-gather always as grouped per-owner calls */
    } dist;
    struct { /* [cuda]: the CUDA backend's options (kernels/ops.h OpsOptions) */
        int flash_attention, flash_heads_per_block, fused_norm, moe_grouped_gemm;
        int lmhead_chunk_rows, sync_debug;
    } cuda;

    /* where each key got its value (index = key number): 0 default,
     * > 0 line in `source`, -1 a command-line override */
    int origin[128];
    char source[CONFIG_PATH_LEN];
} Config;

/* All defaults. Pair with config_free. */
void config_init(Config *c);
void config_free(Config *c);
/* Reads a file on top of c (values replace defaults). */
int config_load(Config *c, const char *path, char *err, size_t err_len);
/* The same for text in memory; `name` stands for the file in messages. */
int config_load_string(Config *c, const char *text, const char *name, char *err, size_t err_len);
/* One override "--section.key=value" (the leading "--" is optional). Values
 * follow the file's rules, except that a string key also takes an unquoted
 * value verbatim (--run.name=trial3). */
int config_override(Config *c, const char *arg, char *err, size_t err_len);
/* The cross-key rules (batch divisibility, seq_len <= max_seq_len, mixture
 * schedule, model shape, learning-rate schedule, ...). */
int config_validate(const Config *c, char *err, size_t err_len);
/* init + load (path may be NULL) + overrides + validate, in that order. */
int config_from_args(Config *c, const char *path, int n_overrides, char *const *overrides,
                     char *err, size_t err_len);

/* The resolved config as TOML (malloc'd): every key with its value, the
 * mixture as its explicit schedule; parses back to the same Config values. */
char *config_to_toml(const Config *c);
/* Writes config_to_toml(c) to path (temporary file + fsync + rename). */
int config_write(const Config *c, const char *path, char *err, size_t err_len);

/* The domain fraction schedule as points (constant domain_frac, end-of-
 * training upsampling, or the explicit schedule): returns the count. */
int config_mix_points(const Config *c, MixPoint *pts, int max_pts);
/* [model] -> ModelConfig (only when init_from is ""), checked. */
int config_to_model_config(const Config *c, ModelConfig *m, char *err, size_t err_len);
/* [train] -> LrSchedule, checked. */
int config_to_schedule(const Config *c, LrSchedule *s, char *err, size_t err_len);
/* [moe] -> the MoE fields of m: all of them (n_experts, top_k, layers,
 * norm_topk_prob, lbl, lbl_norm, lbl_coef, z_loss_coef) when the model is
 * built from the config (from scratch or by upcycling); only the training
 * ones (lbl, lbl_norm, lbl_coef, z_loss_coef) when `training_only` (a
 * model from init_from keeps its own experts and routing). Checked. */
int config_apply_moe(const Config *c, ModelConfig *m, int training_only, char *err,
                     size_t err_len);
/* [train] -> AdamWConfig. */
AdamWConfig config_to_adamw(const Config *c);
/* [cuda] -> the options the backend is created with (ops_get). */
OpsOptions config_to_ops_options(const Config *c);
/* Rules between the run config and the model actually loaded (init_from):
 * data.seq_len <= max_seq_len; cuda.flash_heads_per_block (when not 0)
 * divides the model's query heads per kv head (on a CUDA device). */
int config_check_model(const Config *c, const ModelConfig *m, char *err, size_t err_len);

/* Introspection for docs and tests: key i's "section.key", its type name,
 * default (TOML text) and range description; NULL past the last key. */
const char *config_key_name(int i);
const char *config_key_info(int i, const char **type, const char **def, const char **range);

#endif
