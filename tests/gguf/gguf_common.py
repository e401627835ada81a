"""Shared helpers of the GGUF tests (tests/gguf/test_*.py).

Models are made by HF transformers (not by dapt), saved with
save_pretrained, and exported by the `dapt` binary under test; the
sentencepiece model is trained by the sentencepiece library on a generated
corpus (BPE with byte fallback, as Llama's). Nothing here decides a test's
verdict: the test files assert.
"""
import os
import random
import subprocess

import numpy as np
import torch

VOCAB = 320
SAMPLE_TEXT = ("The quick brown fox jumps over the lazy dog. Zebras quiz 42 jolly "
               "wizards; naïve café owners say: ¿qué? — done.")


def make_tokenizer(tmp):
    """Trains a 320-piece BPE sentencepiece model with byte fallback and no
    normalisation (as Llama's tokenizer.model); returns its path."""
    import sentencepiece as spm
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
             for _ in range(300)] + SAMPLE_TEXT.split()
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(3000):
            f.write(" ".join(rng.choice(words) for _ in range(12)) + "\n")
    prefix = os.path.join(tmp, "tok")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=VOCAB,
                                   model_type="bpe", byte_fallback=True, minloglevel=2,
                                   normalization_rule_name="identity",
                                   remove_extra_whitespaces=False)
    return prefix + ".model"


def randomize(model, seed):
    """O(1) logits: matrices N(0, 0.2), norm weights 1 + N(0, 0.1), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
    return model


KINDS = ("llama_gqa", "llama_mha_tied", "llama_gqa_tied", "llama_mha", "gpt2")


def make_model(kind, out_dir):
    """A tiny random HF model of one kind saved to out_dir; returns it (eval, fp32)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    if kind.startswith("llama"):
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2 if "gqa" in kind else 4,
                          max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=kind.endswith("tied"))
        model = LlamaForCausalLM(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                         activation_function="gelu_new", layer_norm_epsilon=1e-5)
        model = GPT2LMHeadModel(cfg)
    else:
        raise SystemExit(f"unknown model kind {kind}")
    randomize(model, 1234)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model.eval()


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def dapt_logits(dapt, model_dir, ids, tmp):
    out = os.path.join(tmp, "logits.f32")
    run([dapt, "logits", model_dir, "--ids", ",".join(map(str, ids)), "--out", out])
    x = np.fromfile(out, dtype="<f4")
    return x.reshape(len(ids), -1)


def permute_like_converter(w, n_head):
    """llama.cpp's convert_hf_to_gguf reorders Q/K rows per head: view the
    rows as (head, 2, head_dim/2) and swap the last two axes."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))
