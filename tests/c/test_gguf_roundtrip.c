/* test_gguf_roundtrip.c: export -> import of tiny llama (GQA untied, MHA
 * tied, qkv bias, Mixtral-style MoE, Llama-3.1-style llama3 rope scaling,
 * linear rope scaling, a head size apart from d_model / n_head), Qwen3 (q/k
 * head norms; tied and untied) and gpt2 models through GGUF files.
 *
 * Properties: F32 export -> import gives bitwise-equal parameters and
 * logits and the same config; F16/BF16 give each parameter rounded to
 * nearest even (F16 checked against the compiler's _Float16 conversion, an
 * independent oracle); Q8_0 import is refused naming the type; the GGUF
 * tensors are exactly llama.cpp's set (no output.weight when tied) with
 * ggml shapes and norms F32; Q/K rows are in adjacent-pair order; the
 * vocabulary is padded to the embedding size; bad exports are refused with
 * the reason (existing output, no tokenizer, vocabulary too large). MoE:
 * llama.expert_count / expert_used_count, the router F32 in every file, each
 * layer's experts in one 3-D tensor per matrix (ne = {in, out, E}, slice e
 * bitwise expert e's matrix in F32); MoE layouts llama.cpp cannot run (dense
 * layers in between, no top-k renormalisation) refused with the reason.
 * The newer architectures: qwen3 files (general.architecture "qwen3",
 * attn_q_norm / attn_k_norm F32, Q/K rows NOT permuted: llama.cpp's qwen3
 * rotates HF's pairs), attention.key_length / value_length for a free head
 * size, rope.scaling.type/factor for linear scaling, rope_freqs.weight
 * (plain over scaled inverse frequency) plus dapt.rope_scaling.* for
 * llama3; import rebuilds the same config (model_config_same) and refuses
 * rope_freqs without those keys or with factors they do not give.
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

/* Q rows: GGUF row h*hd + 2i + j == HF row h*hd + j*hd/2 + i (qwen3: the
 * HF rows as they are) */
static void check_q_layout(const GgufFile *f, const Model *m, const float *p, const char *what) {
    const ModelConfig *c = model_config(m);
    int hd = model_head_dim(c), C = c->d_model, perm = !c->qk_norm;
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
                size_t gr = (size_t)h * hd + (perm ? 2 * i + j : j * hd / 2 + i);
                const float *g = (const float *)gq->data + gr * C;
                const float *s = p + q->offset + (size_t)(h * hd + j * hd / 2 + i) * C;
                bad += memcmp(g, s, (size_t)C * sizeof *g) != 0;
                if (h < c->n_kv_head) {
                    g = (const float *)gk->data + gr * C;
                    s = p + k->offset + (size_t)(h * hd + j * hd / 2 + i) * C;
                    bad += memcmp(g, s, (size_t)C * sizeof *g) != 0;
                }
            }
    CHECK(bad == 0, "%s: %d Q/K rows not in %s order", what, bad,
          perm ? "adjacent-pair" : "HF's rotate_half");
}

/* the newer architectures' keys and tensors: head size, q/k norms, rope
 * scaling as llama.cpp reads it */
