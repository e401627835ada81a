/* tokenizer/cmd_tokenize.c: `dapt tokenize`, the command-line face of
 * tokenizer/tokenize.h (and of sentencepiece training for demos). Parses and
 * validates options, prints progress and a summary; all work is in tok_run. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokenizer/corpus.h"
#include "tokenizer/spm.h"
#include "tokenizer/tokenize.h"
#include "trainer/cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dapt tokenize --model tokenizer.model --out DIR [options] INPUT...\n"
            "       dapt tokenize --train-tokenizer --vocab-size V --out DIR [options] INPUT...\n"
            "\n"
            "Encodes documents with a sentencepiece model into DIR/train-00000.tok.zst, ...\n"
            "and DIR/val.tok.zst, each document followed by the model's EOS id.\n"
            "\n"
            "Inputs (by name; a .gz or .zst suffix is decompressed first):\n"
            "  *.jsonl, *.json   one JSON object per line, the document is its \"text\" field\n"
            "  anything else     UTF-8 text, one document per block of lines separated by\n"
            "                    blank lines (--doc-per-file: one document per file)\n"
            "\n"
            "Options:\n"
            "  --model PATH          sentencepiece model (e.g. the base model's tokenizer.model)\n"
            "  --out DIR             output directory (created; must not hold shards already)\n"
            "  --val-frac F          held-out share of documents, by document hash (default 0.005)\n"
            "  --val-docs N          instead: hold out the N documents of smallest hash\n"
            "  --name NAME           corpus name stored in the shard headers (default: DIR's name)\n"
            "  --threads N           encoding threads (default: number of CPUs)\n"
            "  --frame-tokens N      tokens per zstd frame (default 65536)\n"
            "  --shard-tokens N      start a new train shard after N tokens (default 268435456)\n"
            "  --level L             zstd level (default 3)\n"
            "  --max-line-bytes N    longest accepted input line (default 67108864)\n"
            "  --doc-per-file        plain text: each file is one document\n"
            "  --no-progress         no progress line (it is shown only on a terminal anyway)\n"
            "  --train-tokenizer     first train a BPE model (byte fallback) on the inputs into\n"
            "                        DIR/tokenizer.model, then tokenize with it\n"
            "  --vocab-size V        vocabulary size for --train-tokenizer\n");
}

static int parse_u64(const char *opt, const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi) {
        fprintf(stderr, "dapt tokenize: %s %s: expected an integer in [%llu, %llu]\n", opt, v,
                (unsigned long long)lo, (unsigned long long)hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* The progress line, rewritten in place on the terminal. */
static void show_progress(const TokStats *st, uint64_t bytes, uint64_t total, int final, void *ctx) {
    (void)ctx;
    double dt = st->seconds > 0 ? st->seconds : 1e-9;
    double toks = (double)(st->tokens_train + st->tokens_val) / dt;
    double eta = bytes > 0 && total > bytes ? dt * (double)(total - bytes) / (double)bytes : 0;
    fprintf(stderr, "\r[tokenize] %.1f/%.1f MB  %.2f MB/s  %.3fM tok/s  ETA %d:%02d%s", (double)bytes / 1e6,
            (double)total / 1e6, (double)bytes / dt / 1e6, toks / 1e6, (int)eta / 60, (int)eta % 60,
            final ? "\n" : "   ");
    fflush(stderr);
}

