/* test_data_stream: the mixture stream (data/stream.h) over shards whose
 * tokens encode where they come from (source, shard, position), so every
 * window can be checked to be a real, contiguous piece of its source.
 * Checked: window integrity and source ids; per-step composition against the
 * schedule; epoch wrap of a small domain source (no token twice within an
 * epoch, epochs reported); split between two general sources by tokens;
 * determinism (same seed same batches, other seed other batches, prefetch or
 * not); disjoint rank slots whose union is the global batch for several world
 * sizes; resume at step s; eval windows; and the bad-input errors. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "data/shard.h"
#include "data/stream.h"
#include "tests/c/check.h"
#include "tests/data/scratch.h"

#define TPF 100     /* tokens per frame: windows cross frames often */
#define T 31        /* seq_len: windows of 32 tokens */
#define B 16
#define STEPS 400
#define VOCAB (1u << 24)
#define SRC_BASE (1u << 22) /* token = source*SRC_BASE + shard*SHARD_BASE + position */
#define SHARD_BASE (1u << 20)

static char dir[64], err[2048];

static void make_shard(const char *name, uint32_t source, uint32_t shard, uint32_t n, uint64_t tok_hash,
                       uint32_t vocab) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ShardHeader h = {.vocab_size = vocab, .eos_id = 0, .tokens_per_frame = TPF, .tokenizer_hash = tok_hash};
    ShardWriter *w;
    CHECK_OK(shard_writer_open(&w, path, &h, 1, err, sizeof err), err);
    uint32_t *t = malloc(n * sizeof *t);
    for (uint32_t i = 0; i < n; i++) t[i] = (source * SRC_BASE + shard * SHARD_BASE + i) % vocab;
    CHECK_OK(shard_writer_append(w, t, n, 1, err, sizeof err), err);
    CHECK_OK(shard_writer_close(w, err, sizeof err), err);
    free(t);
}

static const uint32_t med_len[] = {1234, 777}, web_len[] = {5000, 4000, 3333}, books_len[] = {2500};
static char g_med[128], g_web1[128], g_web2[128], g_books[128], g_medval[128];

static uint32_t shard_len(uint32_t src, uint32_t shard) {
    return src == 0 ? med_len[shard] : src == 1 ? web_len[shard] : books_len[shard];
}

/* A window is runs of consecutive tokens of one source, each run broken only
 * where a frame ends and another frame begins. Returns 1 when valid. */
static int window_ok_n(const uint32_t *w, int32_t src_id, int n) {
    for (int i = 0; i < n; i++)
        if (w[i] / SRC_BASE != (uint32_t)src_id) return 0;
    for (int i = 0; i + 1 < n; i++) {
        if (w[i + 1] == w[i] + 1 && (w[i] % SHARD_BASE + 1) % TPF != 0) continue;
        uint32_t a = w[i] % SRC_BASE, b = w[i + 1] % SRC_BASE;
        uint32_t pos_a = a % SHARD_BASE, len = shard_len((uint32_t)src_id, a / SHARD_BASE);
        int a_ends = (pos_a + 1) % TPF == 0 || pos_a + 1 == len;
        int b_starts = (b % SHARD_BASE) % TPF == 0;
        if (!a_ends || !b_starts) return 0;
    }
    return 1;
}

static int window_ok(const uint32_t *w, int32_t src_id) { return window_ok_n(w, src_id, T + 1); }

static StreamSourceConfig sources[3];
static const char *med_globs[1], *med_val[1], *web_globs[2], *books_globs[1];
static MixPoint sched[] = {{0, 0.25}, {0.8, 0.25}, {0.8, 0.5}, {1, 0.5}};

