/* import.c: a llama, qwen3 or gpt2 GGUF file (F32, F16, BF16 tensors) -> a
 * dapt Model, and from there a checkpoint directory (config.json +
 * model.safetensors, and tokenizer.json + tokenizer_config.json for a
 * byte-level BPE vocabulary: vocab_import.c) that `dapt train` can start a
 * CPT run from.
 *
 * It is export.c backwards: the hyperparameters come from the
 * architecture's keys (their types checked), the tensors are matched by
 * llama.cpp name through gguf_tensor_name, Q/K rows are permuted back to the
 * HF rotate_half layout, and F16/BF16 widen to fp32 exactly. An MoE file
 * (llama.expert_count > 0, Mixtral) becomes an MoE model with every layer
 * MoE, top_k = llama.expert_used_count and renormalised top-k weights (what
 * llama.cpp computes); each expert's matrices are slices of the 3-D
 * blk.N.ffn_{gate,up,down}_exps stacks. A qwen3 file is a llama with q/k
 * head norms (attn_q_norm, attn_k_norm; Q/K rows not permuted: llama.cpp's
 * qwen3 rotates HF's rotate_half pairs); attention.key_length sets the head
 * size. RoPE scaling: ARCH.rope.scaling.type "linear" with its factor; a
 * rope_freqs.weight tensor (llama.cpp's form of Llama 3's scaling) only
 * with the dapt.rope_scaling.* keys export writes, whose llama3 parameters
 * must give exactly those factors: the factors alone do not say which
 * parameters made them, so a file without the keys is refused (import the
 * Hugging Face model instead).
 *
 * Invariants: every Model tensor is found with its exact ggml shape and
 * every GGUF tensor is used (an unknown one is an error naming it, never
 * silently dropped); what dapt cannot compute exactly (another rope scaling
 * type, a RoPE that rotates only part of the head, a quantized tensor) is
 * refused with the key or tensor and type named; the output directory appears only when
 * complete (written in OUT_DIR.import-XXXXXX beside it, renamed). --force
 * replaces only a directory that holds nothing but an import's files (moved
 * aside whole, then removed): it never deletes what it did not write.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/util.h"
#include "tools/gguf/gguf.h"
#include "trainer/hf.h"
#include "trainer/model.h"

static int get_u32_int(const GgufFile *f, const char *arch, const char *suffix, int *out,
                       int required, char *err, size_t err_len) {
    char key[128];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!required && !gguf_find_kv(f, key)) return 0;
    if (gguf_get_u32(f, key, &v, err, err_len)) return 1;
    if (v < 1 || v > (uint32_t)INT32_MAX)
        return err_set(err, err_len, "metadata %s = %u is out of range", key, v);
    *out = (int)v;
    return 0;
}

/* ARCH.rope.scaling.* (linear) and dapt.rope_scaling.* (llama3, with the
 * rope_freqs.weight tensor) into c */
static int read_rope_scaling(const GgufFile *f, const char *arch, ModelConfig *c, char *e,
                             size_t n) {
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const GgufKV *sc = gguf_find_kv(f, key);
    if (sc && !(sc->type == GGUF_STRING && !strcmp(sc->str, "none"))) {
        if (sc->type != GGUF_STRING || strcmp(sc->str, "linear"))
            return err_set(e, n,
                           "%s = %.40s is not supported: dapt computes linear scaling (and "
                           "llama3's as rope_freqs.weight)",
                           key, sc->type == GGUF_STRING ? sc->str : "(not a string)");
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        c->rope_scaling = ROPE_SCALING_LINEAR;
        if (gguf_get_f32(f, key, &c->rope_factor, e, n)) return 1;
    }
    const GgufTensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    const GgufKV *dt = gguf_find_kv(f, "dapt.rope_scaling.type");
    if (!rf && !dt) return 0;
    if (!rf || !dt || dt->type != GGUF_STRING || strcmp(dt->str, "llama3") || sc)
        return err_set(e, n,
                       "%s: rope_freqs.weight (llama.cpp's form of Llama 3 rope scaling) needs the "
                       "dapt.rope_scaling.* keys with type llama3 (dapt cannot tell the llama3 "
                       "parameters from the factors alone; import the Hugging Face model instead)",
                       rf ? "rope_freqs.weight without dapt.rope_scaling.type = llama3"
                          : "dapt.rope_scaling.type without rope_freqs.weight");
    uint32_t orig = 0;
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    if (gguf_get_f32(f, "dapt.rope_scaling.factor", &c->rope_factor, e, n) ||
        gguf_get_f32(f, "dapt.rope_scaling.low_freq_factor", &c->rope_low_freq_factor, e, n) ||
        gguf_get_f32(f, "dapt.rope_scaling.high_freq_factor", &c->rope_high_freq_factor, e, n) ||
        gguf_get_u32(f, "dapt.rope_scaling.original_max_position_embeddings", &orig, e, n))
        return 1;
    c->rope_original_max_pos = orig > (uint32_t)INT32_MAX ? INT32_MAX : (int)orig;
    return 0;
}

