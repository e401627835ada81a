/* vocab_export.c: the tokenizer.ggml.* metadata of a GGUF export, read
 * through the tokenizer interface (tokenizer/tokenizer.h), with the keys,
 * types and conventions of llama.cpp's converter:
 *
 *   sentencepiece  tokenizer.ggml.model "llama": the pieces, scores and
 *                  types of the .model (read by spm.c), the special ids,
 *                  add_bos_token when there is a BOS, add_space_prefix
 *   byte-level BPE tokenizer.ggml.model "gpt2": the tokens as
 *                  tokenizer.json spells them (model tokens in the
 *                  byte-level alphabet, added tokens literally), their
 *                  types (normal 1, control 3 for special added tokens,
 *                  user-defined 4 for the other added tokens), the merges
 *                  as "a b" in rank order, tokenizer.ggml.pre (the
 *                  pre-tokenizer family's llama.cpp name), the BOS/EOS ids
 *                  and the add_bos_token / add_eos_token flags
 *
 * Both are padded to the model's vocabulary (its embedding rows) with
 * unused (type 5) "[PAD<i>]" tokens, which also fill ids no token has.
 *
 * Invariants: what llama.cpp would tokenize differently is refused, not
 * written: a BPE whose normalizer/pre-tokenizer is no family llama.cpp
 * names (bpe_family NULL), and one whose token strings are not one-to-one
 * with its ids (llama.cpp maps strings to ids and asserts that they are).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tokenizer.h"
#include "tools/gguf/gguf.h"

/* GGUF token types (gguf-py's TokenType, llama.cpp's llama_token_type). */
enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

#define PAD_LEN 24 /* "[PAD<i>]" for any int i */

/* tokenizer.ggml.* from the sentencepiece model, padded to vocab_size. */
static int write_spm(GgufWriter *w, const SpmVocab *v, int vocab_size, const char *tok_path,
                     char *err, size_t err_len) {
    if (v->n > vocab_size)
        return err_set(err, err_len,
                       "%s has %d pieces but the model's vocabulary (embedding rows) is %d",
                       tok_path, v->n, vocab_size);
    const char **tokens = malloc((size_t)vocab_size * sizeof *tokens);
    char *pads = malloc((size_t)(vocab_size - v->n) * PAD_LEN + 1);
    float *scores = malloc((size_t)vocab_size * sizeof *scores);
    int32_t *types = malloc((size_t)vocab_size * sizeof *types);
    int rc = 0;
    if (!tokens || !pads || !scores || !types) {
        rc = err_set(err, err_len, "out of memory");
        goto out;
    }
    for (int i = 0; i < vocab_size; i++) {
        if (i < v->n) {
            tokens[i] = v->pieces[i];
            scores[i] = v->scores[i];
            types[i] = v->types[i];
        } else {
            char *p = pads + (size_t)(i - v->n) * PAD_LEN;
            snprintf(p, PAD_LEN, "[PAD%d]", i);
            tokens[i] = p;
            scores[i] = 0.0f;
            types[i] = TT_UNUSED;
        }
    }
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", tokens, (size_t)vocab_size);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)vocab_size);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)vocab_size);
    if (v->bos_id >= 0) gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos_id);
    if (v->eos_id >= 0) gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos_id);
    if (v->unk_id >= 0) gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk_id);
    if (v->pad_id >= 0) gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad_id);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", v->bos_id >= 0);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", v->add_dummy_prefix);
out:
    free(tokens);
    free(pads);
    free(scores);
    free(types);
    return rc;
}

/* The token strings and GGUF types of a byte-level BPE, padded to
 * vocab_size: tokens[i] points into the model or into pads. */
static int bpe_tokens(const BpeModel *b, int vocab_size, const char *path, const char **tokens,
                      int32_t *types, char *pads, char *err, size_t err_len) {
    uint32_t n_tok = bpe_vocab_size(b);
    for (int i = 0; i < vocab_size; i++) {
        const char *s = (uint32_t)i < n_tok ? bpe_token(b, (uint32_t)i) : NULL;
        int type = s ? bpe_token_type(b, (uint32_t)i) : BPE_TOKEN_UNUSED;
        if (type == BPE_TOKEN_UNUSED) {
            char *p = pads + (size_t)i * PAD_LEN;
            snprintf(p, PAD_LEN, "[PAD%d]", i);
            if (bpe_token_id(b, p, strlen(p)) >= 0)
                return err_set(err, err_len,
                               "%s: id %d has no token, and its GGUF filler '%s' is a token "
                               "already (llama.cpp needs distinct token strings)",
                               path, i, p);
            tokens[i] = p;
            types[i] = TT_UNUSED;
            continue;
        }
        int same = s[0] ? bpe_token_id(b, s, strlen(s)) : -1;
        if (same != i)
            return err_set(err, err_len,
                           "%s: token %d ('%s') %s: llama.cpp maps token strings to ids one to "
                           "one; not exported",
                           path, i, s, s[0] ? "has the spelling of another token" : "is empty");
        tokens[i] = s;
        types[i] = type == BPE_TOKEN_SPECIAL ? TT_CONTROL
                   : type == BPE_TOKEN_ADDED ? TT_USER_DEFINED
                                             : TT_NORMAL;
    }
    return 0;
}

