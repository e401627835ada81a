/* export.c: a dapt Model (arch llama or gpt2) -> a GGUF file llama.cpp
 * loads: the architecture's hyperparameters under the key names and types
 * llama.cpp's loader requires (counts UINT32, epsilons and RoPE base
 * FLOAT32), the tensors under llama.cpp's names, and the tokenizer as
 * tokenizer.ggml.* metadata (vocab_export.c). A llama with q/k head norms is
 * llama.cpp's "qwen3" (tensors blk.N.attn_q_norm / attn_k_norm), any other
 * llama "llama"; a head size apart from d_model / n_head is written as
 * ARCH.attention.key_length / value_length.
 *
 * RoPE scaling: linear as ARCH.rope.scaling.type = "linear" and
 * rope.scaling.factor (llama.cpp divides the positions); llama3 (arch llama
 * only: llama.cpp's qwen3 has no such tensor) as llama.cpp's converter
 * writes it, a tensor rope_freqs.weight of head_dim / 2 F32 factors that
 * llama.cpp divides each frequency by (here plain / scaled inverse
 * frequency, model_rope_inv_freq), plus dapt.rope_scaling.* keys with the
 * parameters, from which import rebuilds the config (llama.cpp ignores
 * them).
 *
 * Streaming: each GGUF tensor is registered with a fill (gguf_w_tensor_fill)
 * that reads it (from the Model, or from a directory's safetensors with
 * gguf_export_dir) when the writer reaches it, so host memory is one tensor
 * (and its permuted copy), never the whole model.
 *
 * Invariants: every Model tensor maps to exactly one GGUF tensor and no
 * other tensor is written but rope_freqs.weight (llama.cpp refuses files
 * with extra tensors); a tied head is written only as token_embd.weight;
 * shapes are ggml order (ne = {in, out} for an in-memory [out, in] weight);
 * 1-D tensors (norms, biases, rope_freqs) stay F32 whatever the dtype; Q and
 * K rows (weights and biases) of an arch-llama model are permuted per head
 * from the HF rotate_half layout to ggml's adjacent-pair RoPE layout
 * (llama.cpp's converter does the same; its qwen3 rotates rotate_half pairs:
 * no permutation); a matrix whose ne[0] is not a multiple of 32 is written
 * F16 in a Q8_0 file (as llama.cpp's converter falls back).
 *
 * MoE (Mixtral) layers: the router block_sparse_moe.gate (E, C) is
 * blk.N.ffn_gate_inp.weight, always F32 (llama.cpp's converter and quantizer
 * keep it F32: it decides the routing); the experts' w1, w3, w2 are stacked
 * along a third, slowest dimension into blk.N.ffn_{gate,up,down}_exps.weight
 * with ne = {in, out, E} (expert e's [out, in] matrix is slice e). llama.cpp's
 * llama architecture makes every layer MoE when llama.expert_count > 0 and
 * always renormalises the top-k weights, so a model with dense layers in
 * between or with norm_topk_prob = 0 (Qwen-MoE) is refused.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/util.h"
#include "tokenizer/tokenizer.h"
#include "tools/gguf/gguf.h"
#include "trainer/hf.h"
#include "trainer/model.h"
#include "trainer/moe.h"

/* HF suffix -> GGUF suffix, and which head count permutes its rows. */
enum { PERM_NONE = 0, PERM_Q = 1, PERM_K = 2 };
typedef struct {
    const char *hf, *gguf;
    int perm;
} NameMap;

