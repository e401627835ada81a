/* merge.c: model merging (merge.h has the methods' definitions and the
 * invariants). Checks every input against the reference before writing;
 * then streams: for each reference tensor, the inputs' tensors are read,
 * combined (OpenMP over elements: every element's result depends on that
 * element alone, so on no thread count) and handed to st_write_stream. */
#include "trainer/merge.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernels/util.h"
#include "trainer/hf.h"
#include "trainer/model.h"
#include "trainer/rng.h"
#include "trainer/safetensors.h"

static const char *const method_names[] = {"linear", "task_arithmetic", "ties",
                                           "dare",   "della",           "moe"};

int merge_method_parse(const char *name) {
    for (int i = 0; i < (int)(sizeof method_names / sizeof *method_names); i++)
        if (!strcmp(name, method_names[i])) return i;
    return -1;
}

const char *merge_method_name(MergeMethod m) {
    return method_names[m];
}

/* ---------------- checks ---------------- */

static int check_not_file(const char *path, char *err, size_t err_len) {
    struct stat st;
    if (stat(path, &st)) return err_set(err, err_len, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return 0;
    return err_set(err, err_len,
                   "%s: not a model directory (HF model or dapt checkpoint; `dapt merge` "
                   "imports GGUF files first)",
                   path);
}

/* The config keys that decide tensor shapes and the vocabulary, by their HF
 * names. */
static int check_config(const ModelConfig *ref, const char *ref_dir, const ModelConfig *c,
                        const char *dir, char *err, size_t err_len) {
    struct {
        const char *key;
        long a, b;
    } keys[] = {
        {"model_type (architecture)", ref->arch, c->arch},
        {"vocab_size", ref->vocab_size, c->vocab_size},
        {"hidden_size", ref->d_model, c->d_model},
        {"num_hidden_layers", ref->n_layer, c->n_layer},
        {"num_attention_heads", ref->n_head, c->n_head},
        {"num_key_value_heads", ref->n_kv_head, c->n_kv_head},
        {"intermediate_size", ref->d_ff, c->d_ff},
        {"head_dim", ref->head_dim, c->head_dim},
        {"tie_word_embeddings", ref->tie_embeddings, c->tie_embeddings},
        {"attention_bias (q/k/v bias)", ref->qkv_bias, c->qkv_bias},
        {"q/k norm (qwen3)", ref->qk_norm, c->qk_norm},
        {"num_local_experts", ref->n_experts, c->n_experts},
    };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (keys[i].a != keys[i].b)
            return err_set(err, err_len,
                           "%s/config.json: %s is %ld, but %ld in %s/config.json: merge needs "
                           "models of one shape and vocabulary (a vocabulary extension is refused)",
                           dir, keys[i].key, keys[i].b, keys[i].a, ref_dir);
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return !stat(path, &st) && S_ISREG(st.st_mode);
}

/* 0 equal, 1 different, -1 I/O error (message in err) */
static int files_differ(const char *a, const char *b, char *err, size_t err_len) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int r = 0;
    if (!fa || !fb) {
        r = -1;
        err_set(err, err_len, "%s: cannot open: %s", fa ? b : a, strerror(errno));
    } else {
        char ba[65536], bb[65536];
        for (;;) {
            size_t na = fread(ba, 1, sizeof ba, fa), nb = fread(bb, 1, sizeof bb, fb);
            if (na != nb || memcmp(ba, bb, na)) {
                r = 1;
                break;
            }
            if (na == 0) break;
        }
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return r;
}

/* the files that define the vocabulary: compared where both inputs have them */
static const char *const vocab_files[] = {"tokenizer.json", "tokenizer.model", "vocab.json",
                                          "merges.txt"};
/* copied from the reference into the output when present */
static const char *const tokenizer_files[] = {
    "tokenizer.json",    "tokenizer.model",       "vocab.json",
    "merges.txt",        "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "generation_config.json"};

static int check_tokenizer(const char *ref_dir, const char *dir, char *err, size_t err_len) {
    for (size_t i = 0; i < sizeof vocab_files / sizeof *vocab_files; i++) {
        char a[4200], b[4200];
        if (hf_path(a, sizeof a, ref_dir, vocab_files[i]) ||
            hf_path(b, sizeof b, dir, vocab_files[i]))
            return err_set(err, err_len, "%s: path too long", dir);
        if (!file_exists(a) || !file_exists(b)) continue;
        int d = files_differ(a, b, err, err_len);
        if (d < 0) return 1;
        if (d)
            return err_set(err, err_len,
                           "%s differs from %s: merge needs one tokenizer (a vocabulary extension "
                           "is refused)",
                           b, a);
    }
    return 0;
}

static int copy_file(const char *src, const char *dst, char *err, size_t err_len) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    FILE *in = fopen(src, "rb");
    if (!in) return err_set(err, err_len, "%s: cannot open: %s", src, strerror(errno));
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        fclose(in);
        return err_set(err, err_len, "%s: cannot create: %s", tmp, strerror(errno));
    }
    char buf[65536];
    size_t n;
    int bad = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) bad = 1;
    if (ferror(in)) bad = 1;
    fclose(in);
    if (fflush(out) || fsync(fileno(out))) bad = 1;
    if (fclose(out)) bad = 1;
    if (bad || rename(tmp, dst)) {
        unlink(tmp);
        return err_set(err, err_len, "%s: cannot write: %s", dst, strerror(errno));
    }
    return 0;
}

