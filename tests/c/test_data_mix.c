/* test_data_mix: the mixture schedule and the source split (data/mix.h) and
 * the keyed permutation (data/hash.h). Composition exactness over a long
 * schedule with a step change and a ramp, checked against sums computed here;
 * the split's per-source counts and indices; the permutation is a bijection;
 * pinned hash values (they decide train/val splits and sample orders, so a
 * change must be deliberate). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "data/hash.h"
#include "data/mix.h"
#include "tests/c/check.h"

static char err[512];

static void perm(void) {
    uint64_t sizes[] = {1, 2, 3, 7, 64, 1000, 4097};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        uint64_t n = sizes[k];
        unsigned char *seen = calloc(n, 1);
        size_t bad = 0, fixed = 0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t j = hash_perm(12345, n, i);
            if (j >= n || seen[j]) bad++;
            else seen[j] = 1;
            fixed += j == i;
        }
        CHECK(bad == 0);
        if (n >= 64) CHECK(fixed < n / 8); /* it does permute */
        free(seen);
    }
    size_t same = 0;
    for (uint64_t i = 0; i < 1000; i++) same += hash_perm(1, 1000, i) == hash_perm(2, 1000, i);
    CHECK(same < 20); /* different keys, different orders (about 1 expected) */
    /* Pinned values. */
    CHECK(hash_mix64(0) == 0xe220a8397b1dcdafULL);
    CHECK(hash_bytes("dapt", 4, 0) == hash_bytes("dapt", 4, 0) && hash_bytes("dapt", 4, 0) != hash_bytes("dapu", 4, 0));
}

/* The two schedules under test, evaluated independently of mix.c. */
static double f_step(double p) { return p < 0.85 ? 0.3 : 0.6; }
static double f_ramp(double p) {
    if (p <= 0.5) return 0.1 + 0.8 * p;
    return 0.5 - 0.6 * (p - 0.5);
}

static void schedule(const MixPoint *pts, int n, double (*f)(double), uint64_t S, uint32_t B) {
    MixSchedule *m;
    CHECK_OK(mix_schedule_create(&m, pts, n, S, B, err, sizeof err), err);
    if (!m) return;
    long double C = 0;
    size_t bad_step = 0, bad_cum = 0, bad_w = 0;
    uint64_t total = 0;
    for (uint64_t s = 0; s < S + 3000; s++) {
        double w = f(s >= S ? 1.0 : (double)s / (double)S);
        if (fabs(mix_schedule_weight(m, s) - w) > 1e-12) bad_w++;
        uint32_t c = mix_count_at(m, s);
        total += c;
        C += (long double)B * w;
        /* per step: within one sample of B*w(s) */
        if (fabsl((long double)c - (long double)B * w) >= 1) bad_step++;
        /* cumulative: within half a sample (+ summation rounding, far below 1e-6) */
        if (fabsl((long double)total - C) > 0.5L + 1e-6L) bad_cum++;
        if (mix_cum_domain(m, s + 1) != total) bad_cum++;
    }
    CHECK(bad_w == 0);
    CHECK(bad_step == 0);
    CHECK(bad_cum == 0);
    /* Order independence: the same counts asked for backwards and scattered. */
    size_t bad_order = 0;
    for (uint64_t s = S + 2999; s > S - 3000; s -= 7) {
        uint32_t c = mix_count_at(m, s);
        double w = f(s >= S ? 1.0 : (double)s / (double)S);
        if (fabs((double)c - B * w) >= 1) bad_order++;
    }
    CHECK(bad_order == 0);
    mix_schedule_free(m);
}

static void schedules(void) {
    const uint64_t S = 20000;
    const uint32_t B = 48;
    MixPoint step[] = {{0, 0.3}, {0.85, 0.3}, {0.85, 0.6}, {1, 0.6}};
    schedule(step, 4, f_step, S, B);
    MixPoint ramp[] = {{0, 0.1}, {0.5, 0.5}, {1, 0.2}};
    schedule(ramp, 3, f_ramp, S, B);

    MixSchedule *m;
    CHECK_OK(mix_schedule_create(&m, step, 4, S, B, err, sizeof err), err);
    if (m) {
        /* Before the change 0.3*48 = 14.4 per step, after 0.6*48 = 28.8. */
        int before_ok = 1, after_ok = 1;
        for (uint64_t s = 0; s < 17000; s++) before_ok &= mix_count_at(m, s) == 14 || mix_count_at(m, s) == 15;
        for (uint64_t s = 17000; s < S; s++) after_ok &= mix_count_at(m, s) == 28 || mix_count_at(m, s) == 29;
        CHECK(before_ok && after_ok);
        CHECK(mix_cum_domain(m, 17000) == 244800); /* 0.3 * 48 * 17000 exactly */
        CHECK(mix_cum_domain(m, S) == 244800 + 86400);
        double lo, hi;
        mix_schedule_range(m, &lo, &hi);
        CHECK(lo == 0.3 && hi == 0.6);
        mix_schedule_free(m);
    }
    MixPoint constant[] = {{0, 0.25}};
    CHECK_OK(mix_schedule_create(&m, constant, 1, 100, 8, err, sizeof err), err);
    if (m) {
        int ok = 1;
        for (uint64_t s = 0; s < 200; s++) ok &= mix_count_at(m, s) == 2;
        CHECK(ok);
        mix_schedule_free(m);
    }
    MixPoint unsorted[] = {{0.5, 0.3}, {0.2, 0.3}};
    CHECK_FAILS(mix_schedule_create(&m, unsorted, 2, 100, 8, err, sizeof err), err, "point 1", "below");
    MixPoint range[] = {{0, 1.5}};
    CHECK_FAILS(mix_schedule_create(&m, range, 1, 100, 8, err, sizeof err), err, "[0, 1]");
    MixPoint triple[] = {{0.5, 0.1}, {0.5, 0.2}, {0.5, 0.3}};
    CHECK_FAILS(mix_schedule_create(&m, triple, 3, 100, 8, err, sizeof err), err, "more than two");
}

