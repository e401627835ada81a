"""tools/bench_hf_tokenizers.py: the HF tokenizers side of tools/bench-data.

  bench_hf_tokenizers.py docs TEXT DOCS
      splits TEXT into documents as dapt's text reader does (blocks of lines
      between blank lines, a line's trailing \\r dropped, empty documents
      skipped) and writes them to DOCS (each a 4-byte little-endian length
      and its UTF-8), the file tok_driver reads
  bench_hf_tokenizers.py time TOKENIZER_JSON DOCS MODE
      encodes every document of DOCS (add_special_tokens=False) and prints
      "WALL CPU" seconds: MODE "single" calls encode per document, "batch"
      calls encode_batch once (threads: RAYON_NUM_THREADS)
"""
import re
import struct
import sys
import time


def main():
    if sys.argv[1] == "docs":
        with open(sys.argv[2], encoding="utf-8") as f:
            blocks = re.split(r"\n(?:[ \t]*\n)+", f.read())
        with open(sys.argv[3], "wb") as out:
            for b in blocks:
                d = "\n".join(l.rstrip("\r") for l in b.split("\n")).strip("\n").encode()
                if d:
                    out.write(struct.pack("<I", len(d)) + d)
        return
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(sys.argv[2])
    with open(sys.argv[3], "rb") as f:
        data = f.read()
    docs, i = [], 0
    while i < len(data):
        n = struct.unpack("<I", data[i:i + 4])[0]
        docs.append(data[i + 4:i + 4 + n].decode())
        i += 4 + n
    t0, c0 = time.time(), time.process_time()
    if sys.argv[4] == "single":
        for d in docs:
            tok.encode(d, add_special_tokens=False)
    else:
        tok.encode_batch(docs, add_special_tokens=False)
    print(f"{time.time() - t0:.3f} {time.process_time() - c0:.3f}")


if __name__ == "__main__":
    main()
