/* data/shard.c: writer and reader of .tok.zst shards (see data/shard.h and
 * docs/formats.md). The writer keeps one frame of tokens in memory, compresses
 * it as an independent zstd frame with a checksum when full, and records its
 * sizes for the seek table; the header is written first as a placeholder and
 * rewritten with the final counts. The reader trusts nothing: every size and
 * count is checked against the file size and the other counts. */
#define _GNU_SOURCE
#include "data/shard.h"
#include "kernels/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "data/hash.h"

#define SKIP_MAGIC_HEADER 0x184D2A50u /* zstd skippable frame, variant 0 */
#define SKIP_MAGIC_SEEK 0x184D2A5Eu   /* zstd seekable format: seek table frame */
#define SEEKABLE_MAGIC 0x8F92EAB1u    /* zstd seekable format: footer magic */
#define HDR_PAYLOAD 192
#define HDR_FRAME (8 + HDR_PAYLOAD)
#define SEEK_FOOTER 9
static const char HDR_MAGIC[8] = {'D', 'A', 'P', 'T', 'T', 'O', 'K', 'S'};

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p) {
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Serialises the header frame (magic, size, payload) into buf[HDR_FRAME]. */
static void header_encode(const ShardHeader *h, uint32_t n_frames, unsigned char *buf) {
    memset(buf, 0, HDR_FRAME);
    put32(buf, SKIP_MAGIC_HEADER);
    put32(buf + 4, HDR_PAYLOAD);
    unsigned char *p = buf + 8;
    memcpy(p, HDR_MAGIC, 8);
    put32(p + 8, h->version);
    put32(p + 12, h->token_bytes);
    put32(p + 16, h->vocab_size);
    put32(p + 20, h->eos_id);
    put32(p + 24, h->tokens_per_frame);
    put32(p + 28, n_frames);
    put64(p + 32, h->n_tokens);
    put64(p + 40, h->n_docs);
    put64(p + 48, h->tokenizer_hash);
    memcpy(p + 56, h->name, strnlen(h->name, SHARD_NAME_MAX - 1));
    put64(p + 184, hash_bytes(p, 184, 0));
}

/* ------------------------------------------------------------------ writer */

struct ShardWriter {
    char *path, *tmp_path;
    FILE *f;
    ZSTD_CCtx *cctx;
    ShardHeader hdr;
    uint32_t *frame;       /* (tokens_per_frame) tokens of the open frame */
    size_t frame_n;        /* tokens in it */
    unsigned char *packed; /* (tokens_per_frame * token_bytes) little-endian */
    unsigned char *zbuf;
    size_t zcap;
    uint32_t *sizes; /* (2 * n_frames): compressed, decompressed bytes */
    size_t n_frames, sizes_cap;
    int finished;
};

int shard_writer_open(ShardWriter **out, const char *path, const ShardHeader *hdr, int level,
                      char *err, size_t errlen) {
    *out = NULL;
    if (hdr->vocab_size == 0 || hdr->eos_id >= hdr->vocab_size)
        return err_set(err, errlen, "%s: eos id %u is not below vocab size %u", path, hdr->eos_id,
                       hdr->vocab_size);
    if (hdr->tokens_per_frame == 0 || hdr->tokens_per_frame > (1u << 26))
        return err_set(err, errlen, "%s: tokens per frame %u not in [1, 2^26]", path,
                       hdr->tokens_per_frame);
    ShardWriter *w = calloc(1, sizeof *w);
    if (!w) return err_set(err, errlen, "%s: out of memory", path);
    w->hdr = *hdr;
    w->hdr.version = SHARD_VERSION;
    w->hdr.token_bytes = hdr->vocab_size <= 65536 ? 2 : 4;
    w->hdr.n_tokens = w->hdr.n_docs = 0;
    w->hdr.name[SHARD_NAME_MAX - 1] = 0;
    size_t tpf = hdr->tokens_per_frame;
    w->path = strdup(path);
    w->tmp_path = malloc(strlen(path) + 5);
    w->frame = malloc(tpf * sizeof(uint32_t));
    w->packed = malloc(tpf * w->hdr.token_bytes);
    w->zcap = ZSTD_compressBound(tpf * w->hdr.token_bytes);
    w->zbuf = malloc(w->zcap);
    w->cctx = ZSTD_createCCtx();
    if (!w->path || !w->tmp_path || !w->frame || !w->packed || !w->zbuf || !w->cctx) {
        shard_writer_abort(w);
        return err_set(err, errlen, "%s: out of memory", path);
    }
    sprintf(w->tmp_path, "%s.tmp", path);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        err_set(err, errlen, "%s: cannot create: %s", w->tmp_path, strerror(errno));
        shard_writer_abort(w);
        return -1;
    }
    unsigned char buf[HDR_FRAME];
    header_encode(&w->hdr, 0, buf);
    if (fwrite(buf, 1, HDR_FRAME, w->f) != HDR_FRAME) {
        err_set(err, errlen, "%s: write failed: %s", w->tmp_path, strerror(errno));
        shard_writer_abort(w);
        return -1;
    }
    *out = w;
    return 0;
}

