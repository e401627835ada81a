/* model_config.c: ModelConfig's defaults, names and rules (see model.h).
 * model_config_check is the one place that says which configs a Model can
 * be built from; every reader of a config (TOML, config.json, GGUF) ends
 * with it.
 */
#include <math.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/model.h"
#include "trainer/moe.h"

ModelConfig model_config_default(Arch arch) {
    ModelConfig c = {0};
    c.arch = arch;
    c.rope_theta = 10000.0f;
    c.norm_eps = arch == ARCH_GPT2 ? 1e-5f : 1e-6f;
    c.tie_embeddings = arch == ARCH_GPT2;
    c.top_k = 2;
    c.moe_layer_step = 1;
    c.norm_topk_prob = 1;
    c.lbl_mode = MOE_LBL_GLOBAL;
    c.lbl_coef = 0.008f;
    return c;
}

int model_arch_parse(const char *name, Arch *arch, char *err, size_t err_len) {
    if (!strcmp(name, "gpt2")) *arch = ARCH_GPT2;
    else if (!strcmp(name, "llama")) *arch = ARCH_LLAMA;
    else {
        err_set(err, err_len, "unknown architecture '%s' (expected \"gpt2\" or \"llama\")", name);
        return 1;
    }
    return 0;
}

const char *model_arch_name(Arch arch) { return arch == ARCH_GPT2 ? "gpt2" : "llama"; }

#define CHECK_POS(field)                                                                           \
    if (c->field < 1) return err_set(err, err_len, #field " must be >= 1 (got %d)", c->field), 1

int model_head_dim(const ModelConfig *c) {
    return c->head_dim ? c->head_dim : c->d_model / c->n_head;
}

const char *model_rope_scaling_name(int rope_scaling) {
    switch (rope_scaling) {
    case ROPE_SCALING_NONE: return "none";
    case ROPE_SCALING_LINEAR: return "linear";
    case ROPE_SCALING_LLAMA3: return "llama3";
    }
    return "?";
}

/* The RoPE and head rules of a llama config. */
static int check_rope(const ModelConfig *c, char *err, size_t err_len) {
    int HD = model_head_dim(c);
    if (HD % 2)
        return err_set(err, err_len, "RoPE needs an even head size (%s = %d)",
                       c->head_dim ? "head_dim" : "d_model / n_head", HD);
    if (!(c->rope_theta > 0.0f && isfinite(c->rope_theta)))
        return err_set(err, err_len, "rope_theta must be a finite number > 0 (got %g)",
                       c->rope_theta);
    if (c->rope_scaling == ROPE_SCALING_NONE) return 0;
    if (c->rope_scaling != ROPE_SCALING_LINEAR && c->rope_scaling != ROPE_SCALING_LLAMA3)
        return err_set(err, err_len, "unknown rope_scaling id %d", c->rope_scaling);
    if (!(c->rope_factor > 0.0f && isfinite(c->rope_factor)))
        return err_set(err, err_len, "rope scaling factor must be > 0 (got %g)", c->rope_factor);
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        if (!(c->rope_low_freq_factor > 0.0f &&
              c->rope_high_freq_factor > c->rope_low_freq_factor &&
              isfinite(c->rope_high_freq_factor)))
            return err_set(err, err_len,
                           "llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor "
                           "(got %g and %g)",
                           c->rope_low_freq_factor, c->rope_high_freq_factor);
        if (c->rope_original_max_pos < 1)
            return err_set(err, err_len,
                           "llama3 rope scaling needs original_max_position_embeddings >= 1 "
                           "(got %d)",
                           c->rope_original_max_pos);
    }
    return 0;
}

/* The size limits. model.c sizes and indexes the model with int
 * arithmetic (tensor counts, 3 * d_model, (n_head + 2 * n_kv_head) *
 * head_dim, rows of a weight); these limits, checked here in 64-bit, are
 * what keeps every such product below 2^31, whatever the config came from
 * (a TOML file, a stranger's config.json, a GGUF's metadata). */
#define LIMIT_COUNT   (1 << 16)    /* n_layer, n_head, n_kv_head, n_experts */
#define LIMIT_DIM     (1 << 30)    /* d_model, d_ff, vocab_size, max_seq_len, head_dim */
#define LIMIT_TENSORS (1 << 24)    /* entries in the parameter table */
#define LIMIT_ELEMS   0x7fffffffLL /* elements of one weight matrix (int-indexed) */

