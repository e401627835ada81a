#!/usr/bin/env python3
"""tools/law/plot.py: plots a fitted D-CPT law against the sweep it was
fitted on, so a bad fit is visible at a glance.

    tools/law/plot.py RESULTS law.json --out fit.png [--dapt build/dapt]

One row of panels per fitted loss (general, domain), one column per model
size N (per (domain, N) for a cross-domain law): observed losses as markers,
the law's prediction as lines over D, one colour per r_domain; a last column
plots predicted against observed loss for every row. Predictions come from
`dapt law predict --json`, so the law's formula lives only in tools/law/.
Needs Debian's python3-matplotlib (tools/setup installs it).
"""
import argparse
import json
import math
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def read_rows(path):
    """The results rows as dicts of floats (and 'domain'). `dapt law fit`
    validated the same file, so this only converts; a row it cannot read
    stops the script with FILE:LINE."""
    rows = []
    with open(path) as f:
        lines = [(i + 1, l) for i, l in enumerate(f) if l.strip() and not l.lstrip().startswith("#")]
    if path.endswith(".csv"):
        header = [h.strip() for h in lines[0][1].split(",")]
        rows = [(n, dict(zip(header, (c.strip() for c in l.split(","))))) for n, l in lines[1:]]
    else:
        for n, l in lines:
            try:
                rows.append((n, json.loads(l)))
            except ValueError as e:
                sys.exit(f"{path}:{n}: not a JSON object ({e})")
    out = []
    for n, r in rows:
        o = {"domain": r.get("domain") or ""}
        for k in ("N", "D", "r_domain", "loss_general", "loss_domain", "k1", "k2"):
            v = r.get(k)
            try:
                o[k] = float(v) if v not in (None, "") else None
            except (TypeError, ValueError):
                sys.exit(f"{path}:{n}: {k} = {v!r} is not a number")
        out.append(o)
    return out


class Predictor:
    """the law's predictions from one `dapt law predict LAW --stdin` process:
    a point a line in, a JSON object a line out"""

    def __init__(self, dapt, law):
        self.cmd = [dapt, "law", "predict", law, "--stdin"]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.cache = {}

    def __call__(self, N, D, r, k1=None, k2=None):
        key = (N, D, r, k1, k2)
        if key not in self.cache:
            point = [N, D, r] + ([k1, k2] if k1 is not None else [])
            line = ""
            try:
                self.proc.stdin.write(" ".join(repr(float(x)) for x in point) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except BrokenPipeError:
                pass
            if not line:
                self.proc.kill()
                sys.exit(f"plot.py: {' '.join(self.cmd)} failed at {point}: "
                         f"{self.proc.stderr.read().strip()}")
            self.cache[key] = json.loads(line)
        return self.cache[key]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("law")
    ap.add_argument("--out", required=True, help="image to write (.png, .pdf, .svg)")
    ap.add_argument("--dapt", default="build/dapt", help="the dapt binary (default build/dapt)")
    ap.add_argument("--points", type=int, default=24, help="points per law curve")
    args = ap.parse_args()

    with open(args.law) as f:
        law = json.load(f)
    rows = read_rows(args.results)
    predict = Predictor(args.dapt, args.law)
    cross = bool(law.get("cross_domain"))
    losses = [k for k in ("general", "domain") if k in law]
    panels = sorted({(r["domain"] if cross else "", r["N"]) for r in rows})
    ratios = sorted({r["r_domain"] for r in rows})
    cmap = plt.get_cmap("viridis")
    colour = {r: cmap(i / max(1, len(ratios) - 1)) for i, r in enumerate(ratios)}
    D_lo, D_hi = min(r["D"] for r in rows), max(r["D"] for r in rows)
    Ds = [math.exp(math.log(D_lo) + (math.log(D_hi) - math.log(D_lo)) * i / (args.points - 1))
          for i in range(args.points)]

    fig, axes = plt.subplots(len(losses), len(panels) + 1, squeeze=False,
                             figsize=(3.2 * (len(panels) + 1), 3.0 * len(losses)))
    for li, loss in enumerate(losses):
        key = "loss_" + loss
        for pi, (dom, N) in enumerate(panels):
            ax = axes[li][pi]
            sel = [r for r in rows if r["N"] == N and r["domain"] == dom and r[key] is not None]
            ks = (sel[0]["k1"], sel[0]["k2"]) if cross and sel else (None, None)
            for rd in ratios:
                pts = [r for r in sel if r["r_domain"] == rd]
                if not pts:
                    continue
                ax.scatter([p["D"] for p in pts], [p[key] for p in pts], s=12, color=colour[rd])
                ax.plot(Ds, [predict(N, D, rd, *ks)[key] for D in Ds], color=colour[rd], lw=1,
                        label=f"r_domain={rd:g}")
            ax.set_xscale("log")
            ax.set_title(f"{loss}: {dom + ' ' if dom else ''}N={N:.3g}", fontsize=9)
            ax.set_xlabel("D (tokens)", fontsize=8)
            if pi == 0:
                ax.set_ylabel(key, fontsize=8)
                ax.legend(fontsize=6)
        ax = axes[li][-1]
        obs = [r for r in rows if r[key] is not None]
        pred = [predict(r["N"], r["D"], r["r_domain"],
                        *((r["k1"], r["k2"]) if cross else (None, None)))[key] for r in obs]
        ax.scatter([r[key] for r in obs], pred, s=8, color=[colour[r["r_domain"]] for r in obs])
        lo, hi = min(pred + [r[key] for r in obs]), max(pred + [r[key] for r in obs])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        fit = law[loss]
        ax.set_title(f"{loss}: R2={fit['r2']:.4f}", fontsize=9)
        ax.set_xlabel("observed", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
    predict.close()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
