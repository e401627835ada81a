#!/usr/bin/env python3
"""tests/law/plot_check.py PLOT_PY RESULTS LAW OUT DAPT POINTS: runs
tools/law/plot.py once (in this process, so the figure it saves can be
read back) and checks what the plot must show, from the results file and
the law, not from plot.py:

  - the PNG it wrote is the figure: PNG magic, and its pixel size is the
    figure's size at the dpi plot.py states (110);
  - one row of panels per fitted loss, one column per model size N plus
    the predicted-vs-observed column;
  - each (loss, N) panel's markers are exactly that N's (D, loss) rows;
  - each panel has one curve per r_domain, in that ratio's marker colour
    and labelled with it,
    over POINTS values of D from the sweep's smallest to its largest D,
    and the curve's ends are the law's fit at those two D: within REL_TOL
    of the observed losses there;
  - the last panel plots every row's observed loss against a prediction
    within REL_TOL of it.

REL_TOL: the synthetic sweep (tests/law/synth.sh) has a +-0.1% wobble and
the fit's rmse_rel is 7e-4; the worst |curve end - observed| / observed we
measured is 1.24e-3, and the worst parity point 1.24e-3, so 5e-3 (four
times). A curve drawn for another N is off by >= 2.3% at every point (the
sweep's smallest gap between neighbouring N at the same D and r); one for
another r_domain by 0.1% (general loss, r 0.9 vs 1) to tens of percent,
so a swap shows at most of the ends it is checked at.
"""
import importlib.util
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.figure  # noqa: E402
import matplotlib.image  # noqa: E402

REL_TOL = 5e-3
DPI = 110


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def main():
    plot_py, results, law_path, out, dapt, points = sys.argv[1:7]
    points = int(points)
    spec = importlib.util.spec_from_file_location("plot", plot_py)
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    rows = plot.read_rows(results)
    with open(law_path) as f:
        law = json.load(f)

    saved = []
    orig = matplotlib.figure.Figure.savefig

    def savefig(fig, *a, **k):
        saved.append(fig)
        return orig(fig, *a, **k)

    matplotlib.figure.Figure.savefig = savefig
    sys.argv = [plot_py, results, law_path, "--out", out, "--dapt", dapt, "--points", str(points)]
    plot.main()
    if len(saved) != 1:
        fail(f"plot.py saved {len(saved)} figures, expected 1")
    fig = saved[0]

    with open(out, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            fail(f"{out} is not a PNG")
    h, w = matplotlib.image.imread(out).shape[:2]
    want_w, want_h = (round(x * DPI) for x in fig.get_size_inches())
    if (w, h) != (want_w, want_h):
        fail(f"{out} is {w}x{h} pixels, the figure {want_w}x{want_h}")

    losses = [k for k in ("general", "domain") if k in law]
    Ns = sorted({r["N"] for r in rows})
    ratios = sorted({r["r_domain"] for r in rows})
    D_lo, D_hi = min(r["D"] for r in rows), max(r["D"] for r in rows)
    axes = fig.get_axes()
    if len(axes) != len(losses) * (len(Ns) + 1):
        fail(f"{len(axes)} panels, expected {len(losses)} x {len(Ns) + 1}")
    worst_end = worst_par = 0.0
    n_curves = 0
    for li, loss in enumerate(losses):
        key = "loss_" + loss
        for pi, N in enumerate(Ns):
            ax = axes[li * (len(Ns) + 1) + pi]
            where = f"panel {loss} N={N:g}"
            sel = [r for r in rows if r["N"] == N and r[key] is not None]
            want = sorted((r["D"], r[key]) for r in sel)
            got = sorted(tuple(map(float, p)) for c in ax.collections for p in c.get_offsets())
            if len(got) != len(want) or not all(close(a, b) for g, e in zip(got, want)
                                                for a, b in zip(g, e)):
                fail(f"{where}: its markers are not the sweep's {len(want)} rows at N={N:g}")
            # the colour of each ratio's markers
            colour = {}
            for c in ax.collections:
                Ds = {float(p[0]) for p in c.get_offsets()}
                rs = {r["r_domain"] for r in sel if r["D"] in Ds
                      and any(close(r[key], float(p[1])) for p in c.get_offsets())}
                if len(rs) != 1:
                    fail(f"{where}: a marker set mixes r_domain {sorted(rs)}")
                colour[rs.pop()] = tuple(c.get_facecolor()[0])
            if sorted(colour) != ratios:
                fail(f"{where}: markers for r_domain {sorted(colour)}, expected {ratios}")
            lines = ax.get_lines()
            if len(lines) != len(ratios):
                fail(f"{where}: {len(lines)} curves, expected one per r_domain ({len(ratios)})")
            for ln in lines:
                x, y = [float(v) for v in ln.get_xdata()], [float(v) for v in ln.get_ydata()]
                rgba = tuple(matplotlib.colors.to_rgba(ln.get_color()))
                rd = [r for r, c in colour.items() if c == rgba]
                if len(rd) != 1:
                    fail(f"{where}: a curve's colour is no ratio's marker colour")
                rd = rd[0]
                if ln.get_label() != f"r_domain={rd:g}":
                    fail(f"{where}: the curve in r_domain {rd:g}'s colour is labelled "
                         f"{ln.get_label()!r}")
                if len(x) != points or not close(x[0], D_lo, 1e-9) or not close(x[-1], D_hi, 1e-9) \
                        or any(not b > a for a, b in zip(x, x[1:])):
                    fail(f"{where} r={rd:g}: the curve is not {points} D from {D_lo:g} to {D_hi:g}")
                if any(not math.isfinite(v) for v in y):
                    fail(f"{where} r={rd:g}: the curve has a non-finite loss")
                for D, v in ((D_lo, y[0]), (D_hi, y[-1])):
                    obs = [r[key] for r in sel if r["D"] == D and r["r_domain"] == rd]
                    if len(obs) != 1:
                        fail(f"{where} r={rd:g}: no observed loss at D={D:g}")
                    e = abs(v - obs[0]) / obs[0]
                    worst_end = max(worst_end, e)
                    if not e <= REL_TOL:
                        fail(f"{where} r={rd:g} D={D:g}: curve {v:.6g}, observed {obs[0]:.6g} "
                             f"(relative {e:.2e} > {REL_TOL})")
                n_curves += 1
        ax = axes[li * (len(Ns) + 1) + len(Ns)]
        pts = sorted(tuple(map(float, p)) for c in ax.collections for p in c.get_offsets())
        obs = sorted(r[key] for r in rows if r[key] is not None)
        if len(pts) != len(obs) or not all(close(p[0], o) for p, o in zip(pts, obs)):
            fail(f"parity panel {loss}: its points are not the {len(obs)} observed losses")
        for o, p in pts:
            e = abs(p - o) / o
            worst_par = max(worst_par, e)
            if not e <= REL_TOL:
                fail(f"parity panel {loss}: observed {o:.6g} plotted against {p:.6g} "
                     f"(relative {e:.2e} > {REL_TOL})")
    print(f"plot_check: {len(axes)} panels, {n_curves} curves; worst curve end vs observed "
          f"{worst_end:.2e}, worst parity point {worst_par:.2e} (tolerance {REL_TOL})")


if __name__ == "__main__":
    main()
