/* gguf_write.c: writes GGUF v3 files.
 *
 * Metadata is serialised into a byte buffer as it is added (in order,
 * general.alignment first); tensors are recorded with their fp32 source, or
 * a fill that produces it when the tensor is written (one tensor's fp32 in
 * host memory at a time), and converted row by row while the file is
 * written, so no second copy of the model is held in memory.
 *
 * Invariants: keys and tensor names are unique (a duplicate is an error
 * reported by gguf_writer_write); every tensor's data starts at an offset
 * from the data section that is a multiple of the alignment (32), and the
 * header is zero-padded to it; the file appears under its final name only
 * when complete (PATH.tmp, fsync, rename).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/util.h"
#include "tools/gguf/gguf.h"

typedef struct {
    char *name;
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    const float *src; /* or, when NULL, fill(ctx, ...) at write time */
    GgufFill fill;
    void *ctx;
} WTensor;

struct GgufWriter {
    uint8_t *kv; /* serialised key/value pairs */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys;
    WTensor *tensors;
    int n_tensors, cap_tensors;
    char fail[512]; /* first error; empty while fine */
};

static void w_fail(GgufWriter *w, const char *msg, const char *what) {
    if (!w->fail[0]) snprintf(w->fail, sizeof w->fail, "%s '%s'", msg, what);
}

static void put(GgufWriter *w, const void *p, size_t n) {
    if (w->fail[0]) return;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *q = realloc(w->kv, cap);
        if (!q) return w_fail(w, "out of memory writing metadata", "");
        w->kv = q;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}

/* Little-endian scalars (dapt builds only for little-endian hosts; the
 * memcpy layout is the file layout). */
static void put_u32(GgufWriter *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(GgufWriter *w, uint64_t v) { put(w, &v, 8); }
static void put_str(GgufWriter *w, const char *s) {
    size_t n = strlen(s);
    put_u64(w, n);
    put(w, s, n);
}

static void begin_kv(GgufWriter *w, const char *key, uint32_t type) {
    if (w->fail[0]) return;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return w_fail(w, "duplicate metadata key", key);
    char **k = realloc(w->keys, (w->n_kv + 1) * sizeof *k);
    char *dup = strdup(key);
    if (k) w->keys = k;
    if (!k || !dup) {
        free(dup);
        return w_fail(w, "out of memory at key", key);
    }
    w->keys[w->n_kv++] = dup;
    put_str(w, key);
    put_u32(w, type);
}

GgufWriter *gguf_writer_new(void) {
    GgufWriter *w = calloc(1, sizeof *w);
    if (w) gguf_w_u32(w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
    return w;
}

void gguf_writer_free(GgufWriter *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->kv);
    free(w);
}

void gguf_w_u32(GgufWriter *w, const char *key, uint32_t v) {
    begin_kv(w, key, GGUF_UINT32);
    put_u32(w, v);
}
void gguf_w_i32(GgufWriter *w, const char *key, int32_t v) {
    begin_kv(w, key, GGUF_INT32);
    put(w, &v, 4);
}
void gguf_w_f32(GgufWriter *w, const char *key, float v) {
    begin_kv(w, key, GGUF_FLOAT32);
    put(w, &v, 4);
}
void gguf_w_bool(GgufWriter *w, const char *key, int v) {
    uint8_t b = v != 0;
    begin_kv(w, key, GGUF_BOOL);
    put(w, &b, 1);
}
void gguf_w_str(GgufWriter *w, const char *key, const char *v) {
    begin_kv(w, key, GGUF_STRING);
    put_str(w, v);
}
void gguf_w_arr_str(GgufWriter *w, const char *key, const char *const *v, size_t n) {
    begin_kv(w, key, GGUF_ARRAY);
    put_u32(w, GGUF_STRING);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++) put_str(w, v[i]);
}
void gguf_w_arr_f32(GgufWriter *w, const char *key, const float *v, size_t n) {
    begin_kv(w, key, GGUF_ARRAY);
    put_u32(w, GGUF_FLOAT32);
    put_u64(w, n);
    put(w, v, n * sizeof *v);
}
void gguf_w_arr_i32(GgufWriter *w, const char *key, const int32_t *v, size_t n) {
    begin_kv(w, key, GGUF_ARRAY);
    put_u32(w, GGUF_INT32);
    put_u64(w, n);
    put(w, v, n * sizeof *v);
}

/* gguf_w_tensor and gguf_w_tensor_fill: src, or fill and ctx */
static void add_tensor(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne,
                       uint32_t type, const float *src, GgufFill fill, void *ctx) {
    if (w->fail[0]) return;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return w_fail(w, "bad number of dimensions for tensor", name);
    if (!name[0] || strlen(name) > 63) return w_fail(w, "tensor names must have 1..63 bytes (ggml):", name);
    if (type != GGML_F32 && type != GGML_F16 && type != GGML_BF16 && type != GGML_Q8_0)
        return w_fail(w, "the writer converts only to F32, F16, BF16, Q8_0: tensor", name);
    if (type == GGML_Q8_0 && ne[0] % GGUF_Q8_0_BLOCK)
        return w_fail(w, "Q8_0 needs ne[0] to be a multiple of 32: tensor", name);
    for (int i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) return w_fail(w, "duplicate tensor", name);
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        WTensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) return w_fail(w, "out of memory at tensor", name);
        w->tensors = t;
        w->cap_tensors = cap;
    }
    WTensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return w_fail(w, "out of memory at tensor", name);
    t->n_dims = n_dims;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->type = type;
    t->src = src;
    t->fill = fill;
    t->ctx = ctx;
    w->n_tensors++;
}

