/* tokenizer/bpe.c: encoding and decoding with a byte-level BPE model read
 * from a Hugging Face tokenizer.json (tokenizer/bpe.h; bpe_json.c reads the
 * file). Encoding follows HF tokenizers step by step:
 *
 *   text -> added tokens with normalized false, matched in the raw text
 *        -> each piece between them: the normalizer (NFC)
 *        -> added tokens with normalized true, in the normalized piece
 *        -> each Split regex in turn, then ByteLevel (prefix space, the
 *           GPT-2 regex when use_regex): the pre-tokens
 *        -> BPE on each pre-token's bytes: the adjacent pair of lowest merge
 *           rank merges first (leftmost on ties), with a binary heap of
 *           candidate pairs over a linked list of symbols
 *
 * A pre-token's ids are cached. The cache, the PCRE2 match data and the
 * scratch buffers make an encoding state; each call takes one from the
 * model's pool (a mutex held for a pointer swap) and gives it back, so one
 * model encodes on many threads at once. Also here: the hash maps that
 * bpe_json.c builds and the accessors of bpe.h. */
#define _GNU_SOURCE
#include "tokenizer/bpe.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "kernels/util.h"
#include "tokenizer/bpe_impl.h"
#include "tokenizer/corpus.h"

#define CACHE_KEY_MAX   64         /* longer pre-tokens are not cached */
#define CACHE_ENTRIES   (1u << 15) /* the cache is emptied when it holds this many... */
#define CACHE_IDS       (1u << 18) /* ...pre-tokens or ids */
#define JIT_STACK_BYTES (1u << 20)

/* ---------------------------------------------------------------- hash maps */

uint64_t bpe_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull), w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
    }
    if (n) {
        w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x94d049bb133111ebull;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    return h ^ (h >> 32);
}

/* A slot: the high half of the key's hash, and its entry's index + 1. */
static uint64_t map_slot(uint64_t hash, uint32_t e) {
    return (hash & ~0xffffffffull) | (e + 1u);
}

static int map_rehash(BpeMap *m, uint32_t n_slots) {
    uint64_t *slot = calloc(n_slots, sizeof *slot);
    if (!slot) return -1;
    for (uint32_t e = 0; e < m->n; e++) {
        uint32_t i = (uint32_t)m->ent[e].hash & (n_slots - 1);
        while (slot[i])
            i = (i + 1) & (n_slots - 1);
        slot[i] = map_slot(m->ent[e].hash, e);
    }
    free(m->slot);
    m->slot = slot;
    m->mask = n_slots - 1;
    return 0;
}

int bpe_map_put(BpeMap *m, const char *key, size_t n, uint64_t hash, uint64_t value) {
    if (!m->slot || 2 * ((uint64_t)m->n + 1) > (uint64_t)m->mask + 1) {
        uint64_t want = m->slot ? 2 * ((uint64_t)m->mask + 1) : 64;
        if (want > (1ull << 31) || map_rehash(m, (uint32_t)want)) return -1;
    }
    uint32_t i = (uint32_t)hash & m->mask;
    for (; m->slot[i]; i = (i + 1) & m->mask) {
        if ((m->slot[i] ^ hash) >> 32) continue;
        const BpeMapEntry *e = &m->ent[(uint32_t)m->slot[i] - 1];
        if (e->hash == hash && e->len == n && !memcmp(m->keys + e->off, key, n)) return 1;
    }
    if (m->n == m->ent_cap) {
        uint32_t cap = m->ent_cap ? 2 * m->ent_cap : 64;
        BpeMapEntry *ent = realloc(m->ent, cap * sizeof *ent);
        if (!ent) return -1;
        m->ent = ent;
        m->ent_cap = cap;
    }
    if (m->keys_len + n > UINT32_MAX) return -1;
    if (m->keys_len + n > m->keys_cap) {
        size_t cap = 2 * (m->keys_len + n) + 256;
        char *k = realloc(m->keys, cap);
        if (!k) return -1;
        m->keys = k;
        m->keys_cap = cap;
    }
    memcpy(m->keys + m->keys_len, key, n);
    m->ent[m->n] = (BpeMapEntry){hash, value, (uint32_t)m->keys_len, (uint32_t)n};
    m->keys_len += n;
    m->slot[i] = map_slot(hash, m->n++);
    return 0;
}

