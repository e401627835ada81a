"""HF transformers parity for the newer architectures: Llama 3.x rope_scaling
(llama3, linear) and Qwen3 (q/k head norms, a head size apart from
hidden_size / heads). The oracle is transformers 4.51.3 on torch 2.5.1, in
tools/setup's second virtualenv (.venv-hf): the project's .venv has
transformers 4.40.2, which knows neither.

    python test_hf_arch.py CASE HF_DRIVER

import_*: a tiny random model made by transformers (save_pretrained),
imported by dapt (hf_driver logits), logits of one sequence compared, as
tests/runner/test_hf_parity.py does; the llama3/linear cases also compare
dapt's RoPE inverse frequencies (hf_driver inv_freq) with the model's
rotary_emb.inv_freq buffer. grads_*: one training step's gradients: dapt's
(hf_driver grads: forward + backward of the mean next-token loss) against
torch autograd through the transformers model on the same ids. ckpt_*: a
dapt checkpoint (hf_driver ckpt) loads in transformers with no missing or
unexpected tensor and gives dapt's logits.

Tolerances (fp32 on both sides, summation order only):
  logits: 3e-6 * max(1, max|logit|) (hf_common.REL_TOL; measured at most
    7.0e-7 of max|logit|, import llama31; any layout error is O(max|logit|));
  loss: 4e-7 relative (measured 9.7e-8, grads_qwen3_tied);
  gradients: 8e-6 relative per tensor (||a - b|| / ||b||; measured 1.95e-6,
    grads_llama31);
  inverse frequencies: 2 ulp (2.4e-7 relative): the same fp32 formula,
    libm's powf against torch's pow.
Exit 77 (skipped) when transformers cannot provide the architecture.
"""
import json
import os
import sys
import tempfile

try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
    from safetensors.torch import load_file
    from hf_common import compare_logits, hf_logits, main, randomize, read_f32, run_driver
except ImportError as e:  # not the .venv-hf of tools/setup
    print(f"skipped: {e} (tools/setup makes .venv-hf with transformers 4.51.3)")
    sys.exit(77)

VOCAB = 64
GRAD_TOL = 8e-6
LOSS_TOL = 4e-7


def make(kind, vocab=VOCAB):
    """kind -> (model, T). llama31: rope_scaling llama3 with factor 8, low
    1, high 4 and an original context of 28 < T = 32; head size 16 over
    theta 100 puts the wavelengths 2 pi 100^(i/8) = 6.3, 11, 20, 35, ... in
    all three bands (one kept below 28/4, two blended, five divided).
    llama_linear: factor 2 as {"type": "linear"} (the older spelling), tied,
    and a llama's head_dim (16) apart from hidden / heads (8).
    qwen3: hidden 32 over 4 heads with head_dim 16 (not 8), GQA, no sliding
    window (as Qwen3's released configs: "sliding_window": null)."""
    torch.manual_seed(0)
    if kind == "llama31":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=80,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                          max_position_embeddings=64, rope_theta=100.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=False,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 28})
        return LlamaForCausalLM(cfg), 32
    if kind == "llama_linear":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, max_position_embeddings=64, rope_theta=5000.0,
                          rms_norm_eps=1e-5, tie_word_embeddings=True,
                          rope_scaling={"type": "linear", "factor": 2.0})
        return LlamaForCausalLM(cfg), 24
    if kind in ("qwen3", "qwen3_tied"):
        cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=16, max_position_embeddings=32, rope_theta=5000.0,
                          rms_norm_eps=1e-5, tie_word_embeddings=(kind == "qwen3_tied"),
                          use_sliding_window=False, sliding_window=None)
        return Qwen3ForCausalLM(cfg), 16
    raise SystemExit(f"unknown model kind {kind}")


def ids_of(n, seed):
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def case_import(driver, kind):
    model, T = make(kind)
    model = randomize(model, seed=2)
    ids = ids_of(T, 1)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        ref_model = type(model).from_pretrained(d, torch_dtype=torch.float32)
        ref = hf_logits(ref_model, ids)
        out = os.path.join(d, "logits.f32")
        run_driver(driver, "logits", d, out, *ids)
        got = read_f32(out, T * VOCAB).view(T, VOCAB)
        if kind.startswith("llama"):
            want = ref_model.model.rotary_emb.inv_freq.float()
            inv = os.path.join(d, "inv_freq.f32")
            run_driver(driver, "inv_freq", d, inv)
            have = read_f32(inv, want.numel())
            rel = ((have - want).abs() / want).max().item()
            scaled = (want != make_plain_inv_freq(ref_model.config)).sum().item()
            print(f"{kind}: inverse frequencies max relative diff {rel:.3e} (tolerance 2.4e-7), "
                  f"{scaled} of {want.numel()} changed by the scaling")
            assert scaled > 0, "the rope scaling changes no frequency: the test says nothing"
            assert rel <= 2.4e-7, f"inverse frequencies differ by {rel:.3e}"
    compare_logits(f"import {kind}", ref, got)


