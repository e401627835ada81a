/* test_gguf_vocab.c: a GGUF byte-level BPE vocabulary (tokenizer.ggml.model
 * "gpt2") to tokenizer.json and tokenizer_config.json (gguf_tokenizer_json):
 * the JSON's structure for the test vocabulary of gguf_testutil.h (tokens
 * in the model's vocab with their ids, control and user-defined ones as
 * added tokens too, unused ones left out, merges in order, the family's
 * normalizer
 * and pre-tokenizer and llama.cpp's ignore_merges for every family dapt
 * knows, BOS in a TemplateProcessing when add_bos_token); no JSON for a file
 * without a gpt2 vocabulary; and a refusal naming the key (and its byte
 * offset) for each hostile variant: wrong types, missing keys, counts,
 * token types, duplicate, empty and non-UTF-8 tokens, merges that are not
 * two vocabulary tokens, ids out of range, an unknown pre-tokenizer.
 * (HF tokenizers loading the JSON and encoding like the original is
 * tests/gguf/test_gguf_py.py's job.) */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf_testutil.h"
#include "tokenizer/bpe.h"
#include "tools/gguf/gguf.h"

static char dir[64];

/* The test vocabulary with one change. */
typedef struct {
    const char *key; /* the key changed: NULL none */
    int drop;        /* leave key out */
    int wrong_type;  /* write key with another type */
    const char *pre; /* tokenizer.ggml.pre, NULL: "gpt-2" */
    int token_at;    /* tokens[token_at] = token (with token) */
    const char *token;
    int type_at, type; /* types[type_at] = type (type != 0) */
    int n_types;       /* 0: all */
    const char *merge; /* merges[1] = merge */
    int bos, eos;      /* -1: absent (eos: 0 means the base's 9) */
    int add_bos;       /* -1: absent */
} Case;

static void put_key(GgufWriter *w, const Case *c, const char *key, int is_str,
                    void (*put)(GgufWriter *, const Case *)) {
    if (c->key && !strcmp(c->key, key)) {
        if (c->drop) return;
        if (c->wrong_type) {
            if (is_str)
                gguf_w_u32(w, key, 7);
            else
                gguf_w_str(w, key, "x");
            return;
        }
    }
    put(w, c);
}

static void put_model(GgufWriter *w, const Case *c) {
    (void)c, gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
}
static void put_pre(GgufWriter *w, const Case *c) {
    gguf_w_str(w, "tokenizer.ggml.pre", c->pre ? c->pre : "gpt-2");
}
static void put_tokens(GgufWriter *w, const Case *c) {
    const char *t[GGUF_TEST_BPE_N];
    memcpy(t, gguf_test_bpe_tokens, sizeof t);
    if (c->token) t[c->token_at] = c->token;
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", t, GGUF_TEST_BPE_N);
}
static void put_types(GgufWriter *w, const Case *c) {
    int32_t t[GGUF_TEST_BPE_N];
    memcpy(t, gguf_test_bpe_types, sizeof t);
    if (c->type) t[c->type_at] = c->type;
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", t,
                   c->n_types ? (size_t)c->n_types : GGUF_TEST_BPE_N);
}
static void put_merges(GgufWriter *w, const Case *c) {
    const char *m[4];
    memcpy(m, gguf_test_bpe_merges, sizeof m);
    if (c->merge) m[1] = c->merge;
    gguf_w_arr_str(w, "tokenizer.ggml.merges", m, 4);
}
static void put_bos(GgufWriter *w, const Case *c) {
    if (c->bos >= 0) gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos);
}
static void put_eos(GgufWriter *w, const Case *c) {
    if (c->eos >= 0) gguf_w_u32(w, "tokenizer.ggml.eos_token_id", c->eos ? (uint32_t)c->eos : 9);
}
static void put_add_bos(GgufWriter *w, const Case *c) {
    if (c->add_bos >= 0) gguf_w_bool(w, "tokenizer.ggml.add_bos_token", c->add_bos);
}

