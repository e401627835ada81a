"""GGUF export/import of the newer architectures: Llama 3.x rope scaling and
Qwen3, read by gguf-py and run by llama.cpp.

    python test_gguf_arch.py export KIND DTYPE DAPT HF_NEW_PYTHON
    python test_gguf_arch.py roundtrip KIND DAPT HF_NEW_PYTHON
    python test_gguf_arch.py llamacpp KIND DTYPE DAPT HF_NEW_PYTHON

KIND: llama31 (rope_scaling llama3, factor 8, low 1, high 4, original
context 28 < the 32 test ids; head size 16 over theta 100: every band of the
remap occurs), llama_linear (linear, factor 2, tied, head_dim 16 where
hidden / heads is 8: attention.key_length in a llama file), qwen3 and qwen3_tied
(q/k head norms, head_dim 16 where hidden / heads is 8). The models are made
by transformers 4.51.3 in .venv-hf (tests/gguf/make_arch_model.py, run with
HF_NEW_PYTHON: this .venv's transformers 4.40.2 knows neither); the test
runs in the .venv (gguf-py 0.10.0, llama-cpp-python). DTYPE: f32 | q8_0.

export: `dapt export gguf`; gguf-py must parse the file: general.
architecture ("qwen3" for Qwen3, llama.cpp's name; else "llama"), every
hyperparameter key with its exact type and value (attention.key_length /
value_length = head_dim for qwen3; rope.scaling.type "linear" and factor;
dapt.rope_scaling.* for llama3; absent where they do not apply), the exact tensor set (attn_q_norm /
attn_k_norm F32; rope_freqs.weight for llama3, F32 {head_dim / 2}), the data
against the model.safetensors transformers wrote (Q/K rows permuted as
llama.cpp's converter does for llama; left as they are for qwen3, whose
llama.cpp graph rotates rotate_half pairs; f32 exact, q8_0 within 0.6 of a
block step, F16 where ne[0] is not a multiple of 32 numpy's float16 cast), and rope_freqs equal to transformers' unscaled over scaled
inverse frequencies (rotary_emb.inv_freq), exactly: the same fp32 division.

roundtrip: export f32, `dapt import gguf`: every weight bitwise equal to the
original, the config (architecture, head_dim, rope_scaling) the same, and
`dapt logits` of the imported directory bitwise those of the original.

llamacpp: llama.cpp evaluates the export (flash attention off, F32 KV
cache) on the 32 ids; the measure max|diff| / max(1, max|logit|) against
`dapt logits` on the original model and against transformers' logits, with
test_gguf_llamacpp.py's tolerances (f32 1e-4, q8_0 0.2; what a layout error
moves is O(1) there). Exit 77 when llama_cpp is not importable.
Every case exits 77 when HF_NEW_PYTHON cannot make the model (no .venv-hf).
"""
import os
import subprocess
import sys
import tempfile


def skip_without_oracle(argv):
    """Exit 77 at once, before gguf_common loads torch (seconds), when the
    case's oracle is missing: .venv-hf (every case), llama_cpp (llamacpp)."""
    if len(argv) in (5, 6) and not os.access(argv[-1], os.X_OK):
        print(f"{argv[-1]} not found: run tools/setup to make .venv-hf (transformers 4.51.3)")
        sys.exit(77)
    if argv[1:2] == ["llamacpp"]:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            print("llama_cpp is not installed: run tools/setup, or "
                  "tests/gguf/install_llama_cpp.sh .venv/bin/python")
            sys.exit(77)


skip_without_oracle(sys.argv)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_common as C  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IDS = [1, 17, 250, 3, 99, 319, 5, 42, 42, 7, 128, 64, 200, 11, 300, 2,
       33, 8, 150, 9, 271, 14, 60, 301, 4, 88, 19, 230, 6, 111, 77, 12]
TOL = {"f32": 1e-4, "q8_0": 0.2}
# the models (test_hf_arch.make): heads, kv heads, head size, layers, tied
SHAPES = {"llama31": (4, 1, 16, 2, False), "llama_linear": (4, 2, 16, 2, True),
          "qwen3": (4, 2, 16, 2, False), "qwen3_tied": (4, 2, 16, 2, True)}