static StreamConfig config(uint64_t seed, int prefetch) {
    med_globs[0] = g_med;
    med_val[0] = g_medval;
    web_globs[0] = g_web1;
    web_globs[1] = g_web2;
    books_globs[0] = g_books;
    sources[0] = (StreamSourceConfig){"med", STREAM_DOMAIN, med_globs, 1, med_val, 1, 0};
    sources[1] = (StreamSourceConfig){"web", STREAM_GENERAL, web_globs, 2, NULL, 0, 0};
    sources[2] = (StreamSourceConfig){"books", STREAM_GENERAL, books_globs, 1, NULL, 0, 0};
    return (StreamConfig){.sources = sources, .n_sources = 3, .schedule = sched, .n_schedule = 4,
                          .seq_len = T, .global_batch = B, .total_steps = STEPS, .seed = seed,
                          .shuffle_windows = 8, .eval_windows = 64, .prefetch = prefetch, .cache_frames = 4};
}

static uint32_t *all_tokens; /* (STEPS, B, T+1) the uninterrupted stream */
static int32_t *all_src;     /* (STEPS, B) */

static void full_pass(void) {
    StreamConfig c = config(7, 0);
    Stream *s;
    CHECK_OK(stream_open(&s, &c, err, sizeof err), err);
    if (!s) return;
    CHECK(stream_vocab_size(s) == VOCAB && stream_n_sources(s) == 3);
    CHECK(stream_source_tokens(s, 0) == 2011 && stream_source_windows(s, 0) == 2011 / 32);
    CHECK(stream_source_windows(s, 1) == 12333 / 32 && stream_source_windows(s, 2) == 2500 / 32);
    const size_t T1 = T + 1;
    size_t bad_window = 0, bad_comp = 0, bad_epoch_use = 0, n_med = 0, n_web = 0, n_books = 0;
    long double C = 0;
    uint64_t cum = 0;
    /* per-token use counts of the domain source, per epoch bound */
    uint32_t *use = calloc(2 * SHARD_BASE, sizeof *use);
    for (uint64_t step = 0; step < STEPS; step++) {
        uint32_t *tok = all_tokens + step * B * T1;
        int32_t *src = all_src + step * B;
        CHECK_OK(stream_next_batch(s, step, 0, 1, tok, src, err, sizeof err), err);
        uint32_t n_dom = 0;
        for (int q = 0; q < B; q++) {
            bad_window += !window_ok(tok + q * T1, src[q]);
            n_dom += stream_source_role(s, src[q]) == STREAM_DOMAIN;
            n_med += src[q] == 0;
            n_web += src[q] == 1;
            n_books += src[q] == 2;
            if (src[q] == 0)
                for (size_t i = 0; i < T1; i++) {
                    uint32_t a = tok[q * T1 + i] % SRC_BASE;
                    use[(a / SHARD_BASE) * SHARD_BASE / 2 + a % SHARD_BASE]++;
                }
        }
        /* Composition against the schedule, computed here. */
        double w = step < 320 ? 0.25 : 0.5;
        C += (long double)B * w;
        cum += n_dom;
        if (n_dom != stream_domain_count(s, step) || fabs(n_dom - B * w) >= 1 || fabsl((long double)cum - C) > 0.5L)
            bad_comp++;
        if (fabs(stream_domain_fraction(s, step) - w) > 1e-12) bad_comp++;
        /* Within an epoch no token is used twice: after n_med samples, e full
         * epochs have passed and no token is used more than e + 1 times. */
        uint32_t max_use = (uint32_t)(n_med / stream_source_windows(s, 0)) + 1;
        if (step % 50 == 49)
            for (uint32_t i = 0; i < SHARD_BASE; i++) bad_epoch_use += use[i] > max_use;
    }
    CHECK(bad_window == 0);
    CHECK(bad_comp == 0);
    CHECK(bad_epoch_use == 0);
    CHECK(n_med == cum && n_med + n_web + n_books == (size_t)STEPS * B);
    /* The small domain source wrapped into further epochs, as reported. */
    double epochs = stream_source_epochs(s, 0, STEPS - 1);
    CHECK(fabs(epochs - (double)n_med / (double)stream_source_windows(s, 0)) < 1e-9);
    CHECK(epochs > 20);
    /* Each epoch cuts the source differently (its own frame order): the
     * domain windows start at many more than W distinct tokens. */
    size_t n_starts = 0;
    unsigned char *seen = calloc(SRC_BASE, 1);
    for (size_t q = 0; q < (size_t)STEPS * B; q++)
        if (all_src[q] == 0 && !seen[all_tokens[q * T1] % SRC_BASE]++) n_starts++;
    free(seen);
    CHECK(n_starts > 3 * stream_source_windows(s, 0));
    CHECK(fabs(stream_source_epochs(s, 1, STEPS - 1) - (double)n_web / (double)stream_source_windows(s, 1)) < 1e-9);
    /* General samples split by train tokens: books gets 2500/14833 of them,
     * strictly within one sample (a period of 14833 <= 65536 makes the
     * share exact, data/mix.h). */
    double n_gen = (double)(n_web + n_books), share = 2500.0 / 14833.0;
    CHECK(fabs((double)n_books - n_gen * share) < 1);
    /* Eval windows: 300 val tokens make 9 windows, consecutive val tokens. */
    CHECK(stream_eval_count(s, 0) == 9 && stream_eval_count(s, 1) == 0);
    uint32_t ev[T + 1];
    size_t bad_eval = 0;
    for (uint32_t i = 0; i < stream_eval_count(s, 0); i++) {
        CHECK_OK(stream_eval_window(s, 0, i, ev, err, sizeof err), err);
        for (uint32_t k = 0; k <= T; k++) bad_eval += ev[k] != 0 * SRC_BASE + 3 * SHARD_BASE + i * 32 + k;
    }
    CHECK(bad_eval == 0);
    CHECK_FAILS(stream_eval_window(s, 0, 9, ev, err, sizeof err), err, "med");
    free(use);
    stream_close(s);
}

