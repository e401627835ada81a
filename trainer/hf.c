/* hf.c: Hugging Face config.json and weights <-> dapt (see hf.h).
 *
 * A missing config key takes the transformers default for that model type
 * (what from_pretrained would use for the same file); a key whose value
 * dapt cannot represent is refused by name. Weights stream: loading reads
 * each tensor in chunks of ST_STREAM_CHUNK elements into the Model
 * (model_set_param_range), saving asks a source for each chunk as
 * st_write_stream writes it; only a GPT-2 Conv1D weight (transposed between
 * the two layouts) is held whole, one at a time. No whole-model host buffer.
 */
#include "trainer/hf.h"
#include "kernels/util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------- small file helpers ---------------- */

int hf_path(char *dst, size_t n, const char *dir, const char *name) {
    int k = snprintf(dst, n, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= n) {
        if (n) dst[0] = 0;
        return 1;
    }
    return 0;
}

int hf_write_file_atomic(const char *path, const char *text, char *err, size_t err_len) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return err_set(err, err_len, "%s: cannot create: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    const char *p = text;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w;
        n -= (size_t)w;
    }
    if (n || fsync(fd)) {
        err_set(err, err_len, "%s: write failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return 1;
    }
    if (close(fd) || rename(tmp, path)) {
        err_set(err, err_len, "%s: cannot complete %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

/* ---------------- config.json ---------------- */

typedef enum { FAM_LLAMA, FAM_MISTRAL, FAM_QWEN2, FAM_QWEN3, FAM_GPT2, FAM_MIXTRAL } Family;

static const struct {
    const char *arch, *type;
    Family fam;
} families[] = {
    {"LlamaForCausalLM", "llama", FAM_LLAMA},
    {"MistralForCausalLM", "mistral", FAM_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", FAM_QWEN2},
    {"Qwen3ForCausalLM", "qwen3", FAM_QWEN3},
    {"GPT2LMHeadModel", "gpt2", FAM_GPT2},
    {"MixtralForCausalLM", "mixtral", FAM_MIXTRAL},
};
#define N_FAMILIES ((int)(sizeof families / sizeof *families))

typedef struct {
    const cJSON *root;
    const char *where;
    char *err;
    size_t err_len;
} Cfg;

/* Integer key with a default; present keys must be integral numbers. */
static int get_int(Cfg *c, const char *key, long def, long lo, long hi, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    long v = def;
    if (j && !cJSON_IsNull(j)) {
        double d = cJSON_IsNumber(j) ? j->valuedouble : 0.5;
        if (!(d > -1e15 && d < 1e15) || d != floor(d))
            return err_set(c->err, c->err_len, "%s: \"%s\" must be an integer", c->where, key);
        v = (long)d;
    }
    if (v < lo || v > hi)
        return err_set(c->err, c->err_len, "%s: \"%s\" = %ld is out of range [%ld, %ld]", c->where,
                       key, v, lo, hi);
    *out = (int)v;
    return 0;
}

static int get_float(Cfg *c, const char *key, double def, float *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    double v = def;
    if (j && !cJSON_IsNull(j)) {
        if (!cJSON_IsNumber(j) || !(fabs(j->valuedouble) < 1e30))
            return err_set(c->err, c->err_len, "%s: \"%s\" must be a number below 1e30", c->where,
                           key);
        v = j->valuedouble;
    }
    *out = (float)v;
    return 0;
}

static int get_bool(Cfg *c, const char *key, int def, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    *out = def;
    if (j && !cJSON_IsNull(j)) {
        if (!cJSON_IsBool(j))
            return err_set(c->err, c->err_len, "%s: \"%s\" must be true or false", c->where, key);
        *out = cJSON_IsTrue(j);
    }
    return 0;
}

/* A key that must be absent, null, false or equal to `ok` (a string). */
static int refuse_key(Cfg *c, const char *key, const char *ok, const char *why) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!j || cJSON_IsNull(j) || cJSON_IsFalse(j)) return 0;
    if (ok && cJSON_IsString(j) && !strcmp(j->valuestring, ok)) return 0;
    char *v = cJSON_PrintUnformatted(j);
    err_set(c->err, c->err_len, "%s: \"%s\": %.60s is not supported: %s", c->where, key,
            v ? v : "?", why);
    free(v);
    return 1;
}

static int str_is(Cfg *c, const char *key, const char *def, const char *const *ok, int n_ok) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->root, key);
    const char *v = def;
    if (j && !cJSON_IsNull(j)) {
        if (!cJSON_IsString(j))
            return err_set(c->err, c->err_len, "%s: \"%s\" must be a string", c->where, key);
        v = j->valuestring;
    }
    for (int i = 0; i < n_ok; i++)
        if (!strcmp(v, ok[i])) return 0;
    return err_set(c->err, c->err_len, "%s: \"%s\" = \"%.40s\" is not supported (dapt computes %s)",
                   c->where, key, v, ok[0]);
}

