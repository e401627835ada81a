/* test_safetensors.c: the safetensors reader and writer: round trip of F32
 * and I32, F16/BF16 decoding of known bit patterns, every validation error
 * class, sharded directories, a fuzz loop (byte flips and truncations of
 * a valid file must give an error or a fully readable file, never a crash:
 * run it under ASan), and the streaming writer's chunks and failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "trainer/rng.h"
#include "trainer/safetensors.h"

static char dir[256];

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

/* A file from a header string and a data section. */
static void write_raw(const char *path, const char *header, const void *data, size_t n) {
    uint64_t h = strlen(header);
    unsigned char *buf = malloc(8 + h + n);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (n) memcpy(buf + 8 + h, data, n);
    write_bytes(path, buf, 8 + h + n);
    free(buf);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static void test_round_trip(void) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    float w[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f}, b[3] = {0.1f, 0.2f, 0.3f};
    int32_t step[1] = {12345};
    StWriteTensor ts[3] = {
        {"layer.weight", ST_F32, 2, {2, 3}, w},
        {"layer.bias", ST_F32, 1, {3}, b},
        {"step", ST_I32, 1, {1}, step},
    };
    const char *meta[] = {"format", "pt"};
    CHECK(st_write(path, ts, 3, meta, 1, err, sizeof err) == 0);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0); /* renamed away */
    StFile *f = st_open(path, err, sizeof err);
    CHECK(f != NULL);
    if (!f) return;
    CHECK(st_num_tensors(f) == 3);
    CHECK(st_metadata(f, "format") && !strcmp(st_metadata(f, "format"), "pt"));
    int i = st_find(f, "layer.weight");
    CHECK(i >= 0);
    const StTensor *t = st_tensor(f, i);
    CHECK(t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    float got[6];
    CHECK(st_read_f32(f, i, got, err, sizeof err) == 0);
    CHECK(memcmp(got, w, sizeof w) == 0);
    CHECK(st_read_f32(f, st_find(f, "layer.bias"), got, err, sizeof err) == 0);
    CHECK(memcmp(got, b, sizeof b) == 0);
    int32_t s = 0;
    CHECK(st_read_i32(f, st_find(f, "step"), &s, err, sizeof err) == 0 && s == 12345);
    CHECK(st_read_f32(f, st_find(f, "step"), got, err, sizeof err) != 0);
    CHECK_MSG(err, "I32");
    CHECK(st_find(f, "missing") == -1);
    st_close(f);
    /* the data section starts 8-byte aligned */
    size_t n;
    unsigned char *raw = read_bytes(path, &n);
    uint64_t h = 0;
    for (int k = 7; k >= 0; k--) h = h << 8 | raw[k];
    CHECK(h % 8 == 0 && 8 + h + 6 * 4 + 3 * 4 + 4 == n);
    free(raw);
}

static void test_half_decoding(void) {
    /* f16 bit patterns and their exact values */
    struct { uint16_t bits; float val; } f16[] = {
        {0x3c00, 1.0f},          {0xc000, -2.0f},     {0x7bff, 65504.0f},
        {0x0001, 0x1p-24f},      {0x03ff, 0x3ffp-24f}, {0x0400, 0x1p-14f},
        {0x3555, 0.333251953125f}, {0x8000, -0.0f},   {0x0000, 0.0f},
    };
    for (size_t i = 0; i < sizeof f16 / sizeof *f16; i++) CHECK(st_f16_to_f32(f16[i].bits) == f16[i].val);
    CHECK(signbit(st_f16_to_f32(0x8000)));
    CHECK(isinf(st_f16_to_f32(0x7c00)) && st_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(st_f16_to_f32(0x7e00)));
    CHECK(st_bf16_to_f32(0x3f80) == 1.0f && st_bf16_to_f32(0xc0a0) == -5.0f);
    CHECK(st_bf16_to_f32(0x0001) == 0x1p-133f);

    char path[512], err[512];
    snprintf(path, sizeof path, "%s/half.safetensors", dir);
    uint16_t data[5] = {0x3c00, 0xc000, 0x3f80, 0xc0a0, 0x4049};
    write_raw(path,
              "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[4,10]}}",
              data, sizeof data);
    StFile *f = st_open(path, err, sizeof err);
    CHECK(f != NULL);
    if (!f) return;
    float h[2], b[3];
    CHECK(st_read_f32(f, st_find(f, "h"), h, err, sizeof err) == 0 && h[0] == 1.0f && h[1] == -2.0f);
    CHECK(st_read_f32(f, st_find(f, "b"), b, err, sizeof err) == 0 && b[0] == 1.0f &&
          b[1] == -5.0f && b[2] == 3.140625f);
    st_close(f);
}

