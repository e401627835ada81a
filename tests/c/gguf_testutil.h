/* gguf_testutil.h: helpers shared by the GGUF C tests: a synthetic
 * sentencepiece tokenizer.model written as protobuf bytes (so the tests do
 * not depend on spm_train), tiny models with O(1) random weights, and
 * whole-file reads. Header-only; included by tests/c/test_gguf*.c.
 */
#ifndef DAPT_TEST_GGUF_UTIL_H
#define DAPT_TEST_GGUF_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/c/model_random.h"
#include "tools/gguf/gguf.h"
#include "trainer/model.h"
#include "trainer/rng.h"

typedef struct {
    uint8_t *b;
    size_t n, cap;
} PbBuf;

static inline void pb_put(PbBuf *p, const void *d, size_t n) {
    if (p->n + n > p->cap) {
        p->cap = (p->n + n) * 2 + 64;
        p->b = realloc(p->b, p->cap);
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
static inline void pb_varint_put(PbBuf *p, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        pb_put(p, &c, 1);
    } while (v);
}
static inline void pb_field_bytes(PbBuf *p, uint32_t field, const void *d, size_t n) {
    pb_varint_put(p, (uint64_t)field << 3 | 2);
    pb_varint_put(p, n);
    pb_put(p, d, n);
}
static inline void pb_field_varint(PbBuf *p, uint32_t field, int64_t v) {
    pb_varint_put(p, (uint64_t)field << 3);
    pb_varint_put(p, (uint64_t)v);
}

/* The i-th piece of the synthetic vocabulary and its type. */
static inline void spm_test_piece(int i, char *out, size_t n, int *type) {
    if (i == 0) snprintf(out, n, "<unk>"), *type = 2;
    else if (i == 1) snprintf(out, n, "<s>"), *type = 3;
    else if (i == 2) snprintf(out, n, "</s>"), *type = 3;
    /* user-defined: byte pieces (type 6) need all 256 and byte_fallback */
    else if (i < 3 + 8) snprintf(out, n, "<0x%02X>", i - 3), *type = 4;
    else snprintf(out, n, "\xe2\x96\x81p%d", i), *type = 1; /* "▁p<i>" */
}

/* tokenizer.model bytes with n_pieces pieces (>= 12), unk 0, bos 1, eos 2,
 * pad -1 (a negative varint), BPE, add_dummy_prefix: a model the
 * sentencepiece library loads. Caller frees. */
static inline uint8_t *spm_test_model(int n_pieces, size_t *len) {
    PbBuf out = {0};
    for (int i = 0; i < n_pieces; i++) {
        PbBuf piece = {0};
        char s[32];
        int type;
        spm_test_piece(i, s, sizeof s, &type);
        pb_field_bytes(&piece, 1, s, strlen(s));
        float score = -(float)i * 0.5f;
        pb_varint_put(&piece, 2 << 3 | 5);
        pb_put(&piece, &score, 4);
        if (type != 1) pb_field_varint(&piece, 3, type);
        pb_field_bytes(&out, 1, piece.b, piece.n);
        free(piece.b);
    }
    PbBuf trainer = {0};
    pb_field_bytes(&trainer, 1, "x", 1); /* input (skipped) */
    pb_field_varint(&trainer, 3, 2);     /* BPE */
    pb_field_varint(&trainer, 40, 0);
    pb_field_varint(&trainer, 41, 1);
    pb_field_varint(&trainer, 42, 2);
    pb_field_varint(&trainer, 43, -1);
    pb_field_bytes(&out, 2, trainer.b, trainer.n);
    free(trainer.b);
    PbBuf norm = {0};
    pb_field_bytes(&norm, 1, "identity", 8);
    pb_field_varint(&norm, 3, 1);
    pb_field_bytes(&out, 3, norm.b, norm.n);
    free(norm.b);
    *len = out.n;
    return out.b;
}

static inline int write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int bad = fwrite(b, 1, n, f) != n;
    return fclose(f) || bad;
}

static inline uint8_t *read_bytes(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* A tiny config: llama (GQA unless mha), or gpt2. */
static inline ModelConfig gguf_test_config(Arch arch, int tied, int mha, int qkv_bias) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = arch == ARCH_LLAMA && !mha ? 2 : 4;
    c.d_model = 64;
    c.d_ff = arch == ARCH_LLAMA ? 96 : 256;
    c.vocab_size = 40;
    c.max_seq_len = 32;
    c.rope_theta = 10000.0f;
    c.norm_eps = 1e-5f;
    c.tie_embeddings = tied;
    c.qkv_bias = qkv_bias;
    return c;
}

/* A small GGUF with every kind of metadata the exporter writes and three
 * tensors (F16 8x8, Q8_0 32x3, F32 64). The fp32 sources are static and
 * stay valid for gguf_writer_write. */
static float gguf_sample_a[64], gguf_sample_b[3 * 32];

static inline GgufWriter *gguf_test_sample(void) {
    GgufWriter *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");
    gguf_w_u32(w, "llama.block_count", 3);
    gguf_w_i32(w, "x.i32", -5);
    gguf_w_f32(w, "x.f32", 0.25f);
    gguf_w_bool(w, "x.bool", 1);
    const char *strs[] = {"a", "", "\xe2\x96\x81z"};
    gguf_w_arr_str(w, "x.strs", strs, 3);
    float fs[] = {1.5f, -2.0f};
    gguf_w_arr_f32(w, "x.f32s", fs, 2);
    int32_t is[] = {7, 8, 9};
    gguf_w_arr_i32(w, "x.i32s", is, 3);
    for (int i = 0; i < 64; i++) gguf_sample_a[i] = (float)i * 0.125f - 3.0f;
    for (int i = 0; i < 96; i++) gguf_sample_b[i] = sinf((float)i);
    uint64_t ne_a[2] = {8, 8}, ne_b[2] = {32, 3}, ne_c[1] = {64};
    gguf_w_tensor(w, "a.f16", 2, ne_a, GGML_F16, gguf_sample_a);
    gguf_w_tensor(w, "b.q8", 2, ne_b, GGML_Q8_0, gguf_sample_b);
    gguf_w_tensor(w, "c.f32", 1, ne_c, GGML_F32, gguf_sample_a);
    return w;
}

/* The tokenizer.ggml.* keys of a tiny byte-level BPE (model "gpt2", pre
 * "gpt-2"): tokens 0-8 normal ("\304\240" is the byte-level space 'Ġ'),
 * 9 control "<|endoftext|>" (EOS), 10 unused "[PAD10]", 11 user-defined
 * "<tool>"; merges "a b", "ab c", "Ġ a", "Ġa b". */
#define GGUF_TEST_BPE_N 12
static const char *const gguf_test_bpe_tokens[GGUF_TEST_BPE_N] = {
    "a",         "b",          "c",        "\304\240",      "ab",      "abc",
    "\304\240a", "\304\240ab", "\303\251", "<|endoftext|>", "[PAD10]", "<tool>"};
static const int32_t gguf_test_bpe_types[GGUF_TEST_BPE_N] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 5, 4};
static const char *const gguf_test_bpe_merges[4] = {"a b", "ab c", "\304\240 a", "\304\240a b"};
static inline void gguf_test_bpe_vocab(GgufWriter *w) {
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "gpt-2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", gguf_test_bpe_tokens, GGUF_TEST_BPE_N);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", gguf_test_bpe_types, GGUF_TEST_BPE_N);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", gguf_test_bpe_merges, 4);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 9);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 0);
}

#endif
