"""`dapt eval` against an independent oracle: the same scores computed with
Hugging Face transformers (model) and tokenizers (tokenization) on a tiny
random model saved as an HF directory with a byte-level BPE tokenizer.

The oracle restates docs/eval.md's rules in Python (the harness's
context/continuation split, the start token, the left cut to max_seq_len,
lm-eval's rolling windows for perplexity, the few-shot choice) and checks,
per item and choice, dapt's log-likelihoods and token counts, its
predictions, and each task's acc, acc_norm, loss and bits per byte. The
task file is generated here with contexts longer than the model's 64
positions (the left cut) and a perplexity text of several windows.

usage: test_eval_hf.py CASE DAPT   (CASE: llama | gpt2)
"""
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gguf"))
from gguf_common import corpus_lines, make_bpe_tokenizer, make_model  # noqa: E402

# Log-likelihoods are sums of up to 64 token log-probabilities computed in
# fp32 on both sides, differing by summation order only: the worst
# |dapt - transformers| per choice measured was 1.9e-5 (llama) and 8.5e-6
# (gpt2) on sums of magnitude ~10-120 (2026-12-08, this file's items), so
# 1e-4 (5x); a wrong token, a shifted target or a lost context token moves a
# sum by O(1). The perplexity means (over ~950 tokens) were off by 1e-7.
LL_TOL = 1e-4

L = 64  # the models' max_position_embeddings (gguf_common.make_model)


def rolling_windows(tokens, prefix, max_len):
    """lm-eval's get_rolling_token_windows with context_len 1, restated:
    (input, predicted) pairs covering every token once."""
    pred_len = max_len
    first = min(max_len, len(tokens))
    yield [prefix] + tokens[:first - 1], tokens[:first]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, pred_len)
        end = done + n
        yield tokens[max(0, end - max_len - 1):end - 1], tokens[end - n:end]
        done += n


