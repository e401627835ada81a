/* test_hf.c: HF config.json import/export and weight loading in C (the
 * numerical parity with transformers is tests/runner/): every supported
 * family maps to the right ModelConfig, rope_scaling and head_dim as
 * transformers reads them, unsupported keys are refused by name, export ->
 * import is the identity, and weights survive a save/load
 * bit for bit (GPT-2 Conv1D weights transposed on disk), with missing,
 * extra and misshapen tensors refused by name. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "tokenizer/tokenizer.h"
#include "trainer/hf.h"
#include "trainer/rng.h"

static char dir[256];

static int parse(const char *json, ModelConfig *c, char *err, size_t n) {
    return hf_parse_config(json, "config.json", c, err, n);
}

static void test_config_import(void) {
    ModelConfig c;
    char err[512];
    CHECK(parse("{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":64,"
                "\"intermediate_size\":172,\"num_hidden_layers\":3,\"num_attention_heads\":8,"
                "\"num_key_value_heads\":2,\"vocab_size\":1000,\"max_position_embeddings\":256,"
                "\"rope_theta\":500000.0,\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":true,"
                "\"rope_scaling\":null,\"attention_bias\":false,\"hidden_act\":\"silu\"}",
                &c, err, sizeof err) == 0);
    CHECK(c.arch == ARCH_LLAMA && c.d_model == 64 && c.d_ff == 172 && c.n_layer == 3 &&
          c.n_head == 8 && c.n_kv_head == 2 && c.vocab_size == 1000 && c.max_seq_len == 256 &&
          c.rope_theta == 500000.0f && c.norm_eps == 1e-5f && c.tie_embeddings && !c.qkv_bias);
    /* num_key_value_heads absent: plain multi-head attention (transformers' default) */
    CHECK(parse("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"intermediate_size\":8,\"vocab_size\":10}", &c, err, sizeof err) == 0);
    CHECK(c.n_kv_head == 4 && c.norm_eps == 1e-6f && c.max_seq_len == 2048 && !c.tie_embeddings);
    /* Qwen2: q/k/v biases */
    CHECK(parse("{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,\"num_attention_heads\":4,"
                "\"num_key_value_heads\":2,\"num_hidden_layers\":1,\"intermediate_size\":8,"
                "\"vocab_size\":10,\"use_sliding_window\":false,\"sliding_window\":32}", &c, err, sizeof err) == 0);
    CHECK(c.qkv_bias && c.max_seq_len == 32768 && c.n_kv_head == 2);
    /* Mistral: an active sliding window caps max_seq_len; null means none */
    CHECK(parse("{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"num_attention_heads\":8,"
                "\"num_hidden_layers\":1,\"intermediate_size\":8,\"vocab_size\":10,"
                "\"max_position_embeddings\":32768,\"sliding_window\":4096}", &c, err, sizeof err) == 0);
    CHECK(c.max_seq_len == 4096 && c.n_kv_head == 8 && !c.qkv_bias);
    CHECK(parse("{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"num_attention_heads\":4,"
                "\"num_key_value_heads\":4,\"num_hidden_layers\":1,\"intermediate_size\":8,\"vocab_size\":10,"
                "\"max_position_embeddings\":32768,\"sliding_window\":null}", &c, err, sizeof err) == 0);
    CHECK(c.max_seq_len == 32768);
    /* GPT-2 keys and defaults */
    CHECK(parse("{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":48,\"n_layer\":2,\"n_head\":3,"
                "\"n_positions\":64,\"vocab_size\":99,\"n_inner\":null,\"layer_norm_epsilon\":1e-05,"
                "\"activation_function\":\"gelu_new\"}", &c, err, sizeof err) == 0);
    CHECK(c.arch == ARCH_GPT2 && c.d_model == 48 && c.d_ff == 192 && c.n_head == 3 &&
          c.n_kv_head == 3 && c.max_seq_len == 64 && c.vocab_size == 99 && c.tie_embeddings);
    /* Qwen3: q/k norms, no biases, head_dim 128 unless set (transformers' default) */
    CHECK(parse("{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\","
                "\"hidden_size\":64,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                "\"num_hidden_layers\":1,\"intermediate_size\":8,\"vocab_size\":10,"
                "\"attention_bias\":false,\"use_sliding_window\":false,\"sliding_window\":null,"
                "\"max_window_layers\":28}", &c, err, sizeof err) == 0);
    CHECK(c.qk_norm && !c.qkv_bias && model_head_dim(&c) == 128 && c.head_dim == 128 &&
          c.max_seq_len == 32768 && c.vocab_size == 10 && !c.tie_embeddings);
    CHECK(parse("{\"model_type\":\"qwen3\",\"hidden_size\":64,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"intermediate_size\":8,\"vocab_size\":10,"
                "\"head_dim\":16,\"tie_word_embeddings\":true,\"use_sliding_window\":true,"
                "\"sliding_window\":64}", &c, err, sizeof err) == 0);
    CHECK(c.qk_norm && c.head_dim == 0 && model_head_dim(&c) == 16 && c.tie_embeddings &&
          c.max_seq_len == 64);
    /* head_dim apart from hidden_size / heads, any llama family */
    CHECK(parse("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"intermediate_size\":8,\"vocab_size\":10,"
                "\"head_dim\":32}", &c, err, sizeof err) == 0);
    CHECK(!c.qk_norm && c.head_dim == 32 && model_head_dim(&c) == 32);
}