/* rope_freqs.weight must hold exactly the factors c's llama3 parameters
 * give (F32, head_dim / 2 of them) */
static int check_rope_freqs(const GgufTensor *t, const ModelConfig *c, char *e, size_t n) {
    int half = model_head_dim(c) / 2;
    if (t->type != GGML_F32 || t->n_dims != 1 || t->ne[0] != (uint64_t)half)
        return err_set(e, n, "rope_freqs.weight must be F32 with ne = {%d} (head_dim / 2)", half);
    float *want = malloc((size_t)half * sizeof *want);
    if (!want || gguf_rope_freq_factors(c, want)) {
        free(want);
        return err_set(e, n, "out of memory");
    }
    int bad = -1;
    for (int i = 0; i < half && bad < 0; i++) {
        float got;
        memcpy(&got, (const float *)t->data + i, sizeof got);
        if (got != want[i]) bad = i;
    }
    if (bad >= 0) {
        float got;
        memcpy(&got, (const float *)t->data + bad, sizeof got);
        err_set(e, n,
                "rope_freqs.weight[%d] = %.9g, but the dapt.rope_scaling.* parameters give %.9g: "
                "the factors are not those of llama3 scaling with these parameters",
                bad, got, want[bad]);
    }
    free(want);
    return bad >= 0;
}

