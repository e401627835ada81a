/* tokenizer/corpus.h: reads documents from one input file of a corpus.
 *
 * Formats, chosen by the file name after removing a .gz or .zst suffix
 * (which selects zlib or zstd decompression):
 *   *.jsonl, *.json  one JSON object per line; the document is its "text"
 *                    string field; blank lines are skipped.
 *   anything else    plain UTF-8 text; a document is a block of lines
 *                    separated by one or more blank lines (or the whole file
 *                    when doc_per_file is set); the block's lines are joined
 *                    with "\n", without a trailing newline.
 * Invariants: every returned document is valid UTF-8 (checked per line,
 * with the line number in the error) and no line exceeds max_line_bytes. */
#ifndef DAPT_TOKENIZER_CORPUS_H
#define DAPT_TOKENIZER_CORPUS_H

#include <stddef.h>
#include <stdint.h>

typedef struct CorpusReader CorpusReader;

int corpus_open(CorpusReader **out, const char *path, size_t max_line_bytes, int doc_per_file,
                char *err, size_t errlen);
/* 1: a document in *doc (valid until the next call), 0: end of file, -1: error. */
int corpus_next(CorpusReader *r, const char **doc, size_t *n_bytes, char *err, size_t errlen);
/* Bytes of the (possibly compressed) file consumed so far. */
uint64_t corpus_bytes_read(const CorpusReader *r);
void corpus_close(CorpusReader *r);

/* Length of the valid UTF-8 prefix of s[0..n): n when all of it is valid. */
size_t corpus_utf8_valid(const unsigned char *s, size_t n);

#endif