def make(kind, mdir, hf_python):
    """the model of KIND made by transformers 4.51 into mdir; exit 77 when
    HF_NEW_PYTHON's transformers lacks it"""
    r = subprocess.run([hf_python, os.path.join(HERE, "make_arch_model.py"), kind, mdir,
                        *map(str, IDS)], capture_output=True, text=True)
    if r.returncode == 77:
        print(r.stdout.strip())
        sys.exit(77)
    if r.returncode:
        raise SystemExit(f"make_arch_model.py {kind} failed ({r.returncode}):\n{r.stderr}")
    return np.fromfile(os.path.join(mdir, "hf_logits.f32"), dtype="<f4").reshape(len(IDS), -1)


def expected(kind, mdir):
    """GGUF name -> (fp32 array in GGUF row order, 1-D stays F32), from the
    safetensors file transformers wrote (read with the safetensors package)"""
    from safetensors.numpy import load_file
    sd = load_file(os.path.join(mdir, "model.safetensors"))
    nh, nkv, hd, L, tied = SHAPES[kind]
    qwen3 = kind.startswith("qwen3")
    out = {"token_embd.weight": sd["model.embed_tokens.weight"],
           "output_norm.weight": sd["model.norm.weight"]}
    if not tied:
        out["output.weight"] = sd["lm_head.weight"]
    for i in range(L):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        for hf, g, perm in (("input_layernorm", "attn_norm", 0), ("self_attn.q_proj", "attn_q", nh),
                            ("self_attn.k_proj", "attn_k", nkv), ("self_attn.v_proj", "attn_v", 0),
                            ("self_attn.o_proj", "attn_output", 0),
                            ("post_attention_layernorm", "ffn_norm", 0),
                            ("mlp.gate_proj", "ffn_gate", 0), ("mlp.up_proj", "ffn_up", 0),
                            ("mlp.down_proj", "ffn_down", 0)):
            w = sd[p + hf + ".weight"].astype(np.float32)
            out[b + g + ".weight"] = C.permute_like_converter(w, perm) if perm and not qwen3 else w
        if qwen3:
            out[b + "attn_q_norm.weight"] = sd[p + "self_attn.q_norm.weight"]
            out[b + "attn_k_norm.weight"] = sd[p + "self_attn.k_norm.weight"]
    if kind == "llama31":
        plain = np.fromfile(os.path.join(mdir, "inv_freq_plain.f32"), dtype="<f4")
        scaled = np.fromfile(os.path.join(mdir, "inv_freq.f32"), dtype="<f4")
        out["rope_freqs.weight"] = plain / scaled
    return {k: v.astype(np.float32) for k, v in out.items()}


def field_value(f):
    return f.parts[f.data[0]]


