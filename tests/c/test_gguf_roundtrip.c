/* test_gguf_roundtrip.c: export -> import of tiny llama (GQA untied, MHA
 * tied, qkv bias) and gpt2 models through GGUF files.
 *
 * Properties: F32 export -> import gives bitwise-equal parameters and
 * logits and the same config; F16/BF16 give each parameter rounded to
 * nearest even (F16 checked against the compiler's _Float16 conversion, an
 * independent oracle); Q8_0 import is refused naming the type; the GGUF
 * tensors are exactly llama.cpp's set (no output.weight when tied) with
 * ggml shapes and norms F32; Q/K rows are in adjacent-pair order; the
 * vocabulary is padded to the embedding size; bad exports are refused with
 * the reason (existing output, no tokenizer, vocabulary too large).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf_testutil.h"
#include "tools/gguf/gguf.h"
#include "trainer/model.h"

static char dir[64], tok[128];

static float *params_of(const Model *m) {
    float *p = malloc(model_num_params(m) * sizeof *p);
    model_get_params(m, p);
    return p;
}

static float *logits_of(Model *m, int n) {
    int32_t ids[8] = {1, 5, 9, 3, 0, 17, 11, 2};
    float loss;
    char err[256];
    if (model_forward(m, ids, NULL, 1, n, &loss, err, sizeof err)) return NULL;
    float *l = malloc((size_t)n * model_config(m)->vocab_size * sizeof *l);
    model_logits(m, l);
    return l;
}

/* Q rows: GGUF row h*hd + 2i + j == HF row h*hd + j*hd/2 + i. */
static void check_q_layout(const GgufFile *f, const Model *m, const float *p, const char *what) {
    const ModelConfig *c = model_config(m);
    int hd = c->d_model / c->n_head, C = c->d_model;
    const ParamTensor *q = model_tensor(m, model_find_tensor(m, "model.layers.1.self_attn.q_proj.weight"));
    const ParamTensor *k = model_tensor(m, model_find_tensor(m, "model.layers.1.self_attn.k_proj.weight"));
    const GgufTensor *gq = gguf_find_tensor(f, "blk.1.attn_q.weight");
    const GgufTensor *gk = gguf_find_tensor(f, "blk.1.attn_k.weight");
    CHECK(gq && gk && gq->type == GGML_F32 && gk->type == GGML_F32, "%s: q/k tensors", what);
    if (!gq || !gk) return;
    int bad = 0;
    for (int h = 0; h < c->n_head; h++)
        for (int i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++) {
                const float *g = (const float *)gq->data + (size_t)(h * hd + 2 * i + j) * C;
                const float *s = p + q->offset + (size_t)(h * hd + j * hd / 2 + i) * C;
                bad += memcmp(g, s, (size_t)C * sizeof *g) != 0;
                if (h < c->n_kv_head) {
                    g = (const float *)gk->data + (size_t)(h * hd + 2 * i + j) * C;
                    s = p + k->offset + (size_t)(h * hd + j * hd / 2 + i) * C;
                    bad += memcmp(g, s, (size_t)C * sizeof *g) != 0;
                }
            }
    CHECK(bad == 0, "%s: %d Q/K rows not in adjacent-pair order", what, bad);
}

