/* gguf_read.c: the hardened GGUF reader used by `dapt import` and
 * `dapt inspect` (and fuzzed by tests/c/test_gguf_fuzz.c).
 *
 * The whole header is parsed and validated up front; afterwards the
 * accessors only look at checked data. Every read goes through a cursor
 * that checks `n <= len - pos` before touching bytes, so no input can make
 * the reader read outside [buf, buf + len). Counts are bounded by the bytes
 * left before anything is allocated (a key/value pair takes at least 13
 * bytes, a tensor info 32, an array element its size, a string 8), so a
 * hostile count cannot make it allocate more than a small multiple of the
 * file size.
 *
 * What a valid file is here (as ggml's gguf.cpp): magic "GGUF"; version 2
 * or 3, little-endian; unique, non-empty keys without NUL bytes; known value
 * types; no arrays of arrays; bools 0 or 1; general.alignment, when present,
 * a UINT32 power of two; unique tensor names of 1..63 bytes; 1..4
 * dimensions, each >= 1, element count without overflow; a known ggml type
 * whose block size divides ne[0]; offsets aligned, data inside the file and
 * tensors not overlapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/util.h"
#include "tools/gguf/gguf.h"

struct GgufFile {
    const uint8_t *buf;
    uint64_t len;
    void *map; /* mmap'd region (gguf_open) or NULL */
    uint32_t version, alignment;
    uint64_t data_offset;
    GgufKV *kvs;
    int n_kv;
    GgufTensor *tensors;
    int n_tensors;
    /* sorted by key / name: duplicates are adjacent, lookups are bsearch
     * (a file may hold ~10^6 of each: nothing here is quadratic) */
    GgufKV **kv_by_key;
    GgufTensor **tensor_by_name;
};

static int cmp_kv_key(const void *a, const void *b) {
    return strcmp((*(GgufKV *const *)a)->key, (*(GgufKV *const *)b)->key);
}
static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(GgufTensor *const *)a)->name, (*(GgufTensor *const *)b)->name);
}

typedef struct {
    const uint8_t *b;
    uint64_t len, pos;
    const char *where;
    char *err;
    size_t err_len;
} Cur;

/* "<where>: byte offset <at>: <message>" into c's buffer; -1 */
__attribute__((format(printf, 3, 4))) static int fail(Cur *c, uint64_t at, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(c->err, c->err_len, "%s: byte offset %llu: %s", c->where, (unsigned long long)at,
                   msg);
}