/* ---------------- the per-tensor math ---------------- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* u_j of merge.h: splitmix64 output j of the stream starting at state key */
static inline double drop_uniform(uint64_t key, uint64_t j) {
    uint64_t s = key + j * 0x9E3779B97F4A7C15ull;
    return (double)(rng_splitmix64(&s) >> 11) * 0x1.0p-53;
}

typedef struct {
    uint32_t mag; /* the bits of |x|: non-negative floats order as their bits */
    uint32_t idx;
} MagIdx;

/* a[0..n) sorted by (mag, idx): LSD radix sort, 4 passes of 8 bits through
 * tmp; each pass is stable, and a starts in index order, so equal
 * magnitudes stay in index order. O(n), where qsort took 87 s for the
 * della merge of two 110M-parameter models. */
static void sort_mag_idx(MagIdx *a, MagIdx *tmp, uint64_t n) {
    for (int shift = 0; shift < 32; shift += 8) {
        uint64_t pos[257] = {0};
        for (uint64_t j = 0; j < n; j++)
            pos[((a[j].mag >> shift) & 255) + 1]++;
        for (int b = 0; b < 256; b++)
            pos[b + 1] += pos[b];
        for (uint64_t j = 0; j < n; j++)
            tmp[pos[(a[j].mag >> shift) & 255]++] = a[j];
        MagIdx *t = a;
        a = tmp;
        tmp = t;
    }
}

/* the k-th largest of x[0..n) (1 <= k <= n), reordering x (quickselect,
 * Hoare partition around a middle value: after a pass [lo, j] >= pivot,
 * [i, hi] <= pivot and (j, i) == pivot) */
static float kth_largest(float *x, int64_t n, int64_t k) {
    int64_t want = k - 1, lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = x[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] > pivot)
                i++;
            while (x[j] < pivot)
                j--;
            if (i <= j) {
                float t = x[i];
                x[i++] = x[j];
                x[j--] = t;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return x[want];
    }
    return x[want];
}

typedef struct {
    const MergeOptions *o;
    uint64_t n_alloc;
    float *base;                  /* (n) */
    float *tau[MERGE_MAX_MODELS]; /* (n) each: m_k, then its (sparsified) task vector */
    float *out;                   /* (n) */
    float *scratch;               /* (n) ties: magnitudes for the quickselect */
    MagIdx *rank, *rank_tmp;      /* (n) each, della */
    double wt[MERGE_MAX_MODELS], dens[MERGE_MAX_MODELS]; /* this tensor's weights, densities */
} Work;

/* ties' trim of t (n) to its k largest magnitudes (entries tied with the
 * k-th are kept too) */
static void trim_top(float *t, float *scratch, uint64_t n, double density) {
    uint64_t k = (uint64_t)floor(density * (double)n + 0.5);
    if (k >= n) return;
    if (k == 0) {
        memset(t, 0, n * sizeof *t);
        return;
    }
    for (uint64_t j = 0; j < n; j++)
        scratch[j] = fabsf(t[j]);
    float thr = kth_largest(scratch, (int64_t)n, (int64_t)k);
#pragma omp parallel for schedule(static)
    for (uint64_t j = 0; j < n; j++)
        if (fabsf(t[j]) < thr) t[j] = 0.0f;
}