static size_t compare_stream(uint64_t seed, int prefetch, uint64_t from, int world, uint64_t *fp) {
    StreamConfig c = config(seed, prefetch);
    Stream *s;
    CHECK_OK(stream_open(&s, &c, err, sizeof err), err);
    if (!s) return SIZE_MAX;
    *fp = stream_fingerprint(s);
    const size_t T1 = T + 1, bl = B / world;
    uint32_t *tok = malloc(bl * T1 * sizeof *tok);
    int32_t *src = malloc(bl * sizeof *src);
    size_t diff = 0;
    for (uint64_t step = from; step < STEPS; step++)
        for (int r = 0; r < world; r++) {
            CHECK_OK(stream_next_batch(s, step, r, world, tok, src, err, sizeof err), err);
            /* rank r's slots are [r*bl, (r+1)*bl) of the global batch */
            diff += memcmp(tok, all_tokens + (step * B + r * bl) * T1, bl * T1 * sizeof *tok) != 0;
            diff += memcmp(src, all_src + step * B + r * bl, bl * sizeof *src) != 0;
        }
    free(tok);
    free(src);
    stream_close(s);
    return diff;
}

static void determinism(void) {
    uint64_t fp0, fp1, fp2;
    /* Same seed, prefetch thread: the same batches. */
    CHECK(compare_stream(7, 3, 0, 1, &fp0) == 0);
    /* Resume at step 250 with prefetch, and at step 123 without. */
    CHECK(compare_stream(7, 2, 250, 1, &fp1) == 0);
    CHECK(compare_stream(7, 0, 123, 1, &fp1) == 0);
    CHECK(fp0 == fp1);
    /* World sizes 2, 4, 16: rank slots are disjoint and cover the global batch
     * (each rank's local batch equals its slice of the world-1 batch), also
     * when resumed at a later step with another world size. */
    CHECK(compare_stream(7, 2, 0, 2, &fp1) == 0);
    CHECK(compare_stream(7, 0, 300, 4, &fp1) == 0);
    CHECK(compare_stream(7, 1, 390, 16, &fp1) == 0);
    /* Another seed: other batches (nearly every step differs) and fingerprint. */
    size_t d = compare_stream(8, 0, 0, 1, &fp2);
    CHECK(d > STEPS);
    CHECK(fp2 != fp0);
    /* Random access: a scattered step asked alone gives the same batch. */
    StreamConfig c = config(7, 2);
    Stream *s;
    CHECK_OK(stream_open(&s, &c, err, sizeof err), err);
    if (s) {
        uint32_t tok[B * (T + 1)];
        int32_t src[B];
        size_t diff = 0;
        for (uint64_t step = 399; step < STEPS; step -= 37) {
            CHECK_OK(stream_next_batch(s, step, 0, 1, tok, src, err, sizeof err), err);
            diff += memcmp(tok, all_tokens + step * B * (T + 1), sizeof tok) != 0;
            uint32_t one[T + 1];
            int32_t id;
            CHECK_OK(stream_sample(s, step, 5, one, &id, err, sizeof err), err);
            diff += id != all_src[step * B + 5] || memcmp(one, all_tokens + (step * B + 5) * (T + 1), sizeof one);
        }
        CHECK(diff == 0);
        CHECK_FAILS(stream_next_batch(s, 0, 0, 3, tok, src, err, sizeof err), err, "divide");
        stream_close(s);
    }
}

