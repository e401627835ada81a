#!/usr/bin/env bash
# nccl_check.sh DAPT DATA [DAPT_MPI]: the NCCL path of `dapt train` on one
# GPU (tools/gpu-check stage "nccl"; docs/distributed.md).
#
# DATA holds the tiny test corpora (tests/train/make_corpora.sh output,
# optionally with tiny.toml.in beside them; tools/gpu/pack makes it); DATA =
# "make" makes them first (ctest does: needs the build machine's files). Trains the
# tiny llama 20 steps on run.device = "cuda" (bf16) three times:
#   plain  world size 1, no NCCL (the reference)
#   nccl   --dist.backend=nccl: the gradient all-reduce goes through NCCL
#   zero   --dist.backend=nccl --dist.zero=1: reduce-scatter + all-gather
#   group  the same with --dist.nccl_grouped=true: the path for pieces of unequal
#          length (grouped ncclReduce/ncclBroadcast), which one rank never
#          takes on its own
#   moe    a 4-expert top-2 MoE with lbl = "global", without NCCL
#          (moe-plain) and with --dist.backend=nccl (moe-nccl): the expert
#          counts' non-blocking int64 sum (dist_nccl_isum_i64_*, on the
#          communicator's own stream) runs at every micro-batch
#   overlap --dist.bucket_mb=0.05: the gradient sums in buckets on NCCL's
#          own stream during the backward (all-reduce; with ZeRO-1,
#          zero-overlap: reduces to the owner, and the parameters' gather
#          waited for block by block in the next forward; with the MoE,
#          moe-overlap)
# and, when DAPT_MPI (a dapt built with MPI) and mpirun can run here,
#   mpi    mpirun -np 1 DAPT_MPI --dist.backend=nccl (the MPI bootstrap)
# With one rank an NCCL sum is a copy and ZeRO's shard is the whole buffer,
# so every run must write bitwise the same weights and optimizer state as
# plain (moe-nccl: as moe-plain) (compared with cmp) and log the same losses,
# grad norms (and MoE metrics).
# Exit 0 all equal, 1 a difference or a failed run, 77 skipped (no GPU, no
# libnccl.so.2): the reason is the last line.
set -uo pipefail
dapt=$1 data=$2 dapt_mpi=${3:-}
abs() { [[ -z $1 || $1 == /* ]] && echo "$1" || echo "$PWD/$1"; }
dapt=$(abs "$dapt") dapt_mpi=$(abs "$dapt_mpi")
# shellcheck source=tests/cuda/tiny_setup.sh
source "$(dirname "$0")/tiny_setup.sh"
args=(--run.device=cuda --run.out_dir="$work/runs" --train.steps=20 --train.global_batch=8
      --train.micro_batch=4 --eval.every=10 --ckpt.every=0 --ckpt.keep=0)
cd "$work"
train() { # NAME DAPT [ARGS...]: one run; its log is NAME.log
    local name=$1 bin=$2
    shift 2
    "$bin" train tiny.toml "${args[@]}" --run.name="$name" "$@" >"$name.log" 2>&1
}
if ! train plain "$dapt"; then
    tail -3 plain.log
    grep -q "no GPU" plain.log && skip "no GPU: $(grep -m1 'no GPU' plain.log)"
    fail "the plain cuda run failed (above)"
fi
if ! train nccl "$dapt" --dist.backend=nccl; then
    tail -3 nccl.log
    grep -q "cannot load NCCL" nccl.log && skip "$(grep -m1 'cannot load NCCL' nccl.log)"
    fail "the NCCL run failed (above)"
fi
train zero "$dapt" --dist.backend=nccl --dist.zero=1 || { tail -3 zero.log; fail "the NCCL ZeRO-1 run failed (above)"; }
train group "$dapt" --dist.backend=nccl --dist.zero=1 --dist.nccl_grouped=true ||
    { tail -3 group.log; fail "the NCCL ZeRO-1 run with grouped reduce/broadcast failed (above)"; }
moe=(--moe.n_experts=4 --moe.top_k=2 --moe.lbl=global)
train moe-plain "$dapt" "${moe[@]}" || { tail -3 moe-plain.log; fail "the MoE cuda run failed (above)"; }
train moe-nccl "$dapt" --dist.backend=nccl "${moe[@]}" ||
    { tail -3 moe-nccl.log; fail "the MoE run with NCCL (global LBL counts over NCCL) failed (above)"; }
bk=--dist.bucket_mb=0.05
train overlap "$dapt" --dist.backend=nccl $bk || { tail -3 overlap.log; fail "the NCCL run with overlapped gradient sums failed (above)"; }
train zero-overlap "$dapt" --dist.backend=nccl --dist.zero=1 $bk ||
    { tail -3 zero-overlap.log; fail "the NCCL ZeRO-1 run with overlapped gradient sums failed (above)"; }
train moe-overlap "$dapt" --dist.backend=nccl "${moe[@]}" $bk ||
    { tail -3 moe-overlap.log; fail "the MoE NCCL run with overlapped gradient sums failed (above)"; }
for r in overlap zero-overlap moe-overlap; do
    grep -q "gradient sums overlapped with the backward" $r.log || fail "$r: the log does not say the sums overlap"
done

ck=ckpt/step-00000020
# on a difference: is the CUDA backend itself repeatable run to run?
nondet() {
    train plain2 "$dapt" || return 0
    cmp -s runs/plain/$ck/model.safetensors runs/plain2/$ck/model.safetensors ||
        echo "note: two runs without NCCL differ too: the cuda backend is not repeatable run to run"
}
same() { # RUN [BASE]: weights, optimizer state and logged losses equal BASE's (plain)
    local r=$1 base=${2:-plain}
    grep -q "+ nccl" "$r.log" || fail "$r: the log does not say the NCCL path ran: $(grep -m1 'data parallel' "$r.log")"
    for f in model.safetensors optimizer.safetensors; do
        [[ -f runs/$r/$ck/$f ]] || fail "$r: no $ck/$f"
        cmp -s "runs/$base/$ck/$f" "runs/$r/$ck/$f" || { nondet; fail "$r: $f differs from the run without NCCL ($base)"; }
    done
    # the train records without their timing (tok_s), and the eval records
    local d
    d=$(metrics_diff "runs/$base" "runs/$r") || fail "$r: metrics.jsonl differs from the run without NCCL ($base): $(echo "$d" | head -3)"
    echo "$r: weights, optimizer state and 20 steps of metrics bitwise equal to $base ($(grep -m1 'data parallel' "$r.log" | sed 's/^ *//'))"
}
same nccl
same zero
same group
same moe-nccl moe-plain
same overlap
same zero-overlap
same moe-overlap moe-plain
mpi_note="mpirun -np 1 not run"
if [[ -z $dapt_mpi || ! -x $dapt_mpi ]]; then
    mpi_note="mpirun -np 1 skipped: no dapt built with MPI in the pack"
elif ! command -v mpirun >/dev/null; then
    mpi_note="mpirun -np 1 skipped: no mpirun on this machine"
elif ! timeout 20 mpirun --version 2>&1 | grep -q "Open MPI"; then
    mpi_note="mpirun -np 1 skipped: this mpirun is not Open MPI's (dapt-mpi is built against Open MPI)"
elif missing=$(ldd "$dapt_mpi" 2>&1 | awk '/not found/ {print $1}') && [[ -n $missing ]]; then
    mpi_note="mpirun -np 1 skipped: dapt-mpi misses $(echo $missing)"
else
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 \
        mpirun --allow-run-as-root --oversubscribe -np 1 "$dapt_mpi" train tiny.toml "${args[@]}" \
        --run.name=mpi --dist.backend=nccl >mpi.log 2>&1
    rc=$?
    if [[ $rc != 0 ]]; then
        tail -5 mpi.log
        fail "mpirun -np 1 with NCCL failed (rc $rc, above)"
    fi
    grep -q "(mpi + nccl" mpi.log || fail "mpirun -np 1 did not use the MPI group: $(grep -m1 'data parallel' mpi.log)"
    same mpi
    mpi_note="mpirun -np 1 equal too"
fi
t() { grep -o 'done, 20 steps in [0-9.]*s' "$1.log" | grep -o '[0-9.]*s$'; }
echo "times for 20 steps (tiny model, not a benchmark): plain $(t plain), nccl $(t nccl), zero $(t zero)"
echo "NCCL path at world size 1 equals the run without NCCL bitwise (all-reduce, ZeRO-1 plain and grouped, MoE global LBL counts, overlapped bucket sums); $mpi_note"
