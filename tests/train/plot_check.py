#!/usr/bin/env python3
"""tests/train/plot_check.py PLOT: tools/plot on a synthetic metrics.jsonl
(run in this process, so the figures it saves can be read back) draws what
the records say, checked from the records, not from tools/plot:

  - sources.png: one smoothed train curve per loss_by_source key (the mean
    of the last 10 non-null values, nulls skipped: restated here) and the
    source's val/NAME points, the last record of a repeated (resumed) step;
  - tasks.png: acc and acc_norm per multiple_choice task, bits per byte per
    perplexity task, each numeric field of the hook results, against tokens;
  - moe.png: moe_load_max and moe_lbl per MoE layer;
  - a run without task, hook or MoE records gets neither tasks.png nor
    moe.png, and every file written is a PNG.
"""
import importlib.machinery
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def records(moe, tasks):
    rng = random.Random(3)
    recs = []
    for step in range(1, 41):
        r = {"type": "train", "step": step, "tokens": 256 * step, "loss": 5.0, "loss_domain": 5.0,
             "loss_general": 5.0, "lr": 1e-3, "grad_norm": 1.0, "tok_s": 1e4, "domain_frac": 0.3,
             "samples": {}, "loss_by_source": {
                 "pubmed": None if step % 3 == 0 else 6.0 - step * 0.05 + rng.random() * 0.1,
                 "web": 5.0 - step * 0.01 + rng.random() * 0.1}}
        if moe:
            r["moe_load_max"] = [1.0 + rng.random(), 1.0 + rng.random()]
            r["moe_lbl"] = [1.0 + rng.random() * 0.1, 1.0 + rng.random() * 0.1]
        recs.append(r)
        if step % 10 == 0:
            for src in ("pubmed", "web"):
                recs.append({"type": "eval", "step": step, "tokens": 256 * step,
                             "split": f"val/{src}", "loss": 5.5 - step * 0.01})
            if tasks:
                recs.append({"type": "task", "step": step, "tokens": 256 * step, "task": "mc",
                             "kind": "multiple_choice", "n_items": 10, "acc": step / 100,
                             "acc_norm": step / 80, "shots": 0, "seconds": 1})
                recs.append({"type": "task", "step": step, "tokens": 256 * step, "task": "wiki",
                             "kind": "perplexity", "n_items": 4, "loss": 3, "ppl": 20,
                             "bits_per_byte": 2 - step / 100, "seconds": 1})
                recs.append({"type": "hook", "step": step, "status": "ok", "exit_code": 0,
                             "seconds": 1, "output": "x",
                             "result": {"pubmedqa": step / 50, "name": "x", "nested": {"a": 1}}})
    if tasks:  # a resumed run repeats step 20: its last record counts
        recs.append({"type": "task", "step": 20, "tokens": 5120, "task": "mc",
                     "kind": "multiple_choice", "n_items": 10, "acc": 0.9, "acc_norm": 0.95,
                     "shots": 0, "seconds": 1})
    return recs


def smooth10(xs):
    out, win = [], []
    for x in xs:
        win = (win + [x])[-10:]
        vals = [v for v in win if v is not None]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def lines(fig):
    return {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata()))
            for ax in fig.axes for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def same(a, b, what):
    if len(a) != len(b) or any(abs(x - y) > 1e-9 for x, y in zip(a, b)):
        fail(f"{what}: {a} != {b}")


def main():
    plot_path = sys.argv[1]
    loader = importlib.machinery.SourceFileLoader("plot", plot_path)
    spec = importlib.util.spec_from_loader("plot", loader)
    plot = importlib.util.module_from_spec(spec)
    loader.exec_module(plot)
    saved = {}
    orig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *a, **k):
        saved[os.path.basename(path)] = fig
        return orig(fig, path, *a, **k)

    matplotlib.figure.Figure.savefig = savefig
    tmp = tempfile.mkdtemp(prefix="dapt_plot_")
    for moe, tasks in ((True, True), (False, False)):
        run = os.path.join(tmp, f"run{int(moe)}")
        os.makedirs(run)
        recs = records(moe, tasks)
        with open(os.path.join(run, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)
        saved.clear()
        written = plot.plot_run(run)
        want = {"loss.png", "schedule.png", "sources.png"} | (
            {"tasks.png", "moe.png"} if moe else set())
        if {os.path.basename(p) for p in written} != want or set(saved) != want:
            fail(f"wrote {sorted(saved)}, expected {sorted(want)}")
        for p in written:
            with open(p, "rb") as f:
                if f.read(8) != b"\x89PNG\r\n\x1a\n":
                    fail(f"{p} is not a PNG")
        train = [r for r in recs if r["type"] == "train"]
        got = lines(saved["sources.png"])
        for src in ("pubmed", "web"):
            ys = smooth10([r["loss_by_source"][src] for r in train])
            same(got[f"train {src} (smoothed)"][1], [y for y in ys if y is not None],
                 f"sources.png train {src}")
            ev = [r for r in recs if r["type"] == "eval" and r["split"] == f"val/{src}"]
            same(got[f"val/{src}"][1], [r["loss"] for r in ev], f"sources.png val/{src}")
            same(got[f"val/{src}"][0], [r["tokens"] for r in ev], f"sources.png val/{src} x")
        if not moe:
            continue
        got = lines(saved["tasks.png"])
        if set(got) != {"mc acc", "mc acc_norm", "wiki bits/byte", "hook pubmedqa"}:
            fail(f"tasks.png curves {sorted(got)}")
        steps = [10, 20, 30, 40]
        same(got["mc acc"][1], [0.1, 0.9, 0.3, 0.4], "tasks.png mc acc (step 20 resumed)")
        same(got["mc acc_norm"][1], [10 / 80, 0.95, 30 / 80, 40 / 80], "tasks.png mc acc_norm")
        same(got["mc acc"][0], [256 * s for s in steps], "tasks.png x")
        same(got["wiki bits/byte"][1], [2 - s / 100 for s in steps], "tasks.png wiki")
        same(got["hook pubmedqa"][1], [s / 50 for s in steps], "tasks.png hook")
        same(got["hook pubmedqa"][0], [256 * s for s in steps], "tasks.png hook x")
        got = lines(saved["moe.png"])
        for layer in range(2):
            series = [v for k, v in got.items() if k == f"MoE layer {layer}"]
            loads = [ln for ax in saved["moe.png"].axes[:1] for ln in ax.get_lines()
                     if ln.get_label() == f"MoE layer {layer}"]
            lbls = [ln for ax in saved["moe.png"].axes[1:] for ln in ax.get_lines()
                    if ln.get_label() == f"MoE layer {layer}"]
            if not series or len(loads) != 1 or len(lbls) != 1:
                fail(f"moe.png: layer {layer} curves missing")
            same(list(loads[0].get_ydata()), [r["moe_load_max"][layer] for r in train],
                 f"moe.png load layer {layer}")
            same(list(lbls[0].get_ydata()), [r["moe_lbl"][layer] for r in train],
                 f"moe.png lbl layer {layer}")
    shutil.rmtree(tmp)  # kept when a check failed
    print("ok: sources, tasks (acc, acc_norm, bits/byte, hook results) and MoE curves "
          "match the records; a run without them gets no tasks.png or moe.png")


if __name__ == "__main__":
    main()