const uint64_t *bpe_map_get(const BpeMap *m, const char *key, size_t n, uint64_t hash) {
    if (!m->slot) return NULL;
    for (uint32_t i = (uint32_t)hash & m->mask;; i = (i + 1) & m->mask) {
        uint64_t s = m->slot[i];
        if (!s) return NULL;
        if ((s ^ hash) >> 32) continue; /* another key: no need to look at its entry */
        const BpeMapEntry *e = &m->ent[(uint32_t)s - 1];
        if (e->hash == hash && e->len == n && !memcmp(m->keys + e->off, key, n)) return &e->value;
    }
}

void bpe_map_clear(BpeMap *m) {
    if (m->slot) memset(m->slot, 0, ((size_t)m->mask + 1) * sizeof *m->slot);
    m->n = 0;
    m->keys_len = 0;
}

void bpe_map_free(BpeMap *m) {
    free(m->slot);
    free(m->ent);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

int bpe_pairs_put(BpePairMap *p, uint32_t left, uint32_t right, uint64_t val) {
    if (!p->key || 2 * ((uint64_t)p->n + 1) > (uint64_t)p->mask + 1) {
        uint64_t n = p->key ? 2 * ((uint64_t)p->mask + 1) : 1024;
        uint64_t *key = n <= (1ull << 31) ? malloc(n * sizeof *key) : NULL;
        uint64_t *v = key ? malloc(n * sizeof *v) : NULL;
        if (!v) {
            free(key);
            return -1;
        }
        memset(key, 0xff, n * sizeof *key);
        for (uint64_t i = 0; p->key && i <= p->mask; i++) {
            if (p->key[i] == ~0ull) continue;
            uint64_t j = bpe_pair_slot(p->key[i]) & (n - 1);
            while (key[j] != ~0ull)
                j = (j + 1) & (n - 1);
            key[j] = p->key[i];
            v[j] = p->val[i];
        }
        free(p->key);
        free(p->val);
        p->key = key;
        p->val = v;
        p->mask = (uint32_t)(n - 1);
    }
    uint64_t k = bpe_pair_key(left, right), i = bpe_pair_slot(k) & p->mask;
    while (p->key[i] != ~0ull && p->key[i] != k)
        i = (i + 1) & p->mask;
    if (p->key[i] == ~0ull) p->n++;
    p->key[i] = k;
    p->val[i] = val;
    return 0;
}

void bpe_pairs_free(BpePairMap *p) {
    free(p->key);
    free(p->val);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------- encoding states */

typedef struct {
    uint32_t id;
    int32_t prev, next; /* -1: none */
    uint8_t alive, unk;
} Sym;

typedef struct {
    uint64_t key; /* rank << 32 | position of the left symbol: the heap's order */
    uint32_t new_id;
} Cand;

/* Puts x at slot i of the min-heap heap[0..n) and moves it down to its place. */
static inline void sift_down(Cand *heap, size_t n, size_t i, Cand x) {
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap[c + 1].key < heap[c].key) c++;
        if (heap[c].key >= x.key) break;
        heap[i] = heap[c];
        i = c;
    }
    heap[i] = x;
}

struct BpeState {
    BpeState *next;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    BpeMap cache;        /* pre-token -> (offset << 32 | count) in cache_ids */
    uint32_t *cache_ids; /* (CACHE_IDS) */
    size_t cache_n;
    Sym *sym;
    Cand *heap;
    size_t sym_cap; /* of sym (and 2 * sym_cap of heap) */
    char *buf;      /* a pre-token with its prefix space */
    size_t buf_cap;
};

