/* test_tok_corpus: `dapt tokenize` as a library (tok_run). Parity with the
 * spm_encode CLI document by document; the same tokens from text, JSONL,
 * .gz and .zst inputs and for any thread count; the train/val split is
 * disjoint, covers every document, keeps duplicates together and holds out
 * exactly the N smallest-hash documents for --val-docs; decode(encode(doc))
 * is the document for a --train-tokenizer model; bad inputs fail with the
 * file and line and leave no shard under a final name.
 * Corpus: paragraphs of /usr/share/common-licenses (Debian base-files). */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/hash.h"
#include "data/shard.h"
#include "tests/c/check.h"
#include "tests/data/scratch.h"
#include "tokenizer/corpus.h"
#include "tokenizer/spm.h"
#include "tokenizer/tokenize.h"

static char dir[64], err[4096];

typedef struct {
    char **doc;
    size_t n;
} Docs;

typedef struct {
    uint32_t *tok;
    size_t n;
} Toks;

static void docs_add(Docs *d, const char *s, size_t n) {
    d->doc = realloc(d->doc, (d->n + 1) * sizeof *d->doc);
    d->doc[d->n] = strndup(s, n);
    d->n++;
}

/* Paragraphs of the license texts, each flattened to one line, deduplicated,
 * then 5 extra copies of the first one (duplicates must stay together). */
static Docs license_paragraphs(size_t max_docs) {
    Docs d = {0};
    DIR *dp = opendir("/usr/share/common-licenses");
    struct dirent *e;
    char *names[64];
    int nn = 0;
    while (dp && (e = readdir(dp)) && nn < 64)
        if (e->d_name[0] != '.') names[nn++] = strdup(e->d_name);
    if (dp) closedir(dp);
    for (int i = 0; i < nn; i++) /* sort for a fixed order */
        for (int j = i + 1; j < nn; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (int i = 0; i < nn; i++) {
        char path[512];
        snprintf(path, sizeof path, "/usr/share/common-licenses/%s", names[i]);
        free(names[i]);
        CorpusReader *r;
        if (corpus_open(&r, path, 1 << 20, 0, err, sizeof err)) continue; /* a link to a dir */
        const char *doc;
        size_t n;
        while (corpus_next(r, &doc, &n, err, sizeof err) == 1 && d.n < max_docs) {
            /* One line, single spaces, no leading or trailing space: the
             * default sentencepiece normaliser then maps distinct documents
             * to distinct token sequences. */
            char *flat = malloc(n + 1);
            size_t m = 0;
            for (size_t k = 0; k < n; k++) {
                char c = (doc[k] == '\n' || doc[k] == '\t') ? ' ' : doc[k];
                if (c == ' ' && (m == 0 || flat[m - 1] == ' ')) continue;
                flat[m++] = c;
            }
            while (m > 0 && flat[m - 1] == ' ') m--;
            flat[m] = 0;
            n = m;
            int dup = 0;
            for (size_t k = 0; k < d.n && !dup; k++) dup = !strcmp(d.doc[k], flat);
            if (!dup && n > 0) docs_add(&d, flat, n);
            free(flat);
        }
        corpus_close(r);
    }
    for (int k = 0; k < 5; k++) docs_add(&d, d.doc[0], strlen(d.doc[0]));
    return d;
}

static void write_text(const char *path, const Docs *d, const char *sep) {
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; i < d->n; i++) fprintf(f, "%s%s", d->doc[i], sep);
    fclose(f);
}

static void write_jsonl(const char *path, const Docs *d) {
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; i < d->n; i++) {
        fputs("{\"id\": 7, \"text\": \"", f);
        for (const unsigned char *p = (const unsigned char *)d->doc[i]; *p; p++) {
            if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
            else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
            else fputc(*p, f);
        }
        fputs("\"}\n", f);
    }
    fclose(f);
}