static void check_tensor_set(const GgufFile *f, const Model *m, const char *what) {
    const ModelConfig *c = model_config(m);
    CHECK(gguf_n_tensors(f) == model_num_tensors(m), "%s: %d GGUF tensors for %d dapt tensors", what,
          gguf_n_tensors(f), model_num_tensors(m));
    CHECK((gguf_find_tensor(f, "output.weight") != NULL) == !c->tie_embeddings,
          "%s: output.weight present iff untied", what);
    const GgufTensor *e = gguf_find_tensor(f, "token_embd.weight");
    CHECK(e && e->n_dims == 2 && e->ne[0] == (uint64_t)c->d_model && e->ne[1] == (uint64_t)c->vocab_size,
          "%s: token_embd ne = {d_model, vocab}", what);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const GgufTensor *t = gguf_tensor(f, i);
        if (t->n_dims == 1) CHECK(t->type == GGML_F32, "%s: 1-D %s is type %u", what, t->name, t->type);
    }
    const GgufKV *kv = gguf_find_kv(f, "general.architecture");
    CHECK(kv && kv->type == GGUF_STRING && !strcmp(kv->str, model_arch_name(c->arch)), "%s: arch", what);
    char key[96];
    snprintf(key, sizeof key, "%s.block_count", model_arch_name(c->arch));
    kv = gguf_find_kv(f, key);
    CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)c->n_layer, "%s: %s UINT32", what, key);
    if (c->arch == ARCH_LLAMA) {
        kv = gguf_find_kv(f, "llama.attention.head_count_kv");
        CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)c->n_kv_head, "%s: head_count_kv", what);
        kv = gguf_find_kv(f, "llama.rope.dimension_count");
        CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)(c->d_model / c->n_head),
              "%s: rope dims = head size", what);
        kv = gguf_find_kv(f, "llama.attention.layer_norm_rms_epsilon");
        CHECK(kv && kv->type == GGUF_FLOAT32 && kv->v.f == (double)c->norm_eps, "%s: eps FLOAT32", what);
    }
    kv = gguf_find_kv(f, "tokenizer.ggml.tokens");
    CHECK(kv && kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING &&
              kv->arr_n == (uint64_t)c->vocab_size,
          "%s: one token per embedding row", what);
    if (kv && kv->arr_n == (uint64_t)c->vocab_size) {
        char s[32];
        int type;
        spm_test_piece(20, s, sizeof s, &type);
        CHECK(!strcmp(kv->arr_str[20], s), "%s: token 20 '%s' != '%s'", what, kv->arr_str[20], s);
        CHECK(!strcmp(kv->arr_str[c->vocab_size - 1], "[PAD39]"), "%s: padding piece '%s'", what,
              kv->arr_str[c->vocab_size - 1]);
    }
    kv = gguf_find_kv(f, "tokenizer.ggml.token_type");
    CHECK(kv && kv->arr_type == GGUF_INT32 && kv->arr_n == (uint64_t)c->vocab_size, "%s: token types", what);
    if (kv && kv->arr_n == (uint64_t)c->vocab_size) {
        int32_t t0, t1, t3, t20, tpad;
        memcpy(&t0, kv->arr_data, 4);
        memcpy(&t1, kv->arr_data + 4, 4);
        memcpy(&t3, kv->arr_data + 12, 4);
        memcpy(&t20, kv->arr_data + 80, 4);
        memcpy(&tpad, kv->arr_data + 4 * (c->vocab_size - 1), 4);
        CHECK(t0 == 2 && t1 == 3 && t3 == 6 && t20 == 1 && tpad == 5,
              "%s: types unk %d bos %d byte %d normal %d pad %d", what, t0, t1, t3, t20, tpad);
    }
    kv = gguf_find_kv(f, "tokenizer.ggml.padding_token_id");
    CHECK(kv == NULL, "%s: pad_id -1 must not be written", what);
}

