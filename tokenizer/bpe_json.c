/* tokenizer/bpe_json.c: reading a Hugging Face tokenizer.json into a
 * BpeModel (tokenizer/bpe_impl.h): the model's vocabulary and merges, the
 * added tokens, the normalizer, pre-tokenizer, decoder and post-processor.
 * What tokenizer/bpe.h does not list as implemented is refused by its JSON
 * key rather than encoded differently from HF tokenizers.
 *
 * The file is a stranger's: every id is checked against BPE_MAX_IDS and
 * for duplicates, every string for UTF-8, every merge against the
 * vocabulary, and each added token's id against the one HF tokenizers
 * (0.19) gives it on load, so that dapt and HF agree on every id. Errors
 * read "FILE: KEY: what is wrong". */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "kernels/util.h"
#include "tokenizer/bpe_impl.h"
#include "tokenizer/corpus.h"

#define MAX_FILE_BYTES (1ull << 30)
#define MAX_DEPTH      8 /* nested normalizer / processor Sequences */

/* The pre-tokenizer families; the patterns are the exact strings (after
 * JSON unescaping) of GPT-2's ByteLevel, Llama 3's and Qwen2's Split. */
#define LLAMA3_PATTERN                                                                             \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_PATTERN                                                                              \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const BpeFamily bpe_families[] = {
    {"gpt-2", NULL, 0},
    {"llama-bpe", LLAMA3_PATTERN, 0},
    {"qwen2", QWEN2_PATTERN, 1},
};
const int bpe_n_families = (int)(sizeof bpe_families / sizeof bpe_families[0]);

typedef struct {
    BpeModel *m;
    const char *name;
    char *err;
    size_t errlen;
    /* model.vocab before the token table exists */
    uint32_t *vocab_id;
    const char **vocab_key;
    uint32_t n_vocab;
} Ld;

__attribute__((format(printf, 2, 3))) static int bad(Ld *l, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(l->err, l->errlen, "%s: %s", l->name, msg);
    return -1;
}

static const cJSON *get(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}
static int is_null(const cJSON *v) {
    return !v || cJSON_IsNull(v);
}

/* An optional boolean (missing or null: def). */
static int opt_bool(Ld *l, const cJSON *obj, const char *where, const char *key, int def,
                    int *out) {
    const cJSON *v = get(obj, key);
    if (is_null(v))
        *out = def;
    else if (cJSON_IsBool(v))
        *out = cJSON_IsTrue(v);
    else
        return bad(l, "%s.%s must be true or false", where, key);
    return 0;
}

/* obj's "type" string, for an object that must have one. */
static int type_of(Ld *l, const cJSON *obj, const char *where, const char **type) {
    const cJSON *t = cJSON_IsObject(obj) ? get(obj, "type") : NULL;
    if (!cJSON_IsString(t)) return bad(l, "%s must be an object with a \"type\" string", where);
    *type = t->valuestring;
    return 0;
}

/* A JSON number that is an id: an integer in [0, BPE_MAX_IDS). */
static int id_of(Ld *l, const cJSON *v, const char *where, const char *what, uint32_t *id) {
    if (!cJSON_IsNumber(v)) return bad(l, "%s: the id of %s is not a number", where, what);
    double d = v->valuedouble;
    if (!(d >= 0 && d < BPE_MAX_IDS) || d != floor(d))
        return bad(l, "%s: the id of %s is %g, not an integer in [0, %u)", where, what, d,
                   BPE_MAX_IDS);
    *id = (uint32_t)d;
    return 0;
}

static int utf8_ok(const char *s, size_t n) {
    return corpus_utf8_valid((const unsigned char *)s, n) == n;
}

/* Appends s[0..n) and a NUL to the arena; *off gets where. */
static int arena_add(Ld *l, const char *s, size_t n, uint32_t *off) {
    BpeModel *m = l->m;
    if (m->arena_len + n + 1 > UINT32_MAX) return bad(l, "the token strings exceed 4 GiB");
    if (m->arena_len + n + 1 > m->arena_cap) {
        size_t cap = 2 * (m->arena_len + n + 1) + 4096;
        char *a = realloc(m->arena, cap);
        if (!a) return bad(l, "out of memory");
        m->arena = a;
        m->arena_cap = cap;
    }
    memcpy(m->arena + m->arena_len, s, n);
    m->arena[m->arena_len + n] = 0;
    *off = (uint32_t)m->arena_len;
    m->arena_len += n + 1;
    return 0;
}