static int writer_flush_frame(ShardWriter *w, char *err, size_t errlen) {
    if (w->frame_n == 0) return 0;
    size_t tb = w->hdr.token_bytes, n = w->frame_n;
    if (tb == 2)
        for (size_t i = 0; i < n; i++) {
            w->packed[2 * i] = (unsigned char)w->frame[i];
            w->packed[2 * i + 1] = (unsigned char)(w->frame[i] >> 8);
        }
    else
        for (size_t i = 0; i < n; i++) put32(w->packed + 4 * i, w->frame[i]);
    size_t z = ZSTD_compress2(w->cctx, w->zbuf, w->zcap, w->packed, n * tb);
    if (ZSTD_isError(z))
        return err_set(err, errlen, "%s: zstd: %s", w->tmp_path, ZSTD_getErrorName(z));
    if (fwrite(w->zbuf, 1, z, w->f) != z)
        return err_set(err, errlen, "%s: write failed: %s", w->tmp_path, strerror(errno));
    if (w->n_frames == w->sizes_cap) {
        size_t cap = w->sizes_cap ? 2 * w->sizes_cap : 64;
        uint32_t *p = realloc(w->sizes, 2 * cap * sizeof *p);
        if (!p) return err_set(err, errlen, "%s: out of memory", w->tmp_path);
        w->sizes = p;
        w->sizes_cap = cap;
    }
    w->sizes[2 * w->n_frames] = (uint32_t)z;
    w->sizes[2 * w->n_frames + 1] = (uint32_t)(n * tb);
    w->n_frames++;
    w->frame_n = 0;
    return 0;
}

int shard_writer_append(ShardWriter *w, const uint32_t *tokens, size_t n, uint64_t n_docs,
                        char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] >= w->hdr.vocab_size)
            return err_set(err, errlen, "%s: token %u at position %llu is not below vocab size %u",
                           w->path, tokens[i], (unsigned long long)(w->hdr.n_tokens + i),
                           w->hdr.vocab_size);
    size_t tpf = w->hdr.tokens_per_frame;
    while (n > 0) {
        size_t k = tpf - w->frame_n;
        if (k > n) k = n;
        memcpy(w->frame + w->frame_n, tokens, k * sizeof *tokens);
        w->frame_n += k;
        w->hdr.n_tokens += k;
        tokens += k;
        n -= k;
        if (w->frame_n == tpf && writer_flush_frame(w, err, errlen)) return -1;
    }
    w->hdr.n_docs += n_docs;
    return 0;
}

uint64_t shard_writer_tokens(const ShardWriter *w) { return w->hdr.n_tokens; }

int shard_writer_finish(ShardWriter *w, char *err, size_t errlen) {
    if (writer_flush_frame(w, err, errlen)) return -1;
    size_t table = 8 + 8 * w->n_frames + SEEK_FOOTER;
    unsigned char *t = malloc(table);
    if (!t) return err_set(err, errlen, "%s: out of memory", w->tmp_path);
    put32(t, SKIP_MAGIC_SEEK);
    put32(t + 4, (uint32_t)(table - 8));
    for (size_t i = 0; i < w->n_frames; i++) {
        put32(t + 8 + 8 * i, w->sizes[2 * i]);
        put32(t + 12 + 8 * i, w->sizes[2 * i + 1]);
    }
    put32(t + table - 9, (uint32_t)w->n_frames);
    t[table - 5] = 0; /* descriptor: no per-frame checksums (zstd frames carry them) */
    put32(t + table - 4, SEEKABLE_MAGIC);
    size_t wrote = fwrite(t, 1, table, w->f);
    free(t);
    unsigned char hbuf[HDR_FRAME];
    header_encode(&w->hdr, (uint32_t)w->n_frames, hbuf);
    if (wrote != table || fseek(w->f, 0, SEEK_SET) || fwrite(hbuf, 1, HDR_FRAME, w->f) != HDR_FRAME ||
        fflush(w->f) || fsync(fileno(w->f)))
        return err_set(err, errlen, "%s: write failed: %s", w->tmp_path, strerror(errno));
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc) return err_set(err, errlen, "%s: close failed: %s", w->tmp_path, strerror(errno));
    w->finished = 1;
    /* Only the names are needed until commit: release the buffers now, so
     * that many finished shards awaiting commit cost little memory. */
    ZSTD_freeCCtx(w->cctx);
    free(w->frame);
    free(w->packed);
    free(w->zbuf);
    free(w->sizes);
    w->cctx = NULL;
    w->frame = NULL;
    w->packed = w->zbuf = NULL;
    w->sizes = NULL;
    return 0;
}