static const NameMap llama_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight", PERM_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", PERM_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", PERM_K},
    {"self_attn.v_proj.weight", "attn_v.weight", PERM_NONE},
    {"self_attn.q_proj.bias", "attn_q.bias", PERM_Q},
    {"self_attn.k_proj.bias", "attn_k.bias", PERM_K},
    {"self_attn.v_proj.bias", "attn_v.bias", PERM_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", PERM_NONE},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", PERM_NONE},
    {"self_attn.k_norm.weight", "attn_k_norm.weight", PERM_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", PERM_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", PERM_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", PERM_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", PERM_NONE},
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight", PERM_NONE},
};
static const NameMap llama_global[] = {
    {"model.embed_tokens.weight", "token_embd.weight", PERM_NONE},
    {"model.norm.weight", "output_norm.weight", PERM_NONE},
    {"lm_head.weight", "output.weight", PERM_NONE},
};
static const NameMap gpt2_layer[] = {
    {"ln_1.weight", "attn_norm.weight", PERM_NONE},
    {"ln_1.bias", "attn_norm.bias", PERM_NONE},
    {"attn.c_attn.weight", "attn_qkv.weight", PERM_NONE},
    {"attn.c_attn.bias", "attn_qkv.bias", PERM_NONE},
    {"attn.c_proj.weight", "attn_output.weight", PERM_NONE},
    {"attn.c_proj.bias", "attn_output.bias", PERM_NONE},
    {"ln_2.weight", "ffn_norm.weight", PERM_NONE},
    {"ln_2.bias", "ffn_norm.bias", PERM_NONE},
    {"mlp.c_fc.weight", "ffn_up.weight", PERM_NONE},
    {"mlp.c_fc.bias", "ffn_up.bias", PERM_NONE},
    {"mlp.c_proj.weight", "ffn_down.weight", PERM_NONE},
    {"mlp.c_proj.bias", "ffn_down.bias", PERM_NONE},
};
static const NameMap gpt2_global[] = {
    {"transformer.wte.weight", "token_embd.weight", PERM_NONE},
    {"transformer.wpe.weight", "position_embd.weight", PERM_NONE},
    {"transformer.ln_f.weight", "output_norm.weight", PERM_NONE},
    {"transformer.ln_f.bias", "output_norm.bias", PERM_NONE},
    {"lm_head.weight", "output.weight", PERM_NONE},
};
#define N_OF(a) (int)(sizeof(a) / sizeof((a)[0]))

int gguf_tensor_name(int arch, const char *hf, int n_head, int n_kv_head, char *out,
                     size_t out_len, int *permute_heads) {
    const NameMap *layer = arch == ARCH_LLAMA ? llama_layer : gpt2_layer;
    const NameMap *global = arch == ARCH_LLAMA ? llama_global : gpt2_global;
    int n_layer_map = arch == ARCH_LLAMA ? N_OF(llama_layer) : N_OF(gpt2_layer);
    int n_global = arch == ARCH_LLAMA ? N_OF(llama_global) : N_OF(gpt2_global);
    const char *prefix = arch == ARCH_LLAMA ? "model.layers." : "transformer.h.";
    const NameMap *hit = NULL;
    int block = -1;
    size_t pl = strlen(prefix);
    if (!strncmp(hf, prefix, pl)) {
        char *end;
        long b = strtol(hf + pl, &end, 10);
        if (end != hf + pl && *end == '.' && b >= 0 && b < 100000) {
            for (int i = 0; i < n_layer_map && !hit; i++)
                if (!strcmp(end + 1, layer[i].hf)) hit = &layer[i];
            block = (int)b;
        }
    } else {
        for (int i = 0; i < n_global && !hit; i++)
            if (!strcmp(hf, global[i].hf)) hit = &global[i];
    }
    if (!hit) return 1;
    int n = block >= 0 ? snprintf(out, out_len, "blk.%d.%s", block, hit->gguf)
                       : snprintf(out, out_len, "%s", hit->gguf);
    if (n < 0 || (size_t)n >= out_len) return 1;
    *permute_heads = hit->perm == PERM_Q ? n_head : hit->perm == PERM_K ? n_kv_head : 0;
    return 0;
}

/* model.layers.N.block_sparse_moe.experts.E.wK.weight -> N, E, K (1..3);
 * 1 when hf is not an expert tensor. */