/* ------------------------------------------------------------------- model */

static int read_vocab(Ld *l, const cJSON *vocab) {
    BpeModel *m = l->m;
    if (!cJSON_IsObject(vocab)) return bad(l, "model.vocab: missing or not an object");
    uint32_t n = (uint32_t)cJSON_GetArraySize(vocab);
    if (n >= BPE_MAX_IDS) return bad(l, "model.vocab: %u tokens, more than %u", n, BPE_MAX_IDS);
    l->vocab_id = malloc((n + 1) * sizeof *l->vocab_id);
    l->vocab_key = malloc((n + 1) * sizeof *l->vocab_key);
    if (!l->vocab_id || !l->vocab_key) return bad(l, "out of memory");
    for (const cJSON *it = vocab->child; it; it = it->next) {
        const char *key = it->string;
        size_t len = strlen(key);
        if (len == 0) return bad(l, "model.vocab: an empty token");
        if (!utf8_ok(key, len)) return bad(l, "model.vocab: a token is not valid UTF-8");
        uint32_t id = 0;
        char where[96];
        snprintf(where, sizeof where, "model.vocab[\"%.40s\"]", key);
        if (id_of(l, it, where, "the token", &id)) return -1;
        int r = bpe_map_put(&m->spell, key, len, bpe_hash(key, len), id);
        if (r < 0) return bad(l, "out of memory");
        if (r > 0) return bad(l, "model.vocab: \"%.40s\" appears twice", key);
        l->vocab_id[l->n_vocab] = id;
        l->vocab_key[l->n_vocab++] = key;
    }
    m->vocab_count = l->n_vocab;
    return 0;
}

static int vocab_id(const BpeModel *m, const char *s, size_t n) {
    const uint64_t *v = bpe_map_get(&m->spell, s, n, bpe_hash(s, n));
    return v ? (int)*v : -1;
}

/* One merge: its two token strings, given as "a b" or ["a", "b"]. */
static int merge_parts(Ld *l, const cJSON *it, size_t i, const char **a, size_t *na, const char **b,
                       size_t *nb) {
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return bad(l,
                       "model.merges[%zu] is \"%.60s\": expected two tokens separated by one "
                       "space",
                       i, s);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = strlen(sp + 1);
        return 0;
    }
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
        cJSON_IsString(it->child->next)) {
        *a = it->child->valuestring;
        *na = strlen(*a);
        *b = it->child->next->valuestring;
        *nb = strlen(*b);
        return 0;
    }
    return bad(l, "model.merges[%zu]: expected a string \"a b\" or an array [\"a\", \"b\"]", i);
}

static int read_merges(Ld *l, const cJSON *merges) {
    BpeModel *m = l->m;
    if (!cJSON_IsArray(merges)) return bad(l, "model.merges: missing or not an array");
    size_t n = (size_t)cJSON_GetArraySize(merges), i = 0, rank = 0;
    m->merge_l = malloc((n + 1) * sizeof *m->merge_l);
    m->merge_r = malloc((n + 1) * sizeof *m->merge_r);
    char *cat = malloc(1);
    size_t cat_cap = 1;
    if (!m->merge_l || !m->merge_r || !cat) {
        free(cat);
        return bad(l, "out of memory");
    }
    int rc = 0;
    for (const cJSON *it = merges->child; it && !rc; it = it->next, i++) {
        /* HF skips a "#version" line of an old merges.txt without counting it */
        if (cJSON_IsString(it) && !strncmp(it->valuestring, "#version", 8)) continue;
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if ((rc = merge_parts(l, it, i, &a, &na, &b, &nb))) break;
        int ia = vocab_id(m, a, na), ib = vocab_id(m, b, nb);
        if (na + nb + 1 > cat_cap) {
            char *c = realloc(cat, cat_cap = 2 * (na + nb + 1));
            if (!c) {
                rc = bad(l, "out of memory");
                break;
            }
            cat = c;
        }
        memcpy(cat, a, na);
        memcpy(cat + na, b, nb);
        int ic = vocab_id(m, cat, na + nb);
        if (ia < 0 || ib < 0 || ic < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : cat;
            size_t nm = ia < 0 ? na : ib < 0 ? nb : na + nb;
            rc = bad(l, "model.merges[%zu]: \"%.*s\" is not in model.vocab", i,
                     (int)(nm > 60 ? 60 : nm), miss);
            break;
        }
        if (bpe_pairs_put(&m->pairs, (uint32_t)ia, (uint32_t)ib,
                          (uint64_t)rank << 32 | (uint32_t)ic)) {
            rc = bad(l, "out of memory");
            break;
        }
        m->merge_l[rank] = (uint32_t)ia;
        m->merge_r[rank] = (uint32_t)ib;
        rank++;
    }
    m->n_merges = rank;
    free(cat);
    return rc;
}

