#!/usr/bin/env bash
# dist_e2e.sh DAPT PYTHON MPIRUN CKPT_CHECK MODE: data-parallel `dapt train`
# under mpirun on the tiny llama (tests/train/tiny.toml.in) with global_batch
# 12 and micro_batch 2 (divisible by 1, 2, 3 ranks x 2), 20 steps. MODE:
#   equal   -np 2 and -np 3 (and ZeRO-1 at -np 2 and 3) give the losses and
#           the final weights of one process; with ZeRO-1 rank 0 holds about
#           1/n of the optimizer state, and checkpoints hold it as n per-rank
#           shard files with the plain run's moments; a 3-source run at -np
#           2 (ZeRO-1) gives one process's per-source samples, losses and
#           eval splits, and a run continued from its step 10 with
#           model.init_optimizer at -np 2 under ZeRO-3 equals it from step 11
#   zero23  ZeRO-2 and ZeRO-3 at -np 2 and 3 (and ZeRO-3 with recompute =
#           "block", and with train.offload_optimizer) give the losses and
#           the final weights of one process (offload in one process:
#           bitwise);
#           rank 0 holds 1/n of the gradients (stage 2) and of the
#           parameters too (stage 3), plus one unit's window of each; the
#           checkpoints' optimizer shards hold one process's moments
#   tasks   [eval] tasks and command at -np 2 (ZeRO-0 and ZeRO-3): the task
#           records of one process (acc exactly, losses within 1e-5), one
#           hook record per checkpoint (rank 0 alone runs the command)
#   resume  a checkpoint of 2 ranks resumes on 3, one of 3 on 1 and 2, with
#           and without ZeRO-1 on either side, and across stages 0..3: the
#           resumed steps equal those of the 1-process run
#   kill    SIGKILL to one rank mid-run: mpirun exits non-zero within 60 s
#           naming the rank, and every checkpoint left is complete; a config
#           error on all ranks aborts the job with the rank named; SIGINT to
#           rank 1 alone: all ranks stop after the same step, rank 0
#           checkpoints, exit 0; a ZeRO-1 checkpoint that cannot be written
#           stops every rank with the cause; metrics.jsonl on a full disk
#           stops both ranks after a checkpoint of the next step, with the
#           cause, and --resume ends with one process's weights
#
# Tolerances. The ranks sum their micro-batch gradients locally and then
# across ranks, so each gradient element is a differently ordered fp32 sum
# than in one process (a few ulps, ~1e-7 relative); AdamW divides by
# sqrt(v), so the update moves by about as much relatively, and over 20 steps
# we measured max |weight difference| 1.9e-7 (2 and 3 ranks, with and
# without ZeRO). Weights must agree to 1e-6 (five times that; weights are
# O(1) or below). Losses are logged with 6 decimals (%.6f, values 4..6.3) so
# quantisation alone is up to 2e-7 relative: they must agree to 1e-6
# relative; the grad norm is logged with 6 significant digits (%.6g), up to
# 1e-5 relative of quantisation, so it gets 2e-5. The Adam moments of the
# sharded runs' checkpoints, compared position by position with one
# process's (compare_opt_shards.py; |exp_avg| <= 0.1), differed by at most
# 4.1e-8 (ZeRO-1 at 2 ranks; 2.1e-8 at 3; ZeRO-2/3 and offload 2.1e-8 at
# 2 ranks, 2.0e-8 at 3): they must agree to 2e-7 (five times that).
set -euo pipefail
dapt=$1 py=$2 mpirun=$3 ckcheck=$4 mode=$5
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/../train/make_corpora.sh" "$dapt" "$work"
sed "s#@DIR@#$work#g" "$here/../train/tiny.toml.in" > "$work/tiny.toml"
fail() { echo "FAIL: $*" >&2; exit 1; }
export OMP_NUM_THREADS=1 # ranks share 2 cores here; one thread each
mpi() { local n=$1; shift; "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np "$n" "$@"; }
args=(--train.global_batch=12 --train.micro_batch=2 --train.steps=20 --eval.every=10 --ckpt.every=10 --ckpt.keep=0)
mom_tol=2e-7
same() { # same RUN_A RUN_B [MIN_STEP]: losses and final weights agree
  "$py" "$here/compare_losses.py" "$work/runs/$1" "$work/runs/$2" 1e-6 "${3:-0}"
  "$py" "$here/compare_weights.py" "$work/runs/$1/ckpt/step-00000020/model.safetensors" \
    "$work/runs/$2/ckpt/step-00000020/model.safetensors" 1e-6
}
cd "$work"

case $mode in
equal)
  "$dapt" train tiny.toml "${args[@]}" --run.name=w1 > w1.log
  for n in 2 3; do
    mpi $n "$dapt" train tiny.toml "${args[@]}" --run.name=w$n > w$n.log
    grep -q "data parallel: $n ranks (mpi)" w$n.log || fail "-np $n did not run $n ranks: $(head -5 w$n.log)"
    [[ $(grep -c "^step " w$n.log) == $(grep -c "^step " w1.log) ]] || fail "-np $n: not only rank 0 prints"
    same w1 w$n
    mpi $n "$dapt" train tiny.toml "${args[@]}" --run.name=z$n --dist.zero=1 > z$n.log
    grep -q "ZeRO-1" z$n.log || fail "-np $n --dist.zero=1 did not shard"
    same w1 z$n
    # the optimizer state really is sharded: rank 0 holds ceil(1/n) of it
    # (Adam m and v, 8 bytes per parameter on the CPU)
    full=$(sed -n 's/.*optimizer state: \([0-9]*\) bytes on rank 0.*/\1/p' w$n.log)
    part=$(sed -n 's/.*optimizer state: \([0-9]*\) bytes on rank 0.*/\1/p' z$n.log)
    [[ -n $full && -n $part ]] || fail "-np $n: no optimizer state line: $(head -5 z$n.log)"
    (( part * n >= full && part * n < full + 8 * n && part < full )) ||
      fail "-np $n ZeRO-1: rank 0 holds $part bytes of optimizer state, the plain run $full"
  done
  # ZeRO-1: each rank wrote its own shard of the optimizer state, and
  # together they hold the plain run's moments
  for n in 2 3; do
    "$py" "$here/compare_opt_shards.py" runs/w$n/ckpt/step-00000020 runs/z$n/ckpt/step-00000020 $n $mom_tol
    "$ckcheck" runs/z$n/ckpt/step-00000010 > /dev/null || fail "z$n: step 10 is not a complete checkpoint"
  done
  # [[data.sources]] (two domain sources on the same shards under two
  # names, weighted 2:1, and a general one): one process's per-source
  # samples (exactly), losses and val/NAME at 2 ranks under ZeRO-1; a run
  # continued with model.init_optimizer from its step-10 checkpoint under
  # ZeRO-3 at 2 ranks (each rank reads its shard of the moments) equals it
  # from step 11
  sed -E '/^(domain|general|val_domain|val_general) =/d' tiny.toml > src.toml
  for s in "hdrA domain 2 domain" "hdrB domain 1 domain" "lic general 1 general"; do
    set -- $s
    printf '\n[[data.sources]]\nname = "%s"\nrole = "%s"\nweight = %s\n' $1 $2 $3 >> src.toml
    printf 'train = ["%s/%s/train-*.tok.zst"]\nval = ["%s/%s/val.tok.zst"]\n' "$work" $4 "$work" $4 >> src.toml
  done
  "$dapt" train src.toml "${args[@]}" --run.name=s1 > s1.log
  grep -q '"samples":{"hdrA":' runs/s1/metrics.jsonl || fail "s1: no per-source samples"
  mpi 2 "$dapt" train src.toml "${args[@]}" --run.name=s2 --dist.zero=1 > s2.log
  same s1 s2
  sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' src.toml > srcinit.toml
  mpi 2 "$dapt" train srcinit.toml "${args[@]}" --run.name=c2 --dist.zero=3 \
    --model.init_from="$work/runs/s1/ckpt/step-00000010" --model.init_optimizer=true > c2.log
  grep -q "continuing .* from step 10: the same data stream" c2.log || fail "c2: $(head -5 c2.log)"
  same s1 c2 11
  ;;