static void one_model(const char *what, Arch arch, int tied, int mha, int qkv_bias) {
    char err[1024], path[256], out_dir[256];
    ModelConfig c = gguf_test_config(arch, tied, mha, qkv_bias);
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "%s: %s", what, err);
    if (!m) return;
    test_model_randomize(m, 42);
    float *p = params_of(m), *l = logits_of(m, 8);
    snprintf(path, sizeof path, "%s/%s.f32.gguf", dir, what);
    GgufExportOptions o = {.dtype = GGML_F32, .tokenizer = tok, .name = what};
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) == 0, "%s: export: %s", what, err);
    GgufFile *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "%s: reopen: %s", what, err);
    if (f) {
        check_tensor_set(f, m, what);
        if (arch == ARCH_LLAMA) check_q_layout(f, m, p, what);
        gguf_close(f);
    }
    /* an existing output is refused without force, replaced with it */
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) != 0, "%s: overwrote without --force", what);
    CHECK_MSG(err, "--force");
    o.force = 1;
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) == 0, "%s: --force: %s", what, err);

    Model *m2 = gguf_import_model(path, err, sizeof err);
    CHECK(m2 != NULL, "%s: import: %s", what, err);
    if (m2) {
        const ModelConfig *c2 = model_config(m2);
        CHECK(c2->arch == c.arch && c2->n_layer == c.n_layer && c2->n_head == c.n_head &&
                  c2->n_kv_head == c.n_kv_head && c2->d_model == c.d_model && c2->d_ff == c.d_ff &&
                  c2->vocab_size == c.vocab_size && c2->max_seq_len == c.max_seq_len &&
                  c2->tie_embeddings == c.tie_embeddings && c2->qkv_bias == c.qkv_bias &&
                  c2->norm_eps == c.norm_eps && (arch == ARCH_GPT2 || c2->rope_theta == c.rope_theta),
              "%s: config differs after import", what);
        if (model_num_params(m2) == model_num_params(m)) {
            float *p2 = params_of(m2), *l2 = logits_of(m2, 8);
            CHECK(!memcmp(p, p2, model_num_params(m) * sizeof *p), "%s: F32 params not bitwise equal", what);
            CHECK(l2 && !memcmp(l, l2, 8 * (size_t)c.vocab_size * sizeof *l), "%s: logits differ", what);
            free(p2);
            free(l2);
        } else {
            CHECK(0, "%s: parameter count differs", what);
        }
        model_free(m2);
    }
    /* the checkpoint directory form, with its refusal of an existing dir */
    snprintf(out_dir, sizeof out_dir, "%s/%s.ckpt", dir, what);
    CHECK(gguf_import_to_dir(path, out_dir, 0, err, sizeof err) == 0, "%s: import dir: %s", what, err);
    CHECK(gguf_import_to_dir(path, out_dir, 0, err, sizeof err) != 0, "%s: replaced a dir without force", what);
    CHECK(gguf_import_to_dir(path, out_dir, 1, err, sizeof err) == 0, "%s: import dir --force: %s", what, err);

    /* F16 and BF16: each weight rounded to nearest even, norms exact */
    for (int d = 0; d < 2; d++) {
        o.dtype = d ? GGML_BF16 : GGML_F16;
        snprintf(path, sizeof path, "%s/%s.%s.gguf", dir, what, d ? "bf16" : "f16");
        CHECK(gguf_export_model(m, path, &o, err, sizeof err) == 0, "%s: export: %s", what, err);
        Model *m3 = gguf_import_model(path, err, sizeof err);
        CHECK(m3 != NULL, "%s %s: import: %s", what, path, err);
        if (!m3) continue;
        float *p3 = params_of(m3);
        int bad = 0;
        for (int i = 0; i < model_num_tensors(m); i++) {
            const ParamTensor *t = model_tensor(m, i);
            for (size_t k = 0; k < t->numel; k++) {
                float x = p[t->offset + k], y = p3[t->offset + k], want = x;
                if (t->ndim == 2 && !d) want = (float)(_Float16)x;
                if (t->ndim == 2 && d) {
                    uint32_t u, r;
                    memcpy(&u, &y, 4);
                    /* bf16: low 16 bits zero and within half an ulp: ulp = 2^(e-7)
                     * for |x| in [2^e, 2^(e+1)), so |y - x| <= 2^-8 |x| */
                    r = u & 0xffff;
                    want = r == 0 && fabsf(y - x) <= ldexpf(fabsf(x), -8) ? y : NAN;
                }
                bad += memcmp(&want, &y, 4) != 0;
            }
        }
        CHECK(bad == 0, "%s %s: %d parameters not the rounded originals", what, d ? "bf16" : "f16", bad);
        free(p3);
        model_free(m3);
    }
    /* Q8_0 exports, and its import is refused naming the type */
    o.dtype = GGML_Q8_0;
    snprintf(path, sizeof path, "%s/%s.q8_0.gguf", dir, what);
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) == 0, "%s: q8_0 export: %s", what, err);
    f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "%s: q8_0 reopen: %s", what, err);
    if (f) {
        const GgufTensor *q = gguf_find_tensor(f, "blk.0.attn_output.weight");
        const GgufTensor *dn = gguf_find_tensor(f, "blk.0.ffn_down.weight");
        CHECK(q && q->type == GGML_Q8_0, "%s: attn_output is Q8_0", what);
        /* ffn_down of llama has ne[0] = d_ff = 96 = 3 * 32: Q8_0 too */
        CHECK(dn && dn->type == GGML_Q8_0, "%s: ffn_down is Q8_0", what);
        const GgufKV *ft = gguf_find_kv(f, "general.file_type");
        CHECK(ft && ft->type == GGUF_UINT32 && ft->v.u == GGUF_FTYPE_Q8_0, "%s: file_type 7", what);
        gguf_close(f);
    }
    Model *mq = gguf_import_model(path, err, sizeof err);
    CHECK(mq == NULL, "%s: a Q8_0 file was imported", what);
    CHECK_MSG(err, "Q8_0");
    model_free(mq);
    free(p);
    free(l);
    model_free(m);
}

