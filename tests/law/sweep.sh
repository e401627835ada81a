#!/usr/bin/env bash
# tests/law/sweep.sh DAPT PYTHON: `dapt law sweep` end to end on the tiny
# corpora of tests/train/make_corpora.sh: a 2-ratio x 1-size x 1-budget sweep
# of a tiny llama (8 steps each) runs both trainings, writes results.jsonl
# whose rows carry the right N, D, r_domain and exactly the runs' eval losses;
# a second invocation skips both runs and trains nothing; --print lists the
# commands; bad SWEEP.toml files and bad usage fail with a status and a
# message naming the file, line and key.
set -uo pipefail
dapt=$1 py=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

bash "$here/../train/make_corpora.sh" "$dapt" "$tmp/c" || { echo "make_corpora failed" >&2; exit 1; }
# the tiny llama of tests/train without its end-of-training upsampling (the
# sweep sets a constant domain share), 8 steps, evals every 4
sed "s|@DIR@|$tmp/c|g; /^upsample_/d; s/^steps = .*/steps = 8/; s/^every = 10/every = 4/; \
     s/^warmup_steps = .*/warmup_steps = 2/" "$here/../train/tiny.toml.in" > "$tmp/base.toml"
cat > "$tmp/sweep.toml" <<EOF
# a tiny sweep
[sweep]
base = "$tmp/base.toml"
out_dir = "$tmp/out"
name_prefix = "t"
ratios = [0.25, 0.75]
sizes = [[1, 32, 2, 64]]
steps = [8]
EOF
"$py" -c "import sys, tomllib; tomllib.load(open(sys.argv[1], 'rb'))" "$tmp/sweep.toml" ||
  fail "tomllib reads the sweep file"

# --print before anything ran: both commands, nothing trained.
"$dapt" law sweep "$tmp/sweep.toml" --print --launcher "mpirun -n 2" > "$tmp/print.txt" || fail "--print"
[[ $(grep -c "^mpirun -n 2 .*dapt.* train $tmp/base.toml " "$tmp/print.txt") == 2 ]] ||
  fail "--print lists 2 launcher-prefixed commands: $(cat "$tmp/print.txt")"
grep -q -- "--run.name=t-L1-d32-h2-f64-s8-r0.250 --mix.domain_frac=0.25 --train.steps=8" "$tmp/print.txt" ||
  fail "--print: overrides of run 1"
[[ ! -e "$tmp/out" ]] || fail "--print trained something"

# The sweep.
"$dapt" law sweep "$tmp/sweep.toml" > "$tmp/run1.txt" 2>&1 || fail "sweep: $(cat "$tmp/run1.txt")"
[[ $(grep -c "not started, training" "$tmp/run1.txt") == 2 ]] || fail "2 runs trained: $(cat "$tmp/run1.txt")"
grep -q "results: $tmp/out/results.jsonl: 4 rows from 2 of 2 runs complete" "$tmp/run1.txt" ||
  fail "results line: $(tail -1 "$tmp/run1.txt")"
for r in 0.250 0.750; do
  grep -q "dapt train: done" "$tmp/out/t-L1-d32-h2-f64-s8-r$r.log" || fail "log of run $r"
done

# Rows against the runs' own metrics and config: N = non-embedding parameters
# of layers 1, d 32, heads 2 (= kv heads), d_ff 64: 2*32 + 4*32*32 + 3*64*32 + 32.
"$py" - "$tmp/out" <<'PY' || fail "results.jsonl rows"
import json, sys, tomllib
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/results.jsonl")]
bad = []
N = 2 * 32 + 4 * 32 * 32 + 3 * 64 * 32 + 32
for r, name in ((0.25, "t-L1-d32-h2-f64-s8-r0.250"), (0.75, "t-L1-d32-h2-f64-s8-r0.750")):
    cfg = tomllib.load(open(f"{out}/{name}/config.resolved.toml", "rb"))
    if cfg["mix"]["schedule"] != [[0.0, r], [1.0, r]] or cfg["model"]["d_model"] != 32:
        bad.append(f"{name}: resolved config {cfg['mix']} {cfg['model']['d_model']}")
    ev = {}
    for l in open(f"{out}/{name}/metrics.jsonl"):
        m = json.loads(l)
        if m["type"] == "eval" and m["tokens"] > 0:
            ev.setdefault((m["step"], m["tokens"]), {})[m["split"]] = m["loss"]
    mine = [x for x in rows if x["run"] == name]
    if sorted(ev) != [(4, 4 * 256), (8, 8 * 256)] or len(mine) != 2:
        bad.append(f"{name}: evals {sorted(ev)}, rows {len(mine)}")
    for x in mine:
        e = ev.get((x["step"], x["D"]))
        if (x["N"], x["r_domain"]) != (N, r) or e is None or \
           (x["loss_domain"], x["loss_general"]) != (e["val/domain"], e["val/general"]):
            bad.append(f"row {x} vs evals {e}, N {N}")
if bad:
    sys.exit("\n".join(bad))
PY