static int detect_family(Cfg *c, Family *fam) {
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(c->root, "architectures");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(c->root, "model_type");
    int by_arch = -1, by_type = -1;
    if (archs && !cJSON_IsNull(archs)) {
        const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
        if (!cJSON_IsString(a0))
            return err_set(c->err, c->err_len, "%s: \"architectures\" must be a list of names",
                           c->where);
        for (int i = 0; i < N_FAMILIES; i++)
            if (!strcmp(a0->valuestring, families[i].arch)) by_arch = i;
        if (by_arch < 0)
            return err_set(c->err, c->err_len,
                           "%s: \"architectures\": %.60s is not supported (dapt imports "
                           "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                           "Qwen3ForCausalLM, GPT2LMHeadModel, MixtralForCausalLM)",
                           c->where, a0->valuestring);
    }
    if (cJSON_IsString(type)) {
        for (int i = 0; i < N_FAMILIES; i++)
            if (!strcmp(type->valuestring, families[i].type)) by_type = i;
        if (by_type < 0)
            return err_set(c->err, c->err_len,
                           "%s: \"model_type\": \"%.40s\" is not supported (llama, mistral, "
                           "qwen2, qwen3, gpt2, mixtral)",
                           c->where, type->valuestring);
    }
    if (by_arch < 0 && by_type < 0)
        return err_set(c->err, c->err_len,
                       "%s: neither \"architectures\" nor \"model_type\" is set", c->where);
    if (by_arch >= 0 && by_type >= 0 && by_arch != by_type)
        return err_set(c->err, c->err_len,
                       "%s: \"architectures\" (%s) and \"model_type\" (%s) disagree", c->where,
                       families[by_arch].arch, families[by_type].type);
    *fam = families[by_arch >= 0 ? by_arch : by_type].fam;
    return 0;
}

/* Mixtral's MoE keys, plus dapt's own for MoE layouts Mixtral cannot
 * express (written by hf_config_json only when needed). */
static int parse_mixtral(Cfg *c, ModelConfig *m) {
    float jitter = 0.0f;
    if (get_int(c, "num_local_experts", 8, 2, 1 << 16, &m->n_experts) ||
        get_int(c, "num_experts_per_tok", 2, 1, 1 << 16, &m->top_k) ||
        get_float(c, "router_jitter_noise", 0.0, &jitter) ||
        get_int(c, "dapt_moe_layer_start", 0, 0, 1 << 16, &m->moe_layer_start) ||
        get_int(c, "dapt_moe_layer_step", 1, 1, 1 << 16, &m->moe_layer_step) ||
        get_bool(c, "dapt_norm_topk_prob", 1, &m->norm_topk_prob))
        return 1;
    if (jitter != 0.0f)
        return err_set(
            c->err, c->err_len,
            "%s: \"router_jitter_noise\": %g is not supported (dapt routes without noise)",
            c->where, jitter);
    return 0;
}

/* "rope_scaling": null, or {"rope_type" (or the older "type"): "default" |
 * "linear" | "llama3", and that type's keys}; every other type, and any key
 * the type does not use, is refused by name. */
static int parse_rope_scaling(Cfg *c, ModelConfig *m) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return 0;
    if (!cJSON_IsObject(rs))
        return err_set(c->err, c->err_len, "%s: \"rope_scaling\" must be an object or null",
                       c->where);
    const cJSON *t1 = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    const cJSON *t2 = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const cJSON *t = t1 ? t1 : t2;
    if (!cJSON_IsString(t) || (t1 && t2 && !cJSON_IsString(t2)))
        return err_set(c->err, c->err_len,
                       "%s: \"rope_scaling\" needs \"rope_type\" (or \"type\") as a string",
                       c->where);
    if (t1 && t2 && strcmp(t1->valuestring, t2->valuestring))
        return err_set(c->err, c->err_len,
                       "%s: \"rope_scaling\": \"rope_type\" (\"%.40s\") and \"type\" (\"%.40s\") "
                       "disagree",
                       c->where, t1->valuestring, t2->valuestring);
    const char *type = t->valuestring;
    static const char *const linear_keys[] = {"factor", NULL};
    static const char *const llama3_keys[] = {"factor", "low_freq_factor", "high_freq_factor",
                                              "original_max_position_embeddings", NULL};
    static const char *const no_keys[] = {NULL};
    const char *const *keys;
    if (!strcmp(type, "default")) m->rope_scaling = ROPE_SCALING_NONE, keys = no_keys;
    else if (!strcmp(type, "linear")) m->rope_scaling = ROPE_SCALING_LINEAR, keys = linear_keys;
    else if (!strcmp(type, "llama3")) m->rope_scaling = ROPE_SCALING_LLAMA3, keys = llama3_keys;
    else
        return err_set(c->err, c->err_len,
                       "%s: \"rope_scaling\": rope_type \"%.40s\" is not supported (dapt computes "
                       "\"linear\" and \"llama3\")",
                       c->where, type);
    for (const cJSON *k = rs->child; k; k = k->next) {
        int known = !strcmp(k->string, "rope_type") || !strcmp(k->string, "type");
        for (int i = 0; keys[i] && !known; i++) known = !strcmp(k->string, keys[i]);
        if (!known)
            return err_set(c->err, c->err_len,
                           "%s: \"rope_scaling\": key \"%.60s\" is not supported with rope_type "
                           "\"%s\"",
                           c->where, k->string, type);
    }
    for (int i = 0; keys[i]; i++)
        if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rs, keys[i])) ||
            !cJSON_GetObjectItemCaseSensitive(rs, keys[i]))
            return err_set(c->err, c->err_len,
                           "%s: \"rope_scaling\": rope_type \"%s\" needs \"%s\"", c->where, type,
                           keys[i]);
    Cfg sub = {rs, c->where, c->err, c->err_len};
    if (m->rope_scaling != ROPE_SCALING_NONE && get_float(&sub, "factor", 1.0, &m->rope_factor))
        return 1;
    if (m->rope_scaling == ROPE_SCALING_LLAMA3 &&
        (get_float(&sub, "low_freq_factor", 1.0, &m->rope_low_freq_factor) ||
         get_float(&sub, "high_freq_factor", 4.0, &m->rope_high_freq_factor) ||
         get_int(&sub, "original_max_position_embeddings", 8192, 1, 1L << 30,
                 &m->rope_original_max_pos)))
        return 1;
    return 0;
}

