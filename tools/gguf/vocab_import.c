/* vocab_import.c: a GGUF file's byte-level BPE vocabulary
 * (tokenizer.ggml.model "gpt2") back to the Hugging Face files, for
 * `dapt import gguf`:
 *
 *   tokenizer.json         model BPE: every token but the unused ones as
 *                          its vocab (added tokens too: tokenizers gives an
 *                          added token the model's id for its string, else
 *                          the next free one, not the id written beside
 *                          it), the merges in rank order, ignore_merges as
 *                          llama.cpp
 *                          runs the family (true for llama-bpe); the
 *                          normalizer and pre-tokenizer of the family that
 *                          tokenizer.ggml.pre names (tokenizer/bpe.h's
 *                          bpe_families); control (3) and user-defined (4)
 *                          tokens as added tokens, special or not; a
 *                          TemplateProcessing post-processor adding BOS/EOS
 *                          as add_bos_token/add_eos_token say; the
 *                          ByteLevel decoder
 *   tokenizer_config.json  bos_token, eos_token, add_bos_token,
 *                          add_eos_token, tokenizer_class
 *                          PreTrainedTokenizerFast
 * Unused (5) tokens, the exporter's "[PAD<i>]" fillers, are left out.
 *
 * Invariants: the file is a stranger's. Every key read is checked for its
 * type and counts (token_type as long as tokens, ids within the
 * vocabulary), every string for NUL bytes and UTF-8, token strings for
 * uniqueness, and every merge for being two vocabulary tokens whose
 * concatenation is one too (what tokenizers needs to load it); a refusal
 * names the key, the element and the key's byte offset. What cannot be
 * written faithfully (a pre-tokenizer dapt has no family for, token types
 * a byte-level BPE does not have) is refused, never approximated.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/corpus.h"
#include "tools/gguf/gguf.h"

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

/* "metadata key 'K' (byte offset N): <message>" */
#define KEY_FMT      "metadata key '%s' (byte offset %llu): "
#define KEY_ARGS(kv) (kv)->key, (unsigned long long)(kv)->offset

/* Token string -> id, open addressing over the strings of the tokens
 * array (which outlive it). */
typedef struct {
    const GgufKV *tokens;
    int32_t *slot; /* id + 1, 0: empty */
    size_t mask;
} TokMap;

static uint64_t str_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int map_find(const TokMap *m, const char *s, size_t n) {
    for (size_t i = str_hash(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i] - 1;
        if (id < 0) return -1;
        if (m->tokens->arr_str_len[id] == n && !memcmp(m->tokens->arr_str[id], s, n)) return id;
    }
}

/* Adds token id; -1 when its string is taken (the id holding it in *dup). */
static int map_add(TokMap *m, int32_t id, int *dup) {
    const char *s = m->tokens->arr_str[id];
    size_t n = m->tokens->arr_str_len[id];
    if ((*dup = map_find(m, s, n)) >= 0) return -1;
    size_t i = str_hash(s, n) & m->mask;
    while (m->slot[i])
        i = (i + 1) & m->mask;
    m->slot[i] = id + 1;
    return 0;
}

/* The checked vocabulary. */
typedef struct {
    const GgufKV *tokens, *merges;
    int32_t *types; /* (n) */
    uint32_t n;
    int bos, eos; /* -1: none */
    int add_bos, add_eos;
    const BpeFamily *family;
    int ignore_merges;
    TokMap map; /* every token but the unused ones */
} Vocab;

static void vocab_free(Vocab *v) {
    free(v->types);
    free(v->map.slot);
}

static const GgufKV *find_typed(const GgufFile *f, const char *key, uint32_t type,
                                uint32_t arr_type, int required, char *err, size_t err_len) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) {
        if (required)
            err_set(err, err_len, "metadata key '%s' is missing (a gpt2 tokenizer needs it)", key);
        return NULL;
    }
    if (kv->type != type || (type == GGUF_ARRAY && kv->arr_type != arr_type)) {
        err_set(err, err_len, KEY_FMT "is %s%s%s, expected %s%s%s", KEY_ARGS(kv),
                gguf_value_type_name(kv->type), kv->type == GGUF_ARRAY ? " of " : "",
                kv->type == GGUF_ARRAY ? gguf_value_type_name(kv->arr_type) : "",
                gguf_value_type_name(type), type == GGUF_ARRAY ? " of " : "",
                type == GGUF_ARRAY ? gguf_value_type_name(arr_type) : "");
        return NULL;
    }
    return kv;
}

