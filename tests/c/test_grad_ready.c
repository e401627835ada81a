/* test_grad_ready.c: the backward's "gradients are final" hook
 * (model_set_grad_ready, trainer/model.h), which the overlapped gradient
 * sums of `dapt train` (dist.bucket_mb) rely on: a range handed to a
 * collective while the backward goes on must not be written again; and the
 * forward's "parameters needed" hook (model_set_params_needed), which the
 * overlapped ZeRO-1 all-gather relies on: no parameter may be read before
 * a call has covered it (the parameters above the covered range are NaN
 * until then, so an early read shows in the loss or the gradients, which
 * must equal a pass without the hook bit for bit).
 *
 * Oracle: the gradients at the end of the backward. At each call the hook
 * copies elements [offset, end); every copy must equal the final gradients
 * there bit for bit. The backward under test is a second micro-batch
 * accumulating onto the first one's gradients, so a range handed over
 * before its block ran would still hold the first micro-batch's values and
 * differ. Also: offsets decrease, the last is 0, one call per block plus the
 * final norm and the embedding, and a hook's error ends the backward with
 * its message. Tiny GPT-2 (tied embedding), Llama (untied head) and a MoE
 * Llama, on the CPU table. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/c/check.h"
#include "tests/c/tiny_model.h"
#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

typedef struct {
    Model *m;
    int calls, fail_at;
    size_t offset[16];
    float *copy[16]; /* (n_params) whole buffers; [offset, end) is what was ready */
} Seen;

static int on_ready(void *ctx, size_t offset, char *err, size_t err_len) {
    Seen *s = ctx;
    if (s->calls == s->fail_at)
        return snprintf(err, err_len, "hook says no at call %d", s->calls), 1;
    if (s->calls < 16) {
        s->offset[s->calls] = offset;
        s->copy[s->calls] = malloc(model_num_params(s->m) * sizeof(float));
        model_get_grads(s->m, s->copy[s->calls]);
    }
    s->calls++;
    return 0;
}

/* the tiny model on the CPU table, weights from seed; NULL (a failed check)
 * when it cannot be made */
static Model *tiny(const ModelConfig *c, const char *what, uint64_t seed) {
    char err[256];
    Model *m = model_create(c, ops_cpu(), err, sizeof err);
    if (!m) CHECK(0, "%s: model_create: %s", what, err);
    else model_init_weights(m, seed);
    return m;
}

static void test_model(Arch arch, int n_experts) {
    const char *what = n_experts ? "moe" : arch == ARCH_GPT2 ? "gpt2" : "llama";
    ModelConfig c = test_tiny_config(arch, n_experts);
    char err[256];
    Model *m = tiny(&c, what, 3);
    if (!m) return;
    size_t P = model_num_params(m);
    int B = 2, T = 12, N = B * T;
    int32_t tok[2][24], tgt[2][24];
    Rng r;
    rng_seed(&r, 29);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++)
            tok[k][i] = (int32_t)(rng_uniform(&r) * c.vocab_size);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++)
            tgt[k][i] = tok[k][(i + 1) % N];
    Seen s = {.m = m, .fail_at = -1};
    float loss;
    model_zero_grad(m);
    int rc = model_moe_begin_step(m, 2 * N, err, sizeof err);
    if (!rc) rc = model_forward_backward(m, tok[0], tgt[0], B, T, 0.5f / N, &loss, err, sizeof err);
    model_set_grad_ready(m, on_ready, &s);
    if (!rc) rc = model_forward_backward(m, tok[1], tgt[1], B, T, 0.5f / N, &loss, err, sizeof err);
    CHECK(!rc, "%s: forward_backward: %s", what, err);
    float *final = malloc(P * sizeof(float));
    model_get_grads(m, final);
    CHECK(s.calls == c.n_layer + 2, "%s: %d hook calls, want %d", what, s.calls, c.n_layer + 2);
    int n = s.calls < 16 ? s.calls : 16;
    for (int i = 0; i < n; i++) {
        size_t off = s.offset[i];
        CHECK(i == 0 || off < s.offset[i - 1], "%s: call %d: offset %zu after %zu", what, i, off,
              s.offset[i - 1]);
        CHECK(off < P && !memcmp(s.copy[i] + off, final + off, (P - off) * sizeof(float)),
              "%s: call %d: gradients from %zu on changed after the hook said they were final",
              what, i, off);
        free(s.copy[i]);
    }
    CHECK(n > 0 && s.offset[n - 1] == 0, "%s: the last call's offset is not 0", what);
    /* the first ready range starts at the final norm: nothing below it */
    int lnf =
        model_find_tensor(m, arch == ARCH_GPT2 ? "transformer.ln_f.weight" : "model.norm.weight");
    CHECK(n > 0 && lnf >= 0 && s.offset[0] == model_tensor(m, lnf)->offset,
          "%s: first offset %zu, want the final norm's", what, n > 0 ? s.offset[0] : 0);
    /* an error from the hook ends the backward with its message */
    Seen f = {.m = m, .fail_at = 1};
    model_set_grad_ready(m, on_ready, &f);
    rc = model_moe_begin_step(m, N, err, sizeof err);
    if (!rc) rc = model_forward_backward(m, tok[0], tgt[0], B, T, 1.0f / N, &loss, err, sizeof err);
    CHECK(rc && strstr(err, "hook says no at call 1") && f.calls == 1,
          "%s: a failing hook: rc %d, calls %d, err \"%s\"", what, rc, f.calls, rc ? err : "");
    free(f.copy[0]);
    /* unset: no calls */
    Seen none = {.m = m, .fail_at = -1};
    model_set_grad_ready(m, NULL, &none);
    rc = model_moe_begin_step(m, N, err, sizeof err);
    if (!rc) rc = model_forward_backward(m, tok[0], tgt[0], B, T, 1.0f / N, &loss, err, sizeof err);
    CHECK(!rc && none.calls == 0, "%s: unset hook: rc %d, calls %d", what, rc, none.calls);
    free(final);
    model_free(m);
}