def make_tasks(path):
    rng = random.Random(7)
    words = " ".join(corpus_lines(200)).split()
    lines = []
    for i in range(12):
        n_ctx = rng.choice([3, 8, 20, 70])  # 70 words: past 64 tokens, cut from the left
        ctx = " ".join(rng.choice(words) for _ in range(n_ctx))
        if i % 4 == 1:
            ctx += " "  # trailing space: moved onto the choice
        choices = [(" " if not ctx.endswith(" ") else "") +
                   " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
                   for _ in range(rng.randint(2, 4))]
        lines.append({"task": "cloze", "context": ctx, "choices": choices,
                      "answer": rng.randrange(len(choices))})
    for i in range(3):
        n = [5, 40, 150][i]  # 150 words: several windows of 64
        lines.append({"task": "ppl", "type": "perplexity",
                      "text": " ".join(rng.choice(words) for _ in range(n))})
    with open(path, "w") as f:
        for obj in lines:
            f.write(json.dumps(obj) + "\n")
    return lines


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("llama", "gpt2"):
        raise SystemExit(f"usage: {sys.argv[0]} llama|gpt2 DAPT")
    case, dapt = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    from tokenizers import Tokenizer
    tmp = tempfile.mkdtemp(prefix="dapt_eval_hf_")
    mdir = os.path.join(tmp, "model")
    make_bpe_tokenizer(mdir, "llama-bpe" if case == "llama" else "gpt-2")
    model = make_model("llama" if case == "llama" else "gpt2", mdir)
    tok = Tokenizer.from_file(os.path.join(mdir, "tokenizer.json"))
    with open(os.path.join(mdir, "tokenizer_config.json")) as f:
        tcfg = json.load(f)
    start = tok.token_to_id(tcfg.get("bos_token") or tcfg["eos_token"])
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731

    def logprobs(inp):
        with torch.no_grad():
            out = model(torch.tensor([inp])).logits[0].double()
        return torch.log_softmax(out, dim=-1)

    def loglik(context, choice):
        n_sp = len(context) - len(context.rstrip())
        if n_sp:
            choice, context = context[-n_sp:] + choice, context[:-n_sp]
        whole, ctx = enc(context + choice), enc(context)
        cont = whole[len(ctx):]
        full = [start] + whole
        inp = full[-(L + 1):][:-1]
        lp = logprobs(inp)
        n = len(cont)
        return sum(lp[len(inp) - n + i, cont[i]].item() for i in range(n)), n

    items = make_tasks(os.path.join(tmp, "tasks.jsonl"))
    mc = [it for it in items if "choices" in it]
    ppl = [it for it in items if it.get("type") == "perplexity"]
    worst = worst_ppl = 0.0
    for shots in (0, 2):
        out = os.path.join(tmp, f"results{shots}.json")
        r = subprocess.run([dapt, "eval", mdir, "--tasks", os.path.join(tmp, "tasks.jsonl"),
                            "--shots", str(shots), "--out", out], capture_output=True, text=True)
        assert r.returncode == 0, f"dapt eval failed ({r.returncode}): {r.stderr}"
        print(r.stdout, end="")
        with open(out) as f:
            res = json.load(f)
        got_items = [it for it in res["items"] if it["task"] == "cloze"]
        assert len(got_items) == len(mc), f"{len(got_items)} cloze items, expected {len(mc)}"
        hits = hits_norm = 0
        for k, (it, got) in enumerate(zip(mc, got_items)):
            # the few-shot prefix: the `shots` items after k, cyclically
            prefix = "".join(mc[(k + 1 + j) % len(mc)]["context"] +
                             mc[(k + 1 + j) % len(mc)]["choices"][mc[(k + 1 + j) % len(mc)]["answer"]]
                             + "\n\n" for j in range(shots))
            ref = [loglik(prefix + it["context"], c) for c in it["choices"]]
            for c, ((ll, n), gll, gn) in enumerate(zip(ref, got["loglik"], got["n_tokens"])):
                assert gn == n, f"{shots}-shot item {k} choice {c}: {gn} tokens, oracle {n}"
                worst = max(worst, abs(gll - ll))
                assert abs(gll - ll) <= LL_TOL, \
                    f"{shots}-shot item {k} choice {c}: loglik {gll:.6f}, oracle {ll:.6f}"
            pred = max(range(len(ref)), key=lambda c: ref[c][0])
            pred_norm = max(range(len(ref)),
                            key=lambda c: ref[c][0] / len(it["choices"][c].encode()))
            assert got["pred"] == pred and got["pred_norm"] == pred_norm, \
                f"{shots}-shot item {k}: pred {got['pred']}/{got['pred_norm']}, oracle {pred}/{pred_norm}"
            hits += pred == it["answer"]
            hits_norm += pred_norm == it["answer"]
        t = res["tasks"]["cloze"]
        assert t["acc"] == hits / len(mc) and t["acc_norm"] == hits_norm / len(mc), \
            f"{shots}-shot: acc {t['acc']}/{t['acc_norm']}, oracle {hits / len(mc)}/{hits_norm / len(mc)}"
        assert any(g["truncated"] for g in got_items), "no context reached the left cut"
        # perplexity: every token of each text once, in lm-eval's windows
        loss = n_tok = n_bytes = 0
        for it in ppl:
            toks = enc(it["text"])
            for inp, pred in rolling_windows(toks, start, L):
                lp = logprobs(inp)
                off = len(inp) - len(pred)
                loss -= sum(lp[off + i, pred[i]].item() for i in range(len(pred)))
            n_tok += len(toks)
            n_bytes += len(it["text"].encode())
        assert n_tok > 2 * L, "the perplexity texts should span several windows"
        t = res["tasks"]["ppl"]
        assert t["n_tokens"] == n_tok and t["n_bytes"] == n_bytes, \
            f"ppl: {t['n_tokens']} tokens / {t['n_bytes']} bytes, oracle {n_tok} / {n_bytes}"
        assert abs(t["loss"] - loss / n_tok) <= LL_TOL, f"ppl loss {t['loss']}, oracle {loss / n_tok}"
        bpb = loss / (math.log(2) * n_bytes)
        assert abs(t["bits_per_byte"] - bpb) <= LL_TOL, f"bits/byte {t['bits_per_byte']}, oracle {bpb}"
        worst_ppl = max(worst_ppl, abs(t["loss"] * n_tok - loss))
        print(f"{shots}-shot: acc {t and res['tasks']['cloze']['acc']:.4f} "
              f"acc_norm {res['tasks']['cloze']['acc_norm']:.4f}, ppl loss {loss / n_tok:.5f}")
    print(f"{case}: worst |loglik - oracle| {worst:.3e} (tolerance {LL_TOL:.0e}); perplexity "
          f"loss sum over {n_tok} tokens off by {worst_ppl:.3e}")
    shutil.rmtree(tmp)  # kept when an assertion failed
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