static void state_free(BpeState *st) {
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mctx);
    pcre2_jit_stack_free(st->jit_stack);
    bpe_map_free(&st->cache);
    free(st->cache_ids);
    free(st->sym);
    free(st->heap);
    free(st->buf);
    free(st);
}

static BpeState *state_get(const BpeModel *cm) {
    BpeModel *m = (BpeModel *)cm; /* the pool is the one mutable part of a model */
    pthread_mutex_lock(&m->pool_mu);
    BpeState *st = m->pool;
    if (st) m->pool = st->next;
    pthread_mutex_unlock(&m->pool_mu);
    if (st) return st;
    st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->md = pcre2_match_data_create(1, NULL);
    st->mctx = pcre2_match_context_create(NULL);
    st->jit_stack = m->jit ? pcre2_jit_stack_create(32 << 10, JIT_STACK_BYTES, NULL) : NULL;
    st->cache_ids = malloc(CACHE_IDS * sizeof *st->cache_ids);
    if (!st->md || !st->mctx || (m->jit && !st->jit_stack) || !st->cache_ids) {
        state_free(st);
        return NULL;
    }
    if (m->jit) pcre2_jit_stack_assign(st->mctx, NULL, st->jit_stack);
    return st;
}

static void state_put(const BpeModel *cm, BpeState *st) {
    BpeModel *m = (BpeModel *)cm;
    pthread_mutex_lock(&m->pool_mu);
    st->next = m->pool;
    m->pool = st;
    pthread_mutex_unlock(&m->pool_mu);
}

void bpe_pool_free(BpeModel *m) {
    while (m->pool) {
        BpeState *st = m->pool;
        m->pool = st->next;
        state_free(st);
    }
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    const BpeModel *m;
    BpeState *st;
    uint32_t *ids;
    size_t n, cap;
    char *err;
    size_t errlen;
} Enc;

static int reserve(Enc *e, size_t more) {
    if (e->n + more <= e->cap) return 0;
    size_t cap = e->cap ? e->cap : 64;
    while (cap < e->n + more)
        cap *= 2;
    uint32_t *p = realloc(e->ids, cap * sizeof *p);
    if (!p) return err_set(e->err, e->errlen, "out of memory for %zu token ids", cap);
    e->ids = p;
    e->cap = cap;
    return 0;
}

static int push(Enc *e, uint32_t id) {
    if (e->n == e->cap && reserve(e, 1)) return -1;
    e->ids[e->n++] = id;
    return 0;
}

/* Code points: the one at s (n > 0 bytes left) and the one ending at s + at. */
static uint32_t cp_at(const char *s, size_t n, size_t *width) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t w = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    *width = w > 0 ? (size_t)w : 1;
    return (uint32_t)cp;
}
static uint32_t cp_before(const char *s, size_t at, size_t *width) {
    size_t i = at - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
        i--;
    return cp_at(s + i, at - i, width);
}

/* Unicode White_Space and the \w of Rust's regex crate (Alphabetic, marks,
 * decimal digits, connector punctuation, joiners): what HF tokenizers uses
 * for lstrip/rstrip and single_word. */
static int is_white(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}
static int is_word(uint32_t c) {
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default: /* joiners, and the So letters that are Other_Alphabetic */
        return c == 0x200c || c == 0x200d || (c >= 0x24b6 && c <= 0x24e9) ||
               (c >= 0x1f130 && c <= 0x1f149) || (c >= 0x1f150 && c <= 0x1f169) ||
               (c >= 0x1f170 && c <= 0x1f189);
    }
}

/* The longest added-token pattern starting at s: its index, or -1. */
static int32_t trie_longest(const BpeTrie *t, const char *s, size_t n, size_t *len) {
    uint32_t node = 0;
    int32_t best = -1;
    for (size_t j = 0; j < n; j++) {
        const BpeTrieNode *nd = &t->node[node];
        const BpeTrieEdge *e = t->edge + nd->first;
        uint32_t lo = 0, hi = nd->n;
        unsigned char b = (unsigned char)s[j];
        while (lo < hi) { /* edges are sorted by byte */
            uint32_t mid = (lo + hi) / 2;
            if (e[mid].byte < b)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == nd->n || e[lo].byte != b) break;
        node = e[lo].child;
        if (t->node[node].added >= 0) {
            best = t->node[node].added;
            *len = j + 1;
        }
    }
    return best;
}

