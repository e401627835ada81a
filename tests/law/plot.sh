#!/usr/bin/env bash
# tests/law/plot.sh DAPT PYTHON: tools/law/plot.py draws a fitted law over
# its sweep (a PNG of plausible size comes out) and stops with FILE:LINE on
# a results row it cannot read.
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
"$python" "$plot" "$tmp/sweep.jsonl" "$tmp/law.json" --out "$tmp/fit.png" --dapt "$dapt" --points 8 ||
  fail "plot"
[[ "$(head -c 8 "$tmp/fit.png" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] || fail "not a PNG"
# 10 panels of curves and markers at 110 dpi: far above an empty figure's size.
size=$(stat -c %s "$tmp/fit.png" 2>/dev/null || echo 0)
((size > 50000)) || fail "PNG of $size bytes is too small for 10 panels"
"$python" "$plot" "$tmp/sweep.csv" "$tmp/law.json" --out "$tmp/csv.png" --dapt "$dapt" --points 8 ||
  fail "plot from CSV"
printf '%s\n' '{"N": 1e8, "D": 1e9, "r_domain": 0.5, "loss_domain": 2}' '{"N": 1e8,' > "$tmp/bad.jsonl"
"$python" "$plot" "$tmp/bad.jsonl" "$tmp/law.json" --out "$tmp/bad.png" --dapt "$dapt" 2> "$tmp/err.txt"
[[ $? != 0 ]] && grep -q "bad.jsonl:2:" "$tmp/err.txt" || fail "bad row: $(cat "$tmp/err.txt")"

if ((fails)); then echo "tests/law/plot.sh: $fails failure(s)" >&2; exit 1; fi
echo "tests/law/plot.sh: all passed"