def make_plain_inv_freq(cfg):
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))


def rel(a, b):
    a, b = a.double(), b.double()
    d = (a - b).norm().item()
    return 0.0 if d == 0.0 else d / max(b.norm().item(), 1e-30)


def case_grads(driver, kind):
    """dapt's gradients of the mean next-token loss on T tokens against torch
    autograd through the transformers model on the same weights."""
    model, T = make(kind)
    model = randomize(model, seed=4)
    ids = ids_of(T + 1, 5)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        ref_model = type(model).from_pretrained(d, torch_dtype=torch.float32)
        out = os.path.join(d, "grads.safetensors")
        loss_dapt = float(run_driver(driver, "grads", d, out, *ids).strip())
        got = load_file(out)
    ref_model.train()
    logits = ref_model(torch.tensor([ids[:-1]])).logits[0]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    loss.backward()
    err = abs(loss_dapt - loss.item()) / loss.item()
    print(f"grads {kind}: loss dapt {loss_dapt:.7f} torch {loss.item():.7f} (relative {err:.2e}, "
          f"tolerance {LOSS_TOL:.0e})")
    fails = []
    if not err <= LOSS_TOL:
        fails.append(f"loss differs by {err:.2e}")
    params = dict(ref_model.named_parameters())
    if ref_model.config.tie_word_embeddings:
        params.pop("lm_head.weight", None)  # the embedding's tensor: one gradient in both
    if set(params) != set(got):
        fails.append(f"tensor sets differ: {sorted(set(params) ^ set(got))}")
    worst, worst_name = 0.0, ""
    for name, p in params.items():
        if name not in got:
            continue
        r = rel(got[name], p.grad)
        if r > worst:
            worst, worst_name = r, name
        if not r <= GRAD_TOL:
            fails.append(f"gradient {name}: relative error {r:.3e}")
    print(f"grads {kind}: {len(params)} tensors, worst relative error {worst:.3e} ({worst_name}), "
          f"tolerance {GRAD_TOL:.0e}")
    for name in ("q_norm", "k_norm"):
        n = f"model.layers.0.self_attn.{name}.weight"
        if n in params:
            print(f"  {n}: |grad| {params[n].grad.norm().item():.3e}, relative error "
                  f"{rel(got[n], params[n].grad):.3e}")
    assert not fails, "; ".join(fails[:10])


def case_ckpt(driver, kind):
    cls, hf_arch = {"qwen3": (Qwen3ForCausalLM, "Qwen3ForCausalLM"),
                    "qwen3-tied": (Qwen3ForCausalLM, "Qwen3ForCausalLM"),
                    "llama3": (LlamaForCausalLM, "LlamaForCausalLM"),
                    "llama-linear": (LlamaForCausalLM, "LlamaForCausalLM")}[kind]
    ids = ids_of(16, 3)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.f32")
        path = run_driver(driver, "ckpt", kind, os.path.join(d, "run"), out, *ids).strip()
        got = read_f32(out, len(ids) * VOCAB).view(len(ids), VOCAB)
        model, info = cls.from_pretrained(path, output_loading_info=True)
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            assert not info[k], f"from_pretrained({path}): {k} = {info[k]}"
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        assert cfg["architectures"] == [hf_arch], cfg["architectures"]
        print(f"checkpoint {kind}: rope_scaling {cfg.get('rope_scaling')}, head_dim "
              f"{cfg.get('head_dim')}, tie_word_embeddings {cfg['tie_word_embeddings']}")
        ref = hf_logits(model, ids)
    compare_logits(f"checkpoint {kind} -> {hf_arch}", ref, got)


CASES = {
    "import_llama31": lambda d: case_import(d, "llama31"),
    "import_llama_linear": lambda d: case_import(d, "llama_linear"),
    "import_qwen3": lambda d: case_import(d, "qwen3"),
    "import_qwen3_tied": lambda d: case_import(d, "qwen3_tied"),
    "grads_llama31": lambda d: case_grads(d, "llama31"),
    "grads_qwen3": lambda d: case_grads(d, "qwen3"),
    "grads_qwen3_tied": lambda d: case_grads(d, "qwen3_tied"),
    "ckpt_qwen3": lambda d: case_ckpt(d, "qwen3"),
    "ckpt_qwen3_tied": lambda d: case_ckpt(d, "qwen3-tied"),
    "ckpt_llama3": lambda d: case_ckpt(d, "llama3"),
    "ckpt_llama_linear": lambda d: case_ckpt(d, "llama-linear"),
}

if __name__ == "__main__":
    main(CASES, transformers)
