/* safetensors.c: the safetensors reader, writer and sharded-directory view
 * (see safetensors.h for the format and the invariants kept).
 *
 * Everything in a header is untrusted: sizes are checked for overflow before
 * use, offsets against the file size, and no read is issued before st_open
 * has validated the entry it touches.
 */
#include "trainer/safetensors.h"
#include "kernels/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header larger than this is refused (the reference implementation's
 * limit is 100 MB as well). */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

struct StFile {
    char *path;
    int fd;
    uint64_t file_bytes;
    uint64_t data_start; /* 8 + header length */
    int n;
    StTensor *t;
    int n_meta;
    char **meta; /* key, value pairs */
};

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_NUM_DTYPES] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4},
    [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8}, [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};

int st_dtype_parse(const char *name) {
    for (int i = 0; i < ST_NUM_DTYPES; i++)
        if (!strcmp(dtypes[i].name, name)) return i;
    return -1;
}
const char *st_dtype_name(StDtype d) { return (unsigned)d < ST_NUM_DTYPES ? dtypes[d].name : "?"; }
size_t st_dtype_size(StDtype d) { return (unsigned)d < ST_NUM_DTYPES ? dtypes[d].size : 0; }

float st_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp) {
        u = sign | ((exp + 112) << 23) | (man << 13); /* rebias 15 -> 127 */
    } else if (!man) {
        u = sign; /* signed zero */
    } else {      /* subnormal: normalise the mantissa */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---------------- reader ---------------- */

void st_close(StFile *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    free(f->t);
    free(f->path);
    free(f);
}

/* pread exactly n bytes at off; a short read is an error. */
static int read_at(StFile *f, void *dst, size_t n, uint64_t off, char *err, size_t err_len) {
    char *p = dst;
    while (n) {
        ssize_t r = pread(f->fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            return err_set(err, err_len, "%s: read failed at byte %llu: %s", f->path,
                           (unsigned long long)off,
                           r < 0 ? strerror(errno) : "unexpected end of file");
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* A JSON number that is a non-negative integer below 2^53 (exact in a double). */
static int json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 1;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d < 9007199254740992.0) || d != (double)(uint64_t)d) return 1;
    *out = (uint64_t)d;
    return 0;
}

/* "<path>: tensor '<name>': <message>" into err; -1 */
__attribute__((format(printf, 5, 6))) static int
tensor_err(char *err, size_t err_len, const char *path, const char *name, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(err, err_len, "%s: tensor '%s': %s", path, name, msg);
}

static int parse_entry(StFile *f, const cJSON *e, StTensor *t, uint64_t data_bytes, char *err,
                       size_t err_len) {
#define FAIL(...) return tensor_err(err, err_len, f->path, e->string, __VA_ARGS__)
    if (!cJSON_IsObject(e)) FAIL("entry is not a JSON object");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) FAIL("missing \"dtype\" string");
    int d = st_dtype_parse(dt->valuestring);
    if (d < 0) FAIL("unknown dtype \"%.32s\"", dt->valuestring);
    t->dtype = (StDtype)d;
    if (!cJSON_IsArray(sh)) FAIL("missing \"shape\" array");
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS) FAIL("%d dimensions (at most %d supported)", nd, ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (json_u64(cJSON_GetArrayItem(sh, i), &v))
            FAIL("shape[%d] is not a non-negative integer", i);
        if (v && numel > UINT64_MAX / 16 / v) FAIL("shape overflows");
        numel *= v;
        t->shape[i] = (int64_t)v;
    }
    t->numel = numel;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) FAIL("missing \"data_offsets\" [begin, end]");
    if (json_u64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        json_u64(cJSON_GetArrayItem(off, 1), &t->end))
        FAIL("data_offsets are not non-negative integers");
    if (t->begin > t->end) FAIL("data_offsets begin %llu > end %llu", (unsigned long long)t->begin,
                                (unsigned long long)t->end);
    if (t->end > data_bytes)
        FAIL("data_offsets end %llu is past the data section (%llu bytes from file byte %llu; "
             "the file is %llu bytes: truncated?)",
             (unsigned long long)t->end, (unsigned long long)data_bytes,
             (unsigned long long)f->data_start, (unsigned long long)f->file_bytes);
    if (t->end - t->begin != numel * dtypes[d].size)
        FAIL("%llu bytes of data but shape x %s needs %llu", (unsigned long long)(t->end - t->begin),
             dtypes[d].name, (unsigned long long)(numel * dtypes[d].size));
    t->name = strdup(e->string);
    if (!t->name) FAIL("out of memory");
    return 0;