static void dare_drop(float *t, uint64_t n, double density, uint64_t key) {
#pragma omp parallel for schedule(static)
    for (uint64_t j = 0; j < n; j++)
        t[j] = drop_uniform(key, j) < density ? (float)(t[j] / density) : 0.0f;
}

static void della_drop(float *t, MagIdx *rank, MagIdx *tmp, uint64_t n, double density, double eps,
                       uint64_t key) {
    for (uint64_t j = 0; j < n; j++) {
        float m = fabsf(t[j]);
        rank[j].idx = (uint32_t)j;
        memcpy(&rank[j].mag, &m, sizeof m);
    }
    sort_mag_idx(rank, tmp, n);
#pragma omp parallel for schedule(static)
    for (uint64_t r = 0; r < n; r++) {
        uint64_t j = rank[r].idx;
        double q = n > 1 ? density - eps / 2 + eps * (double)r / (double)(n - 1) : density;
        t[j] = drop_uniform(key, j) < q ? (float)(t[j] / q) : 0.0f;
    }
}

static void combine(Work *w, uint64_t n) {
    const MergeOptions *o = w->o;
    int K = o->n_models;
    double wsum = 0;
    for (int k = 0; k < K; k++)
        wsum += w->wt[k];
    int ties = o->method == MERGE_TIES || ((o->method == MERGE_DARE || o->method == MERGE_DELLA) &&
                                           o->combine == MERGE_COMBINE_TIES);
#pragma omp parallel for schedule(static)
    for (uint64_t j = 0; j < n; j++) {
        if (o->method == MERGE_LINEAR || o->method == MERGE_MOE) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += w->wt[k] * w->tau[k][j];
            w->out[j] = (float)(s / wsum);
            continue;
        }
        double s = 0;
        for (int k = 0; k < K; k++)
            s += w->wt[k] * w->tau[k][j];
        if (ties) {
            double num = 0, den = 0;
            for (int k = 0; k < K; k++) {
                float t = w->tau[k][j];
                if ((s > 0 && t > 0) || (s < 0 && t < 0)) {
                    num += w->wt[k] * t;
                    den += w->wt[k];
                }
            }
            s = den != 0 ? num / den : 0;
        }
        w->out[j] = (float)(w->base[j] + o->lambda * s);
    }
}

static int work_reserve(Work *w, uint64_t n) {
    if (n <= w->n_alloc) return 0;
    int K = w->o->n_models;
    float **bufs[] = {&w->base, &w->out, &w->scratch};
    for (size_t i = 0; i < 3; i++) {
        free(*bufs[i]);
        *bufs[i] = malloc(n * sizeof(float));
        if (!*bufs[i]) return 1;
    }
    for (int k = 0; k < K; k++) {
        free(w->tau[k]);
        if (!(w->tau[k] = malloc(n * sizeof(float)))) return 1;
    }
    if (w->o->method == MERGE_DELLA) {
        free(w->rank);
        free(w->rank_tmp);
        w->rank = malloc(n * sizeof *w->rank);
        w->rank_tmp = malloc(n * sizeof *w->rank_tmp);
        if (!w->rank || !w->rank_tmp) return 1;
    }
    w->n_alloc = n;
    return 0;
}

static void work_free(Work *w) {
    free(w->base);
    free(w->out);
    free(w->scratch);
    free(w->rank);
    free(w->rank_tmp);
    for (int k = 0; k < MERGE_MAX_MODELS; k++)
        free(w->tau[k]);
}

/* ---------------- streaming ---------------- */

typedef struct {
    const char *name;
    uint64_t numel;
} RefTensor;

/* what an output tensor is made of */
typedef enum { OUT_MERGED = 0, OUT_EXPERT, OUT_ROUTER } OutKind;
typedef struct {
    char *name;      /* the output's name (malloc'd) */
    const char *src; /* the inputs' name (OUT_MERGED, OUT_EXPERT) */
    OutKind kind;
    int k; /* OUT_EXPERT: the model */
    uint64_t numel;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} OutTensor;

typedef struct {
    const MergeOptions *o;
    StSet *base; /* NULL for linear */
    StSet *models[MERGE_MAX_MODELS];
    const OutTensor *tensors;
    int n_tensors;
    int computed; /* the tensor in w.out, -1 none */
    Work w;
    uint64_t done_elems, total_elems;
    time_t last_print;
} Stream;

