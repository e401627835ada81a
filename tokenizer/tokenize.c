/* tokenizer/tokenize.c: the tokenization pipeline (see tokenizer/tokenize.h).
 *
 * Three kinds of thread share a ring of NSLOT chunks, each a batch of whole
 * documents (about CHUNK_BYTES of text) with a sequence number:
 *   reader  (one)  fills EMPTY slots in sequence order          -> FILLED
 *   workers (n)    encode FILLED slots, claimed in order         -> DONE
 *   writer  (the calling thread) drains DONE slots in order      -> EMPTY
 * Chunk k always sits in slot k % NSLOT, so the writer sees documents in
 * input order whatever the thread count: the shards are byte-identical for
 * any --threads. The first error stops every thread; nothing is committed. */
#define _GNU_SOURCE
#include "tokenizer/tokenize.h"
#include "kernels/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/hash.h"
#include "data/shard.h"
#include "tokenizer/corpus.h"
#include "tokenizer/spm.h"
#include "tokenizer/tokenizer.h"

#define NSLOT 16
#define CHUNK_BYTES (256u << 10)
#define ERR_LEN 1024

enum { S_EMPTY, S_FILLING, S_FILLED, S_ENCODING, S_DONE };

typedef struct {
    int state;
    char *text;
    size_t text_len, text_cap;
    size_t *doc_off; /* (n_docs + 1) start of each document in text */
    size_t n_docs, docs_cap;
    uint32_t *tok; /* all documents' ids: [BOS] + the text's + EOS each */
    size_t n_tok, tok_cap;
    size_t *doc_end; /* (n_docs) end of each document's ids in tok */
    unsigned char *is_val;
    uint64_t bytes_read; /* input bytes consumed when the chunk was published */
} Chunk;

typedef struct {
    const TokOptions *o;
    const Tokenizer *tok;
    uint64_t val_limit; /* a document is val iff tok_doc_hash < val_limit */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    Chunk slot[NSLOT];
    uint64_t n_filled, n_claimed; /* chunks published by the reader / claimed by workers */
    int reader_done, abort;
    char err[ERR_LEN];
} Pipe;

uint64_t tok_doc_hash(const char *text, size_t n_bytes) { return hash_bytes(text, n_bytes, 0x76616c); }

void tok_options_default(TokOptions *o) {
    memset(o, 0, sizeof *o);
    o->name = "corpus";
    o->val_frac = 0.005;
    o->val_docs = -1;
    o->n_threads = 1;
    o->tokens_per_frame = 65536;
    o->shard_tokens = 256ull << 20;
    o->zstd_level = 3;
    o->max_line_bytes = 64u << 20;
}

/* Records the first error and wakes everyone. Caller holds mu. */
static void pipe_abort(Pipe *p, const char *msg) {
    if (!p->abort) snprintf(p->err, sizeof p->err, "%s", msg);
    p->abort = 1;
    pthread_cond_broadcast(&p->cv);
}

static int chunk_add(Chunk *c, const char *doc, size_t n) {
    if (c->text_len + n > c->text_cap) {
        size_t cap = 2 * (c->text_len + n);
        char *t = realloc(c->text, cap);
        if (!t) return -1;
        c->text = t;
        c->text_cap = cap;
    }
    if (c->n_docs + 2 > c->docs_cap) {
        size_t cap = 2 * (c->n_docs + 2);
        size_t *a = realloc(c->doc_off, cap * sizeof *a), *b = realloc(c->doc_end, cap * sizeof *b);
        unsigned char *v = realloc(c->is_val, cap);
        if (a) c->doc_off = a;
        if (b) c->doc_end = b;
        if (v) c->is_val = v;
        if (!a || !b || !v) return -1;
        c->docs_cap = cap;
    }
    c->doc_off[c->n_docs] = c->text_len;
    memcpy(c->text + c->text_len, doc, n);
    c->text_len += n;
    c->n_docs++;
    c->doc_off[c->n_docs] = c->text_len;
    return 0;
}

