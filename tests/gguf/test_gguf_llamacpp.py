"""llama.cpp itself (through PyPI llama-cpp-python) runs dapt's GGUF exports.

    python test_gguf_llamacpp.py logits KIND DTYPE DAPT
    python test_gguf_llamacpp.py tokenizer DAPT
    python test_gguf_llamacpp.py tokenizer_bpe FAMILY DAPT   (FAMILY in gguf_common.BPE_FAMILIES)
    python test_gguf_llamacpp.py logits_bpe FAMILY DAPT

logits: a random transformers model (KIND in gguf_common.KINDS) is exported
with `dapt export gguf --dtype DTYPE`; llama.cpp evaluates the same ids
(flash attention off, F32 KV cache, every position's logits). The measure
is max |diff| / max(1, max |logit|). It is compared with two references:

 (a) `dapt logits` on the original fp32 model (every dtype). A layout error
     moves the measure by O(1): measured 1.04 with Q/K left unpermuted (f32),
     1.2 for the same in q8_0, 0.098 for a wrong gpt2 LayerNorm epsilon.
 (b) (f16, bf16, q8_0) `dapt logits` on the weights read back from the GGUF
     file (dequantized, Q/K permuted back): only llama.cpp's rounding of the
     activations differs. This reference alone cannot see layout errors
     (the file is its source), hence (a) as well.

Tolerances (measured maxima over the five kinds, llama.cpp of
llama-cpp-python 0.3.16, in brackets):
  f32   (a) 1e-4 [2e-6]: fp32 throughout; summation order and ggml's
        fast exp/silu only.
  gpt2 f32 (a) 2e-3 [4.8e-4]: llama.cpp's CPU GELU reads an fp16 table at
        the fp16-rounded input (GGML_GELU_FP16): ~2^-11 relative on every
        MLP activation.
  f16   (a) 1e-2 [2.7e-3]  (b) 5e-3 [1.7e-3]: weights rounded to fp16
        (2^-11 relative); ggml converts activations to fp16 for F16 matmuls.
  bf16  (a) 6e-2 [2.4e-2]  (b) 4e-2 [1.6e-2]: 8 significant bits (2^-9
        relative) on weights and, for the matmuls, on activations.
  q8_0  (a) 0.2 [7.2e-2]  (b) 0.1 [4.8e-2]: weights on a 255-level grid per
        32 values and activations quantised the same way by ggml (error up
        to amax/254 per block, ~20x fp16's per element; these random tiny
        models amplify it over two layers).
Every tolerance is at least 5x below the smallest layout error measured.

mixtral (an MoE, exported with llama.cpp's ffn_gate_inp / ffn_*_exps
tensors) uses the same tolerances. Measured (llama-cpp-python 0.3.16): f32
(a) 1.4e-6; f16 (a) 6.2e-3 (b) 3.0e-3; bf16 (a) 2.1e-2 (b) 1.2e-2; q8_0 (a)
5.6e-2 (b) 3.2e-2. Layout errors, f32 (a): gate and up stacks swapped 1.08,
experts stacked in reverse order 1.29. Top-k routing is discontinuous: at a
near-tie, rounding can pick another expert, an O(1) change that no rounding
tolerance can separate from a layout error. So the test model is seeded to
be well conditioned on IDS (gguf_common.MIXTRAL_SEED: every layer's and
position's gap between the k-th and (k+1)-th router logit is >= 0.18; with
the first seed tried, a gap of 0.002 flipped a routing in q8_0 and gave (a)
0.42), and the test asserts, with transformers, that the fp32 model and the
weights read back from the file choose the same experts everywhere (the
premise of (a)); it fails, saying so, when they do not.

tokenizer: a sentencepiece BPE model with byte fallback is exported with a
tiny llama; llama.cpp's tokenizer must give sentencepiece's ids for sample
texts (with and without BOS), and detokenise them back.

tokenizer_bpe: a byte-level BPE tokenizer of the family (HF tokenizers;
special and non-special added tokens) is exported with a tiny llama;
llama.cpp's tokenizer (vocab_only, parsing special tokens as HF does) must
give HF tokenizers' ids for sample texts, and `dapt tokenize`'s, without
and with the special tokens the tokenizer adds (BOS for llama-bpe, read
from tokenizer.ggml.add_bos_token).

logits_bpe: the logits check (llama_gqa, f32) of a model exported with
that tokenizer: llama.cpp loads the file with its gpt2 vocabulary.

Exit status 77 (ctest: skipped) when llama_cpp is not importable, before
torch loads: tools/setup installs it (tests/gguf/install_llama_cpp.sh).
"""
import os
import sys
import tempfile