/* The merges as "left right" strings in rank order, in one allocation:
 * *merges (n pointers) followed by the text. */
static int bpe_merge_strings(const BpeModel *b, const char ***merges, char *err, size_t err_len) {
    size_t n = bpe_n_merges(b), bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const char *l, *r;
        bpe_merge(b, i, &l, &r);
        bytes += strlen(l) + strlen(r) + 2;
    }
    const char **m = malloc(n * sizeof *m + bytes + 1);
    if (!m) return err_set(err, err_len, "out of memory for %zu merges", n);
    char *text = (char *)(m + n);
    for (size_t i = 0; i < n; i++) {
        const char *l, *r;
        bpe_merge(b, i, &l, &r);
        m[i] = text;
        text += sprintf(text, "%s %s", l, r) + 1;
    }
    *merges = m;
    return 0;
}

/* tokenizer.ggml.* ("gpt2") from a byte-level BPE, padded to vocab_size. */
static int write_bpe(GgufWriter *w, const Tokenizer *t, int vocab_size, const char *path, char *err,
                     size_t err_len) {
    const BpeModel *b = tokenizer_bpe(t);
    if (bpe_vocab_size(b) > (uint32_t)vocab_size)
        return err_set(err, err_len,
                       "%s has %u tokens but the model's vocabulary (embedding rows) is %d", path,
                       bpe_vocab_size(b), vocab_size);
    const BpeFamily *fam = bpe_family(b);
    if (!fam) {
        char names[256] = "";
        for (int i = 0; i < bpe_n_families; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                     bpe_families[i].gguf_pre);
        return err_set(err, err_len,
                       "%s: its normalizer and pre-tokenizer are none of the families llama.cpp "
                       "names (tokenizer.ggml.pre %s): llama.cpp would split text differently "
                       "than the tokenizer.json does; not exported",
                       path, names);
    }
    const char **tokens = malloc((size_t)vocab_size * sizeof *tokens), **merges = NULL;
    int32_t *types = malloc((size_t)vocab_size * sizeof *types);
    char *pads = malloc((size_t)vocab_size * PAD_LEN);
    int rc = 0;
    if (!tokens || !types || !pads) rc = err_set(err, err_len, "out of memory");
    if (!rc) rc = bpe_tokens(b, vocab_size, path, tokens, types, pads, err, err_len);
    if (!rc) rc = bpe_merge_strings(b, &merges, err, err_len);
    if (!rc) {
        gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
        gguf_w_str(w, "tokenizer.ggml.pre", fam->gguf_pre);
        gguf_w_arr_str(w, "tokenizer.ggml.tokens", tokens, (size_t)vocab_size);
        gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)vocab_size);
        gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, bpe_n_merges(b));
        if (tokenizer_bos_id(t) >= 0)
            gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tokenizer_bos_id(t));
        if (tokenizer_eos_id(t) >= 0)
            gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)tokenizer_eos_id(t));
        gguf_w_bool(w, "tokenizer.ggml.add_bos_token", tokenizer_add_bos(t));
        gguf_w_bool(w, "tokenizer.ggml.add_eos_token", tokenizer_add_eos(t));
    }
    free(tokens);
    free(types);
    free(pads);
    free(merges);
    return rc;
}

int gguf_write_tokenizer(GgufWriter *w, const Tokenizer *t, int vocab_size, char *err,
                         size_t err_len) {
    int n_files;
    const char *path = tokenizer_files(t, &n_files)[0].path;
    if (tokenizer_kind(t) == TOKENIZER_BPE) return write_bpe(w, t, vocab_size, path, err, err_len);
    SpmVocab v;
    if (spm_vocab_load(path, &v, err, err_len)) return 1;
    int rc = write_spm(w, &v, vocab_size, path, err, err_len);
    spm_vocab_free(&v);
    return rc;
}