static int parse_expert(const char *hf, int *block, int *expert, int *k) {
    static const char pre[] = "model.layers.", mid[] = ".block_sparse_moe.experts.";
    const char *s = hf + sizeof pre - 1;
    char *end;
    if (strncmp(hf, pre, sizeof pre - 1) || !isdigit((unsigned char)*s)) return 1;
    long b = strtol(s, &end, 10);
    if (b >= 100000 || strncmp(end, mid, sizeof mid - 1)) return 1;
    s = end + sizeof mid - 1;
    if (!isdigit((unsigned char)*s)) return 1;
    long e = strtol(s, &end, 10);
    if (e >= (1 << 20) || end[0] != '.' || end[1] != 'w' || end[2] < '1' || end[2] > '3' ||
        strcmp(end + 3, ".weight"))
        return 1;
    *block = (int)b;
    *expert = (int)e;
    *k = end[2] - '0';
    return 0;
}

int gguf_expert_tensor_name(const char *hf, char *out, size_t out_len, int *expert) {
    static const char *const stacked[4] = {NULL, "ffn_gate_exps", "ffn_down_exps", "ffn_up_exps"};
    int block, k;
    if (parse_expert(hf, &block, expert, &k)) return 1;
    int n = snprintf(out, out_len, "blk.%d.%s.weight", block, stacked[k]);
    return n < 0 || (size_t)n >= out_len;
}

/* Per head, HF keeps the two halves of each rotated pair hd/2 rows apart
 * (rotate_half); ggml's "normal" RoPE rotates adjacent rows. GGUF row
 * h*hd + 2*i + j holds HF row h*hd + j*hd/2 + i (i < hd/2, j in {0, 1}). */
void gguf_permute_rows(const float *src, float *dst, int rows, int cols, int n_heads, int inverse) {
    int hd = rows / n_heads, half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                size_t g = (size_t)h * hd + 2 * i + j, f = (size_t)h * hd + (size_t)j * half + i;
                size_t to = inverse ? f : g, from = inverse ? g : f;
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * sizeof *dst);
            }
}

static uint32_t file_type_of(uint32_t dtype) {
    switch (dtype) {
    case GGML_F16: return GGUF_FTYPE_F16;
    case GGML_BF16: return GGUF_FTYPE_BF16;
    case GGML_Q8_0: return GGUF_FTYPE_Q8_0;
    }
    return GGUF_FTYPE_F32;
}

const char *gguf_arch_name(const ModelConfig *c) {
    return c->arch == ARCH_GPT2 ? "gpt2" : c->qk_norm ? "qwen3" : "llama";
}

int gguf_rope_freq_factors(const ModelConfig *c, float *factors) {
    int half = model_head_dim(c) / 2;
    ModelConfig plain = *c;
    plain.rope_scaling = ROPE_SCALING_NONE;
    float *scaled = malloc((size_t)(half + 1) * sizeof *scaled);
    if (!scaled) return 1;
    model_rope_inv_freq(&plain, factors);
    model_rope_inv_freq(c, scaled);
    for (int i = 0; i < half; i++) factors[i] /= scaled[i];
    free(scaled);
    return 0;
}