static int parse_llama(Cfg *c, Family fam, ModelConfig *m) {
    /* transformers' defaults per model type */
    int mix = fam == FAM_MIXTRAL, qwen = fam == FAM_QWEN2 || fam == FAM_QWEN3;
    long vocab = qwen ? 151936 : 32000;
    long inter = fam == FAM_LLAMA ? 11008 : fam == FAM_MISTRAL || mix ? 14336 : 22016;
    long max_pos = fam == FAM_LLAMA ? 2048 : fam == FAM_MISTRAL || mix ? 131072 : 32768;
    const long BIG = 1L << 30;
    *m = model_config_default(ARCH_LLAMA);
    if (get_int(c, "vocab_size", vocab, 1, BIG, &m->vocab_size) ||
        get_int(c, "hidden_size", 4096, 1, BIG, &m->d_model) ||
        get_int(c, "intermediate_size", inter, 1, BIG, &m->d_ff) ||
        get_int(c, "num_hidden_layers", 32, 1, 1 << 16, &m->n_layer) ||
        get_int(c, "num_attention_heads", 32, 1, 1 << 16, &m->n_head) ||
        get_int(c, "max_position_embeddings", max_pos, 1, BIG, &m->max_seq_len) ||
        get_float(c, "rope_theta", mix ? 1e6 : 10000.0, &m->rope_theta) ||
        get_float(c, "rms_norm_eps", mix ? 1e-5 : 1e-6, &m->norm_eps) ||
        get_bool(c, "tie_word_embeddings", 0, &m->tie_embeddings))
        return 1;
    if (get_int(c, "num_key_value_heads", fam == FAM_MISTRAL || mix ? 8 : m->n_head, 1, 1 << 16,
                &m->n_kv_head))
        return 1;
    /* head_dim: Qwen3's default is 128; the others' hidden_size / heads */
    int hd = 0;
    if (get_int(c, "head_dim", fam == FAM_QWEN3 ? 128 : m->d_model / m->n_head, 1, 1 << 16, &hd))
        return 1;
    m->head_dim = hd * m->n_head == m->d_model ? 0 : hd;
    static const char *const silu[] = {"silu", "swish"};
    if (str_is(c, "hidden_act", "silu", silu, 2)) return 1;
    if (refuse_key(c, "attention_bias", NULL,
                   fam == FAM_QWEN3
                       ? "Qwen3's attention_bias biases q, k, v and o_proj; dapt has no o_proj bias"
                       : "dapt's llama has q/k/v biases only as Qwen2 (no o_proj bias)") ||
        refuse_key(c, "mlp_bias", NULL, "dapt's llama MLP has no biases") ||
        parse_rope_scaling(c, m))
        return 1;
    m->qkv_bias = fam == FAM_QWEN2;
    m->qk_norm = fam == FAM_QWEN3;
    /* Sliding-window attention over a window W equals full causal attention
     * for sequences of at most W tokens: cap max_seq_len at W. */
    int use_sw = fam == FAM_MISTRAL || mix, sw = 0;
    if (qwen && get_bool(c, "use_sliding_window", 0, &use_sw)) return 1;
    const cJSON *swj = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
    if (use_sw && (!swj || !cJSON_IsNull(swj))) {
        if (get_int(c, "sliding_window", 4096, 1, BIG, &sw)) return 1;
        if (sw < m->max_seq_len) m->max_seq_len = sw;
    }
    return mix ? parse_mixtral(c, m) : 0;
}

static int parse_gpt2(Cfg *c, ModelConfig *m) {
    const long BIG = 1L << 30;
    *m = model_config_default(ARCH_GPT2);
    if (get_int(c, "vocab_size", 50257, 1, BIG, &m->vocab_size) ||
        get_int(c, "n_embd", 768, 1, BIG, &m->d_model) ||
        get_int(c, "n_layer", 12, 1, 1 << 16, &m->n_layer) ||
        get_int(c, "n_head", 12, 1, 1 << 16, &m->n_head) ||
        get_int(c, "n_positions", 1024, 1, BIG, &m->max_seq_len) ||
        get_int(c, "n_inner", 4L * m->d_model, 1, BIG, &m->d_ff) ||
        get_float(c, "layer_norm_epsilon", 1e-5, &m->norm_eps) ||
        get_bool(c, "tie_word_embeddings", 1, &m->tie_embeddings))
        return 1;
    m->n_kv_head = m->n_head;
    static const char *const gelu[] = {"gelu_new", "gelu_pytorch_tanh"};
    if (str_is(c, "activation_function", "gelu_new", gelu, 2)) return 1;
    int scale = 1;
    if (get_bool(c, "scale_attn_weights", 1, &scale)) return 1;
    if (!scale)
        return err_set(c->err, c->err_len,
                       "%s: \"scale_attn_weights\": false is not supported (dapt scales by "
                       "1/sqrt(head size))",
                       c->where);
    if (refuse_key(c, "scale_attn_by_inverse_layer_idx", NULL, "dapt scales every layer alike") ||
        refuse_key(c, "add_cross_attention", NULL, "dapt models are decoder-only"))
        return 1;
    return 0;
}

