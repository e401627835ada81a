/* ckpt.h: training checkpoints.
 *
 * Layout: OUT_DIR/ckpt/step-NNNNNNNN/ (step zero-padded to 8 digits) holds
 *   model.safetensors    parameters, F32, Hugging Face names and layout
 *                        (or shards + model.safetensors.index.json past
 *                        max_shard_bytes)
 *   config.json          Hugging Face config (so the directory loads in
 *                        transformers' from_pretrained and as init_from)
 *   optimizer.safetensors  Adam moments "exp_avg.<name>", "exp_avg_sq.<name>"
 *                        (HF layout, like the weights) and "step" (I32 [1]);
 *                        or, written by a ZeRO-1 run of W ranks, instead
 *   optimizer-RRRRR-of-WWWWW.safetensors  rank R's shard of the moments over
 *                        the flat parameter buffer (dapt's in-memory order):
 *                        "exp_avg", "exp_avg_sq" F32 [count], "step" I32 [1];
 *                        trainer_state.json's "optimizer" lists the files
 *                        with their offsets and counts
 *   trainer_state.json   step, tokens, lr, data fingerprint, rng state,
 *                        resolved config text, run id, and the checksum of
 *                        every other file (read back before the rename)
 *   tokenizer files      optional: every file of the run's tokenizer
 *                        (tokenizer_files: tokenizer.json and/or
 *                        tokenizer.model, tokenizer_config.json,
 *                        special_tokens_map.json), copied under their HF
 *                        names so the checkpoint is a complete HF model
 *                        directory and works as init_from
 *
 * Invariants: a step-* directory is complete or absent: it is written as
 * OUT_DIR/ckpt/.tmp-step-NNNNNNNN, every file and the directory fsynced,
 * then renamed. After a save at most `keep` complete checkpoints of the
 * saving run remain (the newest ones; keep <= 0 keeps all); checkpoints of
 * another run id (or, when saving with a run id, without one) are never
 * deleted. Loading checks that every file is
 * present and that the safetensors files are whole before touching the
 * Model; a damaged checkpoint is refused with the file named.
 */
#ifndef DAPT_CKPT_H
#define DAPT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"
#include "trainer/hf.h"
#include "trainer/model.h"

#define CKPT_RNG_WORDS 4

typedef struct {
    int64_t step;   /* optimizer steps done */
    /* the AdamW step count t (bias correction) after them: step, plus the
     * steps of the run a continued run (model.init_optimizer) started from;
     * save: 0 means step; load: trainer_state.json's "adam_step", or step
     * in a checkpoint written before it existed */
    int64_t adam_step;
    int64_t tokens; /* training tokens consumed */
    double lr;      /* learning rate of the last step */
    char *data_fingerprint; /* the data stream's identity (shards + mixture) */
    uint64_t rng[CKPT_RNG_WORDS];
    char *config_text; /* resolved config (TOML) */
    /* the run that wrote the checkpoint (16 hex digits, RUN/run.json);
     * save: NULL writes none and `keep` prunes every checkpoint; set, keep
     * prunes only checkpoints of this run id. load: NULL when the
     * checkpoint has none (written before run ids existed). */
    char *run_id;
    /* save: the tokenizer whose files are copied into the checkpoint;
     * NULL: none */
    const Tokenizer *tokenizer;
    /* load: the checkpoint's tokenizer (tokenizer_find's path), or NULL */
    char *tokenizer_path;
    /* save: model.safetensors shard size (0 = HF_SHARD_BYTES, 5 GiB) */
    size_t max_shard_bytes;
    /* save: when set, the source of the weights written instead of the
     * model's own (hf_save_weights_from): a ZeRO run gathers each chunk
     * from the ranks that own it (trainer/train_ckpt.c). */
    HfParamSource params_src;
    void *params_ctx;
    /* The optimizer state's layout. save: 0 writes optimizer.safetensors
     * from the model; W > 0 says the state is already in the temporary
     * directory as W per-rank files (ckpt_save_opt_shard), rank r's holding
     * opt_counts[r] elements. load: the checkpoint's W (0: one file). */
    int opt_world;
    const size_t *opt_counts;
} CkptState;

/* Frees the strings a ckpt_load filled in. */
void ckpt_state_free(CkptState *st);

