/* hf_driver.c: the C side of the HF transformers parity tests
 * (tests/runner/test_hf_parity.py drives it; not part of `dapt`).
 *
 *   hf_driver logits DIR OUT.f32 ID...
 *       load an HF model directory (hf_load_model, CPU backend), run the
 *       forward pass on one sequence of token ids, write its logits
 *       (T x V fp32, little-endian) to OUT.f32
 *   hf_driver ckpt KIND OUT_DIR OUT.f32 ID...
 *       build a tiny model (KIND: llama, llama-tied, qwen2, gpt2;
 *       llama-sharded: llama with its weights in 16 KiB shards) with
 *       random weights of O(1) logits, save it with ckpt_save under
 *       OUT_DIR, print the checkpoint path, and write its logits
 *       (KIND mixtral: llama with 4 experts, top-2, in every layer;
 *       qwen3, qwen3-tied: q/k head norms, head size 12 apart from
 *       d_model / n_head = 8; llama3: llama with llama3 rope scaling,
 *       factor 8, low/high 1/4, original context 12; llama-linear: linear
 *       rope scaling, factor 2.5)
 *   hf_driver grads DIR OUT.safetensors ID...
 *       load an HF model directory, run forward + backward on the ids
 *       (inputs ids[0..T-1], targets ids[1..T]: the mean next-token loss),
 *       print the loss and write every parameter's gradient under its HF
 *       name and layout (F32 safetensors)
 *   hf_driver inv_freq DIR OUT.f32
 *       load an HF model directory's config.json and write RoPE's inverse
 *       frequencies (model_rope_inv_freq: head_dim / 2 fp32)
 *   hf_driver moe_lbl DIR OUT.f32 ID...
 *       load an HF Mixtral directory with the LBL in HF's normalisation,
 *       run the forward pass and write each MoE layer's LBL (fp32, one per
 *       layer) to OUT.f32
 *
 * Exit status 0 on success; 1 with a message on stderr otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/c/model_random.h"
#include "trainer/ckpt.h"
#include "trainer/hf.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

static int write_logits(Model *m, int argc, char **argv, const char *out) {
    int T = argc;
    if (T < 1) return fprintf(stderr, "hf_driver: no token ids\n"), 1;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)atoi(argv[i]);
    char err[512];
    float loss;
    if (model_forward(m, ids, NULL, 1, T, &loss, err, sizeof err)) {
        free(ids);
        return fprintf(stderr, "hf_driver: %s\n", err), 1;
    }
    size_t n = (size_t)T * (size_t)model_config(m)->vocab_size;
    float *logits = malloc(n * sizeof *logits);
    model_logits(m, logits);
    FILE *f = fopen(out, "wb");
    int bad = !f || fwrite(logits, sizeof *logits, n, f) != n;
    if (f && fclose(f)) bad = 1;
    free(logits);
    free(ids);
    if (bad) return fprintf(stderr, "hf_driver: cannot write %s\n", out), 1;
    return 0;
}

static int cmd_ckpt(const char *kind, const char *out_dir, const char *out, int argc, char **argv) {
    ModelConfig c = model_config_default(strcmp(kind, "gpt2") ? ARCH_LLAMA : ARCH_GPT2);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = c.arch == ARCH_LLAMA ? 2 : 4;
    c.d_model = 32;
    c.d_ff = c.arch == ARCH_LLAMA ? 48 : 128;
    c.vocab_size = 64;
    c.max_seq_len = 32;
    c.rope_theta = 5000.0f;
    c.norm_eps = 1e-5f;
    int sharded = !strcmp(kind, "llama-sharded");
    c.tie_embeddings = strcmp(kind, "llama") != 0 && !sharded;
    c.qkv_bias = !strcmp(kind, "qwen2");
    if (!strcmp(kind, "mixtral")) c.n_experts = 4, c.top_k = 2, c.tie_embeddings = 0;
    if (!strncmp(kind, "qwen3", 5)) c.qk_norm = 1, c.head_dim = 12;
    if (!strcmp(kind, "qwen3")) c.tie_embeddings = 0;
    if (!strcmp(kind, "llama3")) {
        c.tie_embeddings = 0;
        c.rope_scaling = ROPE_SCALING_LLAMA3;
        c.rope_factor = 8.0f, c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f;
        c.rope_original_max_pos = 12;
    }
    if (!strcmp(kind, "llama-linear")) c.rope_scaling = ROPE_SCALING_LINEAR, c.rope_factor = 2.5f;
    static const char *const kinds[] = {"llama", "llama-tied", "qwen2", "gpt2", "llama-sharded",
                                        "mixtral", "qwen3", "qwen3-tied", "llama3", "llama-linear"};
    int known = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) known |= !strcmp(kind, kinds[i]);
    if (!known) return fprintf(stderr, "hf_driver: unknown kind '%s'\n", kind), 1;
    char err[512], path[4200];
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m) return fprintf(stderr, "hf_driver: %s\n", err), 1;
    test_model_randomize(m, 1234);
    CkptState st = {.step = 7, .tokens = 7 * 1024, .lr = 1e-4, .data_fingerprint = "test",
                    .config_text = "", .max_shard_bytes = sharded ? 16384 : 0};
    int rc = ckpt_save(out_dir, m, &st, 1, path, sizeof path, err, sizeof err);
    if (rc) fprintf(stderr, "hf_driver: %s\n", err);
    else {
        printf("%s\n", path);
        rc = write_logits(m, argc, argv, out);
    }
    model_free(m);
    return rc;
}

static int cmd_moe_lbl(const char *dir, const char *out, int argc, char **argv) {
    char err[512];
    ModelConfig c;
    if (hf_load_config(dir, &c, err, sizeof err)) return fprintf(stderr, "hf_driver: %s\n", err), 1;
    c.lbl_norm = MOE_LBL_NORM_HF;
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    if (!m || hf_load_weights(dir, m, err, sizeof err)) {
        model_free(m);
        return fprintf(stderr, "hf_driver: %s\n", err), 1;
    }
    int T = argc, rc = 1;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    for (int i = 0; i < T; i++) ids[i] = (int32_t)atoi(argv[i]);
    if (model_forward(m, ids, NULL, 1, T, NULL, err, sizeof err)) {
        fprintf(stderr, "hf_driver: %s\n", err);
    } else {
        FILE *f = fopen(out, "wb");
        rc = !f;
        for (int i = 0; f && i < model_moe_num_layers(m); i++) {
            MoeLayerStats st;
            model_moe_layer_stats(m, i, &st);
            float v = (float)st.lbl;
            rc |= fwrite(&v, sizeof v, 1, f) != 1;
        }
        if (f && fclose(f)) rc = 1;
        if (rc) fprintf(stderr, "hf_driver: cannot write %s\n", out);
    }
    free(ids);
    model_free(m);
    return rc;
}

static int cmd_grads(const char *dir, const char *out, int argc, char **argv) {
    char err[512];
    int T = argc - 1, rc = 1;
    if (T < 1) return fprintf(stderr, "hf_driver: grads needs at least 2 token ids\n"), 1;
    Model *m = hf_load_model(dir, ops_cpu(), err, sizeof err);
    if (!m) return fprintf(stderr, "hf_driver: %s\n", err), 1;
    int32_t *ids = malloc((size_t)argc * sizeof *ids);
    for (int i = 0; i < argc; i++) ids[i] = (int32_t)atoi(argv[i]);
    size_t np = model_num_params(m);
    float *g = malloc(np * sizeof *g), loss;
    model_zero_grad(m);
    if (model_forward_backward(m, ids, ids + 1, 1, T, 1.0f / T, &loss, err, sizeof err)) {
        fprintf(stderr, "hf_driver: %s\n", err);
    } else {
        model_get_grads(m, g);
        const float *bufs[] = {g};
        const char *prefixes[] = {""};
        rc = hf_write_params(out, m, bufs, prefixes, 1, NULL, 0, err, sizeof err);
        if (rc) fprintf(stderr, "hf_driver: %s\n", err);
        else printf("%.9g\n", loss);
    }
    free(g);
    free(ids);
    model_free(m);
    return rc;
}

static int cmd_inv_freq(const char *dir, const char *out) {
    char err[512];
    ModelConfig c;
    if (hf_load_config(dir, &c, err, sizeof err)) return fprintf(stderr, "hf_driver: %s\n", err), 1;
    int half = model_head_dim(&c) / 2;
    float *f = malloc((size_t)half * sizeof *f);
    model_rope_inv_freq(&c, f);
    FILE *fp = fopen(out, "wb");
    int bad = !fp || fwrite(f, sizeof *f, (size_t)half, fp) != (size_t)half;
    if (fp && fclose(fp)) bad = 1;
    free(f);
    if (bad) return fprintf(stderr, "hf_driver: cannot write %s\n", out), 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "logits")) {
        char err[512];
        Model *m = hf_load_model(argv[2], ops_cpu(), err, sizeof err);
        if (!m) return fprintf(stderr, "hf_driver: %s\n", err), 1;
        int rc = write_logits(m, argc - 4, argv + 4, argv[3]);
        model_free(m);
        return rc;
    }
    if (argc >= 5 && !strcmp(argv[1], "moe_lbl")) return cmd_moe_lbl(argv[2], argv[3], argc - 4, argv + 4);
    if (argc >= 6 && !strcmp(argv[1], "ckpt")) return cmd_ckpt(argv[2], argv[3], argv[4], argc - 5, argv + 5);
    if (argc >= 6 && !strcmp(argv[1], "grads")) return cmd_grads(argv[2], argv[3], argc - 4, argv + 4);
    if (argc == 4 && !strcmp(argv[1], "inv_freq")) return cmd_inv_freq(argv[2], argv[3]);
    fprintf(stderr, "usage: hf_driver logits DIR OUT.f32 ID... | hf_driver ckpt KIND OUT_DIR OUT.f32 "
                    "ID... | hf_driver grads DIR OUT.safetensors ID... | hf_driver inv_freq DIR "
                    "OUT.f32\n");
    return 2;
}
