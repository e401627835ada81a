/* train.c: `dapt train CONFIG.toml [--section.key=value ...] [--resume]`,
 * the continued-pretraining loop.
 *
 * One optimizer step: the step's global batch comes from the mixture stream
 * (data/stream.h: a pure function of the step number), is cut into
 * micro-batches whose gradients accumulate with grad_scale = 1 / (tokens in
 * the global batch), then the global norm is checked, clipped and AdamW
 * applied. Every step appends a train record to RUN/metrics.jsonl; every
 * eval.every steps (and at the end) the held-out windows of each source are
 * evaluated; every ckpt.every steps (and at the end, and on SIGINT/SIGTERM)
 * a checkpoint is written.
 *
 * Data parallel (trainer/dist.h, under mpirun): rank r of W computes its
 * slots of the same global batch; after the last micro-batch the gradients
 * are summed over ranks (grad_scale already divides by the global batch's
 * tokens), so every rank applies the same update; with dist.zero = 1 they are
 * reduce-scattered instead, each rank holds (model_shard_optimizer) and
 * steps only its shard of the AdamW state (and of the fp32 master weights on
 * the bf16 table) and the parameters are all-gathered. Losses and eval sums
 * are reduced; only rank 0 prints, writes metrics, the resolved config and
 * checkpoints, except that under ZeRO-1 each rank writes its own optimizer
 * shard into the checkpoint (save_ckpt_zero); a checkpoint resumes on any
 * number of ranks that divides the global batch, each reading only its range
 * of the optimizer state. A rank that fails aborts the whole job
 * (dist_abort).
 *
 * On run.device = "cuda" with more than one rank (or dist.backend = "nccl")
 * the gradient and parameter buffers live on the GPU and their collectives
 * go through NCCL (trainer/dist_nccl.h) on the CUDA backend's compute
 * stream (with dist.bucket_mb > 0 the gradient sums run on NCCL's own
 * stream during the last micro-batch's backward, bucket by bucket as
 * model.c's grad-ready hook hands them over, and ZeRO-1's parameter gather
 * during the next forward, waited for block by block through its
 * params-needed hook), under a watchdog
 * (dist.timeout); host-side sums (losses, the
 * stop flag, eval sums, MoE expert counts, the master weights gathered to
 * rank 0 for a checkpoint) stay on the MPI group. A NCCL failure or timeout ends the job
 * at once (dist_abort) without touching the GPU again.
 *
 * Invariants: the state of a run is (model, Adam moments, step); the data is
 * a function of the step and the stream fingerprint, so a run resumed from a
 * checkpoint at step s computes bitwise what the uninterrupted run computed
 * on CPU. A non-finite loss or gradient is never stepped on and never
 * checkpointed.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/hash.h"
#include "data/stream.h"
#include "trainer/ckpt.h"
#include "trainer/cli.h"
#include "trainer/config.h"
#include "trainer/dist.h"
#include "trainer/dist_nccl.h"
#include "trainer/hf.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/moe_loop.h"
#include "trainer/sched.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int mkdir_p(const char *path, char *err, size_t err_len) {
    char buf[CONFIG_PATH_LEN * 2];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST)
            return snprintf(err, err_len, "cannot create directory %.1000s: %s", buf, strerror(errno)), 1;
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return snprintf(err, err_len, "cannot create directory %.1000s: %s", buf, strerror(errno)), 1;
    return 0;
}

static void fmt_duration(char *dst, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) snprintf(dst, n, "?");
    else if (s < 60) snprintf(dst, n, "%.0fs", s);
    else if (s < 3600) snprintf(dst, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(dst, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* x as a JSON number, or null when it is not finite */
static const char *json_num(char *buf, size_t n, double x) {
    if (!isfinite(x)) return "null";
    snprintf(buf, n, "%.6f", x);
    return buf;
}

/* ---------------- setup ---------------- */

/* The model loaded from init_from (an HF directory or a dapt checkpoint:
 * both are HF layout), upcycled, or fresh. */
static Model *load_base_model(const Config *c, const Ops *ops, char *err, size_t err_len) {
    ModelConfig mc;
    Model *m = NULL;
    char why[512];
    if (c->moe.upcycle_from[0]) return moe_loop_upcycle(c, ops, err, err_len);
    if (c->model.init_from[0]) {
        struct stat sb;
        if (stat(c->model.init_from, &sb) || !S_ISDIR(sb.st_mode)) {
            snprintf(err, err_len,
                     "model.init_from = \"%s\" is not a directory (expected an HF model directory "
                     "or a dapt checkpoint)",
                     c->model.init_from);
            return NULL;
        }
        m = hf_load_model(c->model.init_from, ops, why, sizeof why);
        if (!m) snprintf(err, err_len, "model.init_from = \"%s\": %s", c->model.init_from, why);
        return m;
    }
    if (config_to_model_config(c, &mc, err, err_len)) return NULL;
    m = model_create(&mc, ops, err, err_len);
    if (m) model_init_weights(m, (uint64_t)c->run.seed);
    return m;
}

/* With ZeRO-1 (zero_world > 0) the optimizer state cut to rank's shard of
 * zero_world (dist_shard of the flat parameter buffer). */