/* Writes the case, converts it: gguf_tokenizer_json's return value. */
static int convert(const Case *c, char **json, char **config, char *err, size_t err_len) {
    GgufWriter *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");
    put_key(w, c, "tokenizer.ggml.model", 1, put_model);
    put_key(w, c, "tokenizer.ggml.pre", 1, put_pre);
    put_key(w, c, "tokenizer.ggml.tokens", 0, put_tokens);
    put_key(w, c, "tokenizer.ggml.token_type", 0, put_types);
    put_key(w, c, "tokenizer.ggml.merges", 0, put_merges);
    put_key(w, c, "tokenizer.ggml.bos_token_id", 0, put_bos);
    put_key(w, c, "tokenizer.ggml.eos_token_id", 0, put_eos);
    put_key(w, c, "tokenizer.ggml.add_bos_token", 0, put_add_bos);
    char path[128], e[512];
    snprintf(path, sizeof path, "%s/vocab.gguf", dir);
    CHECK(gguf_writer_write(w, path, e, sizeof e) == 0, "write: %s", e);
    gguf_writer_free(w);
    GgufFile *f = gguf_open(path, e, sizeof e);
    CHECK(f != NULL, "open: %s", e);
    if (!f) return -2;
    int rc = gguf_tokenizer_json(f, json, config, err, err_len);
    gguf_close(f);
    return rc;
}

static const Case base = {.bos = -1, .add_bos = 0};

static const cJSON *at(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}
static int is_str(const cJSON *o, const char *s) {
    return cJSON_IsString(o) && !strcmp(o->valuestring, s);
}

