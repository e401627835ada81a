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
 *       (KIND mixtral: llama with 4 experts, top-2, in every layer)
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
    if (strcmp(kind, "llama") && strcmp(kind, "llama-tied") && strcmp(kind, "qwen2") &&
        strcmp(kind, "gpt2") && !sharded &&
        strcmp(kind, "mixtral"))
        return fprintf(stderr, "hf_driver: unknown kind '%s'\n", kind), 1;
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
    fprintf(stderr, "usage: hf_driver logits DIR OUT.f32 ID... | hf_driver ckpt KIND OUT_DIR OUT.f32 ID...\n");
    return 2;
}
