/* moe_loop.h: the training loop's MoE glue (trainer/train.c calls these):
 * building an upcycled model from [model] upcycle_from, applying the [moe]
 * loss keys to a loaded model, and the per-step metrics.jsonl fields and
 * console fragment. Everything here is a thin layer over trainer/moe.h. */
#ifndef DAPT_MOE_LOOP_H
#define DAPT_MOE_LOOP_H

#include <stddef.h>

#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/model.h"

/* [model] upcycle_from (an HF directory or a dapt checkpoint of a dense
 * llama): loads it, builds the MoE of its shape plus [moe], experts copied
 * (+ upcycle_noise), routers from run.seed. NULL with a message. */
Model *moe_loop_upcycle(const Config *c, const Ops *ops, char *err, size_t err_len);
/* The [moe] loss keys (lbl, lbl_norm, lbl_coef, z_loss_coef) onto m (a
 * model from init_from or a checkpoint). No-op on a dense model. */
int moe_loop_configure(Model *m, const Config *c, char *err, size_t err_len);
/* After the last micro-batch of a step whose micro-batches' routings were
 * recorded (model_moe_record_routing): the step's fields of its
 * metrics.jsonl train record, added to r (none for a dense model), and a
 * console fragment (" | lbl 1.021 load 1.35"). aux_sum:
 * the sum of model_moe_aux_loss over the step's micro-batches. Resets the
 * routing window. Fields: moe_aux, moe_lbl [per layer, last micro-batch],
 * moe_load_max [per layer], moe_worst_load, moe_routing_domain,
 * moe_routing_general [layer][expert], moe_specialization (null until both
 * sources have tokens). */
int moe_loop_step_fields(Model *m, double aux_sum, MetricsRec *r, char *console, size_t console_len,
                         char *err, size_t err_len);

#endif