/* An optional UINT32 token id below n into *id (-1 when absent). */
static int read_id(const GgufFile *f, const char *key, uint32_t n, int *id, char *err,
                   size_t err_len) {
    *id = -1;
    if (!gguf_find_kv(f, key)) return 0;
    const GgufKV *kv = find_typed(f, key, GGUF_UINT32, 0, 1, err, err_len);
    if (!kv) return 1;
    if (kv->v.u >= n)
        return err_set(err, err_len, KEY_FMT "token id %llu is not below the %u tokens",
                       KEY_ARGS(kv), (unsigned long long)kv->v.u, n);
    *id = (int)kv->v.u;
    return 0;
}

/* An optional BOOL into *v (def when absent). */
static int read_flag(const GgufFile *f, const char *key, int def, int *v, char *err,
                     size_t err_len) {
    *v = def;
    if (!gguf_find_kv(f, key)) return 0;
    const GgufKV *kv = find_typed(f, key, GGUF_BOOL, 0, 1, err, err_len);
    if (kv) *v = kv->v.u != 0;
    return !kv;
}

static int read_tokens(const GgufFile *f, Vocab *v, char *err, size_t err_len) {
    const GgufKV *t =
        find_typed(f, "tokenizer.ggml.tokens", GGUF_ARRAY, GGUF_STRING, 1, err, err_len);
    if (!t) return 1;
    if (t->arr_n < 1 || t->arr_n > INT32_MAX)
        return err_set(err, err_len, KEY_FMT "%llu tokens (expected 1 to %d)", KEY_ARGS(t),
                       (unsigned long long)t->arr_n, INT32_MAX);
    v->tokens = t;
    v->n = (uint32_t)t->arr_n;
    if (!(v->types = malloc(v->n * sizeof *v->types)))
        return err_set(err, err_len, "out of memory");
    const GgufKV *ty = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (ty && !(ty = find_typed(f, ty->key, GGUF_ARRAY, GGUF_INT32, 1, err, err_len))) return 1;
    if (ty && ty->arr_n != t->arr_n)
        return err_set(err, err_len, KEY_FMT "%llu types for %u tokens", KEY_ARGS(ty),
                       (unsigned long long)ty->arr_n, v->n);
    size_t cap = 16;
    while (cap < 2 * (size_t)v->n)
        cap *= 2;
    if (!(v->map.slot = calloc(cap, sizeof *v->map.slot)))
        return err_set(err, err_len, "out of memory");
    v->map.tokens = t;
    v->map.mask = cap - 1;
    for (uint32_t i = 0; i < v->n; i++) {
        const char *s = t->arr_str[i];
        size_t len = t->arr_str_len[i];
        int32_t type = TT_NORMAL;
        if (ty) memcpy(&type, ty->arr_data + 4 * (size_t)i, 4);
        if (type != TT_NORMAL && type != TT_CONTROL && type != TT_USER_DEFINED && type != TT_UNUSED)
            return err_set(err, err_len,
                           KEY_FMT "token %u has type %d: a byte-level BPE has normal (1), "
                                   "control (3), user-defined (4) and unused (5) tokens only",
                           KEY_ARGS(ty), i, type);
        v->types[i] = type;
        if (type == TT_UNUSED) continue;
        if (!len || strlen(s) != len || corpus_utf8_valid((const unsigned char *)s, len) != len)
            return err_set(err, err_len, KEY_FMT "token %u is %s", KEY_ARGS(t), i,
                           !len               ? "empty"
                           : strlen(s) != len ? "a string with a NUL byte"
                                              : "not valid UTF-8");
        int dup;
        if (map_add(&v->map, (int32_t)i, &dup))
            return err_set(err, err_len, KEY_FMT "tokens %d and %u are both '%s'", KEY_ARGS(t), dup,
                           i, s);
    }
    return 0;
}

/* Every merge "a b": a and b normal tokens, and so is ab. */
static int read_merges(const GgufFile *f, Vocab *v, char *err, size_t err_len) {
    const GgufKV *m =
        find_typed(f, "tokenizer.ggml.merges", GGUF_ARRAY, GGUF_STRING, 1, err, err_len);
    if (!m) return 1;
    v->merges = m;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (uint64_t i = 0; i < m->arr_n && !rc; i++) {
        const char *s = m->arr_str[i];
        size_t len = m->arr_str_len[i];
        const char *sp = memchr(s, ' ', len);
        if (!sp || sp == s || sp == s + len - 1 || strlen(s) != len ||
            memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
            rc = err_set(err, err_len,
                         KEY_FMT "merge %llu ('%s') is not two tokens joined by one space",
                         KEY_ARGS(m), (unsigned long long)i, s);
            break;
        }
        size_t nl = (size_t)(sp - s), nr = len - nl - 1;
        if (len > cat_cap) {
            char *p = realloc(cat, len);
            if (!p) {
                rc = err_set(err, err_len, "out of memory");
                break;
            }
            cat = p, cat_cap = len;
        }
        memcpy(cat, s, nl);
        memcpy(cat + nl, sp + 1, nr);
        const char *part[3] = {s, sp + 1, cat};
        size_t part_len[3] = {nl, nr, nl + nr};
        for (int k = 0; k < 3 && !rc; k++) {
            int id = map_find(&v->map, part[k], part_len[k]);
            if (id < 0 || v->types[id] != TT_NORMAL)
                rc = err_set(err, err_len, KEY_FMT "merge %llu ('%s'): '%.*s' is %s", KEY_ARGS(m),
                             (unsigned long long)i, s, (int)part_len[k], part[k],
                             id < 0 ? "not a token" : "an added token, not one of the model's");
        }
    }
    free(cat);
    return rc;
}