/* Waits for the slot of chunk `seq` to be EMPTY and claims it (NULL on abort). */
static Chunk *claim_empty(Pipe *p, uint64_t seq) {
    Chunk *c = &p->slot[seq % NSLOT];
    pthread_mutex_lock(&p->mu);
    while (!p->abort && c->state != S_EMPTY) pthread_cond_wait(&p->cv, &p->mu);
    if (p->abort) c = NULL;
    else {
        c->state = S_FILLING;
        c->text_len = c->n_docs = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return c;
}

static void publish(Pipe *p, Chunk *c, uint64_t bytes_read) {
    pthread_mutex_lock(&p->mu);
    c->bytes_read = bytes_read;
    c->state = S_FILLED;
    p->n_filled++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void *reader_main(void *arg) {
    Pipe *p = arg;
    const TokOptions *o = p->o;
    char err[ERR_LEN] = "";
    uint64_t seq = 0, bytes_before = 0;
    Chunk *c = claim_empty(p, seq);
    for (int i = 0; c && i < o->n_inputs; i++) {
        CorpusReader *r;
        if (corpus_open(&r, o->inputs[i], o->max_line_bytes, o->doc_per_file, err, sizeof err)) goto bad;
        const char *doc;
        size_t n;
        int rc;
        while ((rc = corpus_next(r, &doc, &n, err, sizeof err)) == 1) {
            if (n == 0) continue; /* an empty document has nothing to learn */
            if (chunk_add(c, doc, n)) {
                rc = err_set(err, sizeof err, "%s: out of memory", o->inputs[i]);
                break;
            }
            if (c->text_len >= CHUNK_BYTES) {
                publish(p, c, bytes_before + corpus_bytes_read(r));
                if (!(c = claim_empty(p, ++seq))) break;
            }
        }
        bytes_before += corpus_bytes_read(r);
        corpus_close(r);
        if (rc < 0) goto bad;
    }
    if (c) {
        if (c->n_docs) publish(p, c, bytes_before);
        else {
            pthread_mutex_lock(&p->mu);
            c->state = S_EMPTY;
            pthread_mutex_unlock(&p->mu);
        }
    }
    pthread_mutex_lock(&p->mu);
    p->reader_done = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
bad:
    pthread_mutex_lock(&p->mu);
    pipe_abort(p, err);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int encode_chunk(Pipe *p, Chunk *c, char *err, size_t errlen) {
    uint32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    c->n_tok = 0;
    for (size_t d = 0; d < c->n_docs; d++) {
        const char *t = c->text + c->doc_off[d];
        size_t n = c->doc_off[d + 1] - c->doc_off[d];
        c->is_val[d] = tok_doc_hash(t, n) < p->val_limit;
        if (tokenizer_encode_doc(p->tok, t, n, &ids, &n_ids, &cap, err, errlen)) {
            free(ids);
            return -1;
        }
        if (c->n_tok + n_ids > c->tok_cap) {
            size_t tc = 2 * (c->n_tok + n_ids);
            uint32_t *q = realloc(c->tok, tc * sizeof *q);
            if (!q) {
                free(ids);
                return err_set(err, errlen, "out of memory");
            }
            c->tok = q;
            c->tok_cap = tc;
        }
        memcpy(c->tok + c->n_tok, ids, n_ids * sizeof *ids);
        c->n_tok += n_ids;
        c->doc_end[d] = c->n_tok;
    }
    free(ids);
    return 0;
}

static void *worker_main(void *arg) {
    Pipe *p = arg;
    char err[ERR_LEN];
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->abort && p->n_claimed == p->n_filled && !p->reader_done)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->abort || p->n_claimed == p->n_filled) break;
        Chunk *c = &p->slot[p->n_claimed++ % NSLOT];
        c->state = S_ENCODING;
        pthread_mutex_unlock(&p->mu);
        int rc = encode_chunk(p, c, err, sizeof err);
        pthread_mutex_lock(&p->mu);
        if (rc) {
            pipe_abort(p, err);
            break;
        }
        c->state = S_DONE;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ------------------------------------------------------------- the writer */

typedef struct {
    ShardWriter **done; /* finished (still temporary) shards */
    int n_done;
    ShardWriter *train, *val;
    ShardHeader hdr;
} Outputs;

static int open_train(const TokOptions *o, Outputs *out, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/train-%05d.tok.zst", o->out_dir, out->n_done);
    return shard_writer_open(&out->train, path, &out->hdr, o->zstd_level, err, errlen);
}

static int write_chunk(const TokOptions *o, Outputs *out, const Chunk *c, TokStats *st, char *err,
                       size_t errlen) {
    size_t start = 0;
    for (size_t d = 0; d < c->n_docs; d++) {
        size_t n = c->doc_end[d] - start;
        ShardWriter *w = out->val;
        if (c->is_val[d]) {
            st->docs_val++;
            st->tokens_val += n;
        } else {
            if (shard_writer_tokens(out->train) >= o->shard_tokens) {
                ShardWriter **dn = realloc(out->done, (out->n_done + 1) * sizeof *dn);
                if (!dn) return err_set(err, errlen, "out of memory");
                out->done = dn;
                if (shard_writer_finish(out->train, err, errlen)) return -1;
                out->done[out->n_done++] = out->train;
                out->train = NULL;
                if (open_train(o, out, err, errlen)) return -1;
            }
            w = out->train;
            st->docs_train++;
            st->tokens_train += n;
        }
        if (shard_writer_append(w, c->tok + start, n, 1, err, errlen)) return -1;
        start = c->doc_end[d];
    }
    st->text_bytes += c->text_len;
    return 0;
}

/* For --val-docs N: the hash limit that admits the N documents of smallest
 * hash, found in one reading pass with a max-heap of the N smallest. */
static int val_limit_for_count(const TokOptions *o, uint64_t *limit, char *err, size_t errlen) {
    uint64_t n = (uint64_t)o->val_docs, size = 0;
    if (n == 0) {
        *limit = 0;
        return 0;
    }
    uint64_t *heap = malloc(n * sizeof *heap);
    if (!heap)
        return err_set(err, errlen, "out of memory for --val-docs %llu", (unsigned long long)n);
    for (int i = 0; i < o->n_inputs; i++) {
        CorpusReader *r;
        if (corpus_open(&r, o->inputs[i], o->max_line_bytes, o->doc_per_file, err, errlen)) {
            free(heap);
            return -1;
        }
        const char *doc;
        size_t len;
        int rc;
        while ((rc = corpus_next(r, &doc, &len, err, errlen)) == 1) {
            if (len == 0) continue;
            uint64_t h = tok_doc_hash(doc, len), k;
            if (size < n) { /* sift up */
                for (k = size++; k > 0 && heap[(k - 1) / 2] < h; k = (k - 1) / 2) heap[k] = heap[(k - 1) / 2];
                heap[k] = h;
            } else if (h < heap[0]) { /* replace the max, sift down */
                for (k = 0;;) {
                    uint64_t c = 2 * k + 1;
                    if (c >= size) break;
                    if (c + 1 < size && heap[c + 1] > heap[c]) c++;
                    if (heap[c] <= h) break;
                    heap[k] = heap[c];
                    k = c;
                }
                heap[k] = h;
            }
        }
        corpus_close(r);
        if (rc < 0) {
            free(heap);
            return -1;
        }
    }
    *limit = size < n ? UINT64_MAX : (heap[0] == UINT64_MAX ? UINT64_MAX : heap[0] + 1);
    free(heap);
    return 0;
}

int tok_run(const TokOptions *o, TokStats *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    double t0 = now_s();
    if (o->n_inputs < 1) return err_set(err, errlen, "no input files");
    if (o->n_threads < 1 || o->n_threads > 256)
        return err_set(err, errlen, "--threads %d not in [1, 256]", o->n_threads);
    if (o->val_docs < 0 && !(o->val_frac >= 0 && o->val_frac <= 1))
        return err_set(err, errlen, "--val-frac %g not in [0, 1]", o->val_frac);
    uint64_t total_bytes = 0;
    for (int i = 0; i < o->n_inputs; i++) {
        struct stat sb;
        if (stat(o->inputs[i], &sb))
            return err_set(err, errlen, "%s: cannot open: %s", o->inputs[i], strerror(errno));
        total_bytes += (uint64_t)sb.st_size;
    }
    if (mkdir_p(o->out_dir, err, errlen)) return 1;
    char path[4096];
    const char *existing[] = {"train-00000.tok.zst", "val.tok.zst"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", o->out_dir, existing[i]);
        if (access(path, F_OK) == 0)
            return err_set(err, errlen,
                           "%s already exists: remove the old shards or choose another --out",
                           path);
    }
    Tokenizer *tok;
    if (tokenizer_load(&tok, o->tokenizer_path, err, errlen)) return -1;
    Pipe *p = calloc(1, sizeof *p);
    Outputs out = {0};
    int rc = -1;
    if (!p) {
        tokenizer_free(tok);
        return err_set(err, errlen, "out of memory");
    }
    p->o = o;
    p->tok = tok;
    if (tokenizer_eos_id(tok) < 0) {
        err_set(err, errlen,
                "%s: the tokenizer has no end-of-sequence token to end documents with (a "
                "sentencepiece </s> piece, or eos_token in tokenizer_config.json)",
                o->tokenizer_path);
        goto done;
    }
    if (o->val_docs >= 0) {
        if (val_limit_for_count(o, &p->val_limit, err, errlen)) goto done;
    } else {
        p->val_limit = o->val_frac >= 1 ? UINT64_MAX : (uint64_t)(o->val_frac * 18446744073709551616.0);
    }
    out.hdr.vocab_size = tokenizer_vocab_size(tok);
    st->token_bytes = out.hdr.vocab_size <= 65536 ? 2 : 4; /* as the shard writer decides */
    out.hdr.eos_id = (uint32_t)tokenizer_eos_id(tok);
    out.hdr.tokens_per_frame = o->tokens_per_frame;
    out.hdr.tokenizer_hash = tokenizer_hash(tok);
    snprintf(out.hdr.name, sizeof out.hdr.name, "%s", o->name);
    snprintf(path, sizeof path, "%s/val.tok.zst", o->out_dir);
    if (shard_writer_open(&out.val, path, &out.hdr, o->zstd_level, err, errlen)) goto done;
    if (open_train(o, &out, err, errlen)) goto done;

    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_t reader, workers[256];
    int n_workers = 0, have_reader = pthread_create(&reader, NULL, reader_main, p) == 0;
    while (have_reader && n_workers < o->n_threads && pthread_create(&workers[n_workers], NULL, worker_main, p) == 0)
        n_workers++;
    if (!have_reader || n_workers == 0) {
        pthread_mutex_lock(&p->mu);
        pipe_abort(p, "cannot start the tokenizer threads");
        pthread_mutex_unlock(&p->mu);
    }
    double last = now_s();
    uint64_t bytes = 0;
    for (uint64_t seq = 0;; seq++) {
        Chunk *c = &p->slot[seq % NSLOT];
        pthread_mutex_lock(&p->mu);
        while (!p->abort && c->state != S_DONE && !(p->reader_done && seq >= p->n_filled))
            pthread_cond_wait(&p->cv, &p->mu);
        int stop = p->abort || c->state != S_DONE;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        char werr[ERR_LEN];
        int bad = write_chunk(o, &out, c, st, werr, sizeof werr);
        pthread_mutex_lock(&p->mu);
        if (bad) pipe_abort(p, werr);
        c->state = S_EMPTY;
        bytes = c->bytes_read;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (bad) break;
        if (o->on_progress && now_s() - last > 0.5) {
            last = now_s();
            st->seconds = last - t0;
            o->on_progress(st, bytes, total_bytes, 0, o->progress_ctx);
        }
    }
    if (have_reader) pthread_join(reader, NULL);
    for (int i = 0; i < n_workers; i++) pthread_join(workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    if (p->abort) {
        err_set(err, errlen, "%s", p->err);
        goto done;
    }
    if (o->on_progress) {
        st->seconds = now_s() - t0;
        o->on_progress(st, total_bytes, total_bytes, 1, o->progress_ctx);
    }
    if (shard_writer_finish(out.val, err, errlen) || shard_writer_finish(out.train, err, errlen)) goto done;
    ShardWriter **dn = realloc(out.done, (out.n_done + 2) * sizeof *dn);
    if (!dn) {
        err_set(err, errlen, "out of memory");
        goto done;
    }
    out.done = dn;
    out.done[out.n_done++] = out.train;
    out.done[out.n_done++] = out.val;
    out.train = out.val = NULL;
    /* Every input read and every shard finished: only now take final names. */
    rc = 0;
    for (int i = 0; i < out.n_done; i++) {
        if (rc == 0) rc = shard_writer_commit(out.done[i], err, errlen);
        else shard_writer_abort(out.done[i]);
        out.done[i] = NULL;
    }
    st->n_train_shards = out.n_done - 1;
    for (int i = 0; rc == 0 && i <= st->n_train_shards; i++) {
        struct stat sb;
        if (i < st->n_train_shards) snprintf(path, sizeof path, "%s/train-%05d.tok.zst", o->out_dir, i);
        else snprintf(path, sizeof path, "%s/val.tok.zst", o->out_dir);
        if (stat(path, &sb) == 0) st->output_bytes += (uint64_t)sb.st_size;
    }
    st->input_bytes = total_bytes;
done:
    for (int i = 0; i < out.n_done; i++) shard_writer_abort(out.done[i]);
    shard_writer_abort(out.train);
    shard_writer_abort(out.val);
    free(out.done);
    for (int i = 0; i < NSLOT; i++) {
        free(p->slot[i].text);
        free(p->slot[i].doc_off);
        free(p->slot[i].tok);
        free(p->slot[i].doc_end);
        free(p->slot[i].is_val);
    }
    free(p);
    tokenizer_free(tok);
    st->seconds = now_s() - t0;
    return rc;
}

/* Writes every document of the inputs to `path`, one per line, for the
 * sentencepiece trainer. */
static int dump_text(const TokOptions *o, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        return err_set(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    }
    for (int i = 0; i < o->n_inputs; i++) {
        CorpusReader *r;
        if (corpus_open(&r, o->inputs[i], o->max_line_bytes, o->doc_per_file, err, errlen)) {
            fclose(f);
            return -1;
        }
        const char *doc;
        size_t n;
        int rc;
        while ((rc = corpus_next(r, &doc, &n, err, errlen)) == 1) {
            fwrite(doc, 1, n, f);
            fputc('\n', f);
        }
        corpus_close(r);
        if (rc < 0) {
            fclose(f);
            return -1;
        }
    }
    if (fclose(f)) {
        return err_set(err, errlen, "%s: write failed", path);
    }
    return 0;
}

int tok_train_tokenizer(const TokOptions *o, uint32_t vocab_size, char *model_path,
                        size_t model_path_len, char *err, size_t errlen) {
    if (mkdir_p(o->out_dir, err, errlen)) return 1;
    char txt[4096], prefix[4096];
    snprintf(txt, sizeof txt, "%s/tokenizer.train.txt", o->out_dir);
    snprintf(prefix, sizeof prefix, "%s/tokenizer", o->out_dir);
    int rc = dump_text(o, txt, err, errlen);
    if (rc == 0) rc = spm_train_bpe(txt, prefix, vocab_size, o->n_threads, err, errlen);
    unlink(txt);
    if (rc) return -1;
    snprintf(model_path, model_path_len, "%s/tokenizer.model", o->out_dir);
    return 0;
}