static void refusals(void) {
    char err[1024], path[256], big[128], g[96];
    int perm = -1;
    /* names outside llama.cpp's tables (e.g. Mixtral experts) have no GGUF name */
    CHECK(gguf_tensor_name(ARCH_LLAMA, "model.layers.0.block_sparse_moe.gate.weight", 4, 2, g,
                           sizeof g, &perm) != 0, "MoE router mapped");
    CHECK(gguf_tensor_name(ARCH_LLAMA, "model.layers.x.self_attn.q_proj.weight", 4, 2, g, sizeof g,
                           &perm) != 0, "bad block number mapped");
    CHECK(gguf_tensor_name(ARCH_LLAMA, "model.layers.12.self_attn.k_proj.weight", 4, 2, g, sizeof g,
                           &perm) == 0 && !strcmp(g, "blk.12.attn_k.weight") && perm == 2,
          "k_proj -> %s, permuted over %d heads", g, perm);
    CHECK(gguf_tensor_name(ARCH_GPT2, "transformer.wpe.weight", 4, 4, g, sizeof g, &perm) == 0 &&
              !strcmp(g, "position_embd.weight") && perm == 0, "wpe -> %s", g);
    ModelConfig c = gguf_test_config(ARCH_LLAMA, 0, 0, 0);
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) return;
    snprintf(path, sizeof path, "%s/refuse.gguf", dir);
    GgufExportOptions o = {.dtype = GGML_F32, .tokenizer = NULL};
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) != 0, "export without tokenizer");
    CHECK_MSG(err, "tokenizer");
    size_t n;
    uint8_t *b = spm_test_model(41, &n); /* one piece more than the 40 rows */
    snprintf(big, sizeof big, "%s/big.model", dir);
    write_bytes(big, b, n);
    free(b);
    o.tokenizer = big;
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) != 0, "export with a larger vocabulary");
    CHECK_MSG(err, "41 pieces");
    o.tokenizer = path; /* not a sentencepiece model */
    write_bytes(path, "GGUF\x03", 5);
    o.force = 1;
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) != 0, "export with a bogus tokenizer");
    CHECK_MSG(err, "sentencepiece");
    CHECK(access(path, F_OK) == 0, "a failed export must not remove the existing file");
    model_free(m);

    /* import refuses hostile or unsupported hyperparameters before it
     * allocates a model */
    static float emb[64 * 40];
    uint64_t ne[2] = {64, 40};
    const char *keys[] = {"llama.block_count", "llama.context_length", "llama.rope.dimension_count",
                          "llama.rope.scaling.type"};
    const char *needles[] = {"tensors, but a dapt llama model with 1073741824 blocks",
                             "larger than dapt's limit", "rotates part of the head",
                             "no RoPE scaling"};
    for (int k = 0; k < 4; k++) {
        GgufWriter *w = gguf_writer_new();
        gguf_w_str(w, "general.architecture", "llama");
        gguf_w_u32(w, "llama.block_count", k == 0 ? 1u << 30 : 1);
        gguf_w_u32(w, "llama.context_length", k == 1 ? 1u << 30 : 32);
        gguf_w_u32(w, "llama.embedding_length", 64);
        gguf_w_u32(w, "llama.feed_forward_length", 96);
        gguf_w_u32(w, "llama.attention.head_count", 4);
        gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
        gguf_w_u32(w, "llama.rope.dimension_count", k == 2 ? 8 : 16);
        if (k == 3) gguf_w_str(w, "llama.rope.scaling.type", "linear");
        gguf_w_tensor(w, "token_embd.weight", 2, ne, GGML_F32, emb);
        snprintf(path, sizeof path, "%s/hostile%d.gguf", dir, k);
        CHECK(gguf_writer_write(w, path, err, sizeof err) == 0, "write: %s", err);
        gguf_writer_free(w);
        Model *mm = gguf_import_model(path, err, sizeof err);
        CHECK(mm == NULL, "hostile %s accepted", keys[k]);
        CHECK_MSG(err, needles[k]);
        model_free(mm);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dapt_gguf_rt_XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    size_t n;
    uint8_t *b = spm_test_model(30, &n);
    snprintf(tok, sizeof tok, "%s/tokenizer.model", dir);
    CHECK(write_bytes(tok, b, n) == 0, "write tokenizer");
    free(b);
    SpmVocab v;
    char err[512];
    CHECK(spm_vocab_load(tok, &v, err, sizeof err) == 0, "spm: %s", err);
    CHECK(v.n == 30 && v.unk_id == 0 && v.bos_id == 1 && v.eos_id == 2 && v.pad_id == -1 &&
              v.model_type == 2 && v.add_dummy_prefix == 1,
          "spm ids: n %d unk %d bos %d eos %d pad %d type %d", v.n, v.unk_id, v.bos_id, v.eos_id,
          v.pad_id, v.model_type);
    CHECK(v.n == 30 && !strcmp(v.pieces[3], "<0x00>") && v.types[3] == 6 && v.scores[4] == -2.0f,
          "spm pieces");
    spm_vocab_free(&v);

    one_model("llama_gqa", ARCH_LLAMA, 0, 0, 0);
    one_model("llama_mha_tied", ARCH_LLAMA, 1, 1, 0);
    one_model("llama_qkv_bias", ARCH_LLAMA, 0, 0, 1);
    one_model("gpt2", ARCH_GPT2, 1, 1, 0);
    refusals();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return CHECK_DONE();
}