# Again: both runs are complete, nothing is trained, the metrics are unchanged.
sum1=$(cat "$tmp"/out/*/metrics.jsonl | md5sum)
"$dapt" law sweep "$tmp/sweep.toml" > "$tmp/run2.txt" 2>&1 || fail "second sweep"
[[ $(grep -c "complete, skipped" "$tmp/run2.txt") == 2 ]] || fail "second sweep skips: $(cat "$tmp/run2.txt")"
grep -q "training" "$tmp/run2.txt" && fail "second sweep trained"
[[ $(cat "$tmp"/out/*/metrics.jsonl | md5sum) == "$sum1" ]] || fail "second sweep changed metrics"
"$dapt" law sweep "$tmp/sweep.toml" --print > "$tmp/print2.txt" || fail "--print after"
[[ ! -s "$tmp/print2.txt" ]] || fail "--print lists complete runs: $(cat "$tmp/print2.txt")"
# The collected file feeds `dapt law fit` (4 rows < 9 parameters: refused, naming the count).
"$dapt" law fit "$tmp/out/results.jsonl" --out "$tmp/law.json" > /dev/null 2> "$tmp/fit.txt"
[[ $? == 1 ]] && grep -q "4 rows have loss_" "$tmp/fit.txt" || fail "fit reads results: $(cat "$tmp/fit.txt")"

# A partial run: run 2's metrics cut to their first 3 lines. With its
# checkpoint it is resumed (--print says --resume); without one it is
# trained again from the start, and CPU training is deterministic, so the
# collected results (the last record of each step wins) are unchanged.
run2="$tmp/out/t-L1-d32-h2-f64-s8-r0.750"
cp "$tmp/out/results.jsonl" "$tmp/results1.jsonl"
head -3 "$run2/metrics.jsonl" > "$tmp/m" && mv "$tmp/m" "$run2/metrics.jsonl"
"$dapt" law sweep "$tmp/sweep.toml" --print > "$tmp/print3.txt" || fail "--print partial"
[[ $(wc -l < "$tmp/print3.txt") == 1 ]] && grep -q -- "r0.750 .* --resume$" "$tmp/print3.txt" ||
  fail "--print: the partial run with --resume: $(cat "$tmp/print3.txt")"
rm -rf "$run2/ckpt"
"$dapt" law sweep "$tmp/sweep.toml" > "$tmp/run3.txt" 2>&1 || fail "sweep partial: $(cat "$tmp/run3.txt")"
[[ $(grep -c "complete, skipped" "$tmp/run3.txt") == 1 ]] && grep -q "r0.750 .*partial, training" "$tmp/run3.txt" ||
  fail "partial run retrained: $(cat "$tmp/run3.txt")"
cmp -s "$tmp/out/results.jsonl" "$tmp/results1.jsonl" || fail "results after the retrained run differ"

# Bad sweep files and usage.
bad() { # bad EXPECTED_STATUS MESSAGE_PART ARGS...
  local want=$1 msg=$2
  shift 2
  "$dapt" law sweep "$@" > /dev/null 2> "$tmp/err.txt"
  local st=$?
  [[ $st == "$want" ]] && grep -qF -- "$msg" "$tmp/err.txt" ||
    fail "sweep $*: status $st (want $want), message '$(cat "$tmp/err.txt")' (want '$msg')"
}
printf '[sweep]\nbase = "%s"\nout_dir = "%s/o"\nratios = [0.5, 2]\nsteps = [8]\n' "$tmp/base.toml" "$tmp" > "$tmp/b1.toml"
bad 1 "$tmp/b1.toml:4: ratios: 2 is outside [0, 1]" "$tmp/b1.toml"
printf '[sweep]\nbase = "%s/nope.toml"\nout_dir = "o"\nratios = [0.5]\nsteps = [8]\n' "$tmp" > "$tmp/b2.toml"
bad 1 "nope.toml" "$tmp/b2.toml"
printf '[sweep]\nbase = "%s"\nout_dir = "o"\nratios = [0.5]\nsizes = [[1, 30, 4, 64]]\nsteps = [8]\n' "$tmp/base.toml" > "$tmp/b3.toml"
bad 1 "run sweep-L1-d30-h4-f64-s8-r0.500: [model]" "$tmp/b3.toml" # 4 heads do not divide d_model 30
bad 1 "cannot" "$tmp/missing.toml"
printf '\n[moe]\nn_experts = 4\ntop_k = 2\n' | cat "$tmp/base.toml" - > "$tmp/base_moe.toml"
printf '[sweep]\nbase = "%s"\nout_dir = "o"\nratios = [0.5]\nsteps = [8]\n' "$tmp/base_moe.toml" > "$tmp/b4.toml"
bad 1 "is a mixture of experts" "$tmp/b4.toml"
bad 2 "SWEEP.toml is required"
bad 2 "--launcher goes with --print" "$tmp/sweep.toml" --launcher srun
bad 2 "unknown option" "$tmp/sweep.toml" --frob

[[ $fails == 0 ]] && echo "law sweep: all checks passed"
exit $((fails > 0))
