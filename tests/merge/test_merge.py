"""`dapt merge` against independent statements of each method.

Usage: test_merge.py DAPT EXPECT_SH CASE, CASE one of
  linear task_arithmetic ties dare della config layers gguf logits moe refusals

Random small Llama models from transformers (a base, and "fine-tuned" models
= base + N(0, 0.05) so the task vectors are small against the weights, as
in practice) are merged by dapt; the expectation is computed here in
float64 NumPy from the papers' definitions, not from dapt's code:
  linear           sum w_k m_k / sum w_k
  task_arithmetic  b + lambda sum w_k tau_k             (Ilharco et al. 2023)
  ties             trim each tau_k to its top-k magnitudes (k = round(d n)),
                   elect gamma = sign(sum w_k trimmed_k), disjoint (w-weighted)
                   mean of the entries agreeing with gamma (Yadav et al. 2023)
  dare             keep with probability d, rescale by 1/d (Yu et al. 2024)
  della            rank by magnitude, keep probability d - eps/2 + eps r/(n-1),
                   rescale by 1/keep (Deep et al. 2024)
dare and della are checked statistically (drop rate; the sum of |tau|, which
sum tau'_j sign(tau_j) equals in expectation, preserved within 5 sigma) and exactly: the kept entries are recovered from
the output (a single model, combine linear: an entry is kept iff its delta
is nonzero) and each must equal tau/keep_probability; and, with docs/merge.md's
RNG reimplemented here, the whole two-model ties combination is exact.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "runner"))
from hf_common import compare_logits, hf_logits, randomize  # noqa: E402

DAPT, EXPECT = sys.argv[1], sys.argv[2]

# float32 output of float64-exact math: tau_k and the result are rounded to
# float32 (2^-24 relative each) and the sums run in double, so an entry is
# off by a few ulps of max(|b|, |m|) <= ~1; 2e-6 is ~30 ulps at 1.0. A wrong
# selection, sign or scale moves an entry by O(|tau|) ~ 0.05.
ATOL = 2e-6

CFG = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
           tie_word_embeddings=False)
TOKENIZER_TEXT = '{"model": "a stand-in tokenizer file, compared byte for byte"}\n'


def save(model, d, tokenizer_text=TOKENIZER_TEXT, tokenizer_dir=None):
    model.save_pretrained(d, safe_serialization=True)
    if tokenizer_dir:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(tokenizer_dir, f), d)
        return d
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write(tokenizer_text)
    return d


def make_models(tmp, n, seed=0, cfg=CFG, tokenizer_dir=None):
    """base and n models base + N(0, 0.05); their directories and tensors."""
    torch.manual_seed(seed)
    base = randomize(LlamaForCausalLM(LlamaConfig(**cfg)), seed)
    dirs = [save(base, os.path.join(tmp, "base"), tokenizer_dir=tokenizer_dir)]
    g = torch.Generator().manual_seed(seed + 1)
    for k in range(n):
        m = LlamaForCausalLM(LlamaConfig(**cfg))
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        dirs.append(save(m, os.path.join(tmp, f"m{k}"), tokenizer_dir=tokenizer_dir))
    tensors = [{k: v.astype(np.float64) for k, v in load_file(
        os.path.join(d, "model.safetensors")).items()} for d in dirs]
    return dirs, tensors


def merge(out, models, *args, threads=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    r = subprocess.run([DAPT, "merge", out, *models, "--quiet", *map(str, args)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"dapt merge {args} failed ({r.returncode}): {r.stderr}"
    return {k: v.astype(np.float64) for k, v in load_file(
        os.path.join(out, "model.safetensors")).items()}


def compare(name, got, want):
    assert set(got) == set(want), f"{name}: tensors {sorted(set(got) ^ set(want))} differ"
    worst = 0.0
    for k in want:
        assert got[k].shape == want[k].shape, f"{name}: {k} shape {got[k].shape}"
        worst = max(worst, float(np.abs(got[k] - want[k]).max()))
    print(f"{name}: max abs diff {worst:.3e} (tolerance {ATOL:.0e})")
    assert worst <= ATOL, f"{name}: dapt differs from the reference by {worst:.3e}"


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def ties_trim(t, density):
    k = int(np.floor(density * t.size + 0.5))
    flat = t.ravel()
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-np.abs(flat), kind="stable")[:k]] = True
    return np.where(keep, flat, 0.0).reshape(t.shape)


def ties_combine(taus, w):
    s = sum(wk * t for wk, t in zip(w, taus))
    gamma = np.sign(s)
    num = sum(wk * np.where((np.sign(t) == gamma) & (t != 0), t, 0.0) for wk, t in zip(w, taus))
    den = sum(wk * ((np.sign(t) == gamma) & (t != 0)) for wk, t in zip(w, taus))
    return np.where(den != 0, num / np.where(den != 0, den, 1), 0.0)


# docs/merge.md's RNG: u_j = splitmix64 output j of the stream starting at
# seed ^ fnv1a64(name) ^ ((k + 1) * 0xD1B54A32D192ED03), >> 11, * 2^-53
M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xcbf29ce484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001b3) & M64
    return h


def uniforms(seed, name, k, n):
    key = (seed ^ fnv1a64(name) ^ (((k + 1) * 0xD1B54A32D192ED03) & M64)) & M64
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(
            0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def della_keep_prob(t, density, eps):
    """keep probability of each entry: rank 0 = smallest magnitude (ties by index)"""
    flat = np.abs(t.ravel())
    n = flat.size
    r = np.empty(n)
    r[np.argsort(flat, kind="stable")] = np.arange(n)
    q = density - eps / 2 + eps * r / (n - 1) if n > 1 else np.full(n, density)
    return q.reshape(t.shape)


def check_drops(name, base, m, got, keep_prob, lam):
    """a single model, combine linear: got - b = lam * tau * kept / keep_prob"""
    n = kept = 0
    sum_tau = sum_new = var = 0.0
    worst = 0.0
    for k in base:
        tau = m[k] - base[k]
        delta = got[k] - base[k]
        q = keep_prob(k, tau)
        mask = delta != 0
        want = np.where(mask, lam * tau / q, 0.0)
        worst = max(worst, float(np.abs(delta - want).max()))
        n += tau.size
        kept += int(mask.sum())
        # E[tau' sign(tau)] = |tau|: the rescale keeps each entry's mean
        sum_tau += float(np.abs(tau).sum())
        sum_new += float((delta / lam * np.sign(tau)).sum())
        var += float((tau ** 2 * (1 - q) / q).sum())
    print(f"{name}: kept entries reproduce lam*tau/q within {worst:.3e}")
    assert worst <= ATOL, f"{name}: a kept entry is not lam*tau/keep_prob ({worst:.3e})"
    return n, kept, sum_tau, sum_new, var


def case_linear(tmp):
    dirs, t = make_models(tmp, 3)
    w = [0.5, 1.0, 2.5]
    got = merge(os.path.join(tmp, "out"), dirs[1:], "--method", "linear",
                "--weights", ",".join(map(str, w)))
    want = {k: sum(wk * tk[k] for wk, tk in zip(w, t[1:])) / sum(w) for k in t[0]}
    compare("linear", got, want)


def case_task_arithmetic(tmp):
    dirs, t = make_models(tmp, 2)
    w, lam = [1.0, 0.5], 0.8
    got = merge(os.path.join(tmp, "out"), dirs[1:], "--method", "task_arithmetic", "--base",
                dirs[0], "--weights", "1,0.5", "--lambda", lam)
    b = t[0]
    want = {k: b[k] + lam * sum(wk * (tk[k] - b[k]) for wk, tk in zip(w, t[1:])) for k in b}
    compare("task_arithmetic", got, want)


def case_ties(tmp):
    dirs, t = make_models(tmp, 3)
    w, d, lam = [1.0, 0.7, 1.3], [0.2, 0.5, 0.9], 1.2
    got = merge(os.path.join(tmp, "out"), dirs[1:], "--method", "ties", "--base", dirs[0],
                "--weights", "1,0.7,1.3", "--density", "0.2,0.5,0.9", "--lambda", lam)
    b = t[0]
    want = {}
    for k in b:
        taus = [ties_trim(tk[k] - b[k], dk) for tk, dk in zip(t[1:], d)]
        want[k] = b[k] + lam * ties_combine(taus, w)
    compare("ties", got, want)
    # the trim matters: without it the result differs far beyond the tolerance
    untrimmed = {k: b[k] + lam * ties_combine([tk[k] - b[k] for tk in t[1:]], w) for k in b}
    off = max(float(np.abs(got[k] - untrimmed[k]).max()) for k in b)
    assert off > 100 * ATOL, f"ties: trimming changed nothing ({off:.3e})"


def statistics(name, n, kept, density, sum_tau, sum_new, var):
    rate = 1 - kept / n
    # binomial: 5 standard deviations of the drop rate, of the sum's change
    bound = 5 * np.sqrt(density * (1 - density) / n)
    print(f"{name}: drop rate {rate:.4f} over {n} entries (expected {1 - density:.4f} "
          f"+- {bound:.4f}); sum |tau| {sum_tau:.4f}, sum tau' sign(tau) -> {sum_new:.4f} "
          f"(+- {5 * np.sqrt(var):.4f})")
    assert abs(rate - (1 - density)) <= bound, f"{name}: drop rate {rate}"
    assert abs(sum_new - sum_tau) <= 5 * np.sqrt(var), f"{name}: rescaled sum not preserved"


def case_dare(tmp):
    dirs, t = make_models(tmp, 2)
    d, lam, seed = 0.3, 0.9, 1234
    got = merge(os.path.join(tmp, "one"), dirs[1:2], "--method", "dare", "--base", dirs[0],
                "--density", d, "--lambda", lam, "--seed", seed)
    n, kept, s0, s1, var = check_drops("dare", t[0], t[1], got,
                                       lambda k, tau: np.full(tau.shape, d), lam)
    statistics("dare", n, kept, d, s0, s1, var)
    # another seed drops other entries
    got2 = merge(os.path.join(tmp, "two"), dirs[1:2], "--method", "dare", "--base", dirs[0],
                 "--density", d, "--lambda", lam, "--seed", seed + 1)
    same = np.mean([np.mean((got[k] != t[0][k]) == (got2[k] != t[0][k])) for k in got])
    assert same < 0.9, f"dare: seeds {seed} and {seed + 1} keep the same entries ({same})"
    # two models, combine ties, exact with the documented RNG; the same
    # bytes on 1 and 3 threads
    dd = [0.3, 0.6]
    args = ("--method", "dare", "--combine", "ties", "--base", dirs[0], "--density", "0.3,0.6",
            "--seed", seed)
    got = merge(os.path.join(tmp, "ties"), dirs[1:], *args, threads=1)
    merge(os.path.join(tmp, "ties3"), dirs[1:], *args, threads=3)
    assert same_bytes(os.path.join(tmp, "ties", "model.safetensors"),
                      os.path.join(tmp, "ties3", "model.safetensors")), "dare: threads matter"
    want = {}
    for k in t[0]:
        taus = []
        for j, (tk, dk) in enumerate(zip(t[1:], dd)):
            tau = tk[k] - t[0][k]
            u = uniforms(seed, k, j, tau.size).reshape(tau.shape)
            taus.append(np.where(u < dk, tau / dk, 0.0))
        want[k] = t[0][k] + ties_combine(taus, [1.0, 1.0])
    compare("dare+ties (documented RNG)", got, want)


def case_della(tmp):
    dirs, t = make_models(tmp, 2)
    d, eps, lam, seed = 0.4, 0.3, 1.0, 7
    got = merge(os.path.join(tmp, "one"), dirs[1:2], "--method", "della", "--combine", "linear",
                "--base", dirs[0], "--density", d, "--epsilon", eps, "--seed", seed)
    n, kept, s0, s1, var = check_drops("della", t[0], t[1], got,
                                       lambda k, tau: della_keep_prob(tau, d, eps), lam)
    statistics("della", n, kept, d, s0, s1, var)
    # magnitude matters: the top quarter by |tau| is kept more than the bottom
    top = bottom = 0.0
    for k in t[0]:
        tau = (t[1][k] - t[0][k]).ravel()
        order = np.argsort(np.abs(tau), kind="stable")
        q = order.size // 4
        kept_mask = (got[k] - t[0][k]).ravel() != 0
        bottom += kept_mask[order[:q]].mean()
        top += kept_mask[order[-q:]].mean()
    top, bottom = top / len(t[0]), bottom / len(t[0])
    print(f"della: keep rate bottom quarter {bottom:.3f}, top quarter {top:.3f}")
    assert top - bottom > eps / 2, "della: keep rate does not grow with magnitude"
    # two models, default combine (ties), exact with the documented RNG
    got = merge(os.path.join(tmp, "ties"), dirs[1:], "--method", "della", "--base", dirs[0],
                "--density", d, "--epsilon", eps, "--seed", seed)
    want = {}
    for k in t[0]:
        taus = []
        for j, tk in enumerate(t[1:]):
            tau = tk[k] - t[0][k]
            q = della_keep_prob(tau, d, eps)
            u = uniforms(seed, k, j, tau.size).reshape(tau.shape)
            taus.append(np.where(u < q, tau / q, 0.0))
        want[k] = t[0][k] + ties_combine(taus, [1.0, 1.0])
    compare("della+ties (documented RNG)", got, want)


def case_config(tmp):
    """MERGE.toml gives what the flags give, byte for byte; its errors name
    the file, line and key"""
    dirs, t = make_models(tmp, 2)
    merge(os.path.join(tmp, "flags"), dirs[1:], "--method", "della", "--base", dirs[0],
          "--weights", "1,0.5", "--density", "0.5,0.7", "--lambda", "0.9", "--epsilon", "0.2",
          "--seed", 11)
    cfg = os.path.join(tmp, "merge.toml")
    with open(cfg, "w") as f:
        f.write(f"""# della of two models