/* rope_scaling: llama3 and linear (also spelled "type"), "default" and null
 * as none */
static void test_rope_scaling_import(void) {
#define L "\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,\"num_hidden_layers\":1," \
          "\"intermediate_size\":8,\"vocab_size\":10"
    ModelConfig c;
    char err[512] = "";
    CHECK(parse("{" L ",\"max_position_embeddings\":131072,\"rope_scaling\":{\"factor\":8.0,"
                "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}",
                &c, err, sizeof err) == 0);
    CHECK(c.rope_scaling == ROPE_SCALING_LLAMA3 && c.rope_factor == 8.0f &&
          c.rope_low_freq_factor == 1.0f && c.rope_high_freq_factor == 4.0f &&
          c.rope_original_max_pos == 8192 && c.max_seq_len == 131072);
    CHECK(parse("{" L ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.5}}", &c, err,
                sizeof err) == 0);
    CHECK(c.rope_scaling == ROPE_SCALING_LINEAR && c.rope_factor == 2.5f);
    CHECK(parse("{" L ",\"rope_scaling\":{\"rope_type\":\"linear\",\"type\":\"linear\","
                "\"factor\":4}}", &c, err, sizeof err) == 0);
    CHECK(c.rope_scaling == ROPE_SCALING_LINEAR && c.rope_factor == 4.0f);
    CHECK(parse("{" L ",\"rope_scaling\":{\"rope_type\":\"default\"}}", &c, err, sizeof err) == 0);
    CHECK(c.rope_scaling == ROPE_SCALING_NONE);
    /* Llama 3.1's frequencies (theta 500000, head 128, factor 8, 1, 4, 8192;
     * wavelength 2 pi 500000^(i/64)): i <= 28 kept (below 2048 up to i =
     * 28.2), i = 29..34 blended (8192 at i = 35.0), divided by 8 from there
     * (the counts transformers 4.51.3 gives) */
    c = model_config_default(ARCH_LLAMA);
    c.d_model = 128, c.n_head = 1, c.rope_theta = 500000.0f;
    float plain[64], scaled[64];
    model_rope_inv_freq(&c, plain);
    c.rope_scaling = ROPE_SCALING_LLAMA3, c.rope_factor = 8.0f, c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f, c.rope_original_max_pos = 8192;
    model_rope_inv_freq(&c, scaled);
    int kept = 0, divided = 0, blended = 0;
    for (int i = 0; i < 64; i++) {
        kept += scaled[i] == plain[i];
        divided += scaled[i] == plain[i] / 8.0f;
        blended += scaled[i] < plain[i] && scaled[i] > plain[i] / 8.0f;
        if (i) CHECK(scaled[i] < scaled[i - 1]); /* still decreasing */
    }
    CHECK(kept == 29 && blended == 6 && divided == 29);
    c.rope_scaling = ROPE_SCALING_LINEAR, c.rope_factor = 4.0f;
    model_rope_inv_freq(&c, scaled);
    for (int i = 0; i < 64; i++) CHECK(scaled[i] == plain[i] / 4.0f);
