#!/usr/bin/env bash
# The commands' one option parser (trainer/cli/opt.c), through every command
# but train: --help is exit 0 with the usage on stdout; an unknown option,
# a missing value, a value given to a flag and a surplus positional are
# usage errors (exit 2) that name the command and the option, with a
# "did you mean" for a near miss; --name=value means --name value.
set -u
dapt=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# expect STATUS PATTERN ARGS...: exit status STATUS and PATTERN in stderr
expect() {
  local want=$1 pat=$2
  shift 2
  "$dapt" "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  [[ $got == "$want" ]] || fail "dapt $*: exit $got, expected $want: $(cat "$tmp/err")"
  grep -qF -- "$pat" "$tmp/err" || fail "dapt $*: stderr lacks '$pat': $(cat "$tmp/err")"
}
for cmd in tokenize inspect logits sample plan "law fit" "law predict" "law recommend" "law sweep" \
           "export gguf" "import gguf" merge; do
  # shellcheck disable=SC2086
  "$dapt" $cmd --help >"$tmp/out" 2>&1 || fail "dapt $cmd --help: exit $?"
  grep -q "^usage: dapt ${cmd%% *}" "$tmp/out" || fail "dapt $cmd --help: $(head -1 "$tmp/out")"
  # shellcheck disable=SC2086
  expect 2 "dapt ${cmd% gguf}: unknown option --frobnicate" $cmd --frobnicate
done
expect 2 "dapt plan: --gpu-mem abc: expected GiB > 0" plan x.toml --gpu-mem abc
expect 2 "dapt plan: --world 0: expected an integer" plan x.toml --world 0
expect 2 "dapt tokenize: unknown option --modle (did you mean --model?)" tokenize --modle m
expect 2 "dapt export: unknown option --dtyp (did you mean --dtype?)" export gguf --dtyp f16 a b
expect 2 "dapt tokenize: --out needs a value" tokenize --model m --out
expect 2 "dapt import: --force takes no value" import gguf a b --force=yes
expect 2 "dapt inspect: unexpected argument 'b'" inspect a.tok.zst b
expect 2 "dapt sample: --max-new: 'x' is not a number" sample m --prompt p --max-new x
expect 2 "dapt tokenize: --threads 0: expected an integer in [1, 256]" tokenize --threads=0 in
expect 2 "dapt law fit: --starts 'abc' is not a number" law fit r --out o --starts=abc
expect 2 "dapt logits: --ids: item 2" logits m --ids=1,x
expect 2 "dapt merge: --top-k and --shared are for moe" merge o a b --method ties --top-k 2
expect 2 "dapt merge: --density '0.5,x': item 2 is not a number" merge o a b --method ties \
  --density 0.5,x
echo "ok"
