#!/usr/bin/env bash
# train_e2e.sh DAPT PYTHON MODE: end-to-end checks of `dapt train` on tiny
# corpora (make_corpora.sh) and a tiny llama (tiny.toml.in). MODE:
#   metrics   a run's metrics.jsonl has every field, the domain share follows
#             the schedule exactly, evals and keep-last-k checkpoints exist,
#             the resolved config parses back (tomllib)
#   resume    SIGKILL between checkpoints, --resume: the final weights and the
#             losses are bitwise those of an uninterrupted run
#   signal    SIGINT: the step finishes, a checkpoint is written, exit 0
#   errors    --resume without a checkpoint, init_from that is not a model,
#             shards from a bigger vocabulary, a bad override: clear errors
#   nonfinite a base model with a NaN weight: on_nonfinite=stop exits 1
#             naming the step and tensor; skip skips every step; neither
#             writes a checkpoint
#   arch      a Qwen3-shaped llama (q/k norms, head_dim 32 where d_model /
#             n_head is 16) with Llama 3.1's rope scaling (original context
#             16 < seq_len 32) from [model] keys: its checkpoints' config.json
#             is a Qwen3 one with head_dim and rope_scaling, SIGKILL and
#             --resume end bitwise as the uninterrupted run, and a run
#             init_from its checkpoint takes that config
#   plan      `dapt plan` on the config of a one-step run (a llama, a GPT-2,
#             an MoE llama, a llama init_from a checkpoint) predicts the cpu
#             backend's peak the run prints within 5% (the tolerance the
#             plan promises; docs/distributed.md), and a plan for twice the
#             micro-batch misses it
#   recompute train.recompute = "block": the final weights, optimizer state
#             and losses bitwise those of "none", a lower peak of the cpu
#             backend's allocations, and the key in the resolved config
#   sources   three [[data.sources]] (two domain sources weighted 2:1, one
#             general): per-source sample counts within one sample of the
#             exact weighted shares at every step, per-source losses and
#             eval splits (check_metrics.py --sources); SIGKILL and --resume
#             end bitwise as the uninterrupted run; another weight changes
#             the data fingerprint; a glob without files and a config
#             without a general source are clear errors
#   rundir    a run directory belongs to one run: a second run there is
#             refused naming the directory, --resume and --overwrite, and
#             changes nothing; --overwrite moves the old run aside whole
#             (RUN.old-*) and starts one with a new run id; run.json's run id
#             is in every checkpoint's trainer_state.json and kept by --resume
#   checksum  a byte flipped in the newest checkpoint's model.safetensors:
#             `dapt inspect` of it exits 1 naming the file, of the one before
#             says ok; --resume falls back to the one before, saying which
#             file is bad; each recorded checksum is `xxhsum -H3`'s; a
#             checkpoint without checksums (removed from its
#             trainer_state.json) still inspects and resumes, saying so; one
#             with the older fnv1a64-mix checksums (computed in Python)
#             verifies, and a wrong one is named; a step-N directory holding
#             another step's checkpoint is refused by inspect and skipped by
#             --resume
#   resumecfg --resume with a changed [model] (n_layer, d_model) is refused
#             naming each key with the checkpoint's and the new value; with
#             changed eval.every and ckpt.keep it resumes, says so in one
#             line, and config.resolved.toml has the new values and the
#             checkpoint's model
#   diskfull  metrics.jsonl on a full disk (a symlink to /dev/full): the run
#             stops at its first train record with the file and ENOSPC named,
#             after a checkpoint of that step; metrics.jsonl past a file size
#             limit (RLIMIT_FSIZE, SIGXFSZ ignored): the run stops with EFBIG
#             named and the file holds whole records only
#   killloop  SIGKILL at pseudo-random points of the run's progress (half
#             of them inside a checkpoint save) and --resume, until the run
#             finishes (at least 8 kills, 2 in a save): every
#             checkpoint left after each kill verifies (`dapt inspect`), and
#             the end is bitwise the uninterrupted run
#   ckptfull  a checkpoint save past a file size limit (a full disk) fails
#             with the cause, keeps the previous checkpoint (keep = 1) whole
#             and leaves nothing else; --resume then ends bitwise as the
#             uninterrupted run
#   evalhook  [eval] tasks and command (docs/train.md): a "task" record per
#             task at every checkpoint, the last one equal to `dapt eval` of
#             that checkpoint; an eval.command run per checkpoint recorded
#             with its exit status and the JSON object of its last line,
#             while the checkpoint existed; a failing one (exit 3) and a
#             hanging one (4 at once at most, then not started; killed after
#             command_wait_s = 1, no process left) are recorded and the run's weights are bitwise those of a run
#             without hooks; a task file with a bad line is refused before
#             the first step with FILE:LINE, a glob without files too
#   tensorboard [log] tensorboard: check_tb.py reads the event files back
#             with the tensorboard package (values and steps equal
#             metrics.jsonl), after a straight run, a killed and resumed
#             one (two files) and an MoE run; none without the key
#   progress  a role without samples prints "-" (not nan) on the plain lines
#             and on the terminal's progress line (script(1) gives a pty),
#             which is rewritten in place
#   continue  model.init_optimizer: from step 10 of a run with nothing
#             changed, bitwise the uninterrupted run's weights, moments and
#             losses; a rewarmed, redecayed run on a new mixture from step
#             30: its warmup, adam_step 50, its first update the AdamW
#             update with t = 31 (not 1) recomputed from the moments it
#             wrote; killed and resumed, bitwise the uninterrupted continued
#             run; init_optimizer without init_from, from weights alone, or
#             from a checkpoint without optimizer.safetensors: clear errors
set -euo pipefail
dapt=$1 py=$2 mode=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/make_corpora.sh" "$dapt" "$work"
sed "s#@DIR@#$work#g" "$here/tiny.toml.in" > "$work/tiny.toml"
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_status() { # expect_status STATUS PATTERN CMD...: CMD exits with STATUS (not a
  # crash) and stderr matches PATTERN (tests/cli/expect.sh); its stdout and
  # stderr are left in $work/out and $work/err
  EXPECT_KEEP=$work "$here/../cli/expect.sh" "$@" > "$work/expect" || { cat "$work/expect" >&2; fail "refusal of '${*:3}'"; }
  cat "$work/expect"
}
expect_error() { expect_status 1 "$@"; } # a refusal (exit 1, not a usage error)

