"""tests/tok/test_bpe_hf.py: dapt's tokenizer.json byte-level BPE against
Hugging Face tokenizers (the Rust library the .venv's transformers uses).

For each family dapt knows (bpe_families in tokenizer/bpe.h) it TRAINS a
small tokenizer with HF tokenizers on a synthetic many-script corpus, adds
special and ordinary added tokens (lstrip, rstrip, single_word,
normalized), saves tokenizer.json and tokenizer_config.json, and checks
through tok_driver (tests/tok/tok_driver.c, the tokenizer interface):

  1. encode: the ids of every sample text (scripts, NFC-sensitive forms,
     digits, whitespace runs, emoji and ZWJ sequences, contractions in
     both cases, special-token lookalikes, long runs, empty documents,
     seeded random strings) equal HF's encode(add_special_tokens=False);
  2. documents: encode_doc is HF's encode(add_special_tokens=True) + EOS
     (Llama 3's template adds <|begin_of_text|>, the others nothing);
  3. the same ids with merges written as [a, b] pairs (tokenizers >= 0.20)
     instead of "a b" strings;
  4. decode: dapt's bytes equal HF's decode for every encoded text, with
     and without skip_special_tokens, so decode(encode(x)) == x wherever HF
     round-trips; and for seeded random id sequences that cut characters
     (U+FFFD replacement as Rust's from_utf8_lossy);
  5. info: the family (gpt-2 / llama-bpe / qwen2), vocabulary size, BOS/EOS;
     and `dapt tokenize --tokenizer DIR --threads 2` on the texts as JSONL:
     the train shard (read with `zstd -dc`) is each document's HF
     encode(add_special_tokens=True) + EOS, in order;
  6. invalid UTF-8: HF cannot take it (its Rust API takes &str; its Python
     API takes str and replaces a lone surrogate with three U+FFFD); dapt
     refuses it naming the byte offset of the first bad byte.

  test_bpe_hf.py DRIVER DAPT       the checks above (a few seconds)
  test_bpe_hf.py DRIVER DAPT sweep 1 as well for every Unicode scalar value
                                   in a few contexts (the regex classes and
                                   NFC of each code point; minutes)
  test_bpe_hf.py corpus DIR        write the fuzz seeds (tests/tok/corpus):
                                   one tokenizer.json of 300 ids per family
  test_bpe_hf.py train FAMILY V TEXT DIR
                                   train a tokenizer of the family with V ids
                                   on TEXT's lines (no extra added tokens)
                                   into DIR (tools/bench-data uses it)

Prints one line per family with the counts; exit 1 on the first family
with a mismatch (and prints up to 5 of them).
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# name: (gguf pre name, specials (first is EOS), BOS or None)
FAMILIES = {
    "gpt-2": ("gpt-2", ["<|endoftext|>"], None),
    "llama-bpe": ("llama-bpe", ["<|end_of_text|>", "<|begin_of_text|>", "<|eot_id|>"],
                  "<|begin_of_text|>"),
    "qwen2": ("qwen2", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None),
}

SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzàáâãäåæçèéêëìíîïñòóôõöøùúûüýÿœšžßąęłńśźżőű",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщъыьэюяё",
    "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)),
    "kana": "".join(chr(c) for c in range(0x3041, 0x3097)) + "".join(
        chr(c) for c in range(0x30A1, 0x30FB)),
    "hangul": "".join(chr(0xAC00 + 28 * k) for k in range(0, 399)),
    "arabic": "".join(chr(c) for c in range(0x0621, 0x064B)),
    "devanagari": "".join(chr(c) for c in range(0x0905, 0x093A)),
    "thai": "".join(chr(c) for c in range(0x0E01, 0x0E2F)),
}
MARKS = {"arabic": "\u064b\u064e\u064f\u0650\u0651\u0652", "devanagari": "\u093e\u093f\u0940\u0947\u094d\u0902"}
EMOJI = ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "😀", "❤️", "🧑🏿‍💻", "✨"]
PUNCT = [".", ",", "!", "?", ";", ":", "...", "—", "(", ")", "«", "»", "\"", "'", "“", "”", "、", "。",
         "-", "/", "#", "$", "%", "&", "*", "+", "=", "<", ">", "[", "]", "{", "}", "|", "~", "`"]


def words(rng, script, n):
    alpha = SCRIPTS[script]
    out = []
    for _ in range(n):
        w = "".join(rng.choice(alpha) for _ in range(rng.randint(1, 7)))
        if script in MARKS and rng.random() < 0.5:
            w += rng.choice(MARKS[script])
        out.append(w)
    return out


def sentence(rng, vocab):
    parts = []
    for _ in range(rng.randint(3, 14)):
        r = rng.random()
        if r < 0.70:
            w = rng.choice(vocab[rng.choice(list(vocab))])
            if rng.random() < 0.15:
                w = w.capitalize() if rng.random() < 0.5 else w.upper()
            parts.append(w)
        elif r < 0.80:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        elif r < 0.90:
            parts.append(rng.choice(PUNCT))
        elif r < 0.95:
            parts.append(rng.choice(EMOJI))
        else:
            parts.append(rng.choice(["I'm", "you'll", "SHE'S", "we've", "they'd", "it's", "don't",
                                     "WE'LL", "They'Re", "can't"]))
    sep = rng.choice([" ", " ", " ", "  ", "\t", "\n"])
    return sep.join(parts) + rng.choice([".", "!", "?", "\n", ""])


def training_corpus():
    rng = random.Random(1)
    vocab = {s: words(rng, s, 150) for s in SCRIPTS}
    lines = [sentence(rng, vocab) for _ in range(6000)]
    lines += [unicodedata.normalize("NFD", l) for l in lines[:500]]
    lic = "/usr/share/common-licenses"
    for name in sorted(os.listdir(lic)):
        path = os.path.join(lic, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines += f.read().split("\n\n")[:80]
    return lines, vocab


def samples(vocab, specials):
    rng = random.Random(2)
    s = [
        "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "a", "Hello world", " Hello world ",
        "Hello, world! How are you?", "The café is near the CAFÉ.", "cafe\u0301 Cafe\u0301 CAFE\u0301",
        "\u212b\u2126 A\u030a e\u0301\u0301 \u1100\u1161\u11a8 \u0928\u093c \u0915\u094d\u0937",
        "Tiếng Việt có nhiều dấu: ệ ề ễ ữ ự", "ﬁﬂ ﬀ ² ½ Ⅻ ①", "straße STRASSE ǅ ǈ",
        "日本語のテキストです。漢字とかなカナ。", "がぎぐ か\u3099き\u3099", "한국어 텍스트 \u1112\u1161\u11ab",
        "中文文本，包括标点符号！", "مرحبا بالعالم. اَلسَّلَامُ عَلَيْكُمْ", "नमस्ते दुनिया। क्षत्रिय",
        "สวัสดีครับ", "Привет, мир! Ёлка.", "Γειά σου Κόσμε", "1234567890", "12345678901234567890",
        "3.14159 2,718 1e-10 0x1F 007", "٣٤٥ ١٢ १२३ １２３", "I'm you'll SHE'S we've they'd 'S 'LL 'VE 'Ll",
        "'s't're've'm'll'd", "don't DON'T Don'T", "x'ſ 'ſ 'K 'ﬆ", "👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇩🇪",
        "a\u200db\u200cc \u2060 \ufeff", "tabs\t\tand\t spaces   and\n\n newlines \r\n\r\n end",
        "trailing spaces    ", "    leading spaces", "\u00a0nbsp\u00a0\u00a0x \u3000ideographic\u3000",
        "line\u2028sep\u2029para \u0085nel \u180emongolian \u000bvt\u000cff", "\x00nul\x7fdel\x1b[31mred",
        "=" * 300, " " * 200 + "x", "a" * 500, "ab" * 300, "\n" * 50 + "x", "!!!???...,,,", "..." * 40,
        "https://example.com/path?q=1&r=2#frag", "def f(x):\n    return x**2  # comment\n",
        "<html><body class=\"x\">Hi</body></html>", "C:\\Users\\name\\file.txt", "a_b-c.d/e:f",
    ]
    for sp in specials:
        s += [sp, sp + sp, "x" + sp + "y", " " + sp + " ", sp[:-1], sp[1:], "<" + sp + ">",
              sp[:3] + " " + sp[3:], "word" + sp, sp + "\n" + sp + "text", sp.upper()]
    s += ["<|", "|>", "<||>", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
          "[MASK] x [MASK]y z[MASK]", "a  [MASK]  b", "zzword zzwordy xzzword zzword.",
          "cafe\u0301x café x caféx", "⟨added⟩ ⟨added⟩⟨added⟩"]
    rnd = random.Random(3)
    pool = list("aZ09 \t\n'.,!?<|>_-") + list(SCRIPTS["cjk"][:20]) + list(SCRIPTS["arabic"][:10]) \
        + ["\u0301", "\u0308", "\u064e", "\u094d", "\u200d", "\u00a0", "\u3000", "é", "ß", "ſ"] + EMOJI \
        + ["<|endoftext|>", "<|im_end|>", "<|begin_of_text|>", "[MASK]"]
    for _ in range(300):
        s.append("".join(rnd.choice(pool) for _ in range(rnd.randint(1, 40))))
    for _ in range(200):
        s.append(sentence(rnd, vocab) + " " + sentence(rnd, vocab))
    return s


def build(family, lines, vocab_size=None, extras=True):
    pre, specials, bos = FAMILIES[family]
    tok = Tokenizer(models.BPE(ignore_merges=(family == "llama-bpe")))
    if family == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        pat = LLAMA3 if family == "llama-bpe" else QWEN2
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    if family == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size or (3000 if family != "qwen2" else 4000),
                                  special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    if bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, bos_id)])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if not extras:
        return tok, specials[0], bos
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True, special=True,
                                       normalized=False)])
    tok.add_tokens([AddedToken("zzword", single_word=True, normalized=False),
                    AddedToken("cafe\u0301x", normalized=True),
                    AddedToken("⟨added⟩", normalized=False)])
    return tok, specials[0], bos


def write_docs(path, docs):
    with open(path, "wb") as f:
        for d in docs:
            b = d if isinstance(d, bytes) else d.encode("utf-8")
            f.write(struct.pack("<I", len(b)) + b)


def run(driver, *args):
    out = subprocess.run([driver, *args], capture_output=True, check=True)
    return out.stdout.decode("utf-8").split("\n")[:-1]


def ids_of(lines):
    out = []
    for l in lines:
        assert l.startswith("ok"), l
        out.append([int(x) for x in l.split()[1:]])
    return out


def save(tok, eos, bos, d):
    """tokenizer.json and a tokenizer_config.json naming BOS and EOS, in d."""
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    tok.save(path)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": bos, "eos_token": eos, "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    return path


def check_tokenize(dapt, d, tok, texts, eos):
    """`dapt tokenize` on the texts: the shard holds HF's documents."""
    docs = [t for t in texts if t and "\x00" not in t]
    jsonl = os.path.join(d, "docs.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = os.path.join(d, "shards")
    subprocess.run([dapt, "tokenize", "--tokenizer", d, "--out", out, "--val-frac", "0",
                    "--threads", "2", "--no-progress", jsonl], check=True, capture_output=True)
    raw = subprocess.run(["zstd", "-q", "-dc", os.path.join(out, "train-00000.tok.zst")],
                         check=True, capture_output=True).stdout
    width = 2 if tok.get_vocab_size(with_added_tokens=True) <= 65536 else 4
    got = list(struct.unpack(f"<{len(raw) // width}{'H' if width == 2 else 'I'}", raw))
    want = [i for e in tok.encode_batch(docs, add_special_tokens=True) for i in e.ids + [eos]]
    if got == want:
        return []
    k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return [f"dapt tokenize: {len(got)} tokens, HF {len(want)}; first difference at {k}"]


def check_family(driver, dapt, family, work, sweep):
    lines, vocab = training_corpus()
    tok, eos, bos = build(family, lines)
    d = os.path.join(work, family)
    path = save(tok, eos, bos, d)
    tok = Tokenizer.from_file(path)  # what the file says, as dapt reads it
    bad = []

    # 5. info
    info = dict(l.split(" ", 1) for l in run(driver, "info", d))
    want = {"family": FAMILIES[family][0], "vocab": str(tok.get_vocab_size(with_added_tokens=True)),
            "eos": str(tok.token_to_id(eos)), "bos": str(tok.token_to_id(bos) if bos else -1),
            "add_bos": "1" if bos else "0", "kind": "bpe (tokenizer.json)"}
    for k, v in want.items():
        if info.get(k) != v:
            bad.append(f"info {k}: dapt {info.get(k)!r}, expected {v!r}")

    # 1. encode
    texts = samples(vocab, FAMILIES[family][1])
    if sweep:
        texts = [f"a{chr(c)}b {chr(c)}{chr(c)} 1{chr(c)} '{chr(c)}x\n{chr(c)}"
                 for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    docs = os.path.join(d, "docs.bin")
    write_docs(docs, texts)
    hf = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    mine = ids_of(run(driver, "encode", d, docs))
    n_ids = sum(len(x) for x in hf)
    for t, h, m in zip(texts, hf, mine):
        if h != m:
            bad.append(f"encode {t[:60]!r}: HF {h[:12]} dapt {m[:12]}")
    if sweep:
        return bad, len(texts), n_ids

    # 2. documents, also through `dapt tokenize`
    bad += check_tokenize(dapt, d, tok, texts, tok.token_to_id(eos))
    hf_doc = [e.ids + [tok.token_to_id(eos)] for e in tok.encode_batch(texts, add_special_tokens=True)]
    for t, h, m in zip(texts, hf_doc, ids_of(run(driver, "encode", d, docs, "doc"))):
        if h != m:
            bad.append(f"encode_doc {t[:60]!r}: HF {h[:12]} dapt {m[:12]}")

    # 3. merges as pairs, in a tokenizer.json of another name (read alone)
    with open(path) as f:
        j = json.load(f)
    j["model"]["merges"] = [m.split(" ") for m in j["model"]["merges"]]
    pairs = os.path.join(d, "pairs.json")
    with open(pairs, "w") as f:
        json.dump(j, f)
    for t, h, m in zip(texts, hf, ids_of(run(driver, "encode", pairs, docs))):
        if h != m:
            bad.append(f"encode with [a, b] merges {t[:60]!r}: HF {h[:12]} dapt {m[:12]}")

    # 4. decode: encoded texts and random id sequences
    rng = random.Random(4)
    seqs = hf + [[rng.randrange(tok.get_vocab_size(with_added_tokens=True)) for _ in range(rng.randint(1, 12))]
                 for _ in range(300)]
    idf = os.path.join(d, "ids.txt")
    with open(idf, "w") as f:
        f.write("".join(" ".join(map(str, s)) + "\n" for s in seqs))
    n_round = 0
    for skip in (False, True):
        got = run(driver, "decode", d, idf, "skip" if skip else "keep")
        for i, (s, g) in enumerate(zip(seqs, got)):
            want = tok.decode(s, skip_special_tokens=skip).encode("utf-8").hex()
            if g != "ok " + want:
                bad.append(f"decode {s[:12]} skip={skip}: HF {want[:40]} dapt {g[:43]}")
            if not skip and i < len(texts) and bytes.fromhex(want) == texts[i].encode():
                n_round += 1
    # HF round-trips most texts; NFC changes some (and the family without NFC none)
    if n_round < len(texts) * 0.9:
        bad.append(f"only {n_round} of {len(texts)} texts round-trip")

    # 6. invalid UTF-8
    invalid = [(b"abc\xff", 3), (b"\xc3", 0), (b"ok \xe2\x82", 3), (b"\xed\xa0\x80 surrogate", 0),
               (b"\xc0\xafoverlong", 0), (b"fine \xf4\x90\x80\x80", 5)]
    write_docs(docs, [b for b, _ in invalid])
    for (b, off), l in zip(invalid, run(driver, "encode", d, docs)):
        if not l.startswith(f"err byte offset {off} of the text: invalid UTF-8"):
            bad.append(f"invalid UTF-8 {b!r}: {l}")
    # (HF's Python API turns a str with a lone surrogate into three U+FFFD)
    lone = tok.encode("abc\udcff", add_special_tokens=False).ids
    if lone != tok.encode("abc\ufffd\ufffd\ufffd", add_special_tokens=False).ids:
        print(f"  note: HF now encodes a lone surrogate as {lone}")
    return bad, len(texts), n_ids


def main():
    if sys.argv[1] == "train":
        family, v, text, d = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        with open(text, encoding="utf-8") as f:
            save(*build(family, f.read().split("\n"), v, extras=False), d)
        return
    if sys.argv[1] == "corpus":
        lines, _ = training_corpus()
        for family in FAMILIES:
            build(family, lines[:2000], 300)[0].save(os.path.join(sys.argv[2], family + ".json"))
        return
    driver, dapt = sys.argv[1], sys.argv[2]
    sweep = len(sys.argv) > 3 and sys.argv[3] == "sweep"
    work = tempfile.mkdtemp(prefix="dapt-bpe-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    failed = False
    try:
        for family in FAMILIES:
            bad, n_texts, n_ids = check_family(driver, dapt, family, work, sweep)
            print(f"{family}: {n_texts} texts, {n_ids} ids, {len(bad)} mismatches")
            for b in bad[:5]:
                print("  " + b)
            failed |= bool(bad)
    finally:
        shutil.rmtree(work)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
