/* data/mix.h: the mixture schedule (how many samples of each step are
 * domain samples) and the split of one role's samples among its sources.
 *
 * Schedule. The domain fraction f(p) is piecewise linear in training progress
 * p in [0, 1] through points (p_k, f_k), p_k non-decreasing; constant before
 * the first and after the last point; where two points share a progress value
 * the later one holds from there on (a step change). Step i of S total steps
 * has weight w(i) = f(i / S) (f(1) for i >= S). With global batch B,
 *     C(s) = B * sum_{i<s} w(i)    (summed in order, long double)
 *     domain samples in step s = round(C(s+1)) - round(C(s)),  round(x) = floor(x + 1/2)
 * so every step is within one sample of B*w(s) and the cumulative count
 * round(C(s)) is within half a sample of C(s).
 *
 * Split. A role's k-th sample (k = 0, 1, ...) goes to source pattern[k % L]
 * of a fixed pattern of L = MIX_PATTERN slots in which source j holds q_j
 * slots, q_j = its weight share of L by largest remainder (at least 1 each),
 * ordered so that every prefix of the pattern is within one sample of the
 * shares (largest deficit first, ties to the lower index). Source j's own
 * sample index is (k / L) * q_j + (number of j before position k % L). */
#ifndef DAPT_DATA_MIX_H
#define DAPT_DATA_MIX_H

#include <stddef.h>
#include <stdint.h>

#define MIX_PATTERN 4096
#define MIX_MAX_POINTS 64
#define MIX_MAX_SOURCES 256

typedef struct {
    double progress; /* in [0, 1] */
    double fraction; /* domain share in [0, 1] */
} MixPoint;

typedef struct MixSchedule MixSchedule;

int mix_schedule_create(MixSchedule **out, const MixPoint *points, int n_points, uint64_t total_steps,
                        uint32_t global_batch, char *err, size_t errlen);
void mix_schedule_free(MixSchedule *m);
double mix_schedule_fraction(const MixSchedule *m, double progress); /* f(p) */
double mix_schedule_weight(const MixSchedule *m, uint64_t step);     /* w(step) */
uint64_t mix_cum_domain(const MixSchedule *m, uint64_t step);        /* round(C(step)) */
uint32_t mix_count_at(const MixSchedule *m, uint64_t step);          /* domain samples in step */
/* Smallest and largest fraction the schedule ever takes. */
void mix_schedule_range(const MixSchedule *m, double *lo, double *hi);

typedef struct MixSplit MixSplit;

/* weights: n > 0 positive numbers (any scale). */
int mix_split_create(MixSplit **out, const double *weights, int n, char *err, size_t errlen);
void mix_split_free(MixSplit *m);
/* The source of the role's k-th sample; *index_out = its index in that source. */
int mix_split_source(const MixSplit *m, uint64_t k, uint64_t *index_out);
/* How many of the role's first n samples went to source j. */
uint64_t mix_split_count(const MixSplit *m, int j, uint64_t n);
/* Slots of source j in the pattern (q_j). */
uint32_t mix_split_quota(const MixSplit *m, int j);

#endif
