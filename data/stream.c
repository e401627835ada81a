/* data/stream.c: the mixture stream (see data/stream.h and docs/data.md).
 *
 * Layout: each Source lists its train frames (over its shards in sorted file
 * order), caches the frame order and token offsets of the two most recent
 * epochs and the most recently decoded frames. sample_at() maps (step, slot)
 * to (source, epoch, window) with pure functions of the config and copies the
 * window out of decoded frames. The prefetch thread runs assemble() for the
 * next steps into a ring of batches; all decoding is serialised by read_mu,
 * so stream_sample() may run while the thread works.
 *
 * Invariants: the tokens of (step, slot) never depend on call order, rank
 * count, cache state or prefetch depth; every shard of every source shares
 * one vocabulary, EOS id and tokenizer hash; every source has at least one
 * window per epoch. */
#define _GNU_SOURCE
#include "data/stream.h"
#include "kernels/util.h"

#include <glob.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/hash.h"
#include "data/shard.h"

#define ERR_LEN 1024

typedef struct {
    int64_t epoch; /* -1: empty */
    uint32_t *order; /* (n_frames) frame ids in epoch order */
    uint64_t *start; /* (n_frames + 1) token offset of each in the epoch stream */
} Epoch;

typedef struct {
    int64_t frame; /* -1: empty */
    uint64_t used;
    uint32_t *tok; /* (max_frame_tokens) */
} CachedFrame;

typedef struct {
    char *name;
    StreamRole role;
    int role_index; /* index among the sources of its role */
    uint64_t key;   /* hash of (seed, name) */
    Shard **shards;
    int n_shards;
    uint64_t n_frames, tokens, windows;
    uint32_t *f_shard, *f_local, *f_len; /* (n_frames) */
    uint32_t max_frame_tokens;
    Epoch ep[2];
    int ep_victim;
    CachedFrame *cache;
    uint32_t n_cache;
    uint64_t clock;
    Shard **val;
    int n_val;
    uint32_t n_eval;
    uint32_t *val_buf;
} Source;

typedef struct {
    int ready;
    uint64_t step;
    int rank, world, rc;
    char err[ERR_LEN];
    uint32_t *tokens;
    int32_t *src;
} Slot;

