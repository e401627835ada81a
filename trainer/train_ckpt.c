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
                       .run_id = (char *)k->run_id,
                       .tokenizer = k->tokenizer,
                       .max_shard_bytes = k->max_shard_bytes};
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

/* The weights of a sharded run, gathered chunk by chunk while rank 0
 * writes model.safetensors: rank 0's HfParamSource (gather_chunk)
 * broadcasts each range [a, b) the writer asks for, the ranks waiting in
 * gather_serve answer, and every rank sends the part of [a, b) inside its
 * optimizer shard (its fp32 master, model_get_param_range) to rank 0,
 * where dist_gather lays the pieces side by side: the shards partition the
 * parameters in rank order, so the pieces are [a, b) in order. No rank holds
 * more than one chunk of weights it does not own (ST_STREAM_CHUNK
 * elements; a GPT-2 Conv1D weight whole). A request of count 0 ends it. */
typedef struct {
    Dist *d;
    const Model *m;
    const size_t *pieces; /* (world) rank r's shard length */
    size_t *counts;       /* (world) this chunk's part of each shard */
    float *piece;         /* (cap) non-root: this rank's part */
    size_t cap;
} Gather;

/* counts[r] = |[a, a + n) ∩ shard r|; *mine = this rank's part's start */
static void chunk_counts(Gather *g, size_t a, size_t n, size_t *mine) {
    size_t off = 0;
    for (int r = 0; r < dist_world(g->d); r++) {
        size_t lo = off > a ? off : a, hi = off + g->pieces[r] < a + n ? off + g->pieces[r] : a + n;
        g->counts[r] = hi > lo ? hi - lo : 0;
        if (r == dist_rank(g->d)) *mine = lo;
        off += g->pieces[r];
    }
}

static int gather_chunk(void *ctx, size_t offset, size_t count, float *dst, char *err,
                        size_t err_len) {
    Gather *g = ctx;
    uint64_t req[2] = {offset, count};
    size_t mine = 0, before = 0;
    if (dist_broadcast(g->d, req, sizeof req, 0, err, err_len)) return 1;
    chunk_counts(g, offset, count, &mine);
    for (int r = 0; r < dist_rank(g->d); r++)
        before += g->counts[r];
    float *at = dst + before; /* rank 0's own part, already in place */
    if (g->counts[0]) model_get_param_range(g->m, mine, g->counts[0], at);
    return dist_gather(g->d, at, dst, g->counts, DIST_F32, 0, err, err_len);
}

static int gather_serve(Gather *g, char *err, size_t err_len) {
    for (;;) {
        uint64_t req[2];
        size_t mine = 0;
        if (dist_broadcast(g->d, req, sizeof req, 0, err, err_len)) return 1;
        if (!req[1]) return 0;
        chunk_counts(g, (size_t)req[0], (size_t)req[1], &mine);
        size_t c = g->counts[dist_rank(g->d)];
        if (c > g->cap) {
            free(g->piece);
            if (!(g->piece = malloc(c * sizeof *g->piece))) {
                g->cap = 0;
                /* the others wait in the gather: end the job, not just this rank */
                dist_abort(g->d, 1, "out of host memory for a checkpoint chunk");
            }
            g->cap = c;
        }
        if (c) model_get_param_range(g->m, mine, c, g->piece);
        if (dist_gather(g->d, g->piece, NULL, g->counts, DIST_F32, 0, err, err_len)) return 1;
    }
}

/* A ZeRO checkpoint, written by every rank (trainer/ckpt.h): rank 0
 * creates the temporary directory, each rank writes its own optimizer
 * shard (host memory: its shard of Adam m and v), then rank 0 writes the
 * weights by streaming them from the ranks chunk by chunk (Gather above),
 * config and trainer state, and renames. No rank holds the whole weights or
 * the whole optimizer state. At world size 1 (NCCL on one GPU) the shard is
 * the whole state and rank 0 writes it as optimizer.safetensors. */