/* Token sequences of each document in the shards OUT/PREFIX*.tok.zst, in order. */
static Toks *read_docs(const char *out, const char *prefix, size_t *n_docs, uint32_t eos) {
    Toks *docs = NULL;
    size_t nd = 0;
    Toks cur = {0};
    for (int i = 0;; i++) {
        char path[512];
        if (!strcmp(prefix, "val")) {
            if (i) break;
            snprintf(path, sizeof path, "%s/val.tok.zst", out);
        } else
            snprintf(path, sizeof path, "%s/train-%05d.tok.zst", out, i);
        if (access(path, F_OK)) break;
        Shard *s;
        CHECK_OK(shard_open(&s, path, err, sizeof err), err);
        if (!s) break;
        uint32_t *buf = malloc(shard_header(s)->tokens_per_frame * sizeof *buf);
        for (uint64_t f = 0; f < shard_n_frames(s); f++) {
            CHECK_OK(shard_read_frame(s, f, buf, err, sizeof err), err);
            for (uint64_t k = 0; k < shard_frame_tokens(s, f); k++) {
                if (buf[k] == eos) {
                    docs = realloc(docs, (nd + 1) * sizeof *docs);
                    docs[nd++] = cur;
                    cur = (Toks){0};
                    continue;
                }
                cur.tok = realloc(cur.tok, (cur.n + 1) * sizeof *cur.tok);
                cur.tok[cur.n++] = buf[k];
            }
        }
        CHECK(cur.n == 0); /* a shard ends with an EOS */
        free(buf);
        shard_close(s);
    }
    *n_docs = nd;
    return docs;
}

static void free_toks(Toks *t, size_t n) {
    for (size_t i = 0; i < n; i++) free(t[i].tok);
    free(t);
}

static int toks_eq(const Toks *a, const Toks *b) {
    return a->n == b->n && (a->n == 0 || !memcmp(a->tok, b->tok, a->n * sizeof *a->tok));
}

/* Progress callback: counts calls and keeps the last report. */
static int n_final;
static uint64_t last_bytes, last_total, last_tokens;
static void on_progress(const TokStats *st, uint64_t bytes, uint64_t total, int final, void *ctx) {
    (void)ctx;
    n_final += final;
    last_bytes = bytes;
    last_total = total;
    last_tokens = st->tokens_train + st->tokens_val;
}

static TokOptions opts(const char *model, const char *out, const char *const *in, int n_in) {
    TokOptions o;
    tok_options_default(&o);
    o.tokenizer_path = model;
    o.out_dir = out;
    o.name = "test";
    o.inputs = in;
    o.n_inputs = n_in;
    o.val_frac = 0;
    o.tokens_per_frame = 1000;
    o.shard_tokens = 30000;
    return o;
}

static int files_equal(const char *a, const char *b) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

