/* tokenizer/corpus.c: document reader over plain, gzip and zstd files (see
 * tokenizer/corpus.h). Bytes come from a refillable buffer; lines are cut
 * from it into a line buffer capped at max_line_bytes; documents are built
 * from lines. Errors name the file and the 1-based line. */
#include "tokenizer/corpus.h"
#include "kernels/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

enum { SRC_PLAIN, SRC_GZ, SRC_ZST };

struct CorpusReader {
    char *path;
    int kind, jsonl, doc_per_file, eof;
    size_t max_line;
    FILE *f;
    gzFile gz;
    ZSTD_DCtx *dctx;
    unsigned char *zin; /* compressed input buffer for zstd */
    ZSTD_inBuffer zib;
    int zeof;
    uint64_t bytes_read;
    unsigned char *buf; /* decompressed bytes [pos, len) not yet consumed */
    size_t pos, len, cap;
    char *line;
    size_t line_len, line_cap;
    uint64_t line_no;
    char *doc;
    size_t doc_len, doc_cap;
};

#define BUF_BYTES (256u << 10)

static int ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

size_t corpus_utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;      /* no overlongs */
            if (c == 0xed) hi = 0x9f;      /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;      /* not above U+10FFFF */
        } else
            return i;
        if (i + k >= n) return i; /* sequence cut short */
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf) return i;
        i += k + 1;
    }
    return n;
}

int corpus_open(CorpusReader **out, const char *path, size_t max_line_bytes, int doc_per_file,
                char *err, size_t errlen) {
    *out = NULL;
    CorpusReader *r = calloc(1, sizeof *r);
    if (!r) return err_set(err, errlen, "%s: out of memory", path);
    r->path = strdup(path);
    size_t n = strlen(path);
    if (ends_with(path, n, ".gz")) r->kind = SRC_GZ, n -= 3;
    else if (ends_with(path, n, ".zst")) r->kind = SRC_ZST, n -= 4;
    r->jsonl = ends_with(path, n, ".jsonl") || ends_with(path, n, ".json");
    r->doc_per_file = doc_per_file && !r->jsonl;
    r->max_line = max_line_bytes;
    r->cap = BUF_BYTES;
    r->buf = malloc(r->cap);
    if (!r->path || !r->buf) goto oom;
    if (r->kind == SRC_GZ) {
        r->gz = gzopen(path, "rb");
        if (!r->gz) goto cannot;
        gzbuffer(r->gz, 1 << 17);
    } else {
        r->f = fopen(path, "rb");
        if (!r->f) goto cannot;
        if (r->kind == SRC_ZST) {
            r->dctx = ZSTD_createDCtx();
            r->zin = malloc(ZSTD_DStreamInSize());
            if (!r->dctx || !r->zin) goto oom;
            r->zib = (ZSTD_inBuffer){r->zin, 0, 0};
        }
    }
    *out = r;
    return 0;
cannot:
    err_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    corpus_close(r);
    return -1;
oom:
    corpus_close(r);
    return err_set(err, errlen, "%s: out of memory", path);
}

void corpus_close(CorpusReader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    if (r->gz) gzclose(r->gz);
    ZSTD_freeDCtx(r->dctx);
    free(r->zin);
    free(r->path);
    free(r->buf);
    free(r->line);
    free(r->doc);
    free(r);
}

uint64_t corpus_bytes_read(const CorpusReader *r) { return r->bytes_read; }

/* Refills buf with fresh bytes; returns the count, 0 at end, -1 on error. */
static long refill(CorpusReader *r, char *err, size_t errlen) {
    r->pos = r->len = 0;
    if (r->kind == SRC_PLAIN) {
        size_t k = fread(r->buf, 1, r->cap, r->f);
        if (k == 0 && ferror(r->f))
            return err_set(err, errlen, "%s: read error: %s", r->path, strerror(errno));
        r->bytes_read += k;
        r->len = k;
        return (long)k;
    }
    if (r->kind == SRC_GZ) {
        int k = gzread(r->gz, r->buf, (unsigned)r->cap);
        if (k < 0) {
            int e;
            const char *m = gzerror(r->gz, &e);
            return err_set(err, errlen, "%s: gzip: %s", r->path, m);
        }
        r->bytes_read = (uint64_t)gzoffset(r->gz);
        r->len = (size_t)k;
        return k;
    }
    ZSTD_outBuffer ob = {r->buf, r->cap, 0};
    while (ob.pos == 0) {
        if (r->zib.pos == r->zib.size) {
            if (r->zeof) break;
            size_t k = fread(r->zin, 1, ZSTD_DStreamInSize(), r->f);
            if (k == 0) {
                if (ferror(r->f))
                    return err_set(err, errlen, "%s: read error: %s", r->path, strerror(errno));
                r->zeof = 1;
                continue;
            }
            r->bytes_read += k;
            r->zib = (ZSTD_inBuffer){r->zin, k, 0};
        }
        size_t rc = ZSTD_decompressStream(r->dctx, &ob, &r->zib);
        if (ZSTD_isError(rc))
            return err_set(err, errlen, "%s: zstd: %s (near compressed byte %llu)", r->path,
                           ZSTD_getErrorName(rc), (unsigned long long)r->bytes_read);
    }
    r->len = ob.pos;
    return (long)ob.pos;
}

