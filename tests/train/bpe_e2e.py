"""bpe_e2e.py DAPT: a Hugging Face byte-level BPE tokenizer directory (Llama 3
style: tokenizer.json with BOS by its post-processor and ignore_merges,
tokenizer_config.json; trained by HF tokenizers on the corpora of
make_corpora.sh) end to end through dapt:

  tokenize   `dapt tokenize --model DIR`: every document of the first shard
             is HF's encoding of its own decoded text plus EOS, and
             `dapt inspect --decode` prints HF's decoding of the shard's ids
  train      data.tokenizer = DIR: the checkpoint holds tokenizer.json and
             tokenizer_config.json byte for byte, and transformers'
             AutoTokenizer loads the checkpoint directory and encodes like
             the original; `dapt sample` continues a prompt
  init_from  a run from that checkpoint with no data.tokenizer finds the
             checkpoint's tokenizer and passes the shards' check
  refusals   data.tokenizer = another BPE directory, and an init_from whose
             tokenizer.json is another one: both refused naming the tokenizer
             and the shards' hash
"""
import filecmp
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "gguf"))
import gguf_common as C  # noqa: E402


def run(cmd, fail=False):
    """runs cmd; it must exit 0, or with fail=True refuse with exit 1 (not a
    usage error, not a crash: a signal is a negative returncode)"""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != (1 if fail else 0):
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}, expected {1 if fail else 0}\n"
                         f"{r.stdout}{r.stderr}")
    return r


def corpora(work):
    """general.txt and domain.txt as tests/train/make_corpora.sh makes them."""
    general, domain = os.path.join(work, "general.txt"), os.path.join(work, "domain.txt")
    with open(general, "wb") as f:
        for p in sorted(glob.glob("/usr/share/common-licenses/*")):
            if os.path.isfile(p):
                f.write(open(p, "rb").read())
    heads = ["/usr/include/stdio.h", "/usr/include/stdlib.h", "/usr/include/string.h",
             "/usr/include/unistd.h"] + sorted(glob.glob("/usr/include/x86_64-linux-gnu/sys/*.h"))
    with open(domain, "wb") as f:
        f.write(b"".join(open(p, "rb").read() for p in heads)[:300000])
    return general, domain