#undef FAIL
}

static int cmp_begin(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int parse_header(StFile *f, const char *json, size_t len, char *err, size_t err_len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long pos = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        return err_set(err, err_len, "%s: header is not valid JSON (near file byte %ld)", f->path,
                       pos < 0 ? -1L : pos + 8);
    }
    int rc = 1;
    if (!cJSON_IsObject(root)) {
        err_set(err, err_len, "%s: header is not a JSON object", f->path);
        goto out;
    }
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next) n++;
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    if (!f->t) goto oom;
    uint64_t data_bytes = f->file_bytes - f->data_start;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                err_set(err, err_len, "%s: __metadata__ is not an object", f->path);
                goto out;
            }
            if (f->meta) { /* a second block would be written into the first's array */
                err_set(err, err_len, "%s: __metadata__ appears twice in the header", f->path);
                goto out;
            }
            int nm = 0;
            for (const cJSON *m = e->child; m; m = m->next) nm++;
            f->meta = calloc(2 * (size_t)nm + 1, sizeof *f->meta);
            if (!f->meta) goto oom;
            for (const cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    err_set(err, err_len, "%s: __metadata__ value '%s' is not a string", f->path,
                            m->string);
                    goto out;
                }
                f->meta[2 * f->n_meta] = strdup(m->string);
                f->meta[2 * f->n_meta + 1] = strdup(m->valuestring);
                f->n_meta++;
                if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1]) goto oom;
            }
            continue;
        }
        if (parse_entry(f, e, &f->t[f->n], data_bytes, err, err_len)) goto out;
        f->n++;
    }
    /* names: sorted, O(n log n) (a header may hold ~10^6 entries) */
    const char **names = malloc(((size_t)f->n + 1) * sizeof *names);
    if (!names) goto oom;
    for (int i = 0; i < f->n; i++)
        names[i] = f->t[i].name;
    const char *dup = NULL;
    int dup_rc = find_duplicate(names, (size_t)f->n, &dup);
    if (dup_rc == 1)
        err_set(err, err_len, "%s: tensor '%s' appears twice in the header", f->path, dup);
    free(names);
    if (dup_rc < 0) goto oom;
    if (dup_rc) goto out;
    /* overlap check on a copy sorted by begin (empty tensors overlap nothing) */
    StTensor *s = malloc(((size_t)f->n + 1) * sizeof *s);
    if (!s) goto oom;
    memcpy(s, f->t, (size_t)f->n * sizeof *s);
    qsort(s, (size_t)f->n, sizeof *s, cmp_begin);
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        if (s[i].begin == s[i].end) continue;
        if (prev && s[i].begin < prev_end) {
            err_set(err, err_len, "%s: tensors '%s' and '%s' overlap in the data section", f->path,
                    prev, s[i].name);
            free(s);
            goto out;
        }
        prev_end = s[i].end;
        prev = s[i].name;
    }
    free(s);
    rc = 0;
    goto out;
oom:
    err_set(err, err_len, "%s: out of memory reading the header", f->path);
out:
    cJSON_Delete(root);
    return rc;
}

StFile *st_open(const char *path, char *err, size_t err_len) {
    StFile *f = calloc(1, sizeof *f);
    if (!f) return err_set(err, err_len, "%s: out of memory", path), NULL;
    f->fd = -1;
    f->path = strdup(path);
    if (!f->path) goto oom;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        err_set(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(f->fd, &sb) || !S_ISREG(sb.st_mode)) {
        err_set(err, err_len, "%s: not a regular file", path);
        goto fail;
    }
    f->file_bytes = (uint64_t)sb.st_size;
    if (f->file_bytes < 8) {
        err_set(err, err_len, "%s: %llu bytes, too short for the 8-byte header length (truncated?)",
                path, (unsigned long long)f->file_bytes);
        goto fail;
    }
    unsigned char lenb[8];
    if (read_at(f, lenb, 8, 0, err, err_len)) goto fail;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenb[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER_BYTES) {
        err_set(err, err_len,
                "%s: header length %llu at byte 0 is not in [2, %u] (not a "
                "safetensors file?)",
                path, (unsigned long long)hlen, ST_MAX_HEADER_BYTES);
        goto fail;
    }
    if (hlen > f->file_bytes - 8) {
        err_set(err, err_len,
                "%s: header of %llu bytes runs past the end of the file (%llu bytes; "
                "truncated?)",
                path, (unsigned long long)hlen, (unsigned long long)f->file_bytes);
        goto fail;
    }
    f->data_start = 8 + hlen;
    char *json = malloc(hlen);
    if (!json) goto oom;
    if (read_at(f, json, hlen, 8, err, err_len)) {
        free(json);
        goto fail;
    }
    int bad = parse_header(f, json, hlen, err, err_len);
    free(json);
    if (bad) goto fail;
    return f;
oom:
    err_set(err, err_len, "%s: out of memory", path);
fail:
    st_close(f);
    return NULL;
}

