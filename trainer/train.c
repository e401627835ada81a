/* train.c: the continued-pretraining run (train.h): setup, the run loop
 * (evaluation, checkpoints, signals, metrics) and, in one screen,
 * train_step.
 *
 * One optimizer step: the step's global batch comes from the mixture stream
 * (data/stream.h: a pure function of the step number), is cut into
 * micro-batches whose gradients accumulate with grad_scale = 1 / (tokens in
 * the global batch); the gradients are summed over the ranks (trainer/comm.h:
 * all-reduced, or reduce-scattered under ZeRO-1, over MPI or NCCL,
 * overlapped with the backward or not), the step's sums (StepSums) over the
 * host group, then the global norm is checked, clipped and AdamW applied
 * (to this rank's shard under ZeRO-1, the parameters then gathered). Every
 * step appends a train record to RUN/metrics.jsonl (trainer/metrics.h);
 * every eval.every steps (and at the end) the held-out windows of each
 * source are evaluated; every ckpt.every steps (and at the end, and on
 * SIGINT/SIGTERM) a checkpoint is written (trainer/train_ckpt.h), then
 * scored on the eval.tasks files (trainer/tasks.h, every rank) and handed to
 * the eval.command hook (trainer/hook.h, rank 0, in the background).
 *
 * Data parallel (trainer/dist.h, under mpirun): rank r of W computes its
 * slots of the same global batch, so every rank applies the same update.
 * Only rank 0 prints, writes metrics, the resolved config and checkpoints
 * (under ZeRO-1 each rank writes its own optimizer shard); a checkpoint
 * resumes on any number of ranks that divides the global batch.
 *
 * Invariants: the state of a run is (model, Adam moments, step); the data is
 * a function of the step and the stream fingerprint, so a run resumed from a
 * checkpoint at step s computes bitwise what the uninterrupted run computed
 * on CPU. A non-finite loss or gradient is never stepped on and never
 * checkpointed.
 */
#include "trainer/train.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
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
#include "kernels/util.h"
#include "tokenizer/tokenizer.h"
#include "trainer/ckpt.h"
#include "trainer/comm.h"
#include "trainer/hf.h"
#include "trainer/hook.h"
#include "trainer/metrics.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/moe_loop.h"
#include "trainer/safetensors.h"
#include "trainer/sched.h"
#include "trainer/tasks.h"
#include "trainer/train_ckpt.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) {
    stop_requested = sig;
}

