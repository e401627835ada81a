"""compare_opt_shards.py WHOLE_CKPT ZERO_CKPT WORLD ABS_TOL: ZERO_CKPT holds its
Adam moments as WORLD per-rank shard files (trainer_state.json "optimizer":
layout "zero1", docs/checkpoints.md), WHOLE_CKPT as one optimizer.safetensors
in HF layout. Checks the layout (one file per rank, contiguous ranges that
cover every element, each about 1/WORLD of them, no optimizer.safetensors
beside them) and that the two hold the same moments position by position:
the shards, concatenated, are the flat parameter buffer in dapt's in-memory
order (docs/checkpoints.md: the tensor table's order, GPT-2's Conv1D weights
[out, in]); the whole file's tensors, put in that order by flat_order below
(and the Conv1D weights transposed back from HF's [in, out]), must equal
them element by element within ABS_TOL. A permutation of the shards, of the
tensors within them or of the elements of a tensor is a difference.
Pure Python."""
import array
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_weights import load  # noqa: E402


def fail(msg):
    sys.exit(f"FAIL: {msg}")


# dapt's tensor table (trainer/model.c, build_table): the tensors of a layer
# in this order (MoE: the router, then w1, w3, w2 of each expert in turn)
LAYER_ORDER = {
    "transformer.h": ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                      "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                      "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"],
    "model.layers": ["input_layernorm.weight", "self_attn.q_proj.weight",
                     "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                     "self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                     "self_attn.o_proj.weight", "self_attn.q_norm.weight",
                     "self_attn.k_norm.weight", "post_attention_layernorm.weight",
                     "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                     "block_sparse_moe.gate.weight"],
}
BEFORE = ["transformer.wte.weight", "transformer.wpe.weight", "model.embed_tokens.weight"]
AFTER = ["transformer.ln_f.weight", "transformer.ln_f.bias", "model.norm.weight", "lm_head.weight"]
EXPERT = ["w1.weight", "w3.weight", "w2.weight"]
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def flat_order(name):
    """the sort key of an HF tensor name in dapt's flat buffer"""
    if name in BEFORE:
        return (0, BEFORE.index(name))
    if name in AFTER:
        return (2, AFTER.index(name))
    for stem, order in LAYER_ORDER.items():
        if name.startswith(stem + "."):
            layer, rest = name[len(stem) + 1:].split(".", 1)
            if rest.startswith("block_sparse_moe.experts."):
                e, w = rest[len("block_sparse_moe.experts."):].split(".", 1)
                return (1, int(layer), len(order), int(e), EXPERT.index(w))
            if rest in order:
                return (1, int(layer), order.index(rest))
    fail(f"{name}: not a tensor this test knows the place of in the flat buffer")


def in_memory(name, shape, a):
    """the tensor's elements in dapt's in-memory layout"""
    if not name.endswith(CONV1D):
        return a
    rows, cols = shape  # HF [in, out]; dapt [out, in]
    return array.array("f", (a[i * cols + j] for j in range(cols) for i in range(rows)))


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
worst, where = 0.0, "-"
for k in zero:
    names = sorted((n[len(k) + 1:] for n in ref if n.startswith(k + ".")), key=flat_order)
    pos = 0
    for name in names:
        shape, a = ref[f"{k}.{name}"]
        w = in_memory(name, shape, a)
        for i, (u, v) in enumerate(zip(w, zero[k][pos:pos + len(w)])):
            d = abs(u - v)
            if not d <= worst:  # NaN counts as a difference
                worst, where = (d if d == d else float("inf")), f"{k} {name}[{i}] (flat {pos + i})"
        pos += len(w)
    if pos != numel:
        fail(f"{whole_dir}: {pos} {k} values, the shards {numel}")
print(f"{numel} parameters in {world} shards; moments by position: "
      f"max |difference| {worst:.3g} at {where}")
if worst > tol:
    fail(f"moments differ by {worst:.3g} > {tol} at {where}")