struct Stream {
    StreamConfig cfg;
    Source *src;
    int n_src;
    MixSchedule *sched;
    MixSplit *split[2];
    int *role_src[2]; /* role -> its sources' indices */
    int n_role[2];
    uint32_t vocab, eos;
    ShardHeader ref; /* header of the first shard opened: the stream's tokenizer */
    int have_ref;
    char ref_path[4096];
    uint64_t fingerprint;
    pthread_mutex_t read_mu;
    /* prefetch */
    int depth;
    Slot *slot;
    pthread_t thread;
    int thread_on, quit, active;
    uint64_t next_step, want_step, gen;
    int rank, world;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Expands the globs into a sorted, duplicate-free list of paths. */
static int expand(const char *src, const char *what, const char *const *globs, int n, char ***paths_out,
                  int *n_out, char *err, size_t errlen) {
    char **paths = NULL;
    int np = 0;
    for (int g = 0; g < n; g++) {
        glob_t gl;
        int rc = glob(globs[g], GLOB_ERR, NULL, &gl);
        if (rc != 0 || gl.gl_pathc == 0) {
            if (rc == 0) globfree(&gl);
            for (int i = 0; i < np; i++) free(paths[i]);
            free(paths);
            return err_set(err, errlen, "source '%s': %s glob '%s' matched no files", src, what,
                           globs[g]);
        }
        char **p = realloc(paths, (np + gl.gl_pathc) * sizeof *p);
        if (!p) {
            globfree(&gl);
            return err_set(err, errlen, "out of memory");
        }
        paths = p;
        for (size_t i = 0; i < gl.gl_pathc; i++) paths[np++] = strdup(gl.gl_pathv[i]);
        globfree(&gl);
    }
    qsort(paths, (size_t)np, sizeof *paths, cmp_str);
    int m = 0;
    for (int i = 0; i < np; i++) {
        if (m > 0 && !strcmp(paths[m - 1], paths[i])) free(paths[i]);
        else paths[m++] = paths[i];
    }
    *paths_out = paths;
    *n_out = m;
    return 0;
}

static uint64_t fp_str(uint64_t h, const char *s) { return hash_bytes(s, strlen(s) + 1, h); }

/* Opens the shards of one glob list, checking them against the stream's
 * vocabulary (set by the first shard seen). */
static int open_shards(Stream *st, Source *src, const char *what, const char *const *globs, int n,
                       Shard ***out, int *n_out, char *err, size_t errlen) {
    char **paths = NULL;
    int np = 0;
    if (expand(src->name, what, globs, n, &paths, &np, err, errlen)) return -1;
    Shard **sh = calloc((size_t)np, sizeof *sh);
    int rc = sh ? 0 : err_set(err, errlen, "out of memory");
    for (int i = 0; rc == 0 && i < np; i++) {
        rc = shard_open(&sh[i], paths[i], err, errlen);
        if (rc) break;
        const ShardHeader *h = shard_header(sh[i]);
        if (!st->have_ref) { /* the first shard sets the tokenizer of the stream */
            st->ref = *h;
            st->have_ref = 1;
            st->vocab = h->vocab_size;
            st->eos = h->eos_id;
            snprintf(st->ref_path, sizeof st->ref_path, "%s", paths[i]);
        }
        const ShardHeader *h0 = &st->ref;
        if (h->vocab_size != h0->vocab_size || h->eos_id != h0->eos_id ||
            h->tokenizer_hash != h0->tokenizer_hash) {
            rc = err_set(err, errlen,
                         "%s: vocab size %u, eos %u, tokenizer hash %016llx differ from %s's %u, "
                         "%u, %016llx "
                         "(all sources must use one tokenizer)",
                         paths[i], h->vocab_size, h->eos_id, (unsigned long long)h->tokenizer_hash,
                         st->ref_path, h0->vocab_size, h0->eos_id,
                         (unsigned long long)h0->tokenizer_hash);
            break;
        }
        const char *base = strrchr(paths[i], '/');
        st->fingerprint = fp_str(st->fingerprint, base ? base + 1 : paths[i]);
        st->fingerprint = hash_key(st->fingerprint, shard_file_bytes(sh[i]));
        st->fingerprint = hash_key(st->fingerprint, shard_header_hash(sh[i]));
    }
    for (int i = 0; i < np; i++) free(paths[i]);
    free(paths);
    if (rc) {
        for (int i = 0; i < np; i++) shard_close(sh[i]);
        free(sh);
        return -1;
    }
    *out = sh;
    *n_out = np;
    return 0;
}

static int source_init(Stream *st, Source *src, const StreamSourceConfig *c, char *err, size_t errlen) {
    const StreamConfig *cfg = &st->cfg;
    src->name = strdup(c->name ? c->name : "");
    src->role = c->role;
    src->key = hash_key(cfg->seed, hash_bytes(src->name, strlen(src->name), 0));
    src->ep[0].epoch = src->ep[1].epoch = -1;
    st->fingerprint = fp_str(st->fingerprint, src->name);
    st->fingerprint = hash_key(st->fingerprint, (uint64_t)c->role);
    uint64_t wbits;
    memcpy(&wbits, &c->weight, sizeof wbits);
    st->fingerprint = hash_key(st->fingerprint, wbits);
    if (!c->name || !c->name[0]) return err_set(err, errlen, "a source has no name");
    if (c->role != STREAM_DOMAIN && c->role != STREAM_GENERAL)
        return err_set(err, errlen, "source '%s': role must be domain or general", c->name);
    if (c->n_train_globs < 1)
        return err_set(err, errlen, "source '%s': no train shards given", c->name);
    if (open_shards(st, src, "train", c->train_globs, c->n_train_globs, &src->shards, &src->n_shards, err, errlen))
        return -1;
    for (int i = 0; i < src->n_shards; i++) {
        src->n_frames += shard_n_frames(src->shards[i]);
        src->tokens += shard_header(src->shards[i])->n_tokens;
        uint32_t t = shard_header(src->shards[i])->tokens_per_frame;
        if (t > src->max_frame_tokens) src->max_frame_tokens = t;
    }
    uint64_t T1 = (uint64_t)cfg->seq_len + 1;
    src->windows = src->tokens / T1;
    if (src->windows == 0)
        return err_set(err, errlen,
                       "source '%s': %llu train tokens in %d shard(s) (first: %s), fewer than one "
                       "window of seq_len + 1 = %llu tokens",
                       c->name, (unsigned long long)src->tokens, src->n_shards,
                       shard_path(src->shards[0]), (unsigned long long)T1);
    if (src->n_frames > UINT32_MAX)
        return err_set(err, errlen, "source '%s': more than 2^32 frames", c->name);
    src->f_shard = malloc(src->n_frames * sizeof *src->f_shard);
    src->f_local = malloc(src->n_frames * sizeof *src->f_local);
    src->f_len = malloc(src->n_frames * sizeof *src->f_len);
    for (int e = 0; e < 2; e++) {
        src->ep[e].order = malloc(src->n_frames * sizeof(uint32_t));
        src->ep[e].start = malloc((src->n_frames + 1) * sizeof(uint64_t));
        if (!src->ep[e].order || !src->ep[e].start) return err_set(err, errlen, "out of memory");
    }
    src->n_cache = cfg->cache_frames;
    src->cache = calloc(src->n_cache, sizeof *src->cache);
    if (!src->f_shard || !src->f_local || !src->f_len || !src->cache)
        return err_set(err, errlen, "out of memory");
    for (uint32_t i = 0; i < src->n_cache; i++) {
        src->cache[i].frame = -1;
        src->cache[i].tok = malloc((size_t)src->max_frame_tokens * sizeof(uint32_t));
        if (!src->cache[i].tok) return err_set(err, errlen, "out of memory");
    }
    uint64_t f = 0;
    for (int i = 0; i < src->n_shards; i++)
        for (uint64_t k = 0; k < shard_n_frames(src->shards[i]); k++, f++) {
            src->f_shard[f] = (uint32_t)i;
            src->f_local[f] = (uint32_t)k;
            src->f_len[f] = (uint32_t)shard_frame_tokens(src->shards[i], k);
        }
    if (c->n_val_globs > 0) {
        if (open_shards(st, src, "val", c->val_globs, c->n_val_globs, &src->val, &src->n_val, err, errlen))
            return -1;
        uint64_t vt = 0;
        uint32_t maxf = 0;
        for (int i = 0; i < src->n_val; i++) {
            vt += shard_header(src->val[i])->n_tokens;
            if (shard_header(src->val[i])->tokens_per_frame > maxf) maxf = shard_header(src->val[i])->tokens_per_frame;
        }
        uint64_t nw = vt / T1;
        src->n_eval = (uint32_t)(nw < cfg->eval_windows ? nw : cfg->eval_windows);
        src->val_buf = malloc((size_t)maxf * sizeof(uint32_t) + 4);
        if (!src->val_buf) return err_set(err, errlen, "out of memory");
    }
    return 0;
}

static void source_free(Source *src) {
    for (int i = 0; i < src->n_shards; i++) shard_close(src->shards[i]);
    for (int i = 0; i < src->n_val; i++) shard_close(src->val[i]);
    for (uint32_t i = 0; src->cache && i < src->n_cache; i++) free(src->cache[i].tok);
    for (int e = 0; e < 2; e++) {
        free(src->ep[e].order);
        free(src->ep[e].start);
    }
    free(src->cache);
    free(src->shards);
    free(src->val);
    free(src->val_buf);
    free(src->f_shard);
    free(src->f_local);
    free(src->f_len);
    free(src->name);
}

static const Epoch *epoch_get(Source *src, int64_t e) {
    for (int i = 0; i < 2; i++)
        if (src->ep[i].epoch == e) {
            src->ep_victim = 1 - i;
            return &src->ep[i];
        }
    Epoch *ep = &src->ep[src->ep_victim];
    src->ep_victim = 1 - src->ep_victim;
    uint64_t key = hash_key(src->key, (uint64_t)e), pos = 0;
    for (uint64_t i = 0; i < src->n_frames; i++) {
        uint32_t f = (uint32_t)hash_perm(key, src->n_frames, i);
        ep->order[i] = f;
        ep->start[i] = pos;
        pos += src->f_len[f];
    }
    ep->start[src->n_frames] = pos;
    ep->epoch = e;
    return ep;
}

static const uint32_t *frame_get(Source *src, uint32_t f, char *err, size_t errlen) {
    CachedFrame *victim = &src->cache[0];
    for (uint32_t i = 0; i < src->n_cache; i++) {
        CachedFrame *c = &src->cache[i];
        if (c->frame == (int64_t)f) {
            c->used = ++src->clock;
            return c->tok;
        }
        if (c->used < victim->used) victim = c;
    }
    victim->frame = -1;
    if (shard_read_frame(src->shards[src->f_shard[f]], src->f_local[f], victim->tok, err, errlen)) return NULL;
    victim->frame = f;
    victim->used = ++src->clock;
    return victim->tok;
}

/* Copies window w of epoch e of the source into out (T+1 tokens). */
static int read_window(Stream *st, Source *src, int64_t e, uint64_t w, uint32_t *out, char *err, size_t errlen) {
    uint64_t T1 = (uint64_t)st->cfg.seq_len + 1, pos = w * T1, need = T1;
    const Epoch *ep = epoch_get(src, e);
    uint64_t lo = 0, hi = src->n_frames; /* last i with start[i] <= pos */
    while (hi - lo > 1) {
        uint64_t mid = (lo + hi) / 2;
        if (ep->start[mid] <= pos) lo = mid;
        else hi = mid;
    }
    for (uint64_t i = lo; need > 0; i++) {
        if (i >= src->n_frames)
            return err_set(err, errlen, "source '%s': window past the end (internal)", src->name);
        uint32_t f = ep->order[i];
        uint64_t off = pos - ep->start[i], k = src->f_len[f] - off;
        if (k == 0) continue;
        if (k > need) k = need;
        const uint32_t *tok = frame_get(src, f, err, errlen);
        if (!tok) return -1;
        memcpy(out, tok + off, k * sizeof *out);
        out += k;
        need -= k;
        pos += k;
    }
    return 0;
}

typedef struct {
    uint64_t step, cum_domain;
    uint32_t n_domain;
    uint64_t slot_key;
} StepInfo;

static StepInfo step_info(const Stream *st, uint64_t step) {
    StepInfo si = {.step = step};
    si.cum_domain = mix_cum_domain(st->sched, step);
    si.n_domain = (uint32_t)(mix_cum_domain(st->sched, step + 1) - si.cum_domain);
    si.slot_key = hash_key(st->cfg.seed ^ 0x736c6f74ULL, step);
    return si;
}

static int sample_at(Stream *st, const StepInfo *si, uint32_t q, uint32_t *out, int32_t *src_id, char *err,
                     size_t errlen) {
    const uint64_t B = st->cfg.global_batch, K = st->cfg.shuffle_windows;
    uint64_t u = hash_perm(si->slot_key, B, q), k_role;
    int role;
    if (u < si->n_domain) {
        role = STREAM_DOMAIN;
        k_role = si->cum_domain + u;
    } else {
        role = STREAM_GENERAL;
        k_role = si->step * B - si->cum_domain + (u - si->n_domain);
    }
    uint64_t k;
    int j = st->role_src[role][mix_split_source(st->split[role], k_role, &k)];
    Source *src = &st->src[j];
    uint64_t W = src->windows, e = k / W, i = k % W, b = i / K, o = i % K;
    uint64_t blen = (W - b * K < K) ? W - b * K : K;
    uint64_t w = b * K + hash_perm(hash_key(hash_key(src->key, e), b + 0x626c6bULL), blen, o);
    *src_id = j;
    return read_window(st, src, (int64_t)e, w, out, err, errlen);
}

/* The local batch of (step, rank, world), under read_mu. */
static int assemble(Stream *st, uint64_t step, int rank, int world, uint32_t *tokens, int32_t *src_ids,
                    char *err, size_t errlen) {
    uint32_t bl = st->cfg.global_batch / (uint32_t)world;
    size_t T1 = (size_t)st->cfg.seq_len + 1;
    StepInfo si = step_info(st, step);
    int rc = 0;
    pthread_mutex_lock(&st->read_mu);
    for (uint32_t i = 0; rc == 0 && i < bl; i++)
        rc = sample_at(st, &si, (uint32_t)rank * bl + i, tokens + i * T1, &src_ids[i], err, errlen);
    pthread_mutex_unlock(&st->read_mu);
    return rc;
}

static void *prefetch_main(void *arg) {
    Stream *st = arg;
    pthread_mutex_lock(&st->mu);
    while (!st->quit) {
        Slot *sl = &st->slot[st->next_step % (uint64_t)st->depth];
        if (!st->active || sl->ready || st->next_step >= st->want_step + (uint64_t)st->depth) {
            pthread_cond_wait(&st->cv, &st->mu);
            continue;
        }
        uint64_t step = st->next_step, gen = st->gen;
        int rank = st->rank, world = st->world;
        pthread_mutex_unlock(&st->mu);
        char err[ERR_LEN] = "";
        int rc = assemble(st, step, rank, world, sl->tokens, sl->src, err, sizeof err);
        pthread_mutex_lock(&st->mu);
        if (gen != st->gen) continue; /* restarted meanwhile: discard */
        sl->ready = 1;
        sl->step = step;
        sl->rank = rank;
        sl->world = world;
        sl->rc = rc;
        memcpy(sl->err, err, sizeof err);
        st->next_step++;
        pthread_cond_broadcast(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

int stream_open(Stream **out, const StreamConfig *cfg_in, char *err, size_t errlen) {
    *out = NULL;
    StreamConfig cfg = *cfg_in;
    if (!cfg.shuffle_windows) cfg.shuffle_windows = 64;
    if (!cfg.eval_windows) cfg.eval_windows = 64;
    if (!cfg.cache_frames) cfg.cache_frames = 8;
    if (cfg.n_sources < 1) return err_set(err, errlen, "no data sources");
    if (cfg.seq_len < 1 || cfg.global_batch < 1 || cfg.total_steps < 1)
        return err_set(err, errlen, "seq_len, global_batch and total_steps must be positive");
    if (cfg.prefetch < 0 || cfg.prefetch > 64)
        return err_set(err, errlen, "prefetch %d not in [0, 64]", cfg.prefetch);
    Stream *st = calloc(1, sizeof *st);
    if (!st) return err_set(err, errlen, "out of memory");
    st->cfg = cfg;
    st->n_src = cfg.n_sources;
    st->src = calloc((size_t)cfg.n_sources, sizeof *st->src);
    pthread_mutex_init(&st->read_mu, NULL);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->fingerprint = hash_bytes("dapt-stream-1", 13, 0);
    st->fingerprint = hash_key(st->fingerprint, cfg.seed);
    st->fingerprint = hash_key(st->fingerprint, cfg.seq_len);
    st->fingerprint = hash_key(st->fingerprint, cfg.global_batch);
    st->fingerprint = hash_key(st->fingerprint, cfg.total_steps);
    st->fingerprint = hash_key(st->fingerprint, cfg.shuffle_windows);
    for (int k = 0; k < cfg.n_schedule; k++) {
        uint64_t a, b;
        memcpy(&a, &cfg.schedule[k].progress, 8);
        memcpy(&b, &cfg.schedule[k].fraction, 8);
        st->fingerprint = hash_key(hash_key(st->fingerprint, a), b);
    }
    if (!st->src) goto oom;
    for (int j = 0; j < cfg.n_sources; j++) {
        for (int i = 0; i < j; i++)
            if (cfg.sources[i].name && cfg.sources[j].name && !strcmp(cfg.sources[i].name, cfg.sources[j].name)) {
                err_set(err, errlen, "two sources are named '%s'", cfg.sources[j].name);
                goto bad;
            }
        if (source_init(st, &st->src[j], &cfg.sources[j], err, errlen)) {
            st->n_src = j + 1;
            goto bad;
        }
    }
    if (mix_schedule_create(&st->sched, cfg.schedule, cfg.n_schedule, cfg.total_steps, cfg.global_batch, err, errlen))
        goto bad;
    double lo, hi;
    mix_schedule_range(st->sched, &lo, &hi);
    for (int r = 0; r < 2; r++) {
        double w[MIX_MAX_SOURCES];
        int n_explicit = 0;
        st->role_src[r] = malloc((size_t)st->n_src * sizeof(int));
        if (!st->role_src[r]) goto oom;
        for (int j = 0; j < st->n_src; j++) {
            if (st->src[j].role != (StreamRole)r) continue;
            if (st->n_role[r] == MIX_MAX_SOURCES) {
                err_set(err, errlen, "more than %d sources of one role", MIX_MAX_SOURCES);
                goto bad;
            }
            n_explicit += cfg.sources[j].weight > 0;
            w[st->n_role[r]] = cfg.sources[j].weight > 0 ? cfg.sources[j].weight : (double)st->src[j].tokens;
            st->src[j].role_index = st->n_role[r];
            st->role_src[r][st->n_role[r]++] = j;
        }
        const char *rname = r == STREAM_DOMAIN ? "domain" : "general";
        if (n_explicit && n_explicit != st->n_role[r]) {
            err_set(err, errlen, "%s sources: give every one a weight or none (token-proportional)",
                    rname);
            goto bad;
        }
        if (st->n_role[r] == 0) {
            if ((r == STREAM_DOMAIN && hi > 0) || (r == STREAM_GENERAL && lo < 1)) {
                err_set(err, errlen, "the schedule asks for %s samples but no source has role %s",
                        rname, rname);
                goto bad;
            }
            continue;
        }
        if (mix_split_create(&st->split[r], w, st->n_role[r], err, errlen)) goto bad;
    }
    st->depth = cfg.prefetch;
    if (st->depth > 0) {
        size_t T1 = (size_t)cfg.seq_len + 1;
        st->slot = calloc((size_t)st->depth, sizeof *st->slot);
        if (!st->slot) goto oom;
        for (int i = 0; i < st->depth; i++) {
            st->slot[i].tokens = malloc(cfg.global_batch * T1 * sizeof(uint32_t));
            st->slot[i].src = malloc(cfg.global_batch * sizeof(int32_t));
            if (!st->slot[i].tokens || !st->slot[i].src) goto oom;
        }
        if (pthread_create(&st->thread, NULL, prefetch_main, st)) {
            err_set(err, errlen, "cannot start the prefetch thread");
            goto bad;
        }
        st->thread_on = 1;
    }
    *out = st;
    return 0;
oom:
    err_set(err, errlen, "out of memory");
bad:
    stream_close(st);
    return -1;
}

void stream_close(Stream *st) {
    if (!st) return;
    if (st->thread_on) {
        pthread_mutex_lock(&st->mu);
        st->quit = 1;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->thread, NULL);
    }
    for (int i = 0; st->slot && i < st->depth; i++) {
        free(st->slot[i].tokens);
        free(st->slot[i].src);
    }
    free(st->slot);
    for (int j = 0; st->src && j < st->n_src; j++) source_free(&st->src[j]);
    free(st->src);
    for (int r = 0; r < 2; r++) {
        mix_split_free(st->split[r]);
        free(st->role_src[r]);
    }
    mix_schedule_free(st->sched);
    pthread_mutex_destroy(&st->read_mu);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}

int stream_next_batch(Stream *st, uint64_t step, int rank, int world, uint32_t *tokens, int32_t *source_ids,
                      char *err, size_t errlen) {
    if (world < 1 || rank < 0 || rank >= world || st->cfg.global_batch % (uint32_t)world)
        return err_set(err, errlen,
                       "rank %d of world %d: global batch %u must divide evenly over the ranks",
                       rank, world, st->cfg.global_batch);
    if (st->depth == 0) return assemble(st, step, rank, world, tokens, source_ids, err, errlen);
    uint32_t bl = st->cfg.global_batch / (uint32_t)world;
    size_t T1 = (size_t)st->cfg.seq_len + 1;
    pthread_mutex_lock(&st->mu);
    if (!st->active || step != st->want_step || rank != st->rank || world != st->world) {
        st->gen++;
        for (int i = 0; i < st->depth; i++) st->slot[i].ready = 0;
        st->active = 1;
        st->want_step = st->next_step = step;
        st->rank = rank;
        st->world = world;
        pthread_cond_broadcast(&st->cv);
    }
    Slot *sl = &st->slot[step % (uint64_t)st->depth];
    while (!(sl->ready && sl->step == step)) pthread_cond_wait(&st->cv, &st->mu);
    int rc = sl->rc;
    if (rc)
        err_set(err, errlen, "%s", sl->err);
    else {
        memcpy(tokens, sl->tokens, bl * T1 * sizeof *tokens);
        memcpy(source_ids, sl->src, bl * sizeof *source_ids);
    }
    sl->ready = 0;
    st->want_step = step + 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int stream_sample(Stream *st, uint64_t step, uint32_t slot, uint32_t *tokens, int32_t *source_id, char *err,
                  size_t errlen) {
    if (slot >= st->cfg.global_batch)
        return err_set(err, errlen, "slot %u not below global batch %u", slot,
                       st->cfg.global_batch);
    StepInfo si = step_info(st, step);
    pthread_mutex_lock(&st->read_mu);
    int rc = sample_at(st, &si, slot, tokens, source_id, err, errlen);
    pthread_mutex_unlock(&st->read_mu);
    return rc;
}

uint32_t stream_domain_count(const Stream *st, uint64_t step) { return mix_count_at(st->sched, step); }
double stream_domain_fraction(const Stream *st, uint64_t step) { return mix_schedule_weight(st->sched, step); }
uint64_t stream_fingerprint(const Stream *st) { return st->fingerprint; }
int stream_n_sources(const Stream *st) { return st->n_src; }
const char *stream_source_name(const Stream *st, int j) { return st->src[j].name; }
StreamRole stream_source_role(const Stream *st, int j) { return st->src[j].role; }
uint64_t stream_source_tokens(const Stream *st, int j) { return st->src[j].tokens; }
uint64_t stream_source_windows(const Stream *st, int j) { return st->src[j].windows; }
uint32_t stream_vocab_size(const Stream *st) { return st->vocab; }
uint64_t stream_tokenizer_hash(const Stream *st) { return st->ref.tokenizer_hash; }
uint32_t stream_eos_id(const Stream *st) { return st->eos; }

uint64_t stream_source_samples(const Stream *st, int j, uint64_t steps) {
    const Source *src = &st->src[j];
    uint64_t nd = mix_cum_domain(st->sched, steps);
    uint64_t n_role = src->role == STREAM_DOMAIN ? nd : steps * st->cfg.global_batch - nd;
    return mix_split_count(st->split[src->role], src->role_index, n_role);
}

double stream_source_epochs(const Stream *st, int j, uint64_t step) {
    return (double)stream_source_samples(st, j, step + 1) / (double)st->src[j].windows;
}

uint32_t stream_eval_count(const Stream *st, int j) { return st->src[j].n_eval; }

int stream_eval_window(Stream *st, int j, uint32_t index, uint32_t *tokens, char *err, size_t errlen) {
    Source *src = &st->src[j];
    if (index >= src->n_eval)
        return err_set(err, errlen, "source '%s': eval window %u of %u", src->name, index,
                       src->n_eval);
    uint64_t T1 = (uint64_t)st->cfg.seq_len + 1, pos = index * T1, need = T1, base = 0;
    for (int i = 0; i < src->n_val && need > 0; i++) {
        Shard *sh = src->val[i];
        for (uint64_t f = 0; f < shard_n_frames(sh) && need > 0; f++) {
            uint64_t len = shard_frame_tokens(sh, f);
            if (pos < base + len) {
                if (shard_read_frame(sh, f, src->val_buf, err, errlen)) return -1;
                uint64_t off = pos - base, k = len - off < need ? len - off : need;
                memcpy(tokens, src->val_buf + off, k * sizeof *tokens);
                tokens += k;
                need -= k;
                pos += k;
            }
            base += len;
        }
    }
    return need ? err_set(err, errlen, "source '%s': val shards end inside eval window %u",
                          src->name, index)
                : 0;
}
