/* test_data_shard: the .tok.zst format. Round trip at both token widths, the
 * zstd CLI decoding a shard to the raw little-endian tokens, random frame
 * access, the temporary-name rule, and corrupt shards (truncation, a flipped
 * byte, wrong magic/version) failing with a message naming the file. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/hash.h"
#include "data/shard.h"
#include "tests/c/check.h"
#include "tests/data/scratch.h"

static char dir[64];
static char err[SHARD_ERR_MAX];

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Tokens determined by position so every frame's content is distinguishable. */
static uint32_t token_at(uint64_t i, uint32_t vocab) {
    return (uint32_t)(hash_mix64(i * 7919 + vocab) % vocab);
}

static int write_shard(const char *path, uint32_t vocab, uint32_t tpf, size_t n, uint32_t **tok_out) {
    uint32_t *tok = malloc((n + 1) * sizeof *tok);
    for (size_t i = 0; i < n; i++) tok[i] = token_at(i, vocab);
    ShardHeader h = {.vocab_size = vocab, .eos_id = 2, .tokens_per_frame = tpf, .tokenizer_hash = 0xabcdef};
    snprintf(h.name, sizeof h.name, "corpus-%u", vocab);
    ShardWriter *w;
    int rc = shard_writer_open(&w, path, &h, 3, err, sizeof err);
    /* Appended in uneven pieces to cross frame boundaries inside one call. */
    for (size_t i = 0; rc == 0 && i < n;) {
        size_t k = 1 + (i * 31) % 2500;
        if (k > n - i) k = n - i;
        rc = shard_writer_append(w, tok + i, k, 1, err, sizeof err);
        i += k;
    }
    if (rc == 0) rc = shard_writer_close(w, err, sizeof err);
    *tok_out = tok;
    return rc;
}

static void round_trip(uint32_t vocab, uint32_t expect_width) {
    char path[128];
    snprintf(path, sizeof path, "%s/rt-%u.tok.zst", dir, vocab);
    const uint32_t tpf = 1000;
    const size_t n = 10500; /* 10 full frames and one of 500 tokens */
    uint32_t *tok;
    CHECK_OK(write_shard(path, vocab, tpf, n, &tok), err);
    CHECK(exists(path));
    Shard *s;
    CHECK_OK(shard_open(&s, path, err, sizeof err), err);
    if (!s) return;
    const ShardHeader *h = shard_header(s);
    CHECK(h->version == SHARD_VERSION);
    CHECK(h->token_bytes == expect_width);
    CHECK(h->vocab_size == vocab);
    CHECK(h->eos_id == 2);
    CHECK(h->tokens_per_frame == tpf);
    CHECK(h->n_tokens == n);
    CHECK(h->tokenizer_hash == 0xabcdef);
    char name[64];
    snprintf(name, sizeof name, "corpus-%u", vocab);
    CHECK(strcmp(h->name, name) == 0);
    CHECK(shard_n_frames(s) == 11);
    CHECK(shard_frame_tokens(s, 0) == 1000 && shard_frame_tokens(s, 10) == 500);
    uint64_t docs = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 1 + (i * 31) % 2500;
        i += k;
        docs++;
    }
    CHECK(h->n_docs == docs);

    /* Random access: frames in a scrambled order, each equal to its slice. */
    uint32_t *buf = malloc(tpf * sizeof *buf);
    for (uint64_t j = 0; j < 11; j++) {
        uint64_t f = hash_perm(42, 11, j);
        CHECK_OK(shard_read_frame(s, f, buf, err, sizeof err), err);
        size_t m = shard_frame_tokens(s, f), bad = 0;
        for (size_t i = 0; i < m; i++) bad += buf[i] != tok[f * tpf + i];
        CHECK(bad == 0);
    }
    CHECK_FAILS(shard_read_frame(s, 11, buf, err, sizeof err), err, path, "out of range");
    shard_close(s);

    /* zstd -dc yields exactly the little-endian tokens. */
    char cmd[512], raw[160];
    snprintf(raw, sizeof raw, "%s/rt-%u.raw", dir, vocab);
    snprintf(cmd, sizeof cmd, "zstd -q -dc '%s' > '%s'", path, raw);
    CHECK(system(cmd) == 0);
    FILE *f = fopen(raw, "rb");
    CHECK(f != NULL);
    if (f) {
        unsigned char b[4];
        size_t i = 0, bad = 0;
        while (fread(b, 1, expect_width, f) == expect_width) {
            uint32_t v = b[0] | b[1] << 8 | (expect_width == 4 ? (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24 : 0);
            if (i >= n || v != tok[i]) bad++;
            i++;
        }
        CHECK(i == n);
        CHECK(bad == 0);
        fclose(f);
    }
    free(buf);
    free(tok);
}