/* The UTF-8 validator against hand-made sequences. */
static void utf8(void) {
    struct {
        const char *s;
        size_t valid; /* length of the valid prefix */
    } cases[] = {
        {"plain ascii", 11},
        {"caf\xc3\xa9", 5},              /* U+00E9 */
        {"\xe2\x82\xac!", 4},             /* U+20AC */
        {"\xf0\x9f\x98\x80", 4},          /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4},          /* U+10FFFF, the last code point */
        {"a\xc0\x80", 1},                /* overlong NUL */
        {"ab\xe0\x80\xaf", 2},            /* overlong '/' */
        {"\xed\xa0\x80", 0},              /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 0},          /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 0},          /* invalid lead byte */
        {"abc\xe2\x82", 3},               /* cut short at the end */
        {"\x80", 0},                      /* lone continuation */
        {"x\xc3(", 1},                    /* bad continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t got = corpus_utf8_valid((const unsigned char *)cases[i].s, strlen(cases[i].s));
        if (got != cases[i].valid) fprintf(stderr, "utf8 case %zu: valid prefix %zu, expected %zu\n", i, got, cases[i].valid);
        CHECK(got == cases[i].valid);
    }
}

int main(void) {
    utf8();
    if (scratch_make(dir, sizeof dir, "tok")) return 1;
    char p_lines[256], p_text[256], p_jsonl[256], model[256], cmd[2048], p_ids[256];
    snprintf(p_lines, sizeof p_lines, "%s/docs.lines", dir);
    snprintf(p_text, sizeof p_text, "%s/docs.txt", dir);
    snprintf(p_jsonl, sizeof p_jsonl, "%s/docs.jsonl", dir);
    snprintf(p_ids, sizeof p_ids, "%s/ids.txt", dir);
    snprintf(model, sizeof model, "%s/m.model", dir);
    Docs d = license_paragraphs(700);
    CHECK(d.n > 300);
    fprintf(stderr, "corpus: %zu documents\n", d.n);
    write_text(p_lines, &d, "\n");
    write_text(p_text, &d, "\n\n\n");
    write_jsonl(p_jsonl, &d);

    /* The reference: the sentencepiece CLI, one document per line. */
    snprintf(cmd, sizeof cmd,
             "spm_train --input=%s --model_prefix=%s/m --vocab_size=400 --model_type=bpe "
             "--byte_fallback=true --minloglevel=2 >/dev/null 2>&1 && "
             "spm_encode --model=%s --output_format=id < %s > %s && "
             "gzip -k %s && zstd -q -k %s",
             p_lines, dir, model, p_lines, p_ids, p_jsonl, p_jsonl);
    CHECK(system(cmd) == 0);
    Toks *ref = calloc(d.n, sizeof *ref);
    FILE *f = fopen(p_ids, "r");
    size_t n_ref = 0;
    char *line = NULL;
    size_t cap = 0;
    while (f && getline(&line, &cap, f) > 0 && n_ref < d.n) {
        for (char *p = line, *end; (ref[n_ref].tok = realloc(ref[n_ref].tok, (ref[n_ref].n + 1) * 4)),
                                   (ref[n_ref].tok[ref[n_ref].n] = (uint32_t)strtoul(p, &end, 10)), end != p;
             p = end)
            ref[n_ref].n++;
        n_ref++;
    }
    free(line);
    if (f) fclose(f);
    CHECK(n_ref == d.n);

    SpmModel *spm;
    CHECK_OK(spm_load(&spm, model, err, sizeof err), err);
    uint32_t eos = (uint32_t)spm_eos_id(spm);
    CHECK(spm_vocab_size(spm) == 400 && eos == 2);

    /* Text, two threads, small frames and shards. */
    char out[256], out2[256];
    snprintf(out, sizeof out, "%s/text", dir);
    const char *in_text[] = {p_text};
    TokOptions o = opts(model, out, in_text, 1);
    o.n_threads = 2;
    o.on_progress = on_progress;
    TokStats st;
    CHECK_OK(tok_run(&o, &st, err, sizeof err), err);
    /* one final report: all input bytes read, all tokens counted */
    struct stat sb;
    stat(p_text, &sb);
    CHECK(n_final == 1 && last_bytes == (uint64_t)sb.st_size && last_total == last_bytes);
    CHECK(last_tokens == st.tokens_train + st.tokens_val && last_tokens > 0);
    CHECK(st.docs_train == d.n && st.docs_val == 0);
    CHECK(st.n_train_shards >= 2);
    size_t n_got;
    Toks *got = read_docs(out, "train", &n_got, eos);
    CHECK(n_got == d.n);
    size_t mismatch = 0, n_tok = 0;
    for (size_t i = 0; i < n_got && i < n_ref; i++) {
        mismatch += !toks_eq(&got[i], &ref[i]);
        n_tok += got[i].n + 1;
    }
    CHECK(mismatch == 0);
    CHECK(n_tok == st.tokens_train);
    free_toks(got, n_got);
    uint64_t mh = 0;
    hash_file(model, &mh);
    snprintf(cmd, sizeof cmd, "%s/train-00000.tok.zst", out);
    Shard *s;
    CHECK_OK(shard_open(&s, cmd, err, sizeof err), err);
    if (s) {
        CHECK(shard_header(s)->tokenizer_hash == mh);
        CHECK(shard_header(s)->vocab_size == 400 && shard_header(s)->eos_id == 2);
        CHECK(!strcmp(shard_header(s)->name, "test"));
        shard_close(s);
    }

    /* JSONL plain / .gz / .zst with one thread: the same shard bytes. */
    const char *suffix[] = {"", ".gz", ".zst"};
    for (int k = 0; k < 3; k++) {
        char in[300];
        snprintf(in, sizeof in, "%s%s", p_jsonl, suffix[k]);
        snprintf(out2, sizeof out2, "%s/jsonl%d", dir, k);
        const char *in_j[] = {in};
        TokOptions oj = opts(model, out2, in_j, 1);
        oj.n_threads = 1;
        CHECK_OK(tok_run(&oj, &st, err, sizeof err), err);
        for (int i = 0; i < 3; i++) {
            char a[400], b[400];
            snprintf(a, sizeof a, "%s/train-%05d.tok.zst", out, i);
            snprintf(b, sizeof b, "%s/train-%05d.tok.zst", out2, i);
            CHECK(files_equal(a, b));
        }
    }

    /* Val by fraction: disjoint, complete, duplicates together. */
    snprintf(out2, sizeof out2, "%s/val20", dir);
    o = opts(model, out2, in_text, 1);
    o.val_frac = 0.2;
    o.n_threads = 3;
    CHECK_OK(tok_run(&o, &st, err, sizeof err), err);
    size_t n_tr, n_va;
    Toks *tr = read_docs(out2, "train", &n_tr, eos), *va = read_docs(out2, "val", &n_va, eos);
    CHECK(n_tr + n_va == d.n && n_va == st.docs_val);
    /* binomial(n, 0.2): 5 standard deviations either side */
    double mean = 0.2 * (double)d.n, sd = sqrt(0.16 * (double)d.n);
    CHECK((double)n_va > mean - 5 * sd && (double)n_va < mean + 5 * sd);
    size_t both = 0, missing = 0;
    for (size_t i = 0; i < n_ref; i++) {
        int in_tr = 0, in_va = 0;
        for (size_t j = 0; j < n_tr; j++) in_tr |= toks_eq(&ref[i], &tr[j]);
        for (size_t j = 0; j < n_va; j++) in_va |= toks_eq(&ref[i], &va[j]);
        both += in_tr && in_va;
        missing += !in_tr && !in_va;
    }
    CHECK(both == 0 && missing == 0);
    free_toks(tr, n_tr);
    free_toks(va, n_va);

    /* --val-docs 40: exactly the documents whose hash is at most the 40th
     * smallest (sorting here, a heap in the code). */
    snprintf(out2, sizeof out2, "%s/val40", dir);
    o = opts(model, out2, in_text, 1);
    o.val_docs = 40;
    CHECK_OK(tok_run(&o, &st, err, sizeof err), err);
    uint64_t *h = malloc(d.n * sizeof *h);
    for (size_t i = 0; i < d.n; i++) h[i] = tok_doc_hash(d.doc[i], strlen(d.doc[i]));
    for (size_t i = 0; i < d.n; i++)
        for (size_t j = i + 1; j < d.n; j++)
            if (h[j] < h[i]) {
                uint64_t t = h[i];
                h[i] = h[j];
                h[j] = t;
            }
    size_t expect = 0;
    for (size_t i = 0; i < d.n; i++) expect += h[i] <= h[39];
    CHECK(st.docs_val == expect && expect >= 40);
    free(h);

    /* Multi-line documents with a --train-tokenizer model (identity
     * normalisation, byte fallback): decode(encode(doc)) == doc. */
    char m2[256];
    snprintf(m2, sizeof m2, "%s/bpe", dir);
    CHECK_OK(spm_train_bpe(p_text, m2, 600, 2, err, sizeof err), err);
    snprintf(m2, sizeof m2, "%s/bpe.model", dir);
    const char *gpl[] = {"/usr/share/common-licenses/GPL-3"};
    snprintf(out2, sizeof out2, "%s/gpl", dir);
    o = opts(m2, out2, gpl, 1);
    CHECK_OK(tok_run(&o, &st, err, sizeof err), err);
    SpmModel *spm2;
    CHECK_OK(spm_load(&spm2, m2, err, sizeof err), err);
    if (spm2) {
        CorpusReader *r;
        CHECK_OK(corpus_open(&r, gpl[0], 1 << 20, 0, err, sizeof err), err);
        size_t nd;
        Toks *g = read_docs(out2, "train", &nd, (uint32_t)spm_eos_id(spm2));
        const char *doc;
        size_t n, i = 0, bad = 0, multi = 0;
        while (r && corpus_next(r, &doc, &n, err, sizeof err) == 1 && i < nd) {
            char *text;
            CHECK_OK(spm_decode(spm2, g[i].tok, g[i].n, &text, err, sizeof err), err);
            bad += text && (strlen(text) != n || memcmp(text, doc, n));
            multi += memchr(doc, '\n', n) != NULL;
            free(text);
            i++;
        }
        CHECK(i == nd && nd > 100);
        CHECK(multi > 50); /* the property is about newlines inside documents */
        CHECK(bad == 0);
        corpus_close(r);
        free_toks(g, nd);
        spm_free(spm2);
    }

    /* Bad input: error names file and line; no shard under a final name. */
    struct {
        const char *name, *content, *want1, *want2;
    } bad[] = {
        {"utf8.txt", "good line\n\nline two\n\xc3\x28 broken\n", ":4:", "invalid UTF-8"},
        {"long.txt", "short\n\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", ":3:", "longer than 64"},
        {"notext.jsonl", "{\"text\": \"fine\"}\n{\"body\": \"no text\"}\n", ":2:", "\"text\""},
        {"badjson.jsonl", "{\"text\": \"fine\"}\n\n{\"text\": \"unterminated}\n", ":3:", "JSON"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        char in[300];
        snprintf(in, sizeof in, "%s/%s", dir, bad[k].name);
        f = fopen(in, "wb");
        fputs(bad[k].content, f);
        fclose(f);
        snprintf(out2, sizeof out2, "%s/bad%zu", dir, k);
        /* the good corpus first, so shards are under way when the error comes */
        const char *ins[] = {p_text, in};
        o = opts(model, out2, ins, 2);
        o.max_line_bytes = 1 << 20;
        if (k == 1) { /* alone: the paragraphs are longer than 64 bytes too */
            ins[0] = in;
            o.n_inputs = 1;
            o.max_line_bytes = 64;
        }
        CHECK_FAILS(tok_run(&o, &st, err, sizeof err), err, in, bad[k].want1, bad[k].want2);
        DIR *dp = opendir(out2);
        int n_files = 0;
        while (dp && readdir(dp)) n_files++;
        if (dp) closedir(dp);
        CHECK(n_files == 2); /* only . and .. */
    }
    /* Compressed inputs that are corrupt: the error names the file. */
    {
        char in[300];
        snprintf(in, sizeof in, "%s/garbage.txt.zst", dir);
        f = fopen(in, "wb");
        fputs("\x28\xb5\x2f\xfd this is not a zstd frame at all", f);
        fclose(f);
        snprintf(out2, sizeof out2, "%s/badzst", dir);
        const char *ins[] = {in};
        o = opts(model, out2, ins, 1);
        CHECK_FAILS(tok_run(&o, &st, err, sizeof err), err, in, "zstd");
        snprintf(in, sizeof in, "%s/cut.jsonl.gz", dir);
        snprintf(cmd, sizeof cmd, "head -c 3000 %s.gz > %s", p_jsonl, in);
        CHECK(system(cmd) == 0);
        snprintf(out2, sizeof out2, "%s/badgz", dir);
        ins[0] = in;
        o = opts(model, out2, ins, 1);
        CHECK_FAILS(tok_run(&o, &st, err, sizeof err), err, in);
    }
    /* An output directory that already holds shards is refused. */
    o = opts(model, out, in_text, 1);
    CHECK_FAILS(tok_run(&o, &st, err, sizeof err), err, "already exists");

    free_toks(ref, n_ref);
    for (size_t i = 0; i < d.n; i++) free(d.doc[i]);
    free(d.doc);
    spm_free(spm);
    if (scratch_remove(dir)) return 1;
    return CHECK_DONE();
}