kill_at_step10() { # kill_at_step10 ARGS...: dapt train ARGS --run.name=killed, SIGKILLed
  # once its step-10 checkpoint exists
  "$dapt" train "$@" --run.name=killed > "$work/killed.log" &
  local pid=$!
  for _ in $(seq 1 600); do
    [[ -d $work/runs/killed/ckpt/step-00000010 ]] && break
    sleep 0.05
  done
  kill -9 $pid 2> /dev/null || fail "the run ended before it could be killed"
  wait $pid 2> /dev/null || true
}
case $mode in
metrics)
  "$dapt" train "$work/tiny.toml" > "$work/log"
  "$py" "$here/check_metrics.py" "$work/runs/tiny" 8 30 "[[0,0.3],[0.85,0.3],[0.85,0.6],[1,0.6]]"
  n=$(ls "$work/runs/tiny/ckpt" | wc -l)
  [[ $n == 2 ]] || fail "keep = 2 but $n checkpoints: $(ls "$work/runs/tiny/ckpt")"
  [[ -d $work/runs/tiny/ckpt/step-00000030 && -d $work/runs/tiny/ckpt/step-00000020 ]] ||
    fail "newest checkpoints missing: $(ls "$work/runs/tiny/ckpt")"
  grep -q "ETA" "$work/log" || fail "no progress line"
  # the checkpoint carries the tokenizer; sampling is seeded
  ck=$work/runs/tiny/ckpt/step-00000030
  cmp "$ck/tokenizer.model" "$work/tok/tokenizer.model" || fail "tokenizer not in the checkpoint"
  a=$("$dapt" sample "$ck" --prompt "#include <stdio.h>" --max-new 20 --seed 5)
  b=$("$dapt" sample "$ck" --prompt "#include <stdio.h>" --max-new 20 --seed 5)
  c=$("$dapt" sample "$ck" --prompt "#include <stdio.h>" --max-new 20 --seed 6)
  [[ $a == "$b" ]] || fail "same seed, different samples: '$a' vs '$b'"
  [[ $a != "$c" ]] || fail "different seeds, same sample: '$a'"
  [[ $a == "#include <stdio.h>"* && ${#a} -gt 20 ]] || fail "sample does not continue the prompt: '$a'"
  echo "ok: sample '$a'"
  ;;
resume)
  "$dapt" train "$work/tiny.toml" --run.name=straight > /dev/null
  kill_at_step10 "$work/tiny.toml"
  [[ ! -d $work/runs/killed/ckpt/step-00000030 ]] || fail "killed too late"
  "$dapt" train "$work/tiny.toml" --run.name=killed --resume > "$work/resumed.log"
  grep -q "resuming from" "$work/resumed.log" || fail "did not resume"
  cmp "$work/runs/straight/ckpt/step-00000030/model.safetensors" \
      "$work/runs/killed/ckpt/step-00000030/model.safetensors" || fail "weights differ"
  cmp "$work/runs/straight/ckpt/step-00000030/optimizer.safetensors" \
      "$work/runs/killed/ckpt/step-00000030/optimizer.safetensors" || fail "optimizer differs"
  "$py" "$here/check_metrics.py" --same-losses "$work/runs/straight" "$work/runs/killed"
  ;;
signal)
  "$dapt" train "$work/tiny.toml" --train.steps=400 --ckpt.every=0 > "$work/log" &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q '"step":3,' "$work/runs/tiny/metrics.jsonl" 2> /dev/null && break
    sleep 0.05
  done
  kill -INT $pid
  wait $pid || fail "exit status $? after SIGINT"
  grep -q "SIGINT received" "$work/log" || fail "no message"
  ls "$work/runs/tiny/ckpt" | grep -q step- || fail "no checkpoint after SIGINT"
  last=$(ls "$work/runs/tiny/ckpt" | tail -1)
  [[ $last != step-00000400 ]] || fail "ran to the end"
  echo "ok: stopped with $last"
  ;;
errors)
  expect_error "no complete checkpoint under .*runs/tiny/ckpt" \
    "$dapt" train "$work/tiny.toml" --resume
  # init_from takes the shape from the model: a config without the shape keys
  sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' \
    "$work/tiny.toml" > "$work/init.toml"
  mkdir -p "$work/notamodel" && echo hi > "$work/notamodel/readme.txt"
  expect_error "init_from = \".*notamodel\": .*config.json" \
    "$dapt" train "$work/init.toml" --model.init_from="$work/notamodel"
  expect_error "init_from = \".*init.toml\" is not a directory" \
    "$dapt" train "$work/init.toml" --model.init_from="$work/init.toml"
  # data.doc_mask: reset_positions alone is refused naming both keys; a
  # masked run trains, and its weights differ from the unmasked run's
  expect_error "data.reset_positions \\(command line\\) = true needs data.doc_mask" \
    "$dapt" train "$work/tiny.toml" --run.name=rp --data.reset_positions=true
  "$dapt" train "$work/tiny.toml" --run.name=plain --train.steps=10 --eval.every=0 > /dev/null
  "$dapt" train "$work/tiny.toml" --run.name=masked --train.steps=10 --eval.every=0 \
    --data.doc_mask=true --data.reset_positions=true > /dev/null || fail "a doc_mask run"
  cmp -s "$work/runs/plain/ckpt/step-00000010/model.safetensors" \
    "$work/runs/masked/ckpt/step-00000010/model.safetensors" && fail "doc_mask changed nothing"
  # the data is checked before any model is built or loaded (a config
  # without data fails in milliseconds, not after building a 124M model):
  # with both wrong, the data is named
  expect_error "train glob '.*/nowhere/\*.tok.zst' matched no files" \
    "$dapt" train "$work/init.toml" --model.init_from="$work/notamodel" \
    --data.domain="[\"$work/nowhere/*.tok.zst\"]"
  expect_error "vocabulary of 512 tokens but the model has vocab_size 300" \
    "$dapt" train "$work/tiny.toml" --model.vocab_size=300
  "$dapt" tokenize --train-tokenizer --vocab-size 500 --out "$work/tok2" --no-progress \
    "$work/general.txt" > /dev/null
  expect_error "shards were made with a different tokenizer than .*tok2/tokenizer.model" \
    "$dapt" train "$work/tiny.toml" --data.tokenizer="$work/tok2/tokenizer.model"
  expect_error "train.lr" "$dapt" train "$work/tiny.toml" --train.lr=abc
  expect_error "did you mean" "$dapt" train "$work/tiny.toml" --train.stepz=3
  expect_error "no such|cannot|not found" "$dapt" train "$work/missing.toml"
  ;;
