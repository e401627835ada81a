/* sched.h: learning-rate schedules as a pure function of the step, so a
 * resumed run computes the same rate as an uninterrupted one.
 *
 * Step s counts from 0; total steps S; warmup W; peak lr; floor min_lr.
 * - warmup (all kinds): s < W: lr * (s + 1) / W
 * - cosine: min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * p)), p = (s - W) / (S - W)
 * - linear: lr + (min_lr - lr) * p
 * - wsd (warmup-stable-decay): lr until the last decay_frac of the steps,
 *   then linear to min_lr over them: p = (s - D) / (S - D), D = S - round(decay_frac * S)
 *   (D is never before W)
 * p is clamped to [0, 1].
 */
#ifndef DAPT_SCHED_H
#define DAPT_SCHED_H

#include <stddef.h>

typedef enum { SCHED_COSINE = 0, SCHED_LINEAR = 1, SCHED_WSD = 2 } SchedKind;

typedef struct {
    SchedKind kind;
    float lr, min_lr;
    int warmup_steps, total_steps;
    float decay_frac; /* wsd only */
} LrSchedule;

/* "cosine" | "linear" | "wsd"; 0 on success */
int sched_kind_parse(const char *name, SchedKind *kind, char *err, size_t err_len);
int sched_check(const LrSchedule *s, char *err, size_t err_len);
float sched_lr(const LrSchedule *s, int step);

#endif
