"""Shared helpers of the GGUF tests (tests/gguf/test_*.py).

Models are made by HF transformers (not by dapt), saved with
save_pretrained, and exported by the `dapt` binary under test; the
sentencepiece model is trained by the sentencepiece library on a generated
corpus (BPE with byte fallback, as Llama's), the byte-level BPE ones by HF
tokenizers (make_bpe_tokenizer). The name and layout tables
here (tensor_map, permute_like_converter) restate llama.cpp's conventions
independently of dapt's C code; the test files hold the assertions (run()
only stops a test whose dapt command failed).
"""
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch

# the HF parity tests' weight randomizer (O(1) logits), shared
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runner"))
from test_hf_parity import randomize  # noqa: E402

VOCAB = 320
SAMPLE_TEXT = ("The quick brown fox jumps over the lazy dog. Zebras quiz 42 jolly "
               "wizards; naïve café owners say: ¿qué? — done.")


def make_tokenizer(tmp):
    """Trains a 320-piece BPE sentencepiece model with byte fallback and no
    normalisation (as Llama's tokenizer.model); returns its path."""
    import sentencepiece as spm
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(corpus_lines()) + "\n")
    prefix = os.path.join(tmp, "tok")
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=VOCAB,
                                   model_type="bpe", byte_fallback=True, minloglevel=2,
                                   normalization_rule_name="identity",
                                   remove_extra_whitespaces=False)
    return prefix + ".model"


# Byte-level BPE tokenizers (HF tokenizers), one per pre-tokenizer family
# llama.cpp names (tokenizer.ggml.pre). The Split patterns are those of
# Llama 3's and Qwen2's tokenizer.json; GPT-2's is ByteLevel's own regex.
BPE_FAMILIES = ("gpt-2", "llama-bpe", "qwen2")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?"
                  r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?"
                 r"[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_SPECIALS = {"gpt-2": ["<|endoftext|>"],
                "llama-bpe": ["<|begin_of_text|>", "<|end_of_text|>"],
                "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}
BPE_USER_TOKEN = "<tool>"  # an added token that is not special (GGUF user-defined)


def corpus_lines(n=3000):
    """The generated corpus of make_tokenizer: n lines of 12 words."""
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
             for _ in range(300)] + SAMPLE_TEXT.split()
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(n)]


def bpe_texts(family):
    """Texts whose tokenization the BPE tests compare: ASCII, accents, CJK,
    digit runs (split in threes by Llama 3, one by one by Qwen2),
    contractions, whitespace runs and newlines, special and added tokens."""
    sp = BPE_SPECIALS[family]
    return [SAMPLE_TEXT, "hello world", "  two  spaces and\ttab\n\n  new paragraph\n",
            "über 数字 1234567 don't I'LL we've", f"{sp[0]}text around {BPE_USER_TOKEN} and "
            f"{sp[-1]} tokens{sp[0]}", "naïve café — done.\r\n"]


def make_bpe_tokenizer(out_dir, family, vocab_size=310, files=None):
    """Trains a byte-level BPE tokenizer of the family (HF tokenizers) on
    files (default: the generated corpus) and saves it as an HF tokenizer
    directory: tokenizer.json and tokenizer_config.json as Llama 3 (BOS by
    its post-processor, ignore_merges), Qwen2 (NFC, no BOS) and GPT-2 ship
    them, with plain added tokens only (tests/tok/test_bpe_hf.py's tokenizers
    also have lstrip/rstrip/single_word ones, which GGUF cannot carry).
    Returns out_dir."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers)
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer(models.BPE(ignore_merges=family == "llama-bpe"))
    if family == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        pattern = LLAMA3_PATTERN if family == "llama-bpe" else QWEN2_PATTERN
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if family == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    specials = BPE_SPECIALS[family]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    if files is None:
        # the generated corpus, and digit runs and contractions often enough
        # to be merged: the families split them differently (Llama 3 digits
        # in threes, Qwen2 one by one, GPT-2 whole)
        rng = random.Random(1)
        extra = ["1234567", "2024", "31415", "don't", "we've", "I'LL", "it's"]
        path = os.path.join(out_dir, "corpus.txt")
        with open(path, "w") as f:
            f.write("\n".join(corpus_lines()) + "\n")
            for _ in range(1000):
                f.write(" ".join(rng.choice(extra) for _ in range(6)) + "\n")
        files = [path]
    tok.train(files, trainer)
    tok.add_tokens([AddedToken(BPE_USER_TOKEN, special=False, normalized=False)])
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": specials[0],
              "clean_up_tokenization_spaces": False}
    if family == "llama-bpe":
        bos = specials[0]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
            special_tokens=[(bos, tok.token_to_id(bos))])
        config.update(bos_token=bos, eos_token=specials[1])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out_dir


def gguf_bpe_vocab(tok_dir, family, n_vocab):
    """The tokenizer.ggml.* values llama.cpp's convert_hf_to_gguf.py writes
    for a byte-level BPE directory, restated from its rules: tokens by id
    (the tokenizer.json spelling; "[PAD<i>]" for ids no token has, up to the
    model's n_vocab rows), types (1 normal, 3 special added, 4 other added,
    5 padding), merges as "a b", the special ids and the add-BOS flag."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    reverse = {i: t for t, i in tok.get_vocab().items()}
    added = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(5)
        else:
            tokens.append(reverse[i])
            types.append((3 if added[i].special else 4) if i in added else 1)
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        merges = json.load(f)["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": family,
            "bos": tok.bos_token_id, "eos": tok.eos_token_id, "add_bos": family == "llama-bpe"}