zero23)
  "$dapt" train tiny.toml "${args[@]}" --run.name=w1 > w1.log
  # the tiny llama (tests/train/tiny.toml.in: C 64, F 128, 4 heads of 16,
  # 2 kv heads, vocab 512, untied): P parameters, its largest unit a block
  # (2 norms, q|k|v, o, gate|up, down), 4 bytes each on the CPU
  C=64 F=128 HD=16 NH=4 NKV=2 V=512 L=2
  block=$(( 2 * C + (NH + 2 * NKV) * HD * C + NH * HD * C + 3 * F * C ))
  P=$(( 2 * V * C + L * block + C ))
  for n in 2 3; do
    shard=$(( (P + n - 1) / n )) # rank 0's piece (dist_shard: the first ranks get the extra)
    for z in 2 3; do
      run=z${z}n$n
      mpi $n "$dapt" train tiny.toml "${args[@]}" --run.name=$run --dist.zero=$z > $run.log
      grep -q "data parallel: $n ranks (mpi), .*ZeRO-$z" $run.log || fail "$run did not run ZeRO-$z: $(head -5 $run.log)"
      same w1 $run
      "$py" "$here/compare_opt_shards.py" runs/w1/ckpt/step-00000020 runs/$run/ckpt/step-00000020 $n $mom_tol
      "$ckcheck" runs/$run/ckpt/step-00000010 > /dev/null || fail "$run: step 10 is not a complete checkpoint"
      # what rank 0 holds: its shard of the gradients (and of the
      # parameters at stage 3) and one window of a block for the gradients,
      # three for the parameters (a block, the next, the prefetched)
      line=$(grep "parameters: .* bytes, gradients: .* bytes on rank 0" $run.log) || fail "$run: no memory line"
      pb=$(sed -n 's/.*parameters: \([0-9]*\) bytes.*/\1/p' <<< "$line")
      gb=$(sed -n 's/.*gradients: \([0-9]*\) bytes.*/\1/p' <<< "$line")
      want_g=$(( 4 * (shard + block) ))
      want_p=$(( z == 3 ? 4 * (shard + 3 * block) : 4 * P ))
      [[ $gb == "$want_g" && $pb == "$want_p" ]] ||
        fail "$run: rank 0 holds $pb bytes of parameters and $gb of gradients, expected $want_p and $want_g"
      # dapt plan --world n predicts rank 0's peak (the cpu backend's count)
      # within 5% (measured: to the byte)
      measured=$(sed -nE 's/.*peak ([0-9]+) bytes allocated.*/\1/p' $run.log)
      predicted=$("$dapt" plan tiny.toml "${args[@]}" --dist.zero=$z --world $n |
        sed -nE 's/.*= peak .* ([0-9]+) bytes per process.*/\1/p')
      [[ -n $measured && -n $predicted ]] &&
        awk -v p="$predicted" -v m="$measured" 'BEGIN { d = p - m; exit !(d * d <= 0.0025 * m * m) }' ||
        fail "$run: dapt plan predicts ${predicted:-nothing} bytes for rank 0, the run's peak ${measured:-missing}"
    done
  done
  # recomputation with sharded parameters: each block gathered again for
  # its recomputed forward
  mpi 3 "$dapt" train tiny.toml "${args[@]}" --run.name=z3rc --dist.zero=3 --train.recompute=block > z3rc.log
  same w1 z3rc
  # optimizer offload: the state in host memory, AdamW by the same CPU
  # kernel, chunk by chunk: bitwise one process's weights and moments; and
  # under ZeRO-3 at 3 ranks each rank offloads its shard
  "$dapt" train tiny.toml "${args[@]}" --run.name=o1 --train.offload_optimizer=true > o1.log
  grep -q "offloaded: in host memory" o1.log || fail "o1: no offload line: $(head -5 o1.log)"
  "$py" "$here/compare_weights.py" runs/w1/ckpt/step-00000020/model.safetensors runs/o1/ckpt/step-00000020/model.safetensors 0
  cmp runs/w1/ckpt/step-00000020/optimizer.safetensors runs/o1/ckpt/step-00000020/optimizer.safetensors ||
    fail "o1: the offloaded optimizer state differs from one process's"
  mpi 3 "$dapt" train tiny.toml "${args[@]}" --run.name=o3 --dist.zero=3 --train.offload_optimizer=true > o3.log
  grep -q "for $(( (P + 2) / 3 )) of $P parameters), offloaded" o3.log || fail "o3: rank 0 did not offload its shard: $(grep -m1 'optimizer state' o3.log)"
  same w1 o3
  "$py" "$here/compare_opt_shards.py" runs/w1/ckpt/step-00000020 runs/o3/ckpt/step-00000020 3 $mom_tol
  ;;
