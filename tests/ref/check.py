#!/usr/bin/env python3
"""PyTorch oracle for dapt's CPU backend (tests/ref).

Runs tests/ref/refdrv (dapt) for one test case, rebuilds the same model from
the dumped parameters as a plain PyTorch program (torch autograd does every
backward; nothing here is hand-differentiated), and checks dapt's logits,
loss, every parameter gradient (whole batch and two accumulated
micro-batches), and the losses, gradient norms and final parameters of 10
AdamW steps with warmup + cosine. Exits non-zero on any mismatch.

Tolerances (fp32 on both sides; different summation orders in sgemm,
softmax and norms give relative differences around 1e-7..1e-6). Each is
about 4-5x the worst measured over the 8 cases here and the 3 of
check_moe.py (AMD EPYC, Debian torch 1.13, OMP_NUM_THREADS 1 and 2 alike):
  logits, loss, eval loss: 8e-7 / 5e-7 relative (||a-b|| / ||b||; measured
                           1.72e-7 gpt2_tied / 1.17e-7 moe_none)
  gradients per tensor:    3e-6 relative (measured 7.31e-7, llama_qkv_bias)
  training losses:         5e-7 relative per step (measured 1.20e-7)
  grad norms:              1e-6 relative per step (measured 2.49e-7, llama_gqa)
  final parameters:        3e-5 relative per tensor (measured 6.77e-6,
                           gpt2_untied: 10 Adam steps amplify). Adam divides by
    sqrt(v): where a gradient element is near zero its update direction can
    differ between two fp32 programs, so whole tensors (not single elements)
    are compared. The key bias (gpt2 c_attn.bias[C:2C], llama k_proj.bias) is
    left out of this comparison. In gpt2, adding a constant vector to every
    key adds the same q.b to all of a query's scores, which softmax ignores:
    its gradient is zero in exact arithmetic, both programs' Adam updates of
    it are driven by rounding noise, and the test asserts instead that it is
    noise (below 1e-4 of the query bias gradient, in dapt and in torch). In
    llama, RoPE rotates the bias by position, so only the rotation's
    variation carries gradient: the low-frequency components (angle t/theta^(2i/HD)
    near 0) are nearly invariant the same way. Its gradient is still
    compared at the gradient tolerance like every other.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F

CASES = {
    # GPT-2, tied head, odd sizes: d_model 40 (head size 10), T = 13
    "gpt2_tied": dict(arch="gpt2", layers=2, heads=4, d_model=40, d_ff=160, vocab=97,
                      max_seq=32, tie=1, B=4, T=13),
    "gpt2_untied": dict(arch="gpt2", layers=2, heads=4, d_model=40, d_ff=160, vocab=97,
                        max_seq=16, tie=0, B=2, T=16, ignore_frac=0.2),
    # Llama, n_kv_head == n_head, untied, d_model 48 (head size 12), T = 11
    "llama_mha": dict(arch="llama", layers=2, heads=4, kv_heads=4, d_model=48, d_ff=72,
                      vocab=101, max_seq=32, tie=0, theta=10000.0, B=2, T=11),
    # Llama with grouped-query attention (6 query heads over 2 kv heads), tied
    "llama_gqa": dict(arch="llama", layers=3, heads=6, kv_heads=2, d_model=72, d_ff=100,
                      vocab=89, max_seq=40, tie=1, theta=500000.0, B=2, T=17,
                      ignore_frac=0.15),
    # Qwen2-style: bias on q/k/v, GQA, untied
    "llama_qkv_bias": dict(arch="llama", layers=2, heads=4, kv_heads=2, d_model=32, d_ff=56,
                           vocab=64, max_seq=24, tie=0, qkv_bias=1, theta=1000000.0, B=4,
                           T=9),
    # Qwen3-style: q/k head norms, head size 12 apart from d_model / n_head (8), tied
    "llama_qk_norm": dict(arch="llama", layers=2, heads=4, kv_heads=2, d_model=32, d_ff=56,
                          vocab=64, max_seq=24, tie=1, head_dim=12, qk_norm=1,
                          theta=1000000.0, B=2, T=13),
    # Llama-3.1-style rope scaling (factor 8, low 1, high 4) with an original
    # context (28) shorter than T (32); head size 16 over theta 100:
    # wavelengths 2 pi 100^(i/8) = 6.3, 11, 20, 35, ... 353, so one is kept
    # (< 28/4), two blended and five divided by the factor
    "llama_rope_llama3": dict(arch="llama", layers=2, heads=4, kv_heads=1, d_model=64, d_ff=80,
                              vocab=71, max_seq=32, tie=0, theta=100.0, rope_scaling="llama3",
                              rope_factor=8.0, rope_low=1.0, rope_high=4.0, rope_orig=28,
                              B=2, T=32),
    "llama_rope_linear": dict(arch="llama", layers=1, heads=2, kv_heads=2, d_model=32, d_ff=48,
                              vocab=53, max_seq=16, tie=1, theta=10000.0, rope_scaling="linear",
                              rope_factor=4.0, B=2, T=16),
}

TOL = dict(logits=8e-7, loss=5e-7, grad=3e-6, train_loss=5e-7, grad_norm=1e-6, final=3e-5)


# The test's own settings. The oracle takes every setting from here (never
# from what the driver reports), so a dapt bug that changes a setting on its
# way into the model, optimizer or schedule shows as a mismatch.
# Model settings a case leaves out (norm eps: GPT-2's layer_norm_epsilon
# 1e-5, Llama's rms_norm_eps 1e-6):
EPS = dict(gpt2=1e-5, llama=1e-6)
MODEL_DEFAULTS = dict(qkv_bias=0, head_dim=0, qk_norm=0, theta=10000.0,
                      rope_scaling="none", rope_factor=1.0, rope_low=1.0, rope_high=4.0,
                      rope_orig=0, ignore_frac=0.0)
# AdamW with linear warmup then cosine decay to min_lr (docs/config.md, train.*)
TRAIN = dict(steps=10, lr=3e-3, min_lr=3e-4, warmup=3, beta1=0.9, beta2=0.95, adam_eps=1e-8,
             weight_decay=0.1, grad_clip=1.0)

# the driver's option for each key of a case
OPTS = dict(arch="--arch", layers="--layers", heads="--heads", kv_heads="--kv-heads",
            d_model="--d-model", d_ff="--d-ff", vocab="--vocab", max_seq="--max-seq",
            tie="--tie", qkv_bias="--qkv-bias", theta="--theta", eps="--eps", B="--B", T="--T",
            ignore_frac="--ignore-frac", head_dim="--head-dim", qk_norm="--qk-norm",
            rope_scaling="--rope-scaling", rope_factor="--rope-factor", rope_low="--rope-low",
            rope_high="--rope-high", rope_orig="--rope-orig", steps="--steps", lr="--lr",
            min_lr="--min-lr", warmup="--warmup", beta1="--beta1", beta2="--beta2",
            adam_eps="--adam-eps", weight_decay="--weight-decay", grad_clip="--grad-clip")


def full_case(case):
    """the case with every model default and training setting filled in: all
    of it goes to the driver, and the oracle reads only this"""
    c = dict(MODEL_DEFAULTS, **TRAIN)
    c.update(case)
    c.setdefault("kv_heads", c["heads"])
    c.setdefault("eps", EPS[c["arch"]])
    return c


def oracle_config(c):
    """the model config the oracle computes with, from the full case"""
    return dict(arch=c["arch"], n_layer=c["layers"], n_head=c["heads"], n_kv_head=c["kv_heads"],
                d_model=c["d_model"], d_ff=c["d_ff"], vocab_size=c["vocab"],
                tie_embeddings=c["tie"], qkv_bias=c["qkv_bias"], head_dim=c["head_dim"],
                qk_norm=c["qk_norm"], rope_theta=c["theta"], norm_eps=c["eps"],
                rope_scaling=c["rope_scaling"], rope_factor=c["rope_factor"],
                rope_low_freq_factor=c["rope_low"], rope_high_freq_factor=c["rope_high"],
                rope_original_max_pos=c["rope_orig"])


def run_driver(driver, case, out, opts=OPTS):
    args = [driver, "--out", out]
    for k, v in case.items():
        args += [opts[k], str(v)]
    subprocess.run(args, check=True)


def run_case(cases, opts=OPTS):
    """--driver and --case from the command line: runs the driver on the
    full case and returns (case name, full case, arrays)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--case", required=True, choices=sorted(cases))
    args = ap.parse_args()
    torch.manual_seed(0)
    case = full_case(cases[args.case])
    with tempfile.TemporaryDirectory() as out:
        run_driver(args.driver, case, out, opts)
        return args.case, case, load(out)[1]


