/* tokenizer/bpe.h: Hugging Face tokenizer.json with a byte-level BPE model,
 * as Llama 3, Qwen 2/2.5/3 and GPT-2 ship it.
 *
 * Implemented (everything else in the file is refused by key, with the
 * reason, rather than encoded differently):
 *   model          BPE with merges (both the "a b" string and the [a, b] pair
 *                  forms), ignore_merges, no dropout, byte-level vocabulary
 *   normalizer     null, NFC, or a Sequence of those
 *   pre_tokenizer  ByteLevel (use_regex: the GPT-2 pattern; add_prefix_space)
 *                  and Sequence[Split(Regex, Isolated), ByteLevel(use_regex
 *                  false)] (Llama 3, Qwen 2); the patterns run in PCRE2
 *   added_tokens   matched before pre-tokenization, longest first, with
 *                  their single_word/lstrip/rstrip/normalized flags honoured
 *                  or refused
 *   decoder        ByteLevel
 *   post_processor TemplateProcessing / ByteLevel (read only for BOS)
 *
 * Invariants: a loaded BpeModel is immutable (encode is thread-safe); the
 * file is a stranger's: every size is checked, and errors name the file and
 * the JSON key. */
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