/* Saves m and st as OUT_DIR/ckpt/step-<st->step>, then deletes all but the
 * newest `keep` complete checkpoints. The final path goes to path_out when
 * it is not NULL. Saving over an existing step-N replaces it. */
int ckpt_save(const char *out_dir, const Model *m, const CkptState *st, int keep, char *path_out,
              size_t path_len, char *err, size_t err_len);

/* A ZeRO-1 checkpoint is saved by all ranks together, each writing its own
 * optimizer shard (no rank holds the whole optimizer state):
 *   rank 0       ckpt_save_begin: OUT_DIR/ckpt/.tmp-step-N, created empty
 *                (leftovers of an interrupted save are removed) -> tmp_dir
 *   every rank   ckpt_save_opt_shard(tmp_dir, ...) once rank 0 has begun
 *   rank 0       ckpt_save_commit once every rank has written, with
 *                st->opt_world and st->opt_counts set: the weights, config,
 *                trainer state, then the rename to step-N and `keep`.
 * The ranks must agree on success between the calls (the trainer
 * all-reduces a status); a failed commit removes the temporary directory.
 * Every rank must see OUT_DIR (a shared filesystem across nodes). ckpt_save
 * is begin + commit with optimizer.safetensors. */
int ckpt_save_begin(const char *out_dir, int64_t step, char *tmp_dir, size_t tmp_len, char *err,
                    size_t err_len);
/* File name of rank's shard: optimizer-RRRRR-of-WWWWW.safetensors */
void ckpt_opt_shard_name(char *buf, size_t len, int rank, int world);
int ckpt_save_opt_shard(const char *tmp_dir, int rank, int world, int64_t step, size_t count,
                        const float *adam_m, const float *adam_v, char *err, size_t err_len);
/* Rank 0, when a rank failed between begin and commit: removes tmp_dir
 * (the next ckpt_save_begin would too). */
void ckpt_save_abort(const char *tmp_dir);
int ckpt_save_commit(const char *out_dir, const char *tmp_dir, const Model *m,
                     const CkptState *st, int keep, char *path_out, size_t path_len, char *err,
                     size_t err_len);

/* Every file of a checkpoint directory present and whole (safetensors
 * headers valid, data within the files, JSON parses) and, when
 * trainer_state.json has "checksums" (every file the save wrote, hashed
 * XXH3 64, or data/hash.h's hash_file in older checkpoints), every file
 * matching its checksum; 0 when complete, else err names the file. Reads
 * every byte of the checkpoint. */
int ckpt_check(const char *ckpt_dir, char *err, size_t err_len);
/* ckpt_check, and how many files it verified by checksum (0: a checkpoint
 * written before checksums existed). */
int ckpt_verify(const char *ckpt_dir, int *n_checksummed, char *err, size_t err_len);

/* Loads weights, Adam moments and (when st != NULL) the trainer state into
 * an m whose config matches the checkpoint's config.json. Everything is
 * checked and the moments read before m is touched; the weights then
 * stream in tensor by tensor (hf_load_weights: no whole-model host buffer),
 * so only an I/O error from then on leaves m partly loaded. A model whose
 * optimizer state is sharded (model_shard_optimizer) gets its shard; from
 * per-rank shard files only the overlapping ranges are read, so no rank
 * reads or holds the whole optimizer state (resharding W -> W' ranks). */
int ckpt_load(const char *ckpt_dir, Model *m, CkptState *st, char *err, size_t err_len);
/* ckpt_load of a directory that ckpt_find_latest has just verified: the
 * files are checked whole again, but not read a second time for their
 * checksums (an 8B model's checkpoint is ~100 GB). */
int ckpt_load_found(const char *ckpt_dir, Model *m, CkptState *st, char *err, size_t err_len);

/* Newest complete checkpoint under OUT_DIR/ckpt: 0 and its path, 1 when
 * there is none, -1 on an error (message in err). Damaged step-* directories
 * (ckpt_check: missing or broken files, a checksum that differs) are
 * skipped; on 0 and 1 err then says why the newest skipped one was ("" when
 * none was). */
int ckpt_find_latest(const char *out_dir, char *path, size_t path_len, char *err, size_t err_len);

#endif