static int read_vocab(const GgufFile *f, Vocab *v, char *err, size_t err_len) {
    const GgufKV *pre = find_typed(f, "tokenizer.ggml.pre", GGUF_STRING, 0, 1, err, err_len);
    if (!pre) return 1;
    for (int i = 0; i < bpe_n_families && !v->family; i++)
        if (!strcmp(pre->str, bpe_families[i].gguf_pre)) v->family = &bpe_families[i];
    if (!v->family) {
        char names[256] = "";
        for (int i = 0; i < bpe_n_families; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     bpe_families[i].gguf_pre);
        return err_set(err, err_len,
                       KEY_FMT "pre-tokenizer '%s' is not one dapt can write a tokenizer.json for "
                               "(%s)",
                       KEY_ARGS(pre), pre->str, names);
    }
    /* llama.cpp's llama-bpe ignores merges for words in the vocabulary and
     * adds BOS unless add_bos_token says otherwise */
    int llama3 = !strcmp(v->family->gguf_pre, "llama-bpe");
    v->ignore_merges = llama3;
    if (read_tokens(f, v, err, err_len) || read_merges(f, v, err, err_len) ||
        read_id(f, "tokenizer.ggml.bos_token_id", v->n, &v->bos, err, err_len) ||
        read_id(f, "tokenizer.ggml.eos_token_id", v->n, &v->eos, err, err_len) ||
        read_flag(f, "tokenizer.ggml.add_bos_token", llama3, &v->add_bos, err, err_len) ||
        read_flag(f, "tokenizer.ggml.add_eos_token", 0, &v->add_eos, err, err_len))
        return 1;
    const int ids[2] = {v->bos, v->eos}, adds[2] = {v->add_bos, v->add_eos};
    static const char *const names[2] = {"bos", "eos"};
    for (int k = 0; k < 2; k++) {
        if (adds[k] && ids[k] < 0)
            return err_set(err, err_len,
                           "tokenizer.ggml.add_%s_token is true but tokenizer.ggml.%s_token_id "
                           "is missing",
                           names[k], names[k]);
        if (ids[k] >= 0 && v->types[ids[k]] == TT_UNUSED)
            return err_set(err, err_len, "tokenizer.ggml.%s_token_id %d is an unused token",
                           names[k], ids[k]);
    }
    return 0;
}

/* ---------------- JSON ---------------- */

static cJSON *byte_level(int add_prefix_space, int use_regex) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", 1);
    cJSON_AddBoolToObject(o, "use_regex", use_regex);
    return o;
}

static cJSON *pre_tokenizer(const BpeFamily *fam) {
    if (!fam->pattern) return byte_level(0, 1);
    cJSON *split = cJSON_CreateObject(), *pat = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(pat, "Regex", fam->pattern);
    cJSON_AddItemToObject(split, "pattern", pat);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", 0);
    cJSON *seq = cJSON_CreateObject(), *list = cJSON_CreateArray();
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON_AddItemToArray(list, split);
    cJSON_AddItemToArray(list, byte_level(0, 0));
    cJSON_AddItemToObject(seq, "pretokenizers", list);
    return seq;
}

/* {"SpecialToken": {"id": NAME, "type_id": t}} or {"Sequence": ...} */
static void template_piece(cJSON *list, const char *kind, const char *id, int type_id) {
    cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "id", id);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    cJSON_AddItemToObject(o, kind, in);
    cJSON_AddItemToArray(list, o);
}

/* [bos] $seq [eos], every piece of type type_id (bos, eos NULL: none) */
static void template_seq(cJSON *list, const char *bos, const char *seq, const char *eos,
                         int type_id) {
    if (bos) template_piece(list, "SpecialToken", bos, type_id);
    template_piece(list, "Sequence", seq, type_id);
    if (eos) template_piece(list, "SpecialToken", eos, type_id);
}

