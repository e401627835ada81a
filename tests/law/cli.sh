#!/usr/bin/env bash
# tests/law/cli.sh DAPT: end-to-end checks of `dapt law`. Takes the
# synthetic sweeps of tests/law/synth.sh (known D-CPT laws), fits them
# through the CLI from JSONL and from CSV, checks predictions against the
# true law, checks both recommend usages against the law's own
# predictions, and checks that bad results files and bad usage fail with
# the right exit status and a message naming the file and line.
set -uo pipefail
dapt=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }

source "$(dirname "$0")/synth.sh"

num() { sed -E "s/.*\"$1\":([^,}]*).*/\1/" <<<"$2"; }
# within A B TOL: |A - B| <= TOL * |B|
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t * (b < 0 ? -b : b)) }'; }

# Help and usage.
"$dapt" law --help | grep -q "recommend" || fail "law --help"
"$dapt" law fit --help | grep -q -- "--out" || fail "law fit --help"
"$dapt" law recommend --help | grep -q -- "--domain-tokens" || fail "law recommend --help"
# usage errors: exit 2 and the message (tests/cli/expect.sh)
expect=$(cd "$(dirname "$0")" && pwd)/../cli/expect.sh
"$expect" 2 "^dapt law fit: --out is required" "$dapt" law fit "$tmp/sweep.jsonl" > /dev/null ||
  fail "fit without --out"
"$expect" 2 "^dapt law fit: unknown option --bogus" "$dapt" law fit "$tmp/sweep.jsonl" --out x --bogus \
  > /dev/null || fail "unknown option"
"$expect" 2 "^dapt law: unknown subcommand 'frob'" "$dapt" law frob > /dev/null || fail "unknown subcommand"

# Fit from JSONL and CSV.
"$dapt" law fit "$tmp/sweep.jsonl" --out "$tmp/law.json" > "$tmp/fit.txt" || fail "fit jsonl"
grep -q "leave-one-ratio-out error" "$tmp/fit.txt" || fail "fit prints the held-out error"
grep -qE '"format":[[:space:]]*"dapt-law"' "$tmp/law.json" || fail "law.json format"
"$dapt" law fit "$tmp/sweep.csv" --out "$tmp/law_csv.json" --no-holdout > /dev/null || fail "fit csv"

# Predict at points that are not on the grid: within 4e-4 of the true law
# (measured at most 9.8e-5, general loss at 1.5e8 7e8 0.4; about 4x).
for q in "1.5e8 7e8 0.4" "3e8 3e9 0.6" "7e7 4e9 0.15"; do
  read -r N D r <<<"$q"
  out=$("$dapt" law predict "$tmp/law.json" --N "$N" --D "$D" --r-domain "$r" --json) || fail "predict $q"
  tg=$(awk "$lawfn"' BEGIN { printf "%.10g", lg('"$N"','"$D"','"$r"') }')
  td=$(awk "$lawfn"' BEGIN { printf "%.10g", ld('"$N"','"$D"','"$r"') }')
  within "$(num loss_general "$out")" "$tg" 4e-4 || fail "predict $q general: $out vs $tg"
  within "$(num loss_domain "$out")" "$td" 4e-4 || fail "predict $q domain: $out vs $td"
  out2=$("$dapt" law predict "$tmp/law_csv.json" --N "$N" --D "$D" --r-domain "$r" --json)
  within "$(num loss_domain "$out2")" "$td" 4e-4 || fail "predict (csv fit) $q: $out2 vs $td"
done
"$dapt" law predict "$tmp/law.json" --N 124M --D 2B --r-domain 0.3 | grep -q "loss_domain" || fail "suffixes"

# Recommend, usage 1: the general loss stays within 3% of the law's loss at
# r_domain = 0, and the reported losses are the law's own at the chosen r.
base=$("$dapt" law predict "$tmp/law.json" --N 2e8 --D 1e9 --r-domain 0 --json)
L0=$(num loss_general "$base")
rec=$("$dapt" law recommend "$tmp/law.json" --N 2e8 --D 1e9 --max-general-rise 0.03 --json) || fail "recommend 1"
r=$(num r_domain "$rec")
awk -v r="$r" 'BEGIN { exit !(r > 0 && r < 1) }' || fail "usage 1 r in (0,1): $rec"
awk -v g="$(num loss_general "$rec")" -v l="$L0" 'BEGIN { exit !(g <= 1.03 * l * (1 + 1e-12) && g > 1.03 * l * 0.9999) }' ||
  fail "usage 1: general $(num loss_general "$rec") vs limit 1.03 * $L0 (binding)"