static int rd(Cur *c, void *dst, uint64_t n, const char *what) {
    if (n > c->len - c->pos)
        return fail(c, c->pos, "file ends while reading %s (%llu bytes needed, %llu left)", what,
                    (unsigned long long)n, (unsigned long long)(c->len - c->pos));
    memcpy(dst, c->b + c->pos, (size_t)n);
    c->pos += n;
    return 0;
}
static int rd_u32(Cur *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static int rd_u64(Cur *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

/* A string as a malloc'd NUL-terminated copy. no_nul: refuse NUL bytes in
 * it (keys, names); max_len: refuse longer ones (0: only the file bounds). */
static int rd_str(Cur *c, char **out, uint64_t *len_out, const char *what, int no_nul,
                  uint64_t max_len) {
    uint64_t at = c->pos, n = 0;
    if (rd_u64(c, &n, what)) return 1;
    if (n > c->len - c->pos)
        return fail(c, at, "%s length %llu runs past the end of the file (%llu bytes left)", what,
                    (unsigned long long)n, (unsigned long long)(c->len - c->pos));
    if (max_len && n > max_len)
        return fail(c, at, "%s length %llu exceeds the limit of %llu", what, (unsigned long long)n,
                    (unsigned long long)max_len);
    if (no_nul && memchr(c->b + c->pos, 0, (size_t)n))
        return fail(c, at, "%s contains a NUL byte", what);
    char *s = malloc((size_t)n + 1);
    if (!s) return fail(c, at, "out of memory for a %s of %llu bytes", what, (unsigned long long)n);
    memcpy(s, c->b + c->pos, (size_t)n);
    s[n] = 0;
    c->pos += n;
    *out = s;
    if (len_out) *len_out = n;
    return 0;
}

static const char *type_names[GGUF_N_VALUE_TYPES] = {
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
    "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};

const char *gguf_value_type_name(uint32_t type) {
    return type < GGUF_N_VALUE_TYPES ? type_names[type] : "unknown";
}

/* Size of a fixed-size value type; 0 for STRING/ARRAY. */
static uint32_t scalar_size(uint32_t t) {
    static const uint8_t sz[GGUF_N_VALUE_TYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_N_VALUE_TYPES ? sz[t] : 0;
}

/* A fixed-size scalar at c->pos into kv->v. */
static int rd_scalar(Cur *c, uint32_t t, GgufKV *kv) {
    uint64_t at = c->pos;
    uint8_t raw[8] = {0};
    if (rd(c, raw, scalar_size(t), "a metadata value")) return 1;
    switch (t) {
    case GGUF_UINT8: kv->v.u = raw[0]; break;
    case GGUF_INT8: kv->v.i = (int8_t)raw[0]; break;
    case GGUF_UINT16: { uint16_t x; memcpy(&x, raw, 2); kv->v.u = x; } break;
    case GGUF_INT16: { int16_t x; memcpy(&x, raw, 2); kv->v.i = x; } break;
    case GGUF_UINT32: { uint32_t x; memcpy(&x, raw, 4); kv->v.u = x; } break;
    case GGUF_INT32: { int32_t x; memcpy(&x, raw, 4); kv->v.i = x; } break;
    case GGUF_FLOAT32: { float x; memcpy(&x, raw, 4); kv->v.f = x; } break;
    case GGUF_BOOL:
        if (raw[0] > 1) return fail(c, at, "BOOL value %u is not 0 or 1", raw[0]);
        kv->v.u = raw[0];
        break;
    case GGUF_UINT64: memcpy(&kv->v.u, raw, 8); break;
    case GGUF_INT64: memcpy(&kv->v.i, raw, 8); break;
    case GGUF_FLOAT64: memcpy(&kv->v.f, raw, 8); break;
    }
    return 0;
}

static int rd_value(Cur *c, GgufKV *kv) {
    uint64_t at = c->pos;
    if (rd_u32(c, &kv->type, "a value type")) return 1;
    if (kv->type >= GGUF_N_VALUE_TYPES)
        return fail(c, at, "key '%s': unknown value type %u", kv->key, kv->type);
    if (kv->type == GGUF_STRING) return rd_str(c, &kv->str, &kv->str_len, "string value", 0, 0);
    if (kv->type != GGUF_ARRAY) return rd_scalar(c, kv->type, kv);
    at = c->pos;
    if (rd_u32(c, &kv->arr_type, "an array element type") || rd_u64(c, &kv->arr_n, "an array length"))
        return 1;
    if (kv->arr_type >= GGUF_N_VALUE_TYPES || kv->arr_type == GGUF_ARRAY)
        return fail(c, at, "key '%s': array element type %u is %s", kv->key, kv->arr_type,
                    kv->arr_type == GGUF_ARRAY ? "an array (nested arrays are not allowed)" : "unknown");
    uint64_t left = c->len - c->pos, esz = scalar_size(kv->arr_type);
    if (kv->arr_type == GGUF_STRING) {
        if (kv->arr_n > left / 8)
            return fail(c, at, "key '%s': %llu strings cannot fit in the %llu bytes left", kv->key,
                        (unsigned long long)kv->arr_n, (unsigned long long)left);
        kv->arr_str = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *kv->arr_str);
        kv->arr_str_len = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *kv->arr_str_len);
        if (!kv->arr_str || !kv->arr_str_len) return fail(c, at, "out of memory");
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if (rd_str(c, &kv->arr_str[i], &kv->arr_str_len[i], "array string", 0, 0)) return 1;
        return 0;
    }
    if (kv->arr_n > left / esz)
        return fail(c, at, "key '%s': %llu elements of %s need %llu bytes, %llu left", kv->key,
                    (unsigned long long)kv->arr_n, gguf_value_type_name(kv->arr_type),
                    (unsigned long long)(kv->arr_n > UINT64_MAX / esz ? UINT64_MAX : kv->arr_n * esz),
                    (unsigned long long)left);
    kv->arr_data = c->b + c->pos;
    if (kv->arr_type == GGUF_BOOL)
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if (kv->arr_data[i] > 1)
                return fail(c, c->pos + i, "key '%s': BOOL element %llu is %u, not 0 or 1", kv->key,
                            (unsigned long long)i, kv->arr_data[i]);
    c->pos += kv->arr_n * esz;
    return 0;
}

static int cmp_offset(const void *a, const void *b) {
    const GgufTensor *x = *(const GgufTensor *const *)a, *y = *(const GgufTensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int rd_tensor(Cur *c, GgufTensor *t) {
    uint64_t at = c->pos;
    if (rd_str(c, &t->name, NULL, "tensor name", 1, 63)) return 1;
    if (!t->name[0]) return fail(c, at, "empty tensor name");
    if (rd_u32(c, &t->n_dims, "a tensor's number of dimensions")) return 1;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(c, at, "tensor '%s': %u dimensions (expected 1..%d)", t->name, t->n_dims,
                    GGUF_MAX_DIMS);
    t->n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && rd_u64(c, &t->ne[d], "a tensor dimension")) return 1;
        if (t->ne[d] < 1 || t->ne[d] > (uint64_t)INT64_MAX / t->n_elems)
            return fail(c, at, "tensor '%s': dimension %u is %llu (zero, or the element count overflows)",
                        t->name, d, (unsigned long long)t->ne[d]);
        t->n_elems *= t->ne[d];
    }
    if (rd_u32(c, &t->type, "a tensor type") || rd_u64(c, &t->offset, "a tensor offset")) return 1;
    const char *tn;
    uint32_t be, bb;
    if (!gguf_ggml_type_info(t->type, &tn, &be, &bb))
        return fail(c, at, "tensor '%s': unknown ggml type %u", t->name, t->type);
    if (t->ne[0] % be)
        return fail(c, at, "tensor '%s': ne[0] = %llu is not a multiple of %s's block of %u",
                    t->name, (unsigned long long)t->ne[0], tn, be);
    uint64_t blocks = t->n_elems / be;
    if (blocks > UINT64_MAX / bb) return fail(c, at, "tensor '%s': byte size overflows", t->name);
    t->n_bytes = blocks * bb;
    return 0;
}

static GgufFile *parse(const uint8_t *buf, uint64_t len, const char *where, char *err, size_t err_len) {
    Cur c = {buf, len, 0, where, err, err_len};
    GgufFile *f = calloc(1, sizeof *f);
    if (!f) return err_set(err, err_len, "%s: out of memory", where), NULL;
    f->buf = buf;
    f->len = len;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    char magic[4] = {0};
    uint64_t n_tensors = 0, n_kv = 0;
    if (rd(&c, magic, 4, "the magic")) goto bad;
    if (memcmp(magic, GGUF_MAGIC, 4)) {
        fail(&c, 0, "not a GGUF file (magic is not \"GGUF\")");
        goto bad;
    }
    if (rd_u32(&c, &f->version, "the version")) goto bad;
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0 && f->version >> 16)
            fail(&c, 4, "big-endian GGUF files are not supported");
        else
            fail(&c, 4, "unsupported GGUF version %u (expected 3, or 2)", f->version);
        goto bad;
    }
    if (rd_u64(&c, &n_tensors, "the tensor count") || rd_u64(&c, &n_kv, "the metadata count"))
        goto bad;
    if (n_kv > (len - c.pos) / 13 || n_tensors > (len - c.pos) / 32) {
        fail(&c, 8, "%llu metadata pairs and %llu tensors cannot fit in a file of %llu bytes",
             (unsigned long long)n_kv, (unsigned long long)n_tensors, (unsigned long long)len);
        goto bad;
    }
    f->kvs = calloc(n_kv ? n_kv : 1, sizeof *f->kvs);
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
    if (!f->kvs || !f->tensors) {
        fail(&c, 8, "out of memory");
        goto bad;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        GgufKV *kv = &f->kvs[i];
        kv->offset = c.pos;
        f->n_kv++;
        if (rd_str(&c, &kv->key, NULL, "key", 1, 65535)) goto bad;
        if (!kv->key[0]) {
            fail(&c, kv->offset, "empty metadata key");
            goto bad;
        }
        if (rd_value(&c, kv)) goto bad;
        if (!strcmp(kv->key, "general.alignment")) {
            if (kv->type != GGUF_UINT32 || kv->v.u == 0 || (kv->v.u & (kv->v.u - 1))) {
                fail(&c, kv->offset, "general.alignment must be a UINT32 power of two");
                goto bad;
            }
            f->alignment = (uint32_t)kv->v.u;
        }
    }
    f->kv_by_key = malloc((n_kv ? n_kv : 1) * sizeof *f->kv_by_key);
    f->tensor_by_name = malloc((n_tensors ? n_tensors : 1) * sizeof *f->tensor_by_name);
    uint64_t *info_at = malloc((n_tensors ? n_tensors : 1) * sizeof *info_at);
    if (!f->kv_by_key || !f->tensor_by_name || !info_at) {
        free(info_at);
        fail(&c, c.pos, "out of memory");
        goto bad;
    }
    for (uint64_t i = 0; i < n_kv; i++)
        f->kv_by_key[i] = &f->kvs[i];
    qsort(f->kv_by_key, n_kv, sizeof *f->kv_by_key, cmp_kv_key);
    for (uint64_t i = 1; i < n_kv; i++) {
        const GgufKV *x = f->kv_by_key[i - 1], *y = f->kv_by_key[i];
        if (!strcmp(x->key, y->key)) { /* the second one's offset */
            fail(&c, x->offset > y->offset ? x->offset : y->offset, "duplicate metadata key '%s'",
                 x->key);
            free(info_at);
            goto bad;
        }
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        info_at[i] = c.pos;
        f->n_tensors++;
        if (rd_tensor(&c, &f->tensors[i])) {
            free(info_at);
            goto bad;
        }
        f->tensor_by_name[i] = &f->tensors[i];
    }
    qsort(f->tensor_by_name, n_tensors, sizeof *f->tensor_by_name, cmp_tensor_name);
    for (uint64_t i = 1; i < n_tensors; i++) {
        const GgufTensor *x = f->tensor_by_name[i - 1], *y = f->tensor_by_name[i];
        if (!strcmp(x->name, y->name)) {
            uint64_t ax = info_at[x - f->tensors], ay = info_at[y - f->tensors];
            fail(&c, ax > ay ? ax : ay, "duplicate tensor name '%s'", x->name);
            free(info_at);
            goto bad;
        }
    }
    free(info_at);
    uint64_t a = f->alignment;
    f->data_offset = (c.pos + a - 1) / a * a;
    if (n_tensors && f->data_offset > len) {
        fail(&c, c.pos, "file ends before the data section (aligned to %llu)", (unsigned long long)a);
        goto bad;
    }
    GgufTensor **by_off = malloc((n_tensors ? n_tensors : 1) * sizeof *by_off);
    if (!by_off) {
        fail(&c, c.pos, "out of memory");
        goto bad;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        GgufTensor *t = &f->tensors[i];
        by_off[i] = t;
        uint64_t room = len - f->data_offset;
        if (t->offset % a || t->offset > room || t->n_bytes > room - t->offset) {
            fail(&c, f->data_offset, "tensor '%s': data at offset %llu (+%llu bytes) is %s", t->name,
                 (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                 t->offset % a ? "not aligned" : "past the end of the file");
            free(by_off);
            goto bad;
        }
        t->data = buf + f->data_offset + t->offset;
    }
    qsort(by_off, n_tensors, sizeof *by_off, cmp_offset);
    for (uint64_t i = 1; i < n_tensors; i++)
        if (by_off[i - 1]->offset + by_off[i - 1]->n_bytes > by_off[i]->offset) {
            fail(&c, f->data_offset + by_off[i]->offset, "tensors '%s' and '%s' overlap",
                 by_off[i - 1]->name, by_off[i]->name);
            free(by_off);
            goto bad;
        }
    free(by_off);
    return f;
bad:
    gguf_close(f);
    return NULL;
}

GgufFile *gguf_parse(const void *buf, size_t len, const char *where, char *err, size_t err_len) {
    return parse(buf, len, where, err, err_len);
}

GgufFile *gguf_open(const char *path, char *err, size_t err_len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(err, err_len, "%s: %s", path, strerror(errno)), NULL;
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, err_len, "%s: not a regular file", path), NULL;
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set(err, err_len, "%s: byte offset 0: empty file (not GGUF)", path), NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return err_set(err, err_len, "%s: mmap: %s", path, strerror(errno)), NULL;
    GgufFile *f = parse(map, (uint64_t)st.st_size, path, err, err_len);
    if (!f) {
        munmap(map, (size_t)st.st_size);
        return NULL;
    }
    f->map = map;
    return f;
}

