/* model_config.c: ModelConfig's defaults, names and rules (see model.h).
 * model_config_check is the one place that says which configs a Model can
 * be built from; every reader of a config (TOML, config.json, GGUF) ends
 * with it.
 */
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
    if (c->d_model % c->n_head)
        return err_set(err, err_len,
                       "d_model (%d) must be divisible by n_head (%d): the head size is "
                       "d_model / n_head",
                       c->d_model, c->n_head);
    if (c->n_head % c->n_kv_head)
        return err_set(err, err_len,
                       "n_head (%d) must be divisible by n_kv_head (%d): each key/value head "
                       "serves n_head / n_kv_head query heads",
                       c->n_head, c->n_kv_head);
    if (c->arch == ARCH_GPT2 && c->n_kv_head != c->n_head)
        return err_set(err, err_len,
                       "gpt2 has no grouped-query attention: n_kv_head (%d) must equal "
                       "n_head (%d)",
                       c->n_kv_head, c->n_head);
    if (c->arch == ARCH_GPT2 && c->qkv_bias)
        return err_set(err, err_len, "qkv_bias is a llama option (gpt2 always has biases)");
    if (c->arch == ARCH_LLAMA && (c->d_model / c->n_head) % 2)
        return err_set(err, err_len, "RoPE needs an even head size (d_model / n_head = %d)",
                       c->d_model / c->n_head);
    if (c->arch == ARCH_LLAMA && !(c->rope_theta > 0.0f))
        return err_set(err, err_len, "rope_theta must be > 0 (got %g)", c->rope_theta);
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return err_set(err, err_len, "norm_eps must be in (0, 1) (got %g)", c->norm_eps);
    if (c->vocab_size > 0x7fffffff / c->d_model)
        return err_set(err, err_len, "vocab_size * d_model is too large");
    return moe_config_check(c, err, err_len);
}
