#!/usr/bin/env bash
# merge_e2e.sh DAPT: the chat-vector recipe of docs/merge.md end to end on
# dapt checkpoints (tests/train's tiny llama and corpora):
#   base    40 steps on the mixture
#   dom     base + 30 steps on the domain corpus only (the "CPT" model)
#   gen     base + 30 steps on the general corpus only (the "instruct" stand-in)
#   merged  dapt merge --method task_arithmetic --base base dom gen
#   moe     dapt merge --method moe --top-k 1 --base base dom gen (then trained 5 steps)
# Each model's held-out losses are read from the step-0 eval of a one-step
# run with model.init_from = it (so the merged directory must load as
# init_from: tokenizer.model copied, config.json, F32 weights). Asserts that
# the merge keeps most of each specialist's gain over the base on its own
# held-out set (the merged model is no specialist: its loss is allowed
# between the base's and the specialist's). Prints the table docs/merge.md
# reports.
set -euo pipefail
shopt -s inherit_errexit
dapt=$1
here=$(cd "$(dirname "$0")" && pwd)
work=${MERGE_E2E_DIR:-$(mktemp -d)}
[[ -n ${MERGE_E2E_DIR:-} ]] || trap 'rm -rf "$work"' EXIT
"$here/../train/make_corpora.sh" "$dapt" "$work"
sed "s#@DIR@#$work#g" "$here/../train/tiny.toml.in" > "$work/tiny.toml"
sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' \
  "$work/tiny.toml" > "$work/init.toml"
q=(--eval.every=0 --ckpt.every=0)
"$dapt" train "$work/tiny.toml" --run.name=base --train.steps=40 "${q[@]}" > /dev/null
base=$work/runs/base/ckpt/step-00000040
"$dapt" train "$work/init.toml" --run.name=dom --model.init_from="$base" --train.steps=30 \
  --mix.domain_frac=1 --mix.upsample_domain_frac=1 "${q[@]}" > /dev/null
"$dapt" train "$work/init.toml" --run.name=gen --model.init_from="$base" --train.steps=30 \
  --mix.domain_frac=0 --mix.upsample_domain_frac=0 "${q[@]}" > /dev/null
dom=$work/runs/dom/ckpt/step-00000030 gen=$work/runs/gen/ckpt/step-00000030
"$dapt" merge "$work/merged" "$dom" "$gen" --method task_arithmetic --base "$base" --quiet
# the specialists as the two experts of a Mixtral-shaped MoE (shared tensors
# averaged): it loads as init_from and trains (routers and load balancing)
"$dapt" merge "$work/moe" "$dom" "$gen" --method moe --base "$base" --top-k 1 --quiet
"$dapt" train "$work/init.toml" --run.name=moe-train --model.init_from="$work/moe" \
  --train.steps=5 --train.warmup_steps=0 --ckpt.every=0 > /dev/null
grep -q '"moe_lbl"' "$work/runs/moe-train/metrics.jsonl" || { echo "FAIL: no MoE metrics" >&2; exit 1; }
for f in config.json model.safetensors tokenizer.model; do
  [[ -f $work/merged/$f ]] || { echo "FAIL: merged/$f missing" >&2; exit 1; }
done
loss() { # loss MODEL SPLIT: the step-0 eval loss of a run initialised from MODEL
  local name=eval-$(basename "$1")-$RANDOM
  "$dapt" train "$work/init.toml" --run.name="$name" --model.init_from="$1" --train.steps=1 --train.warmup_steps=0 \
    --ckpt.every=0 > /dev/null
  python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("type") == "eval" and r["step"] == 0 and r["split"] == sys.argv[2]:
        print(r["loss"]); break' "$work/runs/$name/metrics.jsonl" "$2"
}
declare -A L
printf '%-8s %12s %12s\n' model val/domain val/general
for m in base dom gen merged moe; do
  case $m in base) p=$base ;; dom) p=$dom ;; gen) p=$gen ;; *) p=$work/$m ;; esac
  L[$m,d]=$(loss "$p" val/domain) L[$m,g]=$(loss "$p" val/general)
  printf '%-8s %12.4f %12.4f\n' "$m" "${L[$m,d]}" "${L[$m,g]}"
done
python3 - "${L[base,d]}" "${L[dom,d]}" "${L[merged,d]}" "${L[base,g]}" "${L[gen,g]}" \
  "${L[merged,g]}" <<'PY'
import sys
bd, dd, md, bg, gg, mg = map(float, sys.argv[1:])
# the merged model keeps at least half of each specialist's gain over the base
for name, b, s, m in (("val/domain", bd, dd, md), ("val/general", bg, gg, mg)):
    gain, kept = b - s, b - m
    print(f"{name}: specialist gain {gain:.4f}, merged keeps {kept:.4f}")
    assert gain > 0, f"{name}: the specialist did not improve on the base"
    assert kept >= 0.5 * gain, f"{name}: the merge keeps {kept:.4f} of {gain:.4f}"
PY
echo ok
