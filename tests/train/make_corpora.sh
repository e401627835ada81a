#!/usr/bin/env bash
# make_corpora.sh DAPT DIR: two small corpora from files every Debian build
# machine has (general: the license texts; domain: C headers), a 512-token
# sentencepiece model trained on both, and their shards:
#   DIR/tok/tokenizer.model, DIR/general/{train-*,val}.tok.zst, DIR/domain/...
set -euo pipefail
dapt=$1 dir=$2
mkdir -p "$dir"
cat /usr/share/common-licenses/* > "$dir/general.txt"
cat /usr/include/stdio.h /usr/include/stdlib.h /usr/include/string.h /usr/include/unistd.h \
    /usr/include/x86_64-linux-gnu/sys/*.h > "$dir/domain.txt"
truncate -s 300000 "$dir/domain.txt"
"$dapt" tokenize --train-tokenizer --vocab-size 512 --out "$dir/tok" --no-progress \
    "$dir/general.txt" "$dir/domain.txt" > /dev/null
"$dapt" tokenize --model "$dir/tok/tokenizer.model" --out "$dir/general" --val-frac 0.05 \
    --no-progress "$dir/general.txt" > /dev/null
"$dapt" tokenize --model "$dir/tok/tokenizer.model" --out "$dir/domain" --val-frac 0.05 \
    --no-progress "$dir/domain.txt" > /dev/null
