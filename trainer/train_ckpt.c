/* train_ckpt.c: see train_ckpt.h. */
#include "trainer/train_ckpt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/util.h"
#include "trainer/ckpt.h"
#include "trainer/config.h"

static CkptState ckpt_state(const TrainCkpt *k, int step, long long tokens, double lr,
                            const char *fp) {
    return (CkptState){.step = step,
                       .adam_step = step + k->adam_t0,
                       .tokens = tokens,
                       .lr = lr,
                       .data_fingerprint = (char *)fp,
                       .rng = {k->seed, 0, 0, 0},
                       .config_text = (char *)k->config_text,
                       .tokenizer = k->tokenizer};
}

static int save_whole(const TrainCkpt *k, Model *m, int step, long long tokens, double lr) {
    char fp[32], path[CONFIG_PATH_LEN * 3], why[1024];
    const char *bad = model_find_nonfinite(m);
    if (bad)
        return fprintf(stderr, "dapt train: not checkpointing step %d: %s is not finite\n", step,
                       bad),
               1;
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)k->fingerprint);
    CkptState st = ckpt_state(k, step, tokens, lr, fp);
    if (ckpt_save(k->run_dir, m, &st, k->keep, path, sizeof path, why, sizeof why))
        return fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, why), 1;
    printf("checkpoint: %s\n", path);
    return 0;
}

/* 1 when rc is non-zero on any rank: the ranks go on or stop together. */
static int any_rank_failed(Dist *d, int rc) {
    double v = rc != 0;
    char e[256];
    if (dist_allreduce(d, &v, 1, DIST_F64, DIST_MAX, e, sizeof e)) return 1;
    return v > 0;
}

/* A ZeRO-1 checkpoint, written by every rank (trainer/ckpt.h): rank 0
 * creates the temporary directory, each rank writes its own optimizer
 * shard (host memory: its shard of Adam m and v), the fp32 master weights
 * of the shards are gathered to rank 0 alone (the whole weights there, the
 * shard elsewhere), and rank 0 writes weights, config and trainer state and
 * renames. No rank ever holds the whole optimizer state. At world size 1
 * (NCCL on one GPU) the shard is the whole state and rank 0 writes it as
 * optimizer.safetensors. */
static int save_sharded(const TrainCkpt *k, Model *m, int step, long long tokens, double lr) {
    Dist *d = k->d;
    const int rank = dist_rank(d), world = dist_world(d), lead = rank == 0;
    char fp[32], path[CONFIG_PATH_LEN * 3], tmp[CONFIG_PATH_LEN * 3];
    char err[CONFIG_PATH_LEN * 3 + 512] = "";
    size_t n = model_optimizer_count(m), n_par = model_num_params(m);
    float *shard = NULL, *whole = NULL;
    int rc = 0;
    const char *bad = lead ? model_find_nonfinite(m) : NULL;
    if (bad) {
        fprintf(stderr, "dapt train: not checkpointing step %d: %s is not finite\n", step, bad);
        rc = 1;
    }
    memset(tmp, 0, sizeof tmp);
    if (!rc && lead && (rc = ckpt_save_begin(k->run_dir, step, tmp, sizeof tmp, err, sizeof err)))
        fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
    if (any_rank_failed(d, rc) || dist_broadcast(d, tmp, sizeof tmp, 0, err, sizeof err)) {
        rc = 1;
        goto out;
    }
    if (!(shard = malloc(sizeof(float) * (3 * n + 1))) ||
        (lead && !(whole = malloc(sizeof(float) * n_par)))) {
        err_set(err, sizeof err, "out of memory for the optimizer shard");
        rc = 1;
    } else if (!lead && access(tmp, W_OK) != 0) {
        err_set(err, sizeof err,
                "cannot write into %s (%s): with dist.zero = 1 every rank writes its optimizer "
                "shard into the checkpoint, so run.out_dir must be on a file system all nodes "
                "share",
                tmp, strerror(errno));
        rc = 1;
    } else {
        model_get_params_shard(m, shard + 2 * n);
        if (world > 1) { /* one rank (NCCL at world size 1) writes the plain layout */
            model_get_adam_shard(m, shard, shard + n);
            rc = ckpt_save_opt_shard(tmp, rank, world, step, n, shard, shard + n, err, sizeof err);
        }
    }
    if (rc)
        fprintf(stderr, "dapt train: rank %d: checkpoint at step %d failed: %s\n", rank, step, err);
    if (any_rank_failed(d, rc) ||
        dist_gather(d, shard + 2 * n, whole, k->pieces, DIST_F32, 0, err, sizeof err)) {
        if (lead) ckpt_save_abort(tmp);
        rc = 1;
        goto out;
    }
    if (lead) {
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)k->fingerprint);
        CkptState st = ckpt_state(k, step, tokens, lr, fp);
        st.params = whole, st.opt_world = world > 1 ? world : 0, st.opt_counts = k->pieces;
        rc = ckpt_save_commit(k->run_dir, tmp, m, &st, k->keep, path, sizeof path, err, sizeof err);
        if (rc)
            fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
        else if (world > 1)
            printf("checkpoint: %s (optimizer state in %d per-rank shards)\n", path, world);
        else
            printf("checkpoint: %s\n", path);
    }
    rc = any_rank_failed(d, rc);
out:
    free(shard), free(whole);
    return rc;
}

int train_ckpt_save(const TrainCkpt *k, Model *m, int step, long long tokens, double lr) {
    if (k->pieces) return save_sharded(k, m, step, tokens, lr);
    if (dist_rank(k->d) != 0) return 0;
    return save_whole(k, m, step, tokens, lr);
}
