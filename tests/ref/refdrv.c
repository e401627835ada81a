/* refdrv.c: the dapt side of the PyTorch reference tests (tests/ref).
 *
 * Builds a model from command-line sizes, initialises it with a seed, and
 * writes to OUT_DIR everything the Python oracle needs to recompute it
 * independently: the parameters (by HF name, in-memory layout: linear
 * weights [out, in]), a batch, dapt's logits, loss and every gradient (from
 * one pass over the whole batch and from two accumulated micro-batches),
 * then the batches, losses and final parameters of `steps` AdamW steps with
 * warmup + cosine (--lr, --min-lr, --warmup, --beta1, --beta2, --adam-eps,
 * --weight-decay, --grad-clip). meta.json restates the settings as dapt
 * holds them, for a reader; the oracles take theirs from their own case.
 *
 * MoE models (--experts E > 0, tests/ref/check_moe.py): every optimizer step
 * starts with model_moe_begin_step(B*T); the accumulated pass uses --micro M
 * micro-batches (default 2), and the per-layer LBL statistics (f, P, LBL, z)
 * of the whole-batch pass and of the last accumulated micro-batch are
 * dumped as moe.I.* and moeacc.I.*.
 *
 * Output: OUT_DIR/data.bin (raw little-endian arrays back to back) and
 * OUT_DIR/meta.json ({"config": {...}, "train": {...}, "arrays": [{"name",
 * "dtype" ("f32"|"i32"), "shape", "offset" (bytes)}]}).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "trainer/model.h"
#include "trainer/moe.h"
#include "trainer/rng.h"
#include "trainer/sched.h"

typedef struct {
    FILE *bin, *meta;
    size_t offset;
    int n;
} Dump;

static void dump_array(Dump *d, const char *name, const char *dtype, const void *data, int ndim,
                       const int *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    fwrite(data, 4, n, d->bin);
    fprintf(d->meta, "%s\n  {\"name\": \"%s\", \"dtype\": \"%s\", \"offset\": %zu, \"shape\": [",
            d->n ? "," : "", name, dtype, d->offset);
    for (int i = 0; i < ndim; i++) fprintf(d->meta, "%s%d", i ? ", " : "", shape[i]);
    fprintf(d->meta, "]}");
    d->offset += n * 4;
    d->n++;
}

/* every tensor of the flat buffer `flat` under prefix + HF name */
static void dump_tensors(Dump *d, const Model *m, const char *prefix, const float *flat) {
    char name[160];
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *t = model_tensor(m, i);
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        dump_array(d, name, "f32", flat + t->offset, t->ndim, t->shape);
    }
}

static void random_batch(Rng *rng, int32_t *tok, int32_t *tgt, int n, int V, double ignore_frac) {
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)rng_below(rng, V);
        tgt[i] = rng_uniform(rng) < ignore_frac ? -1 : (int32_t)rng_below(rng, V);
    }
}

static int count_valid(const int32_t *tgt, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += tgt[i] >= 0;
    return k;
}

static void die(const char *msg) {
    fprintf(stderr, "refdrv: %s\n", msg);
    exit(1);
}

/* f, P (E each) and [LBL, z] of every MoE layer of the last forward */
static void dump_moe(Dump *d, const Model *m, const char *prefix) {
    char name[160];
    int E = model_config(m)->n_experts, two = 2;
    float *buf = malloc(sizeof(float) * (E > 2 ? E : 2));
    for (int i = 0; i < model_moe_num_layers(m); i++) {
        MoeLayerStats st;
        if (model_moe_layer_stats(m, i, &st)) die("model_moe_layer_stats failed");
        for (int e = 0; e < E; e++) buf[e] = (float)st.f[e];
        snprintf(name, sizeof name, "%s.%d.f", prefix, i);
        dump_array(d, name, "f32", buf, 1, &E);
        for (int e = 0; e < E; e++) buf[e] = (float)st.p[e];
        snprintf(name, sizeof name, "%s.%d.p", prefix, i);
        dump_array(d, name, "f32", buf, 1, &E);
        buf[0] = (float)st.lbl, buf[1] = (float)st.z_loss;
        snprintf(name, sizeof name, "%s.%d.lbl_z", prefix, i);
        dump_array(d, name, "f32", buf, 1, &two);
    }
    free(buf);
}

