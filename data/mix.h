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
 * of a fixed pattern of L slots in which source j holds q_j slots. L is the
 * smallest period, at most MIX_PATTERN_MAX, over which the shares w_j / sum w
 * are whole numbers q_j / L (within 1e-9 of a slot): for weights 15:1:4,
 * L = 20; for 0.3:0.7, L = 10. Weights with no such period (a share like
 * 1/3 written 0.3333333, or token counts) fall back to L = MIX_PATTERN_MAX
 * with q_j by largest remainder (at least 1 each): the shares are then
 * exact to 1/L. The pattern is the earliest-deadline-first schedule of the
 * unit jobs "source j's i-th slot", released at floor(i L / q_j) and due by
 * position ceil((i + 1) L / q_j) - 1, ties to the lower index; it meets
 * every deadline, so after any n samples source j holds c_j(n) with
 * |c_j(n) - n q_j / L| < 1 (strictly), every n, not only whole periods.
 * Source j's own sample index is (k / L) * q_j + (number of j before
 * position k % L). */
#ifndef DAPT_DATA_MIX_H
#define DAPT_DATA_MIX_H

#include <stddef.h>
#include <stdint.h>

#define MIX_PATTERN_MAX 65536
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
/* Slots of source j in the pattern (q_j), and the pattern's length L. */
uint32_t mix_split_quota(const MixSplit *m, int j);
uint32_t mix_split_period(const MixSplit *m);

#endif