static void check_arch_layout(const GgufFile *f, const Model *m, const float *p, const char *what) {
    const ModelConfig *c = model_config(m);
    const char *a = gguf_arch_name(c);
    char key[96];
    int HD = model_head_dim(c), free_head = HD * c->n_head != c->d_model || c->qk_norm;
    for (int v = 0; v < 2; v++) {
        snprintf(key, sizeof key, "%s.attention.%s_length", a, v ? "value" : "key");
        const GgufKV *kv = gguf_find_kv(f, key);
        CHECK(free_head ? kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)HD : !kv,
              "%s: %s %s", what, key, free_head ? "= head_dim" : "absent");
    }
    for (int l = 0; l < c->n_layer && c->qk_norm; l++)
        for (int k = 0; k < 2; k++) {
            char g[64], hf[96];
            snprintf(g, sizeof g, "blk.%d.attn_%c_norm.weight", l, k ? 'k' : 'q');
            snprintf(hf, sizeof hf, "model.layers.%d.self_attn.%c_norm.weight", l, k ? 'k' : 'q');
            const GgufTensor *t = gguf_find_tensor(f, g);
            const ParamTensor *pt = model_tensor(m, model_find_tensor(m, hf));
            CHECK(t && t->type == GGML_F32 && t->n_dims == 1 && t->ne[0] == (uint64_t)HD &&
                      !memcmp(t->data, p + pt->offset, (size_t)HD * 4),
                  "%s: %s F32 {head_dim}, the weights", what, g);
        }
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    const GgufKV *st = gguf_find_kv(f, key);
    snprintf(key, sizeof key, "%s.rope.scaling.factor", a);
    const GgufKV *sf = gguf_find_kv(f, key);
    int linear = c->rope_scaling == ROPE_SCALING_LINEAR;
    CHECK(linear ? st && st->type == GGUF_STRING && !strcmp(st->str, "linear") && sf &&
                       sf->type == GGUF_FLOAT32 && sf->v.f == (double)c->rope_factor
                 : !st && !sf,
          "%s: rope.scaling.type/factor %s", what, linear ? "linear" : "absent");
    const GgufTensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    const GgufKV *dt = gguf_find_kv(f, "dapt.rope_scaling.type");
    if (c->rope_scaling != ROPE_SCALING_LLAMA3) {
        CHECK(!rf && !dt, "%s: rope_freqs / dapt.rope_scaling without llama3 scaling", what);
        return;
    }
    CHECK(rf && rf->type == GGML_F32 && rf->n_dims == 1 && rf->ne[0] == (uint64_t)HD / 2,
          "%s: rope_freqs.weight F32 {head_dim / 2}", what);
    CHECK(dt && dt->type == GGUF_STRING && !strcmp(dt->str, "llama3"), "%s: dapt.rope_scaling.type",
          what);
    if (!rf || rf->type != GGML_F32) return;
    /* factor i = plain / scaled inverse frequency: 1 for the kept band, the
     * factor for the divided one, between for the blend */
    ModelConfig plain = *c;
    plain.rope_scaling = ROPE_SCALING_NONE;
    float *a0 = malloc((size_t)HD / 2 * 4), *a1 = malloc((size_t)HD / 2 * 4);
    model_rope_inv_freq(&plain, a0);
    model_rope_inv_freq(c, a1);
    int bad = 0, kept = 0, divided = 0;
    for (int i = 0; i < HD / 2; i++) {
        float got = ((const float *)rf->data)[i];
        bad += got != a0[i] / a1[i] || !(got >= 1.0f && got <= c->rope_factor);
        kept += got == 1.0f, divided += got == c->rope_factor;
    }
    CHECK(bad == 0 && kept > 0 && divided > 0 && kept + divided < HD / 2,
          "%s: rope_freqs: %d wrong, %d kept, %d divided of %d", what, bad, kept, divided, HD / 2);
    free(a0), free(a1);
}

static ModelConfig moe_config(void) {
    ModelConfig c = gguf_test_config(ARCH_LLAMA, 0, 0, 0);
    c.n_experts = 4;
    c.top_k = 2;
    c.moe_layer_start = 0;
    c.moe_layer_step = 1;
    c.norm_topk_prob = 1;
    return c;
}

/* The MoE tensors and keys; expert slices and router bitwise equal to the
 * parameters p when the file is F32. */