#undef L
}

static void refuse(const char *json, const char *expect) {
    ModelConfig c;
    char err[512] = "";
    CHECK(parse(json, &c, err, sizeof err) != 0);
    CHECK_MSG(err, expect);
}

static void test_config_refusals(void) {
#define L "\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,\"num_hidden_layers\":1," \
          "\"intermediate_size\":8,\"vocab_size\":10"
    /* rope_scaling types dapt does not compute, keys a type does not use,
     * missing and contradictory ones */
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,"
           "\"original_max_position_embeddings\":32768}}", "rope_type \"yarn\" is not supported");
    refuse("{" L ",\"rope_scaling\":{\"type\":\"dynamic\",\"factor\":2.0}}", "\"dynamic\"");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"longrope\"}}", "\"longrope\"");
    refuse("{" L ",\"rope_scaling\":{\"type\":\"su\",\"short_factor\":[1]}}", "\"su\"");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":2.0,\"attention_factor\":1.0}}",
           "key \"attention_factor\" is not supported with rope_type \"linear\"");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
           "\"high_freq_factor\":4.0}}", "needs \"original_max_position_embeddings\"");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":null}}", "needs \"factor\"");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":\"2\"}}",
           "\"factor\" must be a number");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"linear\",\"type\":\"dynamic\",\"factor\":2.0}}",
           "disagree");
    refuse("{" L ",\"rope_scaling\":{\"factor\":2.0}}", "needs \"rope_type\"");
    refuse("{" L ",\"rope_scaling\":\"linear\"}", "\"rope_scaling\" must be an object");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":0}}", "factor must be > 0");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":4.0,"
           "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":64}}",
           "0 < low_freq_factor < high_freq_factor");
    refuse("{" L ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
           "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":0}}",
           "\"original_max_position_embeddings\" = 0 is out of range");
    refuse("{" L ",\"attention_bias\":true}", "\"attention_bias\"");
    refuse("{\"model_type\":\"qwen3\",\"attention_bias\":true}", "no o_proj bias");
    refuse("{" L ",\"mlp_bias\":true}", "\"mlp_bias\"");
    refuse("{" L ",\"hidden_act\":\"gelu\"}", "\"hidden_act\"");
    refuse("{" L ",\"head_dim\":31}", "even head size (head_dim = 31)");
    refuse("{" L ",\"head_dim\":\"32\"}", "\"head_dim\" must be an integer");
    refuse("{" L ",\"num_key_value_heads\":3}", "n_kv_head");
    refuse("{\"model_type\":\"llama\",\"hidden_size\":\"64\"}", "\"hidden_size\" must be an integer");
    refuse("{\"model_type\":\"llama\",\"vocab_size\":0}", "\"vocab_size\" = 0 is out of range");
    refuse("{" L ",\"vocab_size\":12}", "\"vocab_size\" appears twice");
    refuse("{" L ",\"tie_word_embeddings\":1}", "\"tie_word_embeddings\" must be true or false");
    refuse("{" L ",\"architectures\":[\"GPT2LMHeadModel\"]}", "disagree");
    refuse("{\"architectures\":[\"LlamaForSequenceClassification\"]}", "LlamaForSequenceClassification");
    refuse("{\"model_type\":\"bert\"}", "\"model_type\"");
    refuse("{\"hidden_size\":4}", "neither");
    refuse("[1]", "not a JSON object");
    refuse("{\"model_type\":\"gpt2\",\"activation_function\":\"relu\"}", "\"activation_function\"");
    refuse("{\"model_type\":\"gpt2\",\"scale_attn_by_inverse_layer_idx\":true}",
           "\"scale_attn_by_inverse_layer_idx\"");
    refuse("{\"model_type\":\"gpt2\",\"scale_attn_weights\":false}", "\"scale_attn_weights\"");