KINDS = ("llama_gqa", "llama_mha_tied", "llama_gqa_tied", "llama_mha", "qwen2", "gpt2", "mixtral")
N_EXPERTS, TOP_K = 4, 2  # the mixtral kind
MIXTRAL_SEED = 1259  # well-conditioned routing on the llama.cpp test ids (test_gguf_llamacpp.py)


def make_model(kind, out_dir):
    """A tiny random HF model of one kind saved to out_dir; returns it (eval, fp32)."""
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                              MixtralConfig, MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM)
    torch.manual_seed(0)
    if kind == "mixtral":  # dapt's llama MoE (every layer, top-k renormalised)
        cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                            num_local_experts=N_EXPERTS, num_experts_per_tok=TOP_K,
                            tie_word_embeddings=False)
        model = MixtralForCausalLM(cfg)
    elif kind == "qwen2":  # dapt's llama with qkv_bias; exported as arch llama
        cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=False)
        model = Qwen2ForCausalLM(cfg)
    elif kind.startswith("llama"):
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
    randomize(model, MIXTRAL_SEED if kind == "mixtral" else 1234)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model.eval()


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def dapt_tokenize(dapt, tok, texts, tmp):
    """`dapt tokenize --tokenizer TOK` of each text as a document of its own
    shard (a text may hold the EOS token itself): the document's ids without
    the EOS that ends it (with BOS when the tokenizer adds it)."""
    docs = []
    for k, text in enumerate(texts):
        src, out = os.path.join(tmp, f"text{k}.jsonl"), os.path.join(tmp, f"shards{k}")
        with open(src, "w") as f:
            f.write(json.dumps({"text": text}) + "\n")
        run([dapt, "tokenize", "--tokenizer", tok, "--out", out, "--val-frac", "0",
             "--threads", "1", "--no-progress", src])
        shard = os.path.join(out, "train-00000.tok.zst")
        info = run([dapt, "inspect", shard]).stdout
        width = int(info.split("token width ")[1].split()[0])
        eos = int(info.split("eos id")[1].split()[0])
        raw = subprocess.run(["zstd", "-dc", shard], capture_output=True, check=True).stdout
        ids = np.frombuffer(raw, dtype="<u2" if width == 2 else "<u4").tolist()
        if ids[-1:] != [eos]:
            raise SystemExit(f"dapt tokenize: document {k} does not end with EOS {eos}: {ids}")
        docs.append(ids[:-1])
    return docs


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


