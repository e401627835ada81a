"""check_bf16_sum.py ONE TWO RUN_ONE RUN_TWO: the first step's bf16 gradient
sum over 2 ranks against one process, with no tolerance fitted to a machine.

ONE and TWO are the CUEMU_NCCL_DUMP folders (tests/cuemu/nccl_emu.c) of a
bf16 run on one process with two micro-batches (dist.backend = "nccl", so
its gradient passes through a one-rank all-reduce and is dumped) and of the
same run on 2 ranks with one micro-batch each (rank r's micro-batch is the
one process's micro-batch r: the stream gives rank r the slots
[r * B/2, (r+1) * B/2)). Every gradient element is, per micro-batch k, one
fp32 contribution c_k added to the bf16 gradient and rounded once
(R = fp32 then bf16, to nearest even: the GEMMs with beta = 1, the
embedding and norm backward kernels). Weights and data are the same at step
1, so each c_k is bitwise the same in both runs, and:

  two ranks:   a = R(c_1), b = R(c_2) (each rank's gradient), g2 = R(a + b)
  one process: after micro-batch 1 the gradient is a (bitwise), then
               g1 = R(a + c_2)

Checks, element by element over the whole gradient:
  1. exact: g2 == R(a + b), the 2-rank sum is the sum of the ranks'
     gradients done here in the same order (a sum that drops a rank, adds
     one twice or uses the wrong type fails);
  2. bounded by bf16 rounding alone: b = R(c_2) puts c_2 within half a bf16
     ulp h(b) of b, and R is monotone, so
         R(a + b - h(b)) <= g1 <= R(a + b + h(b)).
     a + b +- h(b) are exact in float64 (bf16 operands). Nothing here depends
     on the CPU's BLAS kernels: they decide c_k, which both runs share.
  3. the losses before the first update (the step-0 eval, step 1's train
     losses) of RUN_ONE and RUN_TWO (metrics.jsonl): each sequence's forward
     is the same computation in both runs, only the float64 sums of a dozen
     sequence losses are reordered (~1e-16 relative): 1e-12.
"""
import json
import sys

import numpy as np


def bf16_bits(path, n=None):
    """a raw little-endian bf16 dump as uint16"""
    v = np.fromfile(path, dtype="<u2")
    if n is not None and v.size != n:
        sys.exit(f"FAIL: {path}: {v.size} values, expected {n}")
    return v


def to_f64(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def round_bf16(x64):
    """R: float64 -> fp32 (to nearest even) -> bf16 (to nearest even), as bits"""
    u = x64.astype(np.float32).view(np.uint32).astype(np.uint64)
    if not np.all(np.isfinite(x64)):
        sys.exit("FAIL: a non-finite value in the gradient sums")
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def half_ulp(bits):
    """half a bf16 ulp at each value (subnormals: the smallest ulp, 2^-133)"""
    e = ((bits >> 7) & 0xFF).astype(np.int64)
    return np.ldexp(1.0, np.maximum(e, 1) - 127 - 7 - 1)


def first_losses(run):
    """{(type, step, key): value} of the records before the first update"""
    out = {}
    for line in open(f"{run}/metrics.jsonl"):
        r = json.loads(line)
        if r["type"] == "eval" and r["step"] == 0:
            out[("eval", r["split"])] = r["loss"]
        elif r["type"] == "train" and r["step"] == 1:
            for k in ("loss", "loss_domain", "loss_general"):
                if r.get(k) is not None:
                    out[("train", k)] = r[k]
    return out


def check_losses(run_one, run_two):
    a, b = first_losses(run_one), first_losses(run_two)
    if ("train", "loss") not in a or a.keys() != b.keys():
        sys.exit(f"FAIL: {run_one} and {run_two}: not the same first records: "
                 f"{sorted(a)} vs {sorted(b)}")
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a)
    print(f"losses before the first update: {len(a)} values, max relative difference {worst:.3g}")
    if worst > 1e-12:
        sys.exit(f"FAIL: {worst:.3g} > 1e-12: {a} vs {b}")


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: check_bf16_sum.py ONE_DIR TWO_DIR RUN_ONE RUN_TWO")
    one, two = sys.argv[1], sys.argv[2]
    check_losses(sys.argv[3], sys.argv[4])
    g1 = bf16_bits(f"{one}/bf16-allreduce-r0.out")
    n = g1.size
    if n == 0:
        sys.exit("FAIL: empty dump")
    # a one-rank all-reduce returns its input
    if not np.array_equal(bf16_bits(f"{one}/bf16-allreduce-r0.in", n), g1):
        sys.exit("FAIL: one process: the one-rank all-reduce changed the gradient")
    ab = bf16_bits(f"{two}/bf16-allreduce-r0.in", 2 * n)
    a, b = ab[:n], ab[n:]
    g2 = bf16_bits(f"{two}/bf16-allreduce-r0.out", n)
    if not np.array_equal(bf16_bits(f"{two}/bf16-allreduce-r1.out", n), g2):
        sys.exit("FAIL: the two ranks' sums differ")
    fa, fb = to_f64(a), to_f64(b)
    want = round_bf16(fa + fb)
    bad = np.flatnonzero(want != g2)
    if bad.size:
        i = bad[0]
        sys.exit(f"FAIL: {bad.size} of {n} summed elements are not R(a + b); first at {i}: "
                 f"a {fa[i]:.9g} + b {fb[i]:.9g} -> {to_f64(g2[i:i+1])[0]:.9g}, "
                 f"expected {to_f64(want[i:i+1])[0]:.9g}")
    h = half_ulp(b)
    lo, hi = to_f64(round_bf16(fa + fb - h)), to_f64(round_bf16(fa + fb + h))
    v1 = to_f64(g1)
    out = np.flatnonzero((v1 < lo) | (v1 > hi))
    same = int(np.sum(g1 == g2))
    print(f"bf16 gradient sum, step 1, {n} elements: 2 ranks == R(a + b) bitwise; "
          f"one process within [R(a+b-h), R(a+b+h)]: {n - out.size} of {n} "
          f"({same} bitwise equal to the 2-rank sum)")
    if not np.any(a) or not np.any(b):
        sys.exit("FAIL: a rank's gradient is all zero: the check would prove nothing")
    if out.size:
        i = out[0]
        sys.exit(f"FAIL: {out.size} elements of one process's gradient outside the bf16 "
                 f"rounding interval; first at {i}: {v1[i]:.9g} not in "
                 f"[{lo[i]:.9g}, {hi[i]:.9g}] (a {fa[i]:.9g}, b {fb[i]:.9g})")


if __name__ == "__main__":
    main()
