"""compare_opt_shards.py WHOLE_CKPT ZERO_CKPT WORLD ABS_TOL: ZERO_CKPT holds its
Adam moments as WORLD per-rank shard files (trainer_state.json "optimizer":
layout "zero1", docs/checkpoints.md), WHOLE_CKPT as one optimizer.safetensors
in HF layout. Checks the layout (one file per rank, contiguous ranges that
cover every element, each about 1/WORLD of them, no optimizer.safetensors
beside them) and that the two hold the same moments: the shards' flat order
is dapt's in-memory one and the whole file's is per tensor (GPT-2's Conv1D
weights transposed), so the values are compared sorted, element by element,
within ABS_TOL. Pure Python."""
import array
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_weights import load  # noqa: E402


def fail(msg):
    sys.exit(f"FAIL: {msg}")


whole_dir, zero_dir, world, tol = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
state = json.load(open(os.path.join(zero_dir, "trainer_state.json")))
lay = state.get("optimizer", {})
if lay.get("layout") != "zero1" or lay.get("world") != world or len(lay.get("shards", [])) != world:
    fail(f"{zero_dir}: optimizer layout {lay} is not zero1 over {world} ranks")
if os.path.exists(os.path.join(zero_dir, "optimizer.safetensors")):
    fail(f"{zero_dir}: optimizer.safetensors next to the per-rank shards")
numel, off = lay["numel"], 0
zero = {"exp_avg": array.array("f"), "exp_avg_sq": array.array("f")}
for r, sh in enumerate(lay["shards"]):
    name = f"optimizer-{r:05d}-of-{world:05d}.safetensors"
    if sh["file"] != name or sh["offset"] != off:
        fail(f"shard {r}: {sh}, expected file {name} at offset {off}")
    if abs(sh["count"] * world - numel) > world:
        fail(f"shard {r} holds {sh['count']} of {numel} elements, not about 1/{world}")
    t = load(os.path.join(zero_dir, name))
    if t["step"][1][0] != state["step"]:
        fail(f"{name}: step {t['step'][1][0]}, trainer_state.json {state['step']}")
    for k in zero:
        if t[k][0] != [sh["count"]]:
            fail(f"{name}: {k} has shape {t[k][0]}, count {sh['count']}")
        zero[k].extend(t[k][1])
    off += sh["count"]
if off != numel:
    fail(f"the shards cover {off} of {numel} elements")
ref = load(os.path.join(whole_dir, "optimizer.safetensors"))
worst = 0.0
for k in zero:
    w = array.array("f")
    for name, (_, a) in ref.items():
        if name.startswith(k + "."):
            w.extend(a)
    if len(w) != numel:
        fail(f"{whole_dir}: {len(w)} {k} values, the shards {numel}")
    for u, v in zip(sorted(w), sorted(zero[k])):
        d = abs(u - v)
        if not d <= worst:
            worst = d if d == d else float("inf")
print(f"{numel} parameters in {world} shards; sorted moments max |difference| {worst:.3g}")
if worst > tol:
    fail(f"moments differ by {worst:.3g} > {tol}")
