#!/usr/bin/env python3
"""Checks a run's metrics.jsonl (tests/train).

  check_metrics.py RUN_DIR B STEPS SCHEDULE
      every train record has the documented fields with sane values; the
      domain share of each step is exactly the schedule's count
      round(C(s+1)) - round(C(s)), C(s) = B * sum_{i<s} f(i/S) (docs/data.md),
      recomputed here from the schedule; eval records for both splits; the
      resolved config parses with tomllib.
  check_metrics.py --same-losses RUN_A RUN_B
      the last record of every step has bitwise the same loss text in both.
"""
import json
import math
import sys
import tomllib
from fractions import Fraction


def records(run):
    return [json.loads(l) for l in open(f"{run}/metrics.jsonl")]


def f_of(points, p):
    """piecewise linear; a repeated progress is a step, the later point wins"""
    if p <= points[0][0]:
        return points[0][1]
    for (p0, f0), (p1, f1) in zip(points, points[1:]):
        if p0 <= p < p1:
            return f0 + (f1 - f0) * (p - p0) / (p1 - p0)
    return points[-1][1]


def expected_counts(points, B, S):
    out, c = [], 0.0
    rnd = lambda x: math.floor(x + 0.5)
    for s in range(S):
        w = f_of(points, s / S)
        out.append(rnd(c + B * w) - rnd(c))
        c += B * w
    return out


def check_run(run, B, S, points):
    recs = records(run)
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    errors = []
    if [r["step"] for r in train] != list(range(1, S + 1)):
        errors.append(f"train steps {[r['step'] for r in train][:5]}... are not 1..{S}")
    fields = {"type", "step", "tokens", "loss", "loss_domain", "loss_general", "lr", "grad_norm",
              "tok_s", "domain_frac"}
    want = expected_counts(points, B, S)
    cfg = tomllib.load(open(f"{run}/config.resolved.toml", "rb"))
    T = cfg["data"]["seq_len"]
    for r, n_dom in zip(train, want):
        if set(r) != fields:
            errors.append(f"step {r['step']}: fields {sorted(set(r) ^ fields)} differ")
            continue
        if r["tokens"] != r["step"] * B * T:
            errors.append(f"step {r['step']}: tokens {r['tokens']}")
        if abs(r["domain_frac"] * B - n_dom) > 1e-6:
            errors.append(f"step {r['step']}: domain_frac {r['domain_frac']} but the schedule "
                          f"gives {n_dom}/{B}")
        if not (0 < r["loss"] < 20 and r["lr"] > 0 and r["grad_norm"] > 0 and r["tok_s"] > 0):
            errors.append(f"step {r['step']}: implausible record {r}")
        for k, has in (("loss_domain", n_dom > 0), ("loss_general", n_dom < B)):
            if (r[k] is not None) != has:
                errors.append(f"step {r['step']}: {k} = {r[k]} with {n_dom} domain samples")
    splits = {(r["step"], r["split"]) for r in evals}
    for s in (0, 10, 20, 30):
        for sp in ("val/domain", "val/general"):
            if s <= S and (s, sp) not in splits:
                errors.append(f"no eval record for {sp} at step {s}")
    first = {r["split"]: r["loss"] for r in evals if r["step"] == 0}
    last = {r["split"]: r["loss"] for r in evals if r["step"] == S}
    for sp in first:
        if not last.get(sp, 99) < first[sp]:
            errors.append(f"{sp} did not improve: {first[sp]} -> {last.get(sp)}")
    if cfg["train"]["global_batch"] != B or cfg["train"]["steps"] != S:
        errors.append("config.resolved.toml disagrees with the run")
    print(f"{len(train)} train records, {len(evals)} eval records; domain counts {want[:3]}..."
          f"{want[-3:]}; val/domain {first.get('val/domain'):.4f} -> {last.get('val/domain'):.4f}")
    return errors


def same_losses(a, b):
    def last_by_step(run):
        out = {}
        for line in open(f"{run}/metrics.jsonl"):
            r = json.loads(line)
            if r["type"] == "train":
                out[r["step"]] = line.split('"loss":')[1].split(",")[0]
        return out
    la, lb = last_by_step(a), last_by_step(b)
    errors = [f"step {s}: loss {la[s]} vs {lb.get(s)}" for s in la if la[s] != lb.get(s)]
    if set(la) != set(lb):
        errors.append(f"steps differ: {sorted(set(la) ^ set(lb))}")
    print(f"{len(la)} steps compared")
    return errors


def main():
    if sys.argv[1] == "--same-losses":
        errors = same_losses(sys.argv[2], sys.argv[3])
    else:
        errors = check_run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                           json.loads(sys.argv[4]))
    for e in errors[:30]:
        print("FAIL:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