static void write_hparams(GgufWriter *w, const ModelConfig *c) {
    const char *a = gguf_arch_name(c);
    char k[96];
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", a, suffix), k)
    gguf_w_u32(w, KEY("context_length"), (uint32_t)c->max_seq_len);
    gguf_w_u32(w, KEY("embedding_length"), (uint32_t)c->d_model);
    gguf_w_u32(w, KEY("block_count"), (uint32_t)c->n_layer);
    gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)c->d_ff);
    gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)c->n_head);
    if (c->arch == ARCH_LLAMA) {
        int HD = model_head_dim(c);
        gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_head);
        if (c->qk_norm || HD * c->n_head != c->d_model) {
            gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)HD);
            gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)HD);
        }
        gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)HD);
        gguf_w_f32(w, KEY("rope.freq_base"), c->rope_theta);
        gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps);
        gguf_w_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size);
        if (c->rope_scaling == ROPE_SCALING_LINEAR) {
            gguf_w_str(w, KEY("rope.scaling.type"), "linear");
            gguf_w_f32(w, KEY("rope.scaling.factor"), c->rope_factor);
        } else if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
            gguf_w_str(w, "dapt.rope_scaling.type", "llama3");
            gguf_w_f32(w, "dapt.rope_scaling.factor", c->rope_factor);
            gguf_w_f32(w, "dapt.rope_scaling.low_freq_factor", c->rope_low_freq_factor);
            gguf_w_f32(w, "dapt.rope_scaling.high_freq_factor", c->rope_high_freq_factor);
            gguf_w_u32(w, "dapt.rope_scaling.original_max_position_embeddings",
                       (uint32_t)c->rope_original_max_pos);
        }
        if (c->n_experts) {
            gguf_w_u32(w, KEY("expert_count"), (uint32_t)c->n_experts);
            gguf_w_u32(w, KEY("expert_used_count"), (uint32_t)c->top_k);
        }
    } else {
        gguf_w_f32(w, KEY("attention.layer_norm_epsilon"), c->norm_eps);
    }
#undef KEY
}

/* a matrix's GGUF type for the requested dtype: Q8_0 needs ne[0] (cols) a
 * multiple of its block, else F16 (llama.cpp's converter falls back so) */
static uint32_t matrix_type(uint32_t dtype, int cols) {
    return dtype == GGML_Q8_0 && cols % GGUF_Q8_0_BLOCK ? GGML_F16 : dtype;
}

/* Where the exported weights come from: a Model's parameters
 * (model_get_param_range), or, with set, a model directory's safetensors
 * read tensor by tensor (m is then only the parameter table). */
typedef struct {
    const Model *m;
    StSet *set;
} Source;

static int read_param(const Source *s, int i, float *dst, char *err, size_t err_len) {
    if (s->set) return hf_read_tensor(s->set, s->m, i, dst, err, err_len);
    const ParamTensor *t = model_tensor(s->m, i);
    model_get_param_range(s->m, t->offset, t->numel, dst);
    return 0;
}

/* One GGUF tensor's fill: table tensor i, rows permuted over perm heads
 * (0: none); or, when block >= 0, the stack of block's experts' wK
 * matrices (each of numel elements), expert e at slice e. */
typedef struct {
    const Source *src;
    int i, perm, block, k;
} Job;

static int fill_tensor(void *ctx, float *dst, char *err, size_t err_len) {
    const Job *j = ctx;
    const Model *m = j->src->m;
    const ParamTensor *t = model_tensor(m, j->i);
    if (j->block >= 0) {
        for (int e = 0; e < model_config(m)->n_experts; e++) {
            char name[128];
            snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.w%d.weight",
                     j->block, e, j->k);
            if (read_param(j->src, model_find_tensor(m, name), dst + (size_t)e * t->numel, err,
                           err_len))
                return 1;
        }
        return 0;
    }
    if (!j->perm) return read_param(j->src, j->i, dst, err, err_len);
    float *tmp = malloc(t->numel * sizeof *tmp);
    if (!tmp) return err_set(err, err_len, "out of memory for tensor %s", t->name);
    int rc = read_param(j->src, j->i, tmp, err, err_len);
    if (!rc) gguf_permute_rows(tmp, dst, t->shape[0], t->ndim == 2 ? t->shape[1] : 1, j->perm, 0);
    free(tmp);
    return rc;
}

/* blk.N.ffn_{gate,down,up}_exps.weight: the E experts' wK matrices of block
 * N stacked, ne = {cols, rows, E}, filled by job when written; every
 * expert's tensor is checked here, before anything is written. */