/* exact: the weights' shares are multiples of 1/period_expected, so every
 * prefix must be within one sample of the true weighted share (not only of
 * the pattern's). */
static void split(const double *w, int n, uint32_t period_expected) {
    MixSplit *m;
    CHECK_OK(mix_split_create(&m, w, n, err, sizeof err), err);
    if (!m) return;
    const uint32_t L = mix_split_period(m);
    double total = 0;
    uint32_t qsum = 0;
    for (int j = 0; j < n; j++) total += w[j];
    if (period_expected) CHECK(L == period_expected);
    for (int j = 0; j < n; j++) {
        uint32_t q = mix_split_quota(m, j);
        qsum += q;
        CHECK(q >= 1);
        /* exact shares: q/L is the share; else largest remainder: within one
         * slot of it (+1 for the minimum of one) */
        CHECK(fabs(q - w[j] / total * L) < (period_expected ? 1e-9 : 2));
    }
    CHECK(qsum == L);
    /* Over three periods: source j's indices are 0, 1, 2, ... in order and
     * every prefix n holds strictly within one sample of n q_j / L (for
     * exact shares, of n w_j / sum w). */
    uint64_t next[MIX_MAX_SOURCES] = {0};
    size_t bad_index = 0, bad_prefix = 0, bad_count = 0;
    for (uint64_t k = 0; k < 3 * (uint64_t)L; k++) {
        uint64_t idx;
        int j = mix_split_source(m, k, &idx);
        if (j < 0 || j >= n || idx != next[j]) bad_index++;
        else next[j]++;
        for (int i = 0; i < n; i++) {
            double exact = period_expected ? (double)(k + 1) * w[i] / total
                                           : (double)(k + 1) * mix_split_quota(m, i) / L;
            if (fabs((double)next[i] - exact) >= 1.0 - 1e-9) bad_prefix++;
        }
        if (k % 97 == 0)
            for (int i = 0; i < n; i++) bad_count += mix_split_count(m, i, k + 1) != next[i];
    }
    CHECK(bad_index == 0);
    CHECK(bad_prefix == 0);
    CHECK(bad_count == 0);
    for (int j = 0; j < n; j++) CHECK(mix_split_count(m, j, 3 * (uint64_t)L) == next[j]);
    mix_split_free(m);
}

int main(void) {
    perm();
    schedules();
    double w1[] = {1, 2, 3.5};
    split(w1, 3, 13); /* 2/13, 4/13, 7/13 */
    double w2[] = {0.0001, 1};
    split(w2, 2, 10001);
    double w3[] = {5};
    split(w3, 1, 1);
    double w4[] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
    split(w4, 11, 44);
    double w6[] = {15, 1, 4}; /* Me-LLaMA's biomedical : clinical : general */
    split(w6, 3, 20);
    double w7[] = {0.3, 0.7};
    split(w7, 2, 10);
    double w8[] = {1, 1, 1}; /* 1/3 exactly as far as doubles go */
    split(w8, 3, 3);
    double w9[] = {0.3333333, 0.6666667}; /* no period <= MIX_PATTERN_MAX: rounded */
    split(w9, 2, 0);
    double w10[] = {1e-6, 1, 2.5e-5}; /* rounded, the smallest given its one slot */
    split(w10, 3, 0);
    /* One source (data.domain / data.general shorthand): the identity, as
     * before the exact split, so the shorthand's batches are unchanged. */
    MixSplit *one;
    double w_one[] = {0.5};
    CHECK_OK(mix_split_create(&one, w_one, 1, err, sizeof err), err);
    if (one) {
        size_t bad = 0;
        for (uint64_t k = 0; k < 100000; k += 7) {
            uint64_t idx;
            bad += mix_split_source(one, k, &idx) != 0 || idx != k || mix_split_count(one, 0, k) != k;
        }
        CHECK(bad == 0 && mix_split_period(one) == 1);
        mix_split_free(one);
    }
    double w5[] = {1, -1};
    MixSplit *m;
    CHECK_FAILS(mix_split_create(&m, w5, 2, err, sizeof err), err, "positive");
    return CHECK_DONE();
}