static int save_sharded(const TrainCkpt *k, Model *m, int step, long long tokens, double lr) {
    Dist *d = k->d;
    const int rank = dist_rank(d), world = dist_world(d), lead = rank == 0;
    char fp[32], path[CONFIG_PATH_LEN * 3], tmp[CONFIG_PATH_LEN * 3];
    char err[CONFIG_PATH_LEN * 3 + 512] = "";
    size_t n = model_optimizer_count(m);
    float *shard = NULL;
    Gather g = {d, m, k->pieces, calloc((size_t)world, sizeof(size_t)), NULL, 0};
    int rc = !g.counts;
    /* every rank checks what it holds (under ZeRO-2/3 only its shard of
     * the gradients and parameters); one bad rank stops them all below */
    const char *bad = !rc ? model_find_nonfinite(m) : NULL;
    if (bad) {
        fprintf(stderr, "dapt train: rank %d: not checkpointing step %d: %s is not finite\n",
                rank, step, bad);
        rc = 1;
    }
    memset(tmp, 0, sizeof tmp);
    if (!rc && lead && (rc = ckpt_save_begin(k->run_dir, step, tmp, sizeof tmp, err, sizeof err)))
        fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
    if (any_rank_failed(d, rc) || dist_broadcast(d, tmp, sizeof tmp, 0, err, sizeof err)) {
        rc = 1;
        goto out;
    }
    if (world > 1 && !(shard = malloc(sizeof(float) * (2 * n + 1)))) {
        err_set(err, sizeof err, "out of memory for the optimizer shard");
        rc = 1;
    } else if (!lead && access(tmp, W_OK) != 0) {
        err_set(err, sizeof err,
                "cannot write into %s (%s): with dist.zero >= 1 every rank writes its optimizer "
                "shard into the checkpoint, so run.out_dir must be on a file system all nodes "
                "share",
                tmp, strerror(errno));
        rc = 1;
    } else if (world > 1) { /* one rank (NCCL at world size 1) writes the plain layout */
        model_get_adam_shard(m, shard, shard + n);
        rc = ckpt_save_opt_shard(tmp, rank, world, step, n, shard, shard + n, err, sizeof err);
    }
    free(shard);
    if (rc)
        fprintf(stderr, "dapt train: rank %d: checkpoint at step %d failed: %s\n", rank, step, err);
    if (any_rank_failed(d, rc)) {
        if (lead) ckpt_save_abort(tmp);
        rc = 1;
        goto out;
    }
    if (lead) {
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)k->fingerprint);
        CkptState st = ckpt_state(k, step, tokens, lr, fp);
        st.params_src = gather_chunk, st.params_ctx = &g;
        st.opt_world = world > 1 ? world : 0, st.opt_counts = k->pieces;
        rc = ckpt_save_commit(k->run_dir, tmp, m, &st, k->keep, path, sizeof path, err, sizeof err);
        uint64_t end[2] = {0, 0}; /* the others stop serving */
        char e2[256];
        if (dist_broadcast(d, end, sizeof end, 0, e2, sizeof e2)) rc = 1;
        if (rc)
            fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
        else if (world > 1)
            printf("checkpoint: %s (optimizer state in %d per-rank shards)\n", path, world);
        else
            printf("checkpoint: %s\n", path);
    } else if (gather_serve(&g, err, sizeof err)) {
        fprintf(stderr, "dapt train: rank %d: checkpoint at step %d failed: %s\n", rank, step, err);
        rc = 1;
    }
    rc = any_rank_failed(d, rc);
out:
    free(g.counts), free(g.piece);
    return rc;
}

int train_ckpt_save(const TrainCkpt *k, Model *m, int step, long long tokens, double lr) {
    if (k->pieces) return save_sharded(k, m, step, tokens, lr);
    if (dist_rank(k->d) != 0) return 0;
    return save_whole(k, m, step, tokens, lr);
}