static int read_config(const GgufFile *f, const char *path, ModelConfig *c, char *err, size_t err_len) {
    const char *arch;
    char e[512], key[128];
    if (gguf_get_str(f, "general.architecture", &arch, e, sizeof e))
        return err_set(err, err_len, "%s: %s", path, e);
    if (strcmp(arch, "llama") && strcmp(arch, "qwen3") && strcmp(arch, "gpt2"))
        return err_set(err, err_len,
                       "%s: general.architecture is '%s'; dapt imports 'llama', 'qwen3' and 'gpt2'",
                       path, arch);
    *c = model_config_default(strcmp(arch, "gpt2") ? ARCH_LLAMA : ARCH_GPT2);
    int rc = get_u32_int(f, arch, "context_length", &c->max_seq_len, 1, e, sizeof e) ||
             get_u32_int(f, arch, "embedding_length", &c->d_model, 1, e, sizeof e) ||
             get_u32_int(f, arch, "block_count", &c->n_layer, 1, e, sizeof e) ||
             get_u32_int(f, arch, "feed_forward_length", &c->d_ff, 1, e, sizeof e) ||
             get_u32_int(f, arch, "attention.head_count", &c->n_head, 1, e, sizeof e);
    c->n_kv_head = c->n_head;
#define KEY(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    if (!rc && c->arch == ARCH_LLAMA) {
        int rope_dims = 0, head_dim = c->d_model / c->n_head, value_dim = 0;
        c->qk_norm = !strcmp(arch, "qwen3");
        rc = get_u32_int(f, arch, "attention.head_count_kv", &c->n_kv_head, 0, e, sizeof e) ||
             gguf_get_f32(f, KEY("attention.layer_norm_rms_epsilon"), &c->norm_eps, e, sizeof e) ||
             get_u32_int(f, arch, "attention.key_length", &head_dim, 0, e, sizeof e) ||
             get_u32_int(f, arch, "attention.value_length", &value_dim, 0, e, sizeof e);
        if (!rc && value_dim && value_dim != head_dim)
            rc = err_set(e, sizeof e,
                         "%s.attention.value_length = %d differs from key_length %d: dapt's heads "
                         "have one size",
                         arch, value_dim, head_dim);
        if (head_dim * c->n_head != c->d_model) c->head_dim = head_dim;
        if (!rc && gguf_find_kv(f, KEY("rope.freq_base")))
            rc = gguf_get_f32(f, key, &c->rope_theta, e, sizeof e);
        if (!rc) rc = get_u32_int(f, arch, "rope.dimension_count", &rope_dims, 0, e, sizeof e);
        if (!rc && rope_dims && rope_dims != model_head_dim(c))
            rc = err_set(e, sizeof e,
                         "%s.rope.dimension_count = %d rotates part of the head (head size %d); "
                         "dapt's RoPE rotates the whole head",
                         arch, rope_dims, model_head_dim(c));
        if (!rc) rc = read_rope_scaling(f, arch, c, e, sizeof e);
        if (!rc && c->qk_norm && c->rope_scaling == ROPE_SCALING_LLAMA3)
            rc = err_set(e, sizeof e, "rope_freqs.weight in a qwen3 file: llama.cpp's qwen3 has "
                                      "no such tensor");
        c->qkv_bias = gguf_find_tensor(f, "blk.0.attn_q.bias") != NULL;
        /* MoE (Mixtral): llama.cpp's llama architecture makes every layer MoE
         * and renormalises the top-k routing weights */
        uint32_t n_exp = 0;
        if (!rc && gguf_find_kv(f, KEY("expert_count")))
            rc = gguf_get_u32(f, key, &n_exp, e, sizeof e);
        if (!rc && n_exp > 0) {
            rc = get_u32_int(f, arch, "expert_used_count", &c->top_k, 1, e, sizeof e);
            c->n_experts = n_exp > (uint32_t)INT32_MAX ? INT32_MAX : (int)n_exp;
            c->moe_layer_start = 0;
            c->moe_layer_step = 1;
            c->norm_topk_prob = 1;
        }
    } else if (!rc) {
        rc = gguf_get_f32(f, "gpt2.attention.layer_norm_epsilon", &c->norm_eps, e, sizeof e);
    }
    if (rc) return err_set(err, err_len, "%s: %s", path, e);
    const GgufTensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (!emb || emb->n_dims != 2 || emb->ne[1] > INT32_MAX)
        return err_set(err, err_len, "%s: no 2-D tensor token_embd.weight", path);
    c->vocab_size = (int)emb->ne[1];
    c->tie_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    /* cheap consistency checks before model_create allocates anything, so
     * hostile hyperparameters cannot ask for a huge model */
    if (emb->ne[0] != (uint64_t)c->d_model)
        return err_set(err, err_len,
                       "%s: token_embd.weight has ne[0] = %llu but embedding_length is %d", path,
                       (unsigned long long)emb->ne[0], c->d_model);
    if (c->max_seq_len > (1 << 22))
        return err_set(err, err_len, "%s: context_length %d is larger than dapt's limit of %d",
                       path, c->max_seq_len, 1 << 22);
    const GgufTensor *pos = gguf_find_tensor(f, "position_embd.weight");
    if (c->arch == ARCH_GPT2 && (!pos || pos->ne[1] != (uint64_t)c->max_seq_len))
        return err_set(err, err_len,
                       "%s: position_embd.weight must have ne[1] = context_length (%d)", path,
                       c->max_seq_len);
    if (c->n_experts) {
        /* the expert stack bounds n_experts * d_model * d_ff by the file size
         * before model_create allocates them */
        const GgufTensor *g = gguf_find_tensor(f, "blk.0.ffn_gate_exps.weight");
        if (!g || g->n_dims != 3 || g->ne[0] != (uint64_t)c->d_model ||
            g->ne[1] != (uint64_t)c->d_ff || g->ne[2] != (uint64_t)c->n_experts)
            return err_set(
                err, err_len,
                "%s: llama.expert_count = %d needs a 3-D tensor blk.0.ffn_gate_exps.weight "
                "with ne = {embedding_length %d, feed_forward_length %d, %d}",
                path, c->n_experts, c->d_model, c->d_ff, c->n_experts);
    }
