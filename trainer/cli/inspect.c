/* inspect.c: `dapt inspect FILE`. Dispatches on the file name: a .tok.zst
 * shard is described and verified (shard_scan decodes every frame and checks
 * checksums and token ranges), optionally with its first tokens decoded; a
 * .gguf file is described by gguf_describe; a checkpoint directory is
 * verified (ckpt_verify: every file present and whole, and matching the
 * checksum trainer_state.json records). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/shard.h"
#include "kernels/util.h"
#include "tokenizer/tokenizer.h"
#include "tools/gguf/gguf.h"
#include "trainer/ckpt.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"

static const char usage[] =
    "usage: dapt inspect FILE.tok.zst [--decode N --tokenizer PATH]\n"
    "       dapt inspect FILE.gguf | CHECKPOINT_DIR\n"
    "\n"
    "A checkpoint directory (RUN/ckpt/step-NNNNNNNN) is verified: every file\n"
    "present and whole, and each matching the checksum in trainer_state.json;\n"
    "exits 1 naming the first file that is damaged.\n"
    "\n"
    "A shard: prints its header and statistics and verifies every frame (zstd\n"
    "checksum, sizes, token ids below the vocab size); exits 1 on any error.\n"
    "  --decode N      also print the first N tokens as text\n"
    "  --tokenizer PATH  the tokenizer to decode with: an HF model directory, a\n"
    "                  tokenizer.json or a sentencepiece .model (special tokens\n"
    "                  such as BOS and EOS are shown where it spells them);\n"
    "                  --model is an alias\n";

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* Prints the first n tokens of the shard (header h) as text. */
static int print_decoded(const CliSpec *spec, const ShardHeader *h, const char *model,
                         const uint32_t *first, size_t n) {
    char err[SHARD_ERR_MAX];
    Tokenizer *t;
    if (tokenizer_load(&t, model, err, sizeof err)) return cli_fail(spec, "%s", err);
    uint64_t th = tokenizer_hash(t);
    if (th != h->tokenizer_hash)
        fprintf(stderr,
                "dapt inspect: warning: %s has hash %016llx, the shard was made with %016llx\n",
                model, (unsigned long long)th, (unsigned long long)h->tokenizer_hash);
    char *text;
    int rc = 0;
    if (tokenizer_decode(t, first, n, 0, &text, NULL, err, sizeof err)) {
        rc = cli_fail(spec, "%s", err);
    } else {
        printf("first %zu tokens:\n%s\n", n, text);
        free(text);
    }
    tokenizer_free(t);
    return rc;
}

static int inspect_shard(const CliSpec *spec, const char *path, size_t decode_n,
                         const char *model) {
    char err[SHARD_ERR_MAX];
    Shard *s;
    if (shard_open(&s, path, err, sizeof err)) return cli_fail(spec, "%s", err);
    const ShardHeader *h = shard_header(s);
    uint64_t nf = shard_n_frames(s), fb = shard_file_bytes(s);
    printf("file            %s\n", path);
    printf("format version  %u\n", h->version);
    char name[4 * SHARD_NAME_MAX + 1];
    printf("corpus name     %s\n", str_escape(h->name, name, sizeof name));
    printf("vocab size      %u (token width %u bytes)\n", h->vocab_size, h->token_bytes);
    printf("eos id          %u\n", h->eos_id);
    printf("tokenizer hash  %016llx\n", (unsigned long long)h->tokenizer_hash);
    printf("tokens          %llu\n", (unsigned long long)h->n_tokens);
    printf("documents       %llu\n", (unsigned long long)h->n_docs);
    printf("frames          %llu of up to %u tokens\n", (unsigned long long)nf,
           h->tokens_per_frame);
    printf("file bytes      %llu (%.3f bytes/token, %.2fx over raw tokens)\n",
           (unsigned long long)fb, h->n_tokens ? (double)fb / (double)h->n_tokens : 0.0,
           fb ? (double)(h->n_tokens * h->token_bytes) / (double)fb : 0.0);
    uint32_t *first = decode_n > 0 ? malloc(decode_n * sizeof *first) : NULL;
    ShardScan sc;
    int rc = shard_scan(s, &sc, first, decode_n, err, sizeof err) ? cli_fail(spec, "%s", err) : 0;
    if (rc == 0) {
        printf("eos tokens      %llu%s\n", (unsigned long long)sc.n_eos,
               sc.n_eos == h->n_docs ? " (= documents)" : " (differs from documents)");
        if (sc.n_tokens)
            printf("token ids       %llu .. %llu\n", (unsigned long long)sc.min_id,
                   (unsigned long long)sc.max_id);
        printf("verified        %llu frames, %llu tokens: ok\n", (unsigned long long)nf,
               (unsigned long long)sc.n_tokens);
    }
    if (rc == 0 && first)
        rc = print_decoded(spec, h, model, first,
                           sc.n_tokens < decode_n ? (size_t)sc.n_tokens : decode_n);
    free(first);
    shard_close(s);
    return rc;
}

int cmd_inspect(int argc, char **argv) {
    CliOpt opts[] = {
        {"--decode", 1, 0, 0}, {"--tokenizer", 1, 0, 0}, {"--model", 1, 0, 0}, {NULL, 0, 0, 0}};
    const CliSpec spec = {"inspect", usage, opts, 1, NULL, NULL};
    const char *pos[1];
    int n_pos, rc = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    uint64_t decode_n = 0;
    if (cli_u64(&spec, cli_opt(&spec, "--decode"), 1, 1ull << 40, &decode_n)) return CLI_USAGE;
    const char *model = cli_opt(&spec, "--tokenizer")->value;
    if (!model) model = cli_opt(&spec, "--model")->value;
    if (n_pos == 0) return cli_usage(&spec);
    const char *file = pos[0];
    if (decode_n && !model) return cli_usage_error(&spec, "--decode needs --tokenizer PATH");
    struct stat sb;
    if (!stat(file, &sb) && S_ISDIR(sb.st_mode)) {
        char err[4600];
        int n;
        if (ckpt_verify(file, &n, err, sizeof err)) return cli_fail(&spec, "%s", err);
        if (n)
            printf("checkpoint %s: complete; %d files match their checksums: ok\n", file, n);
        else
            printf("checkpoint %s: complete (the structure checked); no checksums: written "
                   "before dapt recorded them, its data is not verified\n",
                   file);
        return 0;
    }
    if (ends_with(file, ".tok.zst")) return inspect_shard(&spec, file, (size_t)decode_n, model);
    if (gguf_is_gguf_file(file) || ends_with(file, ".gguf")) {
        char err[1024];
        return gguf_describe(file, stdout, err, sizeof err) ? cli_fail(&spec, "%s", err) : 0;
    }
    if (ends_with(file, ".safetensors"))
        return cli_fail(&spec,
                        "%s: dapt inspect reads .tok.zst shards and .gguf files, not "
                        "safetensors",
                        file);
    return cli_fail(&spec, "%s: unknown file type: expected a name ending in .tok.zst or .gguf",
                    file);
}
