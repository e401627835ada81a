#!/usr/bin/env bash
# moe_e2e.sh DAPT PYTHON: end-to-end checks of MoE in `dapt train` on the
# tiny corpora of tests/train (make_corpora.sh, tiny.toml.in):
#   1. a 4-expert top-2 run with global LBL and z-loss: every train record
#      has the MoE fields with valid values (routing distributions sum to 1
#      per layer and source, load max/mean in [1, E], the specialization
#      (JSD) in [0, ln 2], moe_aux > 0), the console line shows lbl and
#      load, and the checkpoint's config.json is Mixtral;
#   2. upcycling: a dense run's checkpoint upcycled ([model] upcycle_from)
#      trains, and its first-step loss equals that of the dense checkpoint
#      (init_from) on the same first batch within 4e-6: the upcycled MoE
#      computes the dense function before its first update;
#   3. bad input: a misspelled lbl mode, top_k > n_experts, MoE on gpt2.
set -euo pipefail
dapt=$1 py=$2
here=$(cd "$(dirname "$0")" && pwd)
train=$here/../train
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$train/make_corpora.sh" "$dapt" "$work" > /dev/null
sed "s#@DIR@#$work#g" "$train/tiny.toml.in" > "$work/tiny.toml"
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--train.steps=4 --train.warmup_steps=1 --eval.every=0 --ckpt.every=0)

# 1. MoE run
"$dapt" train "$work/tiny.toml" "${common[@]}" --run.name=moe --moe.n_experts=4 --moe.top_k=2 \
  --moe.z_loss_coef=0.001 > "$work/log"
grep -qE "lbl [0-9.]+ load [0-9.]+" "$work/log" || { cat "$work/log"; fail "console lacks lbl/load"; }
"$py" - "$work/runs/moe" <<'PY'
import json, math, sys
run = sys.argv[1]
recs = [json.loads(l) for l in open(run + "/metrics.jsonl") if '"train"' in l]
assert len(recs) == 4, len(recs)
for r in recs:
    for k in ("moe_aux", "moe_lbl", "moe_load_max", "moe_worst_load", "moe_routing_domain",
              "moe_routing_general", "moe_specialization"):
        assert k in r, f"step {r['step']}: {k} missing"
    assert len(r["moe_lbl"]) == 2 and r["moe_aux"] > 0, r
    for src in ("moe_routing_domain", "moe_routing_general"):
        for layer in r[src]:
            assert len(layer) == 4 and abs(sum(layer) - 1) < 1e-4, (src, layer)
    assert all(1 - 1e-9 <= x <= 4 for x in r["moe_load_max"]), r["moe_load_max"]
    assert r["moe_worst_load"] == max(r["moe_load_max"])
    s = r["moe_specialization"]
    assert s is not None and 0 <= s <= math.log(2), s
cfg = json.load(open(run + "/ckpt/step-00000004/config.json"))
assert cfg["architectures"] == ["MixtralForCausalLM"] and cfg["num_local_experts"] == 4, cfg
print("moe run: metrics ok; last record lbl", recs[-1]["moe_lbl"], "worst load", recs[-1]["moe_worst_load"])
PY

# 2. upcycling: dense run, then an MoE from its checkpoint
"$dapt" train "$work/tiny.toml" "${common[@]}" --run.name=dense > /dev/null
dense_ckpt=$work/runs/dense/ckpt/step-00000004
# the tiny config without the [model] shape keys, starting from a checkpoint
sed -e '/^\[model\]/,/^\[data\]/{/^\[model\]/!{/^\[data\]/!d}}' "$work/tiny.toml" > "$work/noshape.toml"
sed "s#^\[model\]#[model]\nupcycle_from = \"$dense_ckpt\"#" "$work/noshape.toml" > "$work/up.toml"
sed "s#^\[model\]#[model]\ninit_from = \"$dense_ckpt\"#" "$work/noshape.toml" > "$work/init.toml"
"$dapt" train "$work/up.toml" "${common[@]}" --train.steps=1 --train.warmup_steps=0 --run.name=up \
  --moe.n_experts=4 --moe.top_k=2 > "$work/uplog" || { cat "$work/uplog"; fail "upcycled run"; }
"$dapt" train "$work/init.toml" "${common[@]}" --train.steps=1 --train.warmup_steps=0 \
  --run.name=base > /dev/null
"$py" - "$work/runs/up" "$work/runs/base" <<'PY'
import json, sys
up, base = ([json.loads(l) for l in open(d + "/metrics.jsonl") if '"train"' in l] for d in sys.argv[1:3])
assert len(up) == 1 and "moe_lbl" in up[0] and "moe_lbl" not in base[0], (up, base)
cfg = json.load(open(sys.argv[1] + "/ckpt/step-00000001/config.json"))
assert cfg["num_local_experts"] == 4, cfg
d = abs(up[0]["loss"] - base[0]["loss"])
print(f"upcycled step-1 loss {up[0]['loss']:.6f}, dense {base[0]['loss']:.6f}, diff {d:.2e}")
# same batch, same function up to fp32 GEMM blocking (~1e-7 relative, 6e-7
# on a loss of ~5.7); metrics.jsonl logs the loss with 6 decimals, so two
# equal losses can differ by 1e-6 there. Measured 0 (2026-12-08): 4e-6, four
# log quanta (was 1e-4)
assert d <= 4e-6, d
PY

# 3. bad input
expect_error() { # expect_error PATTERN CMD...: CMD refuses with exit 1 (not a crash,
  # not a usage error) and stderr matches PATTERN (tests/cli/expect.sh); its
  # stdout and stderr are left in $work/out and $work/err
  EXPECT_KEEP=$work "$here/../cli/expect.sh" 1 "$@" > "$work/expect" || { cat "$work/expect" >&2; fail "refusal of '${*:2}'"; }
  cat "$work/expect"
}
expect_error 'moe.lbl' "$dapt" train "$work/tiny.toml" --moe.n_experts=4 --moe.lbl=globl
expect_error 'top_k must be in \[1, n_experts = 4\]' "$dapt" train "$work/tiny.toml" --moe.n_experts=4 --moe.top_k=5
expect_error 'gpt2 has no MoE' "$dapt" train "$work/tiny.toml" --model.arch=gpt2 --model.n_kv_head=4 --moe.n_experts=4
echo "moe e2e: all checks passed"