#undef L
}

/* issue 28: configs whose sizes overflowed model.c's int arithmetic. The
 * tensor table of a Mixtral with 65536 layers of 65536 experts has
 * 4 + 65536 * (17 + 3 * 65536) entries (wrapped in int: SIGSEGV); GPT-2 with
 * n_embd 2^30 has a (3 * 2^30, 2^30) qkv weight (3 * C wrapped). Both must
 * be refused naming the keys and the limit; the largest real shapes pass. */
static void test_size_limits(void) {
    refuse("{\"model_type\":\"mixtral\",\"hidden_size\":64,\"num_attention_heads\":4,"
           "\"intermediate_size\":8,\"vocab_size\":10,\"num_hidden_layers\":65536,"
           "\"num_local_experts\":65536}",
           "n_layer (65536) and n_experts (65536) make 12886016004 weight tensors: more than the "
           "limit of 16777216");
    refuse("{\"model_type\":\"gpt2\",\"vocab_size\":1,\"n_embd\":1073741824,\"n_head\":1,"
           "\"n_layer\":1,\"n_positions\":1,\"n_inner\":1}",
           "n_head (1) * head size (1073741824) = 1073741824: more than the limit of 536870911");
    refuse("{\"model_type\":\"gpt2\",\"vocab_size\":1,\"n_embd\":268435456,\"n_head\":1,"
           "\"n_layer\":1,\"n_positions\":1,\"n_inner\":1}",
           "the qkv weight ((n_head + 2 n_kv_head) * head_dim x d_model) is 805306368 x 268435456");
    refuse("{\"model_type\":\"llama\",\"hidden_size\":32768,\"num_attention_heads\":256,"
           "\"num_key_value_heads\":1,\"intermediate_size\":65536,\"vocab_size\":10,"
           "\"num_hidden_layers\":1}",
           "the up weight (2 d_ff x d_model) is 131072 x 32768");
    /* Llama 3.1 405B's shape, and DeepSeek-V3-like expert counts, are accepted */
    ModelConfig c;
    char err[512] = "";
    CHECK(parse("{\"model_type\":\"llama\",\"hidden_size\":16384,\"num_attention_heads\":128,"
                "\"num_key_value_heads\":8,\"intermediate_size\":53248,\"vocab_size\":128256,"
                "\"num_hidden_layers\":126}",
                &c, err, sizeof err) == 0,
          "%s", err);
    CHECK(parse("{\"model_type\":\"mixtral\",\"hidden_size\":7168,\"num_attention_heads\":128,"
                "\"intermediate_size\":2048,\"vocab_size\":129280,\"num_hidden_layers\":61,"
                "\"num_local_experts\":256,\"num_experts_per_tok\":8}",
                &c, err, sizeof err) == 0,
          "%s", err);
    /* a key repeated among 100,000 (the duplicate check sorts the keys) */
    enum { N = 100000 };
    char *js = malloc((size_t)N * 24 + 64);
    size_t n = (size_t)sprintf(js, "{\"model_type\":\"llama\"");
    for (int i = 0; i < N; i++)
        n += (size_t)sprintf(js + n, ",\"k%d\":%d", i == N - 1 ? 5 : i, i);
    sprintf(js + n, "}");
    refuse(js, "\"k5\" appears twice");
    free(js);
}

static ModelConfig tiny(Arch arch, int tie, int qkv_bias) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = arch == ARCH_LLAMA ? 2 : 4;
    c.d_model = 16;
    c.d_ff = 40;
    c.vocab_size = 37;
    c.max_seq_len = 12;
    c.rope_theta = 5000.0f;
    c.norm_eps = 1e-5f;
    c.tie_embeddings = tie;
    c.qkv_bias = qkv_bias;
    return c;
}

