#!/usr/bin/env bash
# cli_check.sh DAPT DATA [DEVICE]: `dapt train` end to end on the GPU
# (tools/gpu-check stage "cli"; docs/gpu-log.md). DATA as in nccl_check.sh
# ("make" makes the tiny corpora first). DEVICE (default cuda) is the device
# checked; `cpu` runs the same checks CPU against CPU (the harness: ctest).
#   1. the tiny llama, 30 steps, on the cpu and on DEVICE: the per-step
#      training losses of metrics.jsonl agree (relative, worst <= 2e-3, mean
#      <= 7e-4, eval worst <= 2e-3: about 4x the worst measured, bf16
#      against fp32: an H100 3.5e-4 worst; the emulator on an AMD EPYC
#      (2026-12-08) 5.3e-4 worst, 1.7e-4 mean, eval 4.5e-4); DEVICE's loss
#      falls.
#   2. exact resume on DEVICE: a run restarted from the uninterrupted run's
#      step-10 checkpoint (copied into a fresh run directory, `--resume`)
#      ends with bitwise the same step-30 weights, optimizer state and
#      losses.
# Exit 0 ok, 1 a check failed, 77 skipped (no GPU): the reason is the last
# line.
set -uo pipefail
dapt=$1 data=$2 device=${3:-cuda}
[[ $dapt == /* ]] || dapt=$PWD/$dapt
# shellcheck source=tests/cuda/tiny_setup.sh
source "$(dirname "$0")/tiny_setup.sh"
train() { # NAME DEVICE [ARGS...]
    local name=$1 dev=$2
    shift 2
    "$dapt" train tiny.toml --run.device="$dev" --run.out_dir="$work/runs" --train.steps=30 \
        --eval.every=10 --ckpt.every=10 --ckpt.keep=0 --run.name="$name" "$@" >"$name.log" 2>&1
}
train ref cpu || { tail -3 ref.log; fail "the cpu run failed"; }
if ! train dev "$device"; then
    tail -3 dev.log
    grep -q "no GPU" dev.log && skip "no GPU: $(grep -m1 'no GPU' dev.log)"
    fail "the $device run failed (above)"
fi
# 1. losses, cpu against the device
python3 - runs/ref/metrics.jsonl runs/dev/metrics.jsonl <<'PY' || fail "losses differ (above)"
import json, sys
def recs(p):
    train, ev = {}, {}
    for line in open(p):
        r = json.loads(line)
        if r.get("type") == "train":
            train[r["step"]] = r["loss"]
        elif r.get("type") == "eval":
            ev[(r["step"], r["split"])] = r["loss"]
    return train, ev
(ta, ea), (tb, eb) = recs(sys.argv[1]), recs(sys.argv[2])
if sorted(ta) != list(range(1, 31)) or sorted(tb) != sorted(ta):
    sys.exit(f"train steps: cpu {sorted(ta)[:3]}.., device {sorted(tb)[:3]}..")
if not ea or sorted(ea) != sorted(eb):
    sys.exit(f"eval records differ in shape: {sorted(ea)[:4]} vs {sorted(eb)[:4]}")
d = [abs(tb[s] - ta[s]) / abs(ta[s]) for s in ta]
e = [abs(eb[k] - ea[k]) / abs(ea[k]) for k in ea]
worst, mean = max(d), sum(d) / len(d)
print(f"train loss cpu {ta[1]:.4f} -> {ta[30]:.4f}, device {tb[1]:.4f} -> {tb[30]:.4f}; "
      f"rel diff worst {worst:.2e} mean {mean:.2e}; eval worst {max(e):.2e} over {len(e)} values")
if not (worst <= 2e-3 and mean <= 7e-4 and max(e) <= 2e-3):
    sys.exit("over the tolerance (worst 2e-3, mean 7e-4, eval 2e-3)")
if not tb[30] < 0.9 * tb[1]:
    sys.exit("the device run's loss did not fall")
PY
# 2. exact resume from the step-10 checkpoint
mkdir -p runs/res/ckpt
cp -r runs/dev/ckpt/step-00000010 runs/res/ckpt/
train res "$device" --resume || { tail -3 res.log; fail "the resumed run failed"; }
grep -q "resuming from" res.log || fail "the resumed run did not resume: $(head -3 res.log)"
for f in model.safetensors optimizer.safetensors; do
    cmp -s runs/dev/ckpt/step-00000030/$f runs/res/ckpt/step-00000030/$f ||
        fail "resume: step-30 $f differs from the uninterrupted run"
done
python3 - runs/dev/metrics.jsonl runs/res/metrics.jsonl <<'PY' || fail "resume: logged losses differ (above)"
import json, sys
def losses(p):
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in map(json.loads, open(p))
            if r.get("type") == "train"}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
if sorted(b) != list(range(11, 31)):
    sys.exit(f"the resumed run logged steps {sorted(b)[:3]}.., not 11..30")
bad = [s for s in b if b[s] != a[s]]
if bad:
    sys.exit(f"step {bad[0]}: loss, grad norm {b[bad[0]]} vs {a[bad[0]]} uninterrupted")
PY
echo "dapt train on $device: losses within bf16 tolerance of the cpu run; resume from step 10 bitwise equal at step 30"
