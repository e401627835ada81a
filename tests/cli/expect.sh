#!/usr/bin/env bash
# expect.sh STATUS REGEX [--] CMD [ARGS...]: runs CMD and passes only when
# it exits with exactly STATUS and REGEX (grep -E) matches what it wrote:
# stdout when STATUS is 0, stderr otherwise (a refusal says why on stderr).
# An exact status also rules out a crash (128 + signal) standing in for a
# refusal, and a message that is right under the wrong exit code. With
# EXPECT_KEEP=DIR set, CMD's stdout and stderr are left in DIR/out, DIR/err.
set -u
if [[ $# -lt 3 ]]; then
  echo "usage: expect.sh STATUS REGEX [--] CMD [ARGS...]" >&2
  exit 2
fi
want=$1 pat=$2
shift 2
[[ $1 == -- ]] && shift
if [[ -n ${EXPECT_KEEP:-} ]]; then
  tmp=$EXPECT_KEEP
else
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
fi
"$@" >"$tmp/out" 2>"$tmp/err"
got=$?
stream=stderr
[[ $want == 0 ]] && stream=stdout
file=$tmp/out
[[ $stream == stderr ]] && file=$tmp/err
if [[ $got != "$want" ]]; then
  echo "FAIL: $*: exit $got, expected $want"
  echo "stderr: $(head -c 2000 "$tmp/err")"
  exit 1
fi
if ! grep -qE -- "$pat" "$file"; then
  echo "FAIL: $*: $stream lacks /$pat/:"
  head -c 2000 "$file"
  exit 1
fi
echo "ok: exit $got, $stream matches /$pat/"
