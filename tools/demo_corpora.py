#!/usr/bin/env python3
"""tools/demo_corpora.py OUT_DIR: the demo's two corpora, from Debian packages.

  general.txt  English prose: the fortune cookies of the `fortunes` package
               (quotations, jokes, literature, definitions; the offensive set
               is not used), one fortune per document.
  domain.txt   C/POSIX programming: the section 2 and 3 manual pages of
               `manpages-dev` (system calls and the C library), one page per
               document, roff markup stripped to plain text.

Why these: both ship with Debian (nothing is downloaded), they are clearly
different registers of English (everyday prose vs. API reference with C
code), and the domain is one CPT users care about (code documentation).
Documents are separated by blank lines, the format `dapt tokenize` reads.
"""
import gzip
import os
import re
import subprocess
import sys

FORTUNES = "/usr/share/games/fortunes"


def fortunes():
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if "." in name or not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        for doc in text.split("\n%\n"):
            doc = "\n".join(l.rstrip() for l in doc.splitlines() if l.strip())
            if len(doc) > 20:
                yield doc


ESCAPES = [(r"\\f\[[A-Z]*\]|\\f\([A-Z]{2}|\\f[BIRPC]", ""), (r"\\-", "-"), (r"\\e", "\\\\"),
           (r"\\\(aq", "'"), (r"\\\(dq", '"'), (r"\\\(em|\\\(en", "-"), (r"\\\(bu", "*"),
           (r"\\\(lq|\\\(rq", '"'), (r"\\\(.{2}", ""), (r"\\&", ""), (r"\\ ", " "),
           (r"\\\*\(.{2}|\\\*.", ""), (r"\\[|^]", ""), (r"\\s[-+]?\d", "")]
SKIP = {"TH", "PP", "P", "LP", "TP", "IP", "RS", "RE", "nf", "fi", "br", "sp", "in", "ad", "na",
        "EX", "EE", "ft", "ne", "ti", "ce", "ll", "nh", "hy", "TQ", "UR", "UE", "ME", "MT", "so",
        "de", "ds", "if", "ie", "el", "ig", "..", "SY", "YS", "OP"}


def strip_roff(text):
    out = []
    for line in text.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}', "\\}")):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].split(None, 1)
            if not parts or parts[0] in SKIP:
                continue
            arg = parts[1] if len(parts) > 1 else ""
            if parts[0] in ("SH", "SS"):
                line = arg.strip('"')
            elif parts[0] in ("B", "I", "SM", "SB"):
                line = arg.strip('"')
            elif parts[0] in ("BR", "IR", "RB", "RI", "BI", "IB"):
                line = "".join(a.strip('"') for a in re.findall(r'"[^"]*"|\S+', arg))
            else:
                continue
        for pat, rep in ESCAPES:
            line = re.sub(pat, rep, line)
        if line.strip():
            out.append(line.rstrip())
    return "\n".join(out)


def manpages():
    files = subprocess.run(["dpkg", "-L", "manpages-dev"], capture_output=True, text=True,
                           check=True).stdout.split()
    for path in sorted(f for f in files if re.search(r"/man[23]/[^/]+\.gz$", f)):
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        text = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        if text.lstrip().startswith(".so "):
            continue  # a page that only points to another
        doc = strip_roff(text)
        if len(doc) > 200:
            yield doc


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, docs in (("general.txt", fortunes()), ("domain.txt", manpages())):
        n = size = 0
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            for d in docs:
                f.write(d + "\n\n")
                n += 1
                size += len(d)
        print(f"{name}: {n} documents, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
