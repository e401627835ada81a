/* tokenizer/tokenize.h: corpus files -> .tok.zst shards (the library behind
 * `dapt tokenize`). Documents are read in input order, encoded by n_threads
 * workers with a tokenizer (tokenizer/tokenizer.h: a sentencepiece model or
 * an HF tokenizer.json) as tokenizer_encode_doc makes them ([BOS when the
 * tokenizer adds one] + the text's ids + EOS), and written in input order,
 * so the output is the same for any thread count. The shard headers record
 * the tokenizer's vocabulary size (above 65536: 4-byte tokens), EOS id and
 * tokenizer_hash. A document goes to the val shard when its hash (tok_doc_hash) is
 * below the val threshold, so train and val never share a document, and all
 * copies of a duplicated document land on the same side.
 *
 * Output: OUT/train-00000.tok.zst, ... (a new shard when the current one
 * holds shard_tokens tokens; documents never span shards) and OUT/val.tok.zst.
 * All are written under temporary names and renamed only when every input
 * has been read without error. */
#ifndef DAPT_TOKENIZER_TOKENIZE_H
#define DAPT_TOKENIZER_TOKENIZE_H

#include <stddef.h>
#include <stdint.h>

struct TokStats;

typedef struct {
    const char *tokenizer_path; /* what tokenizer_load takes */
    const char *out_dir;
    const char *name;          /* corpus name stored in the headers */
    const char *const *inputs;
    int n_inputs;
    double val_frac;           /* used when val_docs < 0 */
    int64_t val_docs;          /* >= 0: the val_docs documents of smallest hash */
    int n_threads;
    uint32_t tokens_per_frame;
    uint64_t shard_tokens;
    int zstd_level;
    size_t max_line_bytes;
    int doc_per_file;
    /* Called about every half second and once at the end (final = 1) from
     * the calling thread, when set: the counts so far (seconds = elapsed),
     * input bytes read and their total. */
    void (*on_progress)(const struct TokStats *so_far, uint64_t bytes_read, uint64_t bytes_total,
                        int final, void *ctx);
    void *progress_ctx;
} TokOptions;

typedef struct TokStats {
    uint64_t docs_train, docs_val, tokens_train, tokens_val;
    uint64_t input_bytes, text_bytes, output_bytes;
    int n_train_shards;
    uint32_t token_bytes; /* stored width of a token, 2 or 4 */
    double seconds;
} TokStats;

void tok_options_default(TokOptions *o);
int tok_run(const TokOptions *o, TokStats *stats, char *err, size_t errlen);
/* Trains a BPE sentencepiece model (byte fallback) of vocab_size pieces on
 * every document of o->inputs, read as tok_run reads them, into
 * o->out_dir/tokenizer.model (out_dir is created when missing); its path
 * goes to model_path. The documents pass through a temporary text file in
 * out_dir, removed afterwards. */
int tok_train_tokenizer(const TokOptions *o, uint32_t vocab_size, char *model_path,
                        size_t model_path_len, char *err, size_t errlen);
/* The hash that decides a document's split (text bytes, no EOS). */
uint64_t tok_doc_hash(const char *text, size_t n_bytes);

#endif