tasks)
  for h in stdio stdlib string unistd; do
    echo "{\"task\": \"headers\", \"context\": \"#include <$h\", \"choices\": [\".h>\", \".c>\", \"_h>\"], \"answer\": 0}"
  done > tasks.jsonl
  echo '{"task": "license_ppl", "type": "perplexity", "text": "This program is free software; you can redistribute it and/or modify it under the terms of the GNU General Public License."}' >> tasks.jsonl
  ev=("--eval.tasks=[\"$work/tasks.jsonl\"]" "--eval.command=echo '{\"rank0\": 1}'")
  "$dapt" train tiny.toml "${args[@]}" "${ev[@]}" --run.name=t1 > t1.log
  mpi 2 "$dapt" train tiny.toml "${args[@]}" "${ev[@]}" --run.name=t2 > t2.log
  mpi 2 "$dapt" train tiny.toml "${args[@]}" "${ev[@]}" --run.name=t3 --dist.zero=3 > t3.log
  grep -q "ZeRO-3" t3.log || fail "--dist.zero=3 did not shard"
  "$py" - runs/t1/metrics.jsonl runs/t2/metrics.jsonl runs/t3/metrics.jsonl << 'PY'
import json, sys
def load(p):
    recs = [json.loads(l) for l in open(p)]
    return ({(r["step"], r["task"]): r for r in recs if r["type"] == "task"},
            [r for r in recs if r["type"] == "hook"])
