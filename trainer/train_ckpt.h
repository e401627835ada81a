/* train_ckpt.h: the checkpoints `dapt train` writes (trainer/ckpt.h does
 * the files): the whole state from rank 0, or under ZeRO-1 the optimizer
 * state in per-rank shards and the weights streamed to rank 0 chunk by
 * chunk from the ranks that own them. Internal to trainer/train.c. */
#ifndef DAPT_TRAIN_CKPT_H
#define DAPT_TRAIN_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"
#include "trainer/dist.h"
#include "trainer/model.h"

/* What every checkpoint of a run carries besides the model. */
typedef struct {
    const char *run_dir;
    int keep;                /* ckpt.keep */
    uint64_t seed;           /* run.seed */
    uint64_t fingerprint;    /* the data stream's */
    int64_t adam_t0;         /* AdamW steps before this run's step 0 (model.init_optimizer) */
    const char *config_text; /* config_to_toml */
    const char *run_id;      /* RUN/run.json's: keep prunes only this run's checkpoints */
    const Tokenizer *tokenizer; /* its files are copied into checkpoints; NULL: none */
    Dist *d;
    const size_t *pieces; /* ZeRO-1: rank r's optimizer shard length; NULL: whole state */
    size_t max_shard_bytes; /* model.safetensors shards (ckpt.h); 0: HF_SHARD_BYTES */
} TrainCkpt;

/* Writes RUN/ckpt/step-NNNNNNNN (step, tokens, lr: the trainer state after
 * that step). Collective under ZeRO-1 (every rank writes its optimizer
 * shard), else rank 0's alone. Refuses a model with a non-finite tensor.
 * 1 on failure on any rank; the rank that failed prints the cause on
 * stderr at once ("dapt train: ..."), before the collective that tells the
 * others, whose abort may end this process before it returns. */
int train_ckpt_save(const TrainCkpt *k, Model *m, int step, long long tokens, double lr);

/* --resume: the run's resolved config (now, config_to_toml) against the
 * checkpoint's (was, its trainer_state.json "config"), key by key. A key
 * that shapes the model (every [model] key but the initialisation ones
 * init_from, init_optimizer, upcycle_from, upcycle_noise; moe.n_experts,
 * moe.top_k, moe.layer_start, moe.layer_step) that differs refuses: 1, and
 * err names each as "model.KEY OLD -> NEW". Every other key that differs
 * goes into changed the same way ("" when none). Keys only one side has (a
 * config written by another dapt version) are not compared. */
int train_ckpt_compare_config(const char *was, const char *now, char *changed,
                              size_t changed_len, char *err, size_t err_len);

#endif
