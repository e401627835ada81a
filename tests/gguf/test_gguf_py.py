"""gguf-py (llama.cpp's own Python reader, PyPI `gguf`) reads dapt's GGUF
exports; and `dapt logits` matches HF transformers.

    python test_gguf_py.py export KIND DTYPE DAPT   (KIND in gguf_common.KINDS; DTYPE f32|f16|bf16|q8_0)
    python test_gguf_py.py logits KIND DAPT
    python test_gguf_py.py roundtrip KIND DAPT
    python test_gguf_py.py refuse_qwen_moe DAPT
    python test_gguf_py.py export_bpe FAMILY DAPT           (FAMILY in gguf_common.BPE_FAMILIES)
    python test_gguf_py.py import_bpe FAMILY gguf-py|dapt DAPT
    python test_gguf_py.py refuse_bpe DAPT

export: a random transformers model (KIND mixtral: MixtralForCausalLM, an
MoE) and a trained sentencepiece model are
exported by `dapt export gguf`; GGUFReader must parse the file, and the test
checks every metadata key llama.cpp needs with its exact GGUF type, the
exact tensor set (names, ggml shapes, types: norms and biases F32, no output
tensor when tied), the tensor data against the HF weights (Q/K rows permuted
as llama.cpp's converter does; F16 equal to numpy's float16 cast; BF16 equal
to round-to-nearest-even; Q8_0 within 0.6 of a block's step amax/127:
rounding to the integer grid costs half a step, the fp16 rounding of the
scale at most 127 * 2^-11 steps more), and the vocabulary against
sentencepiece (pieces, scores, types, special ids). The expected tensors
are read from the model's model.safetensors with the safetensors package;
for mixtral, llama.expert_count / expert_used_count, the router
blk.N.ffn_gate_inp (F32 whatever the dtype) and the experts stacked as
llama.cpp's converter does (blk.N.ffn_{gate,up,down}_exps, ne = {in, out,
E}, slice e = expert e's HF w1 / w3 / w2).

roundtrip: export (f32) then `dapt import gguf`: the imported directory's
weights are bitwise equal to the HF originals and transformers loads it and
computes identical logits.

export_bpe: a byte-level BPE tokenizer of the family (HF tokenizers, with
special and non-special added tokens) exported with a tiny llama: gguf-py
reads every tokenizer.ggml.* key with the type and value llama.cpp's
converter writes (gguf_common.gguf_bpe_vocab).

import_bpe: `dapt import gguf` of such a vocabulary, from a file written by
gguf-py alone or by `dapt export gguf` (round trip): the imported
tokenizer.json / tokenizer_config.json encode and decode like the
original, in HF tokenizers and transformers' AutoTokenizer, and `dapt
tokenize` with the imported directory gives HF's ids.

refuse_bpe: a BPE of no family llama.cpp names, and one larger than the
model's vocabulary, are refused by the export with the reason.

logits: `dapt logits MODEL --out` against transformers on the same ids, fp32
on both sides: the same tolerance as tests/runner (3e-5 * max(1, max|logit|):
summation order only; a layout error is O(max|logit|)).
"""
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_common as C  # noqa: E402

DT = {"f32": ("F32", 0), "f16": ("F16", 1), "bf16": ("BF16", 32), "q8_0": ("Q8_0", 7)}


def bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def field_value(f):
    return f.parts[f.data[0]]


