/* test_zero23.c: ZeRO-2/3 windows and the optimizer offload in one process
 * (model_create_sharded at world size 1, where the shard is everything but
 * every gradient still goes through a unit's window, and at stage 3 every
 * parameter read through a gathered window). The oracle is the plain
 * model (model_create): from the same weights and batches, each step's loss
 * and gradients and the parameters after AdamW must be bitwise equal (one
 * micro-batch a step: a window's sum is 0 + the backward's, added to a zero
 * shard; the offloaded AdamW is the CPU backend's kernel on the same
 * values). Architectures: a tied GPT-2 (two gradient windows: the head's
 * gradient waits in the embeddings' window), a llama, an MoE llama (the
 * router and experts through the window's base pointer), a tied Qwen3-like
 * llama (q/k norms); each with recompute "none" and "block". A model
 * asked for parameters outside any gathered window aborts, so a unit
 * sequence that forgot a gather fails here too. The multi-rank collectives
 * are tested under mpirun (tests/dist/dist_e2e.sh zero23). */
#include <stdlib.h>
#include <string.h>

#include "tests/c/check.h"
#include "tests/c/tiny_model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

enum { B = 2, T = 16, N = B * T, STEPS = 3 };
static const AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 0.5f}; /* clipping active */

static int step(Model *m, int s, float *loss, char *err, size_t err_len) {
    const ModelConfig *c = model_config(m);
    Rng r;
    rng_seed(&r, 200 + (uint64_t)s);
    int32_t tok[N], tgt[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)rng_below(&r, (uint64_t)c->vocab_size);
    for (int i = 0; i < N; i++) tgt[i] = (int32_t)rng_below(&r, (uint64_t)c->vocab_size);
    model_zero_grad(m);
    if (c->n_experts && model_moe_begin_step(m, N, err, err_len)) return 1;
    return model_forward_backward(m, tok, tgt, B, T, 1.0f / N, loss, err, err_len);
}

static size_t n_differ(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

static void check_case(const char *name, ModelConfig c, int stage, int offload, int recompute) {
    char err[256] = "";
    size_t P = model_config_num_params(&c);
    ModelShard sh = {.stage = stage, .world = 1, .rank = 0, .pieces = &P, .offload = offload};
    Model *m[2] = {model_create(&c, ops_cpu(), err, sizeof err),
                   model_create_sharded(&c, ops_cpu(), &sh, err, sizeof err)};
    CHECK(m[0] && m[1], "%s: %s", name, err);
    if (!m[0] || !m[1]) return;
    CHECK(model_zero_stage(m[1]) == stage && model_offload(m[1]) == offload);
    float *g[2] = {malloc(P * 4), malloc(P * 4)}, *p[2] = {malloc(P * 4), malloc(P * 4)};
    for (int k = 0; k < 2; k++) {
        model_init_weights(m[k], 5);
        model_set_recompute(m[k], recompute);
    }
    size_t bad_loss = 0, bad_grad = 0;
    for (int s = 1; s <= STEPS; s++) {
        float loss[2];
        for (int k = 0; k < 2; k++) {
            CHECK_OK(step(m[k], s, &loss[k], err, sizeof err), err);
            model_get_grads(m[k], g[k]);
            model_adamw_step(m[k], &opt, 1e-2f, s);
        }
        bad_loss += memcmp(&loss[0], &loss[1], sizeof(float)) != 0;
        bad_grad += n_differ(g[0], g[1], P);
    }
    for (int k = 0; k < 2; k++) model_get_params(m[k], p[k]);
    size_t bad_par = n_differ(p[0], p[1], P);
    printf("%-8s stage %d%s%s: %d steps, %zu losses, %zu gradients, %zu parameters differ\n",
           name, stage, offload ? " offload" : "", recompute ? " recompute" : "", STEPS, bad_loss,
           bad_grad, bad_par);
    CHECK(bad_loss == 0 && bad_grad == 0 && bad_par == 0, "%s stage %d offload %d recompute %d",
          name, stage, offload, recompute);
    /* the sharded model holds one window of gradients more (two tied), and
     * at stage 3 two of parameters: more bytes than the plain model at
     * world size 1, each exactly its own buffers */
    CHECK((model_grad_bytes(m[1]) > model_grad_bytes(m[0])) == (stage >= 2));
    CHECK((model_param_bytes(m[1]) > model_param_bytes(m[0])) == (stage == 3));
    for (int k = 0; k < 2; k++) free(g[k]), free(p[k]), model_free(m[k]);
}

int main(void) {
    ModelConfig gpt2 = test_tiny_config(ARCH_GPT2, 0), llama = test_tiny_config(ARCH_LLAMA, 0);
    ModelConfig moe = test_tiny_config(ARCH_LLAMA, 4), qwen3 = test_tiny_config(ARCH_LLAMA, 0);
    gpt2.tie_embeddings = 1;
    qwen3.qk_norm = 1, qwen3.head_dim = 16, qwen3.tie_embeddings = 1;
    for (int rc = 0; rc < 2; rc++)
        for (int stage = 2; stage <= 3; stage++) {
            check_case("gpt2", gpt2, stage, 0, rc);
            check_case("llama", llama, stage, 0, rc);
            check_case("moe", moe, stage, 0, rc);
            check_case("qwen3", qwen3, stage, 0, rc);
        }
    /* the offloaded optimizer alone and under ZeRO-3 */
    check_case("llama", llama, 0, 1, 0);
    check_case("gpt2", gpt2, 3, 1, 1);
    check_case("moe", moe, 3, 1, 0);
    return CHECK_DONE();
}