static void copy_file(const char *from, const char *to, long n_bytes, long flip_at) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int c;
    long i = 0;
    while ((c = fgetc(a)) != EOF && (n_bytes < 0 || i < n_bytes)) {
        if (i == flip_at) c ^= 0x40;
        fputc(c, b);
        i++;
    }
    fclose(a);
    fclose(b);
}

static void corrupt(void) {
    char good[128], bad[128];
    snprintf(good, sizeof good, "%s/rt-1000.tok.zst", dir);
    snprintf(bad, sizeof bad, "%s/bad.tok.zst", dir);
    struct stat st;
    stat(good, &st);
    Shard *s;
    uint32_t buf[1000];

    copy_file(good, bad, st.st_size - 100, -1); /* truncated */
    CHECK_FAILS(shard_open(&s, bad, err, sizeof err), err, bad);
    copy_file(good, bad, 150, -1); /* truncated inside the header */
    CHECK_FAILS(shard_open(&s, bad, err, sizeof err), err, bad, "truncated");

    /* A flipped byte inside frame 3: open succeeds (header and table intact),
     * frame 3 fails its checksum, the other frames still read. */
    Shard *g;
    CHECK_OK(shard_open(&g, good, err, sizeof err), err);
    /* frame 3 starts after the 200-byte header and frames 0..2 */
    long frame3 = 0;
    {
        /* recover frame offsets from the table via decompressed reads is not
         * possible through the API, so locate frame 3 by scanning the zstd frame magic */
        FILE *f = fopen(good, "rb");
        unsigned char *all = malloc(st.st_size);
        fread(all, 1, st.st_size, f);
        fclose(f);
        int seen = 0;
        for (long i = 200; i + 4 < st.st_size; i++)
            if (all[i] == 0x28 && all[i + 1] == 0xb5 && all[i + 2] == 0x2f && all[i + 3] == 0xfd && seen++ == 3) {
                frame3 = i;
                break;
            }
        free(all);
    }
    CHECK(frame3 > 200);
    shard_close(g);
    copy_file(good, bad, -1, frame3 + 40);
    CHECK_OK(shard_open(&s, bad, err, sizeof err), err);
    if (s) {
        CHECK_FAILS(shard_read_frame(s, 3, buf, err, sizeof err), err, bad, "frame 3");
        CHECK_OK(shard_read_frame(s, 2, buf, err, sizeof err), err);
        CHECK_OK(shard_read_frame(s, 4, buf, err, sizeof err), err);
        shard_close(s);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "zstd -q -t '%s' 2>/dev/null", bad);
    CHECK(system(cmd) != 0); /* the zstd CLI sees the checksum error too */

    copy_file(good, bad, -1, 9); /* inside "DAPTTOKS" */
    CHECK_FAILS(shard_open(&s, bad, err, sizeof err), err, bad, "magic");
    copy_file(good, bad, -1, 60); /* header field, check value now wrong */
    CHECK_FAILS(shard_open(&s, bad, err, sizeof err), err, bad, "header");

    /* Version 2 with a correct check value: the version error. */
    FILE *f = fopen(good, "rb");
    unsigned char *all = malloc(st.st_size);
    CHECK(fread(all, 1, st.st_size, f) == (size_t)st.st_size);
    fclose(f);
    all[16] = 2;
    uint64_t hv = hash_bytes(all + 8, 184, 0);
    for (int i = 0; i < 8; i++) all[8 + 184 + i] = (unsigned char)(hv >> (8 * i));
    f = fopen(bad, "wb");
    fwrite(all, 1, st.st_size, f);
    fclose(f);
    free(all);
    CHECK_FAILS(shard_open(&s, bad, err, sizeof err), err, bad, "version 2");
}