static int same_cfg(const ModelConfig *a, const ModelConfig *b) { return model_config_same(a, b); }

/* Qwen3-shaped: q/k norms, a head size (12) apart from d_model / n_head (4) */
static ModelConfig tiny_qwen3(int tie) {
    ModelConfig c = tiny(ARCH_LLAMA, tie, 0);
    c.qk_norm = 1;
    c.head_dim = 12;
    return c;
}

/* Llama-3.1-shaped: llama3 rope scaling */
static ModelConfig tiny_llama3(void) {
    ModelConfig c = tiny(ARCH_LLAMA, 0, 0);
    c.rope_scaling = ROPE_SCALING_LLAMA3;
    c.rope_factor = 8.0f, c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f;
    c.rope_original_max_pos = 6;
    return c;
}

/* model-*-of-*.safetensors files in dir/sub */
static int count_shards(const char *sub) {
    char d[512];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    DIR *dd = opendir(d);
    int n = 0;
    for (struct dirent *e; dd && (e = readdir(dd));) n += !strncmp(e->d_name, "model-", 6);
    if (dd) closedir(dd);
    return n;
}

/* save config + weights (sharded when shard_bytes > 0 is small), load them
 * back: identical config and parameters */
static void round_trip(ModelConfig cfg, const char *sub, size_t shard_bytes) {
    char d[512], err[512], cmd[600];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
    CHECK(system(cmd) == 0);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    model_init_weights(m, 7);
    CHECK(hf_save_config(d, &cfg, err, sizeof err) == 0);
    CHECK(hf_save_weights(d, m, shard_bytes, err, sizeof err) == 0);
    char idx[600];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", d);
    FILE *fi = fopen(idx, "rb");
    CHECK((fi != NULL) == (shard_bytes > 0));
    if (fi) fclose(fi);
    if (shard_bytes) { /* several shards, none larger than asked unless one tensor is */
        StSet *set = st_set_open(d, err, sizeof err);
        CHECK(set && st_set_num_files(set) > 2);
        for (int i = 0; set && i < st_set_num_files(set); i++) {
            StFile *f = st_set_file(set, i);
            uint64_t bytes = 0;
            for (int k = 0; k < st_num_tensors(f); k++) bytes += st_tensor(f, k)->end - st_tensor(f, k)->begin;
            CHECK(bytes <= shard_bytes || st_num_tensors(f) == 1);
        }
        st_set_close(set);
    }
    Model *m2 = hf_load_model(d, ops_cpu(), err, sizeof err);
    CHECK(m2 != NULL);
    if (!m2) {
        fprintf(stderr, "%s\n", err);
        model_free(m);
        return;
    }
    CHECK(same_cfg(&cfg, model_config(m2)));
    size_t n = model_num_params(m);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    model_get_params(m, a);
    model_get_params(m2, b);
    CHECK(n == model_num_params(m2) && memcmp(a, b, n * sizeof *a) == 0);
    /* on disk, GPT-2's c_attn is [in, out] = [C, 3C] and holds W^T */
    if (cfg.arch == ARCH_GPT2) {
        StSet *set = st_set_open(d, err, sizeof err);
        StFile *f = NULL;
        int k = -1;
        if (set) st_set_find(set, "transformer.h.1.attn.c_attn.weight", &f, &k);
        CHECK(k >= 0);
        if (k >= 0) {
            const StTensor *t = st_tensor(f, k);
            CHECK(t->shape[0] == cfg.d_model && t->shape[1] == 3 * cfg.d_model);
            float *w = malloc(t->numel * sizeof *w);
            CHECK(st_read_f32(f, k, w, err, sizeof err) == 0);
            const ParamTensor *p = model_tensor(m, model_find_tensor(m, t->name));
            /* file[i][o] == memory[o][i] */
            CHECK(w[1 * 3 * cfg.d_model + 5] == a[p->offset + 5 * cfg.d_model + 1]);
            free(w);
        }
        st_set_close(set);
    }
    free(a);
    free(b);
    model_free(m);
    model_free(m2);
}