/* Writes every document of the inputs to `path`, for the sentencepiece trainer. */
static int dump_text(const TokOptions *o, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
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
        snprintf(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    TokOptions o;
    tok_options_default(&o);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o.n_threads = ncpu > 0 ? (int)(ncpu > 64 ? 64 : ncpu) : 1;
    int progress = isatty(2);
    int train = 0, have_frac = 0;
    uint64_t vocab = 0, x;
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    int n_in = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i], *val = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(inputs);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            inputs[n_in++] = a;
            continue;
        }
        if (!strcmp(a, "--train-tokenizer")) { train = 1; continue; }
        if (!strcmp(a, "--doc-per-file")) { o.doc_per_file = 1; continue; }
        if (!strcmp(a, "--no-progress")) { progress = 0; continue; }
        char *eq = strchr(a, '=');
        if (eq) {
            *eq = 0;
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "dapt tokenize: %s needs a value (see --help)\n", a);
            free(inputs);
            return 2;
        }
        int bad = 0;
        if (!strcmp(a, "--model")) o.model_path = val;
        else if (!strcmp(a, "--out")) o.out_dir = val;
        else if (!strcmp(a, "--name")) o.name = val;
        else if (!strcmp(a, "--val-frac")) {
            char *end;
            o.val_frac = strtod(val, &end);
            have_frac = 1;
            if (end == val || *end || !(o.val_frac >= 0 && o.val_frac <= 1)) {
                fprintf(stderr, "dapt tokenize: --val-frac %s: expected a number in [0, 1]\n", val);
                bad = 1;
            }
        } else if (!strcmp(a, "--val-docs")) {
            bad = parse_u64(a, val, 0, 1ull << 40, &x);
            o.val_docs = (int64_t)x;
        } else if (!strcmp(a, "--threads")) {
            bad = parse_u64(a, val, 1, 256, &x);
            o.n_threads = (int)x;
        } else if (!strcmp(a, "--frame-tokens")) {
            bad = parse_u64(a, val, 1, 1u << 26, &x);
            o.tokens_per_frame = (uint32_t)x;
        } else if (!strcmp(a, "--shard-tokens")) {
            bad = parse_u64(a, val, 1, UINT64_MAX, &o.shard_tokens);
        } else if (!strcmp(a, "--level")) {
            bad = parse_u64(a, val, 1, 22, &x);
            o.zstd_level = (int)x;
        } else if (!strcmp(a, "--max-line-bytes")) {
            bad = parse_u64(a, val, 1, 1ull << 34, &x);
            o.max_line_bytes = (size_t)x;
        } else if (!strcmp(a, "--vocab-size")) {
            bad = parse_u64(a, val, 16, 1u << 24, &vocab);
        } else {
            fprintf(stderr, "dapt tokenize: unknown option %s (see --help)\n", a);
            bad = 1;
        }
        if (bad) {
            free(inputs);
            return 2;
        }
    }
    const char *why = NULL;
    if (!o.out_dir) why = "--out DIR is required";
    else if (n_in == 0) why = "no INPUT files given";
    else if (train && vocab == 0) why = "--train-tokenizer needs --vocab-size V";
    else if (!train && !o.model_path) why = "--model PATH is required (or --train-tokenizer)";
    else if (have_frac && o.val_docs >= 0) why = "give --val-frac or --val-docs, not both";
    if (why) {
        fprintf(stderr, "dapt tokenize: %s (see `dapt tokenize --help`)\n", why);
        free(inputs);
        return 2;
    }
    o.inputs = inputs;
    o.n_inputs = n_in;
    if (progress) o.on_progress = show_progress;
    char name[256], err[8192], model[4096], txt[4096];
    if (!strcmp(o.name, "corpus")) {
        const char *b = strrchr(o.out_dir, '/');
        b = (b && b[1]) ? b + 1 : o.out_dir;
        snprintf(name, sizeof name, "%s", b);
        o.name = name;
    }
    if (train) {
        if (mkdir(o.out_dir, 0777) && errno != EEXIST) {
            fprintf(stderr, "dapt tokenize: %s: cannot create directory: %s\n", o.out_dir, strerror(errno));
            free(inputs);
            return 1;
        }
        snprintf(txt, sizeof txt, "%s/tokenizer.train.txt", o.out_dir);
        snprintf(model, sizeof model, "%s/tokenizer", o.out_dir);
        fprintf(stderr, "[tokenize] training a %llu-piece BPE model on the inputs\n", (unsigned long long)vocab);
        int rc = dump_text(&o, txt, err, sizeof err);
        if (rc == 0) rc = spm_train_bpe(txt, model, (uint32_t)vocab, o.n_threads, err, sizeof err);
        unlink(txt);
        if (rc) {
            fprintf(stderr, "dapt tokenize: %s\n", err);
            free(inputs);
            return 1;
        }
        snprintf(model, sizeof model, "%s/tokenizer.model", o.out_dir);
        fprintf(stderr, "[tokenize] wrote %s\n", model);
        if (!o.model_path) o.model_path = model;
    }
    TokStats st;
    int rc = tok_run(&o, &st, err, sizeof err);
    free(inputs);
    if (rc) {
        fprintf(stderr, "dapt tokenize: %s\n", err);
        return 1;
    }
    uint64_t tokens = st.tokens_train + st.tokens_val;
    printf("tokenized %llu documents (%llu train, %llu val), %llu tokens (%llu train, %llu val)\n",
           (unsigned long long)(st.docs_train + st.docs_val), (unsigned long long)st.docs_train,
           (unsigned long long)st.docs_val, (unsigned long long)tokens,
           (unsigned long long)st.tokens_train, (unsigned long long)st.tokens_val);
    printf("input %.2f MB (%.2f MB of text), output %.2f MB in %d train shard(s) + val.tok.zst\n",
           (double)st.input_bytes / 1e6, (double)st.text_bytes / 1e6, (double)st.output_bytes / 1e6,
           st.n_train_shards);
    double out_b = st.output_bytes ? (double)st.output_bytes : 1.0;
    printf("compression: %.2fx over raw %u-byte tokens, %.2fx over the text; %.2f bytes of text per token\n",
           (double)tokens * st.token_bytes / out_b, st.token_bytes, (double)st.text_bytes / out_b,
           tokens ? (double)st.text_bytes / (double)tokens : 0.0);
    printf("%.2f s: %.2f MB/s of text, %.3fM tokens/s with %d thread(s)\n", st.seconds,
           (double)st.text_bytes / 1e6 / st.seconds, (double)tokens / 1e6 / st.seconds, o.n_threads);
    return 0;
}