def check_export(kind, dtype, dapt, hf_python):
    import gguf
    fails = []

    def check(cond, msg):
        if not cond:
            fails.append(msg)

    nh, nkv, hd, L, tied = SHAPES[kind]
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir = os.path.join(tmp, "model")
        make(kind, mdir, hf_python)
        out = os.path.join(tmp, "out.gguf")
        C.run([dapt, "export", "gguf", mdir, out, "--dtype", dtype, "--tokenizer", tok])
        r = gguf.GGUFReader(out)
        T = gguf.GGUFValueType
        a = "qwen3" if kind.startswith("qwen3") else "llama"
        cfg = __import__("json").load(open(os.path.join(mdir, "config.json")))
        want = {
            "general.architecture": (T.STRING, a),
            f"{a}.block_count": (T.UINT32, L),
            f"{a}.context_length": (T.UINT32, cfg["max_position_embeddings"]),
            f"{a}.embedding_length": (T.UINT32, cfg["hidden_size"]),
            f"{a}.feed_forward_length": (T.UINT32, cfg["intermediate_size"]),
            f"{a}.attention.head_count": (T.UINT32, nh),
            f"{a}.attention.head_count_kv": (T.UINT32, nkv),
            f"{a}.rope.dimension_count": (T.UINT32, hd),
            f"{a}.rope.freq_base": (T.FLOAT32, cfg["rope_theta"]),
            f"{a}.attention.layer_norm_rms_epsilon": (T.FLOAT32, cfg["rms_norm_eps"]),
        }
        absent = []
        if a == "qwen3" or hd * nh != cfg["hidden_size"]:
            want[f"{a}.attention.key_length"] = (T.UINT32, hd)
            want[f"{a}.attention.value_length"] = (T.UINT32, hd)
        else:
            absent += [f"{a}.attention.key_length", f"{a}.attention.value_length"]
        if kind == "llama_linear":
            want[f"{a}.rope.scaling.type"] = (T.STRING, "linear")
            want[f"{a}.rope.scaling.factor"] = (T.FLOAT32, 2.0)
        else:
            absent += [f"{a}.rope.scaling.type", f"{a}.rope.scaling.factor"]
        if kind == "llama31":
            rs = cfg["rope_scaling"]
            want["dapt.rope_scaling.type"] = (T.STRING, "llama3")
            for k in ("factor", "low_freq_factor", "high_freq_factor"):
                want[f"dapt.rope_scaling.{k}"] = (T.FLOAT32, rs[k])
            want["dapt.rope_scaling.original_max_position_embeddings"] = (
                T.UINT32, rs["original_max_position_embeddings"])
        else:
            absent.append("dapt.rope_scaling.type")
        for key, (typ, val) in want.items():
            f = r.fields.get(key)
            check(f is not None, f"missing key {key}")
            if f is None:
                continue
            check(f.types[0] == typ, f"{key}: type {f.types[0]}, want {typ}")
            v = field_value(f)
            got = bytes(v).decode() if typ == T.STRING else v[0]
            if typ == T.FLOAT32:
                check(np.float32(got) == np.float32(val), f"{key} = {got}, want {val}")
            else:
                check(got == val, f"{key} = {got}, want {val}")
        for key in absent:
            check(key not in r.fields, f"key {key} must be absent")
        exp = expected(kind, mdir)
        tensors = {t.name: t for t in r.tensors}
        check(set(tensors) == set(exp), f"tensor set: extra {sorted(set(tensors) - set(exp))}, "
                                        f"missing {sorted(set(exp) - set(tensors))}")
        for name, w in exp.items():
            t = tensors.get(name)
            if t is None:
                continue
            shape = tuple(int(x) for x in reversed(list(t.shape)))
            check(shape == w.shape or (w.ndim == 1 and shape == (w.size,)),
                  f"{name}: ggml shape {shape}, want {w.shape}")
            tname = t.tensor_type.name
            # Q8_0 needs ne[0] a multiple of 32, else F16 (as llama.cpp's converter)
            wt = "F32" if w.ndim == 1 or dtype == "f32" else "Q8_0" if w.shape[1] % 32 == 0 else "F16"
            check(tname == wt, f"{name}: type {tname}, want {wt}")
            y = C.gguf_tensor_f32(t).reshape(-1)
            flat = w.reshape(-1)
            if tname == "F32":
                ok = np.array_equal(y, flat)
            elif tname == "F16":
                ok = np.array_equal(y, flat.astype(np.float16).astype(np.float32))
            else:
                step = np.repeat(np.abs(flat.reshape(-1, 32)).max(axis=1) / 127.0, 32)
                ok = bool(np.all(np.abs(y - flat) <= 0.6 * step + 1e-12))
            check(ok, f"{name}: data differs from transformers' ({tname})")
        if kind == "llama31":
            f = exp["rope_freqs.weight"]
            print(f"rope_freqs: {int((f == 1).sum())} kept, {int((f == 8).sum())} divided by 8, "
                  f"{int(((f > 1) & (f < 8)).sum())} blended: {np.round(f, 4).tolist()}")
            check((f == 1).any() and (f == 8).any() and ((f > 1) & (f < 8)).any(),
                  "the test model does not reach every band of the llama3 remap")
    if fails:
        print("\n".join(fails))
        raise SystemExit(f"{len(fails)} checks failed")
    print(f"gguf-py read {kind} {dtype}: {len(exp)} tensors, {len(want)} keys, "
          f"{len(absent)} absent keys checked")