def check_export(kind, dtype, dapt):
    import gguf
    import sentencepiece as spm
    fails = []

    def check(cond, msg):
        if not cond:
            fails.append(msg)

    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir = os.path.join(tmp, "model")
        model = C.make_model(kind, mdir)
        out = os.path.join(tmp, "out.gguf")
        C.run([dapt, "export", "gguf", mdir, out, "--dtype", dtype, "--tokenizer", tok,
               "--name", "tiny-" + kind])
        r = gguf.GGUFReader(out)
        arch = "gpt2" if kind == "gpt2" else "llama"
        T = gguf.GGUFValueType
        cfg = model.config
        want = {
            "general.architecture": (T.STRING, arch),
            "general.name": (T.STRING, "tiny-" + kind),
            "general.file_type": (T.UINT32, DT[dtype][1]),
            "general.alignment": (T.UINT32, 32),
            f"{arch}.context_length": (T.UINT32, 64),
            f"{arch}.embedding_length": (T.UINT32, 64),
            f"{arch}.block_count": (T.UINT32, 2),
            f"{arch}.attention.head_count": (T.UINT32, 4),
            "tokenizer.ggml.model": (T.STRING, "llama"),
            "tokenizer.ggml.bos_token_id": (T.UINT32, 1),
            "tokenizer.ggml.eos_token_id": (T.UINT32, 2),
            "tokenizer.ggml.unknown_token_id": (T.UINT32, 0),
            "tokenizer.ggml.add_bos_token": (T.BOOL, True),
        }
        if arch == "llama":
            want.update({
                "llama.feed_forward_length": (T.UINT32, 96),
                "llama.attention.head_count_kv": (T.UINT32, cfg.num_key_value_heads),
                "llama.rope.dimension_count": (T.UINT32, 16),
                "llama.rope.freq_base": (T.FLOAT32, 10000.0),
                "llama.attention.layer_norm_rms_epsilon": (T.FLOAT32, np.float32(1e-5)),
            })
            if kind == "mixtral":  # llama.cpp's MoE keys (Mixtral: no shared experts)
                want.update({"llama.expert_count": (T.UINT32, C.N_EXPERTS),
                             "llama.expert_used_count": (T.UINT32, C.TOP_K)})
            else:
                check("llama.expert_count" not in r.fields, "a dense model has llama.expert_count")
        else:
            want.update({"gpt2.feed_forward_length": (T.UINT32, 256),
                         "gpt2.attention.layer_norm_epsilon": (T.FLOAT32, np.float32(1e-5))})
        for key, (typ, val) in want.items():
            f = r.fields.get(key)
            check(f is not None, f"missing key {key}")
            if f is None:
                continue
            check(f.types == [typ], f"{key}: types {f.types}, want {typ}")
            v = field_value(f)
            got = bytes(v).decode() if typ == T.STRING else v[0]
            check(got == val, f"{key} = {got!r}, want {val!r}")
        # vocabulary
        sp = spm.SentencePieceProcessor(model_file=tok)
        toks = r.fields["tokenizer.ggml.tokens"]
        check(toks.types == [T.ARRAY, T.STRING], f"tokens types {toks.types}")
        pieces = [bytes(toks.parts[i]).decode() for i in toks.data]
        check(pieces == [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
              "tokens differ from the sentencepiece pieces")
        sc = r.fields["tokenizer.ggml.scores"]
        check(sc.types == [T.ARRAY, T.FLOAT32], f"scores types {sc.types}")
        scores = np.array([sc.parts[i][0] for i in sc.data], dtype=np.float32)
        check(np.array_equal(scores, np.array([sp.get_score(i) for i in range(len(pieces))],
                                              dtype=np.float32)), "scores differ")
        tt = r.fields["tokenizer.ggml.token_type"]
        check(tt.types == [T.ARRAY, T.INT32], f"token_type types {tt.types}")
        types = [int(tt.parts[i][0]) for i in tt.data]
        exp_types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1 for i in range(len(pieces))]
        check(types == exp_types, "token types differ")
        check(types.count(6) == 256, f"{types.count(6)} byte pieces, want 256")
        # tensors
        exp = C.expected_tensors(kind, model, mdir)
        got = {t.name: t for t in r.tensors}
        check(set(got) == set(exp), f"tensor set differs: extra {set(got) - set(exp)}, "
                                    f"missing {set(exp) - set(got)}")
        for name, (w, nh) in exp.items():
            t = got.get(name)
            if t is None:
                continue
            ne = list(reversed(w.shape))
            check(list(map(int, t.shape)) == ne, f"{name}: ne {list(t.shape)}, want {ne}")
            if nh:
                w = C.permute_like_converter(w, nh)
            # norms, biases and the MoE router (ffn_gate_inp: llama.cpp's
            # converter and quantizer keep it F32) are F32 in every file
            want_type = "F32" if w.ndim == 1 or ".ffn_gate_inp." in name else DT[dtype][0]
            if want_type == "Q8_0" and w.shape[-1] % 32:
                want_type = "F16"
            check(t.tensor_type.name == want_type, f"{name}: {t.tensor_type.name}, want {want_type}")
            flat = w.reshape(-1)
            if t.tensor_type.name == "F32":
                ok = np.array_equal(np.asarray(t.data, dtype=np.float32).reshape(-1), flat)
            elif t.tensor_type.name == "F16":
                ok = np.array_equal(np.asarray(t.data).view(np.float16).reshape(-1),
                                    flat.astype(np.float16))
            elif t.tensor_type.name == "BF16":
                ok = np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint16), bf16_bits(flat))
            else:
                y = C.q8_0_decode(np.asarray(t.data), flat.size)
                step = np.repeat(np.abs(flat.reshape(-1, 32)).max(axis=1) / 127.0, 32)
                ok = bool(np.all(np.abs(y - flat) <= 0.6 * step + 1e-12))
            check(ok, f"{name}: data differs from the HF weights ({t.tensor_type.name})")
    if fails:
        print("\n".join(fails))
        raise SystemExit(f"{len(fails)} checks failed")
    print(f"gguf-py read {kind} {dtype}: {len(exp)} tensors, {len(want)} keys checked")