static int read_named(StSet *s, const char *dir, const char *name, float *dst, char *err,
                      size_t err_len) {
    StFile *f;
    int idx;
    if (st_set_find(s, name, &f, &idx)) return err_set(err, err_len, "%s: no tensor %s", dir, name);
    return st_read_f32(f, idx, dst, err, err_len);
}

/* the layer of a tensor (model.layers.L.*, transformer.h.L.*), or -1 */
static int tensor_layer(const char *name) {
    int l = -1, end = -1;
    if ((sscanf(name, "model.layers.%d.%n", &l, &end) == 1 && end > 0) ||
        (sscanf(name, "transformer.h.%d.%n", &l, &end) == 1 && end > 0))
        return l;
    return -1;
}

/* the models' tensors t->src into w->tau (as task vectors against w->base
 * for the methods with a base), sparsified, combined into w->out */
static int merge_models(Stream *s, const OutTensor *t, uint64_t n, int deltas, char *err,
                        size_t err_len) {
    const MergeOptions *o = s->o;
    Work *w = &s->w;
    int l = tensor_layer(t->src);
    for (int k = 0; k < o->n_models; k++) {
        w->wt[k] = l >= 0 && o->layer_weights[k] ? o->layer_weights[k][l] : o->weights[k];
        w->dens[k] = l >= 0 && o->layer_density[k] ? o->layer_density[k][l] : o->density[k];
    }
    for (int k = 0; k < o->n_models; k++) {
        if (read_named(s->models[k], o->models[k], t->src, w->tau[k], err, err_len)) return 1;
        if (!deltas) continue;
        float *tk = w->tau[k];
        const float *b = w->base;
#pragma omp parallel for schedule(static)
        for (uint64_t j = 0; j < n; j++)
            tk[j] -= b[j];
        uint64_t key = o->seed ^ fnv1a64(t->src) ^ ((uint64_t)(k + 1) * 0xD1B54A32D192ED03ull);
        if (o->method == MERGE_TIES) trim_top(tk, w->scratch, n, w->dens[k]);
        if (o->method == MERGE_DARE) dare_drop(tk, n, w->dens[k], key);
        if (o->method == MERGE_DELLA)
            della_drop(tk, w->rank, w->rank_tmp, n, w->dens[k], o->epsilon, key);
    }
    combine(w, n);
    return 0;
}

/* moe's router (E, C): N(0, 0.02) from the counter-based stream of merge.h */
static void router_init(float *dst, uint64_t n, uint64_t seed, const char *name) {
    uint64_t key = seed ^ fnv1a64(name);
#pragma omp parallel for schedule(static)
    for (uint64_t j = 0; j < n; j++) {
        uint64_t a = key + 2 * j * 0x9E3779B97F4A7C15ull, b = a + 0x9E3779B97F4A7C15ull;
        dst[j] = (float)(0.02 * rng_normal_of(rng_splitmix64(&a), rng_splitmix64(&b)));
    }
}

static int compute_tensor(Stream *s, int i, char *err, size_t err_len) {
    const MergeOptions *o = s->o;
    const OutTensor *t = &s->tensors[i];
    uint64_t n = t->numel;
    Work *w = &s->w;
    if (work_reserve(w, n))
        return err_set(err, err_len, "%s: out of memory (%llu elements)", t->name,
                       (unsigned long long)n);
    int deltas = o->method != MERGE_LINEAR && o->method != MERGE_MOE;
    if (t->kind == OUT_EXPERT) {
        if (read_named(s->models[t->k], o->models[t->k], t->src, w->out, err, err_len)) return 1;
    } else if (t->kind == OUT_ROUTER) {
        router_init(w->out, n, o->seed, t->name);
    } else if (o->method == MERGE_MOE && o->shared == MERGE_SHARED_BASE) {
        if (read_named(s->base, o->base, t->src, w->out, err, err_len)) return 1;
    } else {
        if (deltas && read_named(s->base, o->base, t->src, w->base, err, err_len)) return 1;
        if (merge_models(s, t, n, deltas, err, err_len)) return 1;
    }
    s->computed = i;
    s->done_elems += n;
    if (o->progress) {
        time_t now = time(NULL);
        if (now != s->last_print || i == s->n_tensors - 1) {
            fprintf(stderr, "dapt merge: tensor %d/%d (%s), %.1f%% of %llu parameters\n", i + 1,
                    s->n_tensors, t->name, 100.0 * (double)s->done_elems / (double)s->total_elems,
                    (unsigned long long)s->total_elems);
            s->last_print = now;
        }
    }
    return 0;
}

