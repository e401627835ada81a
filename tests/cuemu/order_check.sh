#!/usr/bin/env bash
# order_check.sh: an emulated op group in reverse block and thread order
# (CUEMU_ORDER=reverse), held to the CPU tolerances as usual, and then
# compared bitwise with the forward run's outputs: docs/cuda.md says every
# op is deterministic (fixed reduction trees, no float atomics), so the
# order blocks and threads run in must not change a bit.
#
#   order_check.sh FORWARD_DIGEST REVERSE_DIGEST PROG ARGS...
#
# FORWARD_DIGEST: written by the forward run (test_cuda_ops --digest, the
# emu_ops_* test this one requires as a fixture); PROG ARGS... is run with
# CUEMU_ORDER=reverse --digest REVERSE_DIGEST. Every reverse line (op,
# output, mode, shape, and its occurrence among equal keys) must have a
# forward line with the same hash; a reverse run may cover fewer modes.
set -u
fwd=$1 rev=$2
shift 2
[[ -s $fwd ]] || { echo "order_check: no forward digest $fwd (run its emu_ops_* test)"; exit 1; }
CUEMU_ORDER=reverse "$@" --digest "$rev"
rc=$?
[[ $rc == 0 ]] || { echo "order_check: the reverse run failed (exit $rc)"; exit 1; }
awk '
  { key = $1 " " $2 " " $3 " " $4; k = key " #" (++seen[FILENAME, key]) }
  FNR == NR { fwd[k] = $5; next }
  !(k in fwd) { printf "order_check: %s: no forward run of it\n", k; bad++; next }
  fwd[k] != $5 { printf "order_check: %s: reverse %s, forward %s (not bitwise equal)\n", k, $5, fwd[k]; bad++; next }
  { same++ }
  END {
    printf "order_check: %d outputs bitwise equal in both orders, %d not\n", same, bad
    exit (bad > 0 || same == 0)
  }' "$fwd" "$rev"