nonfinite)
  # a base model with one NaN weight: every step's loss is non-finite
  sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' \
    "$work/tiny.toml" > "$work/init.toml"
  "$dapt" train "$work/tiny.toml" --train.steps=2 --train.warmup_steps=1 --eval.every=0 --run.name=base > /dev/null
  mkdir -p "$work/nan" && cp "$work/runs/base/ckpt/step-00000002/config.json" "$work/nan/"
  "$py" - "$work/runs/base/ckpt/step-00000002/model.safetensors" "$work/nan/model.safetensors" <<'PY'
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
off = json.loads(raw[8:8 + n])["model.layers.1.mlp.down_proj.weight"]["data_offsets"][0]
raw[8 + n + off:8 + n + off + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(raw)
PY
  expect_error "step 0: non-finite loss .*first bad tensor model.layers.1.mlp.down_proj.weight.*stopping without a checkpoint" \
    "$dapt" train "$work/init.toml" --model.init_from="$work/nan" --run.name=stop
  grep -q '"event":"nonfinite"' "$work/runs/stop/metrics.jsonl" || fail "no nonfinite event"
  [[ ! -d $work/runs/stop/ckpt ]] || fail "a checkpoint was written: $(ls "$work/runs/stop/ckpt")"
  "$dapt" train "$work/init.toml" --model.init_from="$work/nan" --train.on_nonfinite=skip \
    --train.steps=3 --train.warmup_steps=1 --run.name=skip > /dev/null 2> "$work/skip.err" || true
  [[ $(grep -c "step skipped" "$work/skip.err") == 3 ]] || fail "skip mode: $(cat "$work/skip.err")"
  [[ ! -d $work/runs/skip/ckpt ]] || fail "skip mode checkpointed a non-finite model"
  echo "ok: non-finite runs stop or skip, and never checkpoint"
  ;;
arch)
  q=(--model.qk_norm=true --model.head_dim=32 --model.rope_scaling=llama3
     --model.rope_original_max_seq_len=16)
  "$dapt" train "$work/tiny.toml" "${q[@]}" --run.name=straight > /dev/null
  ck=$work/runs/straight/ckpt/step-00000030
  "$py" - "$ck/config.json" <<'PY' || fail "checkpoint config.json"
import json, sys
c = json.load(open(sys.argv[1]))
want = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 32,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}
bad = {k: c.get(k) for k, v in want.items() if c.get(k) != v}
print("config.json:", {k: c.get(k) for k in want})
sys.exit(1 if bad else 0)
PY
  kill_at_step10 "$work/tiny.toml" "${q[@]}"
  "$dapt" train "$work/tiny.toml" "${q[@]}" --run.name=killed --resume > "$work/resumed.log"
  grep -q "resuming from" "$work/resumed.log" || fail "did not resume"
  cmp "$ck/model.safetensors" "$work/runs/killed/ckpt/step-00000030/model.safetensors" ||
    fail "weights differ after the resume"
  "$py" "$here/check_metrics.py" --same-losses "$work/runs/straight" "$work/runs/killed"
  sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' \
    "$work/tiny.toml" > "$work/init.toml"
  "$dapt" train "$work/init.toml" --model.init_from="$ck" --train.steps=2 \
    --train.warmup_steps=1 --eval.every=0 --run.name=cpt > /dev/null
  cmp "$ck/config.json" "$work/runs/cpt/ckpt/step-00000002/config.json" ||
    fail "init_from's config.json not carried over"
  echo "ok: Qwen3-shaped llama3-scaled run, resume and init_from"
  ;;
plan)
  one=(--train.steps=1 --train.warmup_steps=0 --eval.every=0)
  # within NAME PREDICTED MEASURED: |predicted - measured| <= 5% of measured
  within() { awk -v p="$2" -v m="$3" 'BEGIN { d = p - m; exit !(m > 0 && d * d <= 0.0025 * m * m) }'; }
  plan_peak() { "$dapt" plan "$@" | sed -nE 's/.*= peak .* ([0-9]+) bytes per process.*/\1/p'; }
  check() { # check NAME CONFIG OVERRIDES...
    local name=$1 cfg=$2
    shift 2
    "$dapt" train "$cfg" --run.name="$name" "${one[@]}" "$@" > "$work/$name.log"
    local measured predicted wrong
    measured=$(sed -nE 's/.*peak ([0-9]+) bytes allocated.*/\1/p' "$work/$name.log")
    predicted=$(plan_peak "$cfg" "$@")
    wrong=$(plan_peak "$cfg" "$@" --train.micro_batch=8)
    within "$name" "$predicted" "$measured" ||
      fail "$name: plan $predicted bytes, the run's peak ${measured:-missing}"
    ! within "$name" "$wrong" "$measured" || fail "$name: a plan for micro_batch 8 passes ($wrong)"
    echo "ok: $name: plan $predicted bytes, measured $measured"
  }
  check llama "$work/tiny.toml"
  check gpt2 "$work/tiny.toml" --model.arch=gpt2 --model.n_kv_head=4
  check moe "$work/tiny.toml" --moe.n_experts=4 --moe.top_k=2
  check recompute "$work/tiny.toml" --train.recompute=block
  check moe_recompute "$work/tiny.toml" --moe.n_experts=4 --moe.top_k=2 --train.recompute=block
  check offload "$work/tiny.toml" --train.offload_optimizer=true
  sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' \
    "$work/tiny.toml" > "$work/init.toml"
  check init "$work/init.toml" --model.init_from="$work/runs/llama/ckpt/step-00000001"
  ;;
recompute)
  "$dapt" train "$work/tiny.toml" --run.name=none > "$work/none.log"
  "$dapt" train "$work/tiny.toml" --run.name=block --train.recompute=block > "$work/block.log"
  # the cpu backend's peak (its own count of what it allocated) is lower
  peak() { sed -nE 's/.*peak ([0-9]+) bytes allocated.*/\1/p' "$1"; }
  p0=$(peak "$work/none.log") p1=$(peak "$work/block.log")
  [[ -n $p0 && -n $p1 && $p1 -lt $p0 ]] || fail "peak ${p1:-?} bytes with block, ${p0:-?} none"
  echo "ok: cpu backend peak $p0 bytes (none), $p1 (block)"
  grep -q '^recompute = "block"' "$work/runs/block/config.resolved.toml" ||
    fail "recompute not in the resolved config"
  for f in model optimizer; do
    cmp "$work/runs/none/ckpt/step-00000030/$f.safetensors" \
        "$work/runs/block/ckpt/step-00000030/$f.safetensors" || fail "$f differs"
  done
  "$py" "$here/check_metrics.py" --same-losses "$work/runs/none" "$work/runs/block"
  ;;