static int stream_fill(void *ctx, int i, uint64_t first, size_t count, void *dst, char *err,
                       size_t err_len) {
    Stream *s = ctx;
    if (s->computed != i && compute_tensor(s, i, err, err_len)) return 1;
    memcpy(dst, s->w.out + first, count * sizeof(float));
    return 0;
}

/* ---------------- the run ---------------- */

static int check_options(const MergeOptions *o, char *err, size_t err_len) {
    if (o->n_models < 1 || o->n_models > MERGE_MAX_MODELS)
        return err_set(err, err_len, "%d models: merge takes 1 to %d", o->n_models,
                       MERGE_MAX_MODELS);
    if (o->method == MERGE_LINEAR && o->base)
        return err_set(err, err_len, "linear takes no base (it averages the models)");
    if (o->method != MERGE_LINEAR && o->method != MERGE_MOE && !o->base)
        return err_set(err, err_len, "%s needs a base model", merge_method_name(o->method));
    if (o->method == MERGE_MOE && o->shared == MERGE_SHARED_BASE && !o->base)
        return err_set(err, err_len, "moe: shared tensors from the base need a base model");
    if ((o->method == MERGE_LINEAR || o->method == MERGE_MOE) && o->n_models < 2)
        return err_set(err, err_len, "%s needs at least 2 models", merge_method_name(o->method));
    if (o->method == MERGE_MOE && (o->top_k < 1 || o->top_k > o->n_models))
        return err_set(err, err_len, "moe: top_k %d is not in [1, %d models]", o->top_k,
                       o->n_models);
    /* l = -1: the tensors outside the layers; then every layer given */
    int n_layer = 0;
    for (int k = 0; k < o->n_models; k++) {
        if (o->layer_weights[k] && o->n_layer_weights[k] > n_layer) n_layer = o->n_layer_weights[k];
        if (o->layer_density[k] && o->n_layer_density[k] > n_layer) n_layer = o->n_layer_density[k];
    }
    for (int l = -1; l < n_layer; l++) {
        double wsum = 0;
        char where[48] = "";
        if (l >= 0) snprintf(where, sizeof where, " in layer %d", l);
        for (int k = 0; k < o->n_models; k++) {
            int lw = l >= 0 && o->layer_weights[k] && l < o->n_layer_weights[k];
            int ld = l >= 0 && o->layer_density[k] && l < o->n_layer_density[k];
            double wk = lw ? o->layer_weights[k][l] : o->weights[k];
            double dk = ld ? o->layer_density[k][l] : o->density[k];
            if (!isfinite(wk))
                return err_set(err, err_len, "the weight of model %d%s is not finite", k + 1,
                               where);
            wsum += wk;
            if ((o->method == MERGE_TIES || o->method == MERGE_DARE || o->method == MERGE_DELLA) &&
                !(dk > 0 && dk <= 1))
                return err_set(err, err_len, "density %g of model %d%s is not in (0, 1]", dk, k + 1,
                               where);
            if (o->method == MERGE_DELLA && !(dk - o->epsilon / 2 > 0 && dk + o->epsilon / 2 <= 1))
                return err_set(err, err_len,
                               "della: density %g +- epsilon/2 (%g) of model %d%s leaves (0, 1]: "
                               "every keep probability must be in (0, 1]",
                               dk, o->epsilon / 2, k + 1, where);
        }
        if ((o->method == MERGE_LINEAR || o->method == MERGE_MOE) && wsum == 0)
            return err_set(err, err_len, "%s: the weights sum to 0%s", merge_method_name(o->method),
                           where);
    }
    if (o->method == MERGE_DELLA && !(o->epsilon >= 0))
        return err_set(err, err_len, "della: epsilon %g is negative", o->epsilon);
    if (!isfinite(o->lambda)) return err_set(err, err_len, "lambda is not finite");
    return 0;
}

