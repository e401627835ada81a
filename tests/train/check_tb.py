"""check_tb.py RUN_DIR N_FILES: RUN_DIR/tb's TensorBoard event files, read
back with the tensorboard package's own readers, hold every number of
RUN_DIR/metrics.jsonl at its record's step (as float32, TensorBoard's
simple_value) and nothing else.

The tags are derived here from the JSON independently of trainer/tb.c:
TYPE[/STRING FIELDS]/KEY[/SUBKEY or INDEX...] (docs/train.md,
"TensorBoard"). Two views are checked:
  - every event file alone, through tensorboard's event file loader (it
    checks both CRC32Cs of every record): the multiset of (tag, step,
    value) over the files equals metrics.jsonl's, the first event of each
    file is file_version "brain.Event:2", wall times are plausible;
  - the run as TensorBoard shows it (EventAccumulator over RUN_DIR/tb),
    when no step was written twice (a run that was not killed between
    checkpoints): each tag's (step, value) series equals metrics.jsonl's.
"""

import collections
import glob
import json
import math
import os
import struct
import sys
import time

from tensorboard.backend.event_processing import event_accumulator, event_file_loader


def f32(x):
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def flatten(tag, v, out):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, (int, float)):
        out.append((tag, f32(v)))
    elif isinstance(v, dict):
        for k, x in v.items():
            flatten(f"{tag}/{k}", x, out)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            flatten(f"{tag}/{i}", x, out)


def expected(run_dir):
    want = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if not isinstance(rec.get("step"), int):
                continue
            prefix = "/".join([rec["type"]] + [v for k, v in rec.items() if k != "type" and isinstance(v, str)])
            vals = []
            for k, v in rec.items():
                if k not in ("type", "step"):
                    flatten(f"{prefix}/{k}", v, vals)
            want += [(tag, rec["step"], v) for tag, v in vals]
    return want


def main():
    run_dir, n_files = sys.argv[1], int(sys.argv[2])
    files = sorted(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*")))
    assert len(files) == n_files, f"{len(files)} event files, expected {n_files}: {files}"
    want = expected(run_dir)
    assert want, "metrics.jsonl has no numbers"
    got, n_events = [], 0
    now = time.time()
    for path in files:
        events = list(event_file_loader.LegacyEventFileLoader(path).Load())
        assert events and events[0].file_version == "brain.Event:2", f"{path}: no file_version event first"
        for ev in events[1:]:
            n_events += 1
            assert now - 3600 < ev.wall_time <= now + 1, f"{path}: wall_time {ev.wall_time}"
            assert ev.HasField("summary"), f"{path}: an event without a summary"
            for v in ev.summary.value:
                assert v.WhichOneof("value") == "simple_value", f"{path}: {v.tag} is not a simple_value"
                got.append((v.tag, ev.step, v.simple_value))
        # the loader stops quietly at a bad CRC or a cut record: the bytes
        # read must be the whole file
        raw = list(event_file_loader.RawEventFileLoader(path).Load())
        size = sum(16 + len(r) for r in raw)
        assert size == os.path.getsize(path), f"{path}: {size} bytes of records, file {os.path.getsize(path)}"
    cw, cg = collections.Counter(want), collections.Counter(got)
    missing, extra = cw - cg, cg - cw
    assert not missing and not extra, (
        f"missing from TensorBoard: {sorted(missing)[:5]} ({sum(missing.values())}); "
        f"not in metrics.jsonl: {sorted(extra)[:5]} ({sum(extra.values())})"
    )
    tags = {t for t, _, _ in want}
    steps_twice = len({(t, s) for t, s, _ in want}) < len(want)
    if not steps_twice:
        acc = event_accumulator.EventAccumulator(
            os.path.join(run_dir, "tb"), size_guidance={event_accumulator.SCALARS: 0}
        )
        acc.Reload()
        shown = set(acc.Tags()["scalars"])
        assert shown == tags, f"EventAccumulator tags differ: {sorted(shown ^ tags)[:5]}"
        for tag in tags:
            series = [(e.step, e.value) for e in acc.Scalars(tag)]
            ref = sorted((s, v) for t, s, v in want if t == tag)
            assert sorted(series) == ref, f"{tag}: {series[:3]} vs {ref[:3]}"
    assert all(math.isfinite(v) for _, _, v in got)
    print(
        f"ok: {len(files)} event file(s), {n_events} events, {len(got)} values of {len(tags)} tags "
        f"equal metrics.jsonl" + ("" if steps_twice else "; EventAccumulator shows the same series")
    )


if __name__ == "__main__":
    main()