at=$("$dapt" law predict "$tmp/law.json" --N 2e8 --D 1e9 --r-domain "$r" --json)
within "$(num loss_domain "$rec")" "$(num loss_domain "$at")" 1e-6 || fail "usage 1 losses: $rec vs $at"
"$dapt" law recommend "$tmp/law.json" --N 2e8 --D 1e9 --max-general-rise 0.03 | grep -q "flatness" || fail "flatness line"
# Usage 2: a fixed domain-token budget.
rec2=$("$dapt" law recommend "$tmp/law.json" --N 2e8 --domain-tokens 5e8 --json) || fail "recommend 2"
awk -v r="$(num r_domain "$rec2")" 'BEGIN { exit !(r > 0 && r <= 1) }' || fail "usage 2: $rec2"
"$dapt" law recommend "$tmp/law.json" --N 2e8 --domain-tokens 5e8 --D 1e9 2>/dev/null
[[ $? == 2 ]] || fail "usage 2 with --D: exit 2"

# Cross-domain law: 4 domains with their (k1, k2); predict a 5th from its
# k1, k2 alone (its K lies inside the fitted range: within 1%).
"$dapt" law fit "$tmp/cross.jsonl" --out "$tmp/cross.json" --cross-domain > "$tmp/fit.txt" || fail "fit --cross-domain"
grep -q "leave-one-domain-out error" "$tmp/fit.txt" || fail "cross fit prints leave-one-domain-out"
out=$("$dapt" law predict "$tmp/cross.json" --N 1e8 --D 2e9 --r-domain 0.5 --k1 3.0 --k2 0.25 --json) || fail "cross predict"
t=$(awk "$lawfn $crossfn"' BEGIN { printf "%.10g", lx(1e8, 2e9, 0.5, 3.0, 0.25) }')
within "$(num loss_domain "$out")" "$t" 0.01 || fail "cross predict: $out vs $t"
"$dapt" law predict "$tmp/cross.json" --N 1e8 --D 2e9 --r-domain 0.5 2> "$tmp/err.txt"; rc=$?
[[ $rc == 1 ]] && grep -q "k1" "$tmp/err.txt" || fail "cross predict without k1/k2"
# --stdin: many points in one process, each line the same object as --json
one=$("$dapt" law predict "$tmp/law.json" --N 2e8 --D 1e9 --r-domain 0.3 --json)
many=$(printf '1e8 2e9 0.5\n\n2e8 1G 0.3\n' | "$dapt" law predict "$tmp/law.json" --stdin) || fail "predict --stdin"
[[ $(echo "$many" | wc -l) == 2 && $(echo "$many" | sed -n 2p) == "$one" ]] ||
  fail "predict --stdin: line 2 '$(echo "$many" | sed -n 2p)' is not --json's '$one'"
cross=$(echo "1e8 2e9 0.5 3.0 0.25" | "$dapt" law predict "$tmp/cross.json" --stdin) || fail "cross --stdin"
[[ $cross == "$out" ]] || fail "cross predict --stdin: '$cross' vs '$out'"
printf '1e8 2e9 0.5\n1e8 x 0.5\n' | "$dapt" law predict "$tmp/law.json" --stdin > /dev/null 2> "$tmp/err.txt"; rc=$?
[[ $rc == 1 ]] && grep -q "stdin:2: expected" "$tmp/err.txt" || fail "predict --stdin, bad line: $(cat "$tmp/err.txt")"
echo "1e8 2e9" | "$dapt" law predict "$tmp/law.json" --stdin > /dev/null 2> "$tmp/err.txt"; rc=$?
[[ $rc == 1 ]] && grep -q "stdin:1: expected 3 or 5 numbers" "$tmp/err.txt" || fail "predict --stdin, 2 numbers: $(cat "$tmp/err.txt")"
"$dapt" law fit "$tmp/sweep.jsonl" --out "$tmp/x.json" --cross-domain > /dev/null 2> "$tmp/err.txt"; rc=$?
[[ $rc == 1 ]] && grep -q "sweep.jsonl:1: the cross-domain law needs" "$tmp/err.txt" || fail "cross fit without domains"

