/* data/cmd_inspect.c: `dapt inspect FILE`. Dispatches on the file name:
 * .tok.zst shards are described and verified here (every frame decoded,
 * checksum and token range checked); other kinds (.gguf, checkpoints) are
 * added by their owners as further branches of cmd_inspect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "tools/gguf/gguf.h"
#include "tokenizer/spm.h"
#include "trainer/cli.h"
#include "data/hash.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dapt inspect FILE.tok.zst [--decode N --model tokenizer.model]\n"
            "\n"
            "Prints the shard's header and statistics and verifies every frame (zstd\n"
            "checksum, sizes, token ids below the vocab size); exits 1 on any error.\n"
            "  --decode N      also print the first N tokens as text\n"
            "  --model PATH    the sentencepiece model to decode with\n");
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static int inspect_shard(const char *path, long decode_n, const char *model) {
    char err[SHARD_ERR_MAX];
    Shard *s;
    if (shard_open(&s, path, err, sizeof err)) {
        fprintf(stderr, "dapt inspect: %s\n", err);
        return 1;
    }
    const ShardHeader *h = shard_header(s);
    uint64_t nf = shard_n_frames(s);
    printf("file            %s\n", path);
    printf("format version  %u\n", h->version);
    printf("corpus name     %s\n", h->name);
    printf("vocab size      %u (token width %u bytes)\n", h->vocab_size, h->token_bytes);
    printf("eos id          %u\n", h->eos_id);
    printf("tokenizer hash  %016llx\n", (unsigned long long)h->tokenizer_hash);
    printf("tokens          %llu\n", (unsigned long long)h->n_tokens);
    printf("documents       %llu\n", (unsigned long long)h->n_docs);
    printf("frames          %llu of up to %u tokens\n", (unsigned long long)nf, h->tokens_per_frame);
    printf("file bytes      %llu (%.3f bytes/token, %.2fx over raw tokens)\n",
           (unsigned long long)shard_file_bytes(s),
           h->n_tokens ? (double)shard_file_bytes(s) / (double)h->n_tokens : 0.0,
           shard_file_bytes(s) ? (double)(h->n_tokens * h->token_bytes) / (double)shard_file_bytes(s) : 0.0);
    uint32_t *buf = malloc((size_t)h->tokens_per_frame * sizeof *buf);
    uint32_t *first = decode_n > 0 ? malloc((size_t)decode_n * sizeof *first) : NULL;
    uint64_t n_eos = 0, n_seen = 0, min_id = UINT32_MAX, max_id = 0;
    int rc = 0;
    for (uint64_t f = 0; f < nf; f++) {
        if (shard_read_frame(s, f, buf, err, sizeof err)) {
            fprintf(stderr, "dapt inspect: %s\n", err);
            rc = 1;
            break;
        }
        uint64_t m = shard_frame_tokens(s, f);
        for (uint64_t i = 0; i < m; i++) {
            uint32_t t = buf[i];
            n_eos += t == h->eos_id;
            if (t < min_id) min_id = t;
            if (t > max_id) max_id = t;
            if (first && n_seen < (uint64_t)decode_n) first[n_seen] = t;
            n_seen++;
        }
    }
    if (rc == 0) {
        printf("eos tokens      %llu%s\n", (unsigned long long)n_eos,
               n_eos == h->n_docs ? " (= documents)" : " (differs from documents)");
        if (n_seen) printf("token ids       %llu .. %llu\n", (unsigned long long)min_id, (unsigned long long)max_id);
        printf("verified        %llu frames, %llu tokens: ok\n", (unsigned long long)nf, (unsigned long long)n_seen);
    }
    if (rc == 0 && first) {
        SpmModel *m;
        uint64_t mh = 0;
        if (spm_load(&m, model, err, sizeof err)) {
            fprintf(stderr, "dapt inspect: %s\n", err);
            rc = 1;
        } else {
            if (hash_file(model, &mh) == 0 && mh != h->tokenizer_hash)
                fprintf(stderr, "dapt inspect: warning: %s has hash %016llx, the shard was made with %016llx\n",
                        model, (unsigned long long)mh, (unsigned long long)h->tokenizer_hash);
            size_t n = n_seen < (uint64_t)decode_n ? (size_t)n_seen : (size_t)decode_n;
            char *text;
            if (spm_decode(m, first, n, &text, err, sizeof err)) {
                fprintf(stderr, "dapt inspect: %s\n", err);
                rc = 1;
            } else {
                printf("first %zu tokens:\n%s\n", n, text);
                free(text);
            }
            spm_free(m);
        }
    }
    free(first);
    free(buf);
    shard_close(s);
    return rc;
}

int cmd_inspect(int argc, char **argv) {
    const char *file = NULL, *model = NULL;
    long decode_n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--decode") && i + 1 < argc) {
            char *end;
            decode_n = strtol(argv[++i], &end, 10);
            if (*end || decode_n < 1) {
                fprintf(stderr, "dapt inspect: --decode %s: expected a positive integer\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (a[0] == '-' || file) {
            fprintf(stderr, "dapt inspect: unexpected argument %s (see --help)\n", a);
            return 2;
        } else {
            file = a;
        }
    }
    if (!file) {
        usage(stderr);
        return 2;
    }
    if (decode_n && !model) {
        fprintf(stderr, "dapt inspect: --decode needs --model tokenizer.model\n");
        return 2;
    }
    if (ends_with(file, ".tok.zst")) return inspect_shard(file, decode_n, model);
    if (gguf_is_gguf_file(file) || ends_with(file, ".gguf"))
        return gguf_inspect_main(file, stdout, stderr);
    if (ends_with(file, ".safetensors"))
        fprintf(stderr, "dapt inspect: %s: this build cannot inspect safetensors files yet "
                        "(.tok.zst shards and .gguf files)\n", file);
    else
        fprintf(stderr, "dapt inspect: %s: unknown file type: expected a name ending in .tok.zst "
                        "or .gguf\n", file);
    return 1;
}