int hf_parse_config(const char *json, const char *where, ModelConfig *cfg, char *err,
                    size_t err_len) {
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(err, err_len, "%s: not a JSON object", where);
    }
    Cfg c = {root, where, err, err_len};
    size_t n_keys = 0;
    for (const cJSON *a = root->child; a; a = a->next)
        n_keys++;
    const char **keys = malloc((n_keys + 1) * sizeof *keys);
    const char *dup = NULL;
    n_keys = 0;
    for (const cJSON *a = root->child; a && keys; a = a->next)
        keys[n_keys++] = a->string;
    int dup_rc = keys ? find_duplicate(keys, n_keys, &dup) : -1;
    free(keys);
    if (dup_rc) {
        if (dup_rc > 0)
            err_set(err, err_len, "%s: \"%s\" appears twice", where, dup);
        else
            err_set(err, err_len, "%s: out of memory", where);
        cJSON_Delete(root);
        return 1;
    }
    Family fam = FAM_LLAMA;
    int rc = detect_family(&c, &fam);
    if (!rc) rc = fam == FAM_GPT2 ? parse_gpt2(&c, cfg) : parse_llama(&c, fam, cfg);
    cJSON_Delete(root);
    if (rc) return 1;
    char e2[400];
    if (model_config_check(cfg, e2, sizeof e2)) return err_set(err, err_len, "%s: %s", where, e2);
    return 0;
}

int hf_load_config(const char *dir, ModelConfig *cfg, char *err, size_t err_len) {
    char path[4096];
    if (hf_path(path, sizeof path, dir, "config.json"))
        return err_set(err, err_len, "%s: path too long", dir);
    char *text = st_read_text(path, 1u << 20, err, err_len);
    if (!text) return 1;
    int rc = hf_parse_config(text, path, cfg, err, err_len);
    free(text);
    return rc;
}

/* Shortest %g form that reads back as the same float (1e-06, not
 * 9.99999997e-07), so config.json shows the value the user wrote. */
static void fmt_float(char *buf, size_t n, float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", n - strlen(buf) - 1);
}

/* "rope_scaling": null or the object transformers reads, and "head_dim"
 * when the head size is not hidden_size / heads or the family's default
 * differs (Qwen3: 128): the llama keys every family shares. linear is
 * written {"type", "factor"}, the form older transformers also accept. */
static void rope_head_json(char *buf, size_t n, const ModelConfig *c) {
    char f[40], lo[40], hi[40], head[48] = "";
    fmt_float(f, sizeof f, c->rope_factor);
    if (c->head_dim || c->qk_norm)
        snprintf(head, sizeof head, "  \"head_dim\": %d,\n", model_head_dim(c));
    if (c->rope_scaling == ROPE_SCALING_LINEAR) {
        snprintf(buf, n, "%s  \"rope_scaling\": {\"type\": \"linear\", \"factor\": %s},\n", head, f);
    } else if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        fmt_float(lo, sizeof lo, c->rope_low_freq_factor);
        fmt_float(hi, sizeof hi, c->rope_high_freq_factor);
        snprintf(buf, n,
                 "%s  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %s, "
                 "\"low_freq_factor\": %s, \"high_freq_factor\": %s, "
                 "\"original_max_position_embeddings\": %d},\n",
                 head, f, lo, hi, c->rope_original_max_pos);
    } else {
        snprintf(buf, n, "%s  \"rope_scaling\": null,\n", head);
    }
}

