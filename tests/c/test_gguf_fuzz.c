/* test_gguf_fuzz.c: a deterministic mutation fuzzer for the GGUF reader,
 * the GGUF byte-level BPE vocabulary reader (gguf_tokenizer_json) and the
 * sentencepiece protobuf reader (the libFuzzer harness in
 * tests/fuzz/fuzz_gguf.c explores further; its corpus seeds this test).
 *
 * Seeds: the writer's sample file, an exported tiny llama model, a GGUF
 * with a tiny gpt2 vocabulary, a synthetic tokenizer.model, and every file
 * in tests/gguf/corpus/. Each
 * iteration applies 1-4 mutations (bit flips, interesting bytes and 64-bit
 * values at random or at length/count-like positions, truncation, chunk
 * duplication/deletion) to an exactly-sized heap copy and parses it. Under
 * ASan (the sanitizer build runs every "c" test) a read outside the copy
 * fails the run; without it, the test still checks the properties:
 *   - every refusal carries a message with "byte offset";
 *   - gguf_tokenizer_json on an accepted file gives both JSON texts, which
 *     parse, or neither with a message naming a tokenizer.ggml key;
 *   - an accepted file is consistent: every tensor's data lies inside the
 *     buffer (and F32/F16/BF16/Q8_0 tensors convert), every string is
 *     NUL-terminated where its length says;
 *   - both outcomes occur (the mutations are neither all fatal nor all
 *     harmless), so the loop really explores the parser.
 *
 *   test_gguf_fuzz                  run the loop (fixed seed; ~0.5 s, ~5 s under ASan)
 *   test_gguf_fuzz --write-corpus D write the seed files into D
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf_testutil.h"
#include "tools/gguf/gguf.h"

#define MAX_SEEDS 96

typedef struct {
    uint8_t *b;
    size_t n;
} Blob;

static Blob seeds[MAX_SEEDS];
static int n_seeds;

static void add_seed(uint8_t *b, size_t n) {
    if (b && n_seeds < MAX_SEEDS) seeds[n_seeds++] = (Blob){b, n};
    else free(b);
}

static uint64_t interesting(Rng *r, size_t len) {
    static const uint64_t v[] = {0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 30, 31, 32, 33, 63, 64, 255, 256,
                                 0x7fffffffu, 0x80000000u, 0xffffffffu, 0x100000000ull,
                                 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};
    size_t k = (size_t)(rng_u64(r) % (sizeof v / sizeof v[0] + 2));
    if (k == sizeof v / sizeof v[0]) return len;
    if (k == sizeof v / sizeof v[0] + 1) return len - (rng_u64(r) % 16);
    return v[k];
}

/* One mutation of *buf (length *n, capacity cap). */
static void mutate(Rng *r, uint8_t *buf, size_t *n, size_t cap) {
    if (*n == 0) return;
    size_t pos = (size_t)(rng_u64(r) % *n);
    /* header fields sit at 8-byte-ish positions: favour aligned spots */
    if (rng_u64(r) % 3 == 0) pos &= ~(size_t)3;
    switch (rng_u64(r) % 7) {
    case 0: buf[pos] ^= (uint8_t)(1u << (rng_u64(r) % 8)); break;
    case 1: buf[pos] = (uint8_t)interesting(r, *n); break;
    case 2: {
        uint64_t v = interesting(r, *n);
        size_t w = rng_u64(r) % 2 ? 8 : 4;
        if (pos + w <= *n) memcpy(buf + pos, &v, w);
        break;
    }
    case 3: *n = pos; break; /* truncate */
    case 4: {                /* delete a chunk */
        size_t len = 1 + (size_t)(rng_u64(r) % 16);
        if (pos + len <= *n) {
            memmove(buf + pos, buf + pos + len, *n - pos - len);
            *n -= len;
        }
        break;
    }
    case 5: { /* duplicate a chunk */
        size_t len = 1 + (size_t)(rng_u64(r) % 16);
        if (pos + len <= *n && *n + len <= cap) {
            memmove(buf + pos + len, buf + pos, *n - pos);
            *n += len;
        }
        break;
    }
    case 6: buf[pos] = (uint8_t)rng_u64(r); break;
    }
}

static int accepted_gguf, refused_gguf, accepted_spm, refused_spm, vocab_json, vocab_refused;