/* Reads the next line (without its '\n') into r->line. 1: a line, 0: end. */
static int next_line(CorpusReader *r, char *err, size_t errlen) {
    if (r->eof) return 0;
    r->line_len = 0;
    int got = 0;
    for (;;) {
        if (r->pos == r->len) {
            long k = refill(r, err, errlen);
            if (k < 0) return -1;
            if (k == 0) {
                r->eof = 1;
                if (!got) return 0;
                break;
            }
        }
        got = 1;
        unsigned char *start = r->buf + r->pos;
        unsigned char *nl = memchr(start, '\n', r->len - r->pos);
        size_t k = nl ? (size_t)(nl - start) : r->len - r->pos;
        if (r->line_len + k > r->max_line)
            return err_set(err, errlen, "%s:%llu: line longer than %zu bytes (--max-line-bytes)",
                           r->path, (unsigned long long)(r->line_no + 1), r->max_line);
        if (r->line_len + k + 1 > r->line_cap) {
            size_t c = 2 * (r->line_len + k + 1);
            char *p = realloc(r->line, c);
            if (!p) return err_set(err, errlen, "%s: out of memory", r->path);
            r->line = p;
            r->line_cap = c;
        }
        memcpy(r->line + r->line_len, start, k);
        r->line_len += k;
        r->pos += k + (nl != NULL);
        if (nl) break;
    }
    r->line_no++;
    r->line[r->line_len] = 0;
    if (r->line_len && r->line[r->line_len - 1] == '\r') r->line[--r->line_len] = 0;
    size_t ok = corpus_utf8_valid((unsigned char *)r->line, r->line_len);
    if (ok != r->line_len)
        return err_set(err, errlen, "%s:%llu: invalid UTF-8 at byte %zu of the line", r->path,
                       (unsigned long long)r->line_no, ok + 1);
    return 1;
}

static int doc_append(CorpusReader *r, const char *s, size_t n, int newline_first) {
    size_t need = r->doc_len + n + 2;
    if (need > r->doc_cap) {
        size_t c = need * 2;
        char *p = realloc(r->doc, c);
        if (!p) return -1;
        r->doc = p;
        r->doc_cap = c;
    }
    if (newline_first) r->doc[r->doc_len++] = '\n';
    memcpy(r->doc + r->doc_len, s, n);
    r->doc_len += n;
    r->doc[r->doc_len] = 0;
    return 0;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t') return 0;
    return 1;
}

int corpus_next(CorpusReader *r, const char **doc, size_t *n_bytes, char *err, size_t errlen) {
    r->doc_len = 0;
    int rc;
    if (r->jsonl) {
        while ((rc = next_line(r, err, errlen)) == 1) {
            if (is_blank(r->line, r->line_len)) continue;
            cJSON *j = cJSON_ParseWithLength(r->line, r->line_len);
            if (!j)
                return err_set(err, errlen, "%s:%llu: not valid JSON (near byte %ld of the line)",
                               r->path, (unsigned long long)r->line_no,
                               cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - r->line) + 1
                                                   : 0L);
            cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
            if (!cJSON_IsString(t)) {
                cJSON_Delete(j);
                return err_set(err, errlen, "%s:%llu: no string field \"text\" in this JSON line",
                               r->path, (unsigned long long)r->line_no);
            }
            size_t n = strlen(t->valuestring);
            int bad = doc_append(r, t->valuestring, n, 0);
            cJSON_Delete(j);
            if (bad) return err_set(err, errlen, "%s: out of memory", r->path);
            if (corpus_utf8_valid((unsigned char *)r->doc, r->doc_len) != r->doc_len)
                return err_set(err, errlen,
                               "%s:%llu: \"text\" decodes to invalid UTF-8 (a lone \\u surrogate?)",
                               r->path, (unsigned long long)r->line_no);
            *doc = r->doc;
            *n_bytes = r->doc_len;
            return 1;
        }
        return rc;
    }
    int in_doc = 0;
    while ((rc = next_line(r, err, errlen)) == 1) {
        int blank = is_blank(r->line, r->line_len);
        if (blank && !r->doc_per_file) {
            if (in_doc) break;
            continue;
        }
        if (doc_append(r, r->line, r->line_len, in_doc))
            return err_set(err, errlen, "%s: out of memory", r->path);
        in_doc = 1;
    }
    if (rc < 0) return -1;
    if (!in_doc) return 0;
    *doc = r->doc;
    *n_bytes = r->doc_len;
    return 1;
}