static void check_moe_layout(const GgufFile *f, const Model *m, const float *p, const char *what) {
    const ModelConfig *c = model_config(m);
    const GgufKV *kv = gguf_find_kv(f, "llama.expert_count");
    CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)c->n_experts, "%s: expert_count", what);
    kv = gguf_find_kv(f, "llama.expert_used_count");
    CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)c->top_k, "%s: expert_used_count", what);
    int E = c->n_experts, C = c->d_model, F = c->d_ff, bad = 0;
    for (int l = 0; l < c->n_layer; l++) {
        char name[128], hf[128];
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", l);
        const GgufTensor *r = gguf_find_tensor(f, name);
        CHECK(r && r->type == GGML_F32 && r->n_dims == 2 && r->ne[0] == (uint64_t)C &&
                  r->ne[1] == (uint64_t)E,
              "%s: %s F32 {C, E}", what, name);
        snprintf(hf, sizeof hf, "model.layers.%d.block_sparse_moe.gate.weight", l);
        const ParamTensor *rt = model_tensor(m, model_find_tensor(m, hf));
        if (r && r->type == GGML_F32) bad += memcmp(r->data, p + rt->offset, rt->numel * 4) != 0;
        static const char *const gg[3] = {"ffn_gate_exps", "ffn_down_exps", "ffn_up_exps"};
        for (int k = 1; k <= 3; k++) { /* w1 gate (F, C), w2 down (C, F), w3 up (F, C) */
            uint64_t rows = k == 2 ? C : F, cols = k == 2 ? F : C;
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, gg[k - 1]);
            const GgufTensor *g = gguf_find_tensor(f, name);
            CHECK(g && g->n_dims == 3 && g->ne[0] == cols && g->ne[1] == rows && g->ne[2] == (uint64_t)E,
                  "%s: %s ne = {%llu, %llu, %d}", what, name, (unsigned long long)cols,
                  (unsigned long long)rows, E);
            if (!g || g->type != GGML_F32) continue;
            for (int e = 0; e < E; e++) {
                snprintf(hf, sizeof hf, "model.layers.%d.block_sparse_moe.experts.%d.w%d.weight", l, e, k);
                const ParamTensor *t = model_tensor(m, model_find_tensor(m, hf));
                bad += memcmp((const float *)g->data + (size_t)e * rows * cols, p + t->offset,
                              t->numel * 4) != 0;
            }
        }
    }
    CHECK(bad == 0, "%s: %d routers / expert slices differ from the parameters", what, bad);
}

static void check_tensor_set(const GgufFile *f, const Model *m, const char *what) {
    const ModelConfig *c = model_config(m);
    /* the E experts' 3 matrices of a layer are 3 stacked tensors; llama3
     * scaling adds rope_freqs.weight */
    int want = model_num_tensors(m) - (c->n_experts ? c->n_layer * 3 * (c->n_experts - 1) : 0) +
               (c->rope_scaling == ROPE_SCALING_LLAMA3);
    CHECK(gguf_n_tensors(f) == want, "%s: %d GGUF tensors for %d dapt tensors (want %d)", what,
          gguf_n_tensors(f), model_num_tensors(m), want);
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
    CHECK(kv && kv->type == GGUF_STRING && !strcmp(kv->str, gguf_arch_name(c)), "%s: arch", what);
    char key[96];
    snprintf(key, sizeof key, "%s.block_count", gguf_arch_name(c));
    kv = gguf_find_kv(f, key);
    CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)c->n_layer, "%s: %s UINT32", what, key);
    if (c->arch == ARCH_LLAMA) {
        snprintf(key, sizeof key, "%s.attention.head_count_kv", gguf_arch_name(c));
        kv = gguf_find_kv(f, key);
        CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)c->n_kv_head, "%s: head_count_kv", what);
        snprintf(key, sizeof key, "%s.rope.dimension_count", gguf_arch_name(c));
        kv = gguf_find_kv(f, key);
        CHECK(kv && kv->type == GGUF_UINT32 && kv->v.u == (uint64_t)model_head_dim(c),
              "%s: rope dims = head size", what);
        snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", gguf_arch_name(c));
        kv = gguf_find_kv(f, key);
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
        CHECK(t0 == 2 && t1 == 3 && t3 == 4 && t20 == 1 && tpad == 5,
              "%s: types unk %d bos %d user-defined %d normal %d pad %d", what, t0, t1, t3, t20,
              tpad);
    }
    kv = gguf_find_kv(f, "tokenizer.ggml.padding_token_id");
    CHECK(kv == NULL, "%s: pad_id -1 must not be written", what);
}

