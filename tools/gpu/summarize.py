#!/usr/bin/env python3
"""tools/gpu/summarize.py: the results step of tools/gpu-check.

Reads the JSON-lines files the CUDA test programs wrote under OUT
(ops-fp32.jsonl, ops-bf16.jsonl, train.jsonl, train-arch.jsonl, train-mem.jsonl,
bench.jsonl),
prints one line
per op and mode (worst relative error over its outputs and shapes, the
tolerance, pass/FAIL), the training checks and the benchmark figures, and
writes everything to OUT/results.json.

Usage: summarize.py OUT COMMIT CARD TOTAL_SECONDS (standard library only)
"""
import json
import os
import sys


def read_jsonl(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                print(f"summarize: {path}:{n}: bad JSON ({e})")
    return rows


def main():
    out, commit, card, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    results = {"commit": commit, "card": card, "total_s": total, "ops": [], "train": [],
               "curves": [], "bench": []}

    print("\nop results (worst rel err over outputs and shapes):")
    for mode in ("fp32", "bf16"):
        per_op = {}
        for r in read_jsonl(os.path.join(out, f"ops-{mode}.jsonl")):
            key = r["op"]
            e = r["rel_err"] if r["rel_err"] >= 0 else float("inf")
            worst = per_op.get(key)
            if worst is None:
                per_op[key] = {"op": key, "mode": mode, "worst_rel_err": e, "tol": r["tol"],
                               "pass": r["pass"], "worst_output": r["output"]}
            else:
                if e > worst["worst_rel_err"]:
                    worst["worst_rel_err"], worst["worst_output"] = e, r["output"]
                worst["pass"] = worst["pass"] and r["pass"]
        for o in per_op.values():
            print(f"  {o['op']:<15} {mode:<5} {o['worst_rel_err']:<10.3g} "
                  f"({o['worst_output']:<8}) tol {o['tol']:<7g} {'ok' if o['pass'] else 'FAIL'}")
            if o["worst_rel_err"] == float("inf"):
                o["worst_rel_err"] = None
            results["ops"].append(o)

    train = read_jsonl(os.path.join(out, "train.jsonl"))
    for r in (train + read_jsonl(os.path.join(out, "train-arch.jsonl")) +
              read_jsonl(os.path.join(out, "train-mem.jsonl"))):
        if r.get("test") == "curve":
            results["curves"].append(r)
        else:
            results["train"].append(r)
    if results["train"]:
        print("\ntraining steps:")
        for r in results["train"]:
            print(f"  {r['arch']:<6} {r['check']:<28} {r['value']:<10.3g} tol {r['tol']:<7g} "
                  f"{'ok' if r['pass'] else 'FAIL'}")

    bench = read_jsonl(os.path.join(out, "bench.jsonl"))
    # device memory against dapt plan (bench_cuda's "-memory" records)
    results["memory"] = [b for b in bench if "-memory" in b["bench"]]
    results["bench"] = [b for b in bench if not "-memory" in b["bench"]]
    if results["memory"]:
        print("\ndevice memory of the run against dapt plan:")
        for b in results["memory"]:
            print(f"  {b['bench']:<24} {b['used_bytes'] / 2**30:.2f} GiB, plan "
                  f"{b['plan_bytes'] / 2**30:.2f} GiB: {b['ratio']:.3f}x "
                  f"{'ok' if b['pass'] else 'FAIL'}")
    if results["bench"]:
        print("\nbenchmark (bf16):")
        for b in results["bench"]:
            accum = f" accum={b['accum']}" if b.get("accum", 1) > 1 else ""
            fused = " fused residual+norm" if b.get("fused_norm") else ""
            if b.get("recompute", "none") != "none":
                fused += f" recompute={b['recompute']}"
            if b.get("offload"):
                fused += " offload"
            print(f"  {b['bench']:<16} B={b['B']} T={b['T']}{accum} {b['ms_per_step']:.1f} ms/step "
                  f"{b['tokens_per_s']:.0f} tokens/s MFU {100 * b['mfu']:.1f}% "
                  f"(peak {b['peak_tflops']} TFLOPS){fused}")

    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