static void check_vocab(const GgufFile *f) {
    char *json = NULL, *config = NULL, err[512] = "";
    if (gguf_tokenizer_json(f, &json, &config, err, sizeof err)) {
        vocab_refused++;
        CHECK(!json && !config && strstr(err, "tokenizer.ggml."), "vocab refusal: %s", err);
        return;
    }
    if (!json) return;
    vocab_json++;
    cJSON *a = cJSON_Parse(json), *b = cJSON_Parse(config);
    CHECK(a && b, "the vocabulary's JSON does not parse");
    cJSON_Delete(a), cJSON_Delete(b);
    free(json), free(config);
}

static void check_gguf(const uint8_t *data, size_t n) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    char err[512] = "";
    GgufFile *f = gguf_parse(copy, n, "fuzz.gguf", err, sizeof err);
    if (!f) {
        refused_gguf++;
        if (!strstr(err, "byte offset")) CHECK(0, "refusal without offset: %s", err);
        free(copy);
        return;
    }
    accepted_gguf++;
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const GgufKV *kv = gguf_kv(f, i);
        if (kv->type == GGUF_STRING && strlen(kv->str) > kv->str_len) CHECK(0, "string length");
        if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING)
            for (uint64_t j = 0; j < kv->arr_n; j++)
                if (strlen(kv->arr_str[j]) > kv->arr_str_len[j]) CHECK(0, "array string length");
    }
    check_vocab(f);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const GgufTensor *t = gguf_tensor(f, i);
        const uint8_t *d = t->data;
        if (d < copy || (uint64_t)(d - copy) > n || t->n_bytes > n - (uint64_t)(d - copy)) {
            CHECK(0, "tensor %s data outside the buffer", t->name);
            continue;
        }
        if (t->type == GGML_F32 || t->type == GGML_F16 || t->type == GGML_BF16 || t->type == GGML_Q8_0) {
            float *y = malloc(t->n_elems * sizeof *y + 1);
            CHECK(gguf_convert_to_f32(t->type, t->data, y, t->n_elems) == 0, "convert %s", t->name);
            free(y);
        }
    }
    gguf_close(f);
    free(copy);
}

static void check_spm(const uint8_t *data, size_t n) {
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    char err[512] = "";
    SpmVocab v;
    if (spm_vocab_parse(copy, n, "fuzz.model", &v, err, sizeof err)) {
        refused_spm++;
        CHECK(err[0] != 0, "spm refusal without a message");
    } else {
        accepted_spm++;
        for (int i = 0; i < v.n; i++) (void)strlen(v.pieces[i]);
        CHECK(v.bos_id < v.n && v.eos_id < v.n && v.unk_id < v.n, "special ids in range");
        spm_vocab_free(&v);
    }
    free(copy);
}

static void fuzz(Blob *set, int n_set, int iters, uint64_t seed, void (*check)(const uint8_t *, size_t)) {
    Rng r;
    rng_seed(&r, seed);
    size_t cap = 0;
    for (int i = 0; i < n_set; i++) cap = set[i].n > cap ? set[i].n : cap;
    cap += 256;
    uint8_t *buf = malloc(cap);
    for (int i = 0; i < n_set; i++) check(set[i].b, set[i].n);
    for (int it = 0; it < iters; it++) {
        const Blob *s = &set[rng_u64(&r) % (uint64_t)n_set];
        memcpy(buf, s->b, s->n);
        size_t n = s->n;
        int k = 1 + (int)(rng_u64(&r) % 4);
        for (int j = 0; j < k; j++) mutate(&r, buf, &n, cap);
        check(buf, n);
    }
    free(buf);
}

/* A GGUF holding only the test gpt2 vocabulary (gguf_testutil.h). */
static uint8_t *bpe_vocab(const char *dir, size_t *n) {
    char err[512], path[256];
    snprintf(path, sizeof path, "%s/gpt2_vocab.gguf", dir);
    GgufWriter *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");
    gguf_test_bpe_vocab(w);
    int rc = gguf_writer_write(w, path, err, sizeof err);
    CHECK(rc == 0, "gpt2 vocab: %s", err);
    gguf_writer_free(w);
    return rc ? NULL : read_bytes(path, n);
}