static void writer_rules(void) {
    char path[128], tmp[160];
    snprintf(path, sizeof path, "%s/w.tok.zst", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ShardHeader h = {.vocab_size = 50, .eos_id = 0, .tokens_per_frame = 16};
    ShardWriter *w;
    CHECK_OK(shard_writer_open(&w, path, &h, 1, err, sizeof err), err);
    uint32_t t[40];
    for (int i = 0; i < 40; i++) t[i] = (uint32_t)i;
    CHECK_OK(shard_writer_append(w, t, 40, 1, err, sizeof err), err);
    CHECK(!exists(path) && exists(tmp));
    t[5] = 50;
    CHECK_FAILS(shard_writer_append(w, t, 40, 1, err, sizeof err), err, path, "vocab size 50");
    CHECK_OK(shard_writer_finish(w, err, sizeof err), err);
    CHECK(!exists(path) && exists(tmp));
    shard_writer_abort(w);
    CHECK(!exists(path) && !exists(tmp));

    /* An empty shard is valid: zero frames. */
    CHECK_OK(shard_writer_open(&w, path, &h, 1, err, sizeof err), err);
    CHECK_OK(shard_writer_close(w, err, sizeof err), err);
    Shard *s;
    CHECK_OK(shard_open(&s, path, err, sizeof err), err);
    if (s) {
        CHECK(shard_n_frames(s) == 0 && shard_header(s)->n_tokens == 0);
        shard_close(s);
    }
    h.eos_id = 50;
    CHECK_FAILS(shard_writer_open(&w, path, &h, 1, err, sizeof err), err, "eos id 50");
}

/* Every single-byte corruption anywhere in a shard, and every truncation,
 * either fails (open or a frame read) or reads back exactly the original
 * tokens: a damaged shard never yields silent garbage. */
static void hostile(void) {
    char path[128], bad[128];
    snprintf(path, sizeof path, "%s/h.tok.zst", dir);
    snprintf(bad, sizeof bad, "%s/hbad.tok.zst", dir);
    uint32_t *tok;
    CHECK_OK(write_shard(path, 1000, 200, 1000, &tok), err);
    struct stat st;
    stat(path, &st);
    long size = st.st_size;
    CHECK(size > 400);
    uint32_t buf[200];
    size_t silent = 0, detected = 0, truncated_opened = 0;
    unsigned char *orig = malloc(size);
    FILE *in = fopen(path, "rb");
    CHECK(fread(orig, 1, size, in) == (size_t)size);
    fclose(in);
    for (long pos = 0; pos < size; pos++) {
        FILE *out = fopen(bad, "wb");
        orig[pos] ^= 0x40;
        fwrite(orig, 1, size, out);
        orig[pos] ^= 0x40;
        fclose(out);
        Shard *s;
        if (shard_open(&s, bad, err, sizeof err)) {
            detected += strstr(err, bad) != NULL;
            continue;
        }
        int failed = 0;
        size_t diff = 0;
        for (uint64_t f = 0; f < shard_n_frames(s) && !failed; f++) {
            if (shard_read_frame(s, f, buf, err, sizeof err)) {
                failed = 1;
                detected += strstr(err, bad) != NULL;
                break;
            }
            for (uint64_t i = 0; i < shard_frame_tokens(s, f); i++) diff += buf[i] != tok[f * 200 + i];
        }
        if (!failed) {
            diff += shard_header(s)->n_tokens != 1000 || shard_n_frames(s) != 5;
            silent += diff != 0;
        }
        shard_close(s);
    }
    CHECK(silent == 0);
    CHECK(detected > (size_t)size * 9 / 10); /* nearly every flip is caught, naming the file */
    /* every length around the header and the seek table, every 5th between */
    for (long len = 0; len < size; len += (len < 220 || len > size - 80) ? 1 : 5) {
        FILE *out = fopen(bad, "wb");
        fwrite(orig, 1, len, out);
        fclose(out);
        Shard *s;
        if (shard_open(&s, bad, err, sizeof err) == 0) {
            truncated_opened++;
            shard_close(s);
        }
    }
    CHECK(truncated_opened == 0);
    free(orig);
    free(tok);
}

int main(void) {
    if (scratch_make(dir, sizeof dir, "shard")) return 1;
    round_trip(1000, 2);
    round_trip(65536, 2);
    round_trip(100000, 4);
    corrupt();
    writer_rules();
    hostile();
    if (scratch_remove(dir)) return 1;
    return CHECK_DONE();
}
