/* tokenizer/bpe.h: Hugging Face tokenizer.json with a byte-level BPE model,
 * as Llama 3, Qwen 2/2.5/3 and GPT-2 ship it. Encoding gives the ids of HF
 * tokenizers' encode(text, add_special_tokens=False) (tests/tok compares
 * them, for every Unicode code point too).
 *
 * Implemented (everything else in the file is refused by key, with the
 * reason, rather than encoded differently; docs/data.md has the table):
 *   model          BPE with merges (both the "a b" string and the [a, b] pair
 *                  forms), ignore_merges, unk_token/fuse_unk, dropout null
 *                  or 0, byte_fallback false, no subword prefix or suffix
 *   normalizer     null, NFC (utf8proc), or a Sequence of those
 *   pre_tokenizer  ByteLevel (use_regex: the GPT-2 pattern; add_prefix_space)
 *                  and Sequence[Split(Regex, Isolated)..., ByteLevel] (Llama
 *                  3, Qwen 2); the patterns run in PCRE2 with \s as Unicode
 *                  White_Space, as HF's Oniguruma reads it
 *   added_tokens   matched before normalization (normalized true: in the
 *                  normalized text), leftmost then longest, with
 *                  single_word/lstrip/rstrip honoured; each id must be the
 *                  one HF assigns on load
 *   decoder        ByteLevel
 *   post_processor TemplateProcessing / ByteLevel / Sequence (read only for
 *                  BOS); truncation and padding are ignored
 *
 * Text that is not valid UTF-8 is refused by bpe_encode with the byte
 * offset of the first bad byte ("byte offset N of the text: invalid
 * UTF-8"): HF tokenizers takes only Unicode strings (Rust &str, Python str;
 * a Python str holding a lone surrogate becomes three U+FFFD there). A byte
 * with no token in the vocabulary and no unk_token is refused too (HF drops
 * it silently). bpe_decode is HF's ByteLevel decoder: a character cut
 * between tokens becomes U+FFFD per maximal invalid subpart (Rust's
 * from_utf8_lossy); an id that no token has is an error.
 *
 * Invariants: a loaded BpeModel is immutable (encode is thread-safe: each
 * call borrows a per-thread state from the model's pool); the file is a
 * stranger's: every size is checked, and errors name the file and the JSON
 * key. */
#ifndef DAPT_TOKENIZER_BPE_H
#define DAPT_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct BpeModel BpeModel;

int bpe_load(BpeModel **out, const char *json_path, char *err, size_t errlen);
/* The same from the file's bytes json[0..n) (need not be NUL-terminated);
 * name stands for the file in messages. */
int bpe_parse(BpeModel **out, const char *json, size_t n, const char *name, char *err,
              size_t errlen);
void bpe_free(BpeModel *m);

/* One past the largest id (model vocabulary and added tokens). */
uint32_t bpe_vocab_size(const BpeModel *m);
/* Added tokens are matched first, then normalizer, pre-tokenizer, BPE. No
 * post-processor (no BOS/EOS). */
int bpe_encode(const BpeModel *m, const char *text, size_t n, uint32_t **ids, size_t *n_ids,
               size_t *cap, char *err, size_t errlen);
int bpe_decode(const BpeModel *m, const uint32_t *ids, size_t n, int skip_special,
               char **text_out, size_t *len_out, char *err, size_t errlen);

/* The token's string as tokenizer.json spells it (byte-level alphabet for
 * model tokens, the literal content for added tokens); NULL for an id no
 * token has. */
const char *bpe_token(const BpeModel *m, uint32_t id);
/* The id of a token spelled s[0..n) (model vocabulary or added token); -1. */
int bpe_token_id(const BpeModel *m, const char *s, size_t n);

enum { BPE_TOKEN_NORMAL = 1, BPE_TOKEN_SPECIAL = 2, BPE_TOKEN_ADDED = 3, BPE_TOKEN_UNUSED = 4 };
/* NORMAL: in the model's vocabulary; SPECIAL: an added token with special
 * true; ADDED: an added token with special false; UNUSED: no token. */
int bpe_token_type(const BpeModel *m, uint32_t id);

size_t bpe_n_merges(const BpeModel *m);
/* Merge i (rank order) as its two token strings. */
void bpe_merge(const BpeModel *m, size_t i, const char **left, const char **right);

/* The id of the special token the post_processor's single-sequence
 * template starts with (Llama 3's <|begin_of_text|>), else -1. */
int bpe_template_bos(const BpeModel *m);

/* The pre-tokenizer families dapt knows, with the name llama.cpp's GGUF
 * gives each (tokenizer.ggml.pre): GGUF export writes the name, GGUF import
 * writes tokenizer.json's normalizer and pre_tokenizer back from it. */
typedef struct {
    const char *gguf_pre; /* "gpt-2", "llama-bpe", "qwen2" */
    const char *pattern;  /* the Split regex; NULL: ByteLevel's own (GPT-2) */
    int nfc;              /* an NFC normalizer */
} BpeFamily;
extern const BpeFamily bpe_families[];
extern const int bpe_n_families;
/* This model's family; NULL when its normalizer/pre-tokenizer match none. */
const BpeFamily *bpe_family(const BpeModel *m);

#endif