static int shard_for_rank(Model *m, int zero_world, int rank, char *err, size_t err_len) {
    size_t off, n;
    if (!zero_world) return 0;
    dist_shard(model_num_params(m), zero_world, rank, &off, &n);
    return model_shard_optimizer(m, off, n, err, err_len);
}

/* The model, resumed from a checkpoint (resume_dir) or from load_base_model,
 * with its optimizer state sharded for ZeRO-1. A resumed model is sharded
 * before the checkpoint is read, so that each rank reads only its range of
 * the optimizer state (ckpt_load); a base model keeps the shard's part of
 * what was loaded or initialised (model_create allocates the whole state
 * anyway, so sharding after the load costs no extra peak memory). */
static Model *load_model(const Config *c, const Ops *ops, const char *resume_dir, CkptState *st,
                         int zero_world, int rank, char *err, size_t err_len) {
    ModelConfig mc;
    char why[512];
    Model *m = NULL;
    if (!resume_dir) {
        m = load_base_model(c, ops, err, err_len);
    } else if (hf_load_config(resume_dir, &mc, why, sizeof why)) {
        snprintf(err, err_len, "--resume: %s", why);
        return NULL;
    } else {
        m = model_create(&mc, ops, err, err_len);
    }
    if (m && shard_for_rank(m, zero_world, rank, err, err_len)) {
        model_free(m);
        return NULL;
    }
    if (m && resume_dir && ckpt_load(resume_dir, m, st, why, sizeof why)) {
        snprintf(err, err_len, "--resume: %s", why);
        model_free(m);
        return NULL;
    }
    return m;
}

/* One source per role that has train shards. */
static int open_stream(const Config *c, int n_steps, Stream **out, char *err, size_t err_len) {
    static MixPoint pts[CONFIG_MAX_MIX_POINTS];
    int n_pts = config_mix_points(c, pts, CONFIG_MAX_MIX_POINTS);
    StreamSourceConfig src[2];
    int n = 0;
    if (c->data.domain.n) {
        src[n++] = (StreamSourceConfig){"domain", STREAM_DOMAIN,
                                        (const char *const *)c->data.domain.items,
                                        c->data.domain.n,
                                        (const char *const *)c->data.val_domain.items,
                                        c->data.val_domain.n, 0.0};
    }
    if (c->data.general.n) {
        src[n++] = (StreamSourceConfig){"general", STREAM_GENERAL,
                                        (const char *const *)c->data.general.items,
                                        c->data.general.n,
                                        (const char *const *)c->data.val_general.items,
                                        c->data.val_general.n, 0.0};
    }
    if (!n) return snprintf(err, err_len, "no training data: data.domain and data.general are both empty"), 1;
    StreamConfig sc = {
        .sources = src,
        .n_sources = n,
        .schedule = pts,
        .n_schedule = n_pts,
        .seq_len = (uint32_t)c->data.seq_len,
        .global_batch = (uint32_t)c->train.global_batch,
        .total_steps = (uint64_t)n_steps,
        .seed = (uint64_t)c->run.seed,
        .eval_windows = (uint32_t)(c->eval.batches * c->train.micro_batch),
        .prefetch = 2,
    };
    return stream_open(out, &sc, err, err_len);
}

/* The shards must be tokenized for this model: vocabulary within the
 * model's, and made with the run's tokenizer (data.tokenizer, else
 * init_from's tokenizer.model) when there is one; its path goes to tok_out
 * ("" when none) so that checkpoints carry it. */
static int check_vocab(const Config *c, const Model *m, Stream *s, char *tok_out, size_t tok_len,
                       char *err, size_t err_len) {
    uint32_t sv = stream_vocab_size(s);
    int mv = model_config(m)->vocab_size;
    if (sv > (uint32_t)mv)
        return snprintf(err, err_len,
                        "the shards were tokenized with a vocabulary of %u tokens but the model has "
                        "vocab_size %d: tokenize the corpora with the model's tokenizer",
                        sv, mv),
               1;
    tok_out[0] = 0;
    if (c->data.tokenizer[0]) snprintf(tok_out, tok_len, "%s", c->data.tokenizer);
    else if (c->model.init_from[0] && !hf_find_tokenizer(c->model.init_from, tok_out, tok_len))
        tok_out[0] = 0;
    if (!tok_out[0]) return 0;
    uint64_t h;
    if (hash_file(tok_out, &h))
        return snprintf(err, err_len, "tokenizer %s: cannot read: %s", tok_out, strerror(errno)), 1;
    if (h != stream_tokenizer_hash(s))
        return snprintf(err, err_len,
                        "the shards were made with a different tokenizer than %s (tokenizer hash "
                        "%016llx in the shard headers, %016llx for this file)",
                        tok_out, (unsigned long long)stream_tokenizer_hash(s),
                        (unsigned long long)h),
               1;
    return 0;
}

/* ---------------- evaluation ---------------- */

