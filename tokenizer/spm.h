/* tokenizer/spm.h: the C API over the sentencepiece library (whose own API
 * is C++). This shim, tokenizer/spm.cc, is the only C++ in dapt.
 *
 * Invariants: a loaded SpmModel is immutable, so spm_encode may be called
 * from many threads at once on the same model; every function reports
 * failure through its return value and the message buffer, never by
 * throwing or exiting. */
#ifndef DAPT_TOKENIZER_SPM_H
#define DAPT_TOKENIZER_SPM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct SpmModel SpmModel;

int spm_load(SpmModel **out, const char *model_path, char *err, size_t errlen);
void spm_free(SpmModel *m);
uint32_t spm_vocab_size(const SpmModel *m);
/* The model's end-of-sequence id, or -1 when the model defines none. */
int spm_eos_id(const SpmModel *m);
/* The beginning-of-sequence id, or -1 when the model defines none. */
int spm_bos_id(const SpmModel *m);
/* Encodes text[0..n_bytes) as one string; *ids (capacity *cap) is grown with
 * realloc as needed and *n_ids set to the number of ids. */
int spm_encode(const SpmModel *m, const char *text, size_t n_bytes, uint32_t **ids, size_t *n_ids,
               size_t *cap, char *err, size_t errlen);
/* Decodes ids to text into a malloc'd NUL-terminated string *text_out. */
int spm_decode(const SpmModel *m, const uint32_t *ids, size_t n_ids, char **text_out, char *err,
               size_t errlen);
/* Trains a BPE model with byte fallback from a text file of one sentence per
 * line, writing PREFIX.model and PREFIX.vocab. */
int spm_train_bpe(const char *input_path, const char *prefix, uint32_t vocab_size, int n_threads,
                  char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