static int read_model(Ld *l, const cJSON *model) {
    BpeModel *m = l->m;
    const char *type = NULL;
    if (!cJSON_IsObject(model)) return bad(l, "model: missing or not an object");
    if (type_of(l, model, "model", &type)) return -1;
    if (strcmp(type, "BPE"))
        return bad(l,
                   "model.type is \"%s\": only BPE models are supported (not WordPiece, "
                   "Unigram or WordLevel)",
                   type);
    const cJSON *v = get(model, "dropout");
    if (!is_null(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
        return bad(l, "model.dropout: BPE dropout is not supported (null or 0 expected)");
    const char *nulls[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = get(model, nulls[i]);
        if (!is_null(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return bad(l, "model.%s: not supported (null expected, as in byte-level BPE)",
                       nulls[i]);
    }
    int byte_fallback = 0;
    if (opt_bool(l, model, "model", "byte_fallback", 0, &byte_fallback) ||
        opt_bool(l, model, "model", "fuse_unk", 0, &m->fuse_unk) ||
        opt_bool(l, model, "model", "ignore_merges", 0, &m->ignore_merges))
        return -1;
    if (byte_fallback)
        return bad(l, "model.byte_fallback is true: not supported (a byte-level vocabulary "
                      "needs no fallback)");
    if (read_vocab(l, get(model, "vocab")) || read_merges(l, get(model, "merges"))) return -1;
    v = get(model, "unk_token");
    m->unk_id = -1;
    if (!is_null(v)) {
        if (!cJSON_IsString(v)) return bad(l, "model.unk_token must be a string or null");
        m->unk_id = vocab_id(m, v->valuestring, strlen(v->valuestring));
        if (m->unk_id < 0)
            return bad(l, "model.unk_token \"%.40s\" is not in model.vocab", v->valuestring);
    }
    return 0;
}

/* ------------------------------------------------------------ added tokens */

static int read_added(Ld *l, const cJSON *arr) {
    BpeModel *m = l->m;
    if (is_null(arr)) return 0;
    if (!cJSON_IsArray(arr)) return bad(l, "added_tokens must be an array");
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    if (n >= BPE_MAX_IDS) return bad(l, "added_tokens: more than %u tokens", BPE_MAX_IDS);
    m->added = calloc(n + 1, sizeof *m->added);
    if (!m->added) return bad(l, "out of memory");
    int64_t max_added = -1;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        const cJSON *c = cJSON_IsObject(it) ? get(it, "content") : NULL;
        if (!cJSON_IsString(c))
            return bad(l, "%s: expected an object with a \"content\" string", where);
        const char *s = c->valuestring;
        size_t len = strlen(s);
        if (len == 0) return bad(l, "%s: the content is empty", where);
        if (len > BPE_MAX_ADDED_LEN)
            return bad(l, "%s: the content is longer than %u bytes", where, BPE_MAX_ADDED_LEN);
        if (!utf8_ok(s, len)) return bad(l, "%s: the content is not valid UTF-8", where);
        BpeAdded *a = &m->added[m->n_added];
        int special = 0, normalized = 0, single_word = 0, lstrip = 0, rstrip = 0;
        if (opt_bool(l, it, where, "special", 0, &special) ||
            opt_bool(l, it, where, "normalized", !special, &normalized) ||
            opt_bool(l, it, where, "single_word", 0, &single_word) ||
            opt_bool(l, it, where, "lstrip", 0, &lstrip) ||
            opt_bool(l, it, where, "rstrip", 0, &rstrip))
            return -1;
        a->special = (uint8_t)special;
        a->normalized = (uint8_t)normalized;
        a->single_word = (uint8_t)single_word;
        a->lstrip = (uint8_t)lstrip;
        a->rstrip = (uint8_t)rstrip;
        if (id_of(l, get(it, "id"), where, "the token", &a->id)) return -1;
        /* The id HF tokenizers gives it: the model's when the content is a
         * model token, else the next one after the model's and the added
         * ones so far. */
        int in_vocab = vocab_id(m, s, len);
        uint32_t hf = in_vocab >= 0 ? (uint32_t)in_vocab
                      : max_added >= (int64_t)m->vocab_count || m->vocab_count == 0
                          ? (uint32_t)(max_added + 1)
                          : m->vocab_count;
        if (hf != a->id)
            return bad(l,
                       "%s (\"%.40s\"): the file gives id %u but Hugging Face tokenizers "
                       "assigns it id %u (the model's id of that string, else the next id "
                       "after model.vocab and the added tokens before it)",
                       where, s, a->id, hf);
        if ((int64_t)a->id > max_added) max_added = a->id;
        int r = bpe_map_put(&m->added_map, s, len, bpe_hash(s, len), m->n_added);
        if (r < 0) return bad(l, "out of memory");
        if (r > 0) return bad(l, "%s: \"%.40s\" is listed twice", where, s);
        if (arena_add(l, s, len, &a->content_off)) return -1;
        a->content_len = (uint32_t)len;
        a->pattern_off = a->content_off;
        a->pattern_len = a->content_len;
        m->n_added++;
    }
    return 0;
}

/* Added tokens with normalized true match the normalized text: their
 * pattern is NFC(content) under an NFC normalizer. */
static int normalize_added(Ld *l) {
    BpeModel *m = l->m;
    for (uint32_t i = 0; m->nfc && i < m->n_added; i++) {
        BpeAdded *a = &m->added[i];
        if (!a->normalized) continue;
        char *out;
        size_t n;
        if (bpe_nfc(m->arena + a->content_off, a->content_len, &out, &n, l->err, l->errlen))
            return -1;
        int rc = arena_add(l, out, n, &a->pattern_off);
        a->pattern_len = (uint32_t)n;
        free(out);
        if (rc) return -1;
    }
    return 0;
}

/* --------------------------------------------- normalizer and pre-tokenizer */

static int read_normalizer(Ld *l, const cJSON *v, const char *where, int depth) {
    const char *type = NULL;
    if (is_null(v)) return 0;
    if (type_of(l, v, where, &type)) return -1;
    if (!strcmp(type, "NFC")) {
        l->m->nfc = 1;
        return 0;
    }
    if (!strcmp(type, "Sequence") && depth < MAX_DEPTH) {
        const cJSON *list = get(v, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return bad(l, "%s.normalizers must be an array", where);
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.normalizers[%d]", where, i++);
            if (read_normalizer(l, it, sub, depth + 1)) return -1;
        }
        return 0;
    }
    return bad(l, "%s.type is \"%s\": not supported (null, NFC or a Sequence of NFC expected)",
               where, type);
}

static int add_regex(Ld *l, const char *pattern, const char *where, pcre2_code **out) {
    char msg[512];
    int jit;
    *out = bpe_regex_compile(pattern, &jit, msg, sizeof msg);
    if (!*out) return bad(l, "%s: %s", where, msg);
    l->m->jit &= jit;
    return 0;
}

static int read_byte_level(Ld *l, const cJSON *v, const char *where) {
    int use_regex = 0;
    if (opt_bool(l, v, where, "add_prefix_space", 1, &l->m->prefix_space) ||
        opt_bool(l, v, where, "use_regex", 1, &use_regex))
        return -1;
    if (use_regex) return add_regex(l, BPE_GPT2_PATTERN, where, &l->m->byte_regex);
    return 0;
}

static int read_split(Ld *l, const cJSON *v, const char *where) {
    BpeModel *m = l->m;
    const cJSON *pat = get(v, "pattern"), *re = cJSON_IsObject(pat) ? get(pat, "Regex") : NULL;
    const cJSON *beh = get(v, "behavior");
    int invert = 0;
    if (!cJSON_IsString(re))
        return bad(l, "%s.pattern: only {\"Regex\": ...} is supported (not a String pattern)",
                   where);
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
        return bad(l, "%s.behavior is %s%s%s: only \"Isolated\" is supported", where,
                   cJSON_IsString(beh) ? "\"" : "",
                   cJSON_IsString(beh) ? beh->valuestring : "missing",
                   cJSON_IsString(beh) ? "\"" : "");
    if (opt_bool(l, v, where, "invert", 0, &invert)) return -1;
    if (invert) return bad(l, "%s.invert is true: only false is supported", where);
    if (m->n_splits == BPE_MAX_SPLITS)
        return bad(l, "%s: more than %d Split pre-tokenizers", where, BPE_MAX_SPLITS);
    m->split_pattern[m->n_splits] = strdup(re->valuestring);
    if (!m->split_pattern[m->n_splits]) return bad(l, "out of memory");
    return add_regex(l, re->valuestring, where, &m->split[m->n_splits++]);
}

static int read_pre_tokenizer(Ld *l, const cJSON *v) {
    const char *type = NULL;
    if (is_null(v))
        return bad(l, "pre_tokenizer is null: a ByteLevel pre-tokenizer is required (byte-level "
                      "BPE)");
    if (type_of(l, v, "pre_tokenizer", &type)) return -1;
    if (!strcmp(type, "ByteLevel")) return read_byte_level(l, v, "pre_tokenizer");
    if (strcmp(type, "Sequence"))
        return bad(l,
                   "pre_tokenizer.type is \"%s\": not supported (ByteLevel, or a Sequence of "
                   "Split and a final ByteLevel)",
                   type);
    const cJSON *list = get(v, "pretokenizers");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0, i = 0;
    if (n == 0) return bad(l, "pre_tokenizer.pretokenizers must be a non-empty array");
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        char where[64];
        snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%d]", i);
        if (type_of(l, it, where, &type)) return -1;
        int last = ++i == n;
        if (strcmp(type, "ByteLevel") && strcmp(type, "Split"))
            return bad(l, "%s.type is \"%s\": not supported (Split pre-tokenizers followed by "
                          "one ByteLevel)", where, type);
        if ((strcmp(type, "ByteLevel") == 0) != last)
            return bad(l, "%s: the Sequence must end with its only ByteLevel", where);
        if (last ? read_byte_level(l, it, where) : read_split(l, it, where)) return -1;
    }
    return 0;
}

/* ---------------------------------------------- decoder and post-processor */

static int read_decoder(Ld *l, const cJSON *v) {
    const char *type = NULL;
    if (is_null(v)) return bad(l, "decoder is null: a ByteLevel decoder is required");
    if (type_of(l, v, "decoder", &type)) return -1;
    if (strcmp(type, "ByteLevel"))
        return bad(l, "decoder.type is \"%s\": only ByteLevel is supported", type);
    return 0;
}

/* TemplateProcessing: the BOS is the special token its single template
 * starts with; the rest of the template is not used (dapt ends documents
 * with EOS itself). */
static int read_template(Ld *l, const cJSON *v, const char *where) {
    BpeModel *m = l->m;
    const cJSON *single = get(v, "single");
    if (!cJSON_IsArray(single)) return bad(l, "%s.single must be an array", where);
    const cJSON *first = single->child, *sp = first ? get(first, "SpecialToken") : NULL;
    if (!sp) return 0; /* starts with the sequence: no BOS */
    const cJSON *name = get(sp, "id"), *specials = get(v, "special_tokens");
    if (!cJSON_IsString(name))
        return bad(l, "%s.single[0].SpecialToken.id must be a string", where);
    const cJSON *entry = cJSON_IsObject(specials) ? get(specials, name->valuestring) : NULL;
    const cJSON *ids = entry ? get(entry, "ids") : NULL;
    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) != 1)
        return bad(l, "%s.special_tokens[\"%.40s\"].ids must hold exactly one id", where,
                   name->valuestring);
    uint32_t id = 0;
    if (id_of(l, ids->child, where, "the template's first token", &id)) return -1;
    if (id >= m->n_ids || m->tok[id].type == BPE_TOKEN_UNUSED)
        return bad(l, "%s: the template starts with id %u, which no token has", where, id);
    m->template_bos = (int)id;
    return 0;
}