sources)
  # a second domain corpus: the kernel-interface headers
  cat /usr/include/x86_64-linux-gnu/bits/*.h > "$work/bits.txt"
  truncate -s 200000 "$work/bits.txt"
  "$dapt" tokenize --model "$work/tok/tokenizer.model" --out "$work/bits" --val-frac 0.05 \
    --no-progress "$work/bits.txt" > /dev/null
  sed -E '/^(domain|general|val_domain|val_general) =/d' "$work/tiny.toml" > "$work/src.toml"
  cat >> "$work/src.toml" <<EOF

[[data.sources]]
name = "headers"
role = "domain"
train = ["$work/domain/train-*.tok.zst"]
val = ["$work/domain/val.tok.zst"]
weight = 2

[[data.sources]]
name = "bits"
role = "domain"
train = ["$work/bits/train-*.tok.zst"]
val = ["$work/bits/val.tok.zst"]

[[data.sources]]
name = "licenses"
role = "general"
train = ["$work/general/train-*.tok.zst"]
val = ["$work/general/val.tok.zst"]
weight = 0.5
EOF
  "$dapt" train "$work/src.toml" --run.name=straight > "$work/log"
  "$py" "$here/check_metrics.py" --sources "$work/runs/straight" 8 30 \
    "[[0,0.3],[0.85,0.3],[0.85,0.6],[1,0.6]]"
  grep -q "val/bits loss" "$work/log" || fail "no per-source eval line"
  kill_at_step10 "$work/src.toml"
  "$dapt" train "$work/src.toml" --run.name=killed --resume > "$work/resumed.log"
  cmp "$work/runs/straight/ckpt/step-00000030/model.safetensors" \
      "$work/runs/killed/ckpt/step-00000030/model.safetensors" || fail "weights differ"
  "$py" "$here/check_metrics.py" --same-losses "$work/runs/straight" "$work/runs/killed"
  "$py" - "$work/runs/straight" "$work/runs/killed" <<'PY' || fail "samples differ after --resume"
import json, sys
def last(run):  # the last record of each step (a resumed run repeats some)
    return {r["step"]: r["samples"] for r in map(json.loads, open(f"{run}/metrics.jsonl"))
            if r["type"] == "train"}
a, b = last(sys.argv[1]), last(sys.argv[2])
print(f"samples at step 30: {b[30]}")
sys.exit(0 if a == b else 1)
PY
  # the data fingerprint covers the sources: another weight is another stream
  sed 's/^weight = 2$/weight = 3/' "$work/src.toml" > "$work/src3.toml"
  expect_error "resume: the data stream differs from the checkpoint.s" \
    "$dapt" train "$work/src3.toml" --run.name=killed --resume
  sed "s#bits/train-#bits/nothing-#" "$work/src.toml" > "$work/bad.toml"
  expect_error "\[\[data.sources\]\]: source 'bits': train glob '.*nothing-\*.tok.zst' matched no files" \
    "$dapt" train "$work/bad.toml"
  sed '/^name = "licenses"/,$d' "$work/src.toml" | sed '$d' > "$work/nogen.toml"
  expect_error "no source has role \"general\", but mix.domain_frac \(.*\) asks" \
    "$dapt" train "$work/nogen.toml"
  ;;
rundir)
  run_id() { "$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$1"; }
  "$dapt" train "$work/tiny.toml" > /dev/null
  r=$work/runs/tiny
  id=$(run_id "$r/run.json")
  [[ $id =~ ^[0-9a-f]{16}$ ]] || fail "run id '$id'"
  [[ $(run_id "$r/ckpt/step-00000030/trainer_state.json") == "$id" ]] || fail "checkpoint's run id"
  n=$(wc -l < "$r/metrics.jsonl")
  expect_error "runs/tiny already holds a run .*--resume.*--overwrite.*runs/tiny.old-" \
    "$dapt" train "$work/tiny.toml" --train.steps=10
  [[ $(wc -l < "$r/metrics.jsonl") == "$n" ]] || fail "the refused run wrote metrics"
  [[ $(ls "$r/ckpt") == "step-00000020"*"step-00000030" ]] || fail "checkpoints changed: $(ls "$r/ckpt")"
  expect_status 2 "exclude each other" "$dapt" train "$work/tiny.toml" --resume --overwrite # a usage error
  "$dapt" train "$work/tiny.toml" --train.steps=10 --overwrite > "$work/log"
  grep -q "moved the previous run aside: .*runs/tiny -> .*runs/tiny.old-" "$work/log" ||
    fail "no message: $(cat "$work/log")"
  old=$(ls -d "$work"/runs/tiny.old-*)
  [[ $(wc -l < "$old/metrics.jsonl") == "$n" && -d $old/ckpt/step-00000030 ]] || fail "old run not kept whole"
  id2=$(run_id "$r/run.json")
  [[ $id2 != "$id" && $(run_id "$r/ckpt/step-00000010/trainer_state.json") == "$id2" ]] ||
    fail "new run id $id2 (old $id) not in its checkpoint"
  grep -q '"step":30' "$r/metrics.jsonl" && fail "old records in the new metrics.jsonl"
  # --resume keeps the run id (a killed run resumed)
  kill_at_step10 "$work/tiny.toml"
  id3=$(run_id "$work/runs/killed/run.json")
  "$dapt" train "$work/tiny.toml" --run.name=killed --resume > /dev/null
  [[ $(run_id "$work/runs/killed/run.json") == "$id3" &&
     $(run_id "$work/runs/killed/ckpt/step-00000030/trainer_state.json") == "$id3" ]] ||
    fail "--resume changed the run id"
  echo "ok: run ids $id, $id2, $id3"
  ;;
checksum)
  "$dapt" train "$work/tiny.toml" > /dev/null
  ck=$work/runs/tiny/ckpt
  "$py" -c 'import json,sys; c=json.load(open(sys.argv[1]))["checksums"]; assert c["algorithm"] == "xxh3-64" and {"model.safetensors", "optimizer.safetensors", "config.json", "tokenizer.model"} <= set(c["files"]), c' \
    "$ck/step-00000030/trainer_state.json" || fail "checksums missing from trainer_state.json"
  # each recorded checksum is xxHash's own XXH3 64 of the file (xxhsum, the
  # xxhash package: the oracle)
  command -v xxhsum > /dev/null || fail "xxhsum not found (tools/setup installs the xxhash package)"
  "$py" - "$ck/step-00000030" <<'PY' || fail "a recorded checksum differs from xxhsum -H3's"
import json, os, subprocess, sys
d = sys.argv[1]
files = json.load(open(os.path.join(d, "trainer_state.json")))["checksums"]["files"]
assert len(files) >= 4, files
for name, hex_ in files.items():
    out = subprocess.run(["xxhsum", "-H3", os.path.join(d, name)], capture_output=True, text=True,
                         check=True).stdout
    want = out.split("=")[-1].strip()
    assert len(want) == 16 and want == hex_, (name, hex_, out)
print("checksums: %d files, each as xxhsum -H3 says" % len(files))
PY
  "$dapt" inspect "$ck/step-00000030" > "$work/out" || fail "inspect of a good checkpoint"
  grep -q "match their checksums: ok" "$work/out" || fail "inspect: $(cat "$work/out")"
  # flip one bit of the last weight byte: the file stays a valid safetensors
  "$py" -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(-1,2); b=f.read(1); f.seek(-1,2); f.write(bytes([b[0]^1]))' \
    "$ck/step-00000030/model.safetensors"
  expect_error "step-00000030: model.safetensors does not match its checksum" \
    "$dapt" inspect "$ck/step-00000030"
  "$dapt" inspect "$ck/step-00000020" > /dev/null || fail "inspect of the previous checkpoint"
  "$dapt" train "$work/tiny.toml" --resume > "$work/out" 2> "$work/err" || fail "resume: $(cat "$work/err")"
  grep -q "skipped step-00000030: .*model.safetensors does not match its checksum.*falling back" "$work/err" ||
    fail "no message naming the bad file: $(cat "$work/err")"
  grep -q "resuming from .*step-00000020 (step 20)" "$work/out" || fail "did not resume from step 20: $(cat "$work/out")"
  "$dapt" inspect "$ck/step-00000030" > /dev/null || fail "the rewritten step 30 does not verify"
  # a checkpoint from before checksums: loads, inspect says it is not verified
  "$py" -c 'import json,sys; p=sys.argv[1]; s=json.load(open(p)); del s["checksums"]; json.dump(s, open(p,"w"))' \
    "$ck/step-00000030/trainer_state.json"
  "$dapt" inspect "$ck/step-00000030" > "$work/out" || fail "inspect of a checkpoint without checksums"
  grep -q "no checksums" "$work/out" || fail "inspect: $(cat "$work/out")"
  "$dapt" train "$work/tiny.toml" --resume --train.steps=30 > "$work/out" || fail "resume without checksums"
  grep -q "resuming from .*step-00000030" "$work/out" || fail "did not resume from 30: $(cat "$work/out")"
  # a checkpoint of the older algorithm (FNV-1a 64 then the splitmix64
  # finaliser, data/hash.h; computed here in Python) still verifies, and a
  # wrong one of them is caught
  "$py" - "$ck/step-00000030" <<'PY' || fail "rewriting the checksums as fnv1a64-mix"
import json, os, sys
M = (1 << 64) - 1
def fnv_mix(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & M
    h = (h + 0x9e3779b97f4a7c15) & M
    h = ((h ^ (h >> 30)) * 0xbf58476d1ce4e5b9) & M
    h = ((h ^ (h >> 27)) * 0x94d049bb133111eb) & M
    return h ^ (h >> 31)
d = sys.argv[1]
p = os.path.join(d, "trainer_state.json")
s = json.load(open(p))
names = [n for n in sorted(os.listdir(d)) if n != "trainer_state.json"]
s["checksums"] = {"algorithm": "fnv1a64-mix",
                  "files": {n: "%016x" % fnv_mix(open(os.path.join(d, n), "rb").read()) for n in names}}
json.dump(s, open(p, "w"))
PY
  "$dapt" inspect "$ck/step-00000030" > "$work/out" || fail "inspect of an fnv1a64-mix checkpoint: $(cat "$work/out")"
  grep -q "match their checksums: ok" "$work/out" || fail "inspect: $(cat "$work/out")"
  "$py" -c 'import json,sys; p=sys.argv[1]; s=json.load(open(p)); f=s["checksums"]["files"]; f["config.json"]="%016x" % (int(f["config.json"],16)^1); json.dump(s, open(p,"w"))' \
    "$ck/step-00000030/trainer_state.json"
  expect_error "step-00000030: config.json does not match its checksum \\(fnv1a64-mix" \
    "$dapt" inspect "$ck/step-00000030"
  # a checkpoint copied to another step's name is not resumed as that step
  "$dapt" train "$work/tiny.toml" --run.name=copied > /dev/null
  cp -r "$work/runs/copied/ckpt/step-00000020" "$work/runs/copied/ckpt/step-00000040"
  expect_error "step-00000040: its trainer_state.json holds step 20, its name says step 40" \
    "$dapt" inspect "$work/runs/copied/ckpt/step-00000040"
  "$dapt" train "$work/tiny.toml" --run.name=copied --resume > "$work/out" 2> "$work/err" ||
    fail "resume past a copied checkpoint: $(cat "$work/err")"
  grep -q "skipped step-00000040: .*holds step 20, its name says step 40.*falling back" "$work/err" ||
    fail "no message naming the copied checkpoint: $(cat "$work/err")"
  grep -q "resuming from .*step-00000030 (step 30)" "$work/out" || fail "did not resume from step 30: $(cat "$work/out")"
  ;;
resumecfg)
  kill_at_step10 "$work/tiny.toml"
  expect_error "resume from .*step-00000010: the model differs from the checkpoint's: model.n_layer 2 -> 3, model.d_model 64 -> 128 \\(" \
    "$dapt" train "$work/tiny.toml" --run.name=killed --resume --model.d_model=128 --model.n_layer=3
  "$dapt" train "$work/tiny.toml" --run.name=killed --resume --eval.every=5 --ckpt.keep=3 > "$work/out" ||
    fail "resume with eval and ckpt changed"
  grep -q "^--resume: changed since the checkpoint: eval.every 10 -> 5, ckpt.keep 2 -> 3$" "$work/out" ||
    fail "no line of the changed keys: $(cat "$work/out")"
  "$py" -c 'import sys, tomllib; c = tomllib.load(open(sys.argv[1], "rb")); assert c["eval"]["every"] == 5 and c["ckpt"]["keep"] == 3 and c["model"]["d_model"] == 64 and c["model"]["n_layer"] == 2, c' \
    "$work/runs/killed/config.resolved.toml" || fail "config.resolved.toml"
  ;;
diskfull)
  mkdir -p "$work/runs/full"
  ln -s /dev/full "$work/runs/full/metrics.jsonl"
  expect_error "cannot write .*runs/full/metrics.jsonl: No space left on device; stopping after a checkpoint" \
    "$dapt" train "$work/tiny.toml" --run.name=full --eval.every=0
  [[ -d $work/runs/full/ckpt/step-00000001 ]] || fail "no checkpoint of step 1: $(ls "$work/runs/full/ckpt" 2>&1)"
  grep -q "checkpoint: .*step-00000001" "$work/out" || fail "the checkpoint was not reported"
  # a file size limit of 4 KiB: metrics.jsonl fills up after ~12 train records
  # (the checkpoints, bigger than the limit, are off)
  expect_error "cannot write .*runs/limited/metrics.jsonl: File too large" \
    bash -c 'trap "" XFSZ; ulimit -f 4; exec "$@"' _ "$dapt" train "$work/tiny.toml" \
    --run.name=limited --ckpt.every=0
  "$py" - "$work/runs/limited/metrics.jsonl" << 'EOF2' || fail "metrics.jsonl is not whole records"
import json, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "ends mid-record: %r" % text[-80:]
recs = [json.loads(line) for line in text.splitlines()]
steps = [r["step"] for r in recs if r["type"] == "train"]
assert steps == list(range(1, len(steps) + 1)) and len(steps) > 3, steps
print("ok: %d whole records, train steps 1..%d" % (len(recs), steps[-1]))
EOF2
  ;;
killloop)
  # the uninterrupted run, then the same run SIGKILLed and resumed until it
  # finishes. The kills follow the run's progress, not the clock (so a
  # faster or slower machine kills at the same places): each picks a
  # checkpoint step 2-6 steps past the newest one (a fixed pseudo-random
  # sequence, RANDOM=7) and kills, on odd tries, while that step's save is
  # in its .tmp-step directory, on even ones 0-19 ms after it is committed
  # (inside the following steps or saves)
  args=(--train.steps=60 --ckpt.every=2 --ckpt.keep=1 --eval.every=0)
  "$dapt" train "$work/tiny.toml" "${args[@]}" --run.name=straight > /dev/null
  RANDOM=7
  kills=0 in_save=0 done_=0
  ck=$work/runs/loop/ckpt
  for i in $(seq 1 40); do
    # --resume once a checkpoint exists; killed before the first one, the
    # run directory holds a run that --overwrite moves aside
    resume=() newest=0
    if compgen -G "$ck/step-*" > /dev/null; then
      resume=(--resume)
      newest=$(ls "$ck" | grep -E '^step-[0-9]+$' | tail -1)
      newest=$((10#${newest#step-}))
    elif [[ -d $work/runs/loop ]]; then
      resume=(--overwrite)
    fi
    target=$((newest + 2 * (1 + RANDOM % 3)))
    "$dapt" train "$work/tiny.toml" "${args[@]}" --run.name=loop "${resume[@]}" \
      > "$work/loop.log" 2> "$work/loop.err" &
    pid=$!
    if ((target >= 60)); then # the rest of the run, not killed
      wait $pid || fail "run $i failed: $(cat "$work/loop.err")"
      done_=1
      break
    fi
    name=$(printf 'step-%08d' $target)
    # wait for the target (tight polling: a tiny save lasts milliseconds)
    t_end=$((SECONDS + 120))
    while kill -0 $pid 2> /dev/null && ((SECONDS < t_end)); do
      if ((i % 2)) && [[ -d $ck/.tmp-$name ]]; then in_save=$((in_save + 1)); break; fi
      [[ -d $ck/$name ]] && { sleep "0.0$(printf '%02d' $((RANDOM % 20)))"; break; }
    done
    kill -9 $pid 2> /dev/null || fail "run $i ended before step $target: $(cat "$work/loop.err")"
    wait $pid 2> /dev/null || true
    kills=$((kills + 1))
    # every checkpoint left verifies: a kill never leaves a damaged step-N
    for c in "$ck"/step-*; do
      [[ -d $c ]] || continue
      "$dapt" inspect "$c" > "$work/insp" 2>&1 || fail "after kill $kills: $c: $(cat "$work/insp")"
    done
  done
  ((done_)) || fail "the run did not finish"
  ((kills >= 8 && in_save >= 2)) ||
    fail "$kills kills, $in_save of them in a save: the loop did not test resuming"
  for f in model optimizer; do
    cmp "$work/runs/straight/ckpt/step-00000060/$f.safetensors" \
      "$work/runs/loop/ckpt/step-00000060/$f.safetensors" ||
      fail "$f differs from the uninterrupted run's after $kills kills"
  done
  echo "ok: $kills kills ($in_save in a save), each followed by --resume; step 60 bitwise the uninterrupted run's"
  ;;
ckptfull)
  # a checkpoint save on a full disk (a 900 KiB file size limit: the
  # 1.1 MB optimizer.safetensors cannot be written) keeps the checkpoint
  # before it, even with keep = 1, and --resume goes on from there
  args=(--ckpt.keep=1 --eval.every=0)
  "$dapt" train "$work/tiny.toml" "${args[@]}" --run.name=straight > /dev/null
  kill_at_step10 "$work/tiny.toml" "${args[@]}"
  "$dapt" inspect "$work/runs/killed/ckpt/step-00000010" > /dev/null || fail "step 10 does not verify"
  expect_error "checkpoint at step 20 failed: .*File too large" \
    bash -c 'trap "" XFSZ; ulimit -f 900; exec "$@"' _ "$dapt" train "$work/tiny.toml" "${args[@]}" \
    --run.name=killed --resume
  [[ $(ls -A "$work/runs/killed/ckpt") == step-00000010 ]] ||
    fail "after the failed save: $(ls -A "$work/runs/killed/ckpt")"
  "$dapt" inspect "$work/runs/killed/ckpt/step-00000010" > /dev/null ||
    fail "step 10 does not verify after the failed save"
  "$dapt" train "$work/tiny.toml" "${args[@]}" --run.name=killed --resume > "$work/out" ||
    fail "--resume after the failed save"
  grep -q "resuming from .*step-00000010 (step 10)" "$work/out" || fail "not from step 10: $(cat "$work/out")"
  for f in model optimizer; do
    cmp "$work/runs/straight/ckpt/step-00000030/$f.safetensors" \
      "$work/runs/killed/ckpt/step-00000030/$f.safetensors" || fail "$f differs from the uninterrupted run's"
  done
  ;;
continue)
  sed -E '/^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len) =/d' \
    "$work/tiny.toml" > "$work/init.toml"
  "$dapt" train "$work/tiny.toml" --ckpt.keep=0 --run.name=straight > /dev/null
  a=$work/runs/straight/ckpt
  # nothing changed: from step 10 on the same stream, bitwise the uninterrupted run
  "$dapt" train "$work/init.toml" --model.init_from="$a/step-00000010" \
    --model.init_optimizer=true --run.name=same > "$work/same.log"
  grep -q "continuing .* from step 10: the same data stream" "$work/same.log" ||
    fail "not continued at the position: $(cat "$work/same.log")"
  for f in model optimizer; do
    cmp "$a/step-00000030/$f.safetensors" "$work/runs/same/ckpt/step-00000030/$f.safetensors" ||
      fail "$f differs from the uninterrupted run's"
  done
  "$py" - "$work/runs/straight" "$work/runs/same" <<'PY' || fail "losses differ"
import json, sys
def losses(run):
    return {r["step"]: l.split('"loss":')[1].split(",")[0] for l in open(f"{run}/metrics.jsonl")
            for r in [json.loads(l)] if r["type"] == "train"}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
bad = [s for s in range(11, 31) if a[s] != b.get(s)]
print(f"steps 11..30: {20 - len(bad)} of 20 losses bitwise equal; continued run's steps {min(b)}..{max(b)}")
sys.exit(1 if bad or sorted(b) != list(range(11, 31)) else 0)
PY
  # rewarm + redecay on a new mixture: a new run of 20 steps from step 0,
  # AdamW's t going on from 30 (checked against the update it made)
  re=(--model.init_from="$a/step-00000030" --model.init_optimizer=true --train.steps=20
      --train.warmup_steps=5 --mix.domain_frac=0.5
      --mix.upsample_domain_frac=0.5 --train.weight_decay=0 --ckpt.every=1 --ckpt.keep=0)
  "$dapt" train "$work/init.toml" "${re[@]}" --run.name=rewarm > "$work/rewarm.log"
  grep -q "AdamW step 30): a new data stream and schedule from step 0" "$work/rewarm.log" ||
    fail "not a new schedule: $(cat "$work/rewarm.log")"
  "$py" - "$a/step-00000030" "$work/runs/rewarm" <<'PY' || fail "rewarmed run"
import json, math, struct, sys, tomllib
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__" or v["dtype"] != "F32":
            continue
        lo, hi = v["data_offsets"]
        out[k] = struct.unpack(f"<{(hi - lo) // 4}f", raw[8 + n + lo:8 + n + hi])
    return out
base, run = sys.argv[1], sys.argv[2]
cfg = tomllib.load(open(f"{run}/config.resolved.toml", "rb"))["train"]
b1, b2, eps = cfg["beta1"], cfg["beta2"], cfg["eps"]
recs = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
train = [r for r in recs if r["type"] == "train"]
lrs = [r["lr"] for r in train]
# rewarm: the warmup again (lr * (s+1)/5), then the decay to min_lr
assert [r["step"] for r in train] == list(range(1, 21)), "steps"
assert all(abs(lrs[s] - cfg["lr"] * (s + 1) / 5) <= 1e-6 * cfg["lr"] for s in range(5)), lrs[:5]
assert lrs[4] > lrs[10] > lrs[19] >= cfg["min_lr"] * (1 - 1e-6), lrs
st = json.load(open(f"{run}/ckpt/step-00000020/trainer_state.json"))
assert st["step"] == 20 and st["adam_step"] == 50, (st["step"], st["adam_step"])
# step 1's update from the checkpoint's weights with the moments it wrote:
# p1 = p0 - lr * (m1 / (1 - b1^t)) / (sqrt(v1 / (1 - b2^t)) + eps), t = 31
p0, p1 = tensors(f"{base}/model.safetensors"), tensors(f"{run}/ckpt/step-00000001/model.safetensors")
opt = tensors(f"{run}/ckpt/step-00000001/optimizer.safetensors")
def worst(t):
    bc1, bc2, w = 1 - b1 ** t, 1 - b2 ** t, 0.0
    for name, a in p0.items():
        m, v = opt["exp_avg." + name], opt["exp_avg_sq." + name]
        for i in range(0, len(a), 7):
            step = lrs[0] * (m[i] / bc1) / (math.sqrt(v[i] / bc2) + eps)
            # float32 kernel, lr printed to 6 digits: 1e-4 of the update, 1e-6 of the weight
            w = max(w, abs(a[i] - step - p1[name][i]) / (1e-4 * abs(step) + 1e-6 * abs(a[i]) + 1e-12))
    return w
w31, w1 = worst(31), worst(1)
print(f"rewarm lr {lrs[:3]}..{lrs[-1]}; adam_step 50; step-1 update error / tolerance: "
      f"t=31 {w31:.3f}, t=1 {w1:.1f}")
sys.exit(0 if w31 <= 1 and w1 > 1 else 1)
PY
  # a continued run resumes like any run (its AdamW offset in the checkpoint)
  "$dapt" train "$work/init.toml" "${re[@]}" --ckpt.every=10 --run.name=again > /dev/null
  mkdir -p "$work/runs/part/ckpt" && cp -r "$work/runs/rewarm/ckpt/step-00000010" "$work/runs/part/ckpt/"
  "$dapt" train "$work/init.toml" "${re[@]}" --ckpt.every=10 --run.name=part --resume > /dev/null
  cmp "$work/runs/again/ckpt/step-00000020/model.safetensors" \
      "$work/runs/part/ckpt/step-00000020/model.safetensors" || fail "resumed continued run differs"
  # errors: init_optimizer without init_from; a checkpoint without optimizer state
  expect_error "model.init_optimizer \(command line\) = true needs model.init_from" \
    "$dapt" train "$work/tiny.toml" --model.init_optimizer=true
  mkdir -p "$work/weights" && cp "$a/step-00000030/"{config.json,model.safetensors} "$work/weights/"
  expect_error "model.init_optimizer = true, but model.init_from = \".*weights\" has no optimizer state" \
    "$dapt" train "$work/init.toml" --model.init_from="$work/weights" --model.init_optimizer=true
  cp -r "$a/step-00000030" "$work/noopt" && rm "$work/noopt/optimizer.safetensors"
  expect_error "init_from = \".*noopt\" with model.init_optimizer: .*optimizer.safetensors" \
    "$dapt" train "$work/init.toml" --model.init_from="$work/noopt" --model.init_optimizer=true
  ;;
evalhook)
  t=$work/tasks.jsonl
  {
    for h in stdio stdlib string unistd; do
      echo "{\"task\": \"headers\", \"context\": \"#include <$h\", \"choices\": [\".h>\", \".c>\", \"_h>\"], \"answer\": 0}"
    done
    echo '{"task": "license_ppl", "type": "perplexity", "text": "This program is free software; you can redistribute it and/or modify it under the terms of the GNU General Public License."}'
    echo '{"task": "license_ppl", "type": "perplexity", "text": "Permission is hereby granted, free of charge, to any person obtaining a copy"}'
  } > "$t"
  cat > "$work/hook.sh" << 'SH'
echo "evaluating $1"
if [ -f "$1/model.safetensors" ]; then has=true; else has=false; fi
echo "{\"ckpt\": \"$1\", \"step\": $DAPT_STEP, \"has_model\": $has, \"nested\": {\"a\": [1, 2.5]}}"
SH
  "$dapt" train "$work/tiny.toml" --run.name=plain > /dev/null
  "$dapt" train "$work/tiny.toml" --run.name=hooked "--eval.tasks=[\"$work/task*.jsonl\"]" \
    --eval.shots=1 "--eval.command=sh $work/hook.sh {ckpt}" > "$work/log"
  cat "$work/log" | grep -E "^task|eval.command" || true
  "$dapt" eval "$work/runs/hooked/ckpt/step-00000030" --tasks "$t" --shots 1 --out "$work/cli.json" > /dev/null
  "$py" - "$work/runs/hooked/metrics.jsonl" "$work/cli.json" "$work/runs/hooked" << 'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
cli = json.load(open(sys.argv[2]))["tasks"]
tasks = [r for r in recs if r["type"] == "task"]
steps = sorted({r["step"] for r in tasks})
assert steps == [10, 20, 30], f"task records at steps {steps}, expected 10, 20, 30"
for r in tasks:
    assert r["task"] in ("headers", "license_ppl"), r
    if r["task"] == "headers":
        assert r["kind"] == "multiple_choice" and r["n_items"] == 4 and r["shots"] == 1, r
        assert 0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1, r
    else:
        assert r["kind"] == "perplexity" and r["n_items"] == 2 and r["loss"] > 0, r
last = {r["task"]: r for r in tasks if r["step"] == 30}
assert abs(last["headers"]["acc"] - cli["headers"]["acc"]) < 1e-6, (last["headers"], cli["headers"])
assert abs(last["license_ppl"]["loss"] - cli["license_ppl"]["loss"]) < 1e-5, (last, cli)
assert abs(last["license_ppl"]["bits_per_byte"] - cli["license_ppl"]["bits_per_byte"]) < 1e-5
first = {r["task"]: r for r in tasks if r["step"] == 10}
assert last["license_ppl"]["loss"] < first["license_ppl"]["loss"], "no learning between step 10 and 30?"
hooks = sorted((r for r in recs if r["type"] == "hook"), key=lambda r: r["step"])
assert [h["step"] for h in hooks] == [10, 20, 30], hooks
for h in hooks:
    ck = f"{sys.argv[3]}/ckpt/step-{h['step']:08d}"
    assert h["status"] == "ok" and h["exit_code"] == 0, h
    assert h["result"] == {"ckpt": ck, "step": h["step"], "has_model": 1, "nested": {"a": [1, 2.5]}}, h
print(f"ok: {len(tasks)} task records, {len(hooks)} hook records; step 30 headers acc "
      f"{last['headers']['acc']}, license_ppl loss {last['license_ppl']['loss']}")
PY
  cmp "$work/runs/plain/ckpt/step-00000030/model.safetensors" \
      "$work/runs/hooked/ckpt/step-00000030/model.safetensors" || fail "tasks and hooks changed the weights"
  # a failing hook and a hanging one: recorded, the run unharmed and bounded
  start=$(date +%s)
  "$dapt" train "$work/tiny.toml" --run.name=failing "--eval.command=echo no json; exit 3" > /dev/null
  "$dapt" train "$work/tiny.toml" --run.name=hanging "--eval.command=sleep 300" \
    --eval.command_wait_s=1 --ckpt.every=5 > "$work/hang.log" 2> "$work/hang.err"
  (( $(date +%s) - start < 60 )) || fail "a hanging hook held the run"
  for run in failing hanging; do
    cmp "$work/runs/plain/ckpt/step-00000030/model.safetensors" \
        "$work/runs/$run/ckpt/step-00000030/model.safetensors" || fail "$run hook changed the weights"
  done
  "$py" - "$work/runs/failing/metrics.jsonl" "$work/runs/hanging/metrics.jsonl" << 'PY'
import json, sys
f = [json.loads(l) for l in open(sys.argv[1])]
f = [r for r in f if r["type"] == "hook"]
assert len(f) == 3 and all(r["status"] == "failed" and r["exit_code"] == 3 and "result" not in r
                           for r in f), f
h = [json.loads(l) for l in open(sys.argv[2])]
h = [r for r in h if r["type"] == "hook"]
# 6 checkpoints: 4 runs at once, the 5th and 6th find them all busy
assert [(r["step"], r["status"]) for r in h] == [(25, "not_started"), (30, "not_started"),
    (5, "killed"), (10, "killed"), (15, "killed"), (20, "killed")], h
print("ok: failing hook recorded 3 times (exit 3); hanging hook: 4 killed at the end, 2 not started")
PY
  grep -q "was killed at the end of training" "$work/hang.err" || fail "no report of the killed hook"
  for pid in $(sed -n 's/.*started (pid \([0-9]*\).*/\1/p' "$work/hang.log"); do
    ! kill -0 "$pid" 2> /dev/null || fail "hook process $pid still running"
  done
  # refusals before the first step
  echo '{"task": "x", "context": "a", "choices": ["b"], "answer": 0}' > "$work/bad.jsonl"
  expect_error "bad.jsonl:1: \"choices\" has 1 item" "$dapt" train "$work/tiny.toml" \
    --run.name=bad "--eval.tasks=[\"$work/bad.jsonl\"]"
  expect_error "matches no file" "$dapt" train "$work/tiny.toml" --run.name=bad2 \
    "--eval.tasks=[\"$work/none*.jsonl\"]"
  [[ ! -d $work/runs/bad/ckpt/step-00000010 ]] || fail "trained despite a bad task file"
  ;;