static void fmt_duration(char *dst, size_t n, double s) {
    if (!(s >= 0) || s > 1e8)
        snprintf(dst, n, "?");
    else if (s < 60)
        snprintf(dst, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(dst, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(dst, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* A role's loss on the console: "-" when it had no samples (NaN). */
static void fmt_loss(char *dst, size_t n, double loss) {
    if (isnan(loss))
        snprintf(dst, n, "-");
    else
        snprintf(dst, n, "%.4f", loss);
}

/* The terminal's progress line: its bar's width, and whether it is on the
 * screen without its newline (progress_end ends it before another line). */
#define PROGRESS_BAR 24
#define PROGRESS_HZ  10
static int progress_open;
static void progress_end(void) {
    if (progress_open) putchar('\n');
    progress_open = 0;
}

/* ---------------- setup ---------------- */

/* The ZeRO shard of this rank: dist.zero's stage over world ranks (world
 * 0: no sharding), and the optimizer offload. */
typedef struct {
    int stage, world, rank, offload;
} Shard;

/* A model of mc created for the shard (the pieces: dist_shard of the flat
 * parameter buffer), so that no rank ever allocates what the stage
 * shards. */
static Model *create_sharded(const ModelConfig *mc, const Ops *ops, const Shard *sh, char *err,
                             size_t err_len) {
    if (!sh->world && !sh->offload) return model_create(mc, ops, err, err_len);
    int world = sh->world ? sh->world : 1;
    size_t *pieces = malloc(sizeof(size_t) * world), n = model_config_num_params(mc), off;
    if (!pieces || !n) {
        free(pieces);
        return err_set(err, err_len, "out of host memory"), NULL;
    }
    for (int r = 0; r < world; r++) dist_shard(n, world, r, &off, &pieces[r]);
    ModelShard ms = {.stage = sh->world ? sh->stage : 0, .world = world,
                     .rank = sh->world ? sh->rank : 0, .pieces = pieces, .offload = sh->offload};
    Model *m = model_create_sharded(mc, ops, &ms, err, err_len);
    free(pieces);
    return m;
}

/* The base model, from init_from (an HF directory or a dapt checkpoint:
 * both are HF layout; with init_optimizer the checkpoint's Adam moments,
 * this rank's shard of them, and its trainer state into *st), upcycled, or
 * fresh, created for the shard. */
static Model *load_base_model(const Config *c, const Ops *ops, const Shard *sh, CkptState *st,
                              char *err, size_t err_len) {
    ModelConfig mc;
    Model *m = NULL;
    char why[512];
    if (c->moe.upcycle_from[0]) {
        /* upcycled whole (the dense model and the MoE one at once), then
         * its parameters moved into a model made for the shard */
        Model *whole = moe_loop_upcycle(c, ops, err, err_len);
        if (!whole || (!sh->world && !sh->offload)) return whole;
        float *buf = malloc(sizeof(float) * model_num_params(whole));
        if (buf && (m = create_sharded(model_config(whole), ops, sh, err, err_len))) {
            model_get_params(whole, buf);
            model_set_params(m, buf);
        } else if (!buf) {
            err_set(err, err_len, "out of host memory moving the upcycled model");
        }
        free(buf);
        model_free(whole);
        return m;
    }
    if (c->model.init_from[0]) {
        struct stat sb;
        if (stat(c->model.init_from, &sb) || !S_ISDIR(sb.st_mode)) {
            err_set(err, err_len,
                    "model.init_from = \"%s\" is not a directory (expected an HF model directory "
                    "or a dapt checkpoint)",
                    c->model.init_from);
            return NULL;
        }
        char state[CONFIG_PATH_LEN + 32];
        snprintf(state, sizeof state, "%s/trainer_state.json", c->model.init_from);
        if (c->model.init_optimizer && stat(state, &sb)) {
            err_set(err, err_len,
                    "model.init_optimizer = true, but model.init_from = \"%s\" has no optimizer "
                    "state (no trainer_state.json: not a dapt checkpoint); set "
                    "model.init_optimizer = false to start with fresh Adam moments",
                    c->model.init_from);
            return NULL;
        }
        if (hf_load_config(c->model.init_from, &mc, why, sizeof why) ||
            !(m = create_sharded(&mc, ops, sh, why, sizeof why)) ||
            (c->model.init_optimizer ? ckpt_load(c->model.init_from, m, st, why, sizeof why)
                                     : hf_load_weights(c->model.init_from, m, why, sizeof why))) {
            err_set(err, err_len, "model.init_from = \"%s\"%s: %s", c->model.init_from,
                    c->model.init_optimizer ? " with model.init_optimizer" : "", why);
            model_free(m);
            return NULL;
        }
        return m;
    }
    if (config_to_model_config(c, &mc, err, err_len)) return NULL;
    m = create_sharded(&mc, ops, sh, err, err_len);
    if (m) model_init_weights(m, (uint64_t)c->run.seed);
    return m;
}

/* The model, resumed from a checkpoint (resume_dir; its state into *st) or
 * from load_base_model (with init_optimizer, init_from's state into *st),
 * created for this rank's ZeRO shard (zero_world > 0) so
 * that each rank allocates only its shard of what the stage shards, and a
 * resume reads only its range of the optimizer state (ckpt_load). */
static Model *load_model(const Config *c, const Ops *ops, const char *resume_dir, CkptState *st,
                         int zero_world, int rank, char *err, size_t err_len) {
    ModelConfig mc;
    char why[512];
    Model *m = NULL;
    Shard sh = {.stage = c->dist.zero, .world = zero_world, .rank = rank,
                .offload = c->train.offload_optimizer};
    if (!resume_dir) return load_base_model(c, ops, &sh, st, err, err_len);
    if (hf_load_config(resume_dir, &mc, why, sizeof why)) {
        err_set(err, err_len, "--resume: %s", why);
        return NULL;
    }
    m = create_sharded(&mc, ops, &sh, err, err_len);
    /* find_resume verified the checksums */
    if (m && ckpt_load_found(resume_dir, m, st, why, sizeof why)) {
        err_set(err, err_len, "--resume: %s", why);
        model_free(m);
        return NULL;
    }
    return m;
}

/* [train] recompute onto the model (the config has checked the choice;
 * the parse names it again should it not have) */
static int apply_recompute(Model *m, const Config *c, char *err, size_t err_len) {
    int mode;
    if (model_recompute_parse(c->train.recompute, &mode, err, err_len)) return 1;
    model_set_recompute(m, mode);
    return 0;
}

/* The [[data.sources]] tables, else one source per shorthand role that has
 * train shards (named "domain" and "general", weight 0: the stream and its
 * fingerprint as before the tables existed). */
static int open_stream(const Config *c, int n_steps, Stream **out, char *err, size_t err_len) {
    static MixPoint pts[CONFIG_MAX_MIX_POINTS];
    int n_pts = config_mix_points(c, pts, CONFIG_MAX_MIX_POINTS);
    StreamSourceConfig src[CONFIG_MAX_SOURCES];
    int n = 0;
    for (int j = 0; j < c->data.n_sources; j++) {
        const ConfigSource *cs = &c->data.sources[j];
        src[n++] = (StreamSourceConfig){cs->name,
                                        strcmp(cs->role, "domain") ? STREAM_GENERAL : STREAM_DOMAIN,
                                        (const char *const *)cs->train.items,
                                        cs->train.n,
                                        (const char *const *)cs->val.items,
                                        cs->val.n,
                                        cs->weight};
    }
    if (!c->data.n_sources && c->data.domain.n) {
        src[n++] = (StreamSourceConfig){"domain",
                                        STREAM_DOMAIN,
                                        (const char *const *)c->data.domain.items,
                                        c->data.domain.n,
                                        (const char *const *)c->data.val_domain.items,
                                        c->data.val_domain.n,
                                        0.0};
    }
    if (!c->data.n_sources && c->data.general.n) {
        src[n++] = (StreamSourceConfig){"general",
                                        STREAM_GENERAL,
                                        (const char *const *)c->data.general.items,
                                        c->data.general.n,
                                        (const char *const *)c->data.val_general.items,
                                        c->data.val_general.n,
                                        0.0};
    }
    if (!n)
        return err_set(err, err_len,
                       "no training data: data.domain and data.general are both empty");
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
    char e[1024];
    if (stream_open(out, &sc, e, sizeof e))
        return err_set(err, err_len, "%s: %s",
                       c->data.n_sources ? "[[data.sources]]" : "data.domain / data.general", e);
    return 0;
}

/* The shards must be tokenized for this model: vocabulary within the
 * model's, and made with the run's tokenizer when there is one:
 * data.tokenizer (an HF model directory, a tokenizer.json or a
 * sentencepiece .model), else init_from's (tokenizer_find). It is loaded
 * into *tok_out (NULL when none) so that checkpoints carry its files. */
static int check_vocab(const Config *c, const Model *m, Stream *s, Tokenizer **tok_out, char *err,
                       size_t err_len) {
    uint32_t sv = stream_vocab_size(s);
    int mv = model_config(m)->vocab_size;
    *tok_out = NULL;
    if (sv > (uint32_t)mv)
        return err_set(err, err_len,
                       "the shards were tokenized with a vocabulary of %u tokens but the model has "
                       "vocab_size %d: tokenize the corpora with the model's tokenizer",
                       sv, mv);
    char found[CONFIG_PATH_LEN + 32], why[CONFIG_PATH_LEN + 512];
    const char *path = NULL, *key = "data.tokenizer";
    if (c->data.tokenizer[0])
        path = c->data.tokenizer;
    else if (c->model.init_from[0] && tokenizer_find(c->model.init_from, found, sizeof found))
        path = c->model.init_from, key = "model.init_from's tokenizer";
    if (!path) return 0;
    if (tokenizer_load(tok_out, path, why, sizeof why))
        return err_set(err, err_len, "%s: %s", key, why);
    uint64_t h = tokenizer_hash(*tok_out);
    if (h != stream_tokenizer_hash(s))
        return err_set(err, err_len,
                       "the shards were made with a different tokenizer than %s (%s, %s: "
                       "tokenizer hash %016llx in the shard headers, %016llx for this one): "
                       "tokenize the corpora with it, or give the shards' tokenizer",
                       path, key, tokenizer_kind_name(*tok_out),
                       (unsigned long long)stream_tokenizer_hash(s), (unsigned long long)h);
    if (tokenizer_vocab_size(*tok_out) > (uint32_t)mv)
        return err_set(err, err_len, "%s %s has %u tokens but the model has vocab_size %d", key,
                       path, tokenizer_vocab_size(*tok_out), mv);
    return 0;
}

/* rows windows of T + 1 tokens, one after another, as the model's inputs
 * (tokens 0..T-1) and targets (tokens 1..T): inp, tgt (rows, T) */
void train_split_windows(const uint32_t *win, int rows, int T, int eos, int bos, int32_t *inp,
                          int32_t *tgt) {
    for (int i = 0; i < rows; i++) {
        const uint32_t *w = win + (size_t)i * (T + 1);
        for (int j = 0; j < T; j++) {
            inp[i * T + j] = (int32_t)w[j];
            tgt[i * T + j] = (int32_t)w[j + 1];
            if (bos >= 0 && (int64_t)w[j] == eos && (int64_t)w[j + 1] == bos) tgt[i * T + j] = -1;
        }
    }
}

/* valid targets (>= 0) among n */
static int count_targets(const int32_t *tgt, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += tgt[i] >= 0;
    return k;
}

/* ---------------- evaluation ---------------- */

/* Mean loss over all eval windows of each role (loss_out[0..1]) and of
 * each source (loss_out[2 + j]); NAN for one without any. */
static int evaluate(Model *m, Stream *s, Dist *d, int micro, int T, int bos, double *loss_out,
                    char *err, size_t err_len) {
    /* rank r evaluates the micro-batches k with k % world == r; sums and
     * counts are reduced (red = {sum domain, sum general, count domain,
     * count general, then sum and count of each source}), so every rank
     * gets the same losses (the role sums as before the per-source ones
     * were added: val/domain and val/general are bitwise unchanged) */
    const int n_src = stream_n_sources(s);
    double red[4 + 2 * CONFIG_MAX_SOURCES] = {0}, *sum = red, *count = red + 2;
    double *src_sum = red + 4, *src_count = red + 4 + n_src;
    int rank = dist_rank(d), world = dist_world(d);
    uint32_t *win = malloc(sizeof(uint32_t) * micro * (T + 1)); /* (micro, T + 1) */
    int32_t *inp = malloc(sizeof(int32_t) * micro * T), *tgt = malloc(sizeof(int32_t) * micro * T);
    int rc = !win || !inp || !tgt ? err_set(err, err_len, "out of memory for the eval batch") : 0;
    for (int j = 0; j < stream_n_sources(s) && !rc; j++) {
        int role = stream_source_role(s, j);
        uint32_t n = stream_eval_count(s, j);
        for (uint32_t w0 = 0; w0 < n && !rc; w0 += micro) {
            if ((int)((w0 / micro) % world) != rank) continue;
            int b = n - w0 < (uint32_t)micro ? (int)(n - w0) : micro;
            for (int i = 0; i < b && !rc; i++)
                rc = stream_eval_window(s, j, w0 + i, win + (size_t)i * (T + 1), err, err_len);
            if (!rc) train_split_windows(win, b, T, (int)stream_eos_id(s), bos, inp, tgt);
            float loss;
            if (!rc) rc = model_forward(m, inp, tgt, b, T, &loss, err, err_len);
            if (!rc) {
                /* the mean over the valid targets, weighted by their count */
                double nv = count_targets(tgt, b * T);
                sum[role] += nv ? (double)loss * nv : 0.0;
                count[role] += nv;
                src_sum[j] += nv ? (double)loss * nv : 0.0;
                src_count[j] += nv;
            }
        }
        /* ZeRO-3: every forward gathers the parameters, so every rank runs
         * as many as the rank with the most micro-batches of this source */
        uint32_t nb = (n + micro - 1) / micro;
        if (!rc && (uint32_t)rank >= nb % world && nb % world)
            rc = model_forward_join(m, err, err_len);
    }
    if (!rc) rc = dist_allreduce(d, red, 4 + 2 * n_src, DIST_F64, DIST_SUM, err, err_len);
    for (int r = 0; r < 2; r++)
        loss_out[r] = count[r] ? sum[r] / count[r] : NAN;
    for (int j = 0; j < n_src; j++)
        loss_out[2 + j] = src_count[j] ? src_sum[j] / src_count[j] : NAN;
    free(win), free(inp), free(tgt);
    return rc;
}

/* The role aggregates val/domain and val/general, then val/NAME for each
 * [[data.sources]] table (the shorthand's sources are the aggregates). */
static int write_eval(Metrics *mf, const Config *c, const Stream *s, int step, long long tokens,
                      const double *loss, char *err, size_t err_len) {
    if (!mf) return 0; /* not rank 0 */
    const int n_split = 2 + (c->data.n_sources ? stream_n_sources(s) : 0);
    for (int r = 0; r < n_split; r++) {
        if (isnan(loss[r])) continue;
        char split[96];
        snprintf(split, sizeof split, "val/%s",
                 r == 0 ? "domain" : r == 1 ? "general" : stream_source_name(s, r - 2));
        MetricsRec rec;
        metrics_rec_begin(&rec, "eval");
        metrics_rec_int(&rec, "step", step);
        metrics_rec_int(&rec, "tokens", tokens);
        metrics_rec_str(&rec, "split", split);
        metrics_rec_num(&rec, "loss", "%.6f", loss[r]);
        if (metrics_write(mf, &rec, err, err_len)) return 1;
        progress_end();
        printf("eval step %d: %s loss %.4f (ppl %.2f)\n", step, split, loss[r], exp(loss[r]));
    }
    return 0;
}

/* ---------------- the run ---------------- */

/* Everything a run holds, made by train_setup, freed by train_teardown. */
typedef struct {
    const Config *c;
    Dist *d;
    int rank, world, lead;
    const Ops *ops;
    Comm *comm;
    Model *m;
    Stream *s;
    Metrics *mf; /* rank 0 only */
    LrSchedule sched;
    AdamWConfig opt;
    CkptState resumed; /* the trainer state of the checkpoint resumed (or continued) from */
    TrainCkpt ckpt;    /* what every checkpoint carries */
    char *config_text; /* config_to_toml */
    char run_dir[CONFIG_PATH_LEN * 2];
    char run_id[20]; /* 16 hex digits, RUN/run.json (rank 0's) */
    Tokenizer *tok;                    /* copied into checkpoints; NULL: none */
    int T, B, micro, B_local, n_micro; /* seq_len, global batch, micro-batch rows */
    uint32_t *batch;                   /* (B_local, T + 1) this rank's windows of the step */
    int32_t *src_ids;                  /* (B_local) source of each window */
    int32_t *inp, *tgt;                /* (micro, T) */
    int *roles;                        /* (micro) StreamRole of each row, for MoE routing metrics */
    int start_step;
    int64_t adam_t0;   /* AdamW steps before step 0 (a continued run's): step s is t = adam_t0 + s + 1 */
    long long tokens;  /* trained on so far, all ranks */
    uint64_t *samples; /* (stream_n_sources) drawn from each source so far, all ranks */
    /* rank 0 of a job: a metrics.jsonl write failed (the cause); the next
     * step's sums tell every rank, and all stop after a checkpoint */
    int metrics_down;
    char metrics_err[1100];
    int bos; /* the tokenizer's BOS when it starts every document with one, else -1 */
    TaskSet **tasks; /* (n_tasks) eval.tasks files, scored at each checkpoint on every rank */
    int n_tasks;
    int tasks_off; /* a scoring failed: no more task scoring in this run */
    Hook *hook;    /* eval.command, rank 0; NULL: none */
} Trainer;

/* The sums of one step over all ranks, reduced as one array of doubles. */
typedef struct {
    double loss_sum;     /* Σ token losses */
    double targets;      /* Σ valid targets (all but a BOS after an EOS) */
    double role_loss[2]; /* Σ rows' mean token loss, per StreamRole */
    double role_rows[2]; /* rows per StreamRole */
    double stop;         /* > 0: some rank got SIGINT/SIGTERM; all stop after this step */
    double metrics_down; /* > 0: rank 0 cannot write metrics.jsonl; all stop after this step */
    double grad_sumsq;   /* ZeRO-1: Σ squared gradients of the shards (comm_grad_sumsq) */
    double src_loss[CONFIG_MAX_SOURCES]; /* Σ rows' mean token loss, per source */
    double src_rows[CONFIG_MAX_SOURCES]; /* rows per source */
} StepSums;
#define STEP_SUMS_N (sizeof(StepSums) / sizeof(double))

/* What a step reports. */
typedef struct {
    double lr, loss, loss_domain, loss_general; /* loss_*: NAN without rows of that role */
    double domain_frac;                         /* domain rows / global batch */
    double moe_aux;                             /* Σ micro-batches' MoE aux loss */
    double src_loss[CONFIG_MAX_SOURCES];        /* mean row loss per source, NAN: no rows */
    float grad_norm;                            /* before clipping */
    int stop;                                   /* finish the run after this step */
    int metrics_down;                           /* rank 0's metrics failed: stop after a checkpoint */
    int nonfinite;                              /* loss or gradient not finite: not stepped */
} StepOut;

/* Micro-batch k's token losses into the step's sums, its routing into the
 * MoE metrics. */
static int add_losses(Trainer *t, int k, StepSums *sums, char *err, size_t err_len) {
    const int T = t->T;
    for (int i = 0; i < t->micro; i++)
        t->roles[i] = stream_source_role(t->s, t->src_ids[k * t->micro + i]);
    if (model_moe_record_routing(t->m, t->roles, t->micro, err, err_len)) return 1;
    const float *tl = model_token_losses(t->m);
    for (int i = 0; i < t->micro; i++) {
        double ls = 0;
        for (int j = 0; j < T; j++)
            ls += tl[i * T + j];
        /* the row's mean over its valid targets (an ignored one's loss is 0) */
        int nv = count_targets(t->tgt + (size_t)i * T, T);
        sums->targets += nv;
        double mean = nv ? ls / nv : 0.0;
        sums->role_loss[t->roles[i]] += mean;
        sums->role_rows[t->roles[i]]++;
        sums->src_loss[t->src_ids[k * t->micro + i]] += mean;
        sums->src_rows[t->src_ids[k * t->micro + i]]++;
        sums->loss_sum += ls;
    }
    return 0;
}

static void step_results(Trainer *t, const StepSums *sums, StepOut *o) {
    int rows_domain = (int)sums->role_rows[0], rows_general = (int)sums->role_rows[1];
    o->loss = sums->targets ? sums->loss_sum / sums->targets : NAN;
    o->loss_domain = rows_domain ? sums->role_loss[0] / rows_domain : NAN;
    o->loss_general = rows_general ? sums->role_loss[1] / rows_general : NAN;
    o->domain_frac = (double)rows_domain / t->B;
    for (int j = 0; j < stream_n_sources(t->s); j++) {
        o->src_loss[j] = sums->src_rows[j] ? sums->src_loss[j] / sums->src_rows[j] : NAN;
        t->samples[j] += (uint64_t)sums->src_rows[j];
    }
    o->stop = sums->stop > 0;
    o->metrics_down = sums->metrics_down > 0;
    o->nonfinite = !isfinite(o->loss) || !isfinite(o->grad_norm);
}

/* One optimizer step: micro-batches -> forward/backward -> gradient sync ->
 * clip -> AdamW. A non-finite loss or gradient norm is reported
 * (o->nonfinite) and not stepped on. */
static int train_step(Trainer *t, int step, StepOut *o, char *err, size_t err_len) {
    Model *m = t->m;
    StepSums sums = {0};
    const float grad_scale = 1.0f / ((float)t->B * t->T);
    *o = (StepOut){.lr = sched_lr(&t->sched, step)};
    if (stream_next_batch(t->s, (uint64_t)step, t->rank, t->world, t->batch, t->src_ids, err,
                          err_len))
        return 1;
    model_zero_grad(m);
    if (model_moe_begin_step(m, (int64_t)t->B * t->T, err, err_len)) return 1;
    for (int k = 0; k < t->n_micro; k++) {
        float loss;
        train_split_windows(t->batch + (size_t)k * t->micro * (t->T + 1), t->micro, t->T,
                      (int)stream_eos_id(t->s), t->bos, t->inp, t->tgt);
        if (comm_grad_sync_begin(t->comm, k == t->n_micro - 1, step, err, err_len)) return 1;
        if (model_forward_backward(m, t->inp, t->tgt, t->micro, t->T, grad_scale, &loss, err,
                                   err_len))
            return comm_fail(t->comm, step, err), 1; /* maybe the MoE counts' sum over NCCL */
        o->moe_aux += model_moe_aux_loss(m);
        if (add_losses(t, k, &sums, err, err_len)) return 1;
    }
    sums.stop = stop_requested;
    sums.metrics_down = t->metrics_down;
    if (comm_grad_sync_finish(t->comm, step, err, err_len)) return 1;
    sums.grad_sumsq = comm_grad_sumsq(t->comm);
    if (dist_allreduce(t->d, &sums, STEP_SUMS_N, DIST_F64, DIST_SUM, err, err_len)) return 1;
    o->grad_norm = comm_grad_norm(t->comm, sums.grad_sumsq);
    step_results(t, &sums, o);
    if (o->nonfinite) return 0;
    comm_optimizer_step(t->comm, &t->opt, (float)o->lr, (int)(t->adam_t0 + step + 1), o->grad_norm);
    return comm_params_gather(t->comm, step, err, err_len);
}

/* The event record and the console line of a non-finite step. */
static void report_nonfinite(Trainer *t, int step, const StepOut *o) {
    const char *what = model_find_nonfinite(t->m);
    const char *action = t->c->train.on_nonfinite;
    char err[256];
    if (!t->lead) return;
    progress_end();
    MetricsRec r;
    metrics_rec_begin(&r, "event");
    metrics_rec_int(&r, "step", step);
    metrics_rec_str(&r, "event", "nonfinite");
    metrics_rec_str(&r, "loss", isfinite(o->loss) ? "finite" : "nonfinite");
    metrics_rec_str(&r, "tensor", what ? what : "");
    metrics_rec_str(&r, "action", action);
    if (metrics_write(t->mf, &r, err, sizeof err)) fprintf(stderr, "dapt train: %s\n", err);
    fprintf(stderr, "dapt train: step %d: non-finite %s (loss %g, grad norm %g%s%s): %s\n", step,
            isfinite(o->loss) ? "gradient" : "loss", o->loss, o->grad_norm,
            what ? ", first bad tensor " : "", what ? what : "",
            strcmp(action, "skip") ? "stopping without a checkpoint" : "step skipped");
}

/* The step's train record (every rank builds it: the MoE fields reset the
 * routing window; rank 0 writes it) and its console fragment. */
static int write_train(Trainer *t, int step, const StepOut *o, double tok_s, char *console,
                       size_t console_len, char *err, size_t err_len) {
    MetricsRec r;
    metrics_rec_begin(&r, "train");
    metrics_rec_int(&r, "step", step + 1);
    metrics_rec_int(&r, "tokens", t->tokens);
    metrics_rec_num(&r, "loss", "%.6f", o->loss);
    metrics_rec_num(&r, "loss_domain", "%.6f", o->loss_domain);
    metrics_rec_num(&r, "loss_general", "%.6f", o->loss_general);
    metrics_rec_num(&r, "lr", "%.6g", o->lr);
    metrics_rec_num(&r, "grad_norm", "%.6g", o->grad_norm);
    metrics_rec_num(&r, "tok_s", "%.1f", tok_s);
    metrics_rec_num(&r, "domain_frac", "%.6f", o->domain_frac);
    metrics_rec_object_begin(&r, "samples");
    for (int j = 0; j < stream_n_sources(t->s); j++)
        metrics_rec_int(&r, stream_source_name(t->s, j), (long long)t->samples[j]);
    metrics_rec_object_end(&r);
    metrics_rec_object_begin(&r, "loss_by_source");
    for (int j = 0; j < stream_n_sources(t->s); j++)
        metrics_rec_num(&r, stream_source_name(t->s, j), "%.6f", o->src_loss[j]);
    metrics_rec_object_end(&r);
    if (moe_loop_step_fields(t->m, o->moe_aux, &r, console, console_len, err, err_len)) {
        metrics_rec_free(&r);
        return 1;
    }
    return metrics_write(t->mf, &r, err, err_len);
}

/* The eval records of the model after `step` steps. */
static int eval_and_write(Trainer *t, int step, char *err, size_t err_len) {
    double ev[2 + CONFIG_MAX_SOURCES];
    return evaluate(t->m, t->s, t->d, t->micro, t->T, t->bos, ev, err, err_len) ||
           write_eval(t->mf, t->c, t->s, step, t->tokens, ev, err, err_len);
}

/* err, prefixed with the rank (when there are several) and the step */
static int step_failed(const Trainer *t, int step, char *err, size_t err_len) {
    char msg[2600];
    if (t->world > 1)
        snprintf(msg, sizeof msg, "rank %d of %d: step %d: %s", t->rank, t->world, step, err);
    else
        snprintf(msg, sizeof msg, "step %d: %s", step, err);
    err_set(err, err_len, "%s", msg);
    return 1;
}

/* A write to metrics.jsonl failed on rank 0 (err says the file and the
 * cause) after step_done steps: a single-rank run stops, after a checkpoint
 * of them when it has made progress since its start. In a job the other
 * ranks do not know of it yet: rank 0 keeps the cause and goes on (0), the
 * next step's sums tell every rank (metrics_down), and all stop after a
 * checkpoint of that step (metrics_down_stop). */
static int metrics_failed_stop(Trainer *t, int step_done, double lr, char *err, size_t err_len) {
    char cause[1024], e2[256];
    snprintf(cause, sizeof cause, "%s", err);
    if (t->world > 1) {
        if (!t->metrics_down)
            snprintf(t->metrics_err, sizeof t->metrics_err, "after step %d: %s", step_done, cause);
        t->metrics_down = 1;
        return err[0] = 0, 0;
    }
    if (step_done <= t->start_step)
        return err_set(err, err_len, "after step %d: %s; stopping without a checkpoint", step_done,
                       cause);
    int bad = comm_gather_wait(t->comm, step_done - 1, e2, sizeof e2) ||
              train_ckpt_save(&t->ckpt, t->m, step_done, t->tokens, lr);
    return err_set(
        err, err_len, "after step %d: %s; stopping %s", step_done, cause,
        bad ? "(the checkpoint attempt failed too)"
            : "after a checkpoint of it (--resume continues once the file can be written)");
}

/* A job's stop after the checkpoint of step_done that rank 0's metrics
 * failure asked for (every rank returns 1 with the message). */
static int metrics_down_stop(const Trainer *t, int step_done, char *err, size_t err_len) {
    if (t->lead)
        return err_set(err, err_len,
                       "%s; stopping after a checkpoint of step %d (--resume continues once the "
                       "file can be written)",
                       t->metrics_err, step_done);
    return err_set(err, err_len,
                   "rank %d of %d: rank 0 cannot write metrics.jsonl; stopping after a checkpoint "
                   "of step %d",
                   t->rank, t->world, step_done);
}

/* eval.tasks on the model after `step` steps: every rank scores (the same
 * items in the same order, so a ZeRO-3 model's gathers match), rank 0
 * writes one "task" record per task. A scoring failure is reported and
 * ends task scoring for the run, never the run. */
static void score_tasks(Trainer *t, int step) {
    char err[2048];
    for (int f = 0; f < t->n_tasks && !t->tasks_off; f++) {
        TaskSet *ts = t->tasks[f];
        double t0 = now_s();
        if (tasks_score(ts, t->m, t->tok, t->c->eval.shots, err, sizeof err)) {
            t->tasks_off = 1;
            if (!t->lead) return;
            fprintf(stderr,
                    "dapt train: eval.tasks at step %d: %s; no more task scoring in this run "
                    "(training goes on)\n",
                    step, err);
            MetricsRec r;
            metrics_rec_begin(&r, "event");
            metrics_rec_int(&r, "step", step);
            metrics_rec_str(&r, "event", "tasks_failed");
            metrics_rec_str(&r, "error", err);
            if (metrics_write(t->mf, &r, err, sizeof err)) fprintf(stderr, "dapt train: %s\n", err);
            return;
        }
        for (int k = 0; t->lead && k < ts->n_tasks; k++) {
            const Task *tk = &ts->tasks[k];
            int mc = tk->type == TASK_MULTIPLE_CHOICE;
            MetricsRec r;
            metrics_rec_begin(&r, "task");
            metrics_rec_int(&r, "step", step);
            metrics_rec_int(&r, "tokens", t->tokens);
            metrics_rec_str(&r, "task", tk->name);
            metrics_rec_str(&r, "kind", mc ? "multiple_choice" : "perplexity");
            metrics_rec_int(&r, "n_items", tk->n_items);
            if (mc) {
                metrics_rec_num(&r, "acc", "%.6f", tk->acc);
                metrics_rec_num(&r, "acc_norm", "%.6f", tk->acc_norm);
                metrics_rec_int(&r, "shots", t->c->eval.shots);
            } else {
                metrics_rec_num(&r, "loss", "%.6f", tk->mean_loss);
                metrics_rec_num(&r, "ppl", "%.6g", tk->ppl);
                metrics_rec_num(&r, "bits_per_byte", "%.6f", tk->bits_per_byte);
            }
            metrics_rec_num(&r, "seconds", "%.3f", now_s() - t0);
            if (metrics_write(t->mf, &r, err, sizeof err)) fprintf(stderr, "dapt train: %s\n", err);
            if (mc)
                printf("task step %d: %s acc %.4f acc_norm %.4f\n", step, tk->name, tk->acc,
                       tk->acc_norm);
            else
                printf("task step %d: %s loss %.4f bits/byte %.4f\n", step, tk->name,
                       tk->mean_loss, tk->bits_per_byte);
        }
    }
}

/* What follows a checkpoint: eval.tasks, and eval.command in the
 * background on rank 0. */
static void after_checkpoint(Trainer *t, int step) {
    score_tasks(t, step);
    if (t->hook) {
        char dir[CONFIG_PATH_LEN * 3];
        snprintf(dir, sizeof dir, "%s/ckpt/step-%08d", t->run_dir, step);
        hook_start(t->hook, t->mf, step, dir);
    }
}

/* The steps from start_step on, with evaluation, checkpoints, metrics and
 * the console line; stops early on a non-finite step (on_nonfinite =
 * "stop") or a signal. */
static int train_loop(Trainer *t, char *err, size_t err_len) {
    const Config *c = t->c;
    const int steps = c->train.steps;
    const int tty = isatty(STDOUT_FILENO), every_print = steps / 20 > 0 ? steps / 20 : 1;
    /* the line rewritten in place: one process on a terminal (mpirun gives
     * its ranks a pty but forwards their output by lines) */
    const int live = tty && t->world == 1;
    double t_start = now_s(), t_drawn = 0;
    int steps_run = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (t->start_step == 0 && c->eval.every > 0 && eval_and_write(t, 0, err, err_len) &&
        (metrics_failed(t->mf) ? metrics_failed_stop(t, 0, 0, err, err_len)
                               : step_failed(t, 0, err, err_len)))
        return 1;
    for (int step = t->start_step; step < steps; step++) {
        StepOut o;
        char moe_console[64];
        double t0 = now_s();
        if (train_step(t, step, &o, err, err_len)) return step_failed(t, step, err, err_len);
        if (o.nonfinite) {
            report_nonfinite(t, step, &o);
            if (strcmp(c->train.on_nonfinite, "skip")) return err[0] = 0, 1;
            continue;
        }
        t->tokens += (long long)t->B * t->T;
        steps_run++;
        hook_poll(t->hook, t->mf);
        double tok_s = (double)t->B * t->T / (now_s() - t0);
        if (write_train(t, step, &o, tok_s, moe_console, sizeof moe_console, err, err_len) &&
            (metrics_failed(t->mf) ? metrics_failed_stop(t, step + 1, o.lr, err, err_len)
                                   : step_failed(t, step, err, err_len)))
            return 1;
        /* the terminal's line at most PROGRESS_HZ times a second (and at the end) */
        int draw = live ? now_s() - t_drawn >= 1.0 / PROGRESS_HZ || step + 1 == steps : tty;
        if (draw || (step + 1) % every_print == 0 || step == t->start_step || step + 1 == steps) {
            char eta[32], ld[16], lg[16];
            double per = (now_s() - t_start) / steps_run;
            fmt_duration(eta, sizeof eta, per * (steps - step - 1));
            fmt_loss(ld, sizeof ld, o.loss_domain);
            fmt_loss(lg, sizeof lg, o.loss_general);
            if (live && step > t->start_step) {
                /* the terminal's line, rewritten in place until another line comes */
                char bar[PROGRESS_BAR + 1];
                int fill = (int)((long long)PROGRESS_BAR * (step + 1) / steps);
                for (int i = 0; i < PROGRESS_BAR; i++)
                    bar[i] = i < fill ? '#' : '.';
                bar[PROGRESS_BAR] = 0;
                printf("\r[%s] %d/%d | loss %.4f (domain %s, general %s) | %.0f tok/s | lr %.2e%s "
                       "| ETA %s\033[K",
                       bar, step + 1, steps, o.loss, ld, lg, tok_s, o.lr, moe_console, eta);
                progress_open = 1;
                t_drawn = now_s();
            } else {
                printf("step %5d/%d | loss %.4f (domain %s, general %s) | lr %.2e | gnorm %.3f | "
                       "%.0f tok/s | domain %.2f%s | ETA %s\n",
                       step + 1, steps, o.loss, ld, lg, o.lr, o.grad_norm, tok_s, o.domain_frac,
                       moe_console, eta);
            }
            if (step == t->start_step && !strcmp(t->ops->name, "cpu")) {
                size_t peak;
                ops_cpu_mem(NULL, &peak);
                printf("  cpu backend memory: peak %zu bytes allocated (`dapt plan` predicts it)\n",
                       peak);
            }
            fflush(stdout);
        }
        int last = step + 1 == steps;
        /* the gather done on every rank before evaluation (outside the
         * timed step): a rank without evaluation windows runs no forward to
         * wait in, and the emulated NCCL (tests/cuemu) advances a rank's
         * collectives only when that rank waits */
        if (c->eval.every > 0 && ((step + 1) % c->eval.every == 0 || last) &&
            (comm_gather_wait(t->comm, step, err, err_len) ||
             eval_and_write(t, step + 1, err, err_len)) &&
            (metrics_failed(t->mf) ? metrics_failed_stop(t, step + 1, o.lr, err, err_len)
                                   : step_failed(t, step, err, err_len)))
            return 1;
        if ((c->ckpt.every > 0 && (step + 1) % c->ckpt.every == 0) || last || o.stop ||
            o.metrics_down) {
            progress_end();
            /* the records so far are on disk before the checkpoint that
             * follows them */
            if (metrics_sync(t->mf, err, err_len) &&
                metrics_failed_stop(t, step + 1, o.lr, err, err_len))
                return 1;
            /* the checkpoint reads the parameters: the gather must be done */
            if (comm_gather_wait(t->comm, step, err, err_len))
                return step_failed(t, step, err, err_len);
            if (train_ckpt_save(&t->ckpt, t->m, step + 1, t->tokens, o.lr))
                return err[0] = 0, 1; /* the failing rank said why */
            /* a stop (signal, metrics down) is not held up by evaluation */
            if (!o.stop && !o.metrics_down) after_checkpoint(t, step + 1);
            if (o.metrics_down || (last && t->metrics_down))
                return metrics_down_stop(t, step + 1, err, err_len);
        }
        if (o.stop && !last) {
            printf("dapt train: %s: stopped after step %d with a checkpoint; continue "
                   "with --resume\n",
                   stop_requested == SIGINT    ? "SIGINT received"
                   : stop_requested == SIGTERM ? "SIGTERM received"
                                               : "another rank received SIGINT/SIGTERM",
                   step + 1);
            return 0;
        }
    }
    progress_end();
    printf("dapt train: done, %d steps in %.1fs; metrics in %s/metrics.jsonl\n", steps_run,
           now_s() - t_start, t->run_dir);
    return 0;
}

/* --resume: the newest complete checkpoint of the run directory; its
 * trainer state must match the data stream. */
static int find_resume(const Trainer *t, char *path, size_t path_len, char *err, size_t err_len) {
    char why[1024];
    int f = ckpt_find_latest(t->run_dir, path, path_len, why, sizeof why);
    if (f < 0) return err_set(err, err_len, "--resume: %s", why);
    if (why[0] && t->lead)
        fprintf(stderr, "dapt train: --resume: %s; falling back to an older checkpoint\n", why);
    if (f > 0)
        return err_set(err, err_len,
                       "--resume: no complete checkpoint under %s/ckpt (start the run without "
                       "--resume)%s%s",
                       t->run_dir, why[0] ? "; " : "", why);
    return 0;
}

/* RUN/run.json's run id into id (17 bytes); 0 when read. */
static int read_run_id(const char *run_dir, char *id) {
    char path[CONFIG_PATH_LEN * 3], e[256];
    snprintf(path, sizeof path, "%s/run.json", run_dir);
    if (access(path, F_OK)) return 1;
    char *text = st_read_text(path, 1 << 16, e, sizeof e);
    cJSON *r = text ? cJSON_Parse(text) : NULL;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r, "run_id");
    int rc = !cJSON_IsString(j) || strlen(j->valuestring) != 16;
    if (!rc) snprintf(id, 17, "%s", j->valuestring);
    cJSON_Delete(r);
    free(text);
    return rc;
}

/* A new run id: 64 random bits as 16 hex digits (the clock and the pid
 * mixed in, should /dev/urandom be unreadable). */
static void new_run_id(char *id) {
    uint64_t v = hash_key((uint64_t)(now_s() * 1e9), (uint64_t)getpid()), r = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f && fread(&r, sizeof r, 1, f) == 1) v ^= r;
    if (f) fclose(f);
    snprintf(id, 17, "%016llx", (unsigned long long)v);
}

/* 1 when RUN holds a run: a non-empty metrics.jsonl or a step-*
 * checkpoint under ckpt/ (a run that failed before its first record left
 * nothing to lose; its run.json is replaced). */
static int run_dir_used(const char *run_dir) {
    char path[CONFIG_PATH_LEN * 3];
    struct stat sb;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (!stat(path, &sb) && S_ISREG(sb.st_mode) && sb.st_size > 0) return 1;
    snprintf(path, sizeof path, "%s/ckpt", run_dir);
    DIR *d = opendir(path);
    int used = 0;
    for (struct dirent *e; d && !used && (e = readdir(d));) used = !strncmp(e->d_name, "step-", 5);
    if (d) closedir(d);
    return used;
}

/* Rank 0: the run directory belongs to one run. A new run refuses a RUN
 * that holds one (or, with --overwrite, moves it aside) and takes a new run
 * id; --resume keeps RUN's run id (run.json), else the checkpoint's, else
 * (a run from before run ids) a new one. */
static int claim_run_dir(Trainer *t, const TrainArgs *a, char *err, size_t err_len) {
    if (!t->lead) return 0;
    if (a->resume) {
        if (read_run_id(t->run_dir, t->run_id)) t->run_id[0] = 0; /* after the load */
        return 0;
    }
    if (run_dir_used(t->run_dir)) {
        char aside[CONFIG_PATH_LEN * 3], stamp[32];
        time_t now = time(NULL);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", gmtime(&now));
        if (!a->overwrite)
            return err_set(err, err_len,
                           "%s already holds a run (metrics.jsonl or checkpoints): "
                           "continue it with --resume, or start a new run there with "
                           "--overwrite (which moves the old one aside to %s.old-%s), or "
                           "choose another run.name",
                           t->run_dir, t->run_dir, stamp);
        snprintf(aside, sizeof aside, "%s.old-%s", t->run_dir, stamp);
        if (!access(aside, F_OK))
            snprintf(aside, sizeof aside, "%s.old-%s-%ld", t->run_dir, stamp, (long)getpid());
        if (rename(t->run_dir, aside))
            return err_set(err, err_len, "--overwrite: cannot move %s to %s: %s", t->run_dir,
                           aside, strerror(errno));
        printf("--overwrite: moved the previous run aside: %s -> %s\n", t->run_dir, aside);
    }
    new_run_id(t->run_id);
    return 0;
}

/* The run directory (rank 0's): run.json, config.resolved.toml and
 * metrics.jsonl. */
static int open_run_dir(Trainer *t, char *err, size_t err_len) {
    char path[CONFIG_PATH_LEN * 3], js[64];
    if (!t->lead) return 0;
    if (mkdir_p(t->run_dir, err, err_len)) return 1;
    if (!t->run_id[0]) /* resumed without run ids anywhere */
        new_run_id(t->run_id);
    snprintf(path, sizeof path, "%s/run.json", t->run_dir);
    snprintf(js, sizeof js, "{\"run_id\": \"%s\"}\n", t->run_id);
    if (hf_write_file_atomic(path, js, err, err_len)) return 1;
    snprintf(path, sizeof path, "%s/config.resolved.toml", t->run_dir);
    if (config_write(t->c, path, err, err_len)) return 1;
    if (metrics_open(&t->mf, t->run_dir, err, err_len)) return 1;
    return t->c->log.tensorboard && metrics_tensorboard(t->mf, t->run_dir, err, err_len);
}

static void print_setup(const Trainer *t) {
    const ModelConfig *mc = model_config(t->m);
    if (!strcmp(t->ops->name, "cpu") && ops_cpu_blas_hint()) printf("%s\n", ops_cpu_blas_hint());
    printf("dapt train: %s, %s %d layers d_model %d (%.2fM params) on %s; %d steps of %d x %d "
           "tokens\n",
           t->run_dir, model_arch_name(mc->arch), mc->n_layer, mc->d_model,
           model_num_params(t->m) / 1e6, t->ops->name, t->c->train.steps, t->B, t->T);
    comm_print(t->comm, t->B_local);
    for (int j = 0; j < stream_n_sources(t->s); j++)
        printf("  source %-8s %12llu tokens, %llu windows per epoch\n", stream_source_name(t->s, j),
               (unsigned long long)stream_source_tokens(t->s, j),
               (unsigned long long)stream_source_windows(t->s, j));
}

/* model.init_optimizer: where the continued run starts. With the
 * checkpoint's data stream (same fingerprint: sources, shards, seed,
 * seq_len, global_batch, steps, mixture) it goes on from the checkpoint's
 * step, as --resume would but in its own run directory; else it is a new
 * run of train.steps steps from step 0 of its own stream and schedule,
 * AdamW's step count going on from the checkpoint's. */
static void continue_run(Trainer *t, const char *fp) {
    const CkptState *r = &t->resumed;
    if (r->data_fingerprint && !strcmp(r->data_fingerprint, fp) &&
        r->step <= t->c->train.steps) {
        t->start_step = (int)r->step;
        t->tokens = r->tokens;
        t->adam_t0 = r->adam_step - r->step;
        printf("continuing %s from step %d: the same data stream, at its position\n",
               t->c->model.init_from, t->start_step);
    } else {
        t->adam_t0 = r->adam_step;
        printf("continuing %s (AdamW step %lld): a new data stream and schedule from step 0\n",
               t->c->model.init_from, (long long)r->adam_step);
    }
}

/* eval.tasks: every file of every glob, loaded (and so checked) before
 * the first step. */
static int load_tasks(Trainer *t, char *err, size_t err_len) {
    const ConfigList *l = &t->c->eval.tasks;
    if (l->n && !t->tok)
        return err_set(err, err_len,
                       "eval.tasks needs a tokenizer: set data.tokenizer (or model.init_from "
                       "with one)");
    for (int i = 0; i < l->n; i++) {
        glob_t g;
        if (glob(l->items[i], 0, NULL, &g) || g.gl_pathc == 0) {
            globfree(&g);
            return err_set(err, err_len, "eval.tasks: \"%s\" matches no file", l->items[i]);
        }
        for (size_t j = 0; j < g.gl_pathc; j++) {
            TaskSet **nt = realloc(t->tasks, (size_t)(t->n_tasks + 1) * sizeof *nt);
            if (!nt) {
                globfree(&g);
                return err_set(err, err_len, "out of memory");
            }
            t->tasks = nt;
            if (tasks_load(&t->tasks[t->n_tasks], g.gl_pathv[j], err, err_len)) {
                globfree(&g);
                return 1;
            }
            t->n_tasks++;
        }
        globfree(&g);
    }
    return 0;
}

/* Everything a run needs, from the config: the collectives, the backend,
 * the model (resumed or from its base), the data stream, the run
 * directory and the step's buffers. On failure what was made stays in t
 * for train_teardown. */
static int train_setup(Trainer *t, const TrainArgs *a, char *err, size_t err_len) {
    const Config *c = &a->cfg;
    char resume_path[CONFIG_PATH_LEN * 3], fp[32];
    t->c = c, t->d = a->dist;
    t->rank = dist_rank(t->d), t->world = dist_world(t->d), t->lead = t->rank == 0;
    t->T = c->data.seq_len, t->B = c->train.global_batch, t->micro = c->train.micro_batch;
    if (t->B % (t->world * t->micro))
        return err_set(err, err_len,
                       "train.global_batch = %d is not a multiple of %d ranks x "
                       "train.micro_batch = %d",
                       t->B, t->world, t->micro);
    t->B_local = t->B / t->world, t->n_micro = t->B_local / t->micro;
    if (comm_open(t->d, c, &t->comm, err, err_len)) return 1;
    char why[1024];
    const OpsOptions ops_opt = config_to_ops_options(c); /* [cuda] */
    if (!(t->ops = ops_get(c->run.device, &ops_opt, why, sizeof why)))
        return err_set(err, err_len, "run.device: %s", why);
    /* the data first: a config without data (or with a bad shard) fails in
     * milliseconds, before a model is built or the run directory claimed */
    if (open_stream(c, c->train.steps, &t->s, err, err_len)) return 1;
    snprintf(t->run_dir, sizeof t->run_dir, "%s/%s", c->run.out_dir, c->run.name);
    if (claim_run_dir(t, a, err, err_len) ||
        (a->resume && find_resume(t, resume_path, sizeof resume_path, err, err_len)))
        return 1;
    t->m = load_model(c, t->ops, a->resume ? resume_path : NULL, &t->resumed,
                      comm_zero_world(t->comm), t->rank, err, err_len);
    if (!t->m || comm_bind(t->comm, t->m, t->ops, err, err_len)) return 1;
    if (config_check_model(c, model_config(t->m), err, err_len) ||
        moe_loop_configure(t->m, c, err, err_len) ||
        apply_recompute(t->m, c, err, err_len) ||
        config_to_schedule(c, &t->sched, err, err_len) ||
        check_vocab(c, t->m, t->s, &t->tok, err, err_len))
        return 1;
    t->bos = t->tok && tokenizer_add_bos(t->tok) ? tokenizer_bos_id(t->tok) : -1;
    if (c->data.doc_mask &&
        model_set_doc_mask(t->m, (int)stream_eos_id(t->s), c->data.reset_positions, err, err_len))
        return 1;
    uint64_t fingerprint = stream_fingerprint(t->s);
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)fingerprint);
    if (a->resume) {
        const char *was = t->resumed.data_fingerprint;
        if (!was || strcmp(was, fp))
            return err_set(err, err_len,
                           "--resume: the data stream differs from the checkpoint's "
                           "(fingerprint %s now, %s in %s): same shards, mixture, seed, seq_len, "
                           "global_batch and steps are needed for an exact resume",
                           fp, was ? was : "(none)", resume_path);
        t->start_step = (int)t->resumed.step;
        t->tokens = t->resumed.tokens;
        t->adam_t0 = t->resumed.adam_step - t->resumed.step;
        if (t->lead && !t->run_id[0] && t->resumed.run_id && strlen(t->resumed.run_id) == 16)
            snprintf(t->run_id, sizeof t->run_id, "%s", t->resumed.run_id);
        printf("resuming from %s (step %d)\n", resume_path, t->start_step);
    } else if (c->model.init_optimizer) {
        continue_run(t, fp);
    }
    t->config_text = config_to_toml(c);
    if (!t->config_text) return err_set(err, err_len, "out of memory writing the resolved config");
    if (a->resume && t->resumed.config_text && t->resumed.config_text[0]) {
        char changed[2048], why[3072];
        if (train_ckpt_compare_config(t->resumed.config_text, t->config_text, changed,
                                      sizeof changed, why, sizeof why))
            return err_set(err, err_len, "--resume from %s: %s", resume_path, why);
        if (changed[0]) printf("--resume: changed since the checkpoint: %s\n", changed);
    }
    if (open_run_dir(t, err, err_len)) return 1;
    t->opt = config_to_adamw(c);
    t->ckpt = (TrainCkpt){.run_dir = t->run_dir,
                          .keep = c->ckpt.keep,
                          .seed = (uint64_t)c->run.seed,
                          .fingerprint = fingerprint,
                          .adam_t0 = t->adam_t0,
                          .config_text = t->config_text,
                          .run_id = t->run_id,
                          .tokenizer = t->tok,
                          .d = t->d,
                          .pieces = comm_zero_world(t->comm) ? comm_pieces(t->comm) : NULL};
    t->batch = malloc(sizeof(uint32_t) * t->B_local * (t->T + 1));
    t->src_ids = malloc(sizeof(int32_t) * t->B_local);
    t->inp = malloc(sizeof(int32_t) * t->micro * t->T);
    t->tgt = malloc(sizeof(int32_t) * t->micro * t->T);
    t->roles = malloc(sizeof(int) * t->micro);
    t->samples = malloc(sizeof(uint64_t) * stream_n_sources(t->s));
    if (!t->batch || !t->src_ids || !t->inp || !t->tgt || !t->roles || !t->samples)
        return err_set(err, err_len, "out of memory for the batch");
    for (int j = 0; j < stream_n_sources(t->s); j++)
        t->samples[j] = stream_source_samples(t->s, j, (uint64_t)t->start_step);
    if (load_tasks(t, err, err_len)) return 1;
    if (t->lead && c->eval.command[0] &&
        !(t->hook = hook_create(c->eval.command, t->run_dir, err, err_len)))
        return 1;
    print_setup(t);
    return 0;
}

static void train_teardown(Trainer *t) {
    comm_drain(t->comm); /* nothing may free the parameters while NCCL still writes them */
    metrics_close(t->mf);
    free(t->config_text), free(t->batch), free(t->src_ids), free(t->inp), free(t->tgt);
    free(t->roles), free(t->samples);
    ckpt_state_free(&t->resumed);
    for (int i = 0; i < t->n_tasks; i++)
        tasks_free(t->tasks[i]);
    free(t->tasks);
    hook_free(t->hook);
    tokenizer_free(t->tok);
    if (t->s) stream_close(t->s);
    model_free(t->m);
    comm_free(t->comm);
}

int train_run(const TrainArgs *a, char *err, size_t err_len) {
    Trainer t = {0};
    int rc = train_setup(&t, a, err, err_len) || train_loop(&t, err, err_len);
    progress_end(); /* before the caller's error line */
    /* a signal's stop does not wait for eval.command runs: they are killed */
    hook_finish(t.hook, t.mf, stop_requested ? 0 : a->cfg.eval.command_wait_s);
    train_teardown(&t);
    return rc;
}
