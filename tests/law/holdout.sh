#!/usr/bin/env bash
# tests/law/holdout.sh DAPT PYTHON: tools/law/holdout.py on the synthetic
# sweep of tests/law/synth.sh (known laws, +-0.1% wobble): holding out
# r_domain 0.25 and 0.75, the fit on the other 100 rows predicts the 40
# held-out rows within 0.5% (measured at most 1.12e-3: 4.5x), the
# printed overall error is the one the per-row predictions give, and an
# absent ratio is an error.
set -uo pipefail
dapt=$1 py=$2
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }
source "$here/synth.sh"

"$py" "$here/../../tools/law/holdout.py" "$tmp/sweep.jsonl" --hold 0.25,0.75 --out "$tmp/h" \
  --dapt "$dapt" > "$tmp/out.txt" || fail "holdout.py: $(cat "$tmp/out.txt")"
grep -q "fit on 100 rows, 40 held-out rows" "$tmp/out.txt" || fail "row counts: $(head -1 "$tmp/out.txt")"
"$py" - "$tmp/h/holdout.json" "$tmp/out.txt" <<'PY' || fail "held-out errors"
import json, sys
preds = json.load(open(sys.argv[1]))
eg = [abs(p["pred_general"] - p["loss_general"]) / p["loss_general"] for p in preds]
ed = [abs(p["pred_domain"] - p["loss_domain"]) / p["loss_domain"] for p in preds]
line = [l for l in open(sys.argv[2]) if l.split()[:1] == ["all"]][0].replace("%", "").split()
want = [100 * sum(eg) / len(eg), 100 * max(eg), 100 * sum(ed) / len(ed), 100 * max(ed)]
got = [float(line[i]) for i in (2, 4, 5, 7)]
ok = len(preds) == 40 and {p["r_domain"] for p in preds} == {0.25, 0.75} and \
     max(eg + ed) < 0.005 and min(eg + ed) > 0 and all(abs(g - w) < 0.006 for g, w in zip(got, want))
if not ok:
    sys.exit(f"{len(preds)} rows, max error {max(eg + ed):.4%}, printed {got} vs {want}")
PY
# refused: exit 1 (sys.exit with the message) and the reason on stderr
"$here/../cli/expect.sh" 1 "no rows with r_domain \[0\.3\]" "$py" "$here/../../tools/law/holdout.py" \
  "$tmp/sweep.jsonl" --hold 0.3 --out "$tmp/h2" --dapt "$dapt" > "$tmp/err.txt" ||
  fail "a ratio without rows: $(cat "$tmp/err.txt")"

[[ $fails == 0 ]] && echo "law holdout: all checks passed"
exit $((fails > 0))