def check_logits(kind, dapt):
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, "model")
        model = C.make_model(kind, mdir)
        ids = [1, 17, 250, 3, 99, 319, 0, 42, 42, 7]
        got = C.dapt_logits(dapt, mdir, ids, tmp)
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()
        if got.shape != ref.shape:
            raise SystemExit(f"shape {got.shape}, want {ref.shape}")
        diff = float(np.abs(got - ref).max())
        tol = 3e-5 * max(1.0, float(np.abs(ref).max()))
        print(f"dapt logits {kind}: max |diff| {diff:.3g} (tol {tol:.3g}), max|logit| {np.abs(ref).max():.3g}")
        if not diff <= tol:
            raise SystemExit("logits differ from transformers")
        r = C.run([dapt, "logits", mdir, "--ids", ",".join(map(str, ids))])
        lines = r.stdout.strip().splitlines()[1:]
        for t, line in enumerate(lines):
            _, tid, am, _, lse = line.split()
            if int(tid) != ids[t] or int(am) != int(ref[t].argmax()):
                raise SystemExit(f"summary line {t}: {line}")
            want = float(torch.logsumexp(torch.tensor(ref[t], dtype=torch.float64), 0))
            if abs(float(lse) - want) > 1e-4 * max(1.0, abs(want)):
                raise SystemExit(f"summary logsumexp {lse} != {want}")
        if len(lines) != len(ids):
            raise SystemExit(f"{len(lines)} summary lines for {len(ids)} ids")


def check_roundtrip(kind, dapt):
    """CLI round trip: HF dir -> dapt export gguf (f32) -> dapt import gguf ->
    a directory transformers loads, with every weight bitwise equal to the
    original's and the same logits."""
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir, out, back = (os.path.join(tmp, x) for x in ("model", "m.gguf", "back"))
        model = C.make_model(kind, mdir)
        C.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok])
        C.run([dapt, "import", "gguf", out, back])
        got = load_file(os.path.join(back, "model.safetensors"))
        sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        bad = [k for k, v in got.items() if k not in sd or v.dtype != np.float32 or
               v.shape != sd[k].shape or v.tobytes() != sd[k].tobytes()]
        if bad:
            raise SystemExit(f"tensors not bitwise equal after the round trip: {bad}")
        missing = [k for k, _ in model.named_parameters() if k not in got]
        if missing or not got:
            raise SystemExit(f"parameters missing after the round trip: {missing}")
        m2 = AutoModelForCausalLM.from_pretrained(back).eval()
        ids = torch.tensor([[1, 17, 250, 3, 99]])
        with torch.no_grad():
            same = torch.equal(model(ids).logits, m2(ids).logits)
        if not same:
            raise SystemExit("transformers logits differ after the round trip")
        print(f"round trip {kind}: {len(got)} tensors bitwise equal, transformers logits equal")


def gguf_fields(path):
    """The tokenizer.ggml.* fields of a GGUF file (gguf-py) as
    {key: (types, value)}: strings decoded, arrays as lists."""
    import gguf
    T = gguf.GGUFValueType
    out = {}
    for key, f in gguf.GGUFReader(path).fields.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        def one(part, t):
            return bytes(part).decode() if t == T.STRING else part.tolist()[0]
        if f.types[0] == T.ARRAY:
            val = [one(f.parts[i], f.types[1]) for i in f.data]
        else:
            val = one(f.parts[f.data[0]], f.types[0])
        out[key] = (f.types, val)
    return out