static void bad_inputs(void) {
    Stream *s;
    StreamConfig c = config(7, 0);
    char g[512];
    snprintf(g, sizeof g, "%s/nothing-*.tok.zst", dir);
    const char *empty[] = {g};
    sources[2].train_globs = empty;
    CHECK_FAILS(stream_open(&s, &c, err, sizeof err), err, "books", "nothing-*.tok.zst", "matched no files");

    make_shard("othervocab.tok.zst", 2, 0, 3000, 0x1234, 50000);
    snprintf(g, sizeof g, "%s/othervocab.tok.zst", dir);
    const char *ov[] = {g};
    c = config(7, 0);
    sources[2].train_globs = ov;
    CHECK_FAILS(stream_open(&s, &c, err, sizeof err), err, "othervocab.tok.zst", "vocab size 50000", "one tokenizer");

    make_shard("othertok.tok.zst", 2, 0, 3000, 0x9999, VOCAB);
    snprintf(g, sizeof g, "%s/othertok.tok.zst", dir);
    const char *ot[] = {g};
    c = config(7, 0);
    sources[2].train_globs = ot;
    CHECK_FAILS(stream_open(&s, &c, err, sizeof err), err, "othertok.tok.zst", "tokenizer hash");

    make_shard("tiny.tok.zst", 2, 0, 20, 0x1234, VOCAB);
    snprintf(g, sizeof g, "%s/tiny.tok.zst", dir);
    const char *ti[] = {g};
    c = config(7, 0);
    sources[2].train_globs = ti;
    CHECK_FAILS(stream_open(&s, &c, err, sizeof err), err, "books", "tiny.tok.zst", "fewer than one window");

    /* A truncated shard: the error names it. */
    snprintf(g, sizeof g, "cp %s/books-0.tok.zst %s/trunc.tok.zst && truncate -s -30 %s/trunc.tok.zst", dir, dir, dir);
    CHECK(system(g) == 0);
    snprintf(g, sizeof g, "%s/trunc.tok.zst", dir);
    const char *tr[] = {g};
    c = config(7, 0);
    sources[2].train_globs = tr;
    CHECK_FAILS(stream_open(&s, &c, err, sizeof err), err, "trunc.tok.zst");

    /* A flipped byte inside a frame of a general shard: the stream opens
     * (header and seek table are intact) and the batch that needs the frame
     * fails with the file's name; it never returns garbage. */
    snprintf(g, sizeof g, "cp %s/books-0.tok.zst %s/flip.tok.zst && printf '\\377' | dd of=%s/flip.tok.zst "
             "bs=1 seek=2000 conv=notrunc status=none", dir, dir, dir);
    CHECK(system(g) == 0);
    snprintf(g, sizeof g, "%s/flip.tok.zst", dir);
    const char *fl[] = {g};
    c = config(7, 2);
    sources[2].train_globs = fl;
    CHECK_OK(stream_open(&s, &c, err, sizeof err), err);
    if (s) {
        uint32_t tok[B * (T + 1)];
        int32_t src[B];
        int failed = 0;
        for (uint64_t step = 0; step < STEPS && !failed; step++)
            failed = stream_next_batch(s, step, 0, 1, tok, src, err, sizeof err) != 0;
        CHECK(failed);
        CHECK(strstr(err, "flip.tok.zst") != NULL);
        stream_close(s);
    }

    /* The schedule wants domain samples, no source is domain. */
    c = config(7, 0);
    c.sources = sources + 1;
    c.n_sources = 2;
    CHECK_FAILS(stream_open(&s, &c, err, sizeof err), err, "no source has role domain");
    /* Only general sources with a constant 0 domain fraction is fine. */
    MixPoint zero[] = {{0, 0}};
    c.schedule = zero;
    c.n_schedule = 1;
    CHECK_OK(stream_open(&s, &c, err, sizeof err), err);
    stream_close(s);
}