static int same_dir(const char *a, const char *b) {
    char ra[PATH_MAX], rb[PATH_MAX];
    if (!realpath(a, ra) || !realpath(b, rb)) return 0;
    return !strcmp(ra, rb);
}

/* the reference's float tensors, in file order; every input has each with
 * its shape and nothing else */
static int collect_tensors(Stream *s, StSet *ref, const char *ref_dir, RefTensor **out, int *n_out,
                           uint64_t *total, char *err, size_t err_len) {
    const MergeOptions *o = s->o;
    int n = 0, cap = 0;
    RefTensor *list = NULL;
    *total = 0;
    for (int fi = 0; fi < st_set_num_files(ref); fi++) {
        StFile *f = st_set_file(ref, fi);
        for (int ti = 0; ti < st_num_tensors(f); ti++) {
            const StTensor *t = st_tensor(f, ti);
            if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
                free(list);
                return err_set(err, err_len, "%s: tensor %s is %s: merge reads F32, F16, BF16 only",
                               st_path(f), t->name, st_dtype_name(t->dtype));
            }
            if (t->numel > UINT32_MAX) {
                free(list);
                return err_set(err, err_len, "%s: tensor %s has more than 2^32 elements",
                               st_path(f), t->name);
            }
            for (int k = -1; k < o->n_models; k++) {
                StSet *other = k < 0 ? s->base : s->models[k];
                const char *dir = k < 0 ? o->base : o->models[k];
                if (!other || other == ref) continue;
                StFile *of;
                int oi;
                if (st_set_find(other, t->name, &of, &oi)) {
                    free(list);
                    return err_set(err, err_len, "%s has no tensor %s (which %s has)", dir, t->name,
                                   ref_dir);
                }
                const StTensor *ot = st_tensor(of, oi);
                int same = ot->ndim == t->ndim;
                for (int d = 0; same && d < t->ndim; d++)
                    same = ot->shape[d] == t->shape[d];
                if (!same) {
                    free(list);
                    return err_set(err, err_len, "%s: tensor %s has another shape than in %s", dir,
                                   t->name, ref_dir);
                }
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                RefTensor *g = realloc(list, (size_t)cap * sizeof *g);
                if (!g) {
                    free(list);
                    return err_set(err, err_len, "out of memory");
                }
                list = g;
            }
            list[n++] = (RefTensor){t->name, t->numel};
            *total += t->numel;
        }
    }
    /* no input has a tensor the reference lacks */
    for (int k = -1; k < o->n_models; k++) {
        StSet *other = k < 0 ? s->base : s->models[k];
        const char *dir = k < 0 ? o->base : o->models[k];
        if (!other || other == ref) continue;
        for (int fi = 0; fi < st_set_num_files(other); fi++) {
            StFile *f = st_set_file(other, fi);
            for (int ti = 0; ti < st_num_tensors(f); ti++) {
                StFile *rf;
                int ri;
                if (st_set_find(ref, st_tensor(f, ti)->name, &rf, &ri)) {
                    free(list);
                    return err_set(err, err_len, "%s has tensor %s, which %s lacks", dir,
                                   st_tensor(f, ti)->name, ref_dir);
                }
            }
        }
    }
    *out = list;
    *n_out = n;
    return 0;
}

/* appends t (its name copied) to *list */
static int plan_push(OutTensor **list, int *n, int *cap, OutTensor t, const char *name) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        OutTensor *g = realloc(*list, (size_t)*cap * sizeof *g);
        if (!g) return 1;
        *list = g;
    }
    if (!(t.name = strdup(name))) return 1;
    (*list)[(*n)++] = t;
    return 0;
}

static void plan_free(OutTensor *list, int n) {
    for (int i = 0; i < n; i++)
        free(list[i].name);
    free(list);
}

/* The output tensors: the reference's, each merged; for moe, layer l's
 * mlp.{gate,up,down}_proj become one expert per model and a router. */