static int read_post_processor(Ld *l, const cJSON *v, const char *where, int depth) {
    const char *type = NULL;
    if (is_null(v)) return 0;
    if (type_of(l, v, where, &type)) return -1;
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    if (!strcmp(type, "TemplateProcessing")) return read_template(l, v, where);
    if (!strcmp(type, "Sequence") && depth < MAX_DEPTH) {
        const cJSON *list = get(v, "processors"), *it;
        if (!cJSON_IsArray(list)) return bad(l, "%s.processors must be an array", where);
        int i = 0;
        cJSON_ArrayForEach(it, list) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.processors[%d]", where, i++);
            if (read_post_processor(l, it, sub, depth + 1)) return -1;
        }
        return 0;
    }
    return bad(l,
               "%s.type is \"%s\": not supported (TemplateProcessing, ByteLevel or a Sequence "
               "of them)",
               where, type);
}

/* ------------------------------------------------------------- token table */

/* The bytes HF's ByteLevel decoder makes of a token: each character mapped
 * back to its byte when all of them are in the byte-level alphabet, else
 * the token's own UTF-8. Sets *byte_level accordingly. */
static int token_bytes(Ld *l, const char *s, size_t n, uint32_t *off, uint32_t *len,
                       int *byte_level) {
    char small[256], *buf = n <= sizeof small ? small : malloc(n);
    if (!buf) return bad(l, "out of memory");
    size_t k = 0;
    utf8proc_ssize_t i = 0;
    *byte_level = 1;
    while (i < (utf8proc_ssize_t)n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t w =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)n - i, &cp);
        int b = w > 0 ? bpe_char_byte((uint32_t)cp) : -1;
        if (b < 0) {
            *byte_level = 0;
            break;
        }
        buf[k++] = (char)b;
        i += w;
    }
    int rc = *byte_level ? arena_add(l, buf, k, off) : 0;
    *len = *byte_level ? (uint32_t)k : (uint32_t)n;
    if (buf != small) free(buf);
    return rc;
}