char *hf_config_json(const ModelConfig *c) {
    size_t cap = 4096;
    /* JSON has no inf or nan: such a config.json would not load anywhere */
    const float floats[] = {c->norm_eps, c->rope_theta, c->rope_factor, c->rope_low_freq_factor,
                            c->rope_high_freq_factor};
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++)
        if (!isfinite(floats[i])) return NULL;
    char *s = malloc(cap), eps[40], theta[40], rope[400];
    if (!s) return NULL;
    fmt_float(eps, sizeof eps, c->norm_eps);
    fmt_float(theta, sizeof theta, c->rope_theta);
    rope_head_json(rope, sizeof rope, c);
    const char *tie = c->tie_embeddings ? "true" : "false";
    if (c->arch == ARCH_GPT2) {
        snprintf(s, cap,
                 "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
                 "  \"vocab_size\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n  \"n_head\": %d,\n"
                 "  \"n_inner\": %d,\n  \"n_positions\": %d,\n  \"n_ctx\": %d,\n"
                 "  \"layer_norm_epsilon\": %s,\n  \"activation_function\": \"gelu_new\",\n"
                 "  \"tie_word_embeddings\": %s,\n  \"scale_attn_weights\": true,\n"
                 "  \"torch_dtype\": \"float32\"\n}\n",
                 c->vocab_size, c->d_model, c->n_layer, c->n_head, c->d_ff, c->max_seq_len,
                 c->max_seq_len, eps, tie);
    } else if (c->n_experts) {
        /* Mixtral; dapt_* keys only for layouts Mixtral lacks (mixed
         * dense/MoE layers, unnormalised top-k weights) */
        char extra[200] = "";
        if (c->moe_layer_start != 0 || c->moe_layer_step != 1 || !c->norm_topk_prob)
            snprintf(extra, sizeof extra,
                     "  \"dapt_moe_layer_start\": %d,\n  \"dapt_moe_layer_step\": %d,\n"
                     "  \"dapt_norm_topk_prob\": %s,\n",
                     c->moe_layer_start, c->moe_layer_step, c->norm_topk_prob ? "true" : "false");
        snprintf(s, cap,
                 "{\n  \"architectures\": [\"MixtralForCausalLM\"],\n  \"model_type\": \"mixtral\",\n"
                 "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                 "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                 "  \"num_key_value_heads\": %d,\n  \"max_position_embeddings\": %d,\n"
                 "  \"rope_theta\": %s,\n  \"rms_norm_eps\": %s,\n  \"hidden_act\": \"silu\",\n"
                 "  \"tie_word_embeddings\": %s,\n%s  \"sliding_window\": null,\n"
                 "  \"num_local_experts\": %d,\n  \"num_experts_per_tok\": %d,\n"
                 "  \"router_jitter_noise\": 0.0,\n%s  \"torch_dtype\": \"float32\"\n}\n",
                 c->vocab_size, c->d_model, c->d_ff, c->n_layer, c->n_head, c->n_kv_head,
                 c->max_seq_len, theta, eps, tie, rope, c->n_experts, c->top_k, extra);
    } else {
        /* Qwen3 (q/k norms), Qwen2 (q/k/v biases) or Llama */
        const char *arch = c->qk_norm ? "Qwen3ForCausalLM" : c->qkv_bias ? "Qwen2ForCausalLM"
                                                                          : "LlamaForCausalLM";
        const char *type = c->qk_norm ? "qwen3" : c->qkv_bias ? "qwen2" : "llama";
        /* "sliding_window": null, not just use_sliding_window false:
         * transformers 4.51's Qwen2/Qwen3 causal mask applies
         * config.sliding_window (default 4096) whatever use_sliding_window says */
        const char *extra = c->qk_norm    ? "  \"attention_bias\": false,\n"
                                            "  \"use_sliding_window\": false,\n"
                                            "  \"sliding_window\": null,\n"
                            : c->qkv_bias ? "  \"use_sliding_window\": false,\n"
                                            "  \"sliding_window\": null,\n"
                                          : "  \"attention_bias\": false,\n";
        snprintf(s, cap,
                 "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n"
                 "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                 "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                 "  \"num_key_value_heads\": %d,\n  \"max_position_embeddings\": %d,\n"
                 "  \"rope_theta\": %s,\n  \"rms_norm_eps\": %s,\n  \"hidden_act\": \"silu\",\n"
                 "  \"tie_word_embeddings\": %s,\n%s%s"
                 "  \"torch_dtype\": \"float32\"\n}\n",
                 arch, type, c->vocab_size, c->d_model, c->d_ff, c->n_layer, c->n_head,
                 c->n_kv_head, c->max_seq_len, theta, eps, tie, rope, extra);
    }
    return s;
}

int hf_save_config(const char *dir, const ModelConfig *cfg, char *err, size_t err_len) {
    char path[4096];
    if (hf_path(path, sizeof path, dir, "config.json"))
        return err_set(err, err_len, "%s: path too long", dir);
    char e[400];
    if (model_config_check(cfg, e, sizeof e))
        return err_set(err, err_len, "%s: not written: %s", path, e);
    char *text = hf_config_json(cfg);
    if (!text) return err_set(err, err_len, "%s: out of memory", path);
    int rc = hf_write_file_atomic(path, text, err, err_len);
    free(text);
    return rc;
}

/* ---------------- weights ---------------- */

/* HF files of GPT-2 sometimes omit the "transformer." prefix (the base
 * model's state dict); names are looked up with and without it. */
static const char *strip_base_prefix(const char *name) {
    return strncmp(name, "transformer.", 12) ? NULL : name + 12;
}

/* Non-parameter buffers that HF checkpoints may carry. */
static int is_known_buffer(const char *name) {
    static const char *const suffixes[] = {".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && !strcmp(name + n - k, suffixes[i])) return 1;
    }
    return 0;
}