tensorboard)
  # [log] tensorboard: the event files hold metrics.jsonl's numbers
  # (check_tb.py reads them with the tensorboard package); a killed and
  # resumed run adds a second file; a run without the key writes none; an
  # MoE run's expert loads are there too
  "$dapt" train "$work/tiny.toml" --log.tensorboard=true > "$work/log"
  "$py" "$here/check_tb.py" "$work/runs/tiny" 1
  grep -q "^tensorboard = true" "$work/runs/tiny/config.resolved.toml" || fail "key not resolved"
  kill_at_step10 "$work/tiny.toml" --log.tensorboard=true
  "$dapt" train "$work/tiny.toml" --run.name=killed --resume --log.tensorboard=true > /dev/null
  "$py" "$here/check_tb.py" "$work/runs/killed" 2
  "$dapt" train "$work/tiny.toml" --run.name=plain --train.steps=3 --train.warmup_steps=1 > /dev/null
  [[ ! -e $work/runs/plain/tb ]] || fail "tb/ written without log.tensorboard"
  "$dapt" train "$work/tiny.toml" --run.name=moe --train.steps=4 --train.warmup_steps=1 --eval.every=2 \
    --moe.n_experts=4 --log.tensorboard=true > /dev/null
  grep -q '"moe_load_max"' "$work/runs/moe/metrics.jsonl" || fail "no MoE fields to check"
  "$py" "$here/check_tb.py" "$work/runs/moe" 1
  ;;