/* Mean loss over all eval windows of each role; NAN for a role without any. */
static int evaluate(Model *m, Stream *s, Dist *d, int micro, int T, double loss_out[2], char *err,
                    size_t err_len) {
    /* rank r evaluates the micro-batches k with k % world == r; sums and
     * counts are reduced (red = {sum domain, sum general, count domain,
     * count general}), so every rank gets the same losses */
    double red[4] = {0, 0, 0, 0}, *sum = red, *count = red + 2;
    int rank = dist_rank(d), world = dist_world(d);
    uint32_t *win = malloc(sizeof(uint32_t) * (T + 1));
    int32_t *inp = malloc(sizeof(int32_t) * micro * T), *tgt = malloc(sizeof(int32_t) * micro * T);
    int rc = 0;
    for (int j = 0; j < stream_n_sources(s) && !rc; j++) {
        int role = stream_source_role(s, j);
        uint32_t n = stream_eval_count(s, j);
        for (uint32_t w0 = 0; w0 < n && !rc; w0 += micro) {
            if ((int)((w0 / micro) % world) != rank) continue;
            int b = n - w0 < (uint32_t)micro ? (int)(n - w0) : micro;
            for (int i = 0; i < b && !rc; i++) {
                rc = stream_eval_window(s, j, w0 + i, win, err, err_len);
                for (int t = 0; t < T; t++) {
                    inp[i * T + t] = (int32_t)win[t];
                    tgt[i * T + t] = (int32_t)win[t + 1];
                }
            }
            float loss;
            if (!rc) rc = model_forward(m, inp, tgt, b, T, &loss, err, err_len);
            if (!rc) {
                sum[role] += (double)loss * b * T;
                count[role] += (double)b * T;
            }
        }
    }
    if (!rc) rc = dist_allreduce(d, red, 4, DIST_F64, DIST_SUM, err, err_len);
    for (int r = 0; r < 2; r++) loss_out[r] = count[r] ? sum[r] / count[r] : NAN;
    free(win), free(inp), free(tgt);
    return rc;
}

static void write_eval(FILE *mf, int step, long long tokens, const double loss[2]) {
    static const char *split[2] = {"val/domain", "val/general"};
    if (!mf) return; /* not rank 0 */
    for (int r = 0; r < 2; r++) {
        if (isnan(loss[r])) continue;
        fprintf(mf, "{\"type\":\"eval\",\"step\":%d,\"tokens\":%lld,\"split\":\"%s\",\"loss\":%.6f}\n",
                step, tokens, split[r], loss[r]);
        printf("eval step %d: %s loss %.4f (ppl %.2f)\n", step, split[r], loss[r], exp(loss[r]));
    }
    fflush(mf);
}

/* ---------------- the run ---------------- */

typedef struct {
    Config cfg;
    Dist *dist;
    int resume;
    char run_dir[CONFIG_PATH_LEN * 2];
    char tokenizer[CONFIG_PATH_LEN + 32]; /* copied into checkpoints; "" = none */
} TrainArgs;

static void usage(FILE *f) {
    fprintf(f,
            "usage: dapt train CONFIG.toml [--section.key=value ...] [--resume]\n\n"
            "Continues pretraining a model (model.init_from: an HF directory or a dapt\n"
            "checkpoint; empty: from scratch) on the domain/general mixture of [data] and\n"
            "[mix]. Writes RUN = run.out_dir/run.name: config.resolved.toml, metrics.jsonl,\n"
            "ckpt/step-NNNNNNNN/. docs/config.md lists every key.\n\n"
            "  --section.key=value  override one config key (any number)\n"
            "  --resume             continue from the newest complete checkpoint in RUN\n"
            "SIGINT/SIGTERM finish the current step, write a checkpoint and exit 0.\n");
}

/* The collectives on the model's gradient/parameter buffers: NCCL on the
 * compute stream when the run has a communicator, else the host group
 * (CPU buffers). elem_bytes is the backend's act type size. */
typedef struct {
    Dist *d;
    DistNccl *nccl; /* NULL: MPI / single on host buffers */
    size_t elem_bytes;
} BufComm;

static int buf_allreduce_sum(BufComm *b, void *buf, size_t n, char *err, size_t err_len) {
    if (b->nccl) return dist_nccl_allreduce_sum(b->nccl, buf, n, b->elem_bytes, err, err_len);
    return dist_allreduce(b->d, buf, n, DIST_F32, DIST_SUM, err, err_len);
}

static int buf_reduce_scatter(BufComm *b, void *buf, const size_t *pieces, char *err,
                              size_t err_len) {
    if (b->nccl) return dist_nccl_reduce_scatter_sum(b->nccl, buf, pieces, b->elem_bytes, err, err_len);
    return dist_reduce_scatter(b->d, buf, pieces, DIST_F32, err, err_len);
}

static int buf_allgather(BufComm *b, void *buf, const size_t *pieces, char *err, size_t err_len) {
    if (b->nccl) return dist_nccl_allgather(b->nccl, buf, pieces, b->elem_bytes, err, err_len);
    return dist_allgather(b->d, buf, pieces, DIST_F32, err, err_len);
}

/* A failed NCCL collective has aborted the communicator and may leave the
 * compute stream unusable: end the job now, before any cleanup touches the
 * GPU (the host group's MPI_Abort ends the other ranks). */
