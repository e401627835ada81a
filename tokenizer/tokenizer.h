/* tokenizer/tokenizer.h: one interface over the tokenizers dapt reads: a
 * sentencepiece .model (tokenizer/spm.h) and a Hugging Face tokenizer.json
 * with a byte-level BPE model (tokenizer/bpe.h).
 *
 * tokenizer_load takes any of:
 *   - an HF model directory: tokenizer.json if present, else tokenizer.model
 *     (and tokenizer.model when both are present and the tokenizer.json is
 *     not a byte-level BPE: Llama 2, Mistral and Gemma ship both);
 *     tokenizer_config.json beside it (optional) gives bos_token, eos_token,
 *     add_bos_token and add_eos_token;
 *   - a tokenizer.json file (tokenizer_config.json in its directory is read
 *     when present);
 *   - a sentencepiece .model file (BOS not added, as dapt always did).
 * Without add_bos_token, a BPE tokenizer adds BOS when its post_processor's
 * single-sequence template starts with a special token (Llama 3 does).
 *
 * Invariants: a loaded Tokenizer is immutable: encode and decode may run on
 * many threads at once. Failures come back as -1 with a message in err;
 * nothing exits. */
#ifndef DAPT_TOKENIZER_TOKENIZER_H
#define DAPT_TOKENIZER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;
struct BpeModel;
struct SpmModel;

typedef enum { TOKENIZER_SPM = 1, TOKENIZER_BPE = 2 } TokenizerKind;

int tokenizer_load(Tokenizer **out, const char *path, char *err, size_t errlen);
void tokenizer_free(Tokenizer *t);

TokenizerKind tokenizer_kind(const Tokenizer *t);
/* "sentencepiece" or "bpe (tokenizer.json)": for messages and inspect. */
const char *tokenizer_kind_name(const Tokenizer *t);
/* Ids are < vocab size (for BPE: one past the largest id, added tokens
 * included). */
uint32_t tokenizer_vocab_size(const Tokenizer *t);
int tokenizer_bos_id(const Tokenizer *t); /* -1: none */
int tokenizer_eos_id(const Tokenizer *t); /* -1: none */
int tokenizer_add_bos(const Tokenizer *t);
int tokenizer_add_eos(const Tokenizer *t);
/* The content hash recorded in shards and checked by `dapt train`: for a
 * sentencepiece model, hash_file() of the .model (as before), mixed with
 * the BOS id when tokenizer_config.json asks for BOS; for BPE, the
 * tokenizer.json bytes mixed with the BOS/EOS ids and add flags. */
uint64_t tokenizer_hash(const Tokenizer *t);

/* Encodes text[0..n) as one string: added/special tokens are matched first
 * (as HF does by default), then the model; no BOS/EOS. *ids (capacity
 * *cap) grows with realloc; *n_ids is set. */
int tokenizer_encode(const Tokenizer *t, const char *text, size_t n, uint32_t **ids,
                     size_t *n_ids, size_t *cap, char *err, size_t errlen);
/* A document as the shards hold it: [BOS if add_bos] + encode(text) + [EOS]
 * (EOS always; -1 with a message when the tokenizer has none). */
int tokenizer_encode_doc(const Tokenizer *t, const char *text, size_t n, uint32_t **ids,
                         size_t *n_ids, size_t *cap, char *err, size_t errlen);
/* Decodes into a malloc'd NUL-terminated string (*len_out, when not NULL,
 * gets its length: the text may hold NUL bytes). skip_special drops
 * special tokens (BOS, EOS, ...) as HF's skip_special_tokens does. */
int tokenizer_decode(const Tokenizer *t, const uint32_t *ids, size_t n, int skip_special,
                     char **text_out, size_t *len_out, char *err, size_t errlen);

/* The files that make this tokenizer, to copy into a checkpoint directory
 * (which is then a complete HF model directory): *n_out entries of source
 * path and the file name it takes there (tokenizer.model; tokenizer.json,
 * tokenizer_config.json and special_tokens_map.json when present). */
typedef struct {
    const char *path;
    const char *name;
} TokenizerFile;
const TokenizerFile *tokenizer_files(const Tokenizer *t, int *n_out);

/* The implementation underneath (NULL when of the other kind): GGUF export
 * reads vocabularies and merges through these. */
const struct BpeModel *tokenizer_bpe(const Tokenizer *t);
const struct SpmModel *tokenizer_spm(const Tokenizer *t);

/* Whether a model directory has a tokenizer: 1 and the path of its
 * tokenizer.json, else of its tokenizer.model, in path; 0 when it has
 * neither. tokenizer_load(dir) loads it (the tokenizer.model when
 * the directory has both and bpe_load refuses the tokenizer.json). */
int tokenizer_find(const char *dir, char *path, size_t path_len);

#endif