progress)
  # a role without samples in a step prints "-", not nan, on plain lines
  # and on the terminal's line; the terminal's line is rewritten in place
  "$dapt" train "$work/tiny.toml" --train.steps=6 --train.warmup_steps=1 --eval.every=0 --mix.domain_frac=0 \
    --mix.upsample_domain_frac=0 > "$work/log"
  cat "$work/log"
  grep -qi "nan" "$work/log" && fail "nan on a plain line"
  grep -Eq "^step +6/6 [|] loss [0-9.]+ \(domain -, general [0-9.]+\)" "$work/log" ||
    fail "no '-' for the domain role on the plain line"
  if command -v script > /dev/null; then
    script -qec "'$dapt' train '$work/tiny.toml' --run.name=tty --train.steps=6 --train.warmup_steps=1 --eval.every=0 \
      --mix.domain_frac=0 --mix.upsample_domain_frac=0" /dev/null > "$work/tty"
    grep -qi "nan" "$work/tty" && fail "nan on the terminal"
    tr '\r' '\n' < "$work/tty" | grep -Eq "^\[[#.]+\] +6/6 .*domain -, general [0-9.]+" ||
      fail "no progress bar with '-' on the terminal: $(cat -v "$work/tty")"
    # steps 2 and 6 at least (it is redrawn at most 10 times a second)
    n=$(grep -o $'\r' "$work/tty" | wc -l)
    ((n >= 2)) || fail "the terminal's line is not rewritten in place ($n carriage returns)"
    echo "ok: terminal line: $(tr '\r' '\n' < "$work/tty" | grep -E '^\[' | tail -1)"
  fi
  ;;
*) fail "unknown mode $mode" ;;
esac
echo "PASS $mode"