/* Turns one pre-token's bytes into symbols (unk: a byte without a token),
 * merges them and appends the ids. */
static int merge_word(Enc *e, const char *s, size_t n) {
    const BpeModel *m = e->m;
    BpeState *st = e->st;
    if (n > st->sym_cap) {
        size_t cap = n + 64;
        Sym *sym = realloc(st->sym, cap * sizeof *sym);
        if (sym) st->sym = sym;
        Cand *heap = realloc(st->heap, 2 * cap * sizeof *heap);
        if (heap) st->heap = heap;
        if (!sym || !heap) return err_set(e->err, e->errlen, "out of memory");
        st->sym_cap = cap;
    }
    Sym *sym = st->sym;
    Cand *heap = st->heap;
    int32_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = m->byte_id[(unsigned char)s[i]];
        int unk = id < 0;
        if (unk) {
            if (m->unk_id < 0)
                return err_set(e->err, e->errlen,
                               "%s: byte 0x%02x has no token in model.vocab and there is no "
                               "unk_token (Hugging Face tokenizers would drop it silently)",
                               m->path, (unsigned char)s[i]);
            if (m->fuse_unk && k > 0 && sym[k - 1].unk) continue;
            id = m->unk_id;
        }
        sym[k] = (Sym){(uint32_t)id, k - 1, k + 1, 1, (uint8_t)unk};
        k++;
    }
    sym[k - 1].next = -1;
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < k; i++) {
        uint64_t v = bpe_pairs_get(&m->pairs, sym[i].id, sym[i + 1].id);
        if (v != ~0ull) heap[hn++] = (Cand){(v & ~0xffffffffull) | (uint32_t)i, (uint32_t)v};
    }
    /* heapify (a min-heap on key) */
    for (size_t r = hn / 2; r-- > 0;) sift_down(heap, hn, r, heap[r]);
    while (hn) {
        Cand top = heap[0], x = heap[--hn];
        if (hn) sift_down(heap, hn, 0, x); /* the last one, down from the root */
        int32_t pos = (int32_t)(uint32_t)top.key;
        Sym *a = &sym[pos];
        if (!a->alive || a->next < 0) continue;
        Sym *b = &sym[a->next];
        uint64_t v = bpe_pairs_get(&m->pairs, a->id, b->id);
        if (v == ~0ull || (uint32_t)v != top.new_id) continue; /* a stale candidate */
        a->id = top.new_id;
        b->alive = 0;
        a->next = b->next;
        if (a->next >= 0) sym[a->next].prev = pos;
        /* the new pairs with both neighbours: a merge pops one candidate and
         * pushes at most two, and there are fewer than n merges, so the heap
         * never outgrows its 2n slots */
        int32_t lefts[2] = {a->prev, pos};
        for (int j = 0; j < 2; j++) {
            int32_t l = lefts[j];
            if (l < 0 || sym[l].next < 0) continue;
            v = bpe_pairs_get(&m->pairs, sym[l].id, sym[sym[l].next].id);
            if (v == ~0ull) continue;
            Cand c = {(v & ~0xffffffffull) | (uint32_t)l, (uint32_t)v};
            size_t h = hn++;
            while (h > 0 && heap[(h - 1) / 2].key > c.key) {
                heap[h] = heap[(h - 1) / 2];
                h = (h - 1) / 2;
            }
            heap[h] = c;
        }
    }
    if (reserve(e, (size_t)k)) return -1;
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        e->ids[e->n++] = sym[i].id;
    return 0;
}

