"""HF transformers parity: transformers is the oracle for dapt's HF interop.

    python test_hf_parity.py CASE HF_DRIVER

import_* cases: a tiny random model made by transformers is saved with
save_pretrained (safetensors), imported by dapt (hf_driver logits) and the
logits of one sequence compared. ckpt_* cases: dapt writes a checkpoint
(hf_driver ckpt), transformers loads it with from_pretrained, and the logits
are compared.

Tolerance: both sides compute in fp32 on the same weights; they differ only
in summation order (BLAS blocking, attention and norm reductions), which
moves a logit by a few ulps of the values summed per layer. With |logits| of
O(1..10) that is ~1e-6..1e-5; we allow hf_common.REL_TOL = 3e-6 times
max(1, max|logit|) (measured: at most 2.4e-6 with max|logit| ~3.6, i.e.
6.6e-7 of it, transformers 4.40.2 on torch 1.13 CPU; 7.0e-7 in
test_hf_arch.py), still
far below what any layout error (a transposed or
misplaced tensor, a wrong RoPE pairing, a missing bias) produces, which is
O(max|logit|) (an untransposed GPT-2 Conv1D weight: 5.5). F16/BF16 files are compared with HF reading the same file
upcast to fp32, so the same tolerance holds: the upcast is exact on both
sides. The test prints the max abs difference it measured.
"""
import json
import os
import struct
import tempfile

import torch
import transformers
from hf_common import compare_logits, hf_logits, main, randomize, read_f32, run_driver
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, MixtralConfig,
                          MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM)
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

VOCAB, T = 64, 16
LBL_TOL = 6e-7


def make(kind):
    torch.manual_seed(0)
    if kind in ("llama", "llama_tied"):
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=32, rope_theta=5000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=(kind == "llama_tied"))
        return LlamaForCausalLM(cfg)
    if kind == "qwen2":
        cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=32, rope_theta=5000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=False)
        return Qwen2ForCausalLM(cfg)
    if kind == "mistral":
        # a sliding window of T tokens: dapt caps max_seq_len at it, and over
        # at most T tokens it is full causal attention
        cfg = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                            max_position_embeddings=64, sliding_window=T, rope_theta=5000.0,
                            rms_norm_eps=1e-5)
        return MistralForCausalLM(cfg)
    if kind in ("mixtral", "mixtral_1layer"):
        cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                            num_hidden_layers=1 if kind == "mixtral_1layer" else 2,
                            num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=32, rope_theta=5000.0, rms_norm_eps=1e-5,
                            num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)
        return MixtralForCausalLM(cfg)
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                         activation_function="gelu_new", layer_norm_epsilon=1e-5)
        return GPT2LMHeadModel(cfg)
    raise SystemExit(f"unknown model kind {kind}")


def read_logits(path, n_tokens):
    return read_f32(path, n_tokens * VOCAB).view(n_tokens, VOCAB)


