/* tok_driver.c: the C side of the tokenizer oracle tests
 * (tests/tok/test_bpe_hf.py drives it; not part of `dapt`). It goes through
 * the tokenizer interface (tokenizer/tokenizer.h), as `dapt tokenize` does.
 *
 *   tok_driver info TOKENIZER
 *       prints "kind K", "vocab N", "bos B", "eos E", "add_bos A",
 *       "add_eos A", "family F" (or "-"), "hash H", one per line
 *   tok_driver encode TOKENIZER DOCS [doc]
 *       DOCS holds documents, each a 4-byte little-endian length and its
 *       bytes; prints one line per document: "ok ID ID ..." (tokenizer_encode,
 *       or tokenizer_encode_doc with `doc`), or "err MESSAGE"
 *   tok_driver decode TOKENIZER IDS [skip]
 *       IDS has one document's ids per line; prints one line per document:
 *       "ok HEX" (the decoded bytes in hex; `skip`: skip special tokens) or
 *       "err MESSAGE"
 *   tok_driver time TOKENIZER DOCS REPEAT
 *       encodes the documents REPEAT times on one thread and prints
 *       "bytes B tokens T seconds S"
 *
 * Exit status 0 when the command ran (per-document errors are output), 1
 * otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tokenizer.h"

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    for (size_t got; b && (got = fread(b + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) b = realloc(b, cap *= 2);
    }
    fclose(f);
    *n = len;
    return b;
}

/* The documents of a DOCS file: pointers into buf. */
static size_t split_docs(char *buf, size_t n, const char ***doc, size_t **len) {
    size_t k = 0, cap = 64;
    *doc = malloc(cap * sizeof **doc);
    *len = malloc(cap * sizeof **len);
    for (size_t i = 0; i + 4 <= n;) {
        uint32_t l = (uint32_t)(unsigned char)buf[i] | (uint32_t)(unsigned char)buf[i + 1] << 8 |
                     (uint32_t)(unsigned char)buf[i + 2] << 16 |
                     (uint32_t)(unsigned char)buf[i + 3] << 24;
        if (i + 4 + l > n) break;
        if (k == cap) {
            *doc = realloc(*doc, (cap *= 2) * sizeof **doc);
            *len = realloc(*len, cap * sizeof **len);
        }
        (*doc)[k] = buf + i + 4;
        (*len)[k++] = l;
        i += 4 + l;
    }
    return k;
}

static int cmd_info(const Tokenizer *t) {
    const struct BpeModel *b = tokenizer_bpe(t);
    const BpeFamily *f = b ? bpe_family(b) : NULL;
    printf("kind %s\nvocab %u\nbos %d\neos %d\nadd_bos %d\nadd_eos %d\nfamily %s\nhash %016llx\n",
           tokenizer_kind_name(t), tokenizer_vocab_size(t), tokenizer_bos_id(t),
           tokenizer_eos_id(t), tokenizer_add_bos(t), tokenizer_add_eos(t), f ? f->gguf_pre : "-",
           (unsigned long long)tokenizer_hash(t));
    return 0;
}

static int cmd_encode(const Tokenizer *t, const char *path, int as_doc, int repeat) {
    size_t n;
    char *buf = read_all(path, &n), err[1024];
    if (!buf) return fprintf(stderr, "tok_driver: cannot read %s\n", path), 1;
    const char **doc;
    size_t *len, n_docs = split_docs(buf, n, &doc, &len), n_ids = 0, cap = 0, bytes = 0, toks = 0;
    uint32_t *ids = NULL;
    double t0 = now_s();
    for (int r = 0; r < (repeat ? repeat : 1); r++)
        for (size_t d = 0; d < n_docs; d++) {
            int rc =
                as_doc
                    ? tokenizer_encode_doc(t, doc[d], len[d], &ids, &n_ids, &cap, err, sizeof err)
                    : tokenizer_encode(t, doc[d], len[d], &ids, &n_ids, &cap, err, sizeof err);
            bytes += len[d];
            toks += rc ? 0 : n_ids;
            if (repeat) continue;
            if (rc) {
                printf("err %s\n", err);
                continue;
            }
            fputs("ok", stdout);
            for (size_t i = 0; i < n_ids; i++)
                printf(" %u", ids[i]);
            putchar('\n');
        }
    if (repeat) printf("bytes %zu tokens %zu seconds %.6f\n", bytes, toks, now_s() - t0);
    free(ids);
    free(doc);
    free(len);
    free(buf);
    return 0;
}

static int cmd_decode(const Tokenizer *t, const char *path, int skip) {
    FILE *f = fopen(path, "r");
    if (!f) return fprintf(stderr, "tok_driver: cannot read %s\n", path), 1;
    char *line = NULL, err[1024];
    size_t lcap = 0;
    uint32_t *ids = malloc(sizeof *ids);
    size_t cap = 1;
    while (getline(&line, &lcap, f) > 0) {
        size_t n = 0;
        for (char *p = line, *end; (strtoul(p, &end, 10), end != p); p = end) {
            if (n == cap) ids = realloc(ids, (cap *= 2) * sizeof *ids);
            ids[n++] = (uint32_t)strtoul(p, NULL, 10);
        }
        char *text;
        size_t len;
        if (tokenizer_decode(t, ids, n, skip, &text, &len, err, sizeof err)) {
            printf("err %s\n", err);
            continue;
        }
        fputs("ok ", stdout);
        for (size_t i = 0; i < len; i++)
            printf("%02x", (unsigned char)text[i]);
        putchar('\n');
        free(text);
    }
    free(line);
    free(ids);
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr,
                "usage: tok_driver info|encode|decode|time TOKENIZER [FILE] [doc|skip|N]\n");
        return 1;
    }
    char err[1024];
    Tokenizer *t;
    if (tokenizer_load(&t, argv[2], err, sizeof err)) {
        printf("err %s\n", err);
        return 0;
    }
    const char *opt = argc > 4 ? argv[4] : "";
    int rc = 1;
    if (!strcmp(argv[1], "info"))
        rc = cmd_info(t);
    else if (!strcmp(argv[1], "encode") && argc > 3)
        rc = cmd_encode(t, argv[3], !strcmp(opt, "doc"), 0);
    else if (!strcmp(argv[1], "time") && argc > 4)
        rc = cmd_encode(t, argv[3], 0, atoi(opt) > 0 ? atoi(opt) : 1);
    else if (!strcmp(argv[1], "decode") && argc > 3)
        rc = cmd_decode(t, argv[3], !strcmp(opt, "skip"));
    else
        fprintf(stderr, "tok_driver: unknown command %s\n", argv[1]);
    tokenizer_free(t);
    return rc;
}