static int build_plan(const MergeOptions *o, const ModelConfig *cfg, StSet *ref,
                      const RefTensor *in, int n_in, OutTensor **out, int *n_out, uint64_t *total,
                      char *err, size_t err_len) {
    static const char *const ffn[3] = {"gate", "up", "down"}, *expert[3] = {"w1", "w3", "w2"};
    OutTensor *list = NULL;
    int n = 0, cap = 0, n_expert = 0;
    *total = 0;
    for (int i = 0; i < n_in; i++) {
        StFile *f;
        int idx;
        st_set_find(ref, in[i].name, &f, &idx);
        const StTensor *st = st_tensor(f, idx);
        OutTensor t = {.src = in[i].name, .kind = OUT_MERGED, .numel = st->numel, .ndim = st->ndim};
        memcpy(t.shape, st->shape, sizeof t.shape);
        int l = -1, end = -1, w = -1;
        char which[16];
        if (o->method == MERGE_MOE &&
            sscanf(in[i].name, "model.layers.%d.mlp.%15[a-z]_proj.weight%n", &l, which, &end) ==
                2 &&
            end == (int)strlen(in[i].name))
            for (int j = 0; j < 3; j++)
                if (!strcmp(which, ffn[j])) w = j;
        char name[256];
        if (w < 0) {
            if (plan_push(&list, &n, &cap, t, in[i].name)) goto oom;
            *total += t.numel;
            continue;
        }
        if (w == 0) { /* the layer's router, (E, C) */
            OutTensor r = {.kind = OUT_ROUTER,
                           .numel = (uint64_t)o->n_models * cfg->d_model,
                           .ndim = 2,
                           .shape = {o->n_models, cfg->d_model}};
            snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.gate.weight", l);
            if (plan_push(&list, &n, &cap, r, name)) goto oom;
            *total += r.numel;
        }
        for (int k = 0; k < o->n_models; k++) {
            t.kind = OUT_EXPERT;
            t.k = k;
            snprintf(name, sizeof name, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l,
                     k, expert[w]);
            if (plan_push(&list, &n, &cap, t, name)) goto oom;
            *total += t.numel;
            n_expert++;
        }
    }
    if (o->method == MERGE_MOE && n_expert != 3 * o->n_models * cfg->n_layer) {
        plan_free(list, n);
        return err_set(
            err, err_len,
            "moe: found %d of the %d mlp.{gate,up,down}_proj.weight tensors of %d layers",
            n_expert / o->n_models, 3 * cfg->n_layer, cfg->n_layer);
    }
    *out = list;
    *n_out = n;
    return 0;
oom:
    plan_free(list, n);
    return err_set(err, err_len, "out of memory");
}

/* moe's output config: the reference's as Mixtral, every layer MoE */
static int moe_config(const ModelConfig *ref, const char *ref_dir, const MergeOptions *o,
                      ModelConfig *mc, char *err, size_t err_len) {
    const char *why = ref->arch != ARCH_LLAMA ? "is not a llama"
                      : ref->n_experts        ? "is already an MoE"
                      : ref->qkv_bias         ? "has q/k/v biases (Mixtral has none)"
                      : ref->qk_norm          ? "has q/k norms (Mixtral has none)"
                      : (ref->head_dim && ref->head_dim * ref->n_head != ref->d_model)
                          ? "has a head_dim apart from hidden_size / heads (Mixtral has none)"
                          : NULL;
    if (why) return err_set(err, err_len, "moe: %s/config.json %s", ref_dir, why);
    *mc = *ref;
    mc->n_experts = o->n_models;
    mc->top_k = o->top_k;
    mc->moe_layer_start = 0;
    mc->moe_layer_step = 1;
    mc->norm_topk_prob = 1;
    if (model_config_check(mc, err, err_len)) return 1;
    return 0;
}