int shard_writer_commit(ShardWriter *w, char *err, size_t errlen) {
    if (!w->finished) {
        err_set(err, errlen, "%s: commit before finish", w->path);
        shard_writer_abort(w);
        return -1;
    }
    if (rename(w->tmp_path, w->path)) {
        err_set(err, errlen, "%s: cannot rename from %s: %s", w->path, w->tmp_path,
                strerror(errno));
        shard_writer_abort(w);
        return -1;
    }
    w->finished = 2;
    shard_writer_abort(w); /* frees; the temporary name no longer exists */
    return 0;
}

int shard_writer_close(ShardWriter *w, char *err, size_t errlen) {
    if (shard_writer_finish(w, err, errlen)) {
        shard_writer_abort(w);
        return -1;
    }
    return shard_writer_commit(w, err, errlen);
}

void shard_writer_abort(ShardWriter *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp_path && w->finished != 2) unlink(w->tmp_path);
    ZSTD_freeCCtx(w->cctx);
    free(w->path);
    free(w->tmp_path);
    free(w->frame);
    free(w->packed);
    free(w->zbuf);
    free(w->sizes);
    free(w);
}

/* ------------------------------------------------------------------ reader */

struct Shard {
    char *path;
    int fd;
    ShardHeader hdr;
    uint64_t file_bytes, header_hash, n_frames;
    uint64_t *offset;  /* (n_frames + 1) byte offset of each frame in the file */
    uint32_t *dsize;   /* (n_frames) decompressed bytes */
    unsigned char *zbuf, *raw;
    size_t zcap;
    ZSTD_DCtx *dctx;
};