/* Tensor i of m as prefix + its name in s, with its HF shape: *file, *k. */
static int find_param(StSet *s, const Model *m, int i, const char *prefix, StFile **file, int *k,
                      char *err, size_t err_len) {
    const ParamTensor *p = model_tensor(m, i);
    char name[200];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    int found = st_set_find(s, name, file, k) == 0;
    const char *alt = strip_base_prefix(p->name);
    if (!found && alt && !*prefix) found = st_set_find(s, alt, file, k) == 0;
    if (!found)
        return err_set(err, err_len, "%s: tensor '%s' is missing", st_path(st_set_file(s, 0)),
                       name);
    const StTensor *t = st_tensor(*file, *k);
    int tr = p->ndim == 2 && p->hf_transposed;
    int64_t want0 = tr ? p->shape[1] : p->shape[0], want1 = tr ? p->shape[0] : p->shape[1];
    if (t->ndim == p->ndim && t->shape[0] == want0 && (p->ndim == 1 || t->shape[1] == want1))
        return 0;
    char got[120] = "";
    for (int d = 0; d < t->ndim && strlen(got) < 90; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "",
                 (long long)t->shape[d]);
    if (p->ndim == 1)
        return err_set(err, err_len, "%s: tensor '%s' has shape [%s], the model needs [%lld]",
                       st_path(*file), t->name, got, (long long)want0);
    return err_set(err, err_len, "%s: tensor '%s' has shape [%s], the model needs [%lld, %lld]",
                   st_path(*file), t->name, got, (long long)want0, (long long)want1);
}

int hf_check_params(StSet *s, const Model *m, const char *prefix, char *err, size_t err_len) {
    for (int i = 0; i < model_num_tensors(m); i++) {
        StFile *f;
        int k;
        if (find_param(s, m, i, prefix, &f, &k, err, err_len)) return 1;
    }
    return 0;
}

/* The largest GPT-2 Conv1D (transposed) tensor: the one thing read or
 * written whole rather than in chunks. */
static size_t max_transposed_numel(const Model *m) {
    size_t n = 0;
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *p = model_tensor(m, i);
        if (p->ndim == 2 && p->hf_transposed && p->numel > n) n = p->numel;
    }
    return n;
}

int hf_read_params_to(StSet *s, const Model *m, const char *prefix, HfParamSink sink, void *ctx,
                      char *err, size_t err_len) {
    size_t nt = max_transposed_numel(m);
    float *chunk = malloc(ST_STREAM_CHUNK * sizeof *chunk);
    float *file = nt ? malloc(nt * sizeof *file) : NULL, *mem = nt ? malloc(nt * sizeof *mem) : NULL;
    int rc = 1;
    if (!chunk || (nt && (!file || !mem))) {
        err_set(err, err_len, "out of memory");
        goto out;
    }
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *p = model_tensor(m, i);
        StFile *f;
        int k;
        if (find_param(s, m, i, prefix, &f, &k, err, err_len)) goto out;
        if (p->ndim == 2 && p->hf_transposed) {
            /* file (in=R, out=C) -> memory (out, in) */
            int R = p->shape[1], C = p->shape[0];
            if (st_read_f32(f, k, file, err, err_len)) goto out;
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) mem[(size_t)c * R + r] = file[(size_t)r * C + c];
            if (sink(ctx, p->offset, p->numel, mem, err, err_len)) goto out;
            continue;
        }
        for (size_t at = 0; at < p->numel; at += ST_STREAM_CHUNK) {
            size_t c = p->numel - at < ST_STREAM_CHUNK ? p->numel - at : ST_STREAM_CHUNK;
            if (st_read_f32_range(f, k, at, c, chunk, err, err_len) ||
                sink(ctx, p->offset + at, c, chunk, err, err_len))
                goto out;
        }
    }
    rc = 0;
out:
    free(chunk), free(file), free(mem);
    return rc;
}

int hf_read_tensor(StSet *s, const Model *m, int i, float *dst, char *err, size_t err_len) {
    const ParamTensor *p = model_tensor(m, i);
    StFile *f;
    int k;
    if (find_param(s, m, i, "", &f, &k, err, err_len)) return 1;
    if (!(p->ndim == 2 && p->hf_transposed)) return st_read_f32(f, k, dst, err, err_len);
    float *file = malloc(p->numel * sizeof *file);
    if (!file) return err_set(err, err_len, "out of memory for tensor '%s'", p->name);
    int rc = st_read_f32(f, k, file, err, err_len);
    int R = p->shape[1], C = p->shape[0]; /* file (in=R, out=C) -> memory (out, in) */
    for (int r = 0; !rc && r < R; r++)
        for (int c = 0; c < C; c++) dst[(size_t)c * R + r] = file[(size_t)r * C + c];
    free(file);
    return rc;
}

static int sink_buffer(void *ctx, size_t offset, size_t count, const float *src, char *err,
                       size_t err_len) {
    (void)err, (void)err_len;
    memcpy((float *)ctx + offset, src, count * sizeof *src);
    return 0;
}

int hf_read_params(StSet *s, const Model *m, const char *prefix, float *dst, char *err,
                   size_t err_len) {
    return hf_read_params_to(s, m, prefix, sink_buffer, dst, err, err_len);
}

/* every tensor in the files must be a parameter or a known buffer */
static int check_extras(StSet *s, const Model *m, char *err, size_t err_len) {
    for (int fi = 0; fi < st_set_num_files(s); fi++) {
        StFile *f = st_set_file(s, fi);
        for (int i = 0; i < st_num_tensors(f); i++) {
            const char *name = st_tensor(f, i)->name;
            char full[200];
            snprintf(full, sizeof full, "transformer.%s", name);
            if (model_find_tensor(m, name) >= 0 || is_known_buffer(name)) continue;
            if (model_config(m)->arch == ARCH_GPT2 && model_find_tensor(m, full) >= 0) continue;
            if (!strcmp(name, "lm_head.weight") && model_config(m)->tie_embeddings) continue;
            return err_set(err, err_len, "%s: tensor '%s' is not a parameter of this %s model%s",
                           st_path(f), name, model_arch_name(model_config(m)->arch),
                           !strcmp(name, "lm_head.weight") ? " (config.json has tied embeddings)"
                                                           : "");
        }
    }
    return 0;
}

