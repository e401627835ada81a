"""docs_walk.py DAPT REPO: the example commands of README.md ("A typical CPT
run") and docs/data.md ("Llama 3.x end to end"), taken from the markdown
and run as a new user would, in an empty directory, without a GPU.

The commands run as written: only the program is located (`dapt` is the
built binary, `tools/...` the repository's) and a trailing `# comment` is
dropped. What the docs name but do not show is made here, small:
  README   `base` (an HF directory: config.json, model.safetensors,
           tokenizer.json of a byte-level BPE), `med/*.jsonl.gz` and
           `web/*.jsonl.zst` (the repository's docs and Debian's licence
           texts as JSONL), `my.toml` (a 10,000-step run "my-run" of a 1-layer
           model at seq_len 16, so the export's step-00010000 exists);
           `dapt train my.toml` is stopped by SIGINT ("an interruption")
           before `--resume` finishes it
  data.md  `Llama-3.2-1B` (the same kind of directory with max_seq_len
           4096), `med/`, `web/`; cpt.toml is the doc's block as written plus
           the [run], [train], [eval] and [ckpt] keys the doc leaves out (2
           steps); the doc's placeholders runs/NAME/ckpt/step-00010000 become
           that run's name and last step
Each command must exit 0 and leave what it says it writes (shards under a
`shards/` that did not exist, plots, the .gguf). Then export, import and
logits write into directories that do not exist yet. Fewer commands than the
docs hold today fails too, so a rewrite of those sections has to keep this
test in step.
"""
import glob
import gzip
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

dapt, repo = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
sys.path.insert(0, os.path.join(repo, "tests", "gguf"))
import gguf_common as C  # noqa: E402


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def code_blocks(text):
    """The indented (4 spaces) code blocks of markdown text, as lists of
    lines; a blank line ends a block (the next indented lines are another)."""
    blocks, cur, prev_blank = [], None, True
    for line in text.split("\n"):
        if line.startswith("    ") and line.strip() and (cur is not None or prev_blank):
            if cur is None:
                cur = []
                blocks.append(cur)
            cur.append(line[4:])
        else:
            cur = None
        prev_blank = line.strip() == ""
    return blocks


def section(path, start, end_re):
    text = open(path).read()
    i = text.find(start)
    if i < 0:
        fail(f"{path}: no '{start}'")
    m = re.compile(end_re, re.M).search(text, i + len(start))
    return text[i:m.start() if m else len(text)]


def commands(lines):
    out = []
    for l in lines:
        l = re.sub(r"\s+#.*$", "", l).strip()
        if l.startswith("dapt ") or l.startswith("tools/"):
            out.append(l)
    return out