void gguf_close(GgufFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) {
        GgufKV *kv = &f->kvs[i];
        free(kv->key);
        free(kv->str);
        if (kv->arr_str)
            for (uint64_t j = 0; j < kv->arr_n; j++) free(kv->arr_str[j]);
        free(kv->arr_str);
        free(kv->arr_str_len);
    }
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kvs);
    free(f->tensors);
    free(f->kv_by_key);
    free(f->tensor_by_name);
    if (f->map) munmap(f->map, (size_t)f->len);
    free(f);
}

uint32_t gguf_version(const GgufFile *f) { return f->version; }
uint32_t gguf_alignment(const GgufFile *f) { return f->alignment; }
uint64_t gguf_data_offset(const GgufFile *f) { return f->data_offset; }
uint64_t gguf_file_size(const GgufFile *f) { return f->len; }
int gguf_n_kv(const GgufFile *f) { return f->n_kv; }
const GgufKV *gguf_kv(const GgufFile *f, int i) { return &f->kvs[i]; }
int gguf_n_tensors(const GgufFile *f) { return f->n_tensors; }
const GgufTensor *gguf_tensor(const GgufFile *f, int i) { return &f->tensors[i]; }

const GgufKV *gguf_find_kv(const GgufFile *f, const char *key) {
    GgufKV k = {.key = (char *)key}, *kp = &k;
    GgufKV **hit = bsearch(&kp, f->kv_by_key, (size_t)f->n_kv, sizeof *hit, cmp_kv_key);
    return hit ? *hit : NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
    GgufTensor t = {.name = (char *)name}, *tp = &t;
    GgufTensor **hit =
        bsearch(&tp, f->tensor_by_name, (size_t)f->n_tensors, sizeof *hit, cmp_tensor_name);
    return hit ? *hit : NULL;
}