static int write_expert_stack(GgufWriter *w, const Model *m, const ParamTensor *t0, Job *job,
                              const char *gname, uint32_t dtype, char *err, size_t err_len) {
    const ModelConfig *c = model_config(m);
    int E = c->n_experts, rows = t0->shape[0], cols = t0->shape[1];
    for (int e = 0; e < E; e++) {
        char name[128];
        snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.w%d.weight",
                 job->block, e, job->k);
        int j = model_find_tensor(m, name);
        const ParamTensor *t = j >= 0 ? model_tensor(m, j) : NULL;
        if (!t || t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
            return err_set(err, err_len, "expert tensor %s is missing or not [%d, %d]", name, rows,
                           cols);
    }
    uint64_t ne[3] = {(uint64_t)cols, (uint64_t)rows, (uint64_t)E};
    gguf_w_tensor_fill(w, gname, 3, ne, matrix_type(dtype, cols), fill_tensor, job);
    return 0;
}

static int export_from(const Source *src, const char *path, const GgufExportOptions *o, char *err,
                       size_t err_len) {
    const Model *m = src->m;
    const ModelConfig *c = model_config(m);
    if (c->arch != ARCH_LLAMA && c->arch != ARCH_GPT2)
        return err_set(err, err_len, "architecture %d cannot be exported to GGUF", (int)c->arch);
    if (o->dtype != GGML_F32 && o->dtype != GGML_F16 && o->dtype != GGML_BF16 && o->dtype != GGML_Q8_0)
        return err_set(err, err_len, "dtype must be F32, F16, BF16 or Q8_0");
    if (!o->tokenizer)
        return err_set(err, err_len,
                       "no tokenizer (tokenizer.json or tokenizer.model): llama.cpp needs the "
                       "vocabulary in the GGUF file (pass --tokenizer PATH)");
    if (!o->force && access(path, F_OK) == 0)
        return err_set(err, err_len, "%s exists (pass --force to overwrite it)", path);
    if (c->qk_norm && c->rope_scaling == ROPE_SCALING_LLAMA3)
        return err_set(err, err_len,
                       "llama3 rope scaling on a model with q/k norms (Qwen3): llama.cpp's qwen3 "
                       "architecture has no rope_freqs tensor to carry it: not exported to GGUF");
    if (c->n_experts && !c->norm_topk_prob)
        return err_set(err, err_len,
                       "this MoE model does not renormalise its top-%d routing weights "
                       "(norm_topk_prob = false, Qwen-MoE semantics); llama.cpp's llama "
                       "architecture always does (Mixtral semantics), so it would compute another "
                       "function: not exported to GGUF",
                       c->top_k);
    for (int l = 0; c->n_experts && l < c->n_layer; l++)
        if (!moe_is_layer(c, l))
            return err_set(err, err_len,
                           "layer %d of this MoE model is dense (moe layer_start %d, layer_step "
                           "%d); llama.cpp's llama architecture makes every layer MoE when "
                           "expert_count > 0: only models whose every layer is MoE (layer_start 0, "
                           "layer_step 1, as Mixtral) can be exported to GGUF",
                           l, c->moe_layer_start, c->moe_layer_step);
    /* map every tensor first: a model with a part GGUF cannot name is refused whole */
    int n = model_num_tensors(m);
    char gname[96];
    for (int i = 0; i < n; i++) {
        int perm, expert;
        const ParamTensor *t = model_tensor(m, i);
        if (c->arch == ARCH_LLAMA && !gguf_expert_tensor_name(t->name, gname, sizeof gname, &expert))
            continue;
        if (gguf_tensor_name(c->arch, t->name, c->n_head, c->n_kv_head, gname, sizeof gname, &perm))
            return err_set(err, err_len,
                           "tensor '%s' has no llama.cpp equivalent for arch %s: this model "
                           "cannot be exported to GGUF",
                           t->name, model_arch_name(c->arch));
    }
    Tokenizer *tok;
    if (tokenizer_load(&tok, o->tokenizer, err, err_len)) return 1;
    GgufWriter *w = gguf_writer_new();
    Job *jobs = calloc((size_t)n + 1, sizeof *jobs); /* read when the file is written */
    float *freqs = malloc((size_t)(model_head_dim(c) / 2 + 1) * sizeof *freqs);
    int rc = 1;
    if (!w || !jobs || !freqs) {
        err_set(err, err_len, "out of memory");
        goto out;
    }
    gguf_w_str(w, "general.architecture", gguf_arch_name(c));
    gguf_w_str(w, "general.name", o->name ? o->name : "dapt");
    gguf_w_u32(w, "general.file_type", file_type_of(o->dtype));
    write_hparams(w, c);
    if (gguf_write_tokenizer(w, tok, c->vocab_size, err, err_len)) goto out;
    for (int i = 0; i < n; i++) {
        const ParamTensor *t = model_tensor(m, i);
        int perm, block, expert, k;
        int rows = t->shape[0], cols = t->ndim == 2 ? t->shape[1] : 1;
        jobs[i] = (Job){src, i, 0, -1, 0};
        if (c->arch == ARCH_LLAMA && !parse_expert(t->name, &block, &expert, &k)) {
            /* expert 0's tensor writes the stack of all E experts' */
            if (expert != 0) continue;
            gguf_expert_tensor_name(t->name, gname, sizeof gname, &expert);
            jobs[i].block = block, jobs[i].k = k;
            if (write_expert_stack(w, m, t, &jobs[i], gname, o->dtype, err, err_len)) goto out;
            continue;
        }
        gguf_tensor_name(c->arch, t->name, c->n_head, c->n_kv_head, gname, sizeof gname, &perm);
        if (c->qk_norm) perm = 0; /* qwen3: rotate_half pairs, as HF */
        jobs[i].perm = perm;
        uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
        uint32_t type = GGML_F32;
        if (t->ndim == 2) {
            type = matrix_type(o->dtype, cols);
            if (strstr(gname, "ffn_gate_inp")) type = GGML_F32; /* the router, as llama.cpp's converter */
            gguf_w_tensor_fill(w, gname, 2, ne, type, fill_tensor, &jobs[i]);
        } else {
            gguf_w_tensor_fill(w, gname, 1, ne + 1, type, fill_tensor, &jobs[i]);
        }
    }
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        uint64_t ne = (uint64_t)model_head_dim(c) / 2;
        if (gguf_rope_freq_factors(c, freqs)) {
            err_set(err, err_len, "out of memory");
            goto out;
        }
        gguf_w_tensor(w, "rope_freqs.weight", 1, &ne, GGML_F32, freqs);
    }
    rc = gguf_writer_write(w, path, err, err_len);
out:
    free(jobs);
    free(freqs);
    gguf_writer_free(w);
    tokenizer_free(tok);
    return rc;
}

int gguf_export_model(const Model *m, const char *path, const GgufExportOptions *o, char *err,
                      size_t err_len) {
    Source src = {m, NULL};
    return export_from(&src, path, o, err, err_len);
}

int gguf_export_dir(const char *dir, const char *path, const GgufExportOptions *o,
                    size_t *n_params, char *err, size_t err_len) {
    ModelConfig cfg;
    if (hf_load_config(dir, &cfg, err, err_len)) return 1;
    Model *table = model_create_table(&cfg, err, err_len);
    if (!table) return 1;
    Source src = {table, NULL};
    int rc = hf_check_weights(dir, table, err, err_len) ||
             !(src.set = st_set_open(dir, err, err_len)) ||
             export_from(&src, path, o, err, err_len);
    if (!rc && n_params) *n_params = model_num_params(table);
    st_set_close(src.set);
    model_free(table);
    return rc;
}
