"""torch_step.py: the PyTorch side of tools/bench.

Times full training steps (zero grad, forward, cross-entropy, backward, grad
clip 1.0, AdamW with weight decay on the 2-D tensors) of the same GPT-2 /
Llama shapes as build/dapt-bench, in plain nn.Module code, fp32, with
torch.set_num_threads(2) (tools/bench/run also sets OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS). Prints the steps, the median, which BLAS torch
resolved, and a last line "RESULT {json}" for tools/bench/run.

The projections are stacked (one q|k|v and one gate|up nn.Linear), as dapt
stores them: fewer, larger GEMMs, which favours torch if anything.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # name: arch, n_layer, n_head, n_kv_head, d_model, d_ff, vocab, max_seq_len, tied
    "gpt2-124m": ("gpt2", 12, 12, 12, 768, 3072, 50257, 1024, True),
    "llama-110m": ("llama", 12, 12, 12, 768, 2048, 32000, 1024, False),
    "gpt2-tiny": ("gpt2", 2, 4, 4, 128, 512, 1000, 128, True),
    "llama-tiny": ("llama", 2, 4, 2, 128, 384, 1000, 128, False),
}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, arch, d_model, n_head, n_kv_head):
        super().__init__()
        self.arch, self.n_head, self.n_kv_head = arch, n_head, n_kv_head
        self.hd = d_model // n_head
        bias = arch == "gpt2"
        self.qkv = nn.Linear(d_model, (n_head + 2 * n_kv_head) * self.hd, bias=bias)
        self.proj = nn.Linear(n_head * self.hd, d_model, bias=bias)

    def forward(self, x, mask, cos, sin):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.hd, self.n_kv_head * self.hd, self.n_kv_head * self.hd], dim=-1)
        q = q.view(B, T, self.n_head, self.hd).transpose(1, 2)  # (B, NH, T, HD)
        k = k.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # (B, NKV, T, HD)
        v = v.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)
        if self.arch == "llama":
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if self.n_kv_head != self.n_head:
                rep = self.n_head // self.n_kv_head
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))  # (B, NH, T, T)
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.n_head * self.hd)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, arch, d_model, d_ff):
        super().__init__()
        self.arch, self.d_ff = arch, d_ff
        if arch == "gpt2":
            self.up = nn.Linear(d_model, d_ff)
            self.down = nn.Linear(d_ff, d_model)
        else:
            self.up = nn.Linear(d_model, 2 * d_ff, bias=False)  # gate | up
            self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        if self.arch == "gpt2":
            return self.down(F.gelu(self.up(x), approximate="tanh"))
        gate, up = self.up(x).split(self.d_ff, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, arch, d_model, n_head, n_kv_head, d_ff, eps):
        super().__init__()
        norm = (lambda: nn.LayerNorm(d_model, eps=eps)) if arch == "gpt2" else (
            lambda: RMSNorm(d_model, eps))
        self.ln1, self.ln2 = norm(), norm()
        self.attn = Attention(arch, d_model, n_head, n_kv_head)
        self.mlp = MLP(arch, d_model, d_ff)

    def forward(self, x, mask, cos, sin):
        x = x + self.attn(self.ln1(x), mask, cos, sin)
        return x + self.mlp(self.ln2(x))


class Model(nn.Module):
    def __init__(self, arch, n_layer, n_head, n_kv_head, d_model, d_ff, vocab, max_seq_len, tied):
        super().__init__()
        self.arch = arch
        eps = 1e-5 if arch == "gpt2" else 1e-6
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(max_seq_len, d_model) if arch == "gpt2" else None
        self.blocks = nn.ModuleList(
            Block(arch, d_model, n_head, n_kv_head, d_ff, eps) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, eps=eps) if arch == "gpt2" else RMSNorm(d_model, eps)
        self.head = None if tied else nn.Linear(d_model, vocab, bias=False)
        mask = torch.triu(torch.ones(max_seq_len, max_seq_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)
        hd = d_model // n_head
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]
        ang = torch.cat((ang, ang), dim=-1)  # (maxT, HD), rotate_half layout
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02
                if name.endswith("proj.weight") or name.endswith("down.weight"):
                    std = 0.02 / math.sqrt(2 * n_layer)
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("weight"):  # norm gains
                nn.init.ones_(p)
            else:  # biases
                nn.init.zeros_(p)

    def forward(self, tokens, targets):
        B, T = tokens.shape
        x = self.wte(tokens)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T))
        cos, sin = self.cos[:T], self.sin[:T]
        for blk in self.blocks:
            x = blk(x, self.mask, cos, sin)
        x = self.ln_f(x)
        w = self.wte.weight if self.head is None else self.head.weight
        logits = F.linear(x, w)  # (B, T, V)
        return F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))


def blas_info():
    """torch's BLAS: the build's BLAS_INFO, the file libblas.so.3 resolves to,
    and the OpenBLAS files mapped into this process after a matmul."""
    a = torch.ones(64, 64)
    a @ a
    cfg = torch.__config__.show()
    info = [tok for tok in cfg.replace(",", " ").split() if tok.startswith("BLAS_INFO")]
    libblas = "/usr/lib/x86_64-linux-gnu/libblas.so.3"
    mapped = []
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "blas" in path and path not in mapped:
                mapped.append(path)
    core = "?"
    try:
        import ctypes
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        lib.openblas_get_config.restype = ctypes.c_char_p
        core = "%s | core %s | %d threads" % (lib.openblas_get_config().decode(),
                                              lib.openblas_get_corename().decode(),
                                              lib.openblas_get_num_threads())
    except OSError:
        pass
    return "%s | libblas.so.3 -> %s | mapped %s | %s" % (
        " ".join(info) or "BLAS_INFO=?", os.path.realpath(libblas), ", ".join(mapped), core)


def serve(step):
    """After READY, one step per "step" line on stdin, answered with
    "STEP total_ms loss"; "quit" or EOF ends. tools/bench/run interleaves
    the two sides' steps so both see the same machine load."""
    print("READY", flush=True)
    for line in sys.stdin:
        if line.startswith("quit"):
            break
        if not line.startswith("step"):
            sys.exit("torch_step: unknown command on stdin: %r" % line)
        t0 = time.perf_counter()
        loss = step()
        print("STEP %.3f %.5f" % (1e3 * (time.perf_counter() - t0), loss), flush=True)
        if not math.isfinite(loss):
            sys.exit("torch_step: loss is %f" % loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--serve", action="store_true",
                    help='one step per "step" line on stdin (for tools/bench/run)')
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, one step under torch.autograd.profiler")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    arch, *shape = PRESETS[args.model]
    model = Model(arch, *shape)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    B, T = args.batch, args.seq
    g = torch.Generator().manual_seed(42)
    data = torch.randint(0, shape[5], (B * T + 1,), generator=g)
    tokens, targets = data[:-1].view(B, T), data[1:].view(B, T)

    def step():
        opt.zero_grad()
        loss = model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    blas = blas_info()
    print("torch %s %s: %d parameters, B=%d T=%d, %s, %d threads"
          % (torch.__version__, args.model, n_params, B, T,
             "steps on request" if args.serve else
             "%d warm-up + %d timed steps" % (args.warmup, args.steps), torch.get_num_threads()))
    print("BLAS: " + blas)
    if args.serve:
        serve(step)
        return
    times = []
    for k in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        print("  step %d%s: %.1f ms loss %.4f"
              % (k + 1, " (warm-up)" if k < args.warmup else "", 1e3 * dt, loss))
        if k >= args.warmup:
            times.append(dt)
        if not math.isfinite(loss):
            sys.exit("torch_step: loss is %f at step %d" % (loss, k + 1))
    med = statistics.median(times)
    print("median %.1f ms/step, %.1f tokens/s" % (1e3 * med, B * T / med))
    if args.profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    print("RESULT " + json.dumps({
        "side": "torch", "model": args.model, "params": n_params, "B": B, "T": T,
        "warmup": args.warmup, "steps": args.steps, "median_ms": 1e3 * med,
        "tokens_per_s": B * T / med, "loss": loss, "blas": blas}))


if __name__ == "__main__":
    main()
