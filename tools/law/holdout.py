#!/usr/bin/env python3
"""tools/law/holdout.py: the held-out-ratio check of a sweep (docs/dcpt.md,
"Experiment"). Splits a results file into the rows of the held-out domain
ratios and the rest, fits the law on the rest with `dapt law fit`, predicts
every held-out row with `dapt law predict --json` and prints the relative
error of both losses per held-out ratio and model size, and overall.

    tools/law/holdout.py RESULTS --hold 0.25,0.75 --out DIR [--dapt build/dapt]

Writes DIR/train.jsonl, DIR/heldout.jsonl, DIR/law.json, DIR/fit.txt and
DIR/holdout.json (the per-row predictions). Standard library only."""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("--hold", required=True, help="comma-separated r_domain values to hold out")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dapt", default="build/dapt")
    a = ap.parse_args()
    hold = [float(x) for x in a.hold.split(",")]
    rows = []
    for i, line in enumerate(open(a.results), 1):
        if line.strip() and not line.startswith("#"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"{a.results}:{i}: {e}")
    held = [r for r in rows if any(abs(r["r_domain"] - h) < 1e-12 for h in hold)]
    rest = [r for r in rows if r not in held]
    missing = [h for h in hold if not any(abs(r["r_domain"] - h) < 1e-12 for r in held)]
    if missing:
        sys.exit(f"{a.results}: no rows with r_domain {missing}")
    os.makedirs(a.out, exist_ok=True)
    for name, part in (("train", rest), ("heldout", held)):
        with open(f"{a.out}/{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)
    fit = subprocess.run([a.dapt, "law", "fit", f"{a.out}/train.jsonl", "--out", f"{a.out}/law.json"],
                         capture_output=True, text=True)
    open(f"{a.out}/fit.txt", "w").write(fit.stdout + fit.stderr)
    if fit.returncode:
        sys.exit(f"dapt law fit failed:\n{fit.stderr}")
    preds = []
    for r in held:
        p = subprocess.run([a.dapt, "law", "predict", f"{a.out}/law.json", "--N", repr(r["N"]),
                            "--D", repr(r["D"]), "--r-domain", repr(r["r_domain"]), "--json"],
                           capture_output=True, text=True, check=True)
        q = json.loads(p.stdout)
        preds.append({**r, "pred_general": q["loss_general"], "pred_domain": q["loss_domain"]})
    json.dump(preds, open(f"{a.out}/holdout.json", "w"), indent=1)

    def rel(p, key):
        return abs(p["pred_" + key] - p["loss_" + key]) / p["loss_" + key]

    print(f"fit on {len(rest)} rows, {len(held)} held-out rows (r_domain {hold})")
    print(f"{'r_domain':>8s} {'N':>9s} {'rows':>4s} {'general mean/max rel err':>25s} "
          f"{'domain mean/max rel err':>24s}")
    groups = sorted({(p["r_domain"], p["N"]) for p in preds}) + [None]
    for g in groups:
        ps = preds if g is None else [p for p in preds if (p["r_domain"], p["N"]) == g]
        eg = [rel(p, "general") for p in ps]
        ed = [rel(p, "domain") for p in ps]
        label = f"{'all':>8s} {'':>9s}" if g is None else f"{g[0]:8.3g} {g[1]:9.0f}"
        print(f"{label} {len(ps):4d} {100 * sum(eg) / len(eg):11.2f}% / {100 * max(eg):6.2f}%"
              f"   {100 * sum(ed) / len(ed):10.2f}% / {100 * max(ed):6.2f}%")


if __name__ == "__main__":
    main()