def st_dtypes(path):
    """dtypes in a safetensors header (read directly, independent of dapt)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


def case_import(driver, kind, dtype=None, shard=False):
    ids = torch.randint(0, VOCAB, (T,), generator=torch.Generator().manual_seed(1)).tolist()
    model = randomize(make(kind), seed=2)
    with tempfile.TemporaryDirectory() as d:
        if dtype is not None:
            model = model.to(dtype)
        kwargs = {"max_shard_size": "20KB"} if shard else {}
        model.save_pretrained(d, safe_serialization=True, **kwargs)
        files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
        if shard:
            assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
            assert len(files) > 1, f"expected several shards, got {files}"
        want = {None: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
        for f in files:
            assert st_dtypes(os.path.join(d, f)) == {want}, f"{f}: {st_dtypes(os.path.join(d, f))}"
        # the oracle reads the same file, upcast to fp32 (exact)
        ref_model = type(model).from_pretrained(d, torch_dtype=torch.float32)
        ref = hf_logits(ref_model, ids)
        out = os.path.join(d, "logits.f32")
        run_driver(driver, "logits", d, out, *ids)
        got = read_logits(out, T)
    compare_logits(f"import {kind} {want}{' sharded' if shard else ''}", ref, got)


def case_mixtral(driver, kind):
    """Mixtral import: logits, and the router aux loss in HF's normalisation.
    HF's model-level aux_loss concatenates the router logits of all layers
    before averaging (load_balancing_loss_func); dapt's LBL is per layer. So
    each dapt layer value is compared with load_balancing_loss_func on that
    layer's router logits alone, and for a one-layer model with the
    model's own outputs.aux_loss. Tolerance 6e-7 relative (LBL_TOL): the
    counts are exact when the routing agrees, the mean probabilities differ
    by fp32 rounding (measured at most 1.5e-7, so about 4x)."""
    ids = torch.randint(0, VOCAB, (T,), generator=torch.Generator().manual_seed(1)).tolist()
    model = randomize(make(kind), seed=2)
    cfg = model.config
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d, safe_serialization=True)
        ref_model = MixtralForCausalLM.from_pretrained(d, torch_dtype=torch.float32)
        ref_model.eval()
        with torch.no_grad():
            out_hf = ref_model(torch.tensor([ids]), output_router_logits=True)
        out = os.path.join(d, "logits.f32")
        run_driver(driver, "logits", d, out, *ids)
        got = read_logits(out, T)
        lbl_path = os.path.join(d, "lbl.f32")
        run_driver(driver, "moe_lbl", d, lbl_path, *ids)
        with open(lbl_path, "rb") as f:
            lbl = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
    compare_logits(f"import {kind}", out_hf.logits[0].float(), got)
    L, E, K = cfg.num_hidden_layers, cfg.num_local_experts, cfg.num_experts_per_tok
    assert lbl.numel() == L, f"{lbl.numel()} LBL values for {L} layers"
    for l in range(L):
        rl = out_hf.router_logits[l]
        p = torch.softmax(rl.float(), -1).sort(-1, descending=True).values
        assert (p[:, K - 1] - p[:, K]).min() > 1e-5, "near-tie in HF's routing: change the seed"
        ref = load_balancing_loss_func((rl,), E, K).item()
        err = abs(lbl[l].item() - ref) / ref
        print(f"layer {l}: HF aux loss {ref:.7f}, dapt LBL (hf norm) {lbl[l].item():.7f}, rel err {err:.2e}")
        assert err <= LBL_TOL, f"layer {l}: LBL differs from HF's by {err:.2e}"
    if L == 1:
        err = abs(lbl[0].item() - out_hf.aux_loss.item()) / out_hf.aux_loss.item()
        print(f"model aux_loss {out_hf.aux_loss.item():.7f}, rel err {err:.2e}")
        assert err <= LBL_TOL, f"HF aux_loss differs by {err:.2e}"


def case_ckpt(driver, kind):
    ids = torch.randint(0, VOCAB, (T,), generator=torch.Generator().manual_seed(3)).tolist()
    cls = {"llama": LlamaForCausalLM, "llama-tied": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM,
           "gpt2": GPT2LMHeadModel, "llama-sharded": LlamaForCausalLM,
           "mixtral": MixtralForCausalLM}[kind]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "logits.f32")
        path = run_driver(driver, "ckpt", kind, os.path.join(d, "run"), out, *ids).strip()
        assert os.path.basename(path) == "step-00000007", path
        got = read_logits(out, T)
        sharded = os.path.exists(os.path.join(path, "model.safetensors.index.json"))
        assert sharded == (kind == "llama-sharded"), f"{path}: sharded = {sharded}"
        model, info = cls.from_pretrained(path, output_loading_info=True)
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            assert not info[k], f"from_pretrained({path}): {k} = {info[k]}"
        with open(os.path.join(path, "config.json")) as f:
            assert json.load(f)["architectures"] == [cls.__name__]
        ref = hf_logits(model, ids)
    compare_logits(f"checkpoint {kind} -> {cls.__name__}", ref, got)


CASES = {
    "import_llama_gqa": lambda d: case_import(d, "llama"),
    "import_llama_tied": lambda d: case_import(d, "llama_tied"),
    "import_qwen2": lambda d: case_import(d, "qwen2"),
    "import_gpt2": lambda d: case_import(d, "gpt2"),
    "import_mistral": lambda d: case_import(d, "mistral"),
    "import_mixtral": lambda d: case_mixtral(d, "mixtral"),
    "import_mixtral_1layer": lambda d: case_mixtral(d, "mixtral_1layer"),
    "ckpt_mixtral": lambda d: case_ckpt(d, "mixtral"),
    "import_llama_bf16": lambda d: case_import(d, "llama", dtype=torch.bfloat16),
    "import_gpt2_f16": lambda d: case_import(d, "gpt2", dtype=torch.float16),
    "import_qwen2_bf16_sharded": lambda d: case_import(d, "qwen2", dtype=torch.bfloat16, shard=True),
    "import_llama_sharded": lambda d: case_import(d, "llama", shard=True),
    "ckpt_llama": lambda d: case_ckpt(d, "llama"),
    "ckpt_llama_tied": lambda d: case_ckpt(d, "llama-tied"),
    "ckpt_qwen2": lambda d: case_ckpt(d, "qwen2"),
    "ckpt_gpt2": lambda d: case_ckpt(d, "gpt2"),
    "ckpt_llama_sharded": lambda d: case_ckpt(d, "llama-sharded"),
}

if __name__ == "__main__":
    main(CASES, transformers)
