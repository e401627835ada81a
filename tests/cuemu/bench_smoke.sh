#!/usr/bin/env bash
# bench_smoke.sh BENCH: bench_cuda's code paths on the emulated backend, at
# one layer, B=1, T=16 (one partial attention tile: the op shapes are
# emu_ops_*'s; at T=64 it took 77 s of CPU, at 16 62 s, the rest being the
# full-width weights' kernels), two micro-batches a step, with the opt-in
# grouped expert GEMMs, and the profile: each
# shape must run (exit 0, finite losses), and the MoE shape's global and
# micro LBL runs, which start from the same restored weights, zeroed Adam
# state and tokens, must log the same losses (one step: both are the
# step's losses before any update, so this checks bench_cuda's restore of
# the weights and Adam state, not the LBL: a broken global LBL passes it;
# the global LBL's own checks are emu_nccl_moe's, 2 ranks against one
# process with global differing from micro, and tests/moe's), and the
# profile must list the fused attention's kernels; the dense shapes'
# device memory must be within 5% of dapt plan's. Timings mean nothing here.
set -euo pipefail
bench=$1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bench" --layers 1 --batch 1 --seq 16 --warmup 0 --steps 2 --accum 2 --profile \
    --profile-steps 1 --cuda.moe_grouped_gemm=true --json "$out/bench.json" >"$out/bench.log" 2>&1 || {
    tail -20 "$out/bench.log"
    echo "FAIL: bench_cuda failed"
    exit 1
}
python3 - "$out/bench.json" "$out/bench.log" <<'PY'
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
log = open(sys.argv[2]).read()
# the dense shapes' device memory against dapt plan (the emulator counts
# every allocation): within 5%
mem = [r for r in recs if r["bench"].endswith("-memory")]
recs = [r for r in recs if not r["bench"].endswith("-memory")]
if [r["bench"] for r in mem] != ["gpt2-124M-memory", "llama-1.1B-memory"]:
    sys.exit(f"FAIL: memory records {[r['bench'] for r in mem]}")
for r in mem:
    if not r["pass"] or abs(r["ratio"] - 1) > 0.05:
        sys.exit(f"FAIL: {r['bench']}: measured/plan {r['ratio']}")
names = [r["bench"] for r in recs]
want = ["gpt2-124M", "llama-1.1B", "moe-e8k2-grouped-global", "moe-e8k2-grouped-micro"]
if names != want:
    sys.exit(f"FAIL: records {names}, want {want}")
for r in recs:
    if not (math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])):
        sys.exit(f"FAIL: {r['bench']}: losses {r['loss_first']} {r['loss_last']}")
    if r["accum"] != 2 or r["T"] != 16 or not r["fused_norm"]:
        sys.exit(f"FAIL: {r['bench']}: accum {r['accum']} T {r['T']} fused {r['fused_norm']}")
g, m = recs[2], recs[3]
if g["loss_first"] != m["loss_first"] or abs(g["loss_last"] - m["loss_last"]) < 5e-4:
    sys.exit(f"FAIL: global losses {g['loss_first']} {g['loss_last']} vs micro "
             f"{m['loss_first']} {m['loss_last']}: the first must be equal, the second differ "
             f"(by 2.7e-3 measured)")
for what in ["profile (1 step(s)", "global / micro LBL tokens/s", "kernels inside ops",
             "flash_fwd ", "flash_bwd_D ", "flash_bwd_dkdv ", "flash_bwd_dq "]:
    if what not in log:
        sys.exit(f"FAIL: the log lacks '{what}'")
print(f"ok: {', '.join(names)}; MoE first loss {g['loss_first']:.4f} (both), second: global "
      f"{g['loss_last']:.4f}, micro {m['loss_last']:.4f}")
PY
