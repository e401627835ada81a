"""compare_losses.py RUN_A RUN_B REL_TOL [MIN_STEP]: the train and eval
losses of two runs (metrics.jsonl) agree within REL_TOL relative (the grad
norm, logged with 6 significant digits, within max(REL_TOL, 2e-5)), step by
step, for every step >= MIN_STEP that RUN_B logged; every such step must be
in RUN_A too, and RUN_B must have logged at least one. Each source's
loss_by_source gets the loss tolerance; its samples count (an integer below
1e6 here) must be equal. Prints the largest relative difference seen."""
import json
import sys


def losses(run, min_step):
    out = {}
    for line in open(f"{run}/metrics.jsonl"):
        r = json.loads(line)
        if r["type"] == "train" and r["step"] >= min_step:
            for k in ("loss", "loss_domain", "loss_general", "grad_norm"):
                if r.get(k) is not None:
                    out[("train", r["step"], k)] = r[k]
            for name, v in r.get("loss_by_source", {}).items():
                if v is not None:
                    out[("train", r["step"], "loss_by_source", name)] = v
            for name, n in r.get("samples", {}).items():
                out[("train", r["step"], "samples", name)] = n
        elif r["type"] == "eval" and r["step"] >= min_step:
            out[("eval", r["step"], r["split"])] = r["loss"]
    return out


a_run, b_run, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
min_step = int(sys.argv[4]) if len(sys.argv) > 4 else 0
a, b = losses(a_run, min_step), losses(b_run, min_step)
n_train = sum(1 for k in b if k[0] == "train" and k[2] == "loss")
if n_train == 0:
    sys.exit(f"FAIL: {b_run} logged no train step >= {min_step}")
worst, where = 0.0, None
for k, vb in b.items():
    if k not in a:
        sys.exit(f"FAIL: {a_run} lacks {k}")
    rel = abs(vb - a[k]) / max(abs(a[k]), 1e-12)
    if "samples" in k and vb != a[k]:
        sys.exit(f"FAIL: {k}: {vb} in {b_run}, {a[k]} in {a_run}")
    if k[-1] == "grad_norm":
        rel *= tol / max(tol, 2e-5)  # in units of the loss tolerance
    if rel >= worst:
        worst, where = rel, k
print(f"{b_run} vs {a_run}: {n_train} train steps, {len(b)} values, "
      f"max relative difference {worst:.3g} at {where} (grad norm scaled by its tolerance)")
if worst > tol:
    sys.exit(f"FAIL: {worst:.3g} > {tol}")