int hf_check_weights(const char *dir, const Model *m, char *err, size_t err_len) {
    StSet *s = st_set_open(dir, err, err_len);
    if (!s) return 1;
    int rc = check_extras(s, m, err, err_len) || hf_check_params(s, m, "", err, err_len);
    st_set_close(s);
    return rc;
}

static int sink_model(void *ctx, size_t offset, size_t count, const float *src, char *err,
                      size_t err_len) {
    (void)err, (void)err_len;
    model_set_param_range(ctx, offset, count, src);
    return 0;
}

int hf_load_weights(const char *dir, Model *m, char *err, size_t err_len) {
    StSet *s = st_set_open(dir, err, err_len);
    if (!s) return 1;
    /* every name and shape checked before the first write into m */
    int rc = check_extras(s, m, err, err_len) || hf_check_params(s, m, "", err, err_len) ||
             hf_read_params_to(s, m, "", sink_model, m, err, err_len);
    st_set_close(s);
    return rc;
}

Model *hf_load_model(const char *dir, const Ops *ops, char *err, size_t err_len) {
    ModelConfig cfg;
    if (hf_load_config(dir, &cfg, err, err_len)) return NULL;
    Model *m = model_create(&cfg, ops, err, err_len);
    if (!m) return NULL;
    if (hf_load_weights(dir, m, err, err_len)) {
        model_free(m);
        return NULL;
    }
    return m;
}

/* What one file's fill (st_write_stream) needs: tensors [t0, t0 + nt) of
 * the table from each of n_bufs sources, then the extra tensors. A
 * transposed tensor is fetched whole into `tensor` (once: its chunks are
 * asked for in order) and read out in file order. */
typedef struct {
    const Model *m;
    int t0, nt, n_bufs;
    const HfParamSource *fns;
    void *const *ctxs;
    const StWriteTensor *extra;
    float *tensor; /* (max_transposed_numel) */
    int cached;    /* file tensor index held in `tensor`, or -1 */
} WriteCtx;

static int fill_params(void *ctx, int i, uint64_t first, size_t count, void *dst, char *err,
                       size_t err_len) {
    WriteCtx *w = ctx;
    if (i >= w->nt * w->n_bufs) {
        const StWriteTensor *e = &w->extra[i - w->nt * w->n_bufs];
        memcpy(dst, (const char *)e->data + first * 4, count * 4);
        return 0;
    }
    int b = i / w->nt;
    const ParamTensor *p = model_tensor(w->m, w->t0 + i % w->nt);
    if (!(p->ndim == 2 && p->hf_transposed))
        return w->fns[b](w->ctxs[b], p->offset + first, count, dst, err, err_len);
    if (w->cached != i) {
        if (w->fns[b](w->ctxs[b], p->offset, p->numel, w->tensor, err, err_len)) return 1;
        w->cached = i;
    }
    /* memory (out=R, in=C) -> file (in, out): file element j = (c, r) */
    size_t R = (size_t)p->shape[0], C = (size_t)p->shape[1];
    float *d = dst;
    for (size_t j = 0; j < count; j++) {
        size_t f = (size_t)first + j, c = f / R, r = f % R;
        d[j] = w->tensor[r * C + c];
    }
    return 0;
}

/* Tensors [t0, t1) of the parameter table, from each source, plus extra. */
static int write_range(const char *path, const Model *m, const HfParamSource *fns,
                       void *const *ctxs, const char *const *prefixes, int n_bufs, int t0, int t1,
                       const StWriteTensor *extra, int n_extra, char *err, size_t err_len) {
    int nt = t1 - t0, n = nt * n_bufs + n_extra, rc = 1;
    size_t ntr = max_transposed_numel(m);
    StWriteTensor *ts = calloc((size_t)n + 1, sizeof *ts);
    char *names = calloc((size_t)n + 1, 200);
    WriteCtx w = {m, t0, nt, n_bufs, fns, ctxs, extra, ntr ? malloc(ntr * sizeof(float)) : NULL, -1};
    if (!ts || !names || (ntr && !w.tensor)) {
        err_set(err, err_len, "%s: out of memory", path);
        goto out;
    }
    for (int b = 0; b < n_bufs; b++) {
        for (int i = 0; i < nt; i++) {
            const ParamTensor *p = model_tensor(m, t0 + i);
            StWriteTensor *t = &ts[b * nt + i];
            char *nm = names + (size_t)(b * nt + i) * 200;
            int tr = p->ndim == 2 && p->hf_transposed;
            snprintf(nm, 200, "%s%s", prefixes[b], p->name);
            t->name = nm;
            t->dtype = ST_F32;
            t->ndim = p->ndim;
            t->shape[0] = tr ? p->shape[1] : p->shape[0];
            t->shape[1] = tr ? p->shape[0] : p->shape[1];
        }
    }
    for (int i = 0; i < n_extra; i++) ts[nt * n_bufs + i] = extra[i];
    const char *meta[] = {"format", "pt"};
    rc = st_write_stream(path, ts, n, meta, 1, fill_params, &w, err, err_len);
out:
    free(w.tensor);
    free(ts);
    free(names);
    return rc;
}

