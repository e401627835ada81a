/* make_seeds.c: writes the seed inputs of the fuzz targets whose formats
 * dapt writes itself, with dapt's own writers, so no binary seed is
 * committed: DIR/safetensors (st_write: F32, I32, metadata; one F16/BF16
 * file by hand), DIR/hf_config (hf_config_json of each architecture and
 * option), DIR/shard (shard writer: 2- and 4-byte tokens, several frames).
 * The other targets' seeds are files in the tree (tools/fuzz).
 *
 *   make_seeds DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/shard.h"
#include "trainer/hf.h"
#include "trainer/model.h"
#include "trainer/safetensors.h"

static char root[4000];

static FILE *out_file(const char *target, const char *name) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", root, target);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", root, target, name);
    FILE *f = fopen(p, "wb");
    if (!f) perror(p), exit(1);
    return f;
}

static void seeds_safetensors(void) {
    char p[4200], err[512];
    float w[6] = {1, -2, 3.5f, 0, 1e-3f, -7}, b[3] = {0.25f, 0.5f, 1};
    int32_t step = 12345;
    StWriteTensor ts[] = {{"layer.weight", ST_F32, 2, {2, 3}, w},
                          {"layer.bias", ST_F32, 1, {3}, b},
                          {"step", ST_I32, 0, {0}, &step}};
    const char *meta[] = {"format", "pt", "dapt_step", "12"};
    snprintf(p, sizeof p, "%s/safetensors", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/safetensors/three.safetensors", root);
    if (st_write(p, ts, 3, meta, 2, err, sizeof err)) fprintf(stderr, "%s\n", err), exit(1);
    snprintf(p, sizeof p, "%s/safetensors/one.safetensors", root);
    if (st_write(p, ts + 1, 1, NULL, 0, err, sizeof err)) fprintf(stderr, "%s\n", err), exit(1);
    /* F16 and BF16 (dapt reads them; st_write writes F32 and I32 only) */
    const char *h = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[4,8]},"
                    "\"__metadata__\":{\"format\":\"pt\"}}";
    uint64_t n = strlen(h);
    FILE *f = out_file("safetensors", "half.safetensors");
    fwrite(&n, 8, 1, f); /* little-endian host */
    fwrite(h, 1, n, f);
    fwrite("\x00\x3c\x00\xc0\x80\x3f\xa0\xc0", 1, 8, f);
    fclose(f);
}

static void seeds_hf_config(void) {
    ModelConfig cs[7];
    for (int i = 0; i < 7; i++) {
        ModelConfig c = model_config_default(i == 1 ? ARCH_GPT2 : ARCH_LLAMA);
        c.n_layer = 2, c.n_head = 4, c.n_kv_head = i == 1 ? 4 : 2, c.d_model = 64;
        c.d_ff = 96, c.vocab_size = 100, c.max_seq_len = 64;
        cs[i] = c;
    }
    cs[2].n_experts = 4;                      /* Mixtral */
    cs[3].qkv_bias = 1;                       /* Qwen2 */
    cs[4].qk_norm = 1, cs[4].head_dim = 32;   /* Qwen3 */
    cs[5].rope_scaling = ROPE_SCALING_LLAMA3; /* Llama 3.1 */
    cs[5].rope_factor = 8, cs[5].rope_low_freq_factor = 1, cs[5].rope_high_freq_factor = 4;
    cs[5].rope_original_max_pos = 32;
    cs[6].rope_scaling = ROPE_SCALING_LINEAR, cs[6].rope_factor = 2.5f, cs[6].tie_embeddings = 1;
    for (int i = 0; i < 7; i++) {
        char name[32], *js = hf_config_json(&cs[i]);
        if (!js) fprintf(stderr, "config %d: not written\n", i), exit(1);
        snprintf(name, sizeof name, "config%d.json", i);
        FILE *f = out_file("hf_config", name);
        fputs(js, f);
        fclose(f);
        free(js);
    }
}

static void seeds_shard(void) {
    char p[4200], err[SHARD_ERR_MAX];
    for (int wide = 0; wide < 2; wide++) {
        ShardHeader h = {.vocab_size = wide ? 70000 : 300,
                         .eos_id = 2,
                         .tokens_per_frame = 16,
                         .tokenizer_hash = 0x1234abcdULL};
        snprintf(h.name, sizeof h.name, "seed%d", wide);
        snprintf(p, sizeof p, "%s/shard", root);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/shard/seed%d.tok.zst", root, wide);
        ShardWriter *w;
        uint32_t tok[50];
        for (int i = 0; i < 50; i++)
            tok[i] = i % 10 == 9 ? 2 : (uint32_t)(i * 37 % h.vocab_size);
        if (shard_writer_open(&w, p, &h, 3, err, sizeof err) ||
            shard_writer_append(w, tok, 50, 5, err, sizeof err) ||
            shard_writer_close(w, err, sizeof err))
            fprintf(stderr, "%s\n", err), exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) return fprintf(stderr, "usage: make_seeds DIR\n"), 2;
    snprintf(root, sizeof root, "%s", argv[1]);
    mkdir(root, 0755);
    seeds_safetensors();
    seeds_hf_config();
    seeds_shard();
    return 0;
}
