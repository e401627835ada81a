/* moe_upcycle.c: builds an MoE model from a dense llama model (sparse
 * upcycling, Komatsuzaki et al. 2023): shared tensors copied by name, every
 * expert of an MoE layer a copy of that layer's dense FFN (optionally plus
 * Gaussian noise), routers freshly initialised. Invariant: with noise 0 the
 * upcycled model computes the dense model's function when the k routing
 * weights sum to 1 (norm_topk_prob), whatever the router does.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

Model *model_upcycle(Model *dense, const ModelConfig *mc, float noise_std, uint64_t seed,
                     char *err, size_t err_len) {
    const ModelConfig *dc = model_config(dense);
    if (dc->n_experts)
        return err_set(err, err_len, "upcycle_from: the source model is already an MoE"), NULL;
    if (mc->n_experts < 2)
        return err_set(err, err_len, "upcycle_from needs [moe] n_experts >= 2 (got %d)",
                       mc->n_experts),
               NULL;
    if (dc->arch != mc->arch || dc->n_layer != mc->n_layer || dc->n_head != mc->n_head ||
        dc->n_kv_head != mc->n_kv_head || dc->d_model != mc->d_model || dc->d_ff != mc->d_ff ||
        dc->vocab_size != mc->vocab_size || dc->tie_embeddings != mc->tie_embeddings ||
        dc->qkv_bias != mc->qkv_bias || model_head_dim(dc) != model_head_dim(mc))
        return err_set(err, err_len,
                       "upcycle_from: the MoE config's sizes (layers, heads, head size, d_model, "
                       "d_ff, vocab, tying, qkv_bias) must equal the dense checkpoint's"),
               NULL;
    if (!(noise_std >= 0.0f))
        return err_set(err, err_len, "upcycle noise must be >= 0 (got %g)", noise_std), NULL;
    Model *m = model_create(mc, model_ops(dense), err, err_len);
    if (!m) return NULL;
    size_t max_numel = 1; /* one tensor at a time through the host, never the model */
    for (int i = 0; i < model_num_tensors(m); i++)
        if (model_tensor(m, i)->numel > max_numel) max_numel = model_tensor(m, i)->numel;
    float *out = malloc(max_numel * sizeof *out);
    if (!out) {
        model_free(m);
        return err_set(err, err_len, "out of host memory"), NULL;
    }
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *t = model_tensor(m, i);
        int l, e;
        char w[4], name[120];
        const char *kind = NULL;
        if (sscanf(t->name, "model.layers.%d.block_sparse_moe.experts.%d.%2s", &l, &e, w) == 3)
            kind = !strcmp(w, "w1") ? "gate_proj" : !strcmp(w, "w3") ? "up_proj" : "down_proj";
        if (strstr(t->name, ".block_sparse_moe.gate.weight")) {
            for (size_t k = 0; k < t->numel; k++) out[k] = (float)(0.02 * rng_normal(&rng));
            model_set_param_range(m, t->offset, t->numel, out);
            continue;
        }
        if (kind) snprintf(name, sizeof name, "model.layers.%d.mlp.%s.weight", l, kind);
        else snprintf(name, sizeof name, "%s", t->name);
        int j = model_find_tensor(dense, name);
        if (j < 0 || model_tensor(dense, j)->numel != t->numel) {
            err_set(err, err_len, "upcycle_from: the dense model has no tensor %s for %s", name,
                    t->name);
            free(out), model_free(m);
            return NULL;
        }
        model_get_param_range(dense, model_tensor(dense, j)->offset, t->numel, out);
        if (kind && noise_std > 0.0f)
            for (size_t k = 0; k < t->numel; k++) out[k] += (float)(noise_std * rng_normal(&rng));
        model_set_param_range(m, t->offset, t->numel, out);
    }
    free(out);
    return m;
}