def load(out):
    meta = json.load(open(os.path.join(out, "meta.json")))
    raw = open(os.path.join(out, "data.bin"), "rb").read()
    arrays = {}
    for a in meta["arrays"]:
        dt = np.float32 if a["dtype"] == "f32" else np.int32
        n = int(np.prod(a["shape"])) if a["shape"] else 1
        arr = np.frombuffer(raw, dtype=dt, count=n, offset=a["offset"]).reshape(a["shape"])
        arrays[a["name"]] = torch.from_numpy(arr.copy())
    return meta, arrays


def prefixed(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_inv_freq(hd, cfg):
    """theta^(-2i/hd), then rope_scaling as transformers' rope_utils defines
    it (linear: / factor; llama3: low frequencies / factor, high ones kept,
    a linear blend in 1/wavelength between)"""
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    kind = cfg.get("rope_scaling", "none")
    if kind == "linear":
        return inv_freq / cfg["rope_factor"]
    if kind == "llama3":
        factor, lo, hi = cfg["rope_factor"], cfg["rope_low_freq_factor"], cfg["rope_high_freq_factor"]
        orig = cfg["rope_original_max_pos"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (orig / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        out = torch.where(wavelen > orig / lo, inv_freq / factor, inv_freq)
        medium = (wavelen >= orig / hi) & (wavelen <= orig / lo)
        return torch.where(medium, blended, out)
    return inv_freq


def rope_cos_sin(T, hd, cfg):
    inv_freq = rope_inv_freq(hd, cfg)
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def causal_attention(q, k, v):
    """q: (B, NH, T, HD); k, v: (B, NKV, T, HD)."""
    nh, nkv, T, hd = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k = k.repeat_interleave(nh // nkv, dim=1)
    v = v.repeat_interleave(nh // nkv, dim=1)
    s = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def forward(p, cfg, tokens):
    B, T = tokens.shape
    C, nh, L = cfg["d_model"], cfg["n_head"], cfg["n_layer"]
    nkv, hd, eps = cfg["n_kv_head"], cfg.get("head_dim") or cfg["d_model"] // cfg["n_head"], cfg["norm_eps"]
    tok = tokens.long()
    if cfg["arch"] == "gpt2":
        x = p["transformer.wte.weight"][tok] + p["transformer.wpe.weight"][:T]
        for l in range(L):
            pre = f"transformer.h.{l}."
            h = F.layer_norm(x, (C,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], eps)
            qkv = F.linear(h, p[pre + "attn.c_attn.weight"], p[pre + "attn.c_attn.bias"])
            q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in qkv.split(C, dim=-1))
            y = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
            x = x + F.linear(y, p[pre + "attn.c_proj.weight"], p[pre + "attn.c_proj.bias"])
            h = F.layer_norm(x, (C,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], eps)
            u = F.gelu(F.linear(h, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"]),
                       approximate="tanh")
            x = x + F.linear(u, p[pre + "mlp.c_proj.weight"], p[pre + "mlp.c_proj.bias"])
        x = F.layer_norm(x, (C,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], eps)
        head = p["transformer.wte.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    else:
        cos, sin = rope_cos_sin(T, hd, cfg)
        x = p["model.embed_tokens.weight"][tok]
        for l in range(L):
            pre = f"model.layers.{l}."
            h = rmsnorm(x, p[pre + "input_layernorm.weight"], eps)
            proj = {}
            for n, heads in (("q", nh), ("k", nkv), ("v", nkv)):
                b = p.get(pre + f"self_attn.{n}_proj.bias")
                t = F.linear(h, p[pre + f"self_attn.{n}_proj.weight"], b)
                proj[n] = t.view(B, T, heads, hd).transpose(1, 2)
            if cfg.get("qk_norm"):  # per head, before RoPE (Qwen3)
                proj["q"] = rmsnorm(proj["q"], p[pre + "self_attn.q_norm.weight"], eps)
                proj["k"] = rmsnorm(proj["k"], p[pre + "self_attn.k_norm.weight"], eps)
            q = proj["q"] * cos + rotate_half(proj["q"]) * sin
            k = proj["k"] * cos + rotate_half(proj["k"]) * sin
            y = causal_attention(q, k, proj["v"]).transpose(1, 2).reshape(B, T, nh * hd)
            x = x + F.linear(y, p[pre + "self_attn.o_proj.weight"])
            h = rmsnorm(x, p[pre + "post_attention_layernorm.weight"], eps)
            g = F.silu(F.linear(h, p[pre + "mlp.gate_proj.weight"]))
            x = x + F.linear(g * F.linear(h, p[pre + "mlp.up_proj.weight"]),
                             p[pre + "mlp.down_proj.weight"])
        x = rmsnorm(x, p["model.norm.weight"], eps)
        head = p["model.embed_tokens.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    return F.linear(x, head)


def loss_of(logits, targets):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1).long(), ignore_index=-1)


def rel(a, b):
    a, b = a.double(), b.double()
    nb = b.norm().item()
    d = (a - b).norm().item()
    return 0.0 if d == 0.0 else d / max(nb, 1e-30)


def key_bias_slices(cfg):
    """(tensor name, slice of the key bias, slice of the query bias) per layer."""
    C = cfg["d_model"]
    out = []
    for l in range(cfg["n_layer"]):
        if cfg["arch"] == "gpt2":
            n = f"transformer.h.{l}.attn.c_attn.bias"
            out.append((n, slice(C, 2 * C), n, slice(0, C)))
        elif cfg["qkv_bias"]:
            pre = f"model.layers.{l}.self_attn."
            out.append((pre + "k_proj.bias", slice(None), None, None))
    return out


def lr_schedule(opt, c):
    """torch's own schedulers for the test's schedule: linear warmup from
    lr/W to lr over steps 0..W-1, then cosine from lr (step W) towards min_lr
    (reached at step `steps`, one past the last)"""
    S = torch.optim.lr_scheduler
    # SequentialLR steps the cosine with an epoch argument at the milestone
    # (its closed form), which torch 1.13 warns about
    warnings.filterwarnings("ignore", message="The epoch parameter")
    W = c["warmup"]
    cos = S.CosineAnnealingLR(opt, T_max=c["steps"] - W, eta_min=c["min_lr"])
    if W == 0:
        return cos
    warm = S.LinearLR(opt, start_factor=1.0 / W, end_factor=1.0, total_iters=W - 1)
    return S.SequentialLR(opt, [warm, cos], milestones=[W])


def adamw(params, c):
    """AdamW, decay on 2-D tensors only, with the test's settings"""
    decay = [p for p in params.values() if p.dim() == 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([dict(params=decay, weight_decay=c["weight_decay"]),
                              dict(params=no_decay, weight_decay=0.0)],
                             lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["adam_eps"])


class Checker:
    def __init__(self):
        self.failures = []
        self.worst = {}

    def check(self, kind, name, a, b):
        r = rel(a, b)
        self.worst[kind] = max(self.worst.get(kind, 0.0), r)
        if not (r <= TOL[kind]):  # NaN fails too
            self.failures.append(f"{kind} {name}: relative error {r:.3e} > {TOL[kind]:.0e}")

    def batch(self, A, logits, loss, params):
        """one batch: dapt's logits, loss, eval loss and every gradient (the
        arrays of A) against the reference's, after loss.backward(); returns
        dapt's gradients by name"""
        self.check("logits", "logits", A["logits"], logits.detach())
        self.check("loss", "loss", A["loss"], loss.detach().reshape(1))
        self.check("loss", "eval_loss", A["eval_loss"], loss.detach().reshape(1))
        grads = prefixed(A, "grad.")
        if set(grads) != set(params):
            self.failures.append(f"tensor sets differ: {sorted(set(grads) ^ set(params))}")
        for name, p in params.items():
            self.check("grad", name, grads[name], p.grad)
        return grads


def main():
    case, tc, A = run_case(CASES)
    cfg = oracle_config(tc)
    params = {k: v.clone().requires_grad_(True) for k, v in prefixed(A, "param.").items()}
    ck = Checker()

    # one batch: logits, loss, gradients
    logits = forward(params, cfg, A["tokens"])
    loss = loss_of(logits, A["targets"])
    loss.backward()
    grads = ck.batch(A, logits, loss, params)
    acc = prefixed(A, "gradacc.")
    for name, p in params.items():
        ck.check("grad", "accumulated " + name, acc[name], p.grad)
    for kname, ks, qname, qs in key_bias_slices(cfg):
        if qname is None:  # RoPE: not invariant, see the tolerances above
            continue
        for who, g in (("dapt", grads), ("torch", {k: v.grad for k, v in params.items()})):
            ratio = g[kname][ks].norm().item() / g[qname][qs].norm().item()
            if not ratio < 1e-4:
                ck.failures.append(f"key bias gradient {kname} ({who}) is not noise: "
                                   f"{ratio:.3e} of the query bias gradient")

    # AdamW steps with warmup + cosine, decay on 2-D tensors only
    params = {k: v.clone().requires_grad_(True) for k, v in prefixed(A, "param.").items()}
    opt = adamw(params, tc)
    sched = lr_schedule(opt, tc)
    for s in range(tc["steps"]):
        opt.zero_grad()
        loss = loss_of(forward(params, cfg, A["train_tokens"][s]), A["train_targets"][s])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), tc["grad_clip"])
        opt.step()
        sched.step()
        ck.check("train_loss", f"step {s}", A["train_losses"][s:s + 1], loss.detach().reshape(1))
        ck.check("grad_norm", f"step {s}", A["train_grad_norms"][s:s + 1], norm.reshape(1))
    final = prefixed(A, "final.")
    final_torch = {k: v.detach().clone() for k, v in params.items()}
    for kname, ks, _, _ in key_bias_slices(cfg):
        final[kname] = final[kname].clone()
        final[kname][ks] = 0.0
        final_torch[kname][ks] = 0.0
    for name, p in final_torch.items():
        ck.check("final", name, final[name], p)

    print(f"case {case}: loss dapt {A['loss'].item():.7f} torch {loss_of(logits, A['targets']).item():.7f}")
    for k in TOL:
        print(f"  worst {k:10s} relative error {ck.worst.get(k, float('nan')):.3e} (tolerance {TOL[k]:.0e})")
    if ck.failures:
        print(f"FAILED: {len(ck.failures)} mismatches", file=sys.stderr)
        for f in ck.failures[:40]:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