/* A header must be refused with a message containing `expect`. */
static void refuse(const char *header, size_t data_bytes, const char *expect) {
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    unsigned char *data = calloc(1, data_bytes + 1);
    write_raw(path, header, data, data_bytes);
    free(data);
    StFile *f = st_open(path, err, sizeof err);
    CHECK(f == NULL);
    st_close(f);
    CHECK_MSG(err, expect);
    CHECK_MSG(err, "bad.safetensors");
}

static void test_validation(void) {
    refuse("{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "past the data section");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "begin 4 > end 0");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlap");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "appears twice");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    refuse("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    refuse("{\"a\":[1,2]}", 4, "not a JSON object");
    refuse("[1,2]", 0, "not a JSON object");
    refuse("{\"a\": ", 0, "not valid JSON");
    refuse("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    refuse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
           "\"data_offsets\":[0,4]}}", 4, "overflows");
    /* issue 28: a second, smaller __metadata__ block was written past the
     * first's array (heap overflow under ASan) and the first leaked */
    refuse("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\",\"c\":\"3\"},"
           "\"__metadata__\":{\"d\":\"4\"}}",
           0, "__metadata__ appears twice");

    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    write_bytes(path, "\x10\0\0", 3);
    CHECK(st_open(path, err, sizeof err) == NULL);
    CHECK_MSG(err, "too short");
    write_bytes(path, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10);
    CHECK(st_open(path, err, sizeof err) == NULL);
    CHECK_MSG(err, "header length");
    write_bytes(path, "\x40\0\0\0\0\0\0\0{}", 10);
    CHECK(st_open(path, err, sizeof err) == NULL);
    CHECK_MSG(err, "past the end of the file");
    snprintf(path, sizeof path, "%s/none.safetensors", dir);
    CHECK(st_open(path, err, sizeof err) == NULL);
    CHECK_MSG(err, "cannot open");
    /* an F16 weight cannot be read as I32 and an I32 tensor not as fp32 weights */
    snprintf(path, sizeof path, "%s/i64.safetensors", dir);
    int64_t v = 7;
    write_raw(path, "{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", &v, 8);
    StFile *f = st_open(path, err, sizeof err);
    CHECK(f != NULL);
    float out;
    if (f) CHECK(st_read_f32(f, 0, &out, err, sizeof err) != 0);
    CHECK_MSG(err, "I64");
    st_close(f);
}

