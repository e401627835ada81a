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

/* ---------------- the config of a resumed run ---------------- */

/* One "key = value" line of config_to_toml's text, as "section.key". */
typedef struct {
    char key[160];
    const char *val; /* into the text; val_len bytes */
    int val_len;
} TomlLine;

/* The key lines of text ([[x]] tables numbered x[0], x[1], ...); malloc'd,
 * count into *n; NULL when out of memory. */
static TomlLine *toml_lines(const char *text, int *n) {
    int cap = 64, arr = -1;
    char sec[96] = "", last_arr[96] = "";
    TomlLine *v = malloc(sizeof *v * cap);
    *n = 0;
    for (const char *p = text; v && p && *p;) {
        const char *eol = strchr(p, '\n');
        int len = eol ? (int)(eol - p) : (int)strlen(p);
        if (len > 2 && p[0] == '[' && p[1] == '[') {
            snprintf(sec, sizeof sec, "%.*s", len > 4 ? len - 4 : 0, p + 2);
            arr = strcmp(sec, last_arr) ? 0 : arr + 1;
            snprintf(last_arr, sizeof last_arr, "%s", sec);
            snprintf(sec + strlen(sec), sizeof sec - strlen(sec), "[%d]", arr);
        } else if (len > 1 && p[0] == '[') {
            snprintf(sec, sizeof sec, "%.*s", len - 2, p + 1);
        } else if (len && p[0] != '#') {
            const char *eq = memchr(p, '=', (size_t)len);
            if (eq && eq > p + 1 && eq[-1] == ' ' && eq + 2 <= p + len) {
                if (*n == cap) {
                    TomlLine *t = realloc(v, sizeof *v * (cap *= 2));
                    if (!t) {
                        free(v);
                        return NULL;
                    }
                    v = t;
                }
                TomlLine *l = &v[(*n)++];
                snprintf(l->key, sizeof l->key, "%s.%.*s", sec, (int)(eq - 1 - p), p);
                l->val = eq + 2;
                l->val_len = (int)(p + len - l->val);
            }
        }
        p = eol ? eol + 1 : NULL;
    }
    return v;
}

/* 1 when key shapes the model (train_ckpt.h) */
static int shapes_model(const char *key) {
    static const char *const init_keys[] = {"model.init_from", "model.init_optimizer",
                                            "model.upcycle_from", "model.upcycle_noise"};
    static const char *const moe_keys[] = {"moe.n_experts", "moe.top_k", "moe.layer_start",
                                           "moe.layer_step"};
    for (size_t i = 0; i < sizeof moe_keys / sizeof *moe_keys; i++)
        if (!strcmp(key, moe_keys[i])) return 1;
    if (strncmp(key, "model.", 6)) return 0;
    for (size_t i = 0; i < sizeof init_keys / sizeof *init_keys; i++)
        if (!strcmp(key, init_keys[i])) return 0;
    return 1;
}

/* ", KEY OLD -> NEW" (values cut at 60 bytes) appended to buf */
static void append_change(char *buf, size_t len, const TomlLine *was, const TomlLine *now) {
    size_t at = strlen(buf);
    if (at + 1 >= len) return;
    snprintf(buf + at, len - at, "%s%s %.*s%s -> %.*s%s", at ? ", " : "", now->key,
             was->val_len > 60 ? 60 : was->val_len, was->val, was->val_len > 60 ? "..." : "",
             now->val_len > 60 ? 60 : now->val_len, now->val, now->val_len > 60 ? "..." : "");
}

int train_ckpt_compare_config(const char *was, const char *now, char *changed,
                              size_t changed_len, char *err, size_t err_len) {
    int n_was, n_now;
    char refused[2048] = "";
    TomlLine *a = toml_lines(was, &n_was), *b = toml_lines(now, &n_now);
    if (changed_len) changed[0] = 0;
    if (!a || !b) {
        free(a), free(b);
        return err_set(err, err_len, "out of memory comparing the configs");
    }
    for (int j = 0; j < n_now; j++)
        for (int i = 0; i < n_was; i++) {
            if (strcmp(a[i].key, b[j].key)) continue;
            if (a[i].val_len != b[j].val_len || memcmp(a[i].val, b[j].val, (size_t)a[i].val_len)) {
                if (shapes_model(b[j].key)) append_change(refused, sizeof refused, &a[i], &b[j]);
                else append_change(changed, changed_len, &a[i], &b[j]);
            }
            break;
        }
    free(a), free(b);
    if (refused[0])
        return err_set(err, err_len,
                       "the model differs from the checkpoint's: %s (the checkpoint's model is "
                       "what --resume continues: restore these keys, or train the changed model "
                       "as a new run, e.g. --overwrite or another run.name with model.init_from "
                       "= the checkpoint)",
                       refused);
    return 0;
}

int train_ckpt_save(const TrainCkpt *k, Model *m, int step, long long tokens, double lr) {
    if (k->pieces) return save_sharded(k, m, step, tokens, lr);
    if (dist_rank(k->d) != 0) return 0;
    return save_whole(k, m, step, tokens, lr);
}