static int build_tokens(Ld *l) {
    BpeModel *m = l->m;
    uint32_t max_id = 0;
    for (uint32_t i = 0; i < l->n_vocab; i++)
        if (l->vocab_id[i] > max_id) max_id = l->vocab_id[i];
    for (uint32_t i = 0; i < m->n_added; i++)
        if (m->added[i].id > max_id) max_id = m->added[i].id;
    if (l->n_vocab == 0 && m->n_added == 0) return bad(l, "model.vocab is empty");
    m->n_ids = max_id + 1;
    m->tok = calloc(m->n_ids, sizeof *m->tok);
    if (!m->tok) return bad(l, "out of memory for %u token ids", m->n_ids);
    for (int b = 0; b < 256; b++)
        m->byte_id[b] = -1;
    for (uint32_t i = 0; i < l->n_vocab; i++) {
        uint32_t id = l->vocab_id[i];
        BpeToken *t = &m->tok[id];
        if (t->in_vocab)
            return bad(l, "model.vocab: id %u is given to both \"%.40s\" and \"%.40s\"", id,
                       m->arena + t->spell_off, l->vocab_key[i]);
        size_t n = strlen(l->vocab_key[i]);
        int byte_level;
        if (arena_add(l, l->vocab_key[i], n, &t->spell_off)) return -1;
        t->spell_len = (uint32_t)n;
        if (token_bytes(l, l->vocab_key[i], n, &t->raw_off, &t->raw_len, &byte_level)) return -1;
        if (!byte_level) t->raw_off = t->spell_off;
        t->type = BPE_TOKEN_NORMAL;
        t->in_vocab = 1;
        if (byte_level) {
            const char *raw = m->arena + t->raw_off;
            if (bpe_map_put(&m->raw, raw, t->raw_len, bpe_hash(raw, t->raw_len), id) < 0)
                return bad(l, "out of memory");
            if (t->raw_len == 1) m->byte_id[(uint8_t)raw[0]] = (int32_t)id;
        }
    }
    for (uint32_t i = 0; i < m->n_added; i++) {
        const BpeAdded *a = &m->added[i];
        BpeToken *t = &m->tok[a->id];
        const char *s = m->arena + a->content_off;
        if (t->in_vocab &&
            (t->spell_len != a->content_len || memcmp(m->arena + t->spell_off, s, a->content_len)))
            return bad(l,
                       "added_tokens[%u]: id %u is \"%.40s\" but model.vocab gives it to \"%.40s\"",
                       i, a->id, s, m->arena + t->spell_off);
        int byte_level;
        t->spell_off = a->content_off;
        t->spell_len = a->content_len;
        if (token_bytes(l, s, a->content_len, &t->raw_off, &t->raw_len, &byte_level)) return -1;
        if (!byte_level) t->raw_off = t->spell_off;
        t->type = a->special ? BPE_TOKEN_SPECIAL : BPE_TOKEN_ADDED;
    }
    return 0;
}