const char *st_path(const StFile *f) { return f->path; }
int st_num_tensors(const StFile *f) { return f->n; }
const StTensor *st_tensor(const StFile *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }

int st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return i;
    return -1;
}

const char *st_metadata(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[2 * i], key)) return f->meta[2 * i + 1];
    return NULL;
}

/* Reads a tensor's raw bytes in chunks through `buf` and converts each. */
int st_read_f32_range(StFile *f, int i, uint64_t first, uint64_t count, float *dst, char *err,
                      size_t err_len) {
    const StTensor *t = st_tensor(f, i);
    if (!t) return err_set(err, err_len, "%s: no tensor #%d", f->path, i);
    if (first > t->numel || count > t->numel - first)
        return err_set(err, err_len,
                       "%s: tensor '%s' has %llu elements; elements [%llu, %llu) "
                       "were asked for",
                       f->path, t->name, (unsigned long long)t->numel, (unsigned long long)first,
                       (unsigned long long)(first + count));
    if (t->dtype == ST_F32)
        return read_at(f, dst, count * 4, f->data_start + t->begin + first * 4, err, err_len);
    if (t->dtype != ST_F16 && t->dtype != ST_BF16)
        return err_set(err, err_len, "%s: tensor '%s' is %s; dapt reads F32, F16 or BF16 weights",
                       f->path, t->name, dtypes[t->dtype].name);
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = malloc(CHUNK * sizeof *buf);
    if (!buf) return err_set(err, err_len, "out of memory");
    for (uint64_t done = 0; done < count;) {
        size_t k = count - done < CHUNK ? (size_t)(count - done) : CHUNK;
        if (read_at(f, buf, k * 2, f->data_start + t->begin + (first + done) * 2, err, err_len)) {
            free(buf);
            return 1;
        }
        for (size_t j = 0; j < k; j++)
            dst[done + j] = t->dtype == ST_F16 ? st_f16_to_f32(buf[j]) : st_bf16_to_f32(buf[j]);
        done += k;
    }
    free(buf);
    return 0;
}

int st_read_f32(StFile *f, int i, float *dst, char *err, size_t err_len) {
    const StTensor *t = st_tensor(f, i);
    if (!t) return err_set(err, err_len, "%s: no tensor #%d", f->path, i);
    return st_read_f32_range(f, i, 0, t->numel, dst, err, err_len);
}

int st_read_i32(StFile *f, int i, int32_t *dst, char *err, size_t err_len) {
    const StTensor *t = st_tensor(f, i);
    if (!t) return err_set(err, err_len, "%s: no tensor #%d", f->path, i);
    if (t->dtype != ST_I32)
        return err_set(err, err_len, "%s: tensor '%s' is %s, expected I32", f->path, t->name,
                       dtypes[t->dtype].name);
    return read_at(f, dst, t->end - t->begin, f->data_start + t->begin, err, err_len);
}

/* ---------------- writer ---------------- */

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* the elements of a tensor's shape (checked against overflow by the caller's rank limit) */
static uint64_t numel_of(const StWriteTensor *t) {
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
    return numel;
}