/* One pre-token: from the cache, whole (ignore_merges) or merged. */
static int bpe_word(Enc *e, const char *s, size_t n) {
    const BpeModel *m = e->m;
    BpeState *st = e->st;
    if (n == 1 && m->byte_id[(unsigned char)s[0]] >= 0)
        return push(e, (uint32_t)m->byte_id[(unsigned char)s[0]]);
    uint64_t h = bpe_hash(s, n);
    /* ignore_merges first (HF looks in its cache first, which never holds a
     * token of the vocabulary: the same ids) */
    const uint64_t *v = m->ignore_merges ? bpe_map_get(&m->raw, s, n, h) : NULL;
    if (v) return push(e, (uint32_t)*v);
    if (n <= CACHE_KEY_MAX && (v = bpe_map_get(&st->cache, s, n, h))) {
        uint32_t k = (uint32_t)*v;
        if (reserve(e, k)) return -1;
        memcpy(e->ids + e->n, st->cache_ids + (*v >> 32), k * sizeof *e->ids);
        e->n += k;
        return 0;
    }
    size_t start = e->n;
    if (merge_word(e, s, n)) return -1;
    size_t k = e->n - start;
    if (n > CACHE_KEY_MAX || k > CACHE_IDS) return 0;
    if (st->cache.n >= CACHE_ENTRIES || st->cache_n + k > CACHE_IDS) {
        bpe_map_clear(&st->cache);
        st->cache_n = 0;
    }
    if (bpe_map_put(&st->cache, s, n, h, (uint64_t)st->cache_n << 32 | k) == 0) {
        memcpy(st->cache_ids + st->cache_n, e->ids + start, k * sizeof *e->ids);
        st->cache_n += k;
    }
    return 0;
}

static int run_stage(Enc *e, int stage, const char *s, size_t n);

/* The pieces of s[0..n) for a regex with Isolated behaviour: each match and
 * each stretch between matches, in order, go to the next stage. */
static int regex_pieces(Enc *e, const pcre2_code *re, int next, const char *s, size_t n) {
    BpeState *st = e->st;
    size_t pos = 0, prev = 0;
    while (pos < n) {
        int r = e->m->jit
                    ? pcre2_jit_match(re, (PCRE2_SPTR)s, n, pos, 0, st->md, st->mctx)
                    : pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, st->md, st->mctx);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof msg);
            return err_set(e->err, e->errlen, "%s: the pre-tokenizer regex failed on %zu bytes: %s",
                           e->m->path, n, (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        size_t a = ov[0], b = ov[1];
        if (a > prev && run_stage(e, next, s + prev, a - prev)) return -1;
        if (b > a && run_stage(e, next, s + a, b - a)) return -1;
        prev = b;
        pos = b;
        if (b == a) /* an empty match: go on after the next character */
            for (pos++; pos < n && ((unsigned char)s[pos] & 0xc0) == 0x80;)
                pos++;
    }
    return prev < n ? run_stage(e, next, s + prev, n - prev) : 0;
}

/* Stages 0 .. n_splits - 1: the Split regexes; n_splits: ByteLevel; then
 * BPE on the pre-token. */
static int run_stage(Enc *e, int stage, const char *s, size_t n) {
    const BpeModel *m = e->m;
    if (n == 0) return 0;
    if (stage < m->n_splits) return regex_pieces(e, m->split[stage], stage + 1, s, n);
    if (stage > m->n_splits) return bpe_word(e, s, n);
    if (m->prefix_space && s[0] != ' ') {
        BpeState *st = e->st;
        if (n + 1 > st->buf_cap) {
            char *b = realloc(st->buf, n + 65);
            if (!b) return err_set(e->err, e->errlen, "out of memory");
            st->buf = b;
            st->buf_cap = n + 65;
        }
        st->buf[0] = ' ';
        memcpy(st->buf + 1, s, n);
        s = st->buf;
        n++;
    }
    if (m->byte_regex) return regex_pieces(e, m->byte_regex, stage + 1, s, n);
    return bpe_word(e, s, n);
}