/* ----------------------------------------------------------------- loading */

int bpe_parse(BpeModel **out, const char *json, size_t n, const char *name, char *err,
              size_t errlen) {
    *out = NULL;
    BpeModel *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, errlen, "%s: out of memory", name);
    pthread_mutex_init(&m->pool_mu, NULL);
    m->template_bos = -1;
    m->unk_id = -1;
    m->jit = 1;
    Ld l = {m, name, err, errlen, NULL, NULL, 0};
    int rc = -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, n, &end, 0);
    m->path = strdup(name);
    if (!m->path)
        bad(&l, "out of memory");
    else if (!root)
        bad(&l, "byte offset %zu: not valid JSON%s",
            end && end >= json && end <= json + n ? (size_t)(end - json) : n,
            end && end >= json + n ? " (truncated?)" : "");
    else if (!cJSON_IsObject(root))
        bad(&l, "not a JSON object");
    else {
        const cJSON *ver = get(root, "version");
        if (!is_null(ver) && !(cJSON_IsString(ver) && !strcmp(ver->valuestring, "1.0")))
            bad(&l, "version: only \"1.0\" is known");
        else if (!read_model(&l, get(root, "model")) &&
                 !read_added(&l, get(root, "added_tokens")) && !build_tokens(&l) &&
                 !read_normalizer(&l, get(root, "normalizer"), "normalizer", 0) &&
                 !normalize_added(&l) && !read_pre_tokenizer(&l, get(root, "pre_tokenizer")) &&
                 !read_decoder(&l, get(root, "decoder")) &&
                 !read_post_processor(&l, get(root, "post_processor"), "post_processor", 0)) {
            if (bpe_trie_build(&m->trie_raw, m, 0) || bpe_trie_build(&m->trie_norm, m, 1))
                bad(&l, "out of memory");
            else
                rc = 0;
        }
    }
    cJSON_Delete(root);
    free(l.vocab_id);
    free(l.vocab_key);
    if (rc) {
        bpe_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int bpe_load(BpeModel **out, const char *json_path, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = fopen(json_path, "rb");
    if (!f) return err_set(err, errlen, "%s: cannot open: %s", json_path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || (uint64_t)st.st_size > MAX_FILE_BYTES) {
        fclose(f);
        return err_set(err, errlen, "%s: unreadable or larger than %llu bytes", json_path,
                       (unsigned long long)MAX_FILE_BYTES);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    size_t got = buf ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (!buf || got != n) {
        free(buf);
        return err_set(err, errlen, "%s: %s", json_path, buf ? "short read" : "out of memory");
    }
    buf[n] = 0;
    int rc = bpe_parse(out, buf, n, json_path, err, errlen);
    free(buf);
    return rc;
}

void bpe_free(BpeModel *m) {
    if (!m) return;
    bpe_pool_free(m);
    pthread_mutex_destroy(&m->pool_mu);
    for (int i = 0; i < m->n_splits; i++) {
        pcre2_code_free(m->split[i]);
        free(m->split_pattern[i]);
    }
    pcre2_code_free(m->byte_regex);
    bpe_trie_free(&m->trie_raw);
    bpe_trie_free(&m->trie_norm);
    bpe_map_free(&m->spell);
    bpe_map_free(&m->raw);
    bpe_map_free(&m->added_map);
    bpe_pairs_free(&m->pairs);
    free(m->merge_l);
    free(m->merge_r);
    free(m->added);
    free(m->tok);
    free(m->arena);
    free(m->path);
    free(m);
}

/* ------------------------------------------------------------------ regexes */

/* Unicode White_Space, which is what \s means to Oniguruma (HF tokenizers'
 * regex engine); PCRE2 10.42's \s also matches U+180E. */
#define WHITE_SPACE                                                                                \
    "\\t-\\r "                                                                                     \
    "\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

pcre2_code *bpe_regex_compile(const char *pattern, int *jit_ok, char *err, size_t errlen) {
    size_t n = strlen(pattern), k = 0;
    char *p = malloc(n * (sizeof WHITE_SPACE + 3) + 1);
    if (!p) {
        err_set(err, errlen, "out of memory");
        return NULL;
    }
    /* \s -> [WHITE_SPACE], \S -> [^WHITE_SPACE]; inside a class \s -> WHITE_SPACE
     * (a \S inside a class stays PCRE2's). */
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = pattern[i];
        if (c == '\\' && i + 1 < n) {
            char e = pattern[++i];
            if (e == 's' || (e == 'S' && !in_class)) {
                if (!in_class) p[k++] = '[';
                if (e == 'S') p[k++] = '^';
                memcpy(p + k, WHITE_SPACE, sizeof WHITE_SPACE - 1);
                k += sizeof WHITE_SPACE - 1;
                if (!in_class) p[k++] = ']';
            } else {
                p[k++] = '\\';
                p[k++] = e;
            }
            continue;
        }
        p[k++] = c;
        if (c == '[' && !in_class) {
            in_class = 1;
            if (i + 1 < n && pattern[i + 1] == '^') p[k++] = pattern[++i];
            if (i + 1 < n && pattern[i + 1] == ']') p[k++] = pattern[++i];
        } else if (c == ']' && in_class) {
            in_class = 0;
        }
    }
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, k, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    free(p);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        err_set(err, errlen, "the regex does not compile in PCRE2: %s", (const char *)msg);
        return NULL;
    }
    *jit_ok = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

/* ---------------------------------------------------------------- the trie */

typedef struct {
    const char *s;
    uint32_t n;
    int32_t added;
} Pat;

static int pat_cmp(const void *a, const void *b) {
    const Pat *x = a, *y = b;
    uint32_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (!c) c = (x->n > y->n) - (x->n < y->n);
    return c ? c : (x->added > y->added) - (x->added < y->added); /* equal: listed order */
}

/* Node `node` covers pats[lo..hi), which share their first `depth` bytes
 * and are sorted: a pattern of length depth ends here; the rest group by
 * their next byte into children, whose edges are made contiguous. */
static int trie_fill(BpeTrie *t, const Pat *pats, size_t lo, size_t hi, uint32_t depth,
                     uint32_t node) {
    if (lo < hi && pats[lo].n == depth) t->node[node].added = pats[lo++].added;
    /* duplicate patterns (two tokens normalizing alike): the first listed wins */
    while (lo < hi && pats[lo].n == depth)
        lo++;
    uint32_t first = t->n_edges, n = 0;
    for (size_t i = lo; i < hi;) {
        size_t j = i;
        while (j < hi && pats[j].s[depth] == pats[i].s[depth])
            j++;
        t->edge[t->n_edges++] = (BpeTrieEdge){t->n_nodes++, (uint8_t)pats[i].s[depth]};
        n++;
        i = j;
    }
    t->node[node].first = first;
    t->node[node].n = n;
    size_t i = lo;
    for (uint32_t e = 0; e < n; e++) {
        size_t j = i;
        while (j < hi && pats[j].s[depth] == pats[i].s[depth])
            j++;
        uint32_t child = t->edge[first + e].child;
        t->node[child] = (BpeTrieNode){0, 0, -1};
        if (trie_fill(t, pats, i, j, depth + 1, child)) return -1;
        i = j;
    }
    return 0;
}

int bpe_trie_build(BpeTrie *t, const BpeModel *m, int want_normalized) {
    memset(t, 0, sizeof *t);
    size_t n = 0, total = 1;
    Pat *pats = malloc((m->n_added + 1) * sizeof *pats);
    if (!pats) return -1;
    for (uint32_t i = 0; i < m->n_added; i++) {
        const BpeAdded *a = &m->added[i];
        if (a->normalized != want_normalized || a->pattern_len == 0) continue;
        pats[n++] = (Pat){m->arena + a->pattern_off, a->pattern_len, (int32_t)i};
        total += a->pattern_len;
        t->first[(uint8_t)pats[n - 1].s[0] >> 3] |=
            (uint8_t)(1u << ((uint8_t)pats[n - 1].s[0] & 7));
    }
    qsort(pats, n, sizeof *pats, pat_cmp);
    t->node = malloc(total * sizeof *t->node);
    t->edge = malloc(total * sizeof *t->edge);
    int rc = -1;
    if (t->node && t->edge) {
        t->n_nodes = 1;
        t->node[0] = (BpeTrieNode){0, 0, -1};
        rc = trie_fill(t, pats, 0, n, 0, 0);
    }
    free(pats);
    return rc;
}

void bpe_trie_free(BpeTrie *t) {
    free(t->node);
    free(t->edge);
    memset(t, 0, sizeof *t);
}
