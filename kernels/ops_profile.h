/* ops_profile.h: a per-op time profile over any backend. ops_profiled(inner)
 * returns an Ops table with the same name, act_bytes and memory functions
 * as `inner`, whose every other non-NULL op (NULL ones stay NULL) does
 *   inner->sync(); t0 = monotonic clock; inner->op(...); inner->sync();
 * and adds the elapsed time to a per-op accumulator, with the call count,
 * the FLOPs of the call where they are known (matmul_fwd/bwd, lmhead_ce,
 * attention_fwd/bwd) and an estimate of the bytes it reads and writes in
 * backend memory (the memory-bound ops). matmul_fwd/bwd are kept per
 * (IC, OC) shape, so the report shows which GEMM runs slowly.
 *
 * Syncing around every op serialises what a device backend would overlap
 * (the next launch does not hide behind the running kernel): the profile
 * says where the time goes, it is not the benchmark. Time outside ops in
 * the report (wall minus the ops' sum) is host work and launch gaps.
 *
 * The accumulators are process-wide (the op functions carry no context):
 * one profiled table at a time, used from one thread, like the model. A
 * second ops_profiled() with another inner rebinds the table and resets.
 */
#ifndef DAPT_OPS_PROFILE_H
#define DAPT_OPS_PROFILE_H

#include <stdio.h>

#include "kernels/ops.h"

/* The profiled table over `inner` (NULL when inner is NULL). Counters start
 * at zero and profiling on. Passing the profiled table itself returns it. */
const Ops *ops_profiled(const Ops *inner);
/* on = 0: the profiled table passes each call straight to inner (no sync,
 * no clock, nothing counted) until switched on again. */
void ops_profile_enable(int on);
void ops_profile_reset(void);

typedef struct {
    const char *op; /* the Ops field name, e.g. "matmul_fwd" */
    int ic, oc;     /* matmul_fwd/bwd shape; 0 for other ops */
    long calls;
    double seconds;
    double flops; /* 0 where not counted */
    double bytes; /* backend-memory traffic estimate; 0 where not counted */
} OpsProfileEntry;

/* Copies up to max entries (one per op, one per matmul shape; only ops
 * called since the last reset) into out; returns how many exist. */
int ops_profile_entries(OpsProfileEntry *out, int max);
/* The sum over every entry of op `op` (all matmul shapes together) into
 * *out; returns 0, or -1 when the op was not called (out zeroed). */
int ops_profile_get(const char *op, OpsProfileEntry *out);
/* The table, sorted by time: op, calls/step, ms/step, % of wall,
 * TFLOP/s and GB/s where known; then the ops' sum, the time outside ops and
 * the wall time. step_count: steps the counters cover; wall_s: the caller's
 * wall time over those steps (bracketed by syncs). */
void ops_profile_report(FILE *f, double step_count, double wall_s);

#endif