/* damage a saved directory's weights and check the message names the tensor */
static void test_weight_errors(void) {
    char d[512], path[600], err[512];
    ModelConfig cfg = tiny(ARCH_LLAMA, 1, 0);
    snprintf(d, sizeof d, "%s/llama_tied", dir);
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    float w[16 * 16] = {0};
    /* tied model with an lm_head.weight in the file: ignored, as transformers does */
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK(m && hf_save_weights(d, m, 0, err, sizeof err) == 0);
    StWriteTensor extra[2] = {{"lm_head.weight", ST_F32, 2, {37, 16}, NULL},
                              {"model.layers.0.self_attn.rotary_emb.inv_freq", ST_F32, 1, {2}, w}};
    float *head = calloc(37 * 16, sizeof *head);
    extra[0].data = head;
    float *buf = malloc(model_num_params(m) * sizeof *buf);
    model_get_params(m, buf);
    const float *bufs[] = {buf};
    const char *pre[] = {""};
    CHECK(hf_write_params(path, m, bufs, pre, 1, extra, 2, err, sizeof err) == 0);
    CHECK(hf_load_weights(d, m, err, sizeof err) == 0);
    /* an unknown tensor */
    StWriteTensor unknown = {"model.layers.0.mlp.extra.weight", ST_F32, 1, {2}, w};
    CHECK(hf_write_params(path, m, bufs, pre, 1, &unknown, 1, err, sizeof err) == 0);
    CHECK(hf_load_weights(d, m, err, sizeof err) != 0);
    CHECK_MSG(err, "'model.layers.0.mlp.extra.weight' is not a parameter");
    /* a missing tensor: the file of an untied model lacks nothing, but a
     * tied file read by an untied model lacks lm_head.weight */
    CHECK(hf_write_params(path, m, bufs, pre, 1, NULL, 0, err, sizeof err) == 0);
    ModelConfig untied = cfg;
    untied.tie_embeddings = 0;
    Model *mu = model_create(&untied, ops_cpu(), err, sizeof err);
    CHECK(mu && hf_load_weights(d, mu, err, sizeof err) != 0);
    CHECK_MSG(err, "'lm_head.weight' is missing");
    /* wrong shape: a model with a larger d_ff */
    ModelConfig wide = cfg;
    wide.d_ff = 48;
    Model *mw = model_create(&wide, ops_cpu(), err, sizeof err);
    CHECK(mw && hf_load_weights(d, mw, err, sizeof err) != 0);
    CHECK_MSG(err, "model.layers.0.mlp.gate_proj.weight' has shape [40, 16], the model needs [48, 16]");
    /* no weights at all */
    remove(path);
    CHECK(hf_load_weights(d, m, err, sizeof err) != 0);
    CHECK_MSG(err, "no model.safetensors");
    free(head);
    free(buf);
    model_free(m);
    model_free(mu);
    model_free(mw);
}

/* GPT-2 files without the "transformer." prefix load too, and the attention
 * mask buffers are skipped */
