/* test_zero_shard.c: model_shard_optimizer (ZeRO-1). The oracle is the
 * unsharded model: a model that keeps the optimizer state of [off, off + n)
 * only allocates n elements of it (model_optimizer_bytes), and its AdamW
 * step on [off, off + n) updates exactly those parameters and moments,
 * bitwise as the whole model's step does; outside the shard nothing moves.
 * Shards of 3 and then 2 ranks (elastic resume: the whole state sliced into
 * a new layout) keep matching the whole model step after step, and a shard
 * taken after the state was set keeps its part of it. */
#include <math.h>
#include <stdlib.h>

#include "tests/c/check.h"
#include "trainer/dist.h"
#include "trainer/model.h"
#include "trainer/rng.h"

static ModelConfig tiny(void) {
    ModelConfig c = model_config_default(ARCH_LLAMA);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = 2;
    c.d_model = 32;
    c.d_ff = 64;
    c.vocab_size = 50;
    c.max_seq_len = 16;
    return c;
}

enum { B = 2, T = 16, N = B * T };
static const AdamWConfig opt = {0.9f, 0.95f, 1e-8f, 0.1f, 0.5f}; /* clipping active */

/* one forward/backward of step s's tokens (the same for every model) */
static void grads(Model *m, int s) {
    char err[256];
    Rng r;
    rng_seed(&r, 100 + (uint64_t)s);
    int32_t tok[N], tgt[N];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)rng_below(&r, 50);
    for (int i = 0; i < N; i++) tgt[i] = (int32_t)rng_below(&r, 50);
    float loss;
    model_zero_grad(m);
    CHECK(!model_forward_backward(m, tok, tgt, B, T, 1.0f / N, &loss, err, sizeof err), "%s", err);
}

/* The whole model and W sharded ones, stepped from step s0 + 1 to s0 + k:
 * after each step the shards' parameters and moments equal the whole
 * model's on their range bitwise, and the other parameters did not move;
 * then every shard gets the whole parameters (the step's allgather). */
static void steps_match(Model *whole, Model **sh, int W, int s0, int k) {
    size_t P = model_num_params(whole);
    float *pw = malloc(P * sizeof(float) * 6), *mw = pw + P, *vw = mw + P;
    float *ps = vw + P, *ms = ps + P, *vs = ms + P;
    for (int s = s0; s < s0 + k; s++) {
        grads(whole, s);
        model_adamw_step(whole, &opt, 1e-2f, s + 1);
        model_get_params(whole, pw);
        model_get_adam_state(whole, mw, vw);
        for (int r = 0; r < W; r++) {
            size_t off = model_optimizer_offset(sh[r]), n = model_optimizer_count(sh[r]);
            float *before = malloc(P * sizeof(float));
            model_get_params(sh[r], before);
            grads(sh[r], s);
            float norm = model_grad_norm(sh[r]);
            model_adamw_step_range(sh[r], &opt, 1e-2f, s + 1, off, n, model_clip_scale(&opt, norm));
            model_get_params(sh[r], ps);
            model_get_adam_state(sh[r], ms, vs);
            size_t bad_in = 0, bad_out = 0, bad_mv = 0, moved = 0;
            for (size_t i = 0; i < P; i++) {
                int in = i >= off && i < off + n;
                if (in) {
                    bad_in += memcmp(&ps[i], &pw[i], sizeof(float)) != 0;
                    bad_mv += memcmp(&ms[i], &mw[i], sizeof(float)) != 0 ||
                              memcmp(&vs[i], &vw[i], sizeof(float)) != 0;
                    moved += ps[i] != before[i];
                } else {
                    bad_out += memcmp(&ps[i], &before[i], sizeof(float)) != 0;
                    bad_mv += ms[i] != 0.0f || vs[i] != 0.0f;
                }
            }
            CHECK(!bad_in, "step %d rank %d of %d: %zu shard parameters differ from the whole "
                  "model's", s + 1, r, W, bad_in);
            CHECK(!bad_out, "step %d rank %d of %d: %zu parameters outside the shard moved", s + 1,
                  r, W, bad_out);
            CHECK(!bad_mv, "step %d rank %d of %d: %zu Adam moments wrong (shard: as the whole "
                  "model's, elsewhere 0)", s + 1, r, W, bad_mv);
            CHECK(moved > n / 2, "step %d rank %d: only %zu of %zu shard parameters moved", s + 1,
                  r, moved, n);
            free(before);
        }
        for (int r = 0; r < W; r++) model_set_params(sh[r], pw);
    }
    free(pw);
}