ref, ref_hooks = load(sys.argv[1])
assert sorted(ref) == [(10, "headers"), (10, "license_ppl"), (20, "headers"), (20, "license_ppl")], sorted(ref)
for path in sys.argv[2:]:
    got, hooks = load(path)
    assert sorted(got) == sorted(ref), (path, sorted(got))
    for k, r in ref.items():
        g = got[k]
        if r["kind"] == "multiple_choice":
            assert (g["acc"], g["acc_norm"]) == (r["acc"], r["acc_norm"]), (path, k, g, r)
        else:
            assert abs(g["loss"] - r["loss"]) <= 1e-5 * r["loss"], (path, k, g["loss"], r["loss"])
    assert [(h["step"], h["status"], h["result"]) for h in hooks] == \
        [(10, "ok", {"rank0": 1}), (20, "ok", {"rank0": 1})], (path, hooks)
print("ok: task records of -np 2 (ZeRO-0, ZeRO-3) equal one process's; one hook record per checkpoint")
PY
  ;;
resume)
  "$dapt" train tiny.toml "${args[@]}" --run.name=w1 > w1.log
  # W ranks (ZeRO-1 when Z = 1) write steps 10 and 20; step 20 is dropped
  # and W' ranks (ZeRO-1 when Z' = 1) redo 11..20: without, with, into and
  # out of ZeRO-1, so the sharded state is sliced from the whole one
  for src in "2 0" "2 1" "3 1" "2 2" "3 3"; do
    set -- $src
    mpi $1 "$dapt" train tiny.toml "${args[@]}" --run.name=s$1z$2 --dist.zero=$2 > s$1z$2.log
    rm -rf runs/s$1z$2/ckpt/step-00000020
    mv runs/s$1z$2/metrics.jsonl runs/s$1z$2/metrics.first.jsonl
  done
  for pair in "2 0 3 0" "2 0 3 1" "2 1 3 1" "2 1 3 0" "3 1 1 0" "3 1 2 1" \
              "2 0 3 3" "3 3 2 2" "2 2 3 1" "3 3 1 0" "2 1 2 3"; do
    set -- $pair
    run=r$1z$2to$3z$4
    cp -r runs/s$1z$2 runs/$run
    if [[ $3 == 1 ]]; then "$dapt" train tiny.toml "${args[@]}" --run.name=$run --resume > $run.b.log
    else mpi $3 "$dapt" train tiny.toml "${args[@]}" --run.name=$run --dist.zero=$4 --resume > $run.b.log; fi
    grep -q "resuming from .*step-00000010 (step 10)" $run.b.log || fail "$run did not resume at 10: $(head -3 $run.b.log)"
    (( $4 == 0 )) || grep -q "ZeRO-$4" $run.b.log || fail "$run: the resumed run did not shard"
    [[ $(grep -c '"type":"train"' runs/$run/metrics.jsonl) == 10 ]] || fail "$run: resumed run logged $(grep -c '"type":"train"' runs/$run/metrics.jsonl) steps"
    same w1 $run 11
  done
  ;;