typedef int (*GapFn)(Enc *e, const char *s, size_t n);

/* HF's AddedVocabulary::find_matches: the leftmost-longest added-token
 * matches of s, with single_word, lstrip and rstrip applied, become their
 * ids; the text between them goes to gap. */
static int split_added(Enc *e, const BpeTrie *t, const char *s, size_t n, GapFn gap) {
    if (n == 0) return 0;
    if (t->n_nodes <= 1) return gap(e, s, n);
    size_t start_offset = 0, pos = 0, w;
    while (pos < n) {
        size_t i = pos, len = 0;
        int32_t k = -1;
        for (; i < n; i++) {
            unsigned char b = (unsigned char)s[i];
            if ((t->first[b >> 3] >> (b & 7)) & 1 && (k = trie_longest(t, s + i, n - i, &len)) >= 0)
                break;
        }
        if (k < 0) break;
        const BpeAdded *a = &e->m->added[k];
        size_t start = i, stop = i + len;
        pos = stop; /* the search goes on after the match, whatever is done with it */
        if (a->single_word && ((start > 0 && is_word(cp_before(s, start, &w))) ||
                               (stop < n && is_word(cp_at(s + stop, n - stop, &w)))))
            continue;
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0 && is_white(cp_before(s, ns, &w)))
                ns -= w;
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip)
            while (stop < n && is_white(cp_at(s + stop, n - stop, &w)))
                stop += w;
        if (start_offset < start && gap(e, s + start_offset, start - start_offset)) return -1;
        if (push(e, a->id)) return -1;
        start_offset = stop;
    }
    return start_offset < n ? gap(e, s + start_offset, n - start_offset) : 0;
}

static int pre_tokenize(Enc *e, const char *s, size_t n) {
    return run_stage(e, 0, s, n);
}

/* Code points below U+0300 (lead bytes below 0xCC) never change under NFC. */
static int may_change_under_nfc(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0xcc) return 1;
    return 0;
}

static int normalize(Enc *e, const char *s, size_t n) {
    const BpeModel *m = e->m;
    if (!m->nfc || !may_change_under_nfc(s, n))
        return split_added(e, &m->trie_norm, s, n, pre_tokenize);
    char *out = NULL;
    size_t n_out = 0;
    if (bpe_nfc(s, n, &out, &n_out, e->err, e->errlen)) return -1;
    int rc = split_added(e, &m->trie_norm, out, n_out, pre_tokenize);
    free(out);
    return rc;
}

int bpe_nfc(const char *s, size_t n, char **out, size_t *out_n, char *err, size_t errlen) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = n ? utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE)
                           : 0;
    if (r < 0) return err_set(err, errlen, "NFC normalization failed: %s", utf8proc_errmsg(r));
    if (!dst && !(dst = calloc(1, 1))) return err_set(err, errlen, "out of memory");
    *out = (char *)dst;
    *out_n = (size_t)r;
    return 0;
}

int bpe_encode(const BpeModel *m, const char *text, size_t n, uint32_t **ids, size_t *n_ids,
               size_t *cap, char *err, size_t errlen) {
    *n_ids = 0;
    size_t ok = corpus_utf8_valid((const unsigned char *)text, n);
    if (ok != n)
        return err_set(err, errlen,
                       "byte offset %zu of the text: invalid UTF-8 (a tokenizer.json tokenizer "
                       "encodes Unicode text only, as Hugging Face tokenizers does)",
                       ok);
    BpeState *st = state_get(m);
    if (!st) return err_set(err, errlen, "out of memory");
    Enc e = {m, st, *ids, 0, *cap, err, errlen};
    int rc = split_added(&e, &m->trie_raw, text, n, normalize);
    state_put(m, st);
    *ids = e.ids;
    *cap = e.cap;
    *n_ids = rc ? 0 : e.n;
    return rc;
}

/* ---------------------------------------------------------------- decoding */

