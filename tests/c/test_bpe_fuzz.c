/* test_bpe_fuzz.c: a deterministic mutation fuzzer for the tokenizer.json
 * reader and the BPE encoder (tests/fuzz/fuzz_bpe_json.c, a libFuzzer harness,
 * explores further from the same seeds).
 *
 * Seeds: the .json files of tests/tok/corpus, small tokenizers of each
 * family trained by HF tokenizers (test_bpe_hf.py corpus DIR writes them).
 * Each iteration applies 1-3 JSON-aware mutations to a seed's tree (an item
 * gets an interesting number, another string or a changed byte of its own,
 * a value of another type, or is deleted, duplicated or moved), prints it,
 * in one case of four adds a blind one (a bit flip, a structural character,
 * truncation, chunk deletion or duplication), and parses an exactly-sized
 * heap copy. Under ASan (the
 * sanitizer build runs every "c" test) a read outside the copy fails the
 * run; without it the test still checks:
 *   - every refusal names the file: "fuzz.json: ...";
 *   - an accepted file encodes sample texts (scripts, added-token
 *     lookalikes, long runs) into ids below its vocabulary size that decode
 *     without error to valid UTF-8 (or refuses a byte it has no token for);
 *   - both outcomes occur, so the loop explores the reader. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/c/check.h"
#include "tokenizer/bpe.h"
#include "tokenizer/corpus.h"
#include "trainer/rng.h"

#define MAX_SEEDS 16
#define ITERS     2500

typedef struct {
    char *b;
    size_t n;
} Blob;

static Blob seeds[MAX_SEEDS];
static int n_seeds, accepted, refused, encoded;

static const char *const texts[] = {
    "Hello world, it's 2024! I'M here.",
    "  spaces\t\ttabs\n\nnewlines  ",
    "café cafe\u0301 Å",
    "日本語のテキスト 中文 한국어",
    "مرحبا नमस्ते สวัสดี",
    "👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "<|endoftext|><|begin_of_text|> <|im_start|>x<|im_end|>",
    "<|end",
    "[MASK] x",
    "1234567890 ١٢٣",
    "==================================================",
    "",
};

/* A blind mutation of buf (length *n, capacity cap). */
static void mutate_bytes(Rng *r, char *buf, size_t *n, size_t cap) {
    if (*n == 0) return;
    size_t pos = (size_t)rng_below(r, *n), len = 1 + (size_t)rng_below(r, 24);
    switch (rng_below(r, 5)) {
    case 0:
        buf[pos] ^= (char)(1u << rng_below(r, 8));
        break;
    case 1:
        buf[pos] = "{}[]\",:0 \\"[rng_below(r, 10)];
        break;
    case 2:
        *n = pos;
        break; /* truncate */
    case 3:    /* delete a chunk */
        if (pos + len <= *n) {
            memmove(buf + pos, buf + pos + len, *n - pos - len);
            *n -= len;
        }
        break;
    case 4: /* duplicate a chunk */
        if (pos + len <= *n && *n + len <= cap) {
            memmove(buf + pos + len, buf + pos, *n - pos);
            *n += len;
        }
        break;
    }
}

/* Every item of the tree below root, with its parent. */
typedef struct {
    cJSON *item, *parent;
} Node;
static size_t collect(cJSON *parent, Node *out, size_t n, size_t cap, int skip_big) {
    for (cJSON *c = parent->child; c && n < cap; c = c->next) {
        out[n++] = (Node){c, parent};
        if (!(skip_big && c->string &&
              (!strcmp(c->string, "vocab") || !strcmp(c->string, "merges"))))
            n = collect(c, out, n, cap, skip_big);
    }
    return n;
}

/* A JSON-aware mutation: one item of the tree gets an interesting number,
 * another string, a value of another type, is deleted, duplicated or moved
 * to the end of its parent. */
static void mutate_tree(Rng *r, cJSON *root, Node *nodes, size_t cap) {
    static const double numbers[] = {
        -1, 0, 1, 2, 255, 256, 1.5, 1e9, 16777215, 16777216, 4294967296.0, -0.0, 1e300};
    /* half the time, an item outside the vocabulary and the merges */
    size_t n = collect(root, nodes, 0, cap, (int)rng_below(r, 2));
    if (n == 0) return;
    Node x = nodes[rng_below(r, n)];
    cJSON *v = NULL;
    switch (rng_below(r, 6)) {
    case 0:
        v = cJSON_CreateNumber(numbers[rng_below(r, sizeof numbers / sizeof *numbers)]);
        break;
    case 1:
        if (cJSON_IsString(x.item) && x.item->valuestring[0] && rng_below(r, 2)) {
            /* a byte of the string changed (maybe into invalid UTF-8) */
            char *s = strdup(x.item->valuestring);
            s[rng_below(r, strlen(s))] = (char)(1 + rng_below(r, 255));
            v = cJSON_CreateString(s);
            free(s);
        } else { /* another item's string */
            Node y = nodes[rng_below(r, n)];
            v = cJSON_CreateString(y.item->string           ? y.item->string
                                   : cJSON_IsString(y.item) ? y.item->valuestring
                                                            : "");
        }
        break;
    case 2: {
        int k = (int)rng_below(r, 5);
        v = k == 0   ? cJSON_CreateNull()
            : k == 1 ? cJSON_CreateBool(rng_below(r, 2))
            : k == 2 ? cJSON_CreateArray()
            : k == 3 ? cJSON_CreateObject()
                     : cJSON_CreateString("x");
        break;
    }
    case 3:
        cJSON_Delete(cJSON_DetachItemViaPointer(x.parent, x.item));
        return;
    case 4: /* duplicated: in an object, the same key twice */
        v = cJSON_Duplicate(x.item, 1);
        if (x.item->string)
            cJSON_AddItemToObject(x.parent, x.item->string, v);
        else
            cJSON_AddItemToArray(x.parent, v);
        return;
    case 5: {
        cJSON *d = cJSON_DetachItemViaPointer(x.parent, x.item);
        if (d->string)
            cJSON_AddItemToObject(x.parent, d->string, d);
        else
            cJSON_AddItemToArray(x.parent, d);
        return;
    }
    }
    if (x.item->string) v->string = strdup(x.item->string); /* the same key */
    cJSON_ReplaceItemViaPointer(x.parent, x.item, v);
}

