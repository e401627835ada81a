#!/usr/bin/env bash
# moe_dist.sh DAPT PYTHON MPIRUN: global-batch load balancing over ranks in
# `dapt train` (the non-blocking sum of the expert counts, trainer/moe.h).
# A 4-expert top-2 tiny llama (tests/train/tiny.toml.in), lbl_coef 0.1 so
# the LBL gradient moves the routers visibly, global batch 4, 8 steps:
#   global  one process with one micro-batch of 4 sequences, and 2 ranks
#           with one micro-batch of 2 each under mpirun: every step's f is
#           that of the same 4 sequences, so the objective is the same and
#           the losses and final weights must agree up to fp32 summation
#           order. A rank that used its own counts (the sum not finished,
#           or read before it) is the micro mode below.
#           The same at 2 ranks with ZeRO-2 and ZeRO-3 and recompute =
#           "block" (routing recomputed, the counts not summed twice).
#   micro   the same pair with lbl = "micro": each rank's f is that of its 2
#           sequences, not of the 4, so the weights must differ.
# Tolerances, measured 2026-11-26 (8 steps): global pair max |weight
# difference| 5.1e-6, losses 4.1e-7 relative; the same pair with lbl =
# "none" (no counts at all) 8.8e-6: the expert GEMMs of a 4-sequence and a
# 2-sequence micro-batch sum in another order and Adam's first steps
# amplify that on the experts' small gradients. The micro pair differs by
# 1.8e-2. Measured again 2026-12-08 (AMD EPYC, 2 cores): weights 7.7e-6 for
# the pair and ZeRO-2/3 alike, losses 1.6e-7. So: global weights within
# 4e-5 (4.5x the worst, 8.8e-6), losses within 2e-6 relative (4.9x 4.1e-7);
# micro weights must differ by more than 1e-3.
set -euo pipefail
dapt=$(realpath "$1") py=$2 mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/../train/make_corpora.sh" "$dapt" "$work" > /dev/null
sed "s#@DIR@#$work#g" "$here/../train/tiny.toml.in" > "$work/tiny.toml"
fail() { echo "FAIL: $*" >&2; exit 1; }
export OMP_NUM_THREADS=1 # ranks share 2 cores here; one thread each
cd "$work"
args=(--moe.n_experts=4 --moe.top_k=2 --moe.lbl_coef=0.1 --train.global_batch=4 --train.steps=8
      --train.warmup_steps=1 --eval.every=0 --ckpt.every=8 --ckpt.keep=0)
w=ckpt/step-00000008/model.safetensors
for mode in global micro; do
  "$dapt" train tiny.toml "${args[@]}" --moe.lbl=$mode --train.micro_batch=4 --run.name=${mode}1 > ${mode}1.log ||
    { tail -5 ${mode}1.log; fail "$mode: one process"; }
  "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np 2 \
    "$dapt" train tiny.toml "${args[@]}" --moe.lbl=$mode --train.micro_batch=2 --run.name=${mode}2 > ${mode}2.log ||
    { tail -5 ${mode}2.log; fail "$mode: mpirun -np 2"; }
  grep -q "data parallel: 2 ranks (mpi)" ${mode}2.log || fail "$mode: -np 2 did not run 2 ranks: $(head -5 ${mode}2.log)"
done
"$py" "$here/../dist/compare_losses.py" runs/global1 runs/global2 2e-6 || fail "global: 2 ranks' losses differ from one process's"
"$py" "$here/../dist/compare_weights.py" runs/global1/$w runs/global2/$w 4e-5 || fail "global: 2 ranks' weights differ from one process's"
# ZeRO-2 and ZeRO-3 (the router and experts reduce-scattered block by
# block, and at stage 3 gathered for each forward, with the recomputed
# forward of "block" routing again): still one process's objective, the LBL
# counted once per layer
for z in 2 3; do
  "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np 2 \
    "$dapt" train tiny.toml "${args[@]}" --moe.lbl=global --train.micro_batch=2 --dist.zero=$z \
    --train.recompute=block --run.name=globalz$z > globalz$z.log ||
    { tail -5 globalz$z.log; fail "global: mpirun -np 2 --dist.zero=$z"; }
  grep -q "ZeRO-$z" globalz$z.log || fail "global: --dist.zero=$z did not shard: $(head -5 globalz$z.log)"
  "$py" "$here/../dist/compare_losses.py" runs/global1 runs/globalz$z 2e-6 || fail "global ZeRO-$z: losses differ from one process's"
  "$py" "$here/../dist/compare_weights.py" runs/global1/$w runs/globalz$z/$w 4e-5 || fail "global ZeRO-$z: weights differ from one process's"
done
if out=$("$py" "$here/../dist/compare_weights.py" runs/micro1/$w runs/micro2/$w 1e-3 2>&1); then
  fail "micro: 2 ranks' weights equal one process's within 1e-3 ($out): the LBL is too weak for this test to see the counts"
fi
echo "micro (expected to differ): $out"
echo "global LBL at 2 ranks equals one process; micro differs"