static int source_buffer(void *ctx, size_t offset, size_t count, float *dst, char *err,
                         size_t err_len) {
    (void)err, (void)err_len;
    memcpy(dst, (const float *)ctx + offset, count * sizeof *dst);
    return 0;
}

static int source_model(void *ctx, size_t offset, size_t count, float *dst, char *err,
                        size_t err_len) {
    (void)err, (void)err_len;
    model_get_param_range(ctx, offset, count, dst);
    return 0;
}

int hf_write_params(const char *path, const Model *m, const float *const *bufs,
                    const char *const *prefixes, int n_bufs, const StWriteTensor *extra,
                    int n_extra, char *err, size_t err_len) {
    HfParamSource fns[4];
    void *ctxs[4];
    if (n_bufs < 0 || n_bufs > 4) return err_set(err, err_len, "%s: 0 to 4 buffers", path);
    for (int b = 0; b < n_bufs; b++) fns[b] = source_buffer, ctxs[b] = (void *)bufs[b];
    return write_range(path, m, fns, ctxs, prefixes, n_bufs, 0, model_num_tensors(m), extra,
                       n_extra, err, err_len);
}

/* model.safetensors.index.json for shards: tensor i is in shard[i] */
static char *index_json(const Model *m, const int *shard, int n_shards) {
    cJSON *r = cJSON_CreateObject(), *meta, *wm;
    size_t total = model_num_params(m) * sizeof(float);
    if (!r || !(meta = cJSON_AddObjectToObject(r, "metadata")) ||
        !cJSON_AddNumberToObject(meta, "total_size", (double)total) ||
        !(wm = cJSON_AddObjectToObject(r, "weight_map"))) {
        cJSON_Delete(r);
        return NULL;
    }
    for (int i = 0; i < model_num_tensors(m); i++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard[i] + 1, n_shards);
        if (!cJSON_AddStringToObject(wm, model_tensor(m, i)->name, file)) {
            cJSON_Delete(r);
            return NULL;
        }
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

/* removes model-NNNNN-of-NNNNN.safetensors files left by an earlier save */
static void remove_old_shards(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char path[4200];
    for (struct dirent *e; (e = readdir(d));) {
        unsigned a, b;
        char tail[32];
        if (sscanf(e->d_name, "model-%5u-of-%5u.%31s", &a, &b, tail) == 3 && !strcmp(tail, "safetensors") &&
            strlen(e->d_name) == 32 && !hf_path(path, sizeof path, dir, e->d_name))
            unlink(path);
    }
    closedir(d);
}

int hf_save_weights(const char *dir, const Model *m, size_t max_shard_bytes, char *err,
                    size_t err_len) {
    return hf_save_weights_from(dir, m, NULL, NULL, max_shard_bytes, err, err_len);
}

int hf_save_weights_from(const char *dir, const Model *m, HfParamSource src, void *ctx,
                         size_t max_shard_bytes, char *err, size_t err_len) {
    char path[4200], file[64];
    int nt = model_num_tensors(m), rc = 1, n_shards = 1;
    if (!max_shard_bytes) max_shard_bytes = HF_SHARD_BYTES;
    if (!src) src = source_model, ctx = (void *)m;
    int *shard = calloc((size_t)nt + 1, sizeof *shard);
    if (!shard) return err_set(err, err_len, "out of memory");
    /* tensors in table order, a new shard when the next one would overflow */
    size_t cur = 0;
    for (int i = 0; i < nt; i++) {
        size_t b = model_tensor(m, i)->numel * sizeof(float);
        if (cur && cur + b > max_shard_bytes) n_shards++, cur = 0;
        shard[i] = n_shards - 1;
        cur += b;
    }
    const HfParamSource fns[] = {src};
    void *const ctxs[] = {ctx};
    const char *prefixes[] = {""};
    const char *stale = n_shards == 1 ? "model.safetensors.index.json" : "model.safetensors";
    if (hf_path(path, sizeof path, dir, stale)) {
        err_set(err, err_len, "%s: path too long", dir);
        goto out;
    }
    unlink(path); /* st_set_open prefers model.safetensors: never leave both */
    remove_old_shards(dir);
    if (n_shards == 1) {
        hf_path(path, sizeof path, dir, "model.safetensors");
        rc = write_range(path, m, fns, ctxs, prefixes, 1, 0, nt, NULL, 0, err, err_len);
        goto out;
    }
    for (int s = 0, t0 = 0; s < n_shards; s++) {
        int t1 = t0;
        while (t1 < nt && shard[t1] == s) t1++;
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        hf_path(path, sizeof path, dir, file);
        if (write_range(path, m, fns, ctxs, prefixes, 1, t0, t1, NULL, 0, err, err_len)) goto out;
        t0 = t1;
    }
    char *idx = index_json(m, shard, n_shards);
    if (!idx) {
        err_set(err, err_len, "out of memory");
        goto out;
    }
    hf_path(path, sizeof path, dir, "model.safetensors.index.json");
    rc = hf_write_file_atomic(path, idx, err, err_len);
    free(idx);
out:
    free(shard);
    return rc;
}