static void check_one(const char *data, size_t n) {
    char *copy = malloc(n ? n : 1), err[1024] = "";
    memcpy(copy, data, n);
    BpeModel *m = NULL;
    if (bpe_parse(&m, copy, n, "fuzz.json", err, sizeof err)) {
        refused++;
        if (strncmp(err, "fuzz.json: ", 11)) CHECK(0, "refusal without the file name: %s", err);
        free(copy);
        return;
    }
    accepted++;
    uint32_t vocab = bpe_vocab_size(m), *ids = NULL;
    size_t n_ids = 0, cap = 0;
    for (size_t t = 0; t < sizeof texts / sizeof *texts; t++) {
        if (bpe_encode(m, texts[t], strlen(texts[t]), &ids, &n_ids, &cap, err, sizeof err)) {
            if (!strstr(err, "has no token in model.vocab")) CHECK(0, "encode failed: %s", err);
            continue;
        }
        encoded++;
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] >= vocab) CHECK(0, "id %u >= vocab %u", ids[i], vocab);
        char *text;
        size_t len;
        if (bpe_decode(m, ids, n_ids, 0, &text, &len, err, sizeof err)) {
            CHECK(0, "decode of encoded ids failed: %s", err);
            continue;
        }
        if (corpus_utf8_valid((const unsigned char *)text, len) != len)
            CHECK(0, "decoded invalid UTF-8");
        free(text);
    }
    free(ids);
    bpe_free(m);
    free(copy);
}

static void load_seeds(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char *names[MAX_SEEDS];
    int k = 0;
    while (d && (e = readdir(d)) && k < MAX_SEEDS)
        if (strstr(e->d_name, ".json")) names[k++] = strdup(e->d_name);
    if (d) closedir(d);
    for (int i = 0; i < k; i++) /* a fixed order */
        for (int j = i + 1; j < k; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (int i = 0; i < k; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *b = malloc((size_t)n + 1);
        if (fread(b, 1, (size_t)n, f) == (size_t)n)
            seeds[n_seeds++] = (Blob){b, (size_t)n};
        else
            free(b);
        fclose(f);
    }
}

int main(int argc, char **argv) {
    load_seeds(argc > 1 ? argv[1] : "tok/corpus");
    CHECK(n_seeds >= 3, "%d seeds in tests/tok/corpus", n_seeds);
    if (!n_seeds) return CHECK_DONE();
    for (int i = 0; i < n_seeds; i++)
        check_one(seeds[i].b, seeds[i].n);
    CHECK(accepted == n_seeds, "a seed was refused");
    Rng r;
    rng_seed(&r, 20261207);
    cJSON *trees[MAX_SEEDS];
    size_t cap = 0, node_cap = 1 << 16;
    Node *nodes = malloc(node_cap * sizeof *nodes);
    for (int i = 0; i < n_seeds; i++) {
        trees[i] = cJSON_ParseWithLength(seeds[i].b, seeds[i].n);
        cap = seeds[i].n > cap ? seeds[i].n : cap;
    }
    cap = 2 * cap + 4096;
    char *buf = malloc(cap);
    for (int it = 0; it < ITERS; it++) {
        int k = (int)rng_below(&r, (uint64_t)n_seeds);
        cJSON *t = cJSON_Duplicate(trees[k], 1);
        for (int j = 1 + (int)rng_below(&r, 3); j > 0; j--)
            mutate_tree(&r, t, nodes, node_cap);
        char *s = cJSON_PrintUnformatted(t);
        size_t n = strlen(s);
        cJSON_Delete(t);
        if (n > cap) n = cap;
        memcpy(buf, s, n);
        free(s);
        if (rng_below(&r, 4) == 0) mutate_bytes(&r, buf, &n, cap);
        check_one(buf, n);
    }
    for (int i = 0; i < n_seeds; i++)
        cJSON_Delete(trees[i]);
    free(nodes);
    free(buf);
    fprintf(stderr, "%d mutants: %d accepted (%d texts encoded), %d refused\n", ITERS,
            accepted - n_seeds, encoded, refused);
    CHECK(accepted > n_seeds + ITERS / 20 && refused > ITERS / 20,
          "the mutations are all fatal or all harmless");
    for (int i = 0; i < n_seeds; i++)
        free(seeds[i].b);
    return CHECK_DONE();
}
