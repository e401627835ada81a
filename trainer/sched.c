/* sched.c: learning-rate schedules (see sched.h for the formulas). */
#include "trainer/sched.h"
#include "kernels/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int sched_kind_parse(const char *name, SchedKind *kind, char *err, size_t err_len) {
    if (!strcmp(name, "cosine")) *kind = SCHED_COSINE;
    else if (!strcmp(name, "linear")) *kind = SCHED_LINEAR;
    else if (!strcmp(name, "wsd")) *kind = SCHED_WSD;
    else {
        return err_set(err, err_len,
                       "unknown lr_schedule '%s' (expected \"cosine\", \"linear\" or \"wsd\")",
                       name);
    }
    return 0;
}

int sched_check(const LrSchedule *s, char *err, size_t err_len) {
    if (!(s->lr > 0.0f)) return err_set(err, err_len, "lr must be > 0 (got %g)", s->lr);
    if (!(s->min_lr >= 0.0f && s->min_lr <= s->lr))
        return err_set(err, err_len, "min_lr must be in [0, lr=%g] (got %g)", s->lr, s->min_lr);
    if (s->total_steps < 1)
        return err_set(err, err_len, "steps must be >= 1 (got %d)", s->total_steps);
    if (s->warmup_steps < 0 || s->warmup_steps > s->total_steps)
        return err_set(err, err_len, "warmup_steps must be in [0, steps=%d] (got %d)",
                       s->total_steps, s->warmup_steps);
    if (s->kind == SCHED_WSD && !(s->decay_frac >= 0.0f && s->decay_frac <= 1.0f))
        return err_set(err, err_len, "decay_frac must be in [0, 1] (got %g)", s->decay_frac);
    return 0;
}

static double clamp01(double x) { return x < 0.0 ? 0.0 : x > 1.0 ? 1.0 : x; }

float sched_lr(const LrSchedule *s, int step) {
    int W = s->warmup_steps, S = s->total_steps;
    if (step < W) return s->lr * (float)(step + 1) / (float)W;
    double lr = s->lr, lo = s->min_lr, p;
    switch (s->kind) {
    case SCHED_COSINE:
        p = S > W ? clamp01((double)(step - W) / (S - W)) : 1.0;
        return (float)(lo + (lr - lo) * 0.5 * (1.0 + cos(M_PI * p)));
    case SCHED_LINEAR:
        p = S > W ? clamp01((double)(step - W) / (S - W)) : 1.0;
        return (float)(lr + (lo - lr) * p);
    case SCHED_WSD: {
        int D = S - (int)lround(s->decay_frac * S);
        if (D < W) D = W;
        if (step < D) return s->lr;
        p = S > D ? clamp01((double)(step - D) / (S - D)) : 1.0;
        return (float)(lr + (lo - lr) * p);
    }
    }
    return s->lr;
}