def check_export_bpe(family, dapt):
    """A byte-level BPE tokenizer directory of the family is exported with a
    tiny llama (320 rows, the tokenizer 311 tokens): gguf-py reads the
    tokenizer.ggml.* keys llama.cpp's converter writes, with its types and
    values (gguf_common.gguf_bpe_vocab)."""
    import gguf
    T = gguf.GGUFValueType
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_bpe_tokenizer(os.path.join(tmp, "tok"), family)
        mdir, out = os.path.join(tmp, "model"), os.path.join(tmp, "m.gguf")
        C.make_model("llama_gqa", mdir)
        C.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok])
        got = gguf_fields(out)
        want = C.gguf_bpe_vocab(tok, family, C.VOCAB)
    exp = {"tokenizer.ggml.model": ([T.STRING], "gpt2"),
           "tokenizer.ggml.pre": ([T.STRING], family),
           "tokenizer.ggml.tokens": ([T.ARRAY, T.STRING], want["tokens"]),
           "tokenizer.ggml.token_type": ([T.ARRAY, T.INT32], want["types"]),
           "tokenizer.ggml.merges": ([T.ARRAY, T.STRING], want["merges"]),
           "tokenizer.ggml.add_bos_token": ([T.BOOL], want["add_bos"]),
           "tokenizer.ggml.add_eos_token": ([T.BOOL], False)}
    for k in ("bos", "eos"):
        if want[k] is not None:
            exp[f"tokenizer.ggml.{k}_token_id"] = ([T.UINT32], want[k])
    fails = [f"{k}: {got.get(k, ('missing', None))[0]} {str(got.get(k, (0, None))[1])[:80]}, "
             f"want {t} {str(v)[:80]}" for k, (t, v) in exp.items() if got.get(k) != (t, v)]
    fails += [f"unexpected key {k}" for k in got if k not in exp]
    if fails:
        raise SystemExit("\n".join(fails))
    types = want["types"]
    print(f"gguf-py read the {family} vocabulary: {len(want['tokens'])} tokens ({types.count(1)} "
          f"normal, {types.count(3)} control, {types.count(4)} user-defined, {types.count(5)} "
          f"unused), {len(want['merges'])} merges, pre {family}, bos {want['bos']} eos "
          f"{want['eos']} add_bos {want['add_bos']}: all {len(exp)} keys as llama.cpp's converter")