/* Windows longer than a frame (251 tokens over 100-token frames) with a
 * cache of 2 frames: each window still a valid run over 3 or 4 frames. */
static void long_windows(void) {
    StreamConfig c = config(11, 1);
    c.seq_len = 250;
    c.global_batch = 8;
    c.cache_frames = 2;
    Stream *s;
    CHECK_OK(stream_open(&s, &c, err, sizeof err), err);
    if (!s) return;
    uint32_t *tok = malloc(8 * 251 * sizeof *tok);
    int32_t src[8];
    size_t bad = 0;
    for (uint64_t step = 0; step < 60; step++) {
        CHECK_OK(stream_next_batch(s, step, 0, 1, tok, src, err, sizeof err), err);
        for (int q = 0; q < 8; q++) bad += !window_ok_n(tok + q * 251, src[q], 251);
    }
    CHECK(bad == 0);
    free(tok);
    stream_close(s);
}

int main(void) {
    if (scratch_make(dir, sizeof dir, "stream")) return 1;
    make_shard("med-0.tok.zst", 0, 0, med_len[0], 0x1234, VOCAB);
    make_shard("med-1.tok.zst", 0, 1, med_len[1], 0x1234, VOCAB);
    make_shard("med-val.tok.zst", 0, 3, 300, 0x1234, VOCAB);
    for (uint32_t i = 0; i < 3; i++) {
        char n[64];
        snprintf(n, sizeof n, "web-%u.tok.zst", i);
        make_shard(n, 1, i, web_len[i], 0x1234, VOCAB);
    }
    make_shard("books-0.tok.zst", 2, 0, books_len[0], 0x1234, VOCAB);
    snprintf(g_med, sizeof g_med, "%s/med-[0-9].tok.zst", dir);
    snprintf(g_medval, sizeof g_medval, "%s/med-val.tok.zst", dir);
    snprintf(g_web1, sizeof g_web1, "%s/web-[01].tok.zst", dir);
    snprintf(g_web2, sizeof g_web2, "%s/web-*.tok.zst", dir); /* overlaps: deduplicated */
    snprintf(g_books, sizeof g_books, "%s/books-*.tok.zst", dir);
    all_tokens = malloc((size_t)STEPS * B * (T + 1) * sizeof *all_tokens);
    all_src = malloc((size_t)STEPS * B * sizeof *all_src);
    full_pass();
    determinism();
    long_windows();
    bad_inputs();
    free(all_tokens);
    free(all_src);
    if (scratch_remove(dir)) return 1;
    return CHECK_DONE();
}
