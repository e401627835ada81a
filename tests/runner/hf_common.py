"""What the HF parity tests share (test_hf_parity.py on the .venv's
transformers 4.40, test_hf_arch.py on .venv-hf's 4.51): random weights,
running hf_driver, reading its float32 output, and the logit comparison.
Imports torch only: each test imports its own transformers."""
import subprocess
import sys

import torch

# fp32 on both sides differs by summation order only: max abs diff /
# max|logit| measured at most 7.0e-7 over the 28 cases (import llama31:
# 5.2e-6 at max|logit| 6.2; AMD EPYC, 2026-12-08), so 3e-6 (4.3x); a layout
# error is O(max|logit|).
REL_TOL = 3e-6


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


def run_driver(driver, *args):
    r = subprocess.run([driver, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"hf_driver {args[0]} failed ({r.returncode}): {r.stderr}"
    return r.stdout


def read_f32(path, n):
    """n float32 values from a file hf_driver wrote, as a flat tensor."""
    with open(path, "rb") as f:
        t = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
    assert t.numel() == n, f"{path}: {t.numel()} floats, expected {n}"
    return t


def hf_logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def compare_logits(name, ref, got):
    assert ref.shape == got.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    scale = max(1.0, ref.abs().max().item())
    diff = (ref - got).abs().max().item()
    rel = ((ref - got).norm() / ref.norm()).item()
    print(f"{name}: max |logit| {scale:.3f}, max abs diff {diff:.3e} (tolerance "
          f"{REL_TOL * scale:.3e}), relative {rel:.3e}")
    assert scale > 1.0, f"{name}: logits too small to be a meaningful comparison"
    assert torch.isfinite(got).all(), f"{name}: dapt logits not finite"
    assert diff <= REL_TOL * scale, f"{name}: dapt and transformers differ by {diff:.3e}"


def main(cases, transformers):
    """python test_hf_*.py CASE HF_DRIVER: runs one case of cases."""
    if len(sys.argv) != 3 or sys.argv[1] not in cases:
        raise SystemExit(f"usage: {sys.argv[0]} CASE HF_DRIVER; cases: {' '.join(cases)}")
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    cases[sys.argv[1]](sys.argv[2])
    print("1 passed, 0 failed")