static int read_at(int fd, void *buf, size_t n, uint64_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

int shard_open(Shard **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    Shard *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, errlen, "%s: out of memory", path);
    s->fd = -1;
    s->path = strdup(path);
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st)) {
        err_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto bad;
    }
    s->file_bytes = (uint64_t)st.st_size;
    if (s->file_bytes < HDR_FRAME + 8 + SEEK_FOOTER) {
        err_set(err, errlen, "%s: truncated: %llu bytes, a shard has at least %d", path,
                (unsigned long long)s->file_bytes, HDR_FRAME + 8 + SEEK_FOOTER);
        goto bad;
    }
    unsigned char h[HDR_FRAME];
    if (read_at(s->fd, h, HDR_FRAME, 0)) {
        err_set(err, errlen, "%s: read failed at byte 0", path);
        goto bad;
    }
    if (get32(h) != SKIP_MAGIC_HEADER || get32(h + 4) != HDR_PAYLOAD || memcmp(h + 8, HDR_MAGIC, 8)) {
        err_set(err, errlen, "%s: byte 0: wrong magic: not a dapt .tok.zst shard", path);
        goto bad;
    }
    const unsigned char *p = h + 8;
    if (get64(p + 184) != hash_bytes(p, 184, 0)) {
        err_set(err, errlen, "%s: byte 8: header check value mismatch (corrupt header)", path);
        goto bad;
    }
    s->hdr.version = get32(p + 8);
    if (s->hdr.version != SHARD_VERSION) {
        err_set(err, errlen, "%s: byte 16: format version %u, this build reads version %d", path,
                s->hdr.version, SHARD_VERSION);
        goto bad;
    }
    s->hdr.token_bytes = get32(p + 12);
    s->hdr.vocab_size = get32(p + 16);
    s->hdr.eos_id = get32(p + 20);
    s->hdr.tokens_per_frame = get32(p + 24);
    uint32_t hdr_frames = get32(p + 28);
    s->hdr.n_tokens = get64(p + 32);
    s->hdr.n_docs = get64(p + 40);
    s->hdr.tokenizer_hash = get64(p + 48);
    memcpy(s->hdr.name, p + 56, SHARD_NAME_MAX);
    s->hdr.name[SHARD_NAME_MAX - 1] = 0;
    s->header_hash = hash_bytes(h, HDR_FRAME, 0);
    uint32_t tb = s->hdr.token_bytes;
    if ((tb != 2 && tb != 4) || (tb == 2) != (s->hdr.vocab_size <= 65536) ||
        s->hdr.vocab_size == 0 || s->hdr.eos_id >= s->hdr.vocab_size ||
        s->hdr.tokens_per_frame == 0 || s->hdr.tokens_per_frame > (1u << 26)) {
        err_set(
            err, errlen,
            "%s: byte 20: inconsistent header (token bytes %u, vocab %u, eos %u, tokens/frame %u)",
            path, tb, s->hdr.vocab_size, s->hdr.eos_id, s->hdr.tokens_per_frame);
        goto bad;
    }
    unsigned char foot[SEEK_FOOTER];
    uint64_t foot_off = s->file_bytes - SEEK_FOOTER;
    if (read_at(s->fd, foot, SEEK_FOOTER, foot_off) || get32(foot + 5) != SEEKABLE_MAGIC) {
        err_set(err, errlen, "%s: byte %llu: no seek table footer (truncated or not a shard)", path,
                (unsigned long long)foot_off);
        goto bad;
    }
    s->n_frames = get32(foot);
    if (foot[4] & 0x7f) {
        err_set(err, errlen, "%s: byte %llu: reserved bits set in seek table descriptor", path,
                (unsigned long long)(foot_off + 4));
        goto bad;
    }
    uint64_t entry = (foot[4] & 0x80) ? 12 : 8;
    uint64_t table = 8 + entry * s->n_frames + SEEK_FOOTER;
    if (s->n_frames != hdr_frames || table + HDR_FRAME > s->file_bytes) {
        err_set(err, errlen,
                "%s: byte %llu: seek table has %llu frames, header says %u (file %llu bytes)", path,
                (unsigned long long)foot_off, (unsigned long long)s->n_frames, hdr_frames,
                (unsigned long long)s->file_bytes);
        goto bad;
    }
    uint64_t table_off = s->file_bytes - table;
    unsigned char *t = malloc(table);
    s->offset = malloc((s->n_frames + 1) * sizeof *s->offset);
    s->dsize = malloc((s->n_frames + 1) * sizeof *s->dsize);
    if (!t || !s->offset || !s->dsize) {
        free(t);
        err_set(err, errlen, "%s: out of memory", path);
        goto bad;
    }
    if (read_at(s->fd, t, table, table_off) || get32(t) != SKIP_MAGIC_SEEK ||
        get32(t + 4) != table - 8) {
        free(t);
        err_set(err, errlen, "%s: byte %llu: seek table frame header is wrong", path,
                (unsigned long long)table_off);
        goto bad;
    }
    uint64_t off = HDR_FRAME, total = 0, frame_bytes = (uint64_t)s->hdr.tokens_per_frame * tb;
    uint32_t max_c = 0;
    for (uint64_t i = 0; i < s->n_frames; i++) {
        uint32_t c = get32(t + 8 + entry * i), d = get32(t + 12 + entry * i);
        int last = i + 1 == s->n_frames;
        if (d == 0 || d % tb || d > frame_bytes || (!last && d != frame_bytes) || c == 0) {
            free(t);
            err_set(err, errlen,
                    "%s: byte %llu: seek table entry %llu has sizes %u/%u, expected %llu "
                    "decompressed bytes",
                    path, (unsigned long long)(table_off + 8 + entry * i), (unsigned long long)i, c,
                    d, (unsigned long long)frame_bytes);
            goto bad;
        }
        s->offset[i] = off;
        s->dsize[i] = d;
        off += c;
        total += d;
        if (c > max_c) max_c = c;
    }
    free(t);
    s->offset[s->n_frames] = off;
    if (off != table_off || total != s->hdr.n_tokens * tb) {
        err_set(err, errlen,
                "%s: frames end at byte %llu with %llu token bytes, but the seek table "
                "starts at byte %llu and the header says %llu tokens (truncated or corrupt)",
                path, (unsigned long long)off, (unsigned long long)total,
                (unsigned long long)table_off, (unsigned long long)s->hdr.n_tokens);
        goto bad;
    }
    s->zcap = max_c;
    s->zbuf = malloc(s->zcap + 1);
    s->raw = malloc(frame_bytes);
    s->dctx = ZSTD_createDCtx();
    if (!s->zbuf || !s->raw || !s->dctx) {
        err_set(err, errlen, "%s: out of memory", path);
        goto bad;
    }
    *out = s;
    return 0;
bad:
    shard_close(s);
    return -1;
}