static void begin_step(Model *m, int n_tokens) {
    char err[256];
    if (model_moe_begin_step(m, n_tokens, err, sizeof err)) die(err);
}

int main(int argc, char **argv) {
    ModelConfig c = model_config_default(ARCH_LLAMA);
    int B = 2, T = 8, steps = 10, seed = 1, micro = 2;
    double ignore_frac = 0.0;
    const char *out = NULL, *arch = "llama";
    char err[256];
    int eps_set = 0;
    AdamWConfig opt = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                       .grad_clip = 1.0f};
    LrSchedule sched = {.kind = SCHED_COSINE, .lr = 3e-3f, .min_lr = 3e-4f, .warmup_steps = 3};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--arch")) arch = v;
        else if (!strcmp(k, "--layers")) c.n_layer = atoi(v);
        else if (!strcmp(k, "--heads")) c.n_head = atoi(v);
        else if (!strcmp(k, "--kv-heads")) c.n_kv_head = atoi(v);
        else if (!strcmp(k, "--d-model")) c.d_model = atoi(v);
        else if (!strcmp(k, "--d-ff")) c.d_ff = atoi(v);
        else if (!strcmp(k, "--vocab")) c.vocab_size = atoi(v);
        else if (!strcmp(k, "--max-seq")) c.max_seq_len = atoi(v);
        else if (!strcmp(k, "--theta")) c.rope_theta = (float)atof(v);
        else if (!strcmp(k, "--eps")) c.norm_eps = (float)atof(v), eps_set = 1;
        else if (!strcmp(k, "--tie")) c.tie_embeddings = atoi(v);
        else if (!strcmp(k, "--qkv-bias")) c.qkv_bias = atoi(v);
        else if (!strcmp(k, "--head-dim")) c.head_dim = atoi(v);
        else if (!strcmp(k, "--qk-norm")) c.qk_norm = atoi(v);
        else if (!strcmp(k, "--rope-scaling"))
            c.rope_scaling = !strcmp(v, "llama3")   ? ROPE_SCALING_LLAMA3
                             : !strcmp(v, "linear") ? ROPE_SCALING_LINEAR
                                                    : ROPE_SCALING_NONE;
        else if (!strcmp(k, "--rope-factor")) c.rope_factor = (float)atof(v);
        else if (!strcmp(k, "--rope-low")) c.rope_low_freq_factor = (float)atof(v);
        else if (!strcmp(k, "--rope-high")) c.rope_high_freq_factor = (float)atof(v);
        else if (!strcmp(k, "--rope-orig")) c.rope_original_max_pos = atoi(v);
        else if (!strcmp(k, "--B")) B = atoi(v);
        else if (!strcmp(k, "--T")) T = atoi(v);
        else if (!strcmp(k, "--steps")) steps = atoi(v);
        else if (!strcmp(k, "--seed")) seed = atoi(v);
        else if (!strcmp(k, "--ignore-frac")) ignore_frac = atof(v);
        else if (!strcmp(k, "--out")) out = v;
        else if (!strcmp(k, "--micro")) micro = atoi(v);
        else if (!strcmp(k, "--experts")) c.n_experts = atoi(v);
        else if (!strcmp(k, "--top-k")) c.top_k = atoi(v);
        else if (!strcmp(k, "--moe-start")) c.moe_layer_start = atoi(v);
        else if (!strcmp(k, "--moe-step")) c.moe_layer_step = atoi(v);
        else if (!strcmp(k, "--norm-topk")) c.norm_topk_prob = atoi(v);
        else if (!strcmp(k, "--lbl")) {
            if (moe_lbl_mode_parse(v, &c.lbl_mode, err, sizeof err)) die(err);
        } else if (!strcmp(k, "--lbl-norm")) {
            if (moe_lbl_norm_parse(v, &c.lbl_norm, err, sizeof err)) die(err);
        } else if (!strcmp(k, "--lbl-coef")) c.lbl_coef = (float)atof(v);
        else if (!strcmp(k, "--z-coef")) c.z_loss_coef = (float)atof(v);
        else if (!strcmp(k, "--lr")) sched.lr = (float)atof(v);
        else if (!strcmp(k, "--min-lr")) sched.min_lr = (float)atof(v);
        else if (!strcmp(k, "--warmup")) sched.warmup_steps = atoi(v);
        else if (!strcmp(k, "--beta1")) opt.beta1 = (float)atof(v);
        else if (!strcmp(k, "--beta2")) opt.beta2 = (float)atof(v);
        else if (!strcmp(k, "--adam-eps")) opt.eps = (float)atof(v);
        else if (!strcmp(k, "--weight-decay")) opt.weight_decay = (float)atof(v);
        else if (!strcmp(k, "--grad-clip")) opt.grad_clip = (float)atof(v);
        else die("unknown option");
    }
    if (!out) die("--out DIR is required");
    if (micro < 1 || B % micro) die("--B must be a multiple of --micro (the batch is also split into micro-batches)");
    Arch a;
    if (model_arch_parse(arch, &a, err, sizeof err)) die(err);
    ModelConfig d = model_config_default(a);
    c.arch = a;
    if (!eps_set) c.norm_eps = d.norm_eps;
    if (a == ARCH_GPT2 && c.n_kv_head == 0) c.n_kv_head = c.n_head;
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) die(err);
    model_init_weights(m, (uint64_t)seed);

    if (mkdir(out, 0755) && errno != EEXIST) die("cannot create the output directory");
    char path[512];
    Dump dump = {0};
    snprintf(path, sizeof path, "%s/data.bin", out);
    dump.bin = fopen(path, "wb");
    snprintf(path, sizeof path, "%s/meta.json", out);
    dump.meta = fopen(path, "w");
    if (!dump.bin || !dump.meta) die("cannot write the output files");

    size_t P = model_num_params(m);
    int N = B * T, V = c.vocab_size;
    float *flat = malloc(P * sizeof(float)), *logits = malloc((size_t)N * V * sizeof(float));
    int32_t *tok = malloc(N * 4), *tgt = malloc(N * 4);
    Rng rng;
    rng_seed(&rng, 1000u + seed);

    fprintf(dump.meta,
            "{\"config\": {\"arch\": \"%s\", \"n_layer\": %d, \"n_head\": %d, \"n_kv_head\": %d, "
            "\"d_model\": %d, \"d_ff\": %d, \"vocab_size\": %d, \"max_seq_len\": %d, "
            "\"rope_theta\": %.9g, \"norm_eps\": %.9g, \"tie_embeddings\": %d, \"qkv_bias\": %d, "
            "\"head_dim\": %d, \"qk_norm\": %d, \"rope_scaling\": \"%s\", \"rope_factor\": %.9g, "
            "\"rope_low_freq_factor\": %.9g, \"rope_high_freq_factor\": %.9g, "
            "\"rope_original_max_pos\": %d, "
            "\"B\": %d, \"T\": %d, \"micro\": %d, \"n_experts\": %d, \"top_k\": %d, "
            "\"moe_layers\": [",
            arch, c.n_layer, c.n_head, c.n_kv_head, c.d_model, c.d_ff, c.vocab_size,
            c.max_seq_len, c.rope_theta, c.norm_eps, c.tie_embeddings, c.qkv_bias,
            model_head_dim(&c), c.qk_norm, model_rope_scaling_name(c.rope_scaling), c.rope_factor,
            c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_original_max_pos, B, T, micro,
            c.n_experts, c.top_k);
    for (int l = 0, k = 0; l < c.n_layer; l++)
        if (moe_is_layer(&c, l)) fprintf(dump.meta, "%s%d", k++ ? ", " : "", l);
    fprintf(dump.meta,
            "], \"norm_topk_prob\": %d, \"lbl\": \"%s\", \"lbl_norm\": \"%s\", "
            "\"lbl_coef\": %.9g, \"z_loss_coef\": %.9g},\n",
            c.norm_topk_prob, moe_lbl_mode_name(c.lbl_mode),
            c.lbl_norm == MOE_LBL_NORM_HF ? "hf" : "paper", c.lbl_coef, c.z_loss_coef);

    sched.total_steps = steps;
    if (sched_check(&sched, err, sizeof err)) die(err);
    fprintf(dump.meta,
            "\"train\": {\"steps\": %d, \"lr\": %.9g, \"min_lr\": %.9g, \"warmup_steps\": %d, "
            "\"beta1\": %.9g, \"beta2\": %.9g, \"eps\": %.9g, \"weight_decay\": %.9g, "
            "\"grad_clip\": %.9g},\n\"arrays\": [",
            steps, sched.lr, sched.min_lr, sched.warmup_steps, opt.beta1, opt.beta2, opt.eps,
            opt.weight_decay, opt.grad_clip);

    model_get_params(m, flat);
    dump_tensors(&dump, m, "param.", flat);

    /* one batch, whole */
    random_batch(&rng, tok, tgt, N, V, ignore_frac);
    int shape_bt[2] = {B, T};
    dump_array(&dump, "tokens", "i32", tok, 2, shape_bt);
    dump_array(&dump, "targets", "i32", tgt, 2, shape_bt);
    int nv = count_valid(tgt, N);
    float loss;
    model_zero_grad(m);
    begin_step(m, N);
    if (model_forward_backward(m, tok, tgt, B, T, 1.0f / nv, &loss, err, sizeof err)) die(err);
    dump_moe(&dump, m, "moe");
    model_logits(m, logits);
    int shape_l[3] = {B, T, V}, one = 1;
    dump_array(&dump, "logits", "f32", logits, 3, shape_l);
    dump_array(&dump, "loss", "f32", &loss, 1, &one);
    model_get_grads(m, flat);
    dump_tensors(&dump, m, "grad.", flat);

    /* the same batch as `micro` accumulated micro-batches */
    model_zero_grad(m);
    begin_step(m, N);
    int part = N / micro;
    for (int j = 0; j < micro; j++)
        if (model_forward_backward(m, tok + j * part, tgt + j * part, B / micro, T, 1.0f / nv,
                                   NULL, err, sizeof err))
            die(err);
    model_get_grads(m, flat);
    dump_tensors(&dump, m, "gradacc.", flat);
    dump_moe(&dump, m, "moeacc");

    /* eval-only forward gives the same loss */
    float eval_loss;
    if (model_forward(m, tok, tgt, B, T, &eval_loss, err, sizeof err)) die(err);
    dump_array(&dump, "eval_loss", "f32", &eval_loss, 1, &one);

    /* training steps on fresh batches */
    float *losses = malloc(sizeof(float) * (steps > 0 ? steps : 1));
    float *norms = malloc(sizeof(float) * (steps > 0 ? steps : 1));
    int32_t *all_tok = malloc((size_t)steps * N * 4), *all_tgt = malloc((size_t)steps * N * 4);
    for (int s = 0; s < steps; s++) {
        int32_t *tk = all_tok + (size_t)s * N, *tg = all_tgt + (size_t)s * N;
        random_batch(&rng, tk, tg, N, V, ignore_frac);
        model_zero_grad(m);
        begin_step(m, N);
        if (model_forward_backward(m, tk, tg, B, T, 1.0f / count_valid(tg, N), &losses[s], err,
                                   sizeof err))
            die(err);
        norms[s] = model_adamw_step(m, &opt, sched_lr(&sched, s), s + 1);
    }
    int shape_s[3] = {steps, B, T};
    dump_array(&dump, "train_tokens", "i32", all_tok, 3, shape_s);
    dump_array(&dump, "train_targets", "i32", all_tgt, 3, shape_s);
    dump_array(&dump, "train_losses", "f32", losses, 1, &steps);
    dump_array(&dump, "train_grad_norms", "f32", norms, 1, &steps);
    model_get_params(m, flat);
    dump_tensors(&dump, m, "final.", flat);

    fprintf(dump.meta, "\n]}\n");
    if (fclose(dump.bin) || fclose(dump.meta)) die("error writing the output files");
    free(flat), free(logits), free(tok), free(tgt), free(losses), free(norms);
    free(all_tok), free(all_tgt);
    model_free(m);
    return 0;
}