#undef KEY
    /* llama: norms 2, attention 4 (+3 biases, +2 q/k norms), FFN 3 (MoE:
     * router + 3 expert stacks); rope_freqs.weight once */
    long per_layer = c->arch == ARCH_LLAMA ? 9 + (c->qkv_bias ? 3 : 0) + (c->qk_norm ? 2 : 0) +
                                                 (c->n_experts ? 1 : 0)
                                           : 12;
    long expect = (c->arch == ARCH_LLAMA ? 2 : 4) + !c->tie_embeddings + per_layer * c->n_layer +
                  (c->rope_scaling == ROPE_SCALING_LLAMA3);
    if (gguf_n_tensors(f) != expect)
        return err_set(err, err_len,
                       "%s: %d tensors, but a dapt %s model with %d blocks has %ld (unsupported "
                       "tensors, or a wrong block_count)",
                       path, gguf_n_tensors(f), arch, c->n_layer, expect);
    if (!c->n_experts) {
        /* feed_forward_length against the first FFN before it sizes anything */
        const GgufTensor *up = gguf_find_tensor(f, "blk.0.ffn_up.weight");
        if (!up || up->n_dims != 2 || up->ne[0] != (uint64_t)c->d_model ||
            up->ne[1] != (uint64_t)c->d_ff)
            return err_set(err, err_len,
                           "%s: %s.feed_forward_length = %d needs a 2-D tensor blk.0.ffn_up.weight "
                           "with ne = {embedding_length %d, %d}",
                           path, arch, c->d_ff, c->d_model, c->d_ff);
    }
    /* the head size (attention.key_length) against the q weight */
    const GgufTensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
    if (c->arch == ARCH_LLAMA &&
        (!q || q->n_dims != 2 || q->ne[1] != (uint64_t)c->n_head * model_head_dim(c)))
        return err_set(err, err_len,
                       "%s: blk.0.attn_q.weight must be 2-D with ne[1] = head_count %d * head size "
                       "%d",
                       path, c->n_head, model_head_dim(c));
    if (model_config_check(c, e, sizeof e)) return err_set(err, err_len, "%s: %s", path, e);
    /* Nothing is allocated that the file cannot back: each model weight is
     * one of the file's tensors (checked later, shape by shape, after the
     * allocation), so the metadata's model may not have more parameters than
     * the file's tensors hold elements (their bytes are in the file). */
    uint64_t file_elems = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++)
        file_elems += gguf_tensor(f, i)->n_elems;
    if ((uint64_t)model_config_num_params(c) > file_elems)
        return err_set(err, err_len,
                       "%s: the metadata describe a model of %zu parameters but the file's tensors "
                       "hold %llu elements (a size key such as feed_forward_length or block_count "
                       "disagrees with the tensors)",
                       path, model_config_num_params(c), (unsigned long long)file_elems);
    const GgufTensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    if (rf && check_rope_freqs(rf, c, e, sizeof e)) return err_set(err, err_len, "%s: %s", path, e);
    return 0;
}

