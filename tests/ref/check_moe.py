#!/usr/bin/env python3
"""PyTorch oracle for dapt's MoE llama models (tests/ref, MoE cases).

Runs tests/ref/refdrv with MoE options, rebuilds the model as plain PyTorch
(softmax over all experts in fp32, top-k, optional renormalisation, SwiGLU
experts; torch autograd does every backward) and checks, for the objective
documented in trainer/moe.h:

  L = CE_sum / n_valid + sum_j (N_j / N) sum_layers (lbl_coef LBL_j + z_coef Z_j)
  LBL_j = s E sum_i f_i P_i  (f_i no gradient; s = 1 paper, top_k for hf)
  micro : f from micro-batch j's counts; global: from the running sum of
          the counts of micro-batches 1..j of the step

  1. whole batch (one micro-batch): logits, CE loss, eval loss, every
     gradient (router included), and per-layer f, P, LBL, z;
  2. the same batch as M accumulated micro-batches (refdrv --micro M): every
     gradient against torch's gradient of the M-micro-batch objective of the
     case's mode, and the f of the last micro-batch. For lbl = global that f
     must equal the f of the union of the M micro-batches (the whole batch);
     for lbl = micro it must equal the last micro-batch's own f and differ
     from the union's;
  3. 10 AdamW steps (one micro-batch each): CE losses, grad norms, final
     parameters.

The test is sensitive to the LBL/z gradient: for cases with an aux loss it
asserts the aux term's share of the router gradient (torch) is > 1e-2, far
above the 1e-4 gradient tolerance. Routing must be unambiguous: the gap
between the k-th and (k+1)-th router probability of every token must exceed
1e-5 (fp32 rounding of the probs is ~1e-8); otherwise the case fails as
ill-posed rather than comparing different routings.

Tolerances (fp32 both sides; see check.py): logits, losses 1e-5 relative;
gradients 1e-4 relative per tensor; f exact to 1e-6 (ratios of small
integer counts); P, LBL, z 1e-5 relative; final parameters 1e-4.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check import (Checker, TOL, causal_attention, lr_at, prefixed, run_case,  # noqa: E402
                   rmsnorm, rope_cos_sin, rotate_half, rel)

BASE = dict(arch="llama", layers=2, heads=4, kv_heads=2, d_model=32, d_ff=24, vocab=61,
            max_seq=16, tie=0, theta=10000.0, B=4, T=9, micro=4)
CASES = {
    # Mixtral semantics, every layer MoE, global-batch LBL (paper norm) + z-loss
    "moe_global": dict(BASE, experts=4, top_k=2, lbl="global", lbl_coef=0.1, z_coef=0.01),
    # micro-batch LBL, HF normalisation, Qwen-MoE semantics (no renormalisation),
    # layer 0 dense, layers 1 and 2 MoE, 5 experts, ignored targets
    "moe_micro": dict(BASE, layers=3, experts=5, top_k=2, moe_start=1, norm_topk=0,
                      lbl="micro", lbl_norm="hf", lbl_coef=0.05, z_coef=0.0,
                      ignore_frac=0.2, seed=3),
    # no aux loss at all, top-3 of 4, every other layer MoE, tied head
    "moe_none": dict(BASE, layers=3, experts=4, top_k=3, moe_step=2, lbl="none",
                     lbl_coef=0.0, z_coef=0.0, tie=1),
}
OPTS = dict(arch="--arch", layers="--layers", heads="--heads", kv_heads="--kv-heads",
            d_model="--d-model", d_ff="--d-ff", vocab="--vocab", max_seq="--max-seq",
            tie="--tie", theta="--theta", B="--B", T="--T", micro="--micro",
            experts="--experts", top_k="--top-k", moe_start="--moe-start",
            moe_step="--moe-step", norm_topk="--norm-topk", lbl="--lbl",
            lbl_norm="--lbl-norm", lbl_coef="--lbl-coef", z_coef="--z-coef",
            ignore_frac="--ignore-frac", seed="--seed")
MIN_GAP = 1e-5


def forward(p, cfg, tokens):
    """logits (B, T, V) and, per MoE layer, (router logits (N, E), probs, top_idx)."""
    B, T = tokens.shape
    C, nh, nkv, L = cfg["d_model"], cfg["n_head"], cfg["n_kv_head"], cfg["n_layer"]
    hd, eps, E, K = C // nh, cfg["norm_eps"], cfg["n_experts"], cfg["top_k"]
    cos, sin = rope_cos_sin(T, hd, cfg)
    x = p["model.embed_tokens.weight"][tokens.long()]
    routes = []
    for l in range(L):
        pre = f"model.layers.{l}."
        h = rmsnorm(x, p[pre + "input_layernorm.weight"], eps)
        proj = {}
        for n, heads in (("q", nh), ("k", nkv), ("v", nkv)):
            t = F.linear(h, p[pre + f"self_attn.{n}_proj.weight"])
            proj[n] = t.view(B, T, heads, hd).transpose(1, 2)
        q = proj["q"] * cos + rotate_half(proj["q"]) * sin
        k = proj["k"] * cos + rotate_half(proj["k"]) * sin
        y = causal_attention(q, k, proj["v"]).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + F.linear(y, p[pre + "self_attn.o_proj.weight"])
        h = rmsnorm(x, p[pre + "post_attention_layernorm.weight"], eps)
        if l not in cfg["moe_layers"]:
            g = F.silu(F.linear(h, p[pre + "mlp.gate_proj.weight"]))
            x = x + F.linear(g * F.linear(h, p[pre + "mlp.up_proj.weight"]),
                             p[pre + "mlp.down_proj.weight"])
            continue
        hs = h.reshape(B * T, C)
        rl = F.linear(hs, p[pre + "block_sparse_moe.gate.weight"])
        probs = torch.softmax(rl.float(), dim=-1)
        top_p, top_i = torch.topk(probs, K, dim=-1)
        srt = probs.detach().sort(dim=-1, descending=True).values
        gap = (srt[:, K - 1] - srt[:, K]).min().item() if K < E else 1.0
        if not gap > MIN_GAP:
            raise SystemExit(f"layer {l}: near-tie in the top-{K} routing (gap {gap:.2e}): "
                             "change the case's sizes or seed")
        w = top_p / top_p.sum(-1, keepdim=True) if cfg["norm_topk_prob"] else top_p
        out = torch.zeros_like(hs)
        for e in range(E):
            ex = pre + f"block_sparse_moe.experts.{e}."
            sel = top_i == e  # (N, K); at most one slot per token
            rows = sel.any(-1).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            we = (w * sel).sum(-1)[rows]
            xe = hs[rows]
            ye = F.linear(F.silu(F.linear(xe, p[ex + "w1.weight"])) * F.linear(xe, p[ex + "w3.weight"]),
                          p[ex + "w2.weight"])
            out = out.index_add(0, rows, ye * we[:, None])
        x = x + out.view(B, T, C)
        routes.append((rl, probs, top_i))
    x = rmsnorm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    return F.linear(x, head), routes


def counts_of(top_i, E):
    return torch.bincount(top_i.reshape(-1), minlength=E).double()


def objective(p, cfg, tokens, targets, M, with_ce=True):
    """The step objective over M equal micro-batches of the batch; returns
    (objective, logits of the whole batch, last micro-batch's f per layer,
    CE mean, aux part)."""
    B = tokens.shape[0]
    E, mode = cfg["n_experts"], cfg["lbl"]
    s = cfg["top_k"] if cfg["lbl_norm"] == "hf" else 1.0
    n_valid = (targets >= 0).sum().item()
    n_tok = tokens.numel()
    running = None
    total, aux_total, ce_total, logits_all, f_last, lz_last = 0.0, 0.0, 0.0, [], [], []
    for j in range(M):
        tk = tokens[j * B // M:(j + 1) * B // M]
        tg = targets[j * B // M:(j + 1) * B // M]
        logits, routes = forward(p, cfg, tk)
        logits_all.append(logits)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.reshape(-1, V), tg.reshape(-1).long(), ignore_index=-1,
                             reduction="sum") / n_valid
        ce_total = ce_total + ce
        wj = tk.numel() / n_tok
        if running is None:
            running = [torch.zeros(E, dtype=torch.float64) for _ in routes]
        aux, f_last, lz_last = 0.0, [], []
        for i, (rl, probs, top_i) in enumerate(routes):
            c = counts_of(top_i, E)
            if mode == "global":
                running[i] = running[i] + c
                c = running[i]
            f = (c / c.sum()).float()
            P = probs.mean(0)
            lbl = s * E * (f * P).sum()
            z = (torch.logsumexp(rl.float(), dim=-1) ** 2).mean()
            f_last.append(f)
            lz_last.append((P, lbl, z))
            if mode != "none":
                aux = aux + cfg["lbl_coef"] * lbl
            aux = aux + cfg["z_loss_coef"] * z
        aux_total = aux_total + wj * aux
    total = (ce_total if with_ce else 0.0) + aux_total
    return total, torch.cat(logits_all, 0), f_last, lz_last, ce_total, aux_total


def main():
    case, meta, A = run_case(CASES, OPTS)
    cfg, tr = meta["config"], meta["train"]
    M, E = cfg["micro"], cfg["n_experts"]
    ck = Checker()
    fails = ck.failures
    tok, tgt = A["tokens"], A["targets"]

    def fresh():
        return {k: v.clone().requires_grad_(True) for k, v in prefixed(A, "param.").items()}

    # 1. whole batch
    params = fresh()
    obj, logits, f1, lz1, ce, aux = objective(params, cfg, tok, tgt, 1)
    obj.backward()
    ce_whole = ce.detach()
    ck.batch(A, logits, ce, params)
    worst_stat = 0.0
    for i in range(len(f1)):
        P, lbl, z = lz1[i]
        df = (A[f"moe.{i}.f"] - f1[i]).abs().max().item()
        worst_stat = max(worst_stat, df)
        if not df <= 1e-6:
            fails.append(f"layer {i}: whole-batch f differs by {df:.2e}")
        for nm, a, b in (("P", A[f"moe.{i}.p"], P), ("LBL", A[f"moe.{i}.lbl_z"][:1], lbl),
                         ("z", A[f"moe.{i}.lbl_z"][1:], z)):
            r = rel(a, b.detach().reshape(-1))
            worst_stat = max(worst_stat, r)
            if not r <= 1e-5:
                fails.append(f"layer {i}: {nm} relative error {r:.2e}")
    # sensitivity: the aux loss's share of the router gradients
    if cfg["lbl"] != "none" or cfg["z_loss_coef"] > 0:
        pa = fresh()
        objective(pa, cfg, tok, tgt, 1, with_ce=False)[0].backward()
        routers = [n for n in params if n.endswith("block_sparse_moe.gate.weight")]
        share = min(pa[n].grad.norm().item() / params[n].grad.norm().item() for n in routers)
        print(f"  aux-loss share of the router gradient: {share:.3e} (must be > 1e-2)")
        if not share > 1e-2:
            fails.append(f"aux loss share of the router gradient {share:.2e} is too small "
                         "for the test to detect a wrong LBL gradient")

    # 2. M accumulated micro-batches with the mode's f semantics
    params = fresh()
    objM, _, fM, _, _, _ = objective(params, cfg, tok, tgt, M)
    objM.backward()
    acc = prefixed(A, "gradacc.")
    for name, p in params.items():
        ck.check("grad", "accumulated " + name, acc[name], p.grad)
    for i in range(len(fM)):
        got = A[f"moeacc.{i}.f"]
        d_mode = (got - fM[i]).abs().max().item()
        d_union = (got - f1[i]).abs().max().item()
        print(f"  layer {i}: last micro-batch f vs reference {d_mode:.1e}, vs union f {d_union:.3e}")
        if not d_mode <= 1e-6:
            fails.append(f"layer {i}: accumulated f differs from the reference by {d_mode:.2e}")
        if cfg["lbl"] == "global" and not d_union <= 1e-6:
            fails.append(f"layer {i}: global LBL f after {M} micro-batches is not the union's")
        if cfg["lbl"] == "micro" and not d_union > 1e-3:
            fails.append(f"layer {i}: micro LBL f equals the union's: the case cannot tell the modes apart")

    # 3. AdamW steps (one micro-batch per step)
    params = fresh()
    decay = [p for p in params.values() if p.dim() == 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=tr["weight_decay"]),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]), eps=tr["eps"])
    for s in range(tr["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, tr)
        opt.zero_grad()
        obj, _, _, _, ce, _ = objective(params, cfg, A["train_tokens"][s], A["train_targets"][s], 1)
        obj.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), tr["grad_clip"])
        opt.step()
        ck.check("train_loss", f"step {s}", A["train_losses"][s:s + 1], ce.detach().reshape(1))
        ck.check("grad_norm", f"step {s}", A["train_grad_norms"][s:s + 1], norm.reshape(1))
    final = prefixed(A, "final.")
    for name, p in params.items():
        ck.check("final", name, final[name], p.detach())

    print(f"case {case}: loss dapt {A['loss'].item():.7f} torch {ce_whole.item():.7f}")
    for k in TOL:
        print(f"  worst {k:10s} relative error {ck.worst.get(k, float('nan')):.3e} (tolerance {TOL[k]:.0e})")
    print(f"  worst f/P/LBL/z error {worst_stat:.3e}")
    if fails:
        print(f"FAILED: {len(fails)} mismatches", file=sys.stderr)
        for f in fails[:40]:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
