#!/usr/bin/env python3
"""Checks a run's metrics.jsonl (tests/train).

  check_metrics.py RUN_DIR B STEPS SCHEDULE
      every train record has the documented fields with sane values; the
      domain share of each step is exactly the schedule's count
      round(C(s+1)) - round(C(s)), C(s) = B * sum_{i<s} f(i/S) (docs/data.md),
      recomputed here from the schedule; the cumulative per-source samples
      and loss_by_source of the shorthand's two sources ("domain",
      "general") agree with those counts; eval records for both splits; the
      resolved config parses with tomllib.
  check_metrics.py --sources RUN_DIR B STEPS SCHEDULE
      the same for a run of [[data.sources]] (read from its resolved config),
      and at every step each source's cumulative sample count is strictly
      within one sample of its exact weighted share of its role's count
      (Fractions of the weights, not the trainer's pattern), the role's
      sources add up to its count, loss_by_source is null exactly when a
      source got no sample in the step; every eval step has val/NAME for
      each source with val shards and the role aggregates, and val/domain is
      the window-weighted mean of its sources' losses.
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


def sources_of(cfg):
    """[(name, role, weight, has_val)] of the run: its tables or the shorthand"""
    d = cfg["data"]
    if "sources" in d:
        return [(t["name"], t["role"], Fraction(str(t["weight"])), bool(t["val"]))
                for t in d["sources"]]
    return [(r, r, Fraction(1), bool(d[f"val_{r}"])) for r in ("domain", "general") if d[r]]


def check_samples(train, want, B, sources, errors):
    """exact-share rule at every step; loss_by_source null iff no sample"""
    names = [s[0] for s in sources]
    total = {r: sum(w for _, rr, w, _ in sources if rr == r) for r in ("domain", "general")}
    n_dom = 0
    prev = {n: 0 for n in names}
    for r, nd in zip(train, want):
        n_dom += nd
        n_role = {"domain": n_dom, "general": r["step"] * B - n_dom}
        got = r["samples"]
        if sorted(got) != sorted(names) or sorted(r["loss_by_source"]) != sorted(names):
            errors.append(f"step {r['step']}: samples / loss_by_source keys {sorted(got)} "
                          f"are not the sources {sorted(names)}")
            return
        for role in ("domain", "general"):
            members = [n for n, rr, _, _ in sources if rr == role]
            if members and sum(got[n] for n in members) != n_role[role]:
                errors.append(f"step {r['step']}: {role} sources hold "
                              f"{sum(got[n] for n in members)} samples, the schedule {n_role[role]}")
        for name, role, w, _ in sources:
            exact = n_role[role] * w / total[role]
            if not abs(got[name] - exact) < 1:
                errors.append(f"step {r['step']}: {name} has {got[name]} samples, its exact share "
                              f"is {float(exact):.3f}")
            fresh = got[name] > prev[name]
            if (r["loss_by_source"][name] is not None) != fresh:
                errors.append(f"step {r['step']}: loss_by_source[{name}] = "
                              f"{r['loss_by_source'][name]} with {got[name] - prev[name]} new samples")
            prev[name] = got[name]


def check_evals(evals, sources, tables, errors):
    """per-source splits at every eval step (tables only); val/ROLE is a
    window-weighted mean of its sources' losses: between their least and
    greatest (printed to 6 decimals: 1e-6), equal for a role of one"""
    by_step = {}
    for r in evals:
        by_step.setdefault(r["step"], {})[r["split"]] = r["loss"]
    for step, got in sorted(by_step.items()):
        if not tables:
            continue
        for role in ("domain", "general"):
            members = [f"val/{n}" for n, rr, _, v in sources if rr == role and v]
            for m in members:
                if m not in got:
                    errors.append(f"eval step {step}: no {m}")
            if not members or any(m not in got for m in members):
                continue
            vals = [got[m] for m in members]
            agg = got.get(f"val/{role}")
            if agg is None or not min(vals) - 1e-6 <= agg <= max(vals) + 1e-6 or \
                    (len(vals) == 1 and agg != vals[0]):
                errors.append(f"eval step {step}: val/{role} = {agg}, its sources {vals}")


def check_run(run, B, S, points, tables=False):
    recs = records(run)
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    errors = []
    if [r["step"] for r in train] != list(range(1, S + 1)):
        errors.append(f"train steps {[r['step'] for r in train][:5]}... are not 1..{S}")
    fields = {"type", "step", "tokens", "loss", "loss_domain", "loss_general", "lr", "grad_norm",
              "tok_s", "domain_frac", "samples", "loss_by_source"}
    want = expected_counts(points, B, S)
    cfg = tomllib.load(open(f"{run}/config.resolved.toml", "rb"))
    T = cfg["data"]["seq_len"]
    sources = sources_of(cfg)
    if tables != ("sources" in cfg["data"]):
        errors.append(f"[[data.sources]] in the resolved config: {'sources' in cfg['data']}")
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
    if not errors:
        check_samples(train, want, B, sources, errors)
    check_evals(evals, sources, tables, errors)
    if not tables and {r["split"] for r in evals} - {"val/domain", "val/general"}:
        errors.append(f"shorthand run with splits {sorted({r['split'] for r in evals})}")
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
    elif sys.argv[1] == "--sources":
        errors = check_run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                           json.loads(sys.argv[5]), tables=True)
    else:
        errors = check_run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                           json.loads(sys.argv[4]))
    for e in errors[:30]:
        print("FAIL:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
