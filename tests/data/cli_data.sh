#!/usr/bin/env bash
# tests/data/cli_data.sh DAPT: the `dapt tokenize` and `dapt inspect` commands
# end to end: --train-tokenizer on license texts, inspect verifying every
# frame and decoding, the zstd CLI reading the shards, and the errors for a
# corrupt shard, an unknown file type and a bad input line (with nothing
# left under a final name). Exits non-zero on the first failed expectation.
set -euo pipefail
dapt=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# a refusal: exact exit status (not a crash) and the message on stderr
expect=$(cd "$(dirname "$0")" && pwd)/../cli/expect.sh

cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 > "$tmp/a.txt"
gzip -c /usr/share/common-licenses/MPL-2.0 > "$tmp/b.txt.gz"
"$dapt" tokenize --train-tokenizer --vocab-size 500 --out "$tmp/out" --val-docs 10 \
  --frame-tokens 4096 --threads 2 --no-progress "$tmp/a.txt" "$tmp/b.txt.gz" > "$tmp/summary"
grep -q "documents (.* train, 10 val)" "$tmp/summary" || fail "summary: $(cat "$tmp/summary")"
[[ -f $tmp/out/tokenizer.model && -f $tmp/out/train-00000.tok.zst && -f $tmp/out/val.tok.zst ]] || fail "outputs missing"

"$dapt" inspect "$tmp/out/train-00000.tok.zst" > "$tmp/inspect"
grep -q "verified .* frames, .* tokens: ok" "$tmp/inspect" || fail "inspect: $(cat "$tmp/inspect")"
grep -q "(= documents)" "$tmp/inspect" || fail "eos count differs from documents"
ntok=$(awk '$1=="tokens"{print $2}' "$tmp/inspect")
# zstd -dc gives the raw 2-byte tokens: byte count = 2 * tokens
bytes=$(zstd -q -dc "$tmp/out/train-00000.tok.zst" | wc -c)
[[ $bytes -eq $((2 * ntok)) ]] || fail "zstd -dc gave $bytes bytes for $ntok tokens"

"$dapt" inspect "$tmp/out/train-00000.tok.zst" --decode 80 --model "$tmp/out/tokenizer.model" > "$tmp/decoded"
grep -q "GNU GENERAL PUBLIC LICENSE" "$tmp/decoded" || fail "decode: $(cat "$tmp/decoded")"
# --tokenizer is the option's name, --model its alias: the same text
"$dapt" inspect "$tmp/out/train-00000.tok.zst" --decode 80 --tokenizer "$tmp/out/tokenizer.model" > "$tmp/decoded2"
cmp -s "$tmp/decoded" "$tmp/decoded2" || fail "inspect --tokenizer and --model decode differently"

# A corpus name with terminal escape sequences (issue 28): inspect prints
# them escaped, never the raw bytes.
"$dapt" tokenize --model "$tmp/out/tokenizer.model" --out "$tmp/esc" --name $'evil\e]0;pwned\a\e[2J' \
  --no-progress "$tmp/a.txt" > /dev/null
"$dapt" inspect "$tmp/esc/train-00000.tok.zst" > "$tmp/inspect_esc"
grep -qF 'corpus name     evil\x1b]0;pwned\x07\x1b[2J' "$tmp/inspect_esc" || fail "name not escaped: $(cat -v "$tmp/inspect_esc")"
if grep -q $'\e' "$tmp/inspect_esc"; then fail "inspect printed a raw escape byte"; fi

# A flipped byte in the middle of the shard: inspect fails naming the file.
cp "$tmp/out/train-00000.tok.zst" "$tmp/bad.tok.zst"
size=$(stat -c %s "$tmp/bad.tok.zst")
printf '\xff' | dd of="$tmp/bad.tok.zst" bs=1 seek=$((size / 2)) conv=notrunc status=none
"$expect" 1 "bad\.tok\.zst" "$dapt" inspect "$tmp/bad.tok.zst" || fail "corrupt shard"

"$expect" 1 "a\.txt: unknown file type" "$dapt" inspect "$tmp/a.txt" || fail "inspect of a .txt"

printf '{"text": "ok"}\n{"txt": "no"}\n' > "$tmp/c.jsonl"
"$expect" 1 "c\.jsonl:2: " "$dapt" tokenize --model "$tmp/out/tokenizer.model" --out "$tmp/out2" \
  --no-progress "$tmp/a.txt" "$tmp/c.jsonl" || fail "bad JSONL"
[[ -z $(ls -A "$tmp/out2") ]] || fail "files left in out2: $(ls "$tmp/out2")"

"$expect" 2 "--tokenizer PATH is required" "$dapt" tokenize --out "$tmp/x" "$tmp/a.txt" ||
  fail "no tokenizer"
echo "cli_data: ok"