kill)
  "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np 2 \
    "$dapt" train tiny.toml "${args[@]}" --train.steps=4000 --ckpt.every=5 --ckpt.keep=2 \
    --eval.every=0 --run.name=k > k.log 2> k.err &
  pid=$!
  for _ in $(seq 1 1200); do
    [[ -d runs/k/ckpt/step-00000010 ]] && break
    sleep 0.05
  done
  ranks=($(pgrep -P $pid -f "train tiny.toml" || true))
  [[ ${#ranks[@]} == 2 ]] || fail "expected 2 rank processes under mpirun, found: ${ranks[*]:-none}"
  t0=$(date +%s.%N)
  kill -9 "${ranks[1]}"
  rc=0
  wait $pid || rc=$?
  dt=$(echo "$(date +%s.%N) - $t0" | bc)
  echo "mpirun exited with status $rc $dt s after SIGKILL to one rank"
  [[ $rc != 0 ]] || fail "mpirun exited 0 after a rank was killed"
  (( $(echo "$dt < 60" | bc) )) || fail "mpirun took $dt s to notice"
  grep -qiE "signal 9|killed" k.err || fail "mpirun's message does not name the kill: $(tail -5 k.err)"
  grep -qE "rank [0-9]" k.err || fail "mpirun's message does not name the rank: $(tail -5 k.err)"
  grep -m1 -iE "rank.*(signal|killed)" k.err || true
  n=0
  for ck in runs/k/ckpt/step-*; do "$ckcheck" "$ck" || fail "damaged checkpoint $ck"; n=$((n + 1)); done
  [[ $n -ge 1 ]] || fail "no checkpoint left"
  [[ ! -d runs/k/ckpt/step-00004000 ]] || fail "the run finished before the kill"
  # an error on every rank: the job aborts, each rank names itself
  rc=0
  mpi 2 "$dapt" train tiny.toml --train.global_batch=12 --train.micro_batch=4 > e.log 2> e.err || rc=$?
  [[ $rc != 0 ]] || fail "a config error under mpirun exited 0"
  grep -q "not a multiple of 2 ranks x train.micro_batch = 4" e.err || fail "no cause: $(cat e.err)"
  grep -qE "rank [01] of 2: .*aborting the job" e.err || fail "no rank named: $(cat e.err)"
  echo "ok: $(grep -m1 "aborting the job" e.err)"
  # a ZeRO-1 checkpoint that cannot be written (ckpt/ is a file): every
  # rank stops at the same step with the cause, nothing hangs
  mkdir -p runs/nockpt && touch runs/nockpt/ckpt
  rc=0
  timeout 120 "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np 2 \
    "$dapt" train tiny.toml "${args[@]}" --dist.zero=1 --run.name=nockpt > nc.log 2> nc.err || rc=$?
  [[ $rc != 0 && $rc != 124 ]] || fail "an unwritable ZeRO-1 checkpoint: exit status $rc (124: hung)"
  grep -q "checkpoint at step 10 failed: .*ckpt" nc.err || fail "no cause: $(tail -3 nc.err)"
  grep -q '"step":11,' runs/nockpt/metrics.jsonl && fail "the run went on after the failed checkpoint"
  "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np 2 \
    "$dapt" train tiny.toml "${args[@]}" --train.steps=4000 --ckpt.every=0 --eval.every=0 \
    --run.name=int > int.log 2> int.err &
  pid=$!
  for _ in $(seq 1 1200); do
    grep -q '"step":3,' runs/int/metrics.jsonl 2> /dev/null && break
    sleep 0.05
  done
  ranks=($(pgrep -P $pid -f "train tiny.toml" || true))
  [[ ${#ranks[@]} == 2 ]] || fail "expected 2 rank processes, found: ${ranks[*]:-none}"
  kill -INT "${ranks[1]}"
  wait $pid || fail "exit status $? after SIGINT to rank 1: $(tail -3 int.err)"
  grep -q "another rank received SIGINT/SIGTERM: stopped after step" int.log || fail "no stop message: $(tail -2 int.log)"
  last=$(ls runs/int/ckpt)
  [[ $last == step-* && $last != step-00004000 ]] || fail "checkpoints after SIGINT: $last"
  "$ckcheck" "runs/int/ckpt/$last"
  # rank 0 cannot write metrics.jsonl (a symlink to /dev/full) in a ZeRO-1
  # job: the step-1 record fails on rank 0, the next step's sums tell rank
  # 1, and both stop after a checkpoint of step 2 with the cause; --resume
  # (the file writable again) ends with one process's weights
  mkdir -p runs/full && ln -s /dev/full runs/full/metrics.jsonl
  rc=0
  timeout 120 "$mpirun" --oversubscribe --allow-run-as-root --bind-to none -x OMP_NUM_THREADS -np 2 \
    "$dapt" train tiny.toml "${args[@]}" --dist.zero=1 --eval.every=0 --run.name=full \
    > full.log 2> full.err || rc=$?
  [[ $rc != 0 && $rc != 124 ]] || fail "metrics.jsonl on a full disk: exit status $rc (124: hung)"
  grep -q "after step 1: cannot write .*runs/full/metrics.jsonl: No space left on device; stopping after a checkpoint of step 2" full.err ||
    fail "rank 0 does not name the cause: $(cat full.err)"
  grep -q "rank 1 of 2: rank 0 cannot write metrics.jsonl; stopping after a checkpoint of step 2" full.err ||
    fail "rank 1 does not say why it stops: $(cat full.err)"
  [[ $(ls runs/full/ckpt) == step-00000002 ]] || fail "checkpoints: $(ls runs/full/ckpt)"
  "$ckcheck" runs/full/ckpt/step-00000002
  rm runs/full/metrics.jsonl
  mpi 2 "$dapt" train tiny.toml "${args[@]}" --dist.zero=1 --eval.every=0 --run.name=full \
    --resume > full2.log || fail "--resume after the metrics failure"
  grep -q "resuming from .*step-00000002" full2.log || fail "not resumed from step 2: $(cat full2.log)"
  "$dapt" train tiny.toml "${args[@]}" --eval.every=0 --run.name=full1 > full1.log
  "$py" "$here/compare_weights.py" runs/full1/ckpt/step-00000020/model.safetensors \
    runs/full/ckpt/step-00000020/model.safetensors 1e-6
  ;;
*) fail "unknown mode $mode" ;;
esac
echo "PASS $mode"