static void test_gpt2_bare_names(void) {
    char d[512], path[600], err[512], cmd[600];
    ModelConfig cfg = tiny(ARCH_GPT2, 1, 0);
    snprintf(d, sizeof d, "%s/gpt2_bare", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
    CHECK(system(cmd) == 0);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    model_init_weights(m, 3);
    size_t n = model_num_params(m);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    model_get_params(m, a);
    int nt = model_num_tensors(m);
    StWriteTensor *ts = calloc((size_t)nt + 1, sizeof *ts);
    float *mask = calloc(12 * 12, sizeof *mask);
    for (int i = 0; i < nt; i++) {
        const ParamTensor *p = model_tensor(m, i);
        ts[i].name = p->name + strlen("transformer.");
        ts[i].dtype = ST_F32;
        ts[i].ndim = p->ndim;
        ts[i].shape[0] = p->hf_transposed ? p->shape[1] : p->shape[0];
        ts[i].shape[1] = p->hf_transposed ? p->shape[0] : p->shape[1];
        ts[i].data = a + p->offset; /* transposed ones are garbage-in; checked below by name only */
    }
    ts[nt] = (StWriteTensor){"h.0.attn.bias", ST_F32, 2, {12, 12}, mask};
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    CHECK(st_write(path, ts, nt + 1, NULL, 0, err, sizeof err) == 0);
    CHECK(hf_load_weights(d, m, err, sizeof err) == 0);
    model_get_params(m, b);
    const ParamTensor *wte = model_tensor(m, model_find_tensor(m, "transformer.wte.weight"));
    CHECK(memcmp(a + wte->offset, b + wte->offset, wte->numel * sizeof *a) == 0);
    free(ts);
    free(mask);
    free(a);
    free(b);
    model_free(m);
}

/* An HF directory's tokenizer: tokenizer.json before tokenizer.model. */
static void test_tokenizer_detection(void) {
    char d[512], path[600], json[600], got[600];
    snprintf(d, sizeof d, "%s/llama_tied", dir);
    CHECK(tokenizer_find(d, path, sizeof path) == 0);
    snprintf(path, sizeof path, "%s/tokenizer.model", d);
    snprintf(json, sizeof json, "%s/tokenizer.json", d);
    const char *files[2] = {path, json};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "wb");
        fputs("x", f);
        fclose(f);
        CHECK(tokenizer_find(d, got, sizeof got) == 1 && !strcmp(got, files[i]));
    }
    remove(path);
    remove(json);
}

static void test_config_export(void) {
    /* exported configs parse back to the same ModelConfig */
    ModelConfig cs[] = {tiny(ARCH_LLAMA, 0, 0), tiny(ARCH_LLAMA, 1, 1), tiny(ARCH_GPT2, 1, 0),
                        tiny_qwen3(1), tiny_llama3(), tiny(ARCH_LLAMA, 0, 0),
                        tiny(ARCH_LLAMA, 0, 0)};
    cs[0].norm_eps = 1e-6f;
    cs[0].rope_theta = 1e6f;
    cs[3].head_dim = 0; /* Qwen3 with head_dim = hidden / heads: written anyway (default 128) */
    cs[5].rope_scaling = ROPE_SCALING_LINEAR, cs[5].rope_factor = 2.5f;
    cs[6].n_experts = 4, cs[6].head_dim = 8, cs[6].rope_scaling = ROPE_SCALING_LINEAR;
    cs[6].rope_factor = 3.0f;
    for (int i = 0; i < 7; i++) {
        char *js = hf_config_json(&cs[i]), err[512];
        ModelConfig back;
        CHECK(js && parse(js, &back, err, sizeof err) == 0 && same_cfg(&cs[i], &back));
        if (i == 0) CHECK(strstr(js, "\"rms_norm_eps\": 1e-06") && strstr(js, "\"rope_theta\": 1e+06"));
        if (i == 0) CHECK(strstr(js, "\"rope_scaling\": null") && !strstr(js, "head_dim"));
        if (i == 1) CHECK_MSG(js, "Qwen2ForCausalLM");
        if (i == 2) CHECK_MSG(js, "GPT2LMHeadModel");
        if (i == 3) CHECK(strstr(js, "\"Qwen3ForCausalLM\"") && strstr(js, "\"head_dim\": 4"));
        if (i == 4)
            CHECK_MSG(js, "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                          "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                          "\"original_max_position_embeddings\": 6}");
        if (i == 5) CHECK_MSG(js, "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.5}");
        if (i == 6) CHECK(strstr(js, "MixtralForCausalLM") && strstr(js, "\"head_dim\": 8") &&
                          strstr(js, "\"linear\""));
        free(js);
    }
    /* what no HF architecture computes is refused before it could be written */
    ModelConfig bad = tiny_qwen3(0);
    char err[512] = "";
    bad.qkv_bias = 1;
    CHECK(model_config_check(&bad, err, sizeof err) != 0);
    CHECK_MSG(err, "qk_norm with qkv_bias");
}

