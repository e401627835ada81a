/* tokenize.c: `dapt tokenize`, the command-line face of tokenizer/tokenize.h
 * (and of sentencepiece training for demos); --tokenizer takes whatever
 * tokenizer_load takes (tokenizer/tokenizer.h). Parses and validates options,
 * prints progress and a summary; all work is in tok_train_tokenizer and
 * tok_run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer/tokenize.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"

static const char usage[] =
    "usage: dapt tokenize --tokenizer PATH --out DIR [options] INPUT...\n"
    "       dapt tokenize --train-tokenizer --vocab-size V --out DIR [options] INPUT...\n"
    "\n"
    "Encodes documents into DIR/train-00000.tok.zst, ... and DIR/val.tok.zst: each\n"
    "document is [BOS] + its tokens + EOS (BOS when the tokenizer adds one: Llama 3's\n"
    "template, or add_bos_token in tokenizer_config.json).\n"
    "\n"
    "Inputs (by name; a .gz or .zst suffix is decompressed first):\n"
    "  *.jsonl, *.json   one JSON object per line, the document is its \"text\" field\n"
    "  anything else     UTF-8 text, one document per block of lines separated by\n"
    "                    blank lines (--doc-per-file: one document per file)\n"
    "\n"
    "Options:\n"
    "  --tokenizer PATH      the base model's tokenizer: an HF model directory\n"
    "                        (tokenizer.json, else tokenizer.model), a tokenizer.json\n"
    "                        (byte-level BPE: GPT-2, Llama 3, Qwen2) or a\n"
    "                        sentencepiece .model\n"
    "  --model PATH          the same as --tokenizer\n"
    "  --out DIR             output directory (created with its parents; must not hold\n"
    "                        shards already)\n"
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
    "  --train-tokenizer     first train a sentencepiece BPE model (byte fallback) on the\n"
    "                        inputs into DIR/tokenizer.model, then tokenize with it\n"
    "  --vocab-size V        vocabulary size for --train-tokenizer\n";

/* The progress line, rewritten in place on the terminal; *(int *)ctx says
 * whether it is on the screen without its newline. */
static void show_progress(const TokStats *st, uint64_t bytes, uint64_t total, int final,
                          void *ctx) {
    *(int *)ctx = !final;
    double dt = st->seconds > 0 ? st->seconds : 1e-9;
    double toks = (double)(st->tokens_train + st->tokens_val) / dt;
    double eta = bytes > 0 && total > bytes ? dt * (double)(total - bytes) / (double)bytes : 0;
    fprintf(stderr, "\r[tokenize] %.1f/%.1f MB  %.2f MB/s  %.3fM tok/s  ETA %d:%02d%s",
            (double)bytes / 1e6, (double)total / 1e6, (double)bytes / dt / 1e6, toks / 1e6,
            (int)eta / 60, (int)eta % 60, final ? "\n" : "   ");
    fflush(stderr);
}

static void print_summary(const TokStats *st, int n_threads) {
    uint64_t tokens = st->tokens_train + st->tokens_val;
    printf("tokenized %llu documents (%llu train, %llu val), %llu tokens (%llu train, %llu val)\n",
           (unsigned long long)(st->docs_train + st->docs_val), (unsigned long long)st->docs_train,
           (unsigned long long)st->docs_val, (unsigned long long)tokens,
           (unsigned long long)st->tokens_train, (unsigned long long)st->tokens_val);
    printf("input %.2f MB (%.2f MB of text), output %.2f MB in %d train shard(s) + val.tok.zst\n",
           (double)st->input_bytes / 1e6, (double)st->text_bytes / 1e6,
           (double)st->output_bytes / 1e6, st->n_train_shards);
    double out_b = st->output_bytes ? (double)st->output_bytes : 1.0;
    printf("compression: %.2fx over raw %u-byte tokens, %.2fx over the text; %.2f bytes of text "
           "per token\n",
           (double)tokens * st->token_bytes / out_b, st->token_bytes,
           (double)st->text_bytes / out_b, tokens ? (double)st->text_bytes / (double)tokens : 0.0);
    printf("%.2f s: %.2f MB/s of text, %.3fM tokens/s with %d thread(s)\n", st->seconds,
           (double)st->text_bytes / 1e6 / st->seconds, (double)tokens / 1e6 / st->seconds,
           n_threads);
}