static void nccl_failed(BufComm *b, int step, const char *err) {
    if (!b->nccl) return;
    char msg[2600];
    snprintf(msg, sizeof msg, "dapt train: step %d: %s", step, err);
    dist_abort(b->d, 1, msg);
}

/* ZeRO-1's overlapped all-gather (pending: dist.bucket_mb > 0) finished;
 * a failure ends the job (nccl_failed) */
static int gather_done(BufComm *b, int pending, int step, char *err, size_t err_len) {
    if (!pending || !dist_nccl_gather_finish(b->nccl, err, err_len)) return 0;
    nccl_failed(b, step, err);
    return 1;
}

static CkptState ckpt_state(const TrainArgs *a, int step, long long tokens, double lr,
                            const char *fp, const char *config_text) {
    return (CkptState){.step = step, .tokens = tokens, .lr = lr, .data_fingerprint = (char *)fp,
                       .rng = {(uint64_t)a->cfg.run.seed, 0, 0, 0},
                       .config_text = (char *)config_text,
                       .tokenizer_path = a->tokenizer[0] ? (char *)a->tokenizer : NULL};
}

static int save_ckpt(const TrainArgs *a, Model *m, int step, long long tokens, double lr,
                     uint64_t fingerprint, const char *config_text) {
    char fp[32], path[CONFIG_PATH_LEN * 3], err[1024];
    const char *bad = model_find_nonfinite(m);
    if (bad) {
        fprintf(stderr, "dapt train: not checkpointing step %d: %s is not finite\n", step, bad);
        return 1;
    }
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fingerprint);
    CkptState st = ckpt_state(a, step, tokens, lr, fp, config_text);
    if (ckpt_save(a->run_dir, m, &st, a->cfg.ckpt.keep, path, sizeof path, err, sizeof err)) {
        fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
        return 1;
    }
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
 * renames. No rank ever holds the whole optimizer state. pieces[r] = rank
 * r's shard length. At world size 1 (NCCL on one GPU) the shard is the
 * whole state and rank 0 writes it as optimizer.safetensors. */