static void one_config(const char *what, ModelConfig c) {
    char err[1024], path[256], out_dir[256];
    Arch arch = c.arch;
    int moe = c.n_experts > 0;
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
        if (arch == ARCH_LLAMA) check_arch_layout(f, m, p, what);
        if (moe) check_moe_layout(f, m, p, what);
        CHECK(moe || !gguf_find_kv(f, "llama.expert_count"), "%s: dense model with expert_count", what);
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
                  c2->norm_eps == c.norm_eps && (arch == ARCH_GPT2 || c2->rope_theta == c.rope_theta) &&
                  c2->n_experts == c.n_experts && (!moe || (c2->top_k == c.top_k &&
                  c2->moe_layer_start == 0 && c2->moe_layer_step == 1 && c2->norm_topk_prob == 1)) &&
                  model_config_same(c2, &c),
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
            /* norms, biases and MoE routers stay F32 */
            int rounded = t->ndim == 2 && !strstr(t->name, "block_sparse_moe.gate.");
            for (size_t k = 0; k < t->numel; k++) {
                float x = p[t->offset + k], y = p3[t->offset + k], want = x;
                if (rounded && !d) want = (float)(_Float16)x;
                if (rounded && d) {
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
        const GgufTensor *dn = gguf_find_tensor(f, moe ? "blk.0.ffn_down_exps.weight" : "blk.0.ffn_down.weight");
        CHECK(q && q->type == GGML_Q8_0, "%s: attn_output is Q8_0", what);
        /* ffn_down of llama has ne[0] = d_ff = 96 = 3 * 32: Q8_0 too */
        CHECK(dn && dn->type == GGML_Q8_0, "%s: ffn_down is Q8_0", what);
        const GgufTensor *r = gguf_find_tensor(f, "blk.1.ffn_gate_inp.weight");
        CHECK(!moe || (r && r->type == GGML_F32), "%s: the router stays F32 in Q8_0", what);
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

static void one_model(const char *what, Arch arch, int tied, int mha, int qkv_bias, int moe) {
    one_config(what, moe ? moe_config() : gguf_test_config(arch, tied, mha, qkv_bias));
}

/* Qwen3: q/k norms, head size 32 where d_model / n_head is 16 */
static ModelConfig qwen3_config(int tied) {
    ModelConfig c = gguf_test_config(ARCH_LLAMA, tied, 0, 0);
    c.qk_norm = 1;
    c.head_dim = 32;
    return c;
}

/* Llama 3.1's scaling (factor 8, low 1, high 4) over theta 100 and head
 * size 16 (wavelengths 6.3, 11, 20, 35, ...): original context 28 puts one
 * frequency in the kept band, two in the blend, five divided */
static ModelConfig llama3_config(void) {
    ModelConfig c = gguf_test_config(ARCH_LLAMA, 0, 0, 0);
    c.rope_theta = 100.0f;
    c.rope_scaling = ROPE_SCALING_LLAMA3;
    c.rope_factor = 8.0f, c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_pos = 28;
    return c;
}

/* the newer architectures' refusals: llama3 scaling on qwen3 (llama.cpp's
 * qwen3 has no rope_freqs), rope_freqs without dapt's keys, factors the
 * keys do not give, a value head size apart from the key's */
static void arch_refusals(void) {
    char err[1024], path[256];
    GgufExportOptions o = {.dtype = GGML_F32, .tokenizer = tok, .force = 1};
    ModelConfig c = qwen3_config(0);
    c.rope_scaling = ROPE_SCALING_LLAMA3;
    c.rope_factor = 8.0f, c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_pos = 28;
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "qwen3 llama3: %s", err);
    snprintf(path, sizeof path, "%s/qwen3_llama3.gguf", dir);
    CHECK(m && gguf_export_model(m, path, &o, err, sizeof err) != 0, "qwen3 + llama3 exported");
    CHECK_MSG(err, "no rope_freqs tensor");
    model_free(m);

    /* a llama3 export whose rope_freqs factor 3 is changed: refused */
    c = llama3_config();
    m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) return;
    test_model_randomize(m, 3);
    snprintf(path, sizeof path, "%s/llama3_bad_freqs.gguf", dir);
    CHECK(gguf_export_model(m, path, &o, err, sizeof err) == 0, "llama3 export: %s", err);
    model_free(m);
    GgufFile *f = gguf_open(path, err, sizeof err);
    const GgufTensor *rf = f ? gguf_find_tensor(f, "rope_freqs.weight") : NULL;
    uint64_t at = rf ? gguf_data_offset(f) + rf->offset + 3 * 4 : 0;
    gguf_close(f);
    CHECK(at > 0, "llama3 export has rope_freqs.weight");
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    float x = 1.5f;
    if (b && at + 4 <= n) memcpy(b + at, &x, 4);
    write_bytes(path, b, n);
    free(b);
    Model *mm = gguf_import_model(path, err, sizeof err);
    CHECK(mm == NULL, "changed rope_freqs imported");
    CHECK_MSG(err, "rope_freqs.weight[3] = 1.5");
    model_free(mm);

    /* minimal files refused before any tensor is read */
    static float emb[64 * 40], freqs[8];
    uint64_t ne[2] = {64, 40}, ne_f = 8;
    const char *needles[] = {"rope_freqs.weight without dapt.rope_scaling.type = llama3",
                             "dapt.rope_scaling.type without rope_freqs.weight",
                             "value_length = 8 differs from key_length 16",
                             "metadata key 'llama.rope.scaling.factor' is missing"};
    for (int k = 0; k < 4; k++) {
        GgufWriter *w = gguf_writer_new();
        gguf_w_str(w, "general.architecture", "llama");
        gguf_w_u32(w, "llama.block_count", 1);
        gguf_w_u32(w, "llama.context_length", 32);
        gguf_w_u32(w, "llama.embedding_length", 64);
        gguf_w_u32(w, "llama.feed_forward_length", 96);
        gguf_w_u32(w, "llama.attention.head_count", 4);
        gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
        if (k == 1) gguf_w_str(w, "dapt.rope_scaling.type", "llama3");
        if (k == 2) gguf_w_u32(w, "llama.attention.key_length", 16);
        if (k == 2) gguf_w_u32(w, "llama.attention.value_length", 8);
        if (k == 3) gguf_w_str(w, "llama.rope.scaling.type", "linear");
        gguf_w_tensor(w, "token_embd.weight", 2, ne, GGML_F32, emb);
        if (k == 0) gguf_w_tensor(w, "rope_freqs.weight", 1, &ne_f, GGML_F32, freqs);
        snprintf(path, sizeof path, "%s/arch_refused%d.gguf", dir, k);
        CHECK(gguf_writer_write(w, path, err, sizeof err) == 0, "write: %s", err);
        gguf_writer_free(w);
        mm = gguf_import_model(path, err, sizeof err);
        CHECK(mm == NULL, "arch refusal %d accepted", k);
        CHECK_MSG(err, needles[k]);
        model_free(mm);
    }
}

static void refusals(void) {
    char err[1024], path[256], big[128], g[96];
    int perm = -1;
    /* names outside llama.cpp's tables have no GGUF name; experts have a
     * stacked one */
    CHECK(gguf_tensor_name(ARCH_LLAMA, "model.layers.3.block_sparse_moe.gate.weight", 4, 2, g,
                           sizeof g, &perm) == 0 && !strcmp(g, "blk.3.ffn_gate_inp.weight") && perm == 0,
          "router -> %s", g);
    CHECK(gguf_tensor_name(ARCH_LLAMA, "model.layers.0.block_sparse_moe.experts.0.w1.weight", 4, 2,
                           g, sizeof g, &perm) != 0, "an expert has a 2-D name");
    int ex = -1;
    const char *en[3] = {"ffn_gate_exps", "ffn_down_exps", "ffn_up_exps"};
    for (int k = 1; k <= 3; k++) {
        char hf[96], want[64];
        snprintf(hf, sizeof hf, "model.layers.11.block_sparse_moe.experts.7.w%d.weight", k);
        snprintf(want, sizeof want, "blk.11.%s.weight", en[k - 1]);
        CHECK(gguf_expert_tensor_name(hf, g, sizeof g, &ex) == 0 && !strcmp(g, want) && ex == 7,
              "%s -> %s, expert %d", hf, g, ex);
    }
    const char *not_experts[] = {"model.layers.1.block_sparse_moe.experts.1.w4.weight",
                                 "model.layers.1.block_sparse_moe.experts.x.w1.weight",
                                 "model.layers.1.block_sparse_moe.experts.1.w1.bias",
                                 "model.layers.1.block_sparse_moe.experts.-1.w1.weight",
                                 "model.layers.+1.block_sparse_moe.experts.1.w1.weight",
                                 "model.layers.1.block_sparse_moe.gate.weight",
                                 "model.layers.1.mlp.gate_proj.weight"};
    for (int i = 0; i < 7; i++)
        CHECK(gguf_expert_tensor_name(not_experts[i], g, sizeof g, &ex) != 0, "%s mapped to %s",
              not_experts[i], g);
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

    /* MoE layouts llama.cpp's llama architecture cannot run */
    o.tokenizer = tok;
    for (int k = 0; k < 2; k++) {
        c = moe_config();
        if (k == 0) c.moe_layer_step = 2; /* layer 1 dense */
        else c.norm_topk_prob = 0;        /* Qwen-MoE */
        m = model_create(&c, ops_cpu(), err, sizeof err);
        CHECK(m != NULL, "moe model %d: %s", k, err);
        if (!m) continue;
        snprintf(path, sizeof path, "%s/moe_refused%d.gguf", dir, k);
        CHECK(gguf_export_model(m, path, &o, err, sizeof err) != 0, "moe layout %d exported", k);
        CHECK_MSG(err, k == 0 ? "layer 1 of this MoE model is dense" : "norm_topk_prob = false");
        CHECK(access(path, F_OK) != 0, "a refused export left %s", path);
        model_free(m);
    }

    /* import refuses hostile or unsupported hyperparameters before it
     * allocates a model */
    static float emb[64 * 40];
    uint64_t ne[2] = {64, 40};
    const char *keys[] = {"llama.block_count", "llama.context_length", "llama.rope.dimension_count",
                          "llama.rope.scaling.type", "llama.expert_count",
                          "llama.expert_used_count"};
    const char *needles[] = {"tensors, but a dapt llama model with 1073741824 blocks",
                             "larger than dapt's limit", "rotates part of the head",
                             "llama.rope.scaling.type = yarn is not supported",
                             "llama.expert_count = 1073741824 needs a 3-D tensor blk.0.ffn_gate_exps",
                             "llama.expert_used_count"};
    for (int k = 0; k < 6; k++) {
        GgufWriter *w = gguf_writer_new();
        gguf_w_str(w, "general.architecture", "llama");
        gguf_w_u32(w, "llama.block_count", k == 0 ? 1u << 30 : 1);
        gguf_w_u32(w, "llama.context_length", k == 1 ? 1u << 30 : 32);
        gguf_w_u32(w, "llama.embedding_length", 64);
        gguf_w_u32(w, "llama.feed_forward_length", 96);
        gguf_w_u32(w, "llama.attention.head_count", 4);
        gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
        gguf_w_u32(w, "llama.rope.dimension_count", k == 2 ? 8 : 16);
        if (k == 3) gguf_w_str(w, "llama.rope.scaling.type", "yarn");
        if (k == 4) gguf_w_u32(w, "llama.expert_count", 1u << 30);
        if (k == 4) gguf_w_u32(w, "llama.expert_used_count", 2);
        if (k == 5) gguf_w_u32(w, "llama.expert_count", 4); /* no expert_used_count */
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
    CHECK(v.n == 30 && !strcmp(v.pieces[3], "<0x00>") && v.types[3] == 4 && v.scores[4] == -2.0f,
          "spm pieces");
    spm_vocab_free(&v);

    one_model("llama_gqa", ARCH_LLAMA, 0, 0, 0, 0);
    one_model("llama_mha_tied", ARCH_LLAMA, 1, 1, 0, 0);
    one_model("llama_qkv_bias", ARCH_LLAMA, 0, 0, 1, 0);
    one_model("gpt2", ARCH_GPT2, 1, 1, 0, 0);
    one_model("mixtral", ARCH_LLAMA, 0, 0, 0, 1);
    one_config("qwen3", qwen3_config(0));
    one_config("qwen3_tied", qwen3_config(1));
    one_config("llama3", llama3_config());
    ModelConfig c = gguf_test_config(ARCH_LLAMA, 1, 0, 0);
    c.rope_scaling = ROPE_SCALING_LINEAR, c.rope_factor = 4.0f;
    c.head_dim = 24; /* a llama's head size apart from d_model / n_head (16) */
    one_config("llama_linear_hd24", c);
    refusals();
    arch_refusals();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return CHECK_DONE();
}