[merge]
method = "della"
base = "{dirs[0]}"
out = "{tmp}/config"
lambda = 0.9
epsilon = 0.2
seed = 11
density = 0.5   # the default

[[model]]
path = "{dirs[1]}"

[[model]]
path = "{dirs[2]}"
weight = 0.5
density = 0.7
""")
    r = subprocess.run([DAPT, "merge", cfg, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert same_bytes(os.path.join(tmp, "flags", "model.safetensors"),
                      os.path.join(tmp, "config", "model.safetensors")), "config != flags"
    print("config: the same model.safetensors as the flags")
    with open(cfg, "a") as f:
        f.write("densty = 0.3\n")
    r = subprocess.run([EXPECT, "1", "merge.toml:18: densty: unknown key in \\[\\[model\\]\\]",
                        DAPT, "merge", cfg, "--force"], capture_output=True, text=True)
    print(r.stdout.strip())
    assert r.returncode == 0, r.stdout


def case_layers(tmp):
    """[[model]] layer_weights / layer_densities: layer l's tensors take
    their own weight and density, the rest the model's (ties)"""
    dirs, t = make_models(tmp, 2)
    cfg = os.path.join(tmp, "merge.toml")
    with open(cfg, "w") as f:
        f.write(f"""[merge]
method = "ties"
base = "{dirs[0]}"
out = "{tmp}/out"
lambda = 1.1

[[model]]
path = "{dirs[1]}"
weight = 1.0
density = 0.6
layer_weights = [0.2, 1.5]
layer_densities = [0.3, 0.9]

[[model]]
path = "{dirs[2]}"
weight = 0.5
density = 0.4
layer_weights = [1.0, 0.1]
""")
    r = subprocess.run([DAPT, "merge", cfg, "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = {k: v.astype(np.float64) for k, v in load_file(
        os.path.join(tmp, "out", "model.safetensors")).items()}
    b, want = t[0], {}
    for k in b:
        m = re.match(r"model\.layers\.(\d+)\.", k)
        if m:
            li = int(m.group(1))
            w, d = [[0.2, 1.5][li], [1.0, 0.1][li]], [[0.3, 0.9][li], 0.4]
        else:
            w, d = [1.0, 0.5], [0.6, 0.4]
        taus = [ties_trim(tk[k] - b[k], dk) for tk, dk in zip(t[1:], d)]
        want[k] = b[k] + 1.1 * ties_combine(taus, w)
    compare("ties, per-layer weights and densities", got, want)
    with open(cfg, "a") as f:
        f.write("layer_densities = [0.5, 0.5, 0.5]\n")
    r = subprocess.run([EXPECT, "1", "model 2: 3 per-layer values for 2 layers", DAPT, "merge",
                        cfg, "--force"], capture_output=True, text=True)
    print(r.stdout.strip())
    assert r.returncode == 0, r.stdout