def shard_ids(path):
    info = run([dapt, "inspect", path]).stdout
    width = int(re.search(r"token width (\d)", info).group(1))
    raw = subprocess.run(["zstd", "-dc", path], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<u2" if width == 2 else "<u4").tolist()


def check_shards(tok, hf):
    """Each document of a train shard: HF's encoding of its decoded text,
    BOS first (add_bos from the post-processor), EOS last."""
    ids = shard_ids(sorted(glob.glob(os.path.join(work, "general", "train-*.tok.zst")))[0])
    bos, eos = hf.token_to_id("<|begin_of_text|>"), hf.token_to_id("<|end_of_text|>")
    docs, start = [], 0
    for i, t in enumerate(ids):
        if t == eos:
            docs.append(ids[start:i])
            start = i + 1
    bad = 0
    for d in docs:
        text = hf.decode(d, skip_special_tokens=True)
        bad += hf.encode(text, add_special_tokens=True).ids != d
    print(f"tokenize: {len(docs)} documents of the first shard, {len(ids)} tokens, {bad} differ "
          f"from HF tokenizers' encoding of their text (BOS {bos} first in every one: "
          f"{all(d[:1] == [bos] for d in docs)})")
    if bad or not docs or not all(d[:1] == [bos] for d in docs):
        raise SystemExit("dapt tokenize does not encode as HF tokenizers")
    out = run([dapt, "inspect", os.path.join(work, "general", "val.tok.zst"), "--decode", "40",
               "--model", tok]).stdout
    val = shard_ids(os.path.join(work, "general", "val.tok.zst"))[:40]
    want = hf.decode(val, skip_special_tokens=False)
    if f"first 40 tokens:\n{want}\n" not in out:
        raise SystemExit(f"dapt inspect --decode printed\n{out}\nwant\n{want!r}")
    print(f"inspect: the first 40 tokens decode as HF does: {want[:60]!r}...")


def main():
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    general, domain = corpora(work)
    tok = C.make_bpe_tokenizer(os.path.join(work, "tok"), "llama-bpe", 512, [general, domain])
    other = C.make_bpe_tokenizer(os.path.join(work, "tok2"), "llama-bpe", 500, [general])
    hf = Tokenizer.from_file(os.path.join(tok, "tokenizer.json"))
    for name, src in (("general", general), ("domain", domain)):
        run([dapt, "tokenize", "--model", tok, "--out", os.path.join(work, name), "--val-frac",
             "0.05", "--no-progress", src])
    check_shards(tok, hf)

    cfg = os.path.join(work, "tiny.toml")
    with open(os.path.join(here, "tiny.toml.in")) as f:
        text = f.read().replace("@DIR@", work)
    open(cfg, "w").write(text)
    # 512 trained tokens and the added <tool>: 513 rows at least
    common = ["--model.vocab_size=520", "--train.steps=6", "--ckpt.every=3", "--eval.every=3",
              "--train.warmup_steps=2"]
    run([dapt, "train", cfg, f"--data.tokenizer={tok}", "--run.name=bpe"] + common)
    ck = os.path.join(work, "runs", "bpe", "ckpt", "step-00000006")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not filecmp.cmp(os.path.join(ck, name), os.path.join(tok, name), shallow=False):
            raise SystemExit(f"{name} of the checkpoint differs from the tokenizer's")
    if os.path.exists(os.path.join(ck, "tokenizer.model")):
        raise SystemExit("a tokenizer.model in a BPE run's checkpoint")
    a, b = AutoTokenizer.from_pretrained(tok), AutoTokenizer.from_pretrained(ck)
    texts = C.bpe_texts("llama-bpe") + ["#include <stdio.h>\nint main(void) { return 0; }\n"]
    same = sum(a(t)["input_ids"] == b(t)["input_ids"] for t in texts)
    print(f"checkpoint: {sorted(os.listdir(ck))}; AutoTokenizer ({type(b).__name__}) encodes "
          f"{same}/{len(texts)} texts as the original")
    if same != len(texts) or b.bos_token != "<|begin_of_text|>":
        raise SystemExit("the checkpoint's tokenizer differs from the original")
    prompt = "#include <stdio.h>"
    s = run([dapt, "sample", ck, "--prompt", prompt, "--max-new", "16", "--seed", "3"]).stdout
    if not s.startswith(prompt) or len(s) <= len(prompt) + 1:
        raise SystemExit(f"sample does not continue the prompt: {s!r}")
    print(f"sample: {s.strip()!r}")

    # a run from the checkpoint finds its tokenizer (no data.tokenizer, no
    # shape keys: init_from gives them)
    init = os.path.join(work, "init.toml")
    shape = re.compile(r"^(arch|n_layer|n_head|n_kv_head|d_model|d_ff|vocab_size|max_seq_len|"
                       r"tokenizer) =")
    open(init, "w").write("\n".join(l for l in text.splitlines() if not shape.match(l)))
    run([dapt, "train", init, f"--model.init_from={ck}", "--run.name=again",
         "--train.steps=2", "--ckpt.every=2", "--eval.every=0", "--train.warmup_steps=1"])
    ck2 = os.path.join(work, "runs", "again", "ckpt", "step-00000002")
    if not filecmp.cmp(os.path.join(ck2, "tokenizer.json"), os.path.join(tok, "tokenizer.json"),
                       shallow=False):
        raise SystemExit("the init_from run's checkpoint lacks the tokenizer")
    print("init_from: the checkpoint's tokenizer found, checked and carried on")

    # refusals: another tokenizer, given or found in init_from
    r = run([dapt, "train", cfg, f"--data.tokenizer={other}", "--run.name=bad"] + common, fail=True)
    if not re.search(r"shards were made with a different tokenizer than .*tok2 \(data.tokenizer", r.stderr):
        raise SystemExit(f"data.tokenizer mismatch: {r.stderr}")
    print(f"ok: {r.stderr.strip()}")
    swapped = os.path.join(work, "swapped")
    shutil.copytree(ck, swapped)
    shutil.copy(os.path.join(other, "tokenizer.json"), os.path.join(swapped, "tokenizer.json"))
    r = run([dapt, "train", init, f"--model.init_from={swapped}", "--run.name=bad2"], fail=True)
    if not re.search(r"different tokenizer than .*swapped \(model.init_from's tokenizer", r.stderr):
        raise SystemExit(f"init_from mismatch: {r.stderr}")
    print(f"ok: {r.stderr.strip()}")
    print("PASS bpe tokenizer end to end")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    dapt = sys.argv[1]
    with tempfile.TemporaryDirectory() as work:
        main()