/* Bytes of the maximal invalid subpart at s (Unicode's "substitution of
 * maximal subparts", which Rust's from_utf8_lossy and Python's
 * errors="replace" follow): the lead byte and the continuation bytes that
 * could still have completed it. */
static size_t invalid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 1;
    if (n < 2 || s[1] < lo || s[1] > hi) return 1;
    size_t j = 2;
    while (j <= need && j < n && s[j] >= 0x80 && s[j] <= 0xbf)
        j++;
    return j;
}

int bpe_decode(const BpeModel *m, const uint32_t *ids, size_t n, int skip_special, char **text_out,
               size_t *len_out, char *err, size_t errlen) {
    *text_out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= m->n_ids || m->tok[ids[i]].type == BPE_TOKEN_UNUSED)
            return err_set(err, errlen, "%s: id %u (position %zu) is not a token", m->path, ids[i],
                           i);
        total += m->tok[ids[i]].raw_len;
    }
    unsigned char *raw = malloc(total + 1);
    char *out = raw ? malloc(3 * total + 1) : NULL;
    if (!out) {
        free(raw);
        return err_set(err, errlen, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const BpeToken *t = &m->tok[ids[i]];
        if (skip_special && t->type == BPE_TOKEN_SPECIAL) continue;
        memcpy(raw + k, m->arena + t->raw_off, t->raw_len);
        k += t->raw_len;
    }
    /* HF's ByteLevel decoder ends with String::from_utf8_lossy */
    size_t i = 0, o = 0;
    while (i < k) {
        size_t ok = corpus_utf8_valid(raw + i, k - i);
        memcpy(out + o, raw + i, ok);
        o += ok;
        i += ok;
        if (i < k) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += invalid_len(raw + i, k - i);
        }
    }
    out[o] = 0;
    free(raw);
    *text_out = out;
    if (len_out) *len_out = o;
    return 0;
}

/* --------------------------------------------------------------- accessors */

uint32_t bpe_vocab_size(const BpeModel *m) {
    return m->n_ids;
}

const char *bpe_token(const BpeModel *m, uint32_t id) {
    if (id >= m->n_ids || m->tok[id].type == BPE_TOKEN_UNUSED) return NULL;
    return m->arena + m->tok[id].spell_off;
}

int bpe_token_id(const BpeModel *m, const char *s, size_t n) {
    uint64_t h = bpe_hash(s, n);
    const uint64_t *v = bpe_map_get(&m->added_map, s, n, h);
    if (v) return (int)m->added[*v].id;
    v = bpe_map_get(&m->spell, s, n, h);
    return v ? (int)*v : -1;
}

int bpe_token_type(const BpeModel *m, uint32_t id) {
    return id < m->n_ids ? m->tok[id].type : BPE_TOKEN_UNUSED;
}

int bpe_token_strips(const BpeModel *m, uint32_t id) {
    for (uint32_t i = 0; i < m->n_added; i++)
        if (m->added[i].id == id)
            return m->added[i].lstrip || m->added[i].rstrip || m->added[i].single_word;
    return 0;
}

size_t bpe_n_merges(const BpeModel *m) {
    return m->n_merges;
}

void bpe_merge(const BpeModel *m, size_t i, const char **left, const char **right) {
    *left = *right = NULL;
    if (i >= m->n_merges) return;
    *left = m->arena + m->tok[m->merge_l[i]].spell_off;
    *right = m->arena + m->tok[m->merge_r[i]].spell_off;
}

int bpe_template_bos(const BpeModel *m) {
    return m->template_bos;
}

const BpeFamily *bpe_family(const BpeModel *m) {
    if (m->prefix_space) return NULL;
    for (int i = 0; i < bpe_n_families; i++) {
        const BpeFamily *f = &bpe_families[i];
        if (f->nfc != m->nfc) continue;
        if (!f->pattern && m->n_splits == 0 && m->byte_regex) return f;
        if (f->pattern && m->n_splits == 1 && !m->byte_regex &&
            !strcmp(f->pattern, m->split_pattern[0]))
            return f;
    }
    return NULL;
}