# first, before torch and transformers load (seconds): without llama_cpp the
# test is skipped at once
try:
    import llama_cpp
except ImportError:
    print("llama_cpp is not installed: run tools/setup, or "
          "tests/gguf/install_llama_cpp.sh .venv/bin/python (builds llama.cpp from source)")
    sys.exit(77)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_common as C  # noqa: E402

TOL_ORIG = {"f32": 1e-4, "f16": 1e-2, "bf16": 6e-2, "q8_0": 0.2}   # (a)
TOL_READBACK = {"f16": 5e-3, "bf16": 4e-2, "q8_0": 0.1}            # (b)
GPT2_F32_TOL = 2e-3
IDS = [1, 17, 250, 3, 99, 319, 5, 42, 42, 7, 128, 64, 200, 11, 300, 2]


def load(path, n_ctx=64):
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                           n_threads=2, logits_all=True, flash_attn=False,
                           type_k=0, type_v=0,  # GGML_TYPE_F32 KV cache
                           n_gpu_layers=0, verbose=False)


def check_logits(kind, dtype, dapt, bpe_family=None):
    with tempfile.TemporaryDirectory() as tmp:
        tok = (C.make_bpe_tokenizer(os.path.join(tmp, "tok"), bpe_family) if bpe_family
               else C.make_tokenizer(tmp))
        mdir = os.path.join(tmp, "model")
        model = C.make_model(kind, mdir)
        out = os.path.join(tmp, "m.gguf")
        C.run([dapt, "export", "gguf", mdir, out, "--dtype", dtype, "--tokenizer", tok])
        orig = C.dapt_logits(dapt, mdir, IDS, tmp)
        ref = orig
        if kind == "mixtral":  # before save_dequantized overwrites model's weights
            ref_routing = router_logits(model)
        if dtype != "f32":
            qdir = os.path.join(tmp, "dequantized")
            C.save_dequantized(kind, model, out, qdir)
            ref = C.dapt_logits(dapt, qdir, IDS, tmp)
        if kind == "mixtral":
            check_routing(ref_routing, qdir if dtype != "f32" else None)
        llm = load(out)
        llm.eval(IDS)
        got = np.array(llm.scores[:len(IDS)], dtype=np.float32)
        del llm
    if got.shape != orig.shape:
        raise SystemExit(f"llama.cpp logits shape {got.shape}, dapt {orig.shape}")
    scale = max(1.0, float(np.abs(orig).max()))
    rel_orig = float(np.abs(got - orig).max()) / scale
    rel_back = float(np.abs(got - ref).max()) / scale
    tol_orig = GPT2_F32_TOL if (kind == "gpt2" and dtype == "f32") else TOL_ORIG[dtype]
    tol_back = TOL_READBACK.get(dtype, tol_orig)
    agree = float((got.argmax(1) == orig.argmax(1)).mean())
    print(f"llama.cpp vs dapt logits, {kind} {dtype}: max|diff|/max(1,max|logit|) = "
          f"{rel_orig:.3g} vs the fp32 model (tol {tol_orig:g}), {rel_back:.3g} vs the weights "
          f"read back (tol {tol_back:g}); max|logit| {scale:.3g}, argmax agreement {agree:.2f}")
    if not (rel_orig <= tol_orig and rel_back <= tol_back):
        raise SystemExit("llama.cpp logits differ from dapt's")


def router_logits(model):
    """Per layer, the (len(IDS), E) router logits of an HF Mixtral model on IDS."""
    import torch
    with torch.no_grad():
        return model(torch.tensor([IDS]), output_router_logits=True).router_logits


