"""The GGUF tests' models of the newer architectures (tests/gguf/
test_gguf_arch.py), made by transformers 4.51.3 in tools/setup's .venv-hf:
the .venv that runs gguf-py and llama.cpp has transformers 4.40.2, which
knows neither Qwen3 nor llama3 rope scaling.

    .venv-hf/bin/python make_arch_model.py KIND OUT_DIR ID...

KIND as tests/runner/test_hf_arch.py's (llama31, llama_linear, qwen3,
qwen3_tied) with a vocabulary of 320 (the test tokenizer's). Writes OUT_DIR
by save_pretrained, the model's logits on the ids as OUT_DIR/hf_logits.f32
(T x 320 fp32), and for the llamas the RoPE inverse frequencies,
rotary_emb.inv_freq, as OUT_DIR/inv_freq.f32 and the unscaled ones as
OUT_DIR/inv_freq_plain.f32. Exit 77 when transformers lacks them.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runner"))
import test_hf_arch as A  # noqa: E402  (exits 77 without transformers 4.51)

import torch  # noqa: E402

VOCAB = 320


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    kind, out, ids = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3:]]
    torch.set_num_threads(1)
    model, _ = A.make(kind, vocab=VOCAB)
    model = A.randomize(model, seed=7).eval()
    model.save_pretrained(out, safe_serialization=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logits.numpy().tofile(os.path.join(out, "hf_logits.f32"))
    if kind.startswith("llama"):
        model.model.rotary_emb.inv_freq.float().numpy().tofile(os.path.join(out, "inv_freq.f32"))
        A.make_plain_inv_freq(model.config).float().numpy().tofile(
            os.path.join(out, "inv_freq_plain.f32"))


if __name__ == "__main__":
    main()