Model *gguf_import_model(const char *path, char *err, size_t err_len) {
    GgufFile *f = gguf_open(path, err, err_len);
    if (!f) return NULL;
    ModelConfig c;
    Model *m = NULL;
    float *params = NULL;
    unsigned char *used = calloc((size_t)gguf_n_tensors(f) + 1, 1);
    if (!used) {
        err_set(err, err_len, "out of memory");
        goto bad;
    }
    if (read_config(f, path, &c, err, err_len)) goto bad;
    if (!(m = model_create(&c, ops_cpu(), err, err_len))) goto bad;
    if (!(params = malloc(model_num_params(m) * sizeof *params))) {
        err_set(err, err_len, "out of memory for %zu parameters", model_num_params(m));
        goto bad;
    }
    for (int i = 0; i < model_num_tensors(m); i++) {
        const ParamTensor *t = model_tensor(m, i);
        char gname[96];
        int perm = 0, expert = -1; /* expert >= 0: slice `expert` of a 3-D expert stack */
        if (!(c.arch == ARCH_LLAMA && !gguf_expert_tensor_name(t->name, gname, sizeof gname, &expert)) &&
            gguf_tensor_name(c.arch, t->name, c.n_head, c.n_kv_head, gname, sizeof gname, &perm)) {
            err_set(err, err_len, "%s: dapt tensor '%s' has no GGUF name", path, t->name);
            goto bad;
        }
        if (c.qk_norm) perm = 0; /* qwen3: rotate_half pairs, as HF */
        const GgufTensor *g = gguf_find_tensor(f, gname);
        if (!g) {
            err_set(err, err_len, "%s: tensor '%s' is missing (needed for %s)", path, gname,
                    t->name);
            goto bad;
        }
        used[g - gguf_tensor(f, 0)] = 1;
        int rows = t->shape[0], cols = t->ndim == 2 ? t->shape[1] : 1;
        int shape_ok = expert >= 0 ? g->n_dims == 3 && g->ne[0] == (uint64_t)cols &&
                                         g->ne[1] == (uint64_t)rows && g->ne[2] == (uint64_t)c.n_experts
                       : t->ndim == 2 ? g->n_dims == 2 && g->ne[0] == (uint64_t)cols && g->ne[1] == (uint64_t)rows
                                      : g->n_dims == 1 && g->ne[0] == (uint64_t)rows;
        if (!shape_ok) {
            err_set(err, err_len,
                    "%s: tensor '%s' has shape {%llu, %llu, %llu} (%u dims), expected {%d, %d, %d} "
                    "(%d dims)",
                    path, gname, (unsigned long long)g->ne[0], (unsigned long long)g->ne[1],
                    (unsigned long long)g->ne[2], g->n_dims, cols, t->ndim == 2 ? rows : 1,
                    expert >= 0 ? c.n_experts : 1, expert >= 0 ? 3 : t->ndim);
            goto bad;
        }
        const char *tn = NULL;
        gguf_ggml_type_info(g->type, &tn, NULL, NULL);
        if (g->type != GGML_F32 && g->type != GGML_F16 && g->type != GGML_BF16) {
            err_set(err, err_len,
                    "%s: tensor '%s' is %s: dapt imports F32, F16 and BF16 GGUF files only "
                    "(training from a quantized model would train its rounding error; convert the "
                    "original weights instead)",
                    path, gname, tn ? tn : "?");
            goto bad;
        }
        float *dst = params + t->offset;
        const void *src = g->data;
        if (expert >= 0) { /* F32/F16/BF16: one element per block */
            uint32_t be = 1, bb = 4;
            gguf_ggml_type_info(g->type, NULL, &be, &bb);
            src = (const uint8_t *)g->data + (size_t)expert * t->numel * bb;
        }
        if (perm) {
            float *tmp = malloc(t->numel * sizeof *tmp);
            if (!tmp) {
                err_set(err, err_len, "out of memory");
                goto bad;
            }
            gguf_convert_to_f32(g->type, src, tmp, t->numel);
            gguf_permute_rows(tmp, dst, rows, cols, perm, 1);
            free(tmp);
        } else {
            gguf_convert_to_f32(g->type, src, dst, t->numel);
        }
    }
    const GgufTensor *rf = gguf_find_tensor(f, "rope_freqs.weight");
    if (rf) used[rf - gguf_tensor(f, 0)] = 1; /* checked against the config (read_config) */
    for (int i = 0; i < gguf_n_tensors(f); i++)
        if (!used[i]) {
            err_set(err, err_len,
                    "%s: tensor '%s' is not part of a dapt %s model (unsupported feature?)", path,
                    gguf_tensor(f, i)->name, model_arch_name(c.arch));
            goto bad;
        }
    model_set_params(m, params);
    free(params);
    free(used);
    gguf_close(f);
    return m;
bad:
    free(params);
    free(used);
    model_free(m);
    gguf_close(f);
    return NULL;
}

/* The files an import writes; a directory holding anything else is not
 * the import's to replace. */
static const char *const import_files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                           "tokenizer_config.json"};
enum { N_IMPORT_FILES = sizeof import_files / sizeof *import_files };

/* Removes the import's files (and their .tmp forms) from dir, then dir if
 * that left it empty; nothing else is touched. */
static void remove_dir(const char *dir) {
    char p[4200], name[64];
    for (int i = 0; i < N_IMPORT_FILES; i++)
        for (int tmp = 0; tmp < 2; tmp++) {
            snprintf(name, sizeof name, "%s%s", import_files[i], tmp ? ".tmp" : "");
            if (!hf_path(p, sizeof p, dir, name)) remove(p);
        }
    rmdir(dir);
}

/* 0 when dir holds only files an import writes; else 1 and the first other
 * entry's name in `other` */
static int foreign_entry(const char *dir, char *other, size_t n) {
    DIR *d = opendir(dir);
    if (!d) return snprintf(other, n, "(unreadable: %s)", strerror(errno)), 1;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        found = 1;
        for (int i = 0; i < N_IMPORT_FILES && found; i++)
            found = strcmp(e->d_name, import_files[i]);
        if (found) snprintf(other, n, "%s", e->d_name);
    }
    closedir(d);
    return found;
}