/* Random byte edits of an exported config.json: an error with a message or
 * a config that passes model_config_check, never a crash (run under ASan). */
static void test_config_fuzz(void) {
    ModelConfig cfg = tiny(ARCH_LLAMA, 0, 1);
    char *js = hf_config_json(&cfg), err[512];
    size_t n = strlen(js);
    char *buf = malloc(n + 1);
    const char alphabet[] = "{}[]\":,.0123456789-etruflsn \\";
    Rng r;
    rng_seed(&r, 5);
    int refused = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(buf, js, n + 1);
        for (int e = 0; e < 1 + (int)(rng_u64(&r) % 3); e++)
            buf[rng_u64(&r) % n] = alphabet[rng_u64(&r) % (sizeof alphabet - 1)];
        ModelConfig c;
        err[0] = 0;
        if (parse(buf, &c, err, sizeof err)) {
            refused++;
            if (!err[0]) CHECK(!"refusal without a message");
        } else {
            CHECK(model_config_check(&c, err, sizeof err) == 0);
        }
    }
    CHECK(refused > 100);
    free(buf);
    free(js);
}

/* issue 28: rope_theta = inf (from a GGUF's llama.rope.freq_base) was
 * written into config.json as `inf`, which is not JSON: such a config is
 * refused by the check and by the writer itself. */
static void test_nonfinite_not_written(void) {
    float bad[] = {INFINITY, -INFINITY, NAN, 0.0f, -1.0f};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ModelConfig c = tiny(ARCH_LLAMA, 0, 0);
        char err[512] = "", sub[300];
        c.rope_theta = bad[i];
        CHECK(model_config_check(&c, err, sizeof err) != 0);
        CHECK_MSG(err, "rope_theta must be a finite number > 0");
        snprintf(sub, sizeof sub, "%s/nonfinite", dir);
        mkdir(sub, 0755);
        err[0] = 0;
        CHECK(hf_save_config(sub, &c, err, sizeof err) != 0);
        CHECK_MSG(err, "config.json: not written: rope_theta");
        if (!isfinite(bad[i])) CHECK(hf_config_json(&c) == NULL);
        c = tiny(ARCH_LLAMA, 0, 0);
        c.norm_eps = NAN;
        CHECK(hf_config_json(&c) == NULL);
        rmdir(sub);
    }
}

int main(void) {
    test_config_fuzz();
    snprintf(dir, sizeof dir, "/tmp/dapt-test-hf-XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    test_config_import();
    test_rope_scaling_import();
    test_config_refusals();
    test_size_limits();
    test_nonfinite_not_written();
    test_config_export();
    round_trip(tiny(ARCH_LLAMA, 0, 0), "llama_untied", 0);
    round_trip(tiny(ARCH_LLAMA, 1, 0), "llama_tied", 0);
    round_trip(tiny(ARCH_LLAMA, 1, 1), "qwen2", 0);
    round_trip(tiny(ARCH_GPT2, 1, 0), "gpt2", 0);
    round_trip(tiny_qwen3(0), "qwen3", 0);
    round_trip(tiny_qwen3(1), "qwen3_tied", 0);
    round_trip(tiny_llama3(), "llama3", 0);
    round_trip(tiny(ARCH_LLAMA, 0, 1), "sharded", 3000);
    round_trip(tiny(ARCH_GPT2, 1, 0), "gpt2", 2000); /* over a single file: index replaces it */
    CHECK(count_shards("gpt2") > 2);
    round_trip(tiny(ARCH_GPT2, 1, 0), "gpt2", 0);    /* and back, old shards removed */
    CHECK(count_shards("gpt2") == 0);
    test_weight_errors();
    test_gpt2_bare_names();
    test_tokenizer_detection();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
