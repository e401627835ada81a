/* data/shard.h: the .tok.zst token shard (specified byte by byte in
 * docs/formats.md). A shard is a valid zstd stream: a skippable header frame,
 * independent zstd frames of `tokens_per_frame` little-endian tokens each
 * (the last may be shorter), each with its content checksum, and a seek table
 * in zstd's seekable-format layout in a final skippable frame, so any frame is
 * read without reading the others.
 *
 * Invariants: a writer never leaves a partial file under the final name (it
 * writes PATH.tmp and renames on close); a reader checks the header, the seek
 * table against the file size and the header counts before returning, and
 * every frame it decodes against its size, its checksum and the vocabulary. */
#ifndef DAPT_DATA_SHARD_H
#define DAPT_DATA_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_VERSION 1
#define SHARD_NAME_MAX 128 /* corpus name bytes, including the NUL */
#define SHARD_ERR_MAX 512  /* size of error message buffers in data/ */

typedef struct {
    uint32_t version;
    uint32_t token_bytes; /* 2 when vocab_size <= 65536, else 4 */
    uint32_t vocab_size;
    uint32_t eos_id;
    uint32_t tokens_per_frame;
    uint64_t n_tokens;
    uint64_t n_docs;
    uint64_t tokenizer_hash; /* tokenizer_hash() of the tokenizer (tokenizer/tokenizer.h) */
    char name[SHARD_NAME_MAX];
} ShardHeader;

/* ---- writer ---- */
typedef struct ShardWriter ShardWriter;

/* Opens PATH.tmp for writing. hdr supplies vocab_size, eos_id,
 * tokens_per_frame, tokenizer_hash and name; the counts are filled in by
 * the writer. level is the zstd level (3 is a good default). */
int shard_writer_open(ShardWriter **out, const char *path, const ShardHeader *hdr, int level,
                      char *err, size_t errlen);
/* Appends n tokens that contain n_docs complete documents (0 when a document
 * continues in the next call). Every token must be < vocab_size. */
int shard_writer_append(ShardWriter *w, const uint32_t *tokens, size_t n, uint64_t n_docs,
                        char *err, size_t errlen);
uint64_t shard_writer_tokens(const ShardWriter *w);
/* Writes the last frame, the seek table and the final header and syncs the
 * file, still under PATH.tmp. */
int shard_writer_finish(ShardWriter *w, char *err, size_t errlen);
/* Renames PATH.tmp to PATH (after finish) and frees the writer. */
int shard_writer_commit(ShardWriter *w, char *err, size_t errlen);
/* finish + commit. */
int shard_writer_close(ShardWriter *w, char *err, size_t errlen);
/* Removes PATH.tmp and frees the writer; for error paths. NULL is a no-op. */
void shard_writer_abort(ShardWriter *w);

/* ---- reader ---- */
typedef struct Shard Shard;

int shard_open(Shard **out, const char *path, char *err, size_t errlen);
void shard_close(Shard *s);
const ShardHeader *shard_header(const Shard *s);
const char *shard_path(const Shard *s);
uint64_t shard_n_frames(const Shard *s);
uint64_t shard_frame_tokens(const Shard *s, uint64_t frame); /* tokens in that frame */
uint64_t shard_file_bytes(const Shard *s);
/* Hash of the header frame's bytes (covers counts, tokenizer hash, name). */
uint64_t shard_header_hash(const Shard *s);
/* Decodes frame `frame` into out (room for tokens_per_frame tokens) and
 * checks its checksum, size and that every token is < vocab_size. Uses the
 * shard's own zstd context and scratch buffer: one thread per Shard. */
int shard_read_frame(Shard *s, uint64_t frame, uint32_t *out, char *err, size_t errlen);

/* What shard_scan saw: tokens decoded, EOS tokens among them, smallest and
 * largest token id (min_id > max_id when the shard is empty). */
typedef struct {
    uint64_t n_tokens, n_eos;
    uint32_t min_id, max_id;
} ShardScan;
/* Decodes and checks every frame in order (shard_read_frame), counting into
 * out; copies the first n_first tokens to first (NULL: none). */
int shard_scan(Shard *s, ShardScan *out, uint32_t *first, size_t n_first, char *err, size_t errlen);

#endif
