/* moe_loop.c: see moe_loop.h. Invariant: touches the model only through
 * the public model / moe API. */
#include "trainer/moe_loop.h"
#include "kernels/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/hf.h"
#include "trainer/moe.h"

Model *moe_loop_upcycle(const Config *c, const Ops *ops, char *err, size_t err_len) {
    char why[512];
    Model *dense = hf_load_model(c->moe.upcycle_from, ops, why, sizeof why);
    if (!dense)
        return err_set(err, err_len, "model.upcycle_from = \"%s\": %s", c->moe.upcycle_from, why),
               NULL;
    ModelConfig mc = *model_config(dense);
    Model *m = NULL;
    if (config_apply_moe(c, &mc, 0, why, sizeof why) == 0)
        m = model_upcycle(dense, &mc, (float)c->moe.upcycle_noise, (uint64_t)c->run.seed, why,
                          sizeof why);
    if (!m) err_set(err, err_len, "model.upcycle_from = \"%s\": %s", c->moe.upcycle_from, why);
    model_free(dense);
    return m;
}

int moe_loop_configure(Model *m, const Config *c, char *err, size_t err_len) {
    if (!model_moe_num_layers(m)) return 0;
    ModelConfig mc = *model_config(m);
    if (config_apply_moe(c, &mc, 1, err, err_len)) return 1;
    return model_moe_set_loss(m, &mc, err, err_len);
}

int moe_loop_step_fields(Model *m, double aux_sum, MetricsRec *r, char *console, size_t console_len,
                         char *err, size_t err_len) {
    if (console_len) console[0] = 0;
    int Lm = model_moe_num_layers(m);
    if (!Lm) return 0;
    MoeMetrics mm;
    if (model_moe_metrics(m, &mm, err, err_len)) return 1;
    double lbl_sum = 0.0;
    metrics_rec_num(r, "moe_aux", "%.6g", aux_sum);
    metrics_rec_array_begin(r, "moe_lbl");
    for (int i = 0; i < Lm; i++) {
        MoeLayerStats st;
        model_moe_layer_stats(m, i, &st);
        lbl_sum += st.lbl;
        metrics_rec_num(r, NULL, "%.6g", st.lbl);
    }
    metrics_rec_array_end(r);
    metrics_rec_array_begin(r, "moe_load_max");
    for (int i = 0; i < Lm; i++)
        metrics_rec_num(r, NULL, "%.6g", mm.load_max[i]);
    metrics_rec_array_end(r);
    metrics_rec_num(r, "moe_worst_load", "%.6g", mm.worst_load);
    static const char *const keys[2] = {"moe_routing_domain", "moe_routing_general"};
    for (int src = 0; src < 2; src++) {
        metrics_rec_array_begin(r, keys[src]);
        for (int i = 0; i < Lm; i++) {
            metrics_rec_array_begin(r, NULL);
            for (int e = 0; e < mm.n_experts; e++)
                metrics_rec_num(r, NULL, "%.6g", mm.dist[src][(size_t)i * mm.n_experts + e]);
            metrics_rec_array_end(r);
        }
        metrics_rec_array_end(r);
    }
    metrics_rec_num(r, "moe_specialization", "%.6g", mm.specialization);
    if (console_len)
        snprintf(console, console_len, " | lbl %.3f load %.2f", lbl_sum / Lm, mm.worst_load);
    moe_metrics_free(&mm);
    model_moe_metrics_reset(m);
    return 0;
}