int st_write_stream(const char *path, const StWriteTensor *tensors, int n, const char *const *meta,
                    int n_meta, StFill fill, void *ctx, char *err, size_t err_len) {
    cJSON *root = cJSON_CreateObject();
    char *json = NULL, *tmp = NULL;
    void *chunk = NULL;
    int fd = -1, rc = 1;
    if (!root) goto oom;
    if (n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (!m) goto oom;
        for (int i = 0; i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1])) goto oom;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const StWriteTensor *t = &tensors[i];
        if (t->dtype != ST_F32 && t->dtype != ST_I32) {
            err_set(err, err_len, "%s: tensor '%s': dapt writes F32 or I32 only", path, t->name);
            goto out;
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || !strcmp(t->name, "__metadata__") ||
            cJSON_GetObjectItemCaseSensitive(root, t->name)) {
            err_set(err, err_len, "%s: tensor '%s': bad rank or duplicate name", path, t->name);
            goto out;
        }
        uint64_t numel = numel_of(t);
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        double sh[ST_MAX_DIMS], offs[2] = {(double)off, (double)(off + numel * 4)};
        for (int d = 0; d < t->ndim; d++) sh[d] = (double)t->shape[d];
        if (!e || !cJSON_AddStringToObject(e, "dtype", dtypes[t->dtype].name) ||
            !cJSON_AddItemToObject(e, "shape", cJSON_CreateDoubleArray(sh, t->ndim)) ||
            !cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateDoubleArray(offs, 2)))
            goto oom;
        off += numel * 4;
    }
    json = cJSON_PrintUnformatted(root);
    chunk = malloc(ST_STREAM_CHUNK * 4);
    if (!json || !chunk) goto oom;
    size_t hlen = strlen(json), padded = (hlen + 7) / 8 * 8;
    tmp = malloc(strlen(path) + 5);
    if (!tmp) goto oom;
    sprintf(tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_set(err, err_len, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    int bad = write_all(fd, lenb, 8) || write_all(fd, json, hlen) ||
              write_all(fd, spaces, padded - hlen);
    for (int i = 0; i < n && !bad; i++) {
        uint64_t numel = numel_of(&tensors[i]);
        for (uint64_t at = 0; at < numel && !bad; at += ST_STREAM_CHUNK) {
            size_t k = numel - at < ST_STREAM_CHUNK ? (size_t)(numel - at) : ST_STREAM_CHUNK;
            if (fill(ctx, i, at, k, chunk, err, err_len)) goto out;
            bad = write_all(fd, chunk, k * 4);
        }
    }
    if (bad || fsync(fd)) {
        err_set(err, err_len, "%s: write failed: %s", tmp, strerror(errno));
        goto out;
    }
    if (close(fd)) {
        fd = -1;
        err_set(err, err_len, "%s: close failed: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path)) {
        err_set(err, err_len, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = 0;
    goto out;
oom:
    err_set(err, err_len, "%s: out of memory building the header", path);
out:
    if (fd >= 0) close(fd);
    if (rc && tmp) unlink(tmp);
    free(tmp);
    free(chunk);
    free(json);
    cJSON_Delete(root);
    return rc;
}

/* st_write's fill: a copy from the tensor's own data */
static int fill_from_data(void *ctx, int i, uint64_t first, size_t count, void *dst, char *err,
                          size_t err_len) {
    (void)err, (void)err_len;
    const StWriteTensor *t = (const StWriteTensor *)ctx + i;
    memcpy(dst, (const char *)t->data + first * 4, count * 4);
    return 0;
}

int st_write(const char *path, const StWriteTensor *tensors, int n, const char *const *meta,
             int n_meta, char *err, size_t err_len) {
    return st_write_stream(path, tensors, n, meta, n_meta, fill_from_data, (void *)tensors, err,
                           err_len);
}

/* ---------------- directory (single file or shards) ---------------- */

struct StSet {
    int n_files;
    StFile **files;
};

void st_set_close(StSet *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) st_close(s->files[i]);
    free(s->files);
    free(s);
}

int st_set_num_files(const StSet *s) { return s->n_files; }
StFile *st_set_file(StSet *s, int i) { return i >= 0 && i < s->n_files ? s->files[i] : NULL; }

int st_set_find(StSet *s, const char *name, StFile **file, int *index) {
    for (int i = 0; i < s->n_files; i++) {
        int k = st_find(s->files[i], name);
        if (k >= 0) {
            *file = s->files[i];
            *index = k;
            return 0;
        }
    }
    return -1;
}

char *st_read_text(const char *path, size_t max_bytes, char *err, size_t err_len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, err_len, "%s: cannot open: %s", path, strerror(errno)), NULL;
    /* a buffer of the file's size (one byte more to see it grow), not of max_bytes */
    struct stat sb;
    size_t cap = fstat(fileno(fp), &sb) == 0 && sb.st_size >= 0 && (uint64_t)sb.st_size < max_bytes
                     ? (size_t)sb.st_size + 1
                     : max_bytes + 1;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap, fp) : 0;
    int bad = !buf || ferror(fp) || n > max_bytes || (n == cap && cap <= max_bytes);
    fclose(fp);
    if (bad) {
        free(buf);
        err_set(err, err_len, "%s: unreadable or larger than %zu bytes", path, max_bytes);
        return NULL;
    }
    const char *nul = memchr(buf, 0, n);
    if (nul) { /* everything after it would be silently ignored */
        int line = 1;
        for (const char *q = buf; q < nul; q++)
            line += *q == '\n';
        err_set(err, err_len, "%s:%d: a NUL byte at byte offset %zu (a text file has none)", path,
                line, (size_t)(nul - buf));
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static int add_shard(StSet *s, const char *dir, const char *file, char *err, size_t err_len) {
    for (int i = 0; i < s->n_files; i++) {
        const char *p = st_path(s->files[i]);
        const char *base = strrchr(p, '/');
        if (!strcmp(base ? base + 1 : p, file)) return 0;
    }
    if (strchr(file, '/') || !strcmp(file, "..")) {
        return err_set(err, err_len, "%s: shard name '%s' is not a plain file name", dir, file);
    }
    size_t len = strlen(dir) + strlen(file) + 2;
    char *path = malloc(len);
    if (!path) return err_set(err, err_len, "out of memory");
    snprintf(path, len, "%s/%s", dir, file);
    StFile *f = st_open(path, err, err_len);
    free(path);
    if (!f) return 1;
    s->files[s->n_files++] = f;
    return 0;
}

StSet *st_set_open_file(const char *path, char *err, size_t err_len) {
    StSet *s = calloc(1, sizeof *s);
    if (!s || !(s->files = calloc(1, sizeof *s->files))) {
        free(s);
        return err_set(err, err_len, "out of memory"), NULL;
    }
    if (!(s->files[0] = st_open(path, err, err_len))) {
        st_set_close(s);
        return NULL;
    }
    s->n_files = 1;
    return s;
}

StSet *st_set_open(const char *dir, char *err, size_t err_len) {
    StSet *s = calloc(1, sizeof *s);
    char path[4096];
    if (!s) return err_set(err, err_len, "out of memory"), NULL;
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path - 40) {
        err_set(err, err_len, "%s: path too long", dir);
        goto fail;
    }
    strcat(path, "/model.safetensors");
    if (access(path, F_OK) == 0) {
        s->files = calloc(1, sizeof *s->files);
        if (!s->files || !(s->files[0] = st_open(path, err, err_len))) goto fail;
        s->n_files = 1;
        return s;
    }
    snprintf(path + strlen(dir), sizeof path - strlen(dir), "/model.safetensors.index.json");
    if (access(path, F_OK) != 0) {
        err_set(err, err_len, "%s: no model.safetensors or model.safetensors.index.json", dir);
        goto fail;
    }
    char *text = st_read_text(path, 64u << 20, err, err_len);
    if (!text) goto fail;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        err_set(err, err_len, "%s: %s", path, root ? "no \"weight_map\" object" : "not valid JSON");
        cJSON_Delete(root);
        goto fail;
    }
    int n = 0;
    for (const cJSON *e = wm->child; e; e = e->next) n++;
    s->files = calloc((size_t)n + 1, sizeof *s->files);
    if (!s->files) {
        cJSON_Delete(root);
        goto fail;
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            err_set(err, err_len, "%s: weight_map['%s'] is not a file name", path, e->string);
            cJSON_Delete(root);
            goto fail;
        }
        if (add_shard(s, dir, e->valuestring, err, err_len)) {
            cJSON_Delete(root);
            goto fail;
        }
        StFile *f;
        int k;
        if (st_set_find(s, e->string, &f, &k) || strcmp(strrchr(st_path(f), '/') + 1, e->valuestring)) {
            err_set(err, err_len, "%s: weight_map puts '%s' in %s, which does not contain it", path,
                    e->string, e->valuestring);
            cJSON_Delete(root);
            goto fail;
        }
    }
    cJSON_Delete(root);
    if (!s->n_files) {
        err_set(err, err_len, "%s: weight_map is empty", path);
        goto fail;
    }
    return s;
fail:
    st_set_close(s);
    return NULL;
}