void gguf_w_tensor(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, uint32_t type,
                   const float *src) {
    add_tensor(w, name, n_dims, ne, type, src, NULL, NULL);
}

void gguf_w_tensor_fill(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne,
                        uint32_t type, GgufFill fill, void *ctx) {
    add_tensor(w, name, n_dims, ne, type, NULL, fill, ctx);
}

static uint64_t row_bytes(uint32_t type, uint64_t ne0) {
    uint32_t be = 1, bb = 4;
    gguf_ggml_type_info(type, NULL, &be, &bb);
    return ne0 / be * bb;
}

static uint64_t tensor_bytes(const WTensor *t) {
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    return row_bytes(t->type, t->ne[0]) * rows;
}

static uint64_t pad_to(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Header (magic, counts, metadata, tensor infos) into a second buffer. */
static int write_all(GgufWriter *w, FILE *f, char *err, size_t err_len) {
    static const uint8_t zeros[GGUF_DEFAULT_ALIGNMENT];
    GgufWriter h = {0};
    put(&h, GGUF_MAGIC, 4);
    put_u32(&h, GGUF_VERSION);
    put_u64(&h, (uint64_t)w->n_tensors);
    put_u64(&h, w->n_kv);
    put(&h, w->kv, w->kv_len);
    uint64_t off = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        const WTensor *t = &w->tensors[i];
        put_str(&h, t->name);
        put_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&h, t->ne[d]);
        put_u32(&h, t->type);
        put_u64(&h, off);
        off = pad_to(off + tensor_bytes(t), GGUF_DEFAULT_ALIGNMENT);
    }
    size_t hlen = h.kv_len;
    put(&h, zeros, (size_t)(pad_to(hlen, GGUF_DEFAULT_ALIGNMENT) - hlen));
    if (h.fail[0]) {
        free(h.kv);
        return err_set(err, err_len, "%s", h.fail);
    }
    int bad = fwrite(h.kv, 1, h.kv_len, f) != h.kv_len;
    free(h.kv);
    uint8_t *row = NULL;
    size_t row_cap = 0;
    for (int i = 0; i < w->n_tensors && !bad; i++) {
        const WTensor *t = &w->tensors[i];
        uint64_t rb = row_bytes(t->type, t->ne[0]), rows = t->ne[1] * t->ne[2] * t->ne[3];
        if (rb > row_cap) {
            free(row);
            row_cap = rb;
            if (!(row = malloc(row_cap))) return err_set(err, err_len, "out of memory");
        }
        float *filled = NULL; /* a fill's tensor, for this tensor only */
        const float *src = t->src;
        if (!src) {
            if (!(filled = malloc((size_t)(rows * t->ne[0]) * sizeof *filled + 1))) {
                free(row);
                return err_set(err, err_len, "out of memory for tensor %s", t->name);
            }
            if (t->fill(t->ctx, filled, err, err_len)) {
                free(filled), free(row);
                return 1;
            }
            src = filled;
        }
        for (uint64_t r = 0; r < rows && !bad; r++) {
            gguf_convert_from_f32(t->type, src + r * t->ne[0], row, t->ne[0]);
            bad = fwrite(row, 1, rb, f) != rb;
        }
        free(filled);
        uint64_t n = tensor_bytes(t);
        size_t pad = (size_t)(pad_to(n, GGUF_DEFAULT_ALIGNMENT) - n);
        if (!bad && pad) bad = fwrite(zeros, 1, pad, f) != pad;
    }
    free(row);
    if (bad) return err_set(err, err_len, "write failed: %s", strerror(errno));
    return 0;
}

int gguf_writer_write(GgufWriter *w, const char *path, char *err, size_t err_len) {
    if (w->fail[0]) return err_set(err, err_len, "%s", w->fail);
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return err_set(err, err_len, "%s: path too long", path);
    if (mkdir_parent(path, err, err_len)) return 1;
    FILE *f = fopen(tmp, "wb");
    if (!f) return err_set(err, err_len, "%s: %s", tmp, strerror(errno));
    char why[512] = "";
    int bad = write_all(w, f, why, sizeof why);
    if (!bad && (fflush(f) || fsync(fileno(f)))) {
        snprintf(why, sizeof why, "flush failed: %s", strerror(errno));
        bad = 1;
    }
    if (fclose(f) && !bad) {
        snprintf(why, sizeof why, "close failed: %s", strerror(errno));
        bad = 1;
    }
    if (!bad && rename(tmp, path)) {
        snprintf(why, sizeof why, "rename failed: %s", strerror(errno));
        bad = 1;
    }
    if (bad) {
        remove(tmp);
        return err_set(err, err_len, "%s: %s", path, why);
    }
    return 0;
}
