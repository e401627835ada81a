/* model_moe.c: the training loop's MoE API on a Model (moe.h, "the training
 * loop's API"): each function hands the model's MoE state (model_moe_state,
 * NULL for a dense model) to its moe_* counterpart in moe.c, so the MoE layer
 * never calls back into model.c. */
#include "trainer/moe.h"

int model_moe_set_loss(Model *m, const ModelConfig *src, char *err, size_t err_len) {
    MoeState *s = model_moe_state(m);
    if (!s) return 0;
    if (moe_set_loss(s, src, err, err_len)) return 1;
    /* the Model owns its config (model_config only hands out a const view);
     * keep its copy of these fields equal to the one the MoE code uses */
    ModelConfig *mc = (ModelConfig *)model_config(m);
    mc->lbl_mode = src->lbl_mode;
    mc->lbl_norm = src->lbl_norm;
    mc->lbl_coef = src->lbl_coef;
    mc->z_loss_coef = src->z_loss_coef;
    return 0;
}

void model_moe_set_allreduce(Model *m, MoeSumBegin begin, MoeSumFinish finish, void *ctx) {
    moe_set_allreduce(model_moe_state(m), begin, finish, ctx);
}

int model_moe_begin_step(Model *m, int64_t n_tokens_global, char *err, size_t err_len) {
    return moe_begin_step(model_moe_state(m), n_tokens_global, err, err_len);
}

int model_moe_num_layers(const Model *m) {
    return moe_num_layers(model_moe_state(m));
}

int model_moe_layer_stats(const Model *m, int i, MoeLayerStats *out) {
    return moe_layer_stats(model_moe_state(m), i, out);
}

double model_moe_aux_loss(const Model *m) {
    return moe_aux_loss(model_moe_state(m));
}

int model_moe_record_routing(Model *m, const int *row_source, int B, char *err, size_t err_len) {
    return moe_record_routing(model_moe_state(m), row_source, B, err, err_len);
}

int model_moe_metrics(const Model *m, MoeMetrics *out, char *err, size_t err_len) {
    return moe_metrics(model_moe_state(m), out, err, err_len);
}

void model_moe_metrics_reset(Model *m) {
    moe_metrics_reset(model_moe_state(m));
}