def run(cmd, cwd, **kw):
    argv = shlex.split(cmd)
    argv = [dapt] + argv[1:] if argv[0] == "dapt" else [os.path.join(repo, argv[0])] + argv[1:]
    # globs as a shell would expand them
    full = []
    for a in argv:
        g = sorted(glob.glob(os.path.join(cwd, a))) if any(c in a for c in "*?[") else []
        full += [os.path.relpath(x, cwd) for x in g] if g else [a]
    print(f"$ {cmd}", flush=True)
    # python3 is Debian's (tools/plot needs its matplotlib), as on the
    # Debian 12 machine the README is written for
    env = dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", ""))
    r = subprocess.run(full, cwd=cwd, capture_output=True, text=True, env=env, **kw)
    if r.returncode != 0:
        fail(f"`{cmd}` exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    for line in (r.stdout + r.stderr).splitlines()[-3:]:
        print(f"  {line}")
    return r


def corpora(d):
    """med/*.jsonl.gz (the repository's docs) and web/*.jsonl.zst (licence
    texts), several files each."""
    os.makedirs(os.path.join(d, "med")), os.makedirs(os.path.join(d, "web"))
    med = [open(p).read() for p in sorted(glob.glob(os.path.join(repo, "docs", "*.md")))]
    web = [open(p, errors="replace").read() for p in sorted(glob.glob("/usr/share/common-licenses/*"))
           if os.path.isfile(p)]
    for i in range(2):
        with gzip.open(os.path.join(d, "med", f"part{i}.jsonl.gz"), "wt") as f:
            for t in med[i::2]:
                for para in t.split("\n\n"):
                    f.write(json.dumps({"text": para}) + "\n")
        plain = os.path.join(d, "web", f"part{i}.jsonl")
        with open(plain, "w") as f:
            for t in web[i::2]:
                for para in t.split("\n\n"):
                    f.write(json.dumps({"text": para}) + "\n")
        subprocess.run(["zstd", "-q", "--rm", plain], check=True)
    txt = os.path.join(d, "corpus.txt")
    with open(txt, "w") as f:
        f.write("\n\n".join(med + web))
    return txt


def hf_dir(d, name, txt, max_seq_len, vocab=300):
    """An HF model directory `name` with a byte-level BPE tokenizer.json:
    dapt tokenizes, trains one step from scratch and its checkpoint is the
    directory."""
    tok = C.make_bpe_tokenizer(os.path.join(d, ".boot-tok"), "llama-bpe", vocab, [txt])
    subprocess.run([dapt, "tokenize", "--tokenizer", tok, "--out", os.path.join(d, ".boot"),
                    "--no-progress", txt], check=True, capture_output=True)
    cfg = os.path.join(d, ".boot.toml")
    b = os.path.join(d, ".boot")
    open(cfg, "w").write(f"""[run]
name = "boot"
out_dir = "{d}/.boot-runs"
[model]
arch = "llama"
n_layer = 1
n_head = 2
d_model = 32
d_ff = 64
vocab_size = {vocab + 8}
max_seq_len = {max_seq_len}
[data]
seq_len = 16
tokenizer = "{tok}"
domain = ["{b}/train-*.tok.zst"]
general = ["{b}/train-*.tok.zst"]
[train]
micro_batch = 1
global_batch = 1
steps = 1
warmup_steps = 0
[eval]
every = 0
""")
    subprocess.run([dapt, "train", cfg], check=True, capture_output=True)
    os.rename(os.path.join(d, ".boot-runs", "boot", "ckpt", "step-00000001"), os.path.join(d, name))


def readme(d):
    sec = section(os.path.join(repo, "README.md"), "A typical CPT run", r"^## ")
    blocks = code_blocks(sec)
    cmds = commands(blocks[0]) if blocks else []
    if len(cmds) < 6:
        fail(f"README's typical CPT run has {len(cmds)} commands: {cmds}")
    txt = corpora(d)
    hf_dir(d, "base", txt, 64)
    open(os.path.join(d, "my.toml"), "w").write("""[run]
name = "my-run"
[model]
init_from = "base"
[data]
seq_len = 16
domain = ["shards/med/train-*.tok.zst"]
general = ["shards/web/train-*.tok.zst"]
val_domain = ["shards/med/val.tok.zst"]
val_general = ["shards/web/val.tok.zst"]
[train]
micro_batch = 1
global_batch = 1
steps = 10000
warmup_steps = 10
[eval]
every = 5000
batches = 2
[ckpt]
every = 5000
""")
    for cmd in cmds:
        if cmd == "dapt train my.toml":
            # an interruption: SIGINT once a few steps are done
            p = subprocess.Popen([dapt, "train", "my.toml"], cwd=d, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            metrics = os.path.join(d, "runs", "my-run", "metrics.jsonl")
            for _ in range(600):
                if os.path.exists(metrics) and os.path.getsize(metrics) > 2000:
                    break
                time.sleep(0.05)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate()
            print(f"$ {cmd}   (SIGINT)\n  {out.strip().splitlines()[-1]}")
            if p.returncode != 0 or "SIGINT received" not in out:
                fail(f"`{cmd}` interrupted: exit {p.returncode}\n{out[-1000:]}{err[-1000:]}")
        else:
            run(cmd, d)
    for want in ("shards/med/val.tok.zst", "shards/web/val.tok.zst",
                 "runs/my-run/ckpt/step-00010000/model.safetensors", "runs/my-run/plots/loss.png",
                 "my.gguf"):
        if not os.path.exists(os.path.join(d, want)):
            fail(f"README walk: no {want}")
    # every command makes its outputs' directories: export, import and
    # logits into directories that do not exist yet
    ck = "runs/my-run/ckpt/step-00010000"
    run(f"dapt export gguf {ck} out/a/my.gguf --dtype f32", d)
    run("dapt import gguf out/a/my.gguf out/b/imported", d)
    run(f"dapt logits {ck} --ids 1,2,3 --out out/c/logits.f32", d)
    for want in ("out/a/my.gguf", "out/b/imported/model.safetensors", "out/c/logits.f32"):
        if not os.path.exists(os.path.join(d, want)):
            fail(f"no {want}")
    return len(cmds)


def data_md(d):
    sec = section(os.path.join(repo, "docs", "data.md"), "## Llama 3.x end to end", r"^## ")
    blocks = code_blocks(sec)
    cfg = [b for b in blocks if b and b[0].strip() == "# cpt.toml"]
    if len(cfg) != 1:
        fail("docs/data.md: no '# cpt.toml' block in 'Llama 3.x end to end'")
    cmds = [c for b in blocks if b is not cfg[0] for c in commands(b)]
    # commands quoted in the prose: `dapt ...` (a line break inside is a space)
    prose = re.sub(r"\s*\n\s*", " ", sec)
    inline = [c for c in re.findall(r"`(dapt [^`]+)`", prose)
              if c not in cmds and len(c.split()) > 2]  # `dapt train` alone names the command
    if len(cmds) < 4 or len(inline) < 2:
        fail(f"docs/data.md's Llama 3.x section: commands {cmds}, in the prose {inline}")
    txt = corpora(d)
    hf_dir(d, "Llama-3.2-1B", txt, 4096)
    toml = "\n".join(cfg[0]) + """
[run]
name = "med"
[train]
micro_batch = 1
global_batch = 1
steps = 2
warmup_steps = 1
[eval]
every = 0
[ckpt]
every = 2
"""
    open(os.path.join(d, "cpt.toml"), "w").write(toml)
    # the doc's placeholders: the run's name and its last checkpoint
    subst = {"runs/NAME/": "runs/med/", "step-00010000": "step-00000002"}
    n = 0
    for cmd in cmds[:2] + inline + cmds[2:]:
        for a, b in subst.items():
            cmd = cmd.replace(a, b)
        r = run(cmd, d)
        n += 1
        if "--decode" in cmd and "first 64 tokens" not in r.stdout:
            fail(f"`{cmd}` printed no decoded tokens:\n{r.stdout[-1000:]}")
    for want in ("shards/med/val.tok.zst", "shards/web/val.tok.zst",
                 "runs/med/ckpt/step-00000002/tokenizer.json", "med.gguf"):
        if not os.path.exists(os.path.join(d, want)):
            fail(f"docs/data.md walk: no {want}")
    return n


def main():
    with tempfile.TemporaryDirectory() as work:
        a, b = os.path.join(work, "readme"), os.path.join(work, "data")
        os.makedirs(a), os.makedirs(b)
        n_readme = readme(a)
        n_data = data_md(b)
        print(f"ok: README's {n_readme} and docs/data.md's {n_data} example commands ran")


if __name__ == "__main__":
    main()