static int save_ckpt_zero(const TrainArgs *a, Model *m, Dist *d, const size_t *pieces, int step,
                          long long tokens, double lr, uint64_t fingerprint,
                          const char *config_text) {
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
    if (!rc && lead && (rc = ckpt_save_begin(a->run_dir, step, tmp, sizeof tmp, err, sizeof err)))
        fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
    if (any_rank_failed(d, rc) || dist_broadcast(d, tmp, sizeof tmp, 0, err, sizeof err)) {
        rc = 1;
        goto out;
    }
    if (!(shard = malloc(sizeof(float) * (3 * n + 1))) ||
        (lead && !(whole = malloc(sizeof(float) * n_par)))) {
        snprintf(err, sizeof err, "out of memory for the optimizer shard");
        rc = 1;
    } else if (!lead && access(tmp, W_OK) != 0) {
        snprintf(err, sizeof err,
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
        dist_gather(d, shard + 2 * n, whole, pieces, DIST_F32, 0, err, sizeof err)) {
        if (lead) ckpt_save_abort(tmp);
        rc = 1;
        goto out;
    }
    if (lead) {
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fingerprint);
        CkptState st = ckpt_state(a, step, tokens, lr, fp, config_text);
        st.params = whole, st.opt_world = world > 1 ? world : 0, st.opt_counts = pieces;
        rc = ckpt_save_commit(a->run_dir, tmp, m, &st, a->cfg.ckpt.keep, path, sizeof path, err,
                              sizeof err);
        if (rc) fprintf(stderr, "dapt train: checkpoint at step %d failed: %s\n", step, err);
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

static int run(TrainArgs *a) {
    Config *c = &a->cfg;
    char err[2048];
    int rc = 1;
    Dist *d = a->dist;
    const int rank = dist_rank(d), world = dist_world(d), lead = rank == 0;
    if (c->train.global_batch % (world * c->train.micro_batch))
        return fprintf(stderr,
                       "dapt train: train.global_batch = %d is not a multiple of %d ranks x "
                       "train.micro_batch = %d\n",
                       c->train.global_batch, world, c->train.micro_batch),
               1;
    /* device buffers: NCCL; it must pick the GPU (local rank) before the
     * CUDA backend starts on the current device */
    const int on_gpu = strcmp(c->run.device, "cpu") != 0;
    const int want_nccl = !strcmp(c->dist.backend, "nccl") || (on_gpu && world > 1);
    if (want_nccl && !on_gpu)
        return fprintf(stderr, "dapt train: dist.backend = \"nccl\" needs run.device = \"cuda\" "
                               "(run.device is \"%s\")\n",
                       c->run.device),
               1;
    BufComm bc = {.d = d};
    if (want_nccl &&
        dist_nccl_init(d, c->dist.timeout, c->dist.nccl_grouped, &bc.nccl, err, sizeof err)) {
        if (world > 1) fprintf(stderr, "dapt train: rank %d of %d: %s (data parallelism on "
                                       "run.device = \"cuda\" runs over NCCL)\n", rank, world, err);
        else fprintf(stderr, "dapt train: dist.backend = \"nccl\": %s\n", err);
        return 1;
    }
    const OpsOptions ops_opt = config_to_ops_options(c); /* [cuda] */
    const Ops *ops = ops_get(c->run.device, &ops_opt, err, sizeof err);
    if (!ops) {
        dist_nccl_free(bc.nccl);
        return fprintf(stderr, "dapt train: run.device: %s\n", err), 1;
    }
    bc.elem_bytes = ops->act_bytes;
    if (bc.nccl) dist_nccl_set_stream(bc.nccl, ops_cuda_stream());
    snprintf(a->run_dir, sizeof a->run_dir, "%s/%s", c->run.out_dir, c->run.name);

    char resume_path[CONFIG_PATH_LEN * 3];
    CkptState st = {0};
    if (a->resume) {
        int f = ckpt_find_latest(a->run_dir, resume_path, sizeof resume_path, err, sizeof err);
        if (f) dist_nccl_free(bc.nccl);
        if (f < 0) return fprintf(stderr, "dapt train: --resume: %s\n", err), 1;
        if (f > 0)
            return fprintf(stderr,
                           "dapt train: --resume: no complete checkpoint under %s/ckpt (start the "
                           "run without --resume)\n",
                           a->run_dir),
                   1;
    }
    /* ZeRO-1 shards the optimizer state over the ranks (a no-op at world
     * size 1: NCCL with one GPU keeps the whole state) */
    const int zero = c->dist.zero && (world > 1 || bc.nccl);
    /* dist.bucket_mb > 0: collectives overlapped with compute (NCCL only) */
    const int overlap = bc.nccl && c->dist.bucket_mb > 0;
    Model *m = load_model(c, ops, a->resume ? resume_path : NULL, &st, zero ? world : 0, rank, err,
                          sizeof err);
    if (!m) {
        dist_nccl_free(bc.nccl);
        return fprintf(stderr, "dapt train: %s\n", err), 1;
    }
    /* MoE global-batch load balancing sums expert counts over the ranks,
     * non-blocking (trainer/moe.h): over NCCL when the run has it */
    if (bc.nccl)
        model_moe_set_allreduce(m, dist_nccl_moe_sum_begin, dist_nccl_moe_sum_finish, bc.nccl);
    else model_moe_set_allreduce(m, dist_moe_sum_begin, dist_moe_sum_finish, d);
    Stream *s = NULL;
    char *config_text = NULL;
    FILE *mf = NULL;
    int32_t *inp = NULL, *tgt = NULL;
    uint32_t *batch = NULL;
    int32_t *src_ids = NULL;
    int *roles = NULL; /* (micro) StreamRole of each row, for MoE routing metrics */
    size_t *pieces = NULL;
    const ModelConfig *mc = model_config(m);
    LrSchedule sched;
    if (config_check_model(c, mc, err, sizeof err) || moe_loop_configure(m, c, err, sizeof err) ||
        config_to_schedule(c, &sched, err, sizeof err) ||
        open_stream(c, c->train.steps, &s, err, sizeof err) || check_vocab(c, m, s, a->tokenizer, sizeof a->tokenizer, err, sizeof err)) {
        fprintf(stderr, "dapt train: %s\n", err);
        goto done;
    }
    uint64_t fingerprint = stream_fingerprint(s);
    int start = 0;
    long long tokens = 0;
    if (a->resume) {
        char fp[32];
        snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fingerprint);
        if (!st.data_fingerprint || strcmp(st.data_fingerprint, fp)) {
            fprintf(stderr,
                    "dapt train: --resume: the data stream differs from the checkpoint's "
                    "(fingerprint %s now, %s in %s): same shards, mixture, seed, seq_len, "
                    "global_batch and steps are needed for an exact resume\n",
                    fp, st.data_fingerprint ? st.data_fingerprint : "(none)", resume_path);
            goto done;
        }
        start = (int)st.step;
        tokens = st.tokens;
        printf("resuming from %s (step %d)\n", resume_path, start);
    }
    config_text = config_to_toml(c);
    if (lead) { /* the run directory is rank 0's */
        if (mkdir_p(a->run_dir, err, sizeof err)) {
            fprintf(stderr, "dapt train: %s\n", err);
            goto done;
        }
        char path[CONFIG_PATH_LEN * 3];
        snprintf(path, sizeof path, "%s/config.resolved.toml", a->run_dir);
        if (config_write(c, path, err, sizeof err)) {
            fprintf(stderr, "dapt train: %s\n", err);
            goto done;
        }
        snprintf(path, sizeof path, "%s/metrics.jsonl", a->run_dir);
        mf = fopen(path, "a");
        if (!mf) {
            fprintf(stderr, "dapt train: cannot open %s: %s\n", path, strerror(errno));
            goto done;
        }
    }

    const int T = c->data.seq_len, B = c->train.global_batch, micro = c->train.micro_batch;
    const int B_local = B / world, n_micro = B_local / micro;
    AdamWConfig opt = config_to_adamw(c);
    /* ZeRO-1: this rank's shard [shard_off, shard_off + shard_n) of the flat
     * parameter buffer; pieces[r] = rank r's shard length */
    size_t n_par = model_num_params(m), shard_off = 0, shard_n = n_par;
    pieces = malloc(sizeof(size_t) * world);
    for (int r = 0; r < world; r++) {
        size_t o;
        dist_shard(n_par, world, r, &o, &pieces[r]);
        if (r == rank) shard_off = o, shard_n = pieces[r];
    }
    if (zero && (model_optimizer_offset(m) != shard_off || model_optimizer_count(m) != shard_n)) {
        fprintf(stderr, "dapt train: internal error: optimizer shard differs from the ZeRO-1 layout\n");
        goto done;
    }
    /* the gradient sums overlap the last backward (with MPI on host
     * buffers they stay after it) */
    size_t bucket_elems = (size_t)(c->dist.bucket_mb * 1048576.0 / ops->act_bytes);
    if (bucket_elems < 1) bucket_elems = 1;
    /* ZeRO-1: every forward pass (training and evaluation) waits for the
     * parameters' all-gather block by block, when one is pending */
    if (overlap && zero) model_set_params_needed(m, dist_nccl_gather_needed, bc.nccl);
    batch = malloc(sizeof(uint32_t) * B_local * (T + 1));
    src_ids = malloc(sizeof(int32_t) * B_local);
    inp = malloc(sizeof(int32_t) * micro * T);
    tgt = malloc(sizeof(int32_t) * micro * T);
    roles = malloc(sizeof(int) * micro);
    if (!strcmp(ops->name, "cpu") && ops_cpu_blas_hint()) printf("%s\n", ops_cpu_blas_hint());
    printf("dapt train: %s, %s %d layers d_model %d (%.2fM params) on %s; %d steps of %d x %d "
           "tokens\n",
           a->run_dir, model_arch_name(mc->arch), mc->n_layer, mc->d_model,
           model_num_params(m) / 1e6, ops->name, c->train.steps, B, T);
    if (world > 1 && !bc.nccl)
        printf("  data parallel: %d ranks (%s), %d sequences per rank per step%s\n", world,
               dist_backend(d), B_local, zero ? ", ZeRO-1 optimizer state" : "");
    if (bc.nccl)
        printf("  data parallel: %d ranks (%s + nccl %s, GPU %d on rank 0), %d sequences per rank "
               "per step%s\n",
               world, dist_backend(d), dist_nccl_version(bc.nccl), dist_nccl_device(bc.nccl),
               B_local, zero ? ", ZeRO-1 optimizer state" : "");
    if (overlap)
        printf("  gradient sums overlapped with the backward%s: buckets of %zu elements (%.3g "
               "MiB)\n",
               zero ? ", the parameters' all-gather with the next forward" : "", bucket_elems,
               c->dist.bucket_mb);
    else if (c->dist.bucket_mb > 0 && world > 1)
        printf(
            "  dist.bucket_mb: ignored, the MPI backend sums the gradients after the backward\n");
    if (world > 1 || bc.nccl)
        printf("  optimizer state: %zu bytes on rank 0 (%s for %zu of %zu parameters)\n",
               model_optimizer_bytes(m),
               ops->act_bytes != sizeof(float) ? "Adam m, v and fp32 master" : "Adam m, v",
               model_optimizer_count(m), n_par);
    for (int j = 0; j < stream_n_sources(s); j++)
        printf("  source %-8s %12llu tokens, %llu windows per epoch\n", stream_source_name(s, j),
               (unsigned long long)stream_source_tokens(s, j),
               (unsigned long long)stream_source_windows(s, j));

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int tty = isatty(STDOUT_FILENO), every_print = c->train.steps / 20 > 0 ? c->train.steps / 20 : 1;
    double t_start = now_s();
    int steps_run = 0, step = start;
    double lr = 0.0;
    rc = 0;
    if (start == 0 && c->eval.every > 0) {
        double ev[2];
        if ((rc = evaluate(m, s, d, micro, T, ev, err, sizeof err))) goto fail;
        write_eval(mf, 0, 0, ev);
    }
    for (; step < c->train.steps; step++) {
        double t0 = now_s();
        lr = sched_lr(&sched, step);
        if ((rc = stream_next_batch(s, (uint64_t)step, rank, world, batch, src_ids, err, sizeof err)))
            goto fail;
        model_zero_grad(m);
        double role_sum[2] = {0, 0}, total = 0;
        int role_n[2] = {0, 0};
        float grad_scale = 1.0f / ((float)B * T);
        double moe_aux = 0.0; /* MoE: the step's aux loss (trainer/moe.h) */
        if ((rc = model_moe_begin_step(m, (int64_t)B * T, err, sizeof err))) goto fail;
        for (int k = 0; k < n_micro; k++) {
            for (int i = 0; i < micro; i++) {
                const uint32_t *w = batch + (size_t)(k * micro + i) * (T + 1);
                for (int t = 0; t < T; t++) {
                    inp[i * T + t] = (int32_t)w[t];
                    tgt[i * T + t] = (int32_t)w[t + 1];
                }
            }
            float loss;
            /* dist.bucket_mb: the last micro-batch's backward hands its
             * finished gradients to NCCL as it goes */
            const int arm = overlap && k == n_micro - 1;
            if (arm && (rc = dist_nccl_buckets_begin(
                            bc.nccl, model_grads_buffer(m), n_par, bc.elem_bytes, bucket_elems,
                            zero ? pieces : NULL, ops_cuda_stream(), err, sizeof err))) {
                nccl_failed(&bc, step, err);
                goto fail;
            }
            model_set_grad_ready(m, arm ? dist_nccl_buckets_ready : NULL, bc.nccl);
            if ((rc = model_forward_backward(m, inp, tgt, micro, T, grad_scale, &loss, err,
                                             sizeof err))) {
                /* on a NCCL run this may be the MoE counts' sum over NCCL
                 * (moe.c): end the job before cleanup touches the GPU */
                nccl_failed(&bc, step, err);
                goto fail;
            }
            moe_aux += model_moe_aux_loss(m);
            for (int i = 0; i < micro; i++) roles[i] = stream_source_role(s, src_ids[k * micro + i]);
            if ((rc = model_moe_record_routing(m, roles, micro, err, sizeof err))) goto fail;
            const float *tl = model_token_losses(m);
            for (int i = 0; i < micro; i++) {
                double ls = 0;
                for (int t = 0; t < T; t++) ls += tl[i * T + t];
                int role = stream_source_role(s, src_ids[k * micro + i]);
                role_sum[role] += ls / T;
                role_n[role]++;
                total += ls;
            }
        }
        model_set_grad_ready(m, NULL, NULL);
        /* the gradients and the step's sums over all ranks; red[5] > 0 when
         * some rank got SIGINT/SIGTERM, so that all stop after this step */
        double red[7] = {total, role_sum[0], role_sum[1], role_n[0], role_n[1], stop_requested, 0};
        float gnorm;
        if (overlap)
            rc = dist_nccl_buckets_finish(bc.nccl, err, sizeof err);
        else if (zero)
            rc = buf_reduce_scatter(&bc, model_grads_buffer(m), pieces, err, sizeof err);
        else
            rc = buf_allreduce_sum(&bc, model_grads_buffer(m), n_par, err, sizeof err);
        if (!rc && zero) red[6] = model_grad_sumsq_range(m, shard_off, shard_n);
        if (rc) nccl_failed(&bc, step, err);
        if (rc || (rc = dist_allreduce(d, red, 7, DIST_F64, DIST_SUM, err, sizeof err))) goto fail;
        gnorm = zero ? (float)sqrt(red[6]) : model_grad_norm(m);
        int stop = red[5] > 0;
        role_n[0] = (int)red[3], role_n[1] = (int)red[4];
        double loss = red[0] / ((double)B * T);
        double ld = role_n[0] ? red[1] / role_n[0] : NAN;
        double lg = role_n[1] ? red[2] / role_n[1] : NAN;
        if (!isfinite(loss) || !isfinite(gnorm)) {
            const char *what = model_find_nonfinite(m);
            if (lead) {
                fprintf(mf, "{\"type\":\"event\",\"step\":%d,\"event\":\"nonfinite\",\"loss\":%s,"
                            "\"tensor\":\"%s\",\"action\":\"%s\"}\n",
                        step, isfinite(loss) ? "\"finite\"" : "\"nonfinite\"", what ? what : "",
                        c->train.on_nonfinite);
                fflush(mf);
                fprintf(stderr, "dapt train: step %d: non-finite %s (loss %g, grad norm %g%s%s): %s\n",
                        step, isfinite(loss) ? "gradient" : "loss", loss, gnorm,
                        what ? ", first bad tensor " : "", what ? what : "",
                        strcmp(c->train.on_nonfinite, "skip") ? "stopping without a checkpoint"
                                                              : "step skipped");
            }
            if (strcmp(c->train.on_nonfinite, "skip")) {
                rc = 1;
                goto done;
            }
            continue;
        }
        if (zero) {
            model_adamw_step_range(m, &opt, (float)lr, step + 1, shard_off, shard_n,
                                   model_clip_scale(&opt, gnorm));
            /* overlapped: the next forward waits for each block's part */
            if (overlap)
                rc = dist_nccl_gather_begin(bc.nccl, model_params_buffer(m), n_par, bc.elem_bytes,
                                            bucket_elems, pieces, ops_cuda_stream(), err,
                                            sizeof err);
            else
                rc = buf_allgather(&bc, model_params_buffer(m), pieces, err, sizeof err);
            if (rc) {
                nccl_failed(&bc, step, err);
                goto fail;
            }
        } else {
            model_adamw_step(m, &opt, (float)lr, step + 1);
        }
        tokens += (long long)B * T;
        steps_run++;
        double dt = now_s() - t0, tok_s = (double)B * T / dt;
        double dom_frac = (double)role_n[0] / B;
        char b1[32], b2[32], moe_console[64];
        char *moe_fields = moe_loop_step_fields(m, moe_aux, moe_console, sizeof moe_console);
        if (mf)
            fprintf(mf,
                "{\"type\":\"train\",\"step\":%d,\"tokens\":%lld,\"loss\":%.6f,\"loss_domain\":%s,"
                "\"loss_general\":%s,\"lr\":%.6g,\"grad_norm\":%.6g,\"tok_s\":%.1f,"
                "\"domain_frac\":%.6f%s}\n",
                step + 1, tokens, loss, json_num(b1, sizeof b1, ld), json_num(b2, sizeof b2, lg),
                lr, gnorm, tok_s, dom_frac, moe_fields ? moe_fields : "");
        free(moe_fields);
        if (tty || (step + 1) % every_print == 0 || step == start || step + 1 == c->train.steps) {
            char eta[32];
            double per = (now_s() - t_start) / steps_run;
            fmt_duration(eta, sizeof eta, per * (c->train.steps - step - 1));
            printf("step %5d/%d | loss %.4f (domain %.4f, general %.4f) | lr %.2e | gnorm %.3f | "
                   "%.0f tok/s | domain %.2f%s | ETA %s\n",
                   step + 1, c->train.steps, loss, ld, lg, lr, gnorm, tok_s, dom_frac, moe_console,
                   eta);
            fflush(stdout);
        }
        int last = step + 1 == c->train.steps;
        if (c->eval.every > 0 && ((step + 1) % c->eval.every == 0 || last)) {
            double ev[2];
            /* the gather done on every rank before evaluation (outside the
             * timed step): a rank without evaluation windows runs no forward
             * to wait in, and the emulated NCCL (tests/cuemu) advances a
             * rank's collectives only when that rank waits */
            if ((rc = gather_done(&bc, overlap && zero, step, err, sizeof err))) goto fail;
            if ((rc = evaluate(m, s, d, micro, T, ev, err, sizeof err))) goto fail;
            write_eval(mf, step + 1, tokens, ev);
        }
        if (mf) fflush(mf);
        if ((c->ckpt.every > 0 && (step + 1) % c->ckpt.every == 0) || last || stop) {
            /* the checkpoint reads the parameters: the gather must be done */
            if ((rc = gather_done(&bc, overlap && zero, step, err, sizeof err))) goto fail;
            if (zero)
                rc = save_ckpt_zero(a, m, d, pieces, step + 1, tokens, lr, fingerprint, config_text);
            else if (lead)
                rc = save_ckpt(a, m, step + 1, tokens, lr, fingerprint, config_text);
            if (rc) goto done;
        }
        if (stop && !last) {
            printf("dapt train: %s: stopped after step %d with a checkpoint; continue "
                   "with --resume\n",
                   stop_requested == SIGINT    ? "SIGINT received"
                   : stop_requested == SIGTERM ? "SIGTERM received"
                                               : "another rank received SIGINT/SIGTERM",
                   step + 1);
            goto done;
        }
    }
    printf("dapt train: done, %d steps in %.1fs; metrics in %s/metrics.jsonl\n", steps_run,
           now_s() - t_start, a->run_dir);
    goto done;
fail:
    if (world > 1) fprintf(stderr, "dapt train: rank %d of %d: step %d: %s\n", rank, world, step, err);
    else fprintf(stderr, "dapt train: step %d: %s\n", step, err);
done:
    /* nothing may free the parameters while NCCL still writes them */
    if (overlap && zero) {
        char gerr[512], msg[600];
        if (dist_nccl_gather_finish(bc.nccl, gerr, sizeof gerr)) {
            snprintf(msg, sizeof msg, "dapt train: at the end: %s", gerr);
            dist_abort(d, 1, msg);
        }
    }
    if (mf) fclose(mf);
    free(pieces), free(config_text), free(batch), free(src_ids), free(inp), free(tgt), free(roles);
    ckpt_state_free(&st);
    if (s) stream_close(s);
    model_free(m);
    dist_nccl_free(bc.nccl);
    return rc;
}

int cmd_train(int argc, char **argv) {
    TrainArgs a = {0};
    const char *path = NULL;
    char **ovr = calloc(argc, sizeof *ovr);
    int n_ovr = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            free(ovr);
            return 0;
        } else if (!strcmp(argv[i], "--resume")) {
            a.resume = 1;
        } else if (!strncmp(argv[i], "--", 2)) {
            ovr[n_ovr++] = argv[i];
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "dapt train: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            free(ovr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        free(ovr);
        return 2;
    }
    char err[2048];
    if (dist_init(&a.dist, err, sizeof err)) {
        fprintf(stderr, "dapt train: %s\n", err);
        free(ovr);
        return 1;
    }
    int world = dist_world(a.dist), rc = 1;
    /* rank 0 speaks for the job; the others print only errors */
    if (dist_rank(a.dist) > 0 && !freopen("/dev/null", "w", stdout))
        dist_abort(a.dist, 1, "cannot silence stdout");
    if (config_from_args(&a.cfg, path, n_ovr, ovr, err, sizeof err))
        fprintf(stderr, "dapt train: %s\n", err);
    else rc = run(&a);
    free(ovr);
    config_free(&a.cfg);
    if (rc && world > 1) dist_abort(a.dist, rc, "dapt train failed (the message above says why)");
    dist_free(a.dist);
    return rc;
}