def check_roundtrip(kind, dapt, hf_python):
    import json
    from safetensors.numpy import load_file
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir, out, back = (os.path.join(tmp, x) for x in ("model", "m.gguf", "back"))
        make(kind, mdir, hf_python)
        C.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok])
        C.run([dapt, "import", "gguf", out, back])
        orig = load_file(os.path.join(mdir, "model.safetensors"))
        got = load_file(os.path.join(back, "model.safetensors"))
        tied = SHAPES[kind][4]
        if tied:
            orig.pop("lm_head.weight", None)
        bad = [k for k in set(orig) | set(got) if k not in got or k not in orig or
               got[k].tobytes() != orig[k].astype(np.float32).tobytes()]
        if bad:
            raise SystemExit(f"tensors not bitwise equal after the round trip: {sorted(bad)}")
        c0 = json.load(open(os.path.join(mdir, "config.json")))
        c1 = json.load(open(os.path.join(back, "config.json")))
        for k in ("architectures", "model_type", "rope_scaling", "tie_word_embeddings"):
            a, b = c0.get(k), c1.get(k)
            if k == "rope_scaling" and a and b:  # spelled "type" or "rope_type"
                a = {kk: v for kk, v in a.items() if kk not in ("type", "rope_type")} | {
                    "t": a.get("rope_type", a.get("type"))}
                b = {kk: v for kk, v in b.items() if kk not in ("type", "rope_type")} | {
                    "t": b.get("rope_type", b.get("type"))}
            if a != b:
                raise SystemExit(f"config.json {k}: {c1.get(k)} after the round trip, was {c0.get(k)}")
        hd0 = c0.get("head_dim") or c0["hidden_size"] // c0["num_attention_heads"]
        hd1 = c1.get("head_dim") or c1["hidden_size"] // c1["num_attention_heads"]
        if hd0 != hd1:
            raise SystemExit(f"head_dim {hd1} after the round trip, was {hd0}")
        l0 = C.dapt_logits(dapt, mdir, IDS, tmp)
        l1 = C.dapt_logits(dapt, back, IDS, tmp)
        if not np.array_equal(l0, l1):
            raise SystemExit("dapt logits differ after the round trip")
        print(f"round trip {kind}: {len(got)} tensors bitwise equal, config ({c1['architectures'][0]}, "
              f"head_dim {hd1}, rope_scaling {c1.get('rope_scaling')}) and dapt logits the same")


def check_llamacpp(kind, dtype, dapt, hf_python):
    import llama_cpp
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir, out = os.path.join(tmp, "model"), os.path.join(tmp, "m.gguf")
        hf = make(kind, mdir, hf_python)
        C.run([dapt, "export", "gguf", mdir, out, "--dtype", dtype, "--tokenizer", tok])
        orig = C.dapt_logits(dapt, mdir, IDS, tmp)
        llm = llama_cpp.Llama(model_path=out, n_ctx=64, n_batch=64, n_ubatch=64, n_threads=2,
                              logits_all=True, flash_attn=False, type_k=0, type_v=0,
                              n_gpu_layers=0, verbose=False)
        llm.eval(IDS)
        got = np.array(llm.scores[:len(IDS)], dtype=np.float32)
        del llm
    scale = max(1.0, float(np.abs(orig).max()))
    rel_dapt = float(np.abs(got - orig).max()) / scale
    rel_hf = float(np.abs(got - hf).max()) / scale
    dapt_hf = float(np.abs(orig - hf).max()) / scale
    print(f"llama.cpp {llama_cpp.__version__} vs dapt, {kind} {dtype}: max|diff|/max(1,max|logit|) "
          f"= {rel_dapt:.3g} (tol {TOL[dtype]:g}), vs transformers {rel_hf:.3g}; dapt vs "
          f"transformers {dapt_hf:.3g}; max|logit| {scale:.3g}, argmax agreement "
          f"{float((got.argmax(1) == orig.argmax(1)).mean()):.2f}")
    if not (rel_dapt <= TOL[dtype] and rel_hf <= TOL[dtype] and dapt_hf <= 3e-5):
        raise SystemExit("llama.cpp logits differ from dapt's / transformers'")


def main():
    a = sys.argv
    if len(a) == 6 and a[1] == "export":
        check_export(a[2], a[3], a[4], a[5])
    elif len(a) == 5 and a[1] == "roundtrip":
        check_roundtrip(a[2], a[3], a[4])
    elif len(a) == 6 and a[1] == "llamacpp":
        # DTYPES comma-separated: one process (one torch import) for all
        failed = []
        for dtype in a[3].split(","):
            try:
                check_llamacpp(a[2], dtype, a[4], a[5])
            except SystemExit as e:
                print(f"FAIL: {a[2]} {dtype}: {e}")
                failed.append(dtype)
        if failed:
            raise SystemExit(f"llama.cpp: {a[2]} failed for {','.join(failed)}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
