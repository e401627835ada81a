/* moe_loop.c: see moe_loop.h. Invariant: touches the model only through
 * the public model / moe API. */
#include "trainer/moe_loop.h"
#include "kernels/util.h"

#include <math.h>
#include <stdarg.h>
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

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} Buf;

static void put(Buf *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        char *t = realloc(b->s, b->cap * 2 + (size_t)k);
        if (!t) {
            b->oom = 1;
            return;
        }
        b->s = t;
        b->cap = b->cap * 2 + (size_t)k;
    }
}

static void put_num(Buf *b, double x) {
    if (isfinite(x)) put(b, "%.6g", x);
    else put(b, "null");
}

char *moe_loop_step_fields(Model *m, double aux_sum, char *console, size_t console_len) {
    if (console_len) console[0] = 0;
    int Lm = model_moe_num_layers(m);
    Buf b = {malloc(256), 0, 256, 0};
    if (!b.s) return NULL;
    b.s[0] = 0;
    if (!Lm) return b.s;
    MoeMetrics mm;
    char err[200];
    if (model_moe_metrics(m, &mm, err, sizeof err)) {
        free(b.s);
        return NULL;
    }
    double lbl_sum = 0.0;
    put(&b, ",\"moe_aux\":");
    put_num(&b, aux_sum);
    put(&b, ",\"moe_lbl\":[");
    for (int i = 0; i < Lm; i++) {
        MoeLayerStats st;
        model_moe_layer_stats(m, i, &st);
        lbl_sum += st.lbl;
        put(&b, i ? "," : "");
        put_num(&b, st.lbl);
    }
    put(&b, "],\"moe_load_max\":[");
    for (int i = 0; i < Lm; i++) {
        put(&b, i ? "," : "");
        put_num(&b, mm.load_max[i]);
    }
    put(&b, "],\"moe_worst_load\":");
    put_num(&b, mm.worst_load);
    static const char *const names[2] = {"domain", "general"};
    for (int src = 0; src < 2; src++) {
        put(&b, ",\"moe_routing_%s\":[", names[src]);
        for (int i = 0; i < Lm; i++) {
            put(&b, "%s[", i ? "," : "");
            for (int e = 0; e < mm.n_experts; e++) {
                put(&b, e ? "," : "");
                put_num(&b, mm.dist[src][(size_t)i * mm.n_experts + e]);
            }
            put(&b, "]");
        }
        put(&b, "]");
    }
    put(&b, ",\"moe_specialization\":");
    put_num(&b, mm.specialization);
    if (console_len)
        snprintf(console, console_len, " | lbl %.3f load %.2f", lbl_sum / Lm, mm.worst_load);
    moe_metrics_free(&mm);
    model_moe_metrics_reset(m);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