def case_gguf(tmp):
    """GGUF inputs are imported and merged like directories: ties of two
    models given as GGUF f32 files equals ties of the same models given as
    HF directories (the import is exact for f32), and the staging
    directories are gone afterwards"""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "gguf"))
    from gguf_common import make_bpe_tokenizer
    from tokenizers import Tokenizer
    tok = make_bpe_tokenizer(os.path.join(tmp, "tok"), "llama-bpe", vocab_size=310)
    n_vocab = Tokenizer.from_file(os.path.join(tok, "tokenizer.json")).get_vocab_size(True)
    dirs, t = make_models(tmp, 2, cfg=dict(CFG, vocab_size=n_vocab), tokenizer_dir=tok)
    ggufs = []
    for d in dirs:
        r = subprocess.run([DAPT, "export", "gguf", d, d + ".gguf"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        ggufs.append(d + ".gguf")
    args = ("--method", "ties", "--density", "0.4")
    want = merge(os.path.join(tmp, "hf"), dirs[1:], "--base", dirs[0], *args)
    out = os.path.join(tmp, "gg")
    got = merge(out, ggufs[1:], "--base", ggufs[0], *args)
    compare("ties of GGUF inputs vs HF inputs", got, want)
    left = [f for f in os.listdir(out) if f.startswith(".gguf-input")]
    assert not left, f"staging directories left: {left}"


def case_logits(tmp):
    """the merged directory loads in transformers (weights exactly the file's)
    and `dapt logits` on it equals transformers' logits"""
    dirs, t = make_models(tmp, 2)
    out = os.path.join(tmp, "out")
    got = merge(out, dirs[1:], "--method", "ties", "--base", dirs[0], "--density", "0.5")
    model = LlamaForCausalLM.from_pretrained(out)
    sd = model.state_dict()
    for k, v in got.items():
        assert np.array_equal(sd[k].numpy().astype(np.float64), v), f"{k} not loaded as written"
    for f in ("tokenizer.json", "config.json"):
        assert os.path.exists(os.path.join(out, f)), f"{f} not copied"
    ids = [1, 5, 17, 42, 95, 3, 60, 8]
    ref = hf_logits(model, ids)
    lpath = os.path.join(tmp, "logits.f32")
    subprocess.run([DAPT, "logits", out, "--ids", ",".join(map(str, ids)), "--out", lpath],
                   check=True, capture_output=True)
    dl = torch.from_numpy(np.fromfile(lpath, dtype="<f4").reshape(len(ids), -1))
    compare_logits("merged model", ref, dl)


def case_moe(tmp):
    """moe: each model's FFN an expert bit for bit, shared tensors the mean
    (or the base's), routers N(0, 0.02); the result is a Mixtral that
    transformers loads and `dapt logits` agrees with"""
    from transformers import MixtralForCausalLM
    dirs, t = make_models(tmp, 3)
    out = os.path.join(tmp, "moe")
    got = merge(out, dirs[1:], "--method", "moe", "--base", dirs[0], "--top-k", 2,
                "--weights", "1,2,1", "--seed", 5)
    L, C, E = CFG["num_hidden_layers"], CFG["hidden_size"], 3
    want = {}
    for k in t[0]:
        parts = k.split(".")
        if ".mlp." in k:
            which = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}[parts[4]]
            for e in range(E):
                want[f"model.layers.{parts[2]}.block_sparse_moe.experts.{e}.{which}.weight"] = \
                    t[1 + e][k]
        else:
            want[k] = (t[1][k] + 2 * t[2][k] + t[3][k]) / 4
    routers = {f"model.layers.{l}.block_sparse_moe.gate.weight" for l in range(L)}
    compare("moe (experts, shared mean)", {k: v for k, v in got.items() if k not in routers},
            want)
    r = np.concatenate([got[k].ravel() for k in sorted(routers)])
    assert all(got[k].shape == (E, C) for k in routers), "router shape"
    # the sample std of n normals is within 5 * 0.02 / sqrt(2n) of 0.02
    band = 5 * 0.02 / np.sqrt(2 * r.size)
    print(f"moe: router std {r.std():.5f} over {r.size} entries (0.02 +- {band:.5f}), "
          f"mean {r.mean():.5f}")
    assert abs(r.std() - 0.02) <= band and abs(r.mean()) <= 5 * 0.02 / np.sqrt(r.size)
    assert not np.array_equal(got[sorted(routers)[0]], got[sorted(routers)[1]]), "routers equal"
    model = MixtralForCausalLM.from_pretrained(out)
    assert model.config.num_local_experts == E and model.config.num_experts_per_tok == 2
    sd = model.state_dict()
    for k, v in got.items():
        assert np.array_equal(sd[k].numpy().astype(np.float64), v), f"{k} not loaded as written"
    ids = [1, 5, 17, 42, 95, 3, 60, 8]
    lpath = os.path.join(tmp, "logits.f32")
    subprocess.run([DAPT, "logits", out, "--ids", ",".join(map(str, ids)), "--out", lpath],
                   check=True, capture_output=True)
    dl = torch.from_numpy(np.fromfile(lpath, dtype="<f4").reshape(len(ids), -1))
    compare_logits("moe merged model", hf_logits(model, ids), dl)
    # shared from the base
    got = merge(os.path.join(tmp, "moe_base"), dirs[1:], "--method", "moe", "--base", dirs[0],
                "--shared", "base")
    compare("moe (shared base)", {k: got[k] for k in t[0] if ".mlp." not in k},
            {k: v for k, v in t[0].items() if ".mlp." not in k})
    expect(1, "moe: top_k 4 is not in \\[1, 3 models\\]", os.path.join(tmp, "x"), *dirs[1:],
           "--method", "moe", "--top-k", 4)


def expect(status, regex, *args):
    r = subprocess.run([EXPECT, str(status), regex, DAPT, "merge", *map(str, args)],
                       capture_output=True, text=True)
    print(r.stdout.strip())
    assert r.returncode == 0, f"refusal {args}: {r.stdout} {r.stderr}"


def case_refusals(tmp):
    dirs, t = make_models(tmp, 1)
    out = os.path.join(tmp, "out")
    open(os.path.join(tmp, "merge.txt"), "w").write("not a model\n")
    # another vocabulary (an extension), another width
    for key, val, name in (("vocab_size", 128, "vocab"), ("intermediate_size", 96, "ffn")):
        cfg = dict(CFG, **{key: val})
        save(randomize(LlamaForCausalLM(LlamaConfig(**cfg)), 3), os.path.join(tmp, name))
        expect(1, f"{name}/config.json: {key} is {val}, but {CFG[key]} in .*base/config.json",
               out, os.path.join(tmp, name), "--method", "task_arithmetic", "--base", dirs[0])
    # another tokenizer file
    m = LlamaForCausalLM.from_pretrained(dirs[1])
    save(m, os.path.join(tmp, "tok"), tokenizer_text='{"model": "another"}\n')
    expect(1, "tok/tokenizer.json differs from .*base/tokenizer.json", out,
           os.path.join(tmp, "tok"), "--method", "ties", "--base", dirs[0])
    # a tensor missing (same config)
    sd = load_file(os.path.join(dirs[1], "model.safetensors"))
    os.makedirs(os.path.join(tmp, "miss"))
    for f in ("config.json", "tokenizer.json"):
        with open(os.path.join(dirs[1], f)) as a, open(os.path.join(tmp, "miss", f), "w") as b:
            b.write(a.read())
    from safetensors.numpy import save_file
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, os.path.join(tmp, "miss", "model.safetensors"), metadata={"format": "pt"})
    expect(1, "miss has no tensor model.layers.1.mlp.up_proj.weight", out,
           os.path.join(tmp, "miss"), "--method", "dare", "--base", dirs[0])
    # a truncated GGUF (its import fails; no staging directory is left),
    # another file, parameters out of range, the output among the inputs
    gguf = os.path.join(tmp, "x.gguf")
    open(gguf, "wb").write(b"GGUF")
    expect(1, "x.gguf: importing it for the merge: .*x.gguf: byte offset", out, gguf, "--method",
           "task_arithmetic", "--base", dirs[0])
    assert not [f for f in os.listdir(out) if f.startswith(".gguf")], "staging left behind"
    expect(1, "merge.txt: not a model directory", out, os.path.join(tmp, "merge.txt"),
           "--method", "task_arithmetic", "--base", dirs[0])
    expect(1, "density 1.5 of model 1 is not in \\(0, 1\\]", out, dirs[1], "--method", "ties",
           "--base", dirs[0], "--density", "1.5")
    expect(1, "della: density 0.1 \\+- epsilon/2 \\(0.1\\) of model 1 leaves \\(0, 1\\]", out,
           dirs[1], "--method", "della", "--base", dirs[0], "--density", "0.1", "--epsilon", "0.2")
    expect(1, "task_arithmetic needs a base model", out, dirs[1], "--method", "task_arithmetic")
    expect(1, "the output is one of the inputs", dirs[1], dirs[1], "--method", "task_arithmetic",
           "--base", dirs[0], "--force")
    assert not os.path.exists(out + "/model.safetensors"), "a refused merge wrote weights"


CASES = {f.__name__[5:]: f for f in (case_linear, case_task_arithmetic, case_ties, case_dare,
                                      case_della, case_config, case_layers, case_gguf, case_logits,
                                      case_moe, case_refusals)}

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        CASES[sys.argv[3]](tmp)
    print("ok")