def write_gguf_like_converter(path, kind, model, mdir, vocab):
    """A GGUF file made by gguf-py alone (no dapt): the tiny llama's F32
    tensors (Q/K permuted as the converter does) and the byte-level BPE
    vocabulary vocab (gguf_common.gguf_bpe_vocab)."""
    import gguf
    cfg = model.config
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    for k, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id)):
        if vocab[k] is not None:
            add(vocab[k])
    w.add_add_bos_token(vocab["add_bos"])
    for name, (t, nh) in C.expected_tensors(kind, model, mdir).items():
        w.add_tensor(name, np.ascontiguousarray(C.permute_like_converter(t, nh) if nh else t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def check_import_bpe(family, source, dapt):
    """`dapt import gguf` of a byte-level BPE vocabulary (source gguf-py: a
    file written by gguf-py as llama.cpp's converter would; dapt: `dapt
    export gguf`'s, a round trip) writes a tokenizer.json and
    tokenizer_config.json that HF tokenizers and transformers' AutoTokenizer
    load and that encode and decode every test text exactly as the original
    directory does, with and without special tokens; dapt itself tokenizes
    with the imported directory as HF does with the original."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_bpe_tokenizer(os.path.join(tmp, "tok"), family)
        mdir, out, back = (os.path.join(tmp, x) for x in ("model", "m.gguf", "back"))
        model = C.make_model("llama_gqa", mdir)
        if source == "gguf-py":
            write_gguf_like_converter(out, "llama_gqa", model, mdir,
                                      C.gguf_bpe_vocab(tok, family, C.VOCAB))
        else:
            C.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok])
        C.run([dapt, "import", "gguf", out, back])
        a, b = (Tokenizer.from_file(os.path.join(d, "tokenizer.json")) for d in (tok, back))
        ha, hb = (AutoTokenizer.from_pretrained(d) for d in (tok, back))
        texts = C.bpe_texts(family)
        ours = C.dapt_tokenize(dapt, back, texts, tmp)
        bad, n = [], 0
        for text, doc in zip(texts, ours):
            n += 1
            if doc != a.encode(text, add_special_tokens=True).ids:
                bad.append(f"dapt tokenize with the import {text!r}: {doc}")
            for special in (False, True):
                ea, eb = a.encode(text, add_special_tokens=special), b.encode(text, add_special_tokens=special)
                n += 1
                if ea.ids != eb.ids or a.decode(ea.ids) != b.decode(eb.ids):
                    bad.append(f"{text!r} special={special}: {ea.ids} vs {eb.ids}")
            n += 1
            if ha(text)["input_ids"] != hb(text)["input_ids"]:
                bad.append(f"AutoTokenizer {text!r}: {ha(text)['input_ids']} vs {hb(text)['input_ids']}")
        for attr in ("bos_token", "eos_token", "bos_token_id", "eos_token_id"):
            n += 1
            if getattr(ha, attr) != getattr(hb, attr):
                bad.append(f"{attr}: {getattr(ha, attr)!r} vs {getattr(hb, attr)!r}")
    if bad:
        raise SystemExit("the imported tokenizer differs:\n" + "\n".join(bad))
    print(f"import of a {family} vocabulary ({source}): {n} encodings, decodings and special "
          f"tokens equal to the original's (tokenizers, AutoTokenizer, and dapt tokenize with "
          f"the imported directory)")


def check_refuse_bpe(dapt):
    """`dapt export gguf` refuses, with the reason and leaving no file, a
    byte-level BPE whose pre-tokenizer is none of llama.cpp's families (a
    Split with another regex: llama.cpp would split text differently) and
    one with more tokens than the model has rows."""
    import subprocess
    from tokenizers import Regex, Tokenizer, pre_tokenizers
    with tempfile.TemporaryDirectory() as tmp:
        mdir, out = os.path.join(tmp, "model"), os.path.join(tmp, "m.gguf")
        C.make_model("llama_gqa", mdir)
        odd = C.make_bpe_tokenizer(os.path.join(tmp, "odd"), "llama-bpe")
        path = os.path.join(odd, "tokenizer.json")
        tok = Tokenizer.from_file(path)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{L}+|\p{N}+|\s+|[^\s\p{L}\p{N}]+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.save(path)
        big = C.make_bpe_tokenizer(os.path.join(tmp, "big"), "qwen2", vocab_size=400)
        cases = ((odd, "none of the families llama.cpp names"),
                 (big, f"has 401 tokens but the model's vocabulary (embedding rows) is {C.VOCAB}"))
        for tok_dir, want in cases:
            r = subprocess.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok_dir],
                               capture_output=True, text=True)
            msg = (r.stdout + r.stderr).strip()
            print(f"exit {r.returncode}: {msg}")
            if r.returncode == 0 or want not in msg or os.path.exists(out):
                raise SystemExit(f"not refused as it should be (want '{want}')")


def check_refuse_qwen_moe(dapt):
    """A Mixtral checkpoint whose config says norm_topk_prob = false (dapt's
    Qwen-MoE semantics, key dapt_norm_topk_prob) is refused by `dapt export
    gguf` with the reason, and no file is left."""
    import json
    import subprocess
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir, out = os.path.join(tmp, "model"), os.path.join(tmp, "m.gguf")
        C.make_model("mixtral", mdir)
        cfg_path = os.path.join(mdir, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["dapt_norm_topk_prob"] = False
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok],
                           capture_output=True, text=True)
        msg = (r.stdout + r.stderr).strip()
        print(f"exit {r.returncode}: {msg}")
        if r.returncode == 0 or "norm_topk_prob = false" not in msg or os.path.exists(out):
            raise SystemExit("a Qwen-MoE-semantics model was not refused as it should be")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "roundtrip":
        check_roundtrip(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "export":
        check_export(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "refuse_bpe":
        check_refuse_bpe(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "refuse_qwen_moe":
        check_refuse_qwen_moe(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "export_bpe":
        check_export_bpe(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "import_bpe":
        check_import_bpe(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "logits":
        check_logits(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