static void test_sharded(void) {
    char d[512], path[700], err[512];
    snprintf(d, sizeof d, "%s/sharded", dir);
    snprintf(path, sizeof path, "mkdir -p %s", d);
    CHECK(system(path) == 0);
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    StWriteTensor ta = {"x.a", ST_F32, 1, {2}, a}, tb = {"x.b", ST_F32, 1, {3}, b};
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", d);
    CHECK(st_write(path, &ta, 1, NULL, 0, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", d);
    CHECK(st_write(path, &tb, 1, NULL, 0, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", d);
    const char *idx = "{\"metadata\":{\"total_size\":20},\"weight_map\":{"
                      "\"x.a\":\"model-00001-of-00002.safetensors\","
                      "\"x.b\":\"model-00002-of-00002.safetensors\"}}";
    write_bytes(path, idx, strlen(idx));
    StSet *s = st_set_open(d, err, sizeof err);
    CHECK(s != NULL);
    if (s) {
        CHECK(st_set_num_files(s) == 2);
        StFile *f;
        int k;
        float got[3];
        CHECK(st_set_find(s, "x.b", &f, &k) == 0 && st_read_f32(f, k, got, err, sizeof err) == 0 &&
              got[2] == 5.0f);
        CHECK(st_set_find(s, "x.c", &f, &k) == -1);
        st_set_close(s);
    }
    /* index pointing a tensor at the wrong shard */
    const char *bad = "{\"weight_map\":{\"x.a\":\"model-00002-of-00002.safetensors\"}}";
    write_bytes(path, bad, strlen(bad));
    CHECK(st_set_open(d, err, sizeof err) == NULL);
    CHECK_MSG(err, "does not contain it");
    const char *missing = "{\"weight_map\":{\"x.a\":\"model-00003-of-00003.safetensors\"}}";
    write_bytes(path, missing, strlen(missing));
    CHECK(st_set_open(d, err, sizeof err) == NULL);
    CHECK_MSG(err, "model-00003-of-00003.safetensors");
    const char *escape = "{\"weight_map\":{\"x.a\":\"../a.safetensors\"}}";
    write_bytes(path, escape, strlen(escape));
    CHECK(st_set_open(d, err, sizeof err) == NULL);
    CHECK_MSG(err, "plain file name");
    unlink(path);
    CHECK(st_set_open(d, err, sizeof err) == NULL);
    CHECK_MSG(err, "no model.safetensors");
}

/* issue 28: 100,000 tensor names, all different, then the same with the
 * last one repeating a name from the middle. The duplicate check was n^2
 * string compares (a 5.9 MB header took 23 s); it must find the duplicate
 * and accept the rest (its speed is printed, not asserted: ~0.2 s here). */
static void test_many_names(void) {
    enum { N = 100000 };
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/many.safetensors", dir);
    for (int dup = 0; dup < 2; dup++) {
        size_t cap = (size_t)N * 64 + 16, len = 0;
        char *h = malloc(cap);
        len += (size_t)sprintf(h + len, "{");
        for (int i = 0; i < N; i++) {
            int id = dup && i == N - 1 ? N / 2 : i;
            len += (size_t)sprintf(h + len,
                                   "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],"
                                   "\"data_offsets\":[0,0]}",
                                   i ? "," : "", id);
        }
        len += (size_t)sprintf(h + len, "}");
        write_raw(path, h, NULL, 0);
        free(h);
        double t0 = (double)clock() / CLOCKS_PER_SEC;
        StFile *f = st_open(path, err, sizeof err);
        double t1 = (double)clock() / CLOCKS_PER_SEC;
        printf("many names (%s): %.3f s\n", dup ? "one duplicate" : "all different", t1 - t0);
        if (dup) {
            CHECK(f == NULL);
            CHECK_MSG(err, "tensor 't50000' appears twice");
        } else {
            CHECK(f != NULL && st_num_tensors(f) == N, "%s", err);
            if (f) CHECK(st_find(f, "t99999") == N - 1);
        }
        st_close(f);
    }
    unlink(path);
}

/* Byte flips and truncations of a valid file: st_open either fails with a
 * message, or every tensor it accepts reads back without error. A file
 * truncated inside the data section must be refused. */
static void test_fuzz(void) {
    char path[512], fz[512], err[512];
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    snprintf(fz, sizeof fz, "%s/fuzz.safetensors", dir);
    size_t n;
    unsigned char *orig = read_bytes(path, &n), *buf = malloc(n);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | orig[k];
    Rng r;
    rng_seed(&r, 42);
    int refused = 0, accepted = 0, trunc_refused = 0, truncs = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, orig, n);
        size_t len = n;
        int kind = (int)(rng_u64(&r) % 3);
        if (kind == 0) { /* truncate anywhere */
            len = (size_t)(rng_u64(&r) % n);
            truncs++;
        } else { /* flip 1..4 bytes inside the length + header */
            int flips = 1 + (int)(rng_u64(&r) % 4);
            for (int k = 0; k < flips; k++)
                buf[rng_u64(&r) % (8 + hlen)] ^= (unsigned char)(1 + rng_u64(&r) % 255);
        }
        write_bytes(fz, buf, len);
        err[0] = 0;
        StFile *f = st_open(fz, err, sizeof err);
        if (!f) {
            refused++;
            if (kind == 0) trunc_refused++;
            if (!err[0]) CHECK(!"refusal without a message");
            continue;
        }
        accepted++;
        for (int i = 0; i < st_num_tensors(f); i++) {
            const StTensor *t = st_tensor(f, i);
            if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) continue;
            float *dst = malloc(t->numel * sizeof(float) + 1);
            if (st_read_f32(f, i, dst, err, sizeof err)) CHECK(!"validated tensor failed to read");
            free(dst);
        }
        st_close(f);
    }
    CHECK(trunc_refused == truncs); /* every truncation loses data bytes */
    CHECK(refused > 0);
    printf("fuzz: %d refused, %d accepted\n", refused, accepted);
    free(buf);
    free(orig);
}

/* st_write_stream: the fill is asked for each tensor's elements in order,
 * in pieces of at most ST_STREAM_CHUNK, and the file reads back as what it
 * produced; a tensor of ST_STREAM_CHUNK + 5 elements takes two pieces. A
 * fill that fails abandons the file: no PATH, no PATH.tmp, its message. */
typedef struct {
    int calls, bad_order, fail_at;
    uint64_t next[2];
} Stream;

static int stream_fill(void *ctx, int i, uint64_t first, size_t count, void *dst, char *err,
                       size_t err_len) {
    Stream *s = ctx;
    if (++s->calls == s->fail_at) return snprintf(err, err_len, "fill says no"), 1;
    s->bad_order += first != s->next[i] || count > ST_STREAM_CHUNK || (i == 1 && s->next[0] != 3);
    s->next[i] = first + count;
    float *d = dst;
    for (size_t k = 0; k < count; k++) d[k] = (float)(first + k) * (i ? -1.0f : 0.5f);
    return 0;
}

static void test_stream(void) {
    char path[400], tmp[420], err[256];
    snprintf(path, sizeof path, "%s/stream.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const int64_t big = (int64_t)ST_STREAM_CHUNK + 5;
    StWriteTensor ts[2] = {{"small", ST_F32, 1, {3}, NULL}, {"big", ST_F32, 2, {big, 1}, NULL}};
    Stream s = {0};
    CHECK_OK(st_write_stream(path, ts, 2, NULL, 0, stream_fill, &s, err, sizeof err), err);
    CHECK(s.calls == 3 && s.bad_order == 0, "%d calls, %d out of order\n", s.calls, s.bad_order);
    StFile *f = st_open(path, err, sizeof err);
    CHECK_OK(!f, err);
    float *x = malloc((size_t)big * sizeof *x);
    if (f && x) {
        int ib = st_find(f, "big"), bad = 0;
        CHECK(st_read_f32(f, ib, x, err, sizeof err) == 0);
        for (int64_t k = 0; k < big; k++) bad += x[k] != -(float)k;
        CHECK(bad == 0 && st_read_f32(f, st_find(f, "small"), x, err, sizeof err) == 0 &&
              x[0] == 0.0f && x[1] == 0.5f && x[2] == 1.0f);
    }
    st_close(f);
    free(x);
    remove(path);
    Stream s2 = {.fail_at = 3};
    CHECK_FAILS(st_write_stream(path, ts, 2, NULL, 0, stream_fill, &s2, err, sizeof err), err,
                "fill says no");
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dapt-test-st-XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    test_round_trip();
    test_half_decoding();
    test_validation();
    test_many_names();
    test_sharded();
    test_fuzz();
    test_stream();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
