/* tokenizer/bpe_impl.h: the inside of a BpeModel, shared by the two files
 * that implement tokenizer/bpe.h: bpe_json.c reads and checks tokenizer.json
 * into this struct, bpe.c encodes and decodes with it (and holds the hash
 * maps both use). Nothing else includes this header.
 *
 * Invariants of a loaded model: every id in tok[], the maps, the merges and
 * the added tokens is < n_ids; every spelling is valid UTF-8; the struct is
 * never written after bpe_parse returns, except the pool of per-thread
 * encoding states behind pool_mu. */
#ifndef DAPT_TOKENIZER_BPE_IMPL_H
#define DAPT_TOKENIZER_BPE_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/bpe.h"

#define BPE_MAX_IDS       (1u << 24) /* ids at or above are refused */
#define BPE_MAX_SPLITS    8          /* Split pre-tokenizers in a Sequence */
#define BPE_MAX_ADDED_LEN 1024       /* bytes of an added token's content */
#define BPE_GPT2_PATTERN                                                                           \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/* ---------------------------------------------------------------- hash maps */

uint64_t bpe_hash(const void *p, size_t n);

/* Byte string -> 64-bit value, with its own copy of the keys: open
 * addressing, linear probing, at most half full. */
typedef struct {
    uint64_t hash, value;
    uint32_t off, len; /* the key: keys[off .. off + len) */
} BpeMapEntry;

typedef struct {
    uint64_t *slot; /* (mask + 1) hash >> 32 << 32 | entry index + 1; 0: empty */
    uint32_t mask;
    BpeMapEntry *ent;
    uint32_t n, ent_cap;
    char *keys;
    size_t keys_len, keys_cap;
} BpeMap;

/* 0: inserted; 1: the key was there (its value unchanged); -1: out of memory. */
int bpe_map_put(BpeMap *m, const char *key, size_t n, uint64_t hash, uint64_t value);
/* The value of key (hash = bpe_hash(key, n)), or NULL. */
const uint64_t *bpe_map_get(const BpeMap *m, const char *key, size_t n, uint64_t hash);
void bpe_map_clear(BpeMap *m);
void bpe_map_free(BpeMap *m);

/* (left id, right id) -> (rank << 32 | merged id); an empty key is ~0. */
typedef struct {
    uint64_t *key, *val; /* (mask + 1) */
    uint32_t mask, n;
} BpePairMap;

/* Inserts or overwrites (a later merge of the same pair wins, as in HF's
 * HashMap). -1: out of memory. */
int bpe_pairs_put(BpePairMap *p, uint32_t left, uint32_t right, uint64_t val);
void bpe_pairs_free(BpePairMap *p);

static inline uint64_t bpe_pair_key(uint32_t left, uint32_t right) {
    return (uint64_t)left << 32 | right;
}
static inline uint64_t bpe_pair_slot(uint64_t key) {
    key ^= key >> 29;
    key *= 0xbf58476d1ce4e5b9ULL;
    return key ^ (key >> 32);
}
/* The value of the pair, or ~0 when no merge joins it. */
static inline uint64_t bpe_pairs_get(const BpePairMap *p, uint32_t left, uint32_t right) {
    if (!p->key) return ~0ull;
    uint64_t k = bpe_pair_key(left, right);
    for (uint64_t i = bpe_pair_slot(k) & p->mask;; i = (i + 1) & p->mask) {
        if (p->key[i] == k) return p->val[i];
        if (p->key[i] == ~0ull) return ~0ull;
    }
}

/* ------------------------------------------------------------ added tokens */

typedef struct {
    uint32_t id;
    uint32_t content_off, content_len; /* in arena: the token as written */
    uint32_t pattern_off, pattern_len; /* what is matched: content, or NFC(content) */
    uint8_t special, normalized, single_word, lstrip, rstrip;
} BpeAdded;

/* A byte trie over added-token patterns: node 0 is the root; a node's
 * edges are edge[first .. first + n), sorted by byte. */
