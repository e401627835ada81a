/* data/mix.c: the mixture schedule and the per-role source split (see
 * data/mix.h for the exact definitions). Invariant: every count is a pure
 * function of (points, total_steps, global_batch) or (weights): the schedule
 * keeps the exact running sum at every MIX_CHECKPOINT-th step and resumes
 * the same in-order summation from there, so a count never depends on which
 * steps were asked for before. */
#include "data/mix.h"
#include "kernels/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIX_CHECKPOINT 1024

struct MixSchedule {
    MixPoint pt[MIX_MAX_POINTS];
    int n;
    uint64_t total_steps;
    uint32_t batch;
    long double *acc; /* (total_steps / MIX_CHECKPOINT + 1) sum_{i < c*MIX_CHECKPOINT} w(i) */
    uint64_t n_acc;
};

struct MixSplit {
    int n;
    uint32_t quota[MIX_MAX_SOURCES];
    uint16_t pattern[MIX_PATTERN];
    uint16_t rank[MIX_PATTERN]; /* occurrences of pattern[t] before t */
};

double mix_schedule_fraction(const MixSchedule *m, double p) {
    if (p < m->pt[0].progress) return m->pt[0].fraction;
    int k = 0;
    while (k + 1 < m->n && m->pt[k + 1].progress <= p) k++;
    if (k + 1 == m->n) return m->pt[k].fraction;
    const MixPoint *a = &m->pt[k], *b = &m->pt[k + 1]; /* a.progress <= p < b.progress */
    return a->fraction + (b->fraction - a->fraction) * (p - a->progress) / (b->progress - a->progress);
}

double mix_schedule_weight(const MixSchedule *m, uint64_t step) {
    if (step >= m->total_steps) return mix_schedule_fraction(m, 1.0);
    return mix_schedule_fraction(m, (double)step / (double)m->total_steps);
}

int mix_schedule_create(MixSchedule **out, const MixPoint *points, int n, uint64_t total_steps,
                        uint32_t global_batch, char *err, size_t errlen) {
    *out = NULL;
    if (n < 1 || n > MIX_MAX_POINTS)
        return err_set(err, errlen, "mixture schedule: %d points, expected 1 to %d", n,
                       MIX_MAX_POINTS);
    if (total_steps < 1 || global_batch < 1)
        return err_set(err, errlen,
                       "mixture schedule: total steps and global batch must be positive");
    for (int k = 0; k < n; k++) {
        const MixPoint *p = &points[k];
        if (!(p->progress >= 0 && p->progress <= 1) || !(p->fraction >= 0 && p->fraction <= 1))
            return err_set(
                err, errlen,
                "mixture schedule point %d [%g, %g]: progress and fraction must be in [0, 1]", k,
                p->progress, p->fraction);
        if (k > 0 && p->progress < points[k - 1].progress)
            return err_set(
                err, errlen,
                "mixture schedule point %d: progress %g is below the previous point's %g", k,
                p->progress, points[k - 1].progress);
        if (k > 1 && p->progress == points[k - 2].progress)
            return err_set(err, errlen,
                           "mixture schedule point %d: more than two points at progress %g", k,
                           p->progress);
    }
    MixSchedule *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, errlen, "out of memory");
    memcpy(m->pt, points, (size_t)n * sizeof *points);
    m->n = n;
    m->total_steps = total_steps;
    m->batch = global_batch;
    m->n_acc = total_steps / MIX_CHECKPOINT + 1;
    m->acc = malloc(m->n_acc * sizeof *m->acc);
    if (!m->acc) {
        free(m);
        return err_set(err, errlen, "out of memory");
    }
    long double acc = 0;
    for (uint64_t i = 0; i < m->n_acc * MIX_CHECKPOINT; i++) {
        if (i % MIX_CHECKPOINT == 0) m->acc[i / MIX_CHECKPOINT] = acc;
        acc += mix_schedule_weight(m, i);
    }
    *out = m;
    return 0;
}

void mix_schedule_free(MixSchedule *m) {
    if (!m) return;
    free(m->acc);
    free(m);
}