#define CHECK_MAX(field, lim)                                                                      \
    if (c->field > (lim))                                                                          \
    return err_set(err, err_len, #field " must be <= %d (got %d)", (int)(lim), c->field), 1

/* rows x cols of one weight (named) fits LIMIT_ELEMS; rows, cols < 2^32 */
static int check_matrix(const char *what, long long rows, long long cols, char *err,
                        size_t err_len) {
    if (rows > LIMIT_ELEMS || rows * cols > LIMIT_ELEMS)
        return err_set(err, err_len,
                       "%s is %lld x %lld = %lld elements: more than the limit of %lld in one "
                       "weight",
                       what, rows, cols, rows * cols, LIMIT_ELEMS);
    return 0;
}

static int check_sizes(const ModelConfig *c, char *err, size_t err_len) {
    CHECK_MAX(n_layer, LIMIT_COUNT);
    CHECK_MAX(n_head, LIMIT_COUNT);
    CHECK_MAX(n_kv_head, LIMIT_COUNT);
    CHECK_MAX(n_experts, LIMIT_COUNT);
    CHECK_MAX(d_model, LIMIT_DIM);
    CHECK_MAX(d_ff, LIMIT_DIM);
    CHECK_MAX(vocab_size, LIMIT_DIM);
    CHECK_MAX(max_seq_len, LIMIT_DIM);
    long long n_tensors = 4 + (long long)c->n_layer * (17 + 3 * (long long)c->n_experts);
    if (n_tensors > LIMIT_TENSORS)
        return err_set(err, err_len,
                       "n_layer (%d) and n_experts (%d) make %lld weight tensors: more than the "
                       "limit of %d",
                       c->n_layer, c->n_experts, n_tensors, LIMIT_TENSORS);
    return 0;
}

/* The weights' shapes (after the head size is known to be valid). */
static int check_matrices(const ModelConfig *c, char *err, size_t err_len) {
    long long C = c->d_model, F = c->d_ff, HD = model_head_dim(c);
    long long qkv = ((long long)c->n_head + 2LL * c->n_kv_head) * HD; /* gpt2: 3 d_model */
    if (check_matrix("the embedding (vocab_size x d_model)", c->vocab_size, C, err, err_len) ||
        check_matrix("the qkv weight ((n_head + 2 n_kv_head) * head_dim x d_model)", qkv, C, err,
                     err_len) ||
        check_matrix("the output projection (d_model x n_head * head_dim)", C,
                     (long long)c->n_head * HD, err, err_len) ||
        check_matrix("the up weight (2 d_ff x d_model)", 2 * F, C, err, err_len) ||
        check_matrix("the router (n_experts x d_model)", c->n_experts, C, err, err_len))
        return 1;
    if (c->arch == ARCH_GPT2 && check_matrix("gpt2's position embedding (max_seq_len x d_model)",
                                             c->max_seq_len, C, err, err_len))
        return 1;
    return 0;
}

int model_config_check(const ModelConfig *c, char *err, size_t err_len) {
    if (c->arch != ARCH_GPT2 && c->arch != ARCH_LLAMA)
        return err_set(err, err_len, "unknown architecture id %d", (int)c->arch);
    CHECK_POS(n_layer);
    CHECK_POS(n_head);
    CHECK_POS(n_kv_head);
    CHECK_POS(d_model);
    CHECK_POS(d_ff);
    CHECK_POS(vocab_size);
    CHECK_POS(max_seq_len);
    if (check_sizes(c, err, err_len)) return 1;
    if (c->head_dim < 0 || c->head_dim > 65536)
        return err_set(err, err_len, "head_dim must be in [0, 65536] (0: d_model / n_head; got %d)",
                       c->head_dim);
    if (!c->head_dim && c->d_model % c->n_head)
        return err_set(err, err_len,
                       "d_model (%d) must be divisible by n_head (%d): the head size is "
                       "d_model / n_head (or set head_dim)",
                       c->d_model, c->n_head);
    if ((long long)c->n_head * model_head_dim(c) > 0x7fffffff / 4)
        return err_set(err, err_len,
                       "n_head (%d) * head size (%d) = %lld: more than the limit of %d", c->n_head,
                       model_head_dim(c), (long long)c->n_head * model_head_dim(c), 0x7fffffff / 4);
    if (c->n_head % c->n_kv_head)
        return err_set(err, err_len,
                       "n_head (%d) must be divisible by n_kv_head (%d): each key/value head "
                       "serves n_head / n_kv_head query heads",
                       c->n_head, c->n_kv_head);
    if (c->arch == ARCH_GPT2) {
        if (c->n_kv_head != c->n_head)
            return err_set(err, err_len,
                           "gpt2 has no grouped-query attention: n_kv_head (%d) must equal "
                           "n_head (%d)",
                           c->n_kv_head, c->n_head);
        if (c->qkv_bias)
            return err_set(err, err_len, "qkv_bias is a llama option (gpt2 always has biases)");
        if (c->head_dim && c->head_dim * c->n_head != c->d_model)
            return err_set(err, err_len,
                           "gpt2's head size is d_model / n_head (%d): head_dim %d is a llama "
                           "option",
                           c->d_model / c->n_head, c->head_dim);
        if (c->qk_norm || c->rope_scaling)
            return err_set(err, err_len, "%s is a llama option (gpt2 has no RoPE)",
                           c->qk_norm ? "qk_norm" : "rope scaling");
    } else if (check_rope(c, err, err_len)) {
        return 1;
    }
    /* what no Hugging Face architecture computes, so a checkpoint of it
     * would not be an HF checkpoint */
    if (c->qk_norm && c->qkv_bias)
        return err_set(err, err_len,
                       "qk_norm with qkv_bias has no Hugging Face architecture (Qwen3's "
                       "attention_bias also biases o_proj, which dapt does not have)");
    if (c->qk_norm && c->n_experts)
        return err_set(err, err_len, "qk_norm with experts (Qwen3-MoE) is not supported");
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return err_set(err, err_len, "norm_eps must be in (0, 1) (got %g)", c->norm_eps);
    if (check_matrices(c, err, err_len)) return 1;
    return moe_config_check(c, err, err_len);
}

int model_config_same(const ModelConfig *a, const ModelConfig *b) {
    if (a->arch != b->arch || a->n_layer != b->n_layer || a->n_head != b->n_head ||
        a->n_kv_head != b->n_kv_head || a->d_model != b->d_model || a->d_ff != b->d_ff ||
        a->vocab_size != b->vocab_size || a->max_seq_len != b->max_seq_len ||
        a->norm_eps != b->norm_eps || a->tie_embeddings != b->tie_embeddings ||
        a->qkv_bias != b->qkv_bias || model_head_dim(a) != model_head_dim(b) ||
        a->qk_norm != b->qk_norm)
        return 0;
    if (a->arch == ARCH_GPT2) return 1;
    if (a->rope_theta != b->rope_theta || a->rope_scaling != b->rope_scaling) return 0;
    if (a->rope_scaling != ROPE_SCALING_NONE && a->rope_factor != b->rope_factor) return 0;
    return a->rope_scaling != ROPE_SCALING_LLAMA3 ||
           (a->rope_low_freq_factor == b->rope_low_freq_factor &&
            a->rope_high_freq_factor == b->rope_high_freq_factor &&
            a->rope_original_max_pos == b->rope_original_max_pos);
}

/* transformers' _compute_llama3_parameters for one inverse frequency f, in
 * its fp32 operation order: torch computes `scalar / tensor` as the
 * tensor's reciprocal times the scalar, and a Python float meets fp32 values
 * rounded to fp32. Wavelengths above original / low_freq_factor are divided
 * by factor, those below original / high_freq_factor kept, the ones between
 * blended by smooth = (original / wavelength - low) / (high - low). */
static float llama3_inv_freq(const ModelConfig *c, float f) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    double L = c->rope_original_max_pos, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    float wavelen = (1.0f / f) * two_pi;
    float lo_wavelen = (float)(L / lo), hi_wavelen = (float)(L / hi);
    float g = wavelen > lo_wavelen ? f / c->rope_factor : f;
    if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
        float smooth = ((1.0f / wavelen) * (float)L - (float)lo) / (float)(hi - lo);
        g = (1.0f - smooth) * g / c->rope_factor + smooth * g;
    }
    return g;
}

void model_rope_inv_freq(const ModelConfig *c, float *inv_freq) {
    int HD = model_head_dim(c);
    for (int i = 0; i < HD / 2; i++) {
        float f = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)HD);
        if (c->rope_scaling == ROPE_SCALING_LINEAR) f = f / c->rope_factor;
        else if (c->rope_scaling == ROPE_SCALING_LLAMA3) f = llama3_inv_freq(c, f);
        inv_freq[i] = f;
    }
}