typedef struct {
    uint32_t first, n;
    int32_t added; /* index into BpeModel.added of the pattern ending here, -1 */
} BpeTrieNode;
typedef struct {
    uint32_t child;
    uint8_t byte;
} BpeTrieEdge;
typedef struct {
    BpeTrieNode *node;
    BpeTrieEdge *edge;
    uint32_t n_nodes, n_edges;
    uint8_t first[32]; /* bit b: some pattern starts with byte b */
} BpeTrie;

/* ------------------------------------------------------------------ tokens */

typedef struct {
    uint32_t spell_off, spell_len; /* in arena, NUL-terminated: as tokenizer.json spells it */
    uint32_t raw_off, raw_len;     /* in arena: the bytes it decodes to */
    uint8_t type;                  /* BPE_TOKEN_*; BPE_TOKEN_UNUSED: no token has this id */
    uint8_t in_vocab;              /* in model.vocab (an added token may be too) */
} BpeToken;

typedef struct BpeState BpeState; /* per-thread scratch of bpe.c */

struct BpeModel {
    char *path; /* for messages */
    uint32_t n_ids;
    BpeToken *tok; /* (n_ids) */
    char *arena;
    size_t arena_len, arena_cap;

    /* model */
    uint32_t vocab_count; /* entries of model.vocab (HF's get_vocab_size) */
    BpeMap spell;         /* model.vocab spelling -> id */
    BpeMap raw;           /* model.vocab tokens of byte-level spelling: bytes -> id */
    int32_t byte_id[256]; /* the token of each single byte, -1: none */
    int32_t unk_id;       /* -1: no unk_token */
    int fuse_unk, ignore_merges;
    BpePairMap pairs;
    uint32_t *merge_l, *merge_r; /* (n_merges) as listed, for bpe_merge */
    size_t n_merges;

    /* added tokens */
    BpeAdded *added;
    uint32_t n_added;
    BpeMap added_map;            /* content -> index into added */
    BpeTrie trie_raw, trie_norm; /* normalized false / true */

    /* normalizer, pre-tokenizer, post-processor */
    int nfc;
    pcre2_code *split[BPE_MAX_SPLITS];
    char *split_pattern[BPE_MAX_SPLITS]; /* as tokenizer.json writes it */
    int n_splits;
    int prefix_space;       /* ByteLevel add_prefix_space */
    pcre2_code *byte_regex; /* ByteLevel use_regex: the GPT-2 pattern; NULL: none */
    int jit;                /* every pattern was JIT-compiled */
    int template_bos;

    pthread_mutex_t pool_mu;
    BpeState *pool; /* idle encoding states */
};

/* The byte-level alphabet (GPT-2's bytes_to_unicode): the code point that
 * stands for byte b, and the byte a code point stands for (-1: none). */
static inline uint32_t bpe_byte_char(uint8_t b) {
    if (b <= 0x20) return 0x100u + b;
    if (b >= 0x7f && b <= 0xa0) return 0x121u + (b - 0x7fu);
    if (b == 0xad) return 0x143;
    return b;
}
static inline int bpe_char_byte(uint32_t cp) {
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121 + 0x7f);
    if (cp == 0x143) return 0xad;
    if (cp > 0xff || cp <= 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) return -1;
    return (int)cp;
}

/* Compiles a Split (or ByteLevel) pattern for PCRE2 (UTF, UCP, JIT when
 * available), after spelling \s and \S as Unicode White_Space the way the
 * Oniguruma engine of HF tokenizers reads them. */
pcre2_code *bpe_regex_compile(const char *pattern, int *jit_ok, char *err, size_t errlen);

/* Builds a trie over the patterns of the added tokens with normalized ==
 * want_normalized. -1: out of memory. */
int bpe_trie_build(BpeTrie *t, const BpeModel *m, int want_normalized);
void bpe_trie_free(BpeTrie *t);

/* NFC of s[0..n) into a malloc'd *out (*out_n bytes); -1 with a message. */
int bpe_nfc(const char *s, size_t n, char **out, size_t *out_n, char *err, size_t errlen);

void bpe_pool_free(BpeModel *m);

#endif