def check_routing(ref_logits, readback_dir):
    """The fp32 model's top-k expert sets on IDS (from ref_logits) equal those
    of the weights read back from the GGUF file (HF MixtralForCausalLM)."""
    import torch
    from transformers import AutoModelForCausalLM

    def experts(logits):
        return [torch.topk(x, C.TOP_K, dim=-1).indices.sort(-1).values for x in logits]

    top = [torch.topk(x, C.TOP_K + 1, dim=-1).values for x in ref_logits]
    gap = min(float((v[:, C.TOP_K - 1] - v[:, C.TOP_K]).min()) for v in top)
    msg = f"routing: min top-k router logit gap {gap:.3g}"
    if readback_dir:
        back_logits = router_logits(AutoModelForCausalLM.from_pretrained(readback_dir).eval())
        moved = max(float((a - b).abs().max()) for a, b in zip(ref_logits, back_logits))
        same = all(torch.equal(a, b) for a, b in zip(experts(ref_logits), experts(back_logits)))
        msg += f", router logits moved by <= {moved:.3g} by the file's rounding"
        if not same:
            raise SystemExit(msg + ": the read-back weights route some token to other experts "
                             "(an ill-conditioned test model, not a dapt error: pick another "
                             "MIXTRAL_SEED)")
    print(msg)


TEXTS = [C.SAMPLE_TEXT, "hello world", "  two  spaces and\ttab", "über 数字 123"]


def check_tokenizer(dapt):
    import sentencepiece as spm
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir = os.path.join(tmp, "model")
        C.make_model("llama_gqa", mdir)
        out = os.path.join(tmp, "m.gguf")
        C.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok])
        sp = spm.SentencePieceProcessor(model_file=tok)
        llm = load(out)
        bad = 0
        for text in TEXTS:
            want = sp.encode(text)
            got = llm.tokenize(text.encode(), add_bos=False, special=False)
            got_bos = llm.tokenize(text.encode(), add_bos=True, special=False)
            ok = got == want and got_bos == [sp.bos_id()] + want
            back = llm.detokenize(got).decode("utf-8", errors="replace")
            print(f"{'ok ' if ok else 'BAD'} {text!r}: spm {want} llama.cpp {got} -> {back!r}")
            bad += not ok
        del llm
    if bad:
        raise SystemExit(f"{bad} of {len(TEXTS)} texts tokenised differently")


def check_tokenizer_bpe(family, dapt):
    from tokenizers import Tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_bpe_tokenizer(os.path.join(tmp, "tok"), family)
        mdir = os.path.join(tmp, "model")
        C.make_model("llama_gqa", mdir)
        out = os.path.join(tmp, "m.gguf")
        C.run([dapt, "export", "gguf", mdir, out, "--tokenizer", tok])
        hf = Tokenizer.from_file(os.path.join(tok, "tokenizer.json"))
        texts = C.bpe_texts(family)
        ours = C.dapt_tokenize(dapt, tok, texts, tmp)
        llm = llama_cpp.Llama(model_path=out, vocab_only=True, verbose=False)
        bad = 0
        for text, doc in zip(texts, ours):
            want = hf.encode(text, add_special_tokens=False).ids
            want_special = hf.encode(text, add_special_tokens=True).ids
            got = llm.tokenize(text.encode(), add_bos=False, special=True)
            got_special = llm.tokenize(text.encode(), add_bos=True, special=True)
            ok = got == want and got_special == want_special and doc == want_special
            print(f"{'ok ' if ok else 'BAD'} {text!r}: HF {want_special} llama.cpp {got_special} "
                  f"dapt {doc}")
            bad += not ok
        del llm
    if bad:
        raise SystemExit(f"{bad} of {len(texts)} texts tokenised differently")
    print(f"{family}: llama.cpp, HF tokenizers and dapt agree on {len(texts)} texts")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "logits":
        # DTYPES: one or more, comma-separated: one process pays the torch
        # and transformers imports (~16 s here) once for all of them
        failed = []
        for dtype in sys.argv[3].split(","):
            try:
                check_logits(sys.argv[2], dtype, sys.argv[4])
            except SystemExit as e:
                print(f"FAIL: {sys.argv[2]} {dtype}: {e}")
                failed.append(dtype)
        if failed:
            raise SystemExit(f"llama.cpp logits: {sys.argv[2]} failed for {','.join(failed)}")
    elif len(sys.argv) == 4 and sys.argv[1] == "logits_bpe":
        check_logits("llama_gqa", "f32", sys.argv[3], bpe_family=sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "tokenizer":
        check_tokenizer(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "tokenizer_bpe":
        check_tokenizer_bpe(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
