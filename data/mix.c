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
    uint32_t period;                 /* L */
    uint32_t quota[MIX_MAX_SOURCES]; /* q_j, summing to L */
    uint32_t start[MIX_MAX_SOURCES]; /* source j's positions are pos[start[j] ..] */
    uint16_t *pattern;               /* (L) source of each position */
    uint32_t *rank;                  /* (L) occurrences of pattern[t] before t */
    uint32_t *pos;                   /* (L) positions grouped by source, ascending */
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

/* The smallest L <= MIX_PATTERN_MAX at which every share * L is a whole
 * number >= 1 (within 1e-9), with q = those numbers; 0 when there is none. */
static uint32_t exact_period(const double *share, int n, uint32_t *q) {
    for (uint32_t L = 1; L <= MIX_PATTERN_MAX; L++) {
        int ok = 1;
        for (int j = 0; j < n && ok; j++) {
            double x = share[j] * L, r = floor(x + 0.5);
            ok = r >= 1 && fabs(x - r) <= 1e-9;
        }
        if (!ok) continue;
        uint64_t sum = 0;
        for (int j = 0; j < n; j++) sum += q[j] = (uint32_t)floor(share[j] * L + 0.5);
        if (sum == L) return L;
    }
    return 0;
}

/* q by largest remainder over L = MIX_PATTERN_MAX, then at least one slot
 * per source (taken from the largest). */
static uint32_t rounded_period(const double *share, int n, uint32_t *q) {
    const uint32_t L = MIX_PATTERN_MAX;
    double rem[MIX_MAX_SOURCES];
    uint32_t given = 0;
    for (int j = 0; j < n; j++) {
        double x = share[j] * L;
        q[j] = (uint32_t)floor(x);
        rem[j] = x - floor(x);
        given += q[j];
    }
    while (given < L) {
        int best = 0;
        for (int j = 1; j < n; j++)
            if (rem[j] > rem[best]) best = j;
        q[best]++;
        rem[best] = -1;
        given++;
    }
    for (int j = 0; j < n; j++)
        if (q[j] == 0) {
            int big = 0;
            for (int i = 1; i < n; i++)
                if (q[i] > q[big]) big = i;
            q[big]--;
            q[j] = 1;
        }
    return L;
}

int mix_split_create(MixSplit **out, const double *w, int n, char *err, size_t errlen) {
    *out = NULL;
    if (n < 1 || n > MIX_MAX_SOURCES)
        return err_set(err, errlen, "%d sources in one role, expected 1 to %d", n, MIX_MAX_SOURCES);
    double total = 0, share[MIX_MAX_SOURCES];
    for (int j = 0; j < n; j++) {
        if (!(w[j] > 0) || !isfinite(w[j]))
            return err_set(err, errlen, "source weight %g must be positive", w[j]);
        total += w[j];
    }
    if (!isfinite(total)) return err_set(err, errlen, "source weights sum to %g", total);
    for (int j = 0; j < n; j++) share[j] = w[j] / total;
    MixSplit *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, errlen, "out of memory");
    m->n = n;
    m->period = exact_period(share, n, m->quota);
    if (!m->period) m->period = rounded_period(share, n, m->quota);
    const uint32_t L = m->period;
    m->pattern = malloc(L * sizeof *m->pattern);
    m->rank = malloc(L * sizeof *m->rank);
    m->pos = malloc(L * sizeof *m->pos);
    if (!m->pattern || !m->rank || !m->pos) {
        mix_split_free(m);
        return err_set(err, errlen, "out of memory");
    }
    for (int j = 1; j < n; j++) m->start[j] = m->start[j - 1] + m->quota[j - 1];
    /* Earliest deadline first: source j's next slot i = c[j] is released at
     * floor(i L / q_j) and due at ceil((i + 1) L / q_j) - 1. */
    uint32_t c[MIX_MAX_SOURCES] = {0};
    for (uint32_t t = 0; t < L; t++) {
        int best = -1;
        uint64_t best_due = 0;
        for (int j = 0; j < n; j++) {
            uint64_t i = c[j], q = m->quota[j];
            if (i >= q || i * L / q > t) continue;
            uint64_t due = ((i + 1) * L + q - 1) / q - 1;
            if (best < 0 || due < best_due) best = j, best_due = due;
        }
        if (best < 0 || best_due < t) { /* cannot happen: a feasible schedule exists */
            mix_split_free(m);
            return err_set(err, errlen, "internal error: no source due at pattern slot %u", t);
        }
        m->pattern[t] = (uint16_t)best;
        m->rank[t] = c[best];
        m->pos[m->start[best] + c[best]++] = t;
    }
    *out = m;
    return 0;
}

void mix_split_free(MixSplit *m) {
    if (!m) return;
    free(m->pattern), free(m->rank), free(m->pos);
    free(m);
}

int mix_split_source(const MixSplit *m, uint64_t k, uint64_t *index_out) {
    uint32_t t = (uint32_t)(k % m->period);
    int j = m->pattern[t];
    *index_out = (k / m->period) * m->quota[j] + m->rank[t];
    return j;
}

uint64_t mix_split_count(const MixSplit *m, int j, uint64_t n) {
    uint32_t r = (uint32_t)(n % m->period), lo = 0, hi = m->quota[j];
    const uint32_t *p = m->pos + m->start[j];
    while (lo < hi) { /* positions of j before r */
        uint32_t mid = (lo + hi) / 2;
        if (p[mid] < r) lo = mid + 1;
        else hi = mid;
    }
    return (n / m->period) * m->quota[j] + lo;
}

uint32_t mix_split_quota(const MixSplit *m, int j) { return m->quota[j]; }

uint32_t mix_split_period(const MixSplit *m) { return m->period; }
