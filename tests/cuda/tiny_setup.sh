# tiny_setup.sh: sourced by the GPU checks of `dapt train` (cli_check.sh,
# nccl_check.sh, tools/gpu/nccl-overhead) with $dapt (absolute path of the binary) and $data (a
# folder of tiny test corpora, or "make" to make them with
# tests/train/make_corpora.sh) set. Defines skip, fail, metrics_diff, here
# and work (a temporary folder, removed on exit), writes work/tiny.toml from the
# corpora's tiny.toml.in (or tests/train's) and changes to work.
[[ -x $dapt ]] || { echo "FAIL: no dapt binary at $dapt"; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
# RUN_A RUN_B: the lines where their metrics.jsonl differ, the train records
# without their timing (tok_s); nothing, and status 0, when they agree
metrics_diff() {
    diff <(sed 's/"tok_s":[^,]*,//' "$1/metrics.jsonl") <(sed 's/"tok_s":[^,]*,//' "$2/metrics.jsonl")
}
if [[ $data == make ]]; then
    data=$work/data
    "$here/../train/make_corpora.sh" "$dapt" "$data" || fail "make_corpora.sh failed"
fi
data_arg=$data
data=$(cd "$data" && pwd) || fail "no directory $data_arg"
tmpl=$data/tiny.toml.in
[[ -f $tmpl ]] || tmpl=$here/../train/tiny.toml.in
[[ -f $data/tok/tokenizer.model ]] || fail "no test corpora in $data (tools/gpu/pack makes them)"
sed "s#@DIR@#$data#g" "$tmpl" >"$work/tiny.toml"
cd "$work" || fail "cannot enter $work"