int merge_run(const MergeOptions *o, const char *out_dir, uint64_t *n_params, char *err,
              size_t err_len) {
    if (check_options(o, err, err_len)) return 1;
    const char *ref_dir = o->base ? o->base : o->models[0];
    int n_in = o->n_models + (o->base ? 1 : 0);
    const char *dirs[MERGE_MAX_MODELS + 1];
    if (o->base) dirs[0] = o->base;
    for (int k = 0; k < o->n_models; k++)
        dirs[k + (o->base ? 1 : 0)] = o->models[k];
    ModelConfig ref_cfg = {0};
    for (int i = 0; i < n_in; i++) {
        if (check_not_file(dirs[i], err, err_len)) return 1;
        ModelConfig c;
        if (hf_load_config(dirs[i], &c, err, err_len)) return 1;
        if (i == 0)
            ref_cfg = c;
        else if (check_config(&ref_cfg, ref_dir, &c, dirs[i], err, err_len) ||
                 check_tokenizer(ref_dir, dirs[i], err, err_len))
            return 1;
    }
    for (int k = 0; k < o->n_models; k++)
        if ((o->layer_weights[k] && o->n_layer_weights[k] != ref_cfg.n_layer) ||
            (o->layer_density[k] && o->n_layer_density[k] != ref_cfg.n_layer))
            return err_set(err, err_len, "model %d: %d per-layer values for %d layers (%s)", k + 1,
                           o->layer_weights[k] && o->n_layer_weights[k] != ref_cfg.n_layer
                               ? o->n_layer_weights[k]
                               : o->n_layer_density[k],
                           ref_cfg.n_layer, ref_dir);
    if (mkdir(out_dir, 0755) && errno != EEXIST)
        return err_set(err, err_len, "%s: cannot create: %s", out_dir, strerror(errno));
    for (int i = 0; i < n_in; i++)
        if (same_dir(out_dir, dirs[i]))
            return err_set(err, err_len, "%s: the output is one of the inputs", out_dir);
    char weights[4200], cfg_path[4200];
    if (hf_path(weights, sizeof weights, out_dir, "model.safetensors") ||
        hf_path(cfg_path, sizeof cfg_path, out_dir, "config.json"))
        return err_set(err, err_len, "%s: path too long", out_dir);
    if (!o->force && (file_exists(weights) || file_exists(cfg_path)))
        return err_set(err, err_len, "%s already holds a model (--force to overwrite)", out_dir);

    ModelConfig moe_cfg;
    if (o->method == MERGE_MOE && moe_config(&ref_cfg, ref_dir, o, &moe_cfg, err, err_len))
        return 1;

    Stream s = {.o = o, .computed = -1, .w = {.o = o}};
    int rc = 1, n_t = 0, n_out = 0;
    RefTensor *tensors = NULL;
    OutTensor *plan = NULL;
    StWriteTensor *wt = NULL;
    if (o->base && !(s.base = st_set_open(o->base, err, err_len))) goto done;
    for (int k = 0; k < o->n_models; k++)
        if (!(s.models[k] = st_set_open(o->models[k], err, err_len))) goto done;
    StSet *ref = s.base ? s.base : s.models[0];
    uint64_t ref_elems;
    if (collect_tensors(&s, ref, ref_dir, &tensors, &n_t, &ref_elems, err, err_len) ||
        build_plan(o, &ref_cfg, ref, tensors, n_t, &plan, &n_out, &s.total_elems, err, err_len))
        goto done;
    s.tensors = plan;
    s.n_tensors = n_out;
    if (!(wt = calloc((size_t)n_out, sizeof *wt))) {
        err_set(err, err_len, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_out; i++) {
        wt[i].name = plan[i].name;
        wt[i].dtype = ST_F32;
        wt[i].ndim = plan[i].ndim;
        memcpy(wt[i].shape, plan[i].shape, sizeof plan[i].shape);
    }
    char desc[256];
    snprintf(desc, sizeof desc, "%s of %d model(s), lambda %g, seed %llu",
             merge_method_name(o->method), o->n_models, o->lambda, (unsigned long long)o->seed);
    const char *meta[] = {"format", "pt", "dapt_merge", desc};
    if (st_write_stream(weights, wt, n_out, meta, 2, stream_fill, &s, err, err_len)) goto done;
    char src[4200], dst[4200];
    hf_path(src, sizeof src, ref_dir, "config.json");
    if (o->method == MERGE_MOE ? hf_save_config(out_dir, &moe_cfg, err, err_len)
                               : copy_file(src, cfg_path, err, err_len))
        goto done;
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof *tokenizer_files; i++) {
        if (hf_path(src, sizeof src, ref_dir, tokenizer_files[i]) ||
            hf_path(dst, sizeof dst, out_dir, tokenizer_files[i]))
            continue;
        if (file_exists(src) && copy_file(src, dst, err, err_len)) goto done;
    }
    *n_params = s.total_elems;
    rc = 0;
done:
    work_free(&s.w);
    free(wt);
    plan_free(plan, n_out);
    free(tensors);
    if (s.base) st_set_close(s.base);
    for (int k = 0; k < o->n_models; k++)
        if (s.models[k]) st_set_close(s.models[k]);
    return rc;
}