def tensor_map(kind, model):
    """GGUF name -> (HF name, heads its rows are permuted over or 0,
    transposed: HF stores it [in, out] (GPT-2 Conv1D)). For llama.cpp's MoE
    expert tensors the HF name is a list: the experts' [out, in] matrices,
    stacked along a new first (numpy) axis, i.e. ggml ne = {in, out, E}, as
    convert_hf_to_gguf.py does for Mixtral."""
    cfg = model.config
    out = {}
    if kind.startswith("llama") or kind in ("qwen2", "mixtral"):
        nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        out["token_embd.weight"] = ("model.embed_tokens.weight", 0, False)
        out["output_norm.weight"] = ("model.norm.weight", 0, False)
        if not cfg.tie_word_embeddings:
            out["output.weight"] = ("lm_head.weight", 0, False)
        for i in range(cfg.num_hidden_layers):
            p, b = f"model.layers.{i}.", f"blk.{i}."
            for hf, g, perm in (("input_layernorm", "attn_norm", 0),
                                ("self_attn.q_proj", "attn_q", nh),
                                ("self_attn.k_proj", "attn_k", nkv),
                                ("self_attn.v_proj", "attn_v", 0),
                                ("self_attn.o_proj", "attn_output", 0),
                                ("post_attention_layernorm", "ffn_norm", 0)):
                out[b + g + ".weight"] = (p + hf + ".weight", perm, False)
            if kind == "mixtral":
                out[b + "ffn_gate_inp.weight"] = (p + "block_sparse_moe.gate.weight", 0, False)
                for w, g in (("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps")):
                    out[b + g + ".weight"] = (
                        [f"{p}block_sparse_moe.experts.{e}.{w}.weight" for e in range(N_EXPERTS)],
                        0, False)
            else:
                for hf, g in (("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                              ("mlp.down_proj", "ffn_down")):
                    out[b + g + ".weight"] = (p + hf + ".weight", 0, False)
            if kind == "qwen2":
                out[b + "attn_q.bias"] = (p + "self_attn.q_proj.bias", nh, False)
                out[b + "attn_k.bias"] = (p + "self_attn.k_proj.bias", nkv, False)
                out[b + "attn_v.bias"] = (p + "self_attn.v_proj.bias", 0, False)
    else:
        out["token_embd.weight"] = ("transformer.wte.weight", 0, False)
        out["position_embd.weight"] = ("transformer.wpe.weight", 0, False)
        out["output_norm.weight"] = ("transformer.ln_f.weight", 0, False)
        out["output_norm.bias"] = ("transformer.ln_f.bias", 0, False)
        for i in range(cfg.n_layer):
            p, b = f"transformer.h.{i}.", f"blk.{i}."
            for hf, g in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm"), ("attn.c_attn", "attn_qkv"),
                          ("attn.c_proj", "attn_output"), ("mlp.c_fc", "ffn_up"),
                          ("mlp.c_proj", "ffn_down")):
                out[b + g + ".weight"] = (p + hf + ".weight", 0, not hf.startswith("ln"))
                out[b + g + ".bias"] = (p + hf + ".bias", 0, False)
    return out


def expected_tensors(kind, model, model_dir):
    """GGUF name -> (HF tensor as [out, in] numpy fp32, or [E, out, in] for
    an expert stack; permute heads or 0), read from model_dir's
    model.safetensors (as written by save_pretrained) with the safetensors
    package, not through dapt."""
    from safetensors.numpy import load_file
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    out = {}
    for g, (hf, nh, tr) in tensor_map(kind, model).items():
        if isinstance(hf, list):
            out[g] = (np.stack([sd[h] for h in hf]).astype(np.float32), nh)
        else:
            w = sd[hf].astype(np.float32)
            out[g] = (w.T.copy() if tr else w, nh)
    return out


def q8_0_decode(raw, n):
    """Q8_0 blocks (fp16 scale d, 32 int8 q; x = d * q) -> n fp32 values."""
    blocks = np.frombuffer(raw.tobytes(), dtype=np.uint8).reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)[:n]


def unpermute_like_converter(w, n_head):
    """The inverse of permute_like_converter."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_tensor_f32(t):
    """A gguf-py tensor's data as fp32, in its [..., ne1, ne0] row-major layout."""
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    name = t.tensor_type.name
    raw = np.asarray(t.data)
    if name == "F32":
        y = raw.astype(np.float32).reshape(-1)
    elif name == "F16":
        y = raw.view(np.float16).astype(np.float32).reshape(-1)
    elif name == "BF16":
        y = (raw.reshape(-1).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif name == "Q8_0":
        y = q8_0_decode(raw, int(np.prod(shape)))
    else:
        raise SystemExit(f"{t.name}: type {name} not handled by the test")
    return y.reshape(shape)


def save_dequantized(kind, model, gguf_path, out_dir):
    """Writes model with every weight replaced by its value in the GGUF file
    (dequantized, Q/K rows permuted back): the weights llama.cpp computes
    with, as an HF directory `dapt logits` reads."""
    import gguf
    r = gguf.GGUFReader(gguf_path)
    tensors = {t.name: t for t in r.tensors}
    sd = model.state_dict()
    with torch.no_grad():
        for gname, (hf, nh, tr) in tensor_map(kind, model).items():
            w = gguf_tensor_f32(tensors[gname])
            if isinstance(hf, list):  # expert stack: slice e is expert e
                for e, h in enumerate(hf):
                    sd[h].copy_(torch.from_numpy(np.ascontiguousarray(w[e])))
                continue
            if nh:
                w = unpermute_like_converter(w, nh)
            if tr:
                w = w.T
            sd[hf].copy_(torch.from_numpy(np.ascontiguousarray(w)))
    model.save_pretrained(out_dir, safe_serialization=True)
