#!/usr/bin/env python3
"""tools/make_tasks.py OUT_DIR: sample `dapt eval` task files (docs/eval.md)
from the demo's Debian corpora (tools/demo_corpora.py: `fortunes` and
`manpages-dev`), deterministic for the same package versions:

  manpages_name.jsonl   multiple_choice: a manual page's one-line
                        description, which function it describes (the page's
                        first name, against 3 names of other pages)
  fortunes_end.jsonl    multiple_choice: a fortune without its last word,
                        which word ends it (against 3 last words of others)
  manpages_ppl.jsonl    perplexity: 20 manual pages (each cut at 2,000 bytes
  fortunes_ppl.jsonl    perplexity: 40 fortunes            on a line end)

The demo trains on all of both corpora, so these are examples of the format
and a quick signal of adaptation (the domain task should rise and the
general one hold during CPT), not a held-out benchmark. configs/tasks/ holds
the files this script wrote on Debian 12 (manpages-dev 6.03, fortunes
1:1.99.1).
"""
import gzip
import json
import os
import random
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_corpora import fortunes, manpages  # noqa: E402

N_MC = 200


def page_names():
    """(first name, description) of each manpages-dev page with a NAME line."""
    files = subprocess.run(["dpkg", "-L", "manpages-dev"], capture_output=True, text=True,
                           check=True).stdout.split()
    seen = set()
    for path in sorted(f for f in files if re.search(r"/man[23]/[^/]+\.gz$", f)):
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        m = re.search(r"^\.SH NAME\n(.*?)\n\.SH", text, re.S | re.M)
        if not m:
            continue
        line = " ".join(m.group(1).split())
        if "\\-" not in line:
            continue
        names, desc = line.split("\\-", 1)
        name = names.split(",")[0].strip().replace("\\", "")
        desc = re.sub(r"\\f.|\\", "", desc).strip()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and desc and name not in seen:
            seen.add(name)
            yield name, desc


def write(path, items):
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    print(f"{path}: {len(items)} items")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(29)

    pages = list(page_names())
    items = []
    for name, desc in rng.sample(pages, N_MC):
        others = rng.sample([n for n, _ in pages if n != name], 3)
        choices = [" " + c for c in others]
        answer = rng.randrange(4)
        choices.insert(answer, " " + name)
        items.append({"task": "manpages_name",
                      "context": f"The C function that does this: {desc}. Its name is",
                      "choices": choices, "answer": answer})
    write(os.path.join(out, "manpages_name.jsonl"), items)

    docs = [d for d in fortunes() if 40 <= len(d) <= 300]
    ends = []
    for d in docs:
        m = re.match(r"(?s)(.*\S)\s+([A-Za-z]{3,})([.!?]?)$", d)
        if m:
            ends.append((m.group(1), m.group(2)))
    items = []
    words = sorted({w for _, w in ends})
    for ctx, word in rng.sample(ends, N_MC):
        others = rng.sample([w for w in words if w != word], 3)
        answer = rng.randrange(4)
        choices = [" " + w for w in others]
        choices.insert(answer, " " + word)
        items.append({"task": "fortunes_end", "context": ctx, "choices": choices,
                      "answer": answer})
    write(os.path.join(out, "fortunes_end.jsonl"), items)

    def cut(d, n=2000):
        return d if len(d) <= n else d[:d.rfind("\n", 0, n)]

    write(os.path.join(out, "manpages_ppl.jsonl"),
          [{"task": "manpages_ppl", "type": "perplexity", "text": cut(d)}
           for d in rng.sample(list(manpages()), 20)])
    write(os.path.join(out, "fortunes_ppl.jsonl"),
          [{"task": "fortunes_ppl", "type": "perplexity", "text": d}
           for d in rng.sample(docs, 40)])


if __name__ == "__main__":
    main()
