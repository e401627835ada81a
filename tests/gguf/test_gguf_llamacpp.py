"""llama.cpp itself (through PyPI llama-cpp-python) runs dapt's GGUF exports.

    python test_gguf_llamacpp.py logits KIND DTYPE DAPT
    python test_gguf_llamacpp.py tokenizer DAPT

logits: a random transformers model (KIND in gguf_common.KINDS) is exported
with `dapt export gguf --dtype DTYPE`; llama.cpp evaluates the same ids
(flash attention off, F32 KV cache, every position's logits) and its logits
are compared with `dapt logits` on the original fp32 model. The measure is
max |diff| / max(1, max |logit|); a layout error (unpermuted Q/K, a
transposed or misnamed tensor, a wrong epsilon or RoPE base) moves it by
O(1) (measured: see docs/gguf.md). Tolerances (REL_TOL):
  f32  1e-4: same weights, fp32 everywhere; only summation order, and
       ggml's fast exp/silu, differ (ulps per layer).
  gpt2 f32 is looser, 2e-3: llama.cpp's CPU GELU looks its result up in an
       fp16 table indexed by the fp16-rounded input (GGML_GELU_FP16), a
       relative error up to ~2^-11 on every MLP activation.
  f16  5e-3: weights rounded to fp16 (2^-11 relative) and ggml converts the
       activations to fp16 for F16 matmuls.
  bf16 3e-2: bf16 has 8 significant bits (2^-9 relative rounding) on the
       weights and on the activations ggml converts for BF16 matmuls.
  q8_0 3e-2: weights on a 255-level grid per 32 (error <= amax/254) and
       activations quantised to Q8 by ggml for the dot products.
Each is far below the O(1) of a layout error and above what was measured
(the test prints the measured value).

tokenizer: a sentencepiece BPE model with byte fallback is exported with a
tiny llama; llama.cpp's tokenizer must give sentencepiece's ids for sample
texts (with and without BOS), and detokenise them back.

Exit status 77 (ctest: skipped) when llama_cpp is not importable: build it
with tests/gguf/install_llama_cpp.sh .venv/bin/python.
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_common as C  # noqa: E402

try:
    import llama_cpp
except ImportError:
    print("llama_cpp is not installed: run tests/gguf/install_llama_cpp.sh .venv/bin/python "
          "(builds llama.cpp from source, minutes)")
    sys.exit(77)

REL_TOL = {"f32": 1e-4, "f16": 5e-3, "bf16": 3e-2, "q8_0": 3e-2}
GPT2_F32_TOL = 2e-3
IDS = [1, 17, 250, 3, 99, 319, 5, 42, 42, 7, 128, 64, 200, 11, 300, 2]


def load(path, n_ctx=64):
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                           n_threads=2, logits_all=True, flash_attn=False,
                           type_k=0, type_v=0,  # GGML_TYPE_F32 KV cache
                           n_gpu_layers=0, verbose=False)


def check_logits(kind, dtype, dapt):
    with tempfile.TemporaryDirectory() as tmp:
        tok = C.make_tokenizer(tmp)
        mdir = os.path.join(tmp, "model")
        C.make_model(kind, mdir)
        out = os.path.join(tmp, "m.gguf")
        C.run([dapt, "export", "gguf", mdir, out, "--dtype", dtype, "--tokenizer", tok])
        ref = C.dapt_logits(dapt, mdir, IDS, tmp)
        llm = load(out)
        llm.eval(IDS)
        got = np.array(llm.scores[:len(IDS)], dtype=np.float32)
        del llm
    if got.shape != ref.shape:
        raise SystemExit(f"llama.cpp logits shape {got.shape}, dapt {ref.shape}")
    scale = max(1.0, float(np.abs(ref).max()))
    rel = float(np.abs(got - ref).max()) / scale
    tol = GPT2_F32_TOL if (kind == "gpt2" and dtype == "f32") else REL_TOL[dtype]
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    print(f"llama.cpp vs dapt logits, {kind} {dtype}: max|diff|/max(1,max|logit|) = {rel:.3g} "
          f"(tol {tol:g}, max|logit| {scale:.3g}, argmax agreement {agree:.2f})")
    if not rel <= tol:
        raise SystemExit("llama.cpp logits differ from dapt's")


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


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "logits":
        check_logits(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "tokenizer":
        check_tokenizer(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