# Bad results files: exit 1, message names file:line and the problem.
good='{"N": 1e8, "D": 1e9, "r_domain": 0.5, "loss_general": 3, "loss_domain": 2}'
bad() { # NAME CONTENT EXPECTED-SUBSTRING
  printf '%s\n' "$2" > "$tmp/$1"
  "$dapt" law fit "$tmp/$1" --out "$tmp/bad.json" > /dev/null 2> "$tmp/err.txt"
  rc=$?
  [[ $rc == 1 ]] || fail "$1: exit $rc, expected 1"
  grep -qF -- "$3" "$tmp/err.txt" || fail "$1: stderr '$(cat "$tmp/err.txt")' lacks '$3'"
}
bad nan.jsonl "$good"$'\n''{"N": 1e8, "D": 2e9, "r_domain": 0.5, "loss_domain": NaN}' "nan.jsonl:2:"
bad neg.csv $'N,D,r_domain,loss_domain\n1e8,1e9,0.5,2\n1e8,2e9,0.5,-2' "neg.csv:3: loss_domain = -2 must be > 0"
bad r.jsonl '{"N": 1e8, "D": 2e9, "r_domain": 2, "loss_domain": 2}' "r.jsonl:1: r_domain = 2 is outside [0, 1]"
bad n.jsonl '{"N": -1, "D": 2e9, "r_domain": 0.5, "loss_domain": 2}' "n.jsonl:1: N = -1 must be > 0"
bad d.jsonl '{"N": 1e8, "D": 0, "r_domain": 0.5, "loss_domain": 2}' "d.jsonl:1: D = 0 must be > 0"
bad dup.jsonl "$good"$'\n'"$good" "dup.jsonl:2: duplicate row"
bad few.jsonl "$good" "1 rows have loss_general but the law has 9 parameters"
bad missing.jsonl '{"N": 1e8, "r_domain": 0.5, "loss_domain": 2}' 'missing.jsonl:1: missing field "D"'
"$dapt" law fit "$tmp/nonexistent.jsonl" --out "$tmp/x.json" 2> "$tmp/err.txt"; rc=$?
[[ $rc == 1 ]] && grep -q "nonexistent.jsonl: cannot open" "$tmp/err.txt" || fail "missing file"
echo '{"format": "other"}' > "$tmp/notlaw.json"
"$dapt" law predict "$tmp/notlaw.json" --N 1e8 --D 1e9 --r-domain 0.5 2> "$tmp/err.txt"; rc=$?
[[ $rc == 1 ]] && grep -q "notlaw.json" "$tmp/err.txt" || fail "predict with a bad law file"

# Every row at one ratio (issue 28): the fit goes on, with a warning naming
# each target and the ratio; the sweep's own rows (7 ratios) give none.
grep '"r_domain": 0,' "$tmp/sweep.jsonl" > "$tmp/r0.jsonl"
[[ $(wc -l < "$tmp/r0.jsonl") == 20 ]] || fail "r_domain = 0 rows: $(wc -l < "$tmp/r0.jsonl"), expected 20"
"$dapt" law fit "$tmp/r0.jsonl" --out "$tmp/r0.json" > /dev/null 2> "$tmp/err.txt" ||
  fail "fit at r_domain = 0: $(cat "$tmp/err.txt")"
grep -q "warning: every row with loss_domain has r_domain = 0: .*base model's" "$tmp/err.txt" ||
  fail "no warning for a domain law fitted at r_domain = 0 only: $(cat "$tmp/err.txt")"
grep -q "warning: every row with loss_general has r_domain = 0: " "$tmp/err.txt" ||
  fail "no warning for the general law at one ratio: $(cat "$tmp/err.txt")"
"$dapt" law fit "$tmp/sweep.jsonl" --out "$tmp/law2.json" > /dev/null 2> "$tmp/err.txt" || fail "refit"
grep -q "warning: every row" "$tmp/err.txt" && fail "a warning for a sweep of 7 ratios: $(cat "$tmp/err.txt")"

if ((fails)); then echo "tests/law/cli.sh: $fails failure(s)" >&2; exit 1; fi
echo "tests/law/cli.sh: all passed"