void shard_close(Shard *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    ZSTD_freeDCtx(s->dctx);
    free(s->path);
    free(s->offset);
    free(s->dsize);
    free(s->zbuf);
    free(s->raw);
    free(s);
}

const ShardHeader *shard_header(const Shard *s) { return &s->hdr; }
const char *shard_path(const Shard *s) { return s->path; }
uint64_t shard_n_frames(const Shard *s) { return s->n_frames; }
uint64_t shard_frame_tokens(const Shard *s, uint64_t frame) {
    return frame < s->n_frames ? s->dsize[frame] / s->hdr.token_bytes : 0;
}
uint64_t shard_file_bytes(const Shard *s) { return s->file_bytes; }
uint64_t shard_header_hash(const Shard *s) { return s->header_hash; }

int shard_read_frame(Shard *s, uint64_t frame, uint32_t *out, char *err, size_t errlen) {
    if (frame >= s->n_frames)
        return err_set(err, errlen, "%s: frame %llu out of range (%llu frames)", s->path,
                       (unsigned long long)frame, (unsigned long long)s->n_frames);
    uint64_t off = s->offset[frame];
    size_t c = (size_t)(s->offset[frame + 1] - off), d = s->dsize[frame];
    if (read_at(s->fd, s->zbuf, c, off))
        return err_set(err, errlen, "%s: byte %llu: cannot read frame %llu (%zu bytes)", s->path,
                       (unsigned long long)off, (unsigned long long)frame, c);
    unsigned long long fcs = ZSTD_getFrameContentSize(s->zbuf, c);
    if (fcs != d)
        return err_set(err, errlen,
                       "%s: byte %llu: frame %llu: content size %lld, seek table says %zu", s->path,
                       (unsigned long long)off, (unsigned long long)frame, (long long)fcs, d);
    uint32_t tb = s->hdr.token_bytes;
    void *dst = (tb == 4) ? (void *)out : (void *)s->raw;
    size_t r = ZSTD_decompressDCtx(s->dctx, dst, d, s->zbuf, c);
    if (ZSTD_isError(r) || r != d)
        return err_set(err, errlen, "%s: byte %llu: frame %llu does not decode: %s", s->path,
                       (unsigned long long)off, (unsigned long long)frame,
                       ZSTD_isError(r) ? ZSTD_getErrorName(r) : "wrong size");
    size_t n = d / tb;
    uint32_t bad = 0;
    /* One pass: widen (2-byte tokens) or byte-swap on big-endian hosts (the
     * compiler drops it on little-endian ones), and check the ids. */
    const uint32_t vocab = s->hdr.vocab_size;
    if (tb == 2)
        for (size_t i = 0; i < n; i++) {
            out[i] = (uint32_t)s->raw[2 * i] | (uint32_t)s->raw[2 * i + 1] << 8;
            bad |= out[i] >= vocab;
        }
    else
        for (size_t i = 0; i < n; i++) {
            out[i] = get32((unsigned char *)out + 4 * i);
            bad |= out[i] >= vocab;
        }
    if (bad)
        for (size_t i = 0; i < n; i++)
            if (out[i] >= s->hdr.vocab_size)
                return err_set(err, errlen,
                               "%s: frame %llu token %zu: id %u is not below vocab size %u",
                               s->path, (unsigned long long)frame, i, out[i], s->hdr.vocab_size);
    return 0;
}

int shard_scan(Shard *s, ShardScan *out, uint32_t *first, size_t n_first, char *err,
               size_t errlen) {
    const ShardHeader *h = shard_header(s);
    ShardScan sc = {0, 0, UINT32_MAX, 0};
    uint32_t *buf = malloc((size_t)h->tokens_per_frame * sizeof *buf);
    if (!buf)
        return err_set(err, errlen, "%s: out of memory for a frame of %u tokens", shard_path(s),
                       h->tokens_per_frame);
    int rc = 0;
    for (uint64_t f = 0; f < shard_n_frames(s) && rc == 0; f++) {
        rc = shard_read_frame(s, f, buf, err, errlen);
        uint64_t m = rc ? 0 : shard_frame_tokens(s, f);
        for (uint64_t i = 0; i < m; i++) {
            uint32_t t = buf[i];
            sc.n_eos += t == h->eos_id;
            if (t < sc.min_id) sc.min_id = t;
            if (t > sc.max_id) sc.max_id = t;
            if (first && sc.n_tokens < n_first) first[sc.n_tokens] = t;
            sc.n_tokens++;
        }
    }
    free(buf);
    *out = sc;
    return rc ? -1 : 0;
}