/* The file's byte-level BPE tokenizer as tokenizer.json and
 * tokenizer_config.json text (both NULL when it has none); its tokens must
 * fit the model's vocabulary (embedding rows). */
static int read_tokenizer(const char *path, int vocab_size, char **json, char **config, char *err,
                          size_t err_len) {
    char e[1024];
    GgufFile *f = gguf_open(path, err, err_len);
    if (!f) return 1;
    int rc = gguf_tokenizer_json(f, json, config, e, sizeof e);
    if (rc) {
        err_set(err, err_len, "%s: %s", path, e);
    } else if (*json) {
        const GgufKV *t = gguf_find_kv(f, "tokenizer.ggml.tokens");
        if (t->arr_n > (uint64_t)vocab_size)
            rc = err_set(err, err_len,
                         "%s: %llu tokens in tokenizer.ggml.tokens but the model's vocabulary "
                         "(token_embd.weight rows) is %d",
                         path, (unsigned long long)t->arr_n, vocab_size);
    }
    gguf_close(f);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *text, char *err,
                      size_t err_len) {
    char p[4200];
    if (hf_path(p, sizeof p, dir, name)) return err_set(err, err_len, "%s: path too long", dir);
    return hf_write_file_atomic(p, text, err, err_len);
}

int gguf_import_to_dir(const char *path, const char *out_dir, int force, char *err, size_t err_len) {
    struct stat st;
    int exists = stat(out_dir, &st) == 0;
    if (exists && !force)
        return err_set(err, err_len, "%s exists (pass --force to replace it)", out_dir);
    char other[300];
    if (exists && (!S_ISDIR(st.st_mode) || foreign_entry(out_dir, other, sizeof other)))
        return err_set(err, err_len,
                       "%s: %s%s: --force replaces only a directory of an import's files (%s, "
                       "%s, %s, %s); nothing was changed",
                       out_dir, S_ISDIR(st.st_mode) ? "holds " : "is not a directory",
                       S_ISDIR(st.st_mode) ? other : "", import_files[0], import_files[1],
                       import_files[2], import_files[3]);
    Model *m = gguf_import_model(path, err, err_len);
    if (!m) return 1;
    char tmp[4200], old[4200];
    char *tok_json = NULL, *tok_config = NULL;
    int rc = 1;
    if (read_tokenizer(path, model_config(m)->vocab_size, &tok_json, &tok_config, err, err_len))
        goto out;
    /* a fresh directory beside the target (same file system: rename works) */
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.import-XXXXXX", out_dir) >= sizeof tmp ||
        (size_t)snprintf(old, sizeof old, "%s.old-XXXXXX", out_dir) >= sizeof old) {
        err_set(err, err_len, "%s: path too long", out_dir);
        goto out;
    }
    if (mkdir_parent(out_dir, err, err_len)) goto out;
    if (!mkdtemp(tmp)) {
        err_set(err, err_len, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    if (hf_save_config(tmp, model_config(m), err, err_len) ||
        hf_save_weights(tmp, m, 0, err, err_len) ||
        (tok_json && (write_text(tmp, "tokenizer.json", tok_json, err, err_len) ||
                      write_text(tmp, "tokenizer_config.json", tok_config, err, err_len)))) {
        remove_dir(tmp);
        goto out;
    }
    /* the old directory is moved aside whole, never emptied in place: at
     * every moment out_dir is the old checkpoint or the new one */
    if (exists && (!mkdtemp(old) || rename(out_dir, old))) {
        err_set(err, err_len, "cannot move %s aside to %s: %s", out_dir, old, strerror(errno));
        rmdir(old);
        remove_dir(tmp);
        goto out;
    }
    if (rename(tmp, out_dir)) {
        int e = errno, restored = !exists || rename(old, out_dir) == 0;
        err_set(err, err_len, "cannot rename %s to %s: %s%s%s", tmp, out_dir, strerror(e),
                restored ? "" : "; the old directory is now ", restored ? "" : old);
        remove_dir(tmp);
        goto out;
    }
    if (exists) remove_dir(old);
    rc = 0;
out:
    free(tok_json);
    free(tok_config);
    model_free(m);
    return rc;
}