int cmd_tokenize(int argc, char **argv) {
    CliOpt opts[] = {{"--tokenizer", 1, 0, 0},
                     {"--model", 1, 0, 0},
                     {"--out", 1, 0, 0},
                     {"--name", 1, 0, 0},
                     {"--val-frac", 1, 0, 0},
                     {"--val-docs", 1, 0, 0},
                     {"--threads", 1, 0, 0},
                     {"--frame-tokens", 1, 0, 0},
                     {"--shard-tokens", 1, 0, 0},
                     {"--level", 1, 0, 0},
                     {"--max-line-bytes", 1, 0, 0},
                     {"--vocab-size", 1, 0, 0},
                     {"--train-tokenizer", 0, 0, 0},
                     {"--doc-per-file", 0, 0, 0},
                     {"--no-progress", 0, 0, 0},
                     {NULL, 0, 0, 0}};
    const CliSpec spec = {"tokenize", usage, opts, -1, NULL, NULL};
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    int n_in = 0;
    int rc = cli_parse(&spec, argc, argv, 1, inputs, &n_in);
    if (rc) {
        free(inputs);
        return rc == CLI_HELP ? 0 : rc;
    }
    TokOptions o;
    tok_options_default(&o);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o.n_threads = ncpu > 0 ? (int)(ncpu > 64 ? 64 : ncpu) : 1;
    const CliOpt *tok_opt = cli_opt(&spec, "--tokenizer"), *model_opt = cli_opt(&spec, "--model");
    o.tokenizer_path = tok_opt->value ? tok_opt->value : model_opt->value;
    o.out_dir = cli_opt(&spec, "--out")->value;
    if (cli_opt(&spec, "--name")->value) o.name = cli_opt(&spec, "--name")->value;
    o.doc_per_file = cli_opt(&spec, "--doc-per-file")->seen > 0;
    int train = cli_opt(&spec, "--train-tokenizer")->seen > 0;
    int progress = isatty(2) && !cli_opt(&spec, "--no-progress")->seen;
    const CliOpt *frac = cli_opt(&spec, "--val-frac");
    uint64_t vocab = 0, val_docs = 0, threads = (uint64_t)o.n_threads, frame = o.tokens_per_frame,
             level = (uint64_t)o.zstd_level, line = o.max_line_bytes;
    if (frac->value) {
        char *end;
        o.val_frac = strtod(frac->value, &end);
        if (end == frac->value || *end || !(o.val_frac >= 0 && o.val_frac <= 1))
            rc = cli_usage_error(&spec, "--val-frac %s: expected a number in [0, 1]", frac->value);
    }
    if (rc || cli_u64(&spec, cli_opt(&spec, "--val-docs"), 0, 1ull << 40, &val_docs) ||
        cli_u64(&spec, cli_opt(&spec, "--threads"), 1, 256, &threads) ||
        cli_u64(&spec, cli_opt(&spec, "--frame-tokens"), 1, 1u << 26, &frame) ||
        cli_u64(&spec, cli_opt(&spec, "--shard-tokens"), 1, UINT64_MAX, &o.shard_tokens) ||
        cli_u64(&spec, cli_opt(&spec, "--level"), 1, 22, &level) ||
        cli_u64(&spec, cli_opt(&spec, "--max-line-bytes"), 1, 1ull << 34, &line) ||
        cli_u64(&spec, cli_opt(&spec, "--vocab-size"), 16, 1u << 24, &vocab)) {
        free(inputs);
        return CLI_USAGE;
    }
    if (cli_opt(&spec, "--val-docs")->value) o.val_docs = (int64_t)val_docs;
    o.n_threads = (int)threads;
    o.tokens_per_frame = (uint32_t)frame;
    o.zstd_level = (int)level;
    o.max_line_bytes = (size_t)line;
    const char *why = NULL;
    if (!o.out_dir)
        why = "--out DIR is required";
    else if (n_in == 0)
        why = "no INPUT files given";
    else if (train && vocab == 0)
        why = "--train-tokenizer needs --vocab-size V";
    else if (tok_opt->value && model_opt->value)
        why = "give --tokenizer or --model (the same option), not both";
    else if (!train && !o.tokenizer_path)
        why = "--tokenizer PATH is required (or --train-tokenizer)";
    else if (frac->value && o.val_docs >= 0)
        why = "give --val-frac or --val-docs, not both";
    if (why) {
        free(inputs);
        return cli_usage_error(&spec, "%s (see `dapt tokenize --help`)", why);
    }
    o.inputs = inputs;
    o.n_inputs = n_in;
    int progress_open = 0;
    if (progress) o.on_progress = show_progress, o.progress_ctx = &progress_open;
    char name[256], err[8192], model[4096];
    if (!strcmp(o.name, "corpus")) {
        const char *b = strrchr(o.out_dir, '/');
        b = (b && b[1]) ? b + 1 : o.out_dir;
        snprintf(name, sizeof name, "%s", b);
        o.name = name;
    }
    if (train) {
        fprintf(stderr, "[tokenize] training a %llu-piece BPE model on the inputs\n",
                (unsigned long long)vocab);
        if (tok_train_tokenizer(&o, (uint32_t)vocab, model, sizeof model, err, sizeof err)) {
            free(inputs);
            return cli_fail(&spec, "%s", err);
        }
        fprintf(stderr, "[tokenize] wrote %s\n", model);
        if (!o.tokenizer_path) o.tokenizer_path = model;
    }
    TokStats st;
    rc = tok_run(&o, &st, err, sizeof err);
    free(inputs);
    if (rc && progress_open) fputc('\n', stderr); /* the error on a line of its own */
    if (rc) return cli_fail(&spec, "%s", err);
    print_summary(&st, o.n_threads);
    return 0;
}
