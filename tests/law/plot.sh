#!/usr/bin/env bash
# tests/law/plot.sh DAPT PYTHON: tools/law/plot.py draws a fitted law over
# its sweep (the figure shows the sweep's rows and the law's curves:
# tests/law/plot_check.py) and stops with FILE:LINE on a results row it
# cannot read.
set -uo pipefail
dapt=$1
python=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }
here=$(dirname "$0")
source "$here/synth.sh"
plot="$here/../../tools/law/plot.py"

"$dapt" law fit "$tmp/sweep.jsonl" --out "$tmp/law.json" --no-holdout > /dev/null || fail "fit"
# one plot, of the CSV form of the sweep (the JSONL reader is the bad-row
# check's), 4 points a curve: tests/law/plot_check.py reads the figure back
# and checks its markers, curves, colours and parity points against the
# sweep and the law
"$python" "$here/plot_check.py" "$plot" "$tmp/sweep.csv" "$tmp/law.json" "$tmp/fit.png" "$dapt" 4 ||
  fail "plot"
printf '%s\n' '{"N": 1e8, "D": 1e9, "r_domain": 0.5, "loss_domain": 2}' '{"N": 1e8,' > "$tmp/bad.jsonl"
"$python" "$plot" "$tmp/bad.jsonl" "$tmp/law.json" --out "$tmp/bad.png" --dapt "$dapt" 2> "$tmp/err.txt"
rc=$? # sys.exit(message): exactly 1, not a traceback's 1 without the message nor a crash
[[ $rc == 1 ]] && grep -q "^$tmp/bad.jsonl:2: " "$tmp/err.txt" || fail "bad row: exit $rc: $(cat "$tmp/err.txt")"

if ((fails)); then echo "tests/law/plot.sh: $fails failure(s)" >&2; exit 1; fi
echo "tests/law/plot.sh: all passed"