/* TemplateProcessing adding BOS / EOS as the flags say; null without. */
static cJSON *post_processor(const Vocab *v) {
    if (!v->add_bos && !v->add_eos) return cJSON_CreateNull();
    const char *bos = v->add_bos ? v->tokens->arr_str[v->bos] : NULL;
    const char *eos = v->add_eos ? v->tokens->arr_str[v->eos] : NULL;
    cJSON *o = cJSON_CreateObject(), *single = cJSON_CreateArray(), *pair = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "type", "TemplateProcessing");
    template_seq(single, bos, "A", eos, 0);
    template_seq(pair, bos, "A", eos, 0);
    template_seq(pair, bos, "B", eos, 1);
    cJSON_AddItemToObject(o, "single", single);
    cJSON_AddItemToObject(o, "pair", pair);
    cJSON *specials = cJSON_AddObjectToObject(o, "special_tokens");
    const int ids[2] = {bos ? v->bos : -1, eos ? v->eos : -1};
    for (int k = 0; k < 2; k++) {
        if (ids[k] < 0 || (k == 1 && ids[1] == ids[0])) continue;
        const char *s = v->tokens->arr_str[ids[k]];
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "id", s);
        cJSON_AddItemToObject(t, "ids", cJSON_CreateIntArray(&ids[k], 1));
        cJSON_AddItemToObject(t, "tokens", cJSON_CreateStringArray(&s, 1));
        cJSON_AddItemToObject(specials, s, t);
    }
    return o;
}

static cJSON *model_json(const Vocab *v) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", 0);
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON_AddBoolToObject(m, "ignore_merges", v->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    for (uint32_t i = 0; i < v->n; i++)
        if (v->types[i] != TT_UNUSED)
            cJSON_AddItemToObject(vocab, v->tokens->arr_str[i], cJSON_CreateNumber(i));
    cJSON *merges = cJSON_AddArrayToObject(m, "merges");
    for (uint64_t i = 0; i < v->merges->arr_n; i++)
        cJSON_AddItemToArray(merges, cJSON_CreateString(v->merges->arr_str[i]));
    return m;
}

static char *tokenizer_json(const Vocab *v) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->types[i] != TT_CONTROL && v->types[i] != TT_USER_DEFINED) continue;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", i);
        cJSON_AddStringToObject(t, "content", v->tokens->arr_str[i]);
        cJSON_AddBoolToObject(t, "single_word", 0);
        cJSON_AddBoolToObject(t, "lstrip", 0);
        cJSON_AddBoolToObject(t, "rstrip", 0);
        cJSON_AddBoolToObject(t, "normalized", 0);
        cJSON_AddBoolToObject(t, "special", v->types[i] == TT_CONTROL);
        cJSON_AddItemToArray(added, t);
    }
    if (v->family->nfc) {
        cJSON *n = cJSON_AddObjectToObject(root, "normalizer");
        cJSON_AddStringToObject(n, "type", "NFC");
    } else {
        cJSON_AddNullToObject(root, "normalizer");
    }
    cJSON_AddItemToObject(root, "pre_tokenizer", pre_tokenizer(v->family));
    cJSON_AddItemToObject(root, "post_processor", post_processor(v));
    cJSON_AddItemToObject(root, "decoder", byte_level(1, 1));
    cJSON_AddItemToObject(root, "model", model_json(v));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

static char *tokenizer_config(const Vocab *v) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddBoolToObject(root, "add_bos_token", v->add_bos);
    cJSON_AddBoolToObject(root, "add_eos_token", v->add_eos);
    if (v->bos >= 0)
        cJSON_AddStringToObject(root, "bos_token", v->tokens->arr_str[v->bos]);
    else
        cJSON_AddNullToObject(root, "bos_token");
    if (v->eos >= 0)
        cJSON_AddStringToObject(root, "eos_token", v->tokens->arr_str[v->eos]);
    else
        cJSON_AddNullToObject(root, "eos_token");
    cJSON_AddBoolToObject(root, "clean_up_tokenization_spaces", 0);
    cJSON_AddStringToObject(root, "tokenizer_class", "PreTrainedTokenizerFast");
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

int gguf_tokenizer_json(const GgufFile *f, char **json_out, char **config_out, char *err,
                        size_t err_len) {
    *json_out = *config_out = NULL;
    const GgufKV *model = gguf_find_kv(f, "tokenizer.ggml.model");
    if (!model) return 0;
    if (!find_typed(f, model->key, GGUF_STRING, 0, 1, err, err_len)) return 1;
    if (strcmp(model->str, "gpt2")) return 0;
    Vocab v = {0};
    int rc = read_vocab(f, &v, err, err_len);
    if (!rc) {
        *json_out = tokenizer_json(&v);
        *config_out = tokenizer_config(&v);
        if (!*json_out || !*config_out) {
            free(*json_out), free(*config_out);
            *json_out = *config_out = NULL;
            rc = err_set(err, err_len, "out of memory for tokenizer.json");
        }
    }
    vocab_free(&v);
    return rc;
}