static void test_base(void) {
    char *json, *config, err[512];
    CHECK_OK(convert(&base, &json, &config, err, sizeof err), err);
    cJSON *r = cJSON_Parse(json ? json : ""), *cf = cJSON_Parse(config ? config : "");
    CHECK(r && cf, "JSON parses");
    const cJSON *model = at(r, "model"), *vocab = at(model, "vocab"), *merges = at(model, "merges");
    CHECK(is_str(at(model, "type"), "BPE") && cJSON_IsFalse(at(model, "ignore_merges")) &&
          cJSON_IsFalse(at(model, "byte_fallback")));
    /* every token but the unused one, with its id */
    CHECK(cJSON_GetArraySize(vocab) == 11, "%d vocab entries", cJSON_GetArraySize(vocab));
    for (int i = 0; i < GGUF_TEST_BPE_N; i++) {
        const cJSON *v = at(vocab, gguf_test_bpe_tokens[i]);
        CHECK(i == 10 ? !v : cJSON_IsNumber(v) && v->valueint == i, "vocab[%s]",
              gguf_test_bpe_tokens[i]);
    }
    CHECK(cJSON_GetArraySize(merges) == 4);
    for (int i = 0; i < 4; i++)
        CHECK(is_str(cJSON_GetArrayItem(merges, i), gguf_test_bpe_merges[i]), "merge %d", i);
    /* control and user-defined tokens are added tokens, literal */
    const cJSON *added = at(r, "added_tokens");
    CHECK(cJSON_GetArraySize(added) == 2);
    const cJSON *a0 = cJSON_GetArrayItem(added, 0), *a1 = cJSON_GetArrayItem(added, 1);
    CHECK(at(a0, "id") && at(a0, "id")->valueint == 9 &&
          is_str(at(a0, "content"), "<|endoftext|>") && cJSON_IsTrue(at(a0, "special")) &&
          cJSON_IsFalse(at(a0, "normalized")));
    CHECK(at(a1, "id") && at(a1, "id")->valueint == 11 && is_str(at(a1, "content"), "<tool>") &&
          cJSON_IsFalse(at(a1, "special")));
    /* gpt-2: no normalizer, ByteLevel with the GPT-2 regex; no BOS */
    CHECK(cJSON_IsNull(at(r, "normalizer")));
    const cJSON *pre = at(r, "pre_tokenizer");
    CHECK(is_str(at(pre, "type"), "ByteLevel") && cJSON_IsTrue(at(pre, "use_regex")) &&
          cJSON_IsFalse(at(pre, "add_prefix_space")));
    CHECK(cJSON_IsNull(at(r, "post_processor")));
    CHECK(is_str(at(at(r, "decoder"), "type"), "ByteLevel"));
    CHECK(is_str(at(cf, "eos_token"), "<|endoftext|>") && cJSON_IsNull(at(cf, "bos_token")) &&
          cJSON_IsFalse(at(cf, "add_bos_token")) && cJSON_IsFalse(at(cf, "add_eos_token")) &&
          is_str(at(cf, "tokenizer_class"), "PreTrainedTokenizerFast"));
    cJSON_Delete(r), cJSON_Delete(cf);
    free(json), free(config);

    /* add_bos_token: a TemplateProcessing puts BOS first */
    Case c = base;
    c.bos = 9, c.add_bos = 1;
    CHECK_OK(convert(&c, &json, &config, err, sizeof err), err);
    r = cJSON_Parse(json ? json : "");
    cf = cJSON_Parse(config ? config : "");
    const cJSON *pp = at(r, "post_processor"), *single = at(pp, "single");
    CHECK(is_str(at(pp, "type"), "TemplateProcessing") && cJSON_GetArraySize(single) == 2);
    CHECK(is_str(at(at(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id"), "<|endoftext|>") &&
          is_str(at(at(cJSON_GetArrayItem(single, 1), "Sequence"), "id"), "A"));
    const cJSON *sp = at(at(pp, "special_tokens"), "<|endoftext|>");
    CHECK(sp && cJSON_GetArrayItem(at(sp, "ids"), 0)->valueint == 9);
    CHECK(is_str(at(cf, "bos_token"), "<|endoftext|>") && cJSON_IsTrue(at(cf, "add_bos_token")));
    cJSON_Delete(r), cJSON_Delete(cf);
    free(json), free(config);
}

/* Every family dapt knows: its normalizer, pre-tokenizer and llama.cpp's
 * ignore_merges and add_bos default (llama-bpe: both true). */
static void test_families(void) {
    for (int i = 0; i < bpe_n_families; i++) {
        const BpeFamily *fam = &bpe_families[i];
        Case c = base;
        c.pre = fam->gguf_pre;
        c.bos = 9, c.add_bos = -1;
        char *json, *config, err[512];
        CHECK_OK(convert(&c, &json, &config, err, sizeof err), err);
        cJSON *r = cJSON_Parse(json ? json : ""), *cf = cJSON_Parse(config ? config : "");
        int llama3 = !strcmp(fam->gguf_pre, "llama-bpe");
        const cJSON *pre = at(r, "pre_tokenizer"), *norm = at(r, "normalizer");
        CHECK(fam->nfc ? is_str(at(norm, "type"), "NFC") : cJSON_IsNull(norm), "%s", fam->gguf_pre);
        if (fam->pattern) {
            const cJSON *list = at(pre, "pretokenizers"), *split = cJSON_GetArrayItem(list, 0),
                        *bl = cJSON_GetArrayItem(list, 1);
            CHECK(is_str(at(pre, "type"), "Sequence") && cJSON_GetArraySize(list) == 2, "%s",
                  fam->gguf_pre);
            CHECK(is_str(at(split, "type"), "Split") &&
                      is_str(at(at(split, "pattern"), "Regex"), fam->pattern) &&
                      is_str(at(split, "behavior"), "Isolated"),
                  "%s split", fam->gguf_pre);
            CHECK(is_str(at(bl, "type"), "ByteLevel") && cJSON_IsFalse(at(bl, "use_regex")), "%s",
                  fam->gguf_pre);
        } else {
            CHECK(is_str(at(pre, "type"), "ByteLevel") && cJSON_IsTrue(at(pre, "use_regex")), "%s",
                  fam->gguf_pre);
        }
        CHECK(cJSON_IsBool(at(at(r, "model"), "ignore_merges")) &&
                  cJSON_IsTrue(at(at(r, "model"), "ignore_merges")) == llama3,
              "%s ignore_merges", fam->gguf_pre);
        CHECK(cJSON_IsTrue(at(cf, "add_bos_token")) == llama3, "%s add_bos default", fam->gguf_pre);
        cJSON_Delete(r), cJSON_Delete(cf);
        free(json), free(config);
    }
}

static void test_no_vocab(void) {
    char *json = (char *)1, *config = (char *)1, err[512];
    Case c = base;
    c.key = "tokenizer.ggml.model", c.drop = 1;
    CHECK(convert(&c, &json, &config, err, sizeof err) == 0 && !json && !config, "no model key");
    GgufWriter *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    char path[128];
    snprintf(path, sizeof path, "%s/spm.gguf", dir);
    CHECK(gguf_writer_write(w, path, err, sizeof err) == 0);
    gguf_writer_free(w);
    GgufFile *f = gguf_open(path, err, sizeof err);
    json = config = (char *)1;
    CHECK(f && gguf_tokenizer_json(f, &json, &config, err, sizeof err) == 0 && !json && !config,
          "a sentencepiece vocabulary is not converted");
    gguf_close(f);
}

static void test_refusals(void) {
    static const struct {
        Case c;
        const char *needle;
        int offset; /* the message names a byte offset */
    } bad[] = {
        {{.key = "tokenizer.ggml.model", .wrong_type = 1, .bos = -1},
         "is UINT32, expected STRING",
         1},
        {{.key = "tokenizer.ggml.pre", .drop = 1, .bos = -1}, "'tokenizer.ggml.pre' is missing", 0},
        {{.key = "tokenizer.ggml.pre", .wrong_type = 1, .bos = -1}, "expected STRING", 1},
        {{.pre = "deepseek-llm", .bos = -1}, "pre-tokenizer 'deepseek-llm' is not one", 1},
        {{.key = "tokenizer.ggml.tokens", .drop = 1, .bos = -1},
         "'tokenizer.ggml.tokens' is missing",
         0},
        {{.key = "tokenizer.ggml.tokens", .wrong_type = 1, .bos = -1},
         "is STRING, expected ARRAY of STRING",
         1},
        {{.key = "tokenizer.ggml.token_type", .wrong_type = 1, .bos = -1},
         "expected ARRAY of INT32",
         1},
        {{.n_types = 11, .bos = -1}, "11 types for 12 tokens", 1},
        {{.type_at = 4, .type = 6, .bos = -1}, "token 4 has type 6", 1},
        {{.type_at = 4, .type = 0x7fffffff, .bos = -1}, "has type 2147483647", 1},
        {{.token_at = 2, .token = "a", .bos = -1}, "tokens 0 and 2 are both 'a'", 1},
        {{.token_at = 2, .token = "", .bos = -1}, "token 2 is empty", 1},
        {{.token_at = 2, .token = "\xff", .bos = -1}, "token 2 is not valid UTF-8", 1},
        {{.token_at = 2, .token = "\xc0\xaf", .bos = -1}, "token 2 is not valid UTF-8", 1},
        {{.token_at = 2, .token = "\xed\xa0\x80", .bos = -1}, "token 2 is not valid UTF-8", 1},
        {{.token_at = 2, .token = "\xe2\x82", .bos = -1}, "token 2 is not valid UTF-8", 1},
        {{.key = "tokenizer.ggml.merges", .drop = 1, .bos = -1},
         "'tokenizer.ggml.merges' is missing",
         0},
        {{.merge = "abc", .bos = -1}, "merge 1 ('abc') is not two tokens joined by one space", 1},
        {{.merge = " ab", .bos = -1}, "is not two tokens joined", 1},
        {{.merge = "ab ", .bos = -1}, "is not two tokens joined", 1},
        {{.merge = "a  b", .bos = -1}, "is not two tokens joined", 1},
        {{.merge = "a x", .bos = -1}, "merge 1 ('a x'): 'x' is not a token", 1},
        {{.merge = "b c", .bos = -1}, "'bc' is not a token", 1},
        {{.merge = "a <tool>", .bos = -1}, "'<tool>' is an added token", 1},
        {{.bos = 12}, "token id 12 is not below the 12 tokens", 1},
        {{.key = "tokenizer.ggml.eos_token_id", .wrong_type = 1, .bos = -1},
         "is STRING, expected UINT32",
         1},
        {{.key = "tokenizer.ggml.add_bos_token", .wrong_type = 1, .bos = -1}, "expected BOOL", 1},
        {{.bos = -1, .add_bos = 1},
         "add_bos_token is true but tokenizer.ggml.bos_token_id is missing",
         0},
        {{.bos = -1, .eos = 10}, "eos_token_id 10 is an unused token", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *json = NULL, *config = NULL, err[512] = "";
        CHECK(convert(&bad[i].c, &json, &config, err, sizeof err) != 0, "case %zu accepted", i);
        CHECK(!json && !config);
        CHECK_MSG(err, bad[i].needle);
        if (bad[i].offset) CHECK_MSG(err, "byte offset");
        CHECK_MSG(err, "tokenizer.ggml.");
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dapt_gguf_vocab_XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    test_base();
    test_families();
    test_no_vocab();
    test_refusals();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return CHECK_DONE();
}