/* sum_{i < step} w(i), always summed in the same order. */
static long double weight_sum(const MixSchedule *m, uint64_t step) {
    uint64_t c = step / MIX_CHECKPOINT;
    long double acc;
    uint64_t i;
    if (c < m->n_acc) {
        acc = m->acc[c];
        i = c * MIX_CHECKPOINT;
    } else { /* past the last checkpoint: w is the constant f(1) there */
        uint64_t last = (m->n_acc - 1) * MIX_CHECKPOINT;
        acc = m->acc[m->n_acc - 1];
        for (i = last; i < last + MIX_CHECKPOINT; i++) acc += mix_schedule_weight(m, i);
        return acc + (long double)(step - i) * mix_schedule_fraction(m, 1.0);
    }
    for (; i < step; i++) acc += mix_schedule_weight(m, i);
    return acc;
}

uint64_t mix_cum_domain(const MixSchedule *m, uint64_t step) {
    return (uint64_t)floorl((long double)m->batch * weight_sum(m, step) + 0.5L);
}

uint32_t mix_count_at(const MixSchedule *m, uint64_t step) {
    return (uint32_t)(mix_cum_domain(m, step + 1) - mix_cum_domain(m, step));
}

void mix_schedule_range(const MixSchedule *m, double *lo, double *hi) {
    *lo = *hi = m->pt[0].fraction;
    for (int k = 1; k < m->n; k++) {
        if (m->pt[k].fraction < *lo) *lo = m->pt[k].fraction;
        if (m->pt[k].fraction > *hi) *hi = m->pt[k].fraction;
    }
}

int mix_split_create(MixSplit **out, const double *w, int n, char *err, size_t errlen) {
    *out = NULL;
    if (n < 1 || n > MIX_MAX_SOURCES)
        return err_set(err, errlen, "%d sources in one role, expected 1 to %d", n, MIX_MAX_SOURCES);
    double total = 0;
    for (int j = 0; j < n; j++) {
        if (!(w[j] > 0) || !isfinite(w[j]))
            return err_set(err, errlen, "source weight %g must be positive", w[j]);
        total += w[j];
    }
    MixSplit *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, errlen, "out of memory");
    m->n = n;
    /* Largest remainder, then at least one slot per source (taken from the largest). */
    double rem[MIX_MAX_SOURCES];
    uint32_t given = 0;
    for (int j = 0; j < n; j++) {
        double x = w[j] / total * MIX_PATTERN;
        m->quota[j] = (uint32_t)floor(x);
        rem[j] = x - floor(x);
        given += m->quota[j];
    }
    while (given < MIX_PATTERN) {
        int best = 0;
        for (int j = 1; j < n; j++)
            if (rem[j] > rem[best]) best = j;
        m->quota[best]++;
        rem[best] = -1;
        given++;
    }
    for (int j = 0; j < n; j++)
        if (m->quota[j] == 0) {
            int big = 0;
            for (int i = 1; i < n; i++)
                if (m->quota[i] > m->quota[big]) big = i;
            m->quota[big]--;
            m->quota[j] = 1;
        }
    /* Largest deficit (t+1)*q_j - L*c_j first. */
    uint32_t c[MIX_MAX_SOURCES] = {0};
    for (uint32_t t = 0; t < MIX_PATTERN; t++) {
        int best = -1;
        int64_t best_d = 0;
        for (int j = 0; j < n; j++) {
            if (c[j] >= m->quota[j]) continue;
            int64_t d = (int64_t)(t + 1) * m->quota[j] - (int64_t)MIX_PATTERN * c[j];
            if (best < 0 || d > best_d) best = j, best_d = d;
        }
        m->pattern[t] = (uint16_t)best;
        m->rank[t] = (uint16_t)c[best]++;
    }
    *out = m;
    return 0;
}

void mix_split_free(MixSplit *m) { free(m); }

int mix_split_source(const MixSplit *m, uint64_t k, uint64_t *index_out) {
    uint32_t t = (uint32_t)(k % MIX_PATTERN);
    int j = m->pattern[t];
    *index_out = (k / MIX_PATTERN) * m->quota[j] + m->rank[t];
    return j;
}

uint64_t mix_split_count(const MixSplit *m, int j, uint64_t n) {
    uint64_t c = (n / MIX_PATTERN) * m->quota[j];
    for (uint32_t t = 0; t < n % MIX_PATTERN; t++) c += m->pattern[t] == j;
    return c;
}

uint32_t mix_split_quota(const MixSplit *m, int j) { return m->quota[j]; }
