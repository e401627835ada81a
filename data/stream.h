/* data/stream.h: the mixture stream, the trainer's source of batches.
 *
 * Sources: named, each with a role (domain or general), train shard globs and
 * optional val shard globs. A sample is a window of seq_len + 1 tokens.
 * (The trainer's [[data.sources]] tables, or data.domain / data.general as
 * one source each, named "domain" and "general".)
 *
 * Order (all of it a function of the config and the shards, see docs/data.md):
 *  - Step s has global_batch slots; mix_count_at(s) of them are domain
 *    samples (data/mix.h). Slot q holds position u = perm_s(q) of the step
 *    (a keyed permutation of the B slots): u < n_domain is the role's sample
 *    number round(C(s)) + u, else the general role's s*B - round(C(s)) + u - n_domain.
 *  - A role's k-th sample goes to a source by mix_split_source.
 *  - Source sample number k is window i = k mod W of epoch e = k div W,
 *    W = floor(tokens / (seq_len + 1)). An epoch reads the source's frames
 *    in a permutation keyed by (seed, source name, e), concatenated and cut
 *    into W windows; window i of the epoch is window perm_b(i mod K) of
 *    block b = i div K (blocks of K = shuffle_windows windows, permutation
 *    keyed by (seed, source name, e, b)).
 *  - Rank r of world W takes slots [r*B/W, (r+1)*B/W): the union over ranks
 *    is the global batch, whatever W is.
 * So the data state of a run is the step number: stream_next_batch(s, ...)
 * returns the same tokens whenever and in whatever order it is asked, and
 * stream_fingerprint says whether two streams are the same sequence.
 *
 * A background thread decodes the next `prefetch` batches of the same rank
 * and world while the trainer computes; asking for another step restarts it.
 * Not thread-safe: one caller thread per Stream. */
#ifndef DAPT_DATA_STREAM_H
#define DAPT_DATA_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "data/mix.h"

typedef enum { STREAM_DOMAIN = 0, STREAM_GENERAL = 1 } StreamRole;

typedef struct {
    const char *name;
    StreamRole role;
    const char *const *train_globs;
    int n_train_globs;
    const char *const *val_globs; /* may be empty: no eval windows */
    int n_val_globs;
    double weight; /* share within its role; 0: proportional to its train tokens */
} StreamSourceConfig;

typedef struct {
    const StreamSourceConfig *sources;
    int n_sources;
    const MixPoint *schedule; /* domain fraction vs progress (data/mix.h) */
    int n_schedule;
    uint32_t seq_len;         /* T: a sample is T + 1 tokens */
    uint32_t global_batch;    /* B: samples per step over all ranks */
    uint64_t total_steps;     /* S: progress of step s is s / S */
    uint64_t seed;
    uint32_t shuffle_windows; /* K (default 64 when 0) */
    uint32_t eval_windows;    /* most eval windows per source (default 64 when 0) */
    int prefetch;             /* batches decoded ahead; 0: no thread, decode on call */
    uint32_t cache_frames;    /* decoded frames kept per source (default 8 when 0) */
} StreamConfig;

typedef struct Stream Stream;

int stream_open(Stream **out, const StreamConfig *cfg, char *err, size_t errlen);
void stream_close(Stream *s);

/* The local batch of rank `rank` of `world` at step `step`:
 * tokens (B/world, T+1), source_ids (B/world) = index into cfg->sources.
 * global_batch must be divisible by world. */
int stream_next_batch(Stream *s, uint64_t step, int rank, int world, uint32_t *tokens,
                      int32_t *source_ids, char *err, size_t errlen);
/* The sample in slot q (0 <= q < B) of the global batch of step `step`,
 * decoded on the calling thread (for tests and tools; no prefetch). */
int stream_sample(Stream *s, uint64_t step, uint32_t slot, uint32_t *tokens, int32_t *source_id,
                  char *err, size_t errlen);

uint32_t stream_domain_count(const Stream *s, uint64_t step); /* domain samples in step */
double stream_domain_fraction(const Stream *s, uint64_t step); /* w(step) */

/* Hash of everything that fixes the sample sequence: each source's name,
 * role and weight, each shard's file name, size and header hash, seed,
 * seq_len, global_batch, total_steps, shuffle_windows and the schedule. */
uint64_t stream_fingerprint(const Stream *s);

int stream_n_sources(const Stream *s);
const char *stream_source_name(const Stream *s, int j);
StreamRole stream_source_role(const Stream *s, int j);
uint64_t stream_source_tokens(const Stream *s, int j);  /* train tokens */
uint64_t stream_source_windows(const Stream *s, int j); /* windows per epoch */
/* Samples of source j in steps [0, steps), all ranks. */
uint64_t stream_source_samples(const Stream *s, int j, uint64_t steps);
/* Epochs of source j consumed by the end of step `step` (a fraction). */
double stream_source_epochs(const Stream *s, int j, uint64_t step);
uint32_t stream_vocab_size(const Stream *s);
uint64_t stream_tokenizer_hash(const Stream *s); /* hash of the tokenizer model file */
uint32_t stream_eos_id(const Stream *s);

/* Eval windows: source j's first eval_windows consecutive windows of T+1
 * tokens of its val shards (in sorted file order), the same for every run. */
uint32_t stream_eval_count(const Stream *s, int j);
int stream_eval_window(Stream *s, int j, uint32_t index, uint32_t *tokens, char *err, size_t errlen);

#endif