/* model_set_params_needed: the parameters at and above the last `end`
 * stay NaN until a call covers them, so a kernel that reads one too early
 * makes the loss or a gradient NaN or different */
typedef struct {
    float *params, *saved;
    size_t n, done;
    int calls, bad_order;
} Needed;

static int on_needed(void *ctx, size_t end, char *err, size_t err_len) {
    Needed *q = ctx;
    (void)err, (void)err_len;
    if (end < q->done) q->bad_order = 1;
    if (end > q->done)
        memcpy(q->params + q->done, q->saved + q->done, (end - q->done) * sizeof(float));
    if (end > q->done) q->done = end;
    q->calls++;
    return 0;
}

static void poison(Needed *q) {
    for (size_t i = 0; i < q->n; i++)
        q->params[i] = NAN;
    q->done = 0, q->calls = 0;
}

static void test_params_needed(Arch arch, int n_experts) {
    const char *what = n_experts ? "moe" : arch == ARCH_GPT2 ? "gpt2" : "llama";
    ModelConfig c = test_tiny_config(arch, n_experts);
    char err[256];
    Model *m = tiny(&c, what, 7);
    if (!m) return;
    size_t P = model_num_params(m);
    int B = 2, T = 12, N = B * T;
    int32_t tok[24], tgt[24];
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)((i * 7 + 3) % c.vocab_size);
    for (int i = 0; i < N; i++)
        tgt[i] = tok[(i + 1) % N];
    float *ref_g = malloc(P * sizeof(float)), *g = malloc(P * sizeof(float));
    float ref_loss = NAN, ref_eval = NAN, loss = NAN, eval = NAN;
    model_zero_grad(m);
    int rc = model_moe_begin_step(m, N, err, sizeof err);
    if (!rc) rc = model_forward_backward(m, tok, tgt, B, T, 1.0f / N, &ref_loss, err, sizeof err);
    model_get_grads(m, ref_g);
    if (!rc) rc = model_forward(m, tok, tgt, B, T, &ref_eval, err, sizeof err);
    CHECK(!rc && isfinite(ref_loss), "%s: reference pass: %s", what, rc ? err : "non-finite loss");
    Needed q = {.params = model_params_buffer(m), .n = P};
    q.saved = malloc(P * sizeof(float));
    memcpy(q.saved, q.params, P * sizeof(float));
    model_set_params_needed(m, on_needed, &q);
    poison(&q);
    model_zero_grad(m);
    rc = model_moe_begin_step(m, N, err, sizeof err);
    if (!rc) rc = model_forward_backward(m, tok, tgt, B, T, 1.0f / N, &loss, err, sizeof err);
    model_get_grads(m, g);
    CHECK(!rc && q.calls == c.n_layer + 1 && !q.bad_order && q.done == P,
          "%s: forward_backward: rc %d, %d calls (want %d), order %s, covered %zu of %zu", what, rc,
          q.calls, c.n_layer + 1, q.bad_order ? "bad" : "ok", q.done, P);
    CHECK(loss == ref_loss && !memcmp(g, ref_g, P * sizeof(float)),
          "%s: a parameter was read before the hook covered it (loss %g, reference %g)", what, loss,
          ref_loss);
    poison(&q);
    rc = model_forward(m, tok, tgt, B, T, &eval, err, sizeof err);
    CHECK(!rc && q.calls == c.n_layer + 1 && eval == ref_eval,
          "%s: model_forward: rc %d, %d calls, loss %g (reference %g)", what, rc, q.calls, eval,
          ref_eval);
    model_set_params_needed(m, NULL, NULL);
    free(q.saved), free(ref_g), free(g);
    model_free(m);
}

int main(void) {
    test_model(ARCH_GPT2, 0);
    test_model(ARCH_LLAMA, 0);
    test_model(ARCH_LLAMA, 4);
    test_params_needed(ARCH_GPT2, 0);
    test_params_needed(ARCH_LLAMA, 0);
    test_params_needed(ARCH_LLAMA, 4);
    return CHECK_DONE();
}
