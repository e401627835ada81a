/* tiny_model.h: the small model of the tests that run a few training steps
 * of every architecture on two op tables and compare them (test_ops_profile,
 * test_fused_norm): 3 layers, d_model 32, 4 heads (llama: 2 kv heads),
 * d_ff 48, vocabulary 50, T <= 16; n_experts > 0 makes the llama an MoE
 * with top-2 routing. */
#ifndef DAPT_TEST_TINY_MODEL_H
#define DAPT_TEST_TINY_MODEL_H

#include "trainer/model.h"

static inline ModelConfig test_tiny_config(Arch arch, int n_experts) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 3;
    c.n_head = 4;
    c.n_kv_head = arch == ARCH_LLAMA ? 2 : 4;
    c.d_model = 32;
    c.d_ff = 48;
    c.vocab_size = 50;
    c.max_seq_len = 16;
    if (n_experts) c.n_experts = n_experts, c.top_k = 2;
    return c;
}

#endif