static const GgufKV *get_typed(const GgufFile *f, const char *key, uint32_t type, char *err,
                               size_t err_len) {
    const GgufKV *kv = gguf_find_kv(f, key);
    if (!kv) return err_set(err, err_len, "metadata key '%s' is missing", key), NULL;
    if (kv->type != type)
        return err_set(err, err_len, "metadata key '%s' (byte offset %llu) is %s, expected %s", key,
                       (unsigned long long)kv->offset, gguf_value_type_name(kv->type),
                       gguf_value_type_name(type)),
               NULL;
    return kv;
}

int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *v, char *err, size_t err_len) {
    const GgufKV *kv = get_typed(f, key, GGUF_UINT32, err, err_len);
    if (kv) *v = (uint32_t)kv->v.u;
    return !kv;
}

int gguf_get_f32(const GgufFile *f, const char *key, float *v, char *err, size_t err_len) {
    const GgufKV *kv = get_typed(f, key, GGUF_FLOAT32, err, err_len);
    if (kv) *v = (float)kv->v.f;
    return !kv;
}

int gguf_get_str(const GgufFile *f, const char *key, const char **v, char *err, size_t err_len) {
    const GgufKV *kv = get_typed(f, key, GGUF_STRING, err, err_len);
    if (kv) *v = kv->str;
    return !kv;
}