static uint8_t *exported_model(const char *dir, size_t *n) {
    char err[512], tok[256], path[256];
    size_t tn;
    uint8_t *tb = spm_test_model(20, &tn);
    snprintf(tok, sizeof tok, "%s/tokenizer.model", dir);
    snprintf(path, sizeof path, "%s/tiny.gguf", dir);
    write_bytes(tok, tb, tn);
    free(tb);
    ModelConfig c = model_config_default(ARCH_LLAMA);
    c.n_layer = 1, c.n_head = 2, c.n_kv_head = 1, c.d_model = 8, c.d_ff = 8, c.vocab_size = 20;
    c.max_seq_len = 8, c.tie_embeddings = 1;
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) return NULL;
    test_model_randomize(m, 3);
    GgufExportOptions o = {.dtype = GGML_F16, .tokenizer = tok, .force = 1};
    int rc = gguf_export_model(m, path, &o, err, sizeof err);
    CHECK(rc == 0, "export: %s", err);
    model_free(m);
    return rc ? NULL : read_bytes(path, n);
}

int main(int argc, char **argv) {
    char dir[] = "/tmp/dapt_gguf_fz_XXXXXX", path[256];
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    char err[512];
    size_t n;
    snprintf(path, sizeof path, "%s/sample.gguf", dir);
    GgufWriter *w = gguf_test_sample();
    CHECK(gguf_writer_write(w, path, err, sizeof err) == 0, "sample: %s", err);
    gguf_writer_free(w);
    uint8_t *sample = read_bytes(path, &n);
    add_seed(sample, n);
    size_t sample_n = n;
    uint8_t *tiny = exported_model(dir, &n);
    add_seed(tiny, n);
    size_t tiny_n = n;
    uint8_t *vocab = bpe_vocab(dir, &n);
    add_seed(vocab, n);
    size_t vocab_n = n;
    if (argc == 3 && !strcmp(argv[1], "--write-corpus")) {
        char p[4200];
        snprintf(p, sizeof p, "%s/sample.gguf", argv[2]);
        int bad = write_bytes(p, sample, sample_n);
        snprintf(p, sizeof p, "%s/tiny_llama_f16.gguf", argv[2]);
        bad |= write_bytes(p, tiny, tiny_n);
        snprintf(p, sizeof p, "%s/gpt2_vocab.gguf", argv[2]);
        bad |= write_bytes(p, vocab, vocab_n);
        snprintf(p, sizeof p, "%s/truncated.gguf", argv[2]);
        bad |= write_bytes(p, sample, sample_n - 100);
        for (int i = 0; i < n_seeds; i++) free(seeds[i].b);
        snprintf(p, sizeof p, "rm -rf %s", dir);
        return bad | (system(p) != 0);
    }
    DIR *d = opendir("gguf/corpus");
    int from_corpus = 0;
    CHECK(d != NULL, "tests/gguf/corpus not found (run from tests/)");
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[600];
        snprintf(p, sizeof p, "gguf/corpus/%s", e->d_name);
        uint8_t *b = read_bytes(p, &n);
        if (b && n <= 65536) {
            add_seed(b, n);
            from_corpus++;
        } else {
            free(b);
        }
    }
    if (d) closedir(d);
    CHECK(from_corpus >= 3, "only %d corpus files", from_corpus);
    /* 170,000 parses in all; the gpt2 vocabulary also on its own, as it is
     * one seed of many */
    fuzz(seeds, n_seeds, 100000, 12345, check_gguf);
    Blob vocab_seed = {vocab, vocab_n};
    if (vocab) fuzz(&vocab_seed, 1, 20000, 4242, check_gguf);
    Blob spm[2];
    spm[0].b = spm_test_model(40, &spm[0].n);
    spm[1].b = spm_test_model(12, &spm[1].n);
    fuzz(spm, 2, 50000, 777, check_spm);
    printf("gguf: %d accepted, %d refused (gpt2 vocabulary: %d converted, %d refused); spm: %d "
           "accepted, %d refused\n",
           accepted_gguf, refused_gguf, vocab_json, vocab_refused, accepted_spm, refused_spm);
    CHECK(accepted_gguf > 100 && refused_gguf > 1000, "the GGUF mutations explore both outcomes");
    CHECK(vocab_json > 100 && vocab_refused > 100,
          "the vocabulary mutations explore both outcomes");
    CHECK(accepted_spm > 100 && refused_spm > 1000, "the spm mutations explore both outcomes");
    free(spm[0].b);
    free(spm[1].b);
    for (int i = 0; i < n_seeds; i++) free(seeds[i].b);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return CHECK_DONE();
}