static Model *sharded(const ModelConfig *c, int W, int r) {
    char err[256];
    Model *m = model_create(c, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "%s", err);
    size_t off, n;
    dist_shard(model_num_params(m), W, r, &off, &n);
    CHECK(!model_shard_optimizer(m, off, n, err, sizeof err), "%s", err);
    return m;
}

static void test_sharded_steps(void) {
    char err[256];
    ModelConfig c = tiny();
    Model *whole = model_create(&c, ops_cpu(), err, sizeof err);
    size_t P = model_num_params(whole);
    CHECK(model_optimizer_bytes(whole) == 2 * P * sizeof(float), "whole: %zu bytes for %zu params",
          model_optimizer_bytes(whole), P);
    CHECK(model_optimizer_offset(whole) == 0 && model_optimizer_count(whole) == P,
          "whole model's shard is not everything");
    model_init_weights(whole, 7);

    /* 3 ranks from step 0 */
    Model *sh3[3];
    size_t total = 0;
    for (int r = 0; r < 3; r++) {
        sh3[r] = sharded(&c, 3, r);
        model_init_weights(sh3[r], 7);
        size_t n = model_optimizer_count(sh3[r]);
        total += n;
        CHECK(model_optimizer_bytes(sh3[r]) == 2 * n * sizeof(float), "rank %d: %zu bytes for %zu",
              r, model_optimizer_bytes(sh3[r]), n);
        CHECK(model_optimizer_bytes(sh3[r]) * 3 <= model_optimizer_bytes(whole) + 3 * 8,
              "rank %d of 3 holds %zu bytes, the whole model %zu", r, model_optimizer_bytes(sh3[r]),
              model_optimizer_bytes(whole));
    }
    CHECK(total == P, "shards cover %zu of %zu", total, P);
    steps_match(whole, sh3, 3, 0, 3);

    /* elastic: the whole state (a checkpoint) sliced into 2 new shards */
    float *p = malloc(P * sizeof(float) * 3), *mm = p + P, *vv = mm + P;
    model_get_params(whole, p);
    model_get_adam_state(whole, mm, vv);
    Model *sh2[2];
    for (int r = 0; r < 2; r++) {
        sh2[r] = sharded(&c, 2, r);
        model_set_params(sh2[r], p);
        model_set_adam_state(sh2[r], mm, vv);
    }
    steps_match(whole, sh2, 2, 3, 2);

    /* sharding after the state is set keeps the shard's part of it */
    model_get_params(whole, p);
    model_get_adam_state(whole, mm, vv);
    Model *late = model_create(&c, ops_cpu(), err, sizeof err);
    model_set_params(late, p);
    model_set_adam_state(late, mm, vv);
    size_t off = P / 5, n = P / 3;
    CHECK(!model_shard_optimizer(late, off, n, err, sizeof err), "%s", err);
    float *m2 = malloc(P * sizeof(float) * 2), *v2 = m2 + P;
    model_get_adam_state(late, m2, v2);
    CHECK(!memcmp(m2 + off, mm + off, n * sizeof(float)) &&
              !memcmp(v2 + off, vv + off, n * sizeof(float)),
          "a late shard lost its part of the Adam state");
    Model *one[1] = {late};
    steps_match(whole, one, 1, 5, 1);

    /* errors */
    CHECK(model_shard_optimizer(late, 0, 1, err, sizeof err) != 0, "second shard accepted");
    CHECK_MSG(err, "already sharded");
    Model *bad = model_create(&c, ops_cpu(), err, sizeof err);
    CHECK(model_shard_optimizer(bad, P - 2, 3, err, sizeof err) != 0, "shard past the end accepted");
    CHECK_MSG(err, "outside the");
    CHECK(!model_shard_optimizer(bad, 0, P, err, sizeof err), "the whole range refused: %s", err);
    CHECK(model_optimizer_bytes(bad) == 2 * P * sizeof(float), "the whole range changed the state");

    free(p);
    free(m2);
    model_free(bad);
    model_free(late);
    for (int r = 0; r < 3; r++) model_free(sh3[r]);
    for (int r = 0; r < 2; r++) model_free(sh2[r]);
    model_free(whole);
}

int main(void) {
    test_sharded_steps();
    return CHECK_DONE();
}
