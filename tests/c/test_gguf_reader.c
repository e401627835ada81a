/* test_gguf_reader.c: the GGUF reader refuses malformed files with a clear
 * message and the byte offset, and accepts what the writer makes.
 *
 * Properties: a writer file round-trips (every key's type and value, every
 * tensor's shape, type and data); every truncation of it before the end of
 * its last tensor is refused with "byte offset"; each hand-made corruption
 * (magic, version, big-endian, counts that cannot fit, a string running
 * past the end, unknown value type, nested array, bad bool, duplicate key,
 * bad alignment, 0 or 5 dimensions, unknown ggml type, ne[0] not a block
 * multiple, unaligned or out-of-file or overlapping data, duplicate tensor
 * names) is refused with a message naming it. Inputs are exactly-sized heap
 * copies, so under ASan any read past the end fails the test. Also checks
 * the fp16/bf16/Q8_0 conversions against independent oracles.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf_testutil.h"
#include "kernels/util.h"
#include "tools/gguf/gguf.h"

/* A little GGUF byte builder for hand-made (possibly invalid) files. */
typedef PbBuf B;
static void b_u32(B *b, uint32_t v) { pb_put(b, &v, 4); }
static void b_u64(B *b, uint64_t v) { pb_put(b, &v, 8); }
static void b_str(B *b, const char *s) {
    b_u64(b, strlen(s));
    pb_put(b, s, strlen(s));
}
static void b_head(B *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    pb_put(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_kv_u32(B *b, const char *k, uint32_t v) {
    b_str(b, k);
    b_u32(b, GGUF_UINT32);
    b_u32(b, v);
}
static void b_tensor(B *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}
static void b_pad(B *b, size_t a) {
    static const uint8_t z[64];
    pb_put(b, z, (a - b->n % a) % a);
}

/* Parses an exact-size heap copy; returns 1 when refused and err holds
 * the message. */
static int refused(const void *data, size_t n, char *err, size_t len) {
    void *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    GgufFile *f = gguf_parse(copy, n, "t.gguf", err, len);
    int r = f == NULL;
    gguf_close(f);
    free(copy);
    return r;
}

static void expect_refused(B *b, const char *needle, const char *what) {
    char err[512] = "";
    int r = refused(b->b, b->n, err, sizeof err);
    CHECK(r, "%s: accepted", what);
    if (r) {
        CHECK_MSG(err, needle);
        CHECK_MSG(err, "byte offset");
    }
    free(b->b);
    memset(b, 0, sizeof *b);
}

/* the sample's sources (gguf_test_sample in gguf_testutil.h) */
#define src_a gguf_sample_a
#define src_b gguf_sample_b

static void round_trip(const char *path) {
    char err[512];
    GgufWriter *w = gguf_test_sample();
    CHECK(gguf_writer_write(w, path, err, sizeof err) == 0, "write: %s", err);
    gguf_writer_free(w);
    GgufFile *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "open: %s", err);
    if (!f) return;
    CHECK(gguf_version(f) == 3 && gguf_n_kv(f) == 9 && gguf_n_tensors(f) == 3, "counts");
    CHECK(gguf_data_offset(f) % 32 == 0, "data section aligned");
    uint32_t u;
    float x;
    const char *s;
    CHECK(gguf_get_u32(f, "llama.block_count", &u, err, sizeof err) == 0 && u == 3, "u32");
    CHECK(gguf_get_f32(f, "x.f32", &x, err, sizeof err) == 0 && x == 0.25f, "f32");
    CHECK(gguf_get_str(f, "general.architecture", &s, err, sizeof err) == 0 && !strcmp(s, "llama"), "str");
    CHECK(gguf_get_u32(f, "x.f32", &u, err, sizeof err) != 0, "type mismatch accepted");
    CHECK_MSG(err, "is FLOAT32, expected UINT32");
    CHECK(gguf_get_u32(f, "nope", &u, err, sizeof err) != 0, "missing key accepted");
    CHECK_MSG(err, "missing");
    const GgufKV *kv = gguf_find_kv(f, "x.i32");
    CHECK(kv && kv->type == GGUF_INT32 && kv->v.i == -5, "i32");
    kv = gguf_find_kv(f, "x.bool");
    CHECK(kv && kv->type == GGUF_BOOL && kv->v.u == 1, "bool");
    kv = gguf_find_kv(f, "x.strs");
    CHECK(kv && kv->arr_type == GGUF_STRING && kv->arr_n == 3 && !strcmp(kv->arr_str[1], "") &&
              !strcmp(kv->arr_str[2], "\xe2\x96\x81z"),
          "string array");
    kv = gguf_find_kv(f, "x.i32s");
    int32_t i2 = 0;
    if (kv && kv->arr_n == 3) memcpy(&i2, kv->arr_data + 8, 4);
    CHECK(kv && kv->arr_type == GGUF_INT32 && kv->arr_n == 3 && i2 == 9, "i32 array");
    const GgufTensor *t = gguf_find_tensor(f, "a.f16");
    float y[96];
    CHECK(t && t->type == GGML_F16 && t->ne[0] == 8 && t->ne[1] == 8 && t->n_bytes == 128, "f16 tensor");
    if (t) {
        gguf_convert_to_f32(t->type, t->data, y, 64);
        CHECK(!memcmp(y, src_a, sizeof src_a), "f16 data (exact: multiples of 1/8)");
    }
    t = gguf_find_tensor(f, "b.q8");
    CHECK(t && t->type == GGML_Q8_0 && t->n_bytes == 3 * 34 && t->offset % 32 == 0, "q8 tensor");
    if (t) {
        gguf_convert_to_f32(t->type, t->data, y, 96);
        float worst = 0;
        for (int i = 0; i < 96; i++) worst = fmaxf(worst, fabsf(y[i] - src_b[i]));
        /* |sin| <= 1: step <= 1/127; half a step plus the fp16 scale rounding */
        CHECK(worst <= 0.6f / 127.0f, "q8_0 error %g", worst);
    }
    gguf_close(f);
}

static void truncations(const char *path) {
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    CHECK(b != NULL, "read %s", path);
    if (!b) return;
    char err[512];
    GgufFile *f = gguf_parse(b, n, path, err, sizeof err);
    uint64_t end = 0;
    for (int i = 0; f && i < gguf_n_tensors(f); i++) {
        const GgufTensor *t = gguf_tensor(f, i);
        uint64_t e = gguf_data_offset(f) + t->offset + t->n_bytes;
        if (e > end) end = e;
    }
    gguf_close(f);
    CHECK(end > 0 && end <= n, "end of data %llu", (unsigned long long)end);
    int accepted = 0, no_offset = 0;
    for (size_t len = 0; len < end; len++) {
        if (!refused(b, len, err, sizeof err)) accepted++;
        else no_offset += strstr(err, "byte offset") == NULL;
    }
    CHECK(accepted == 0, "%d truncations accepted", accepted);
    CHECK(no_offset == 0, "%d messages without the byte offset", no_offset);
    free(b);
}

static void corruptions(void) {
    B b = {0};
    uint64_t ne1[1] = {32}, ne2[2] = {32, 2};
    pb_put(&b, "GGUX\x03\0\0\0", 8);
    expect_refused(&b, "not a GGUF file", "magic");
    b_head(&b, 4, 0, 0);
    expect_refused(&b, "unsupported GGUF version 4", "version");
    b_head(&b, 0x03000000u, 0, 0);
    expect_refused(&b, "big-endian", "big-endian");
    b_head(&b, 3, 0, 1u << 30);
    expect_refused(&b, "cannot fit", "huge kv count");
    b_head(&b, 3, (uint64_t)1 << 62, 0);
    expect_refused(&b, "cannot fit", "huge tensor count");
    b_head(&b, 3, 0, 1);
    b_u64(&b, 1000);
    pb_put(&b, "abcdefghijklmnopqrstuvwxyz", 26);
    expect_refused(&b, "key length 1000 runs past the end", "long key");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u32(&b, 0);
    expect_refused(&b, "unknown value type 13", "value type");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_ARRAY);
    b_u64(&b, 0);
    expect_refused(&b, "nested arrays", "nested");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_UINT64);
    b_u64(&b, (uint64_t)1 << 61);
    expect_refused(&b, "left", "huge array");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_ARRAY);
    b_u32(&b, GGUF_STRING);
    b_u64(&b, 3);
    b_str(&b, "ok");
    b_u64(&b, (uint64_t)-1);
    b_u64(&b, 0);
    expect_refused(&b, "array string length", "string in array past end");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_BOOL);
    pb_put(&b, "\x02", 1);
    expect_refused(&b, "not 0 or 1", "bool");
    b_head(&b, 3, 0, 2);
    b_kv_u32(&b, "k", 1);
    b_kv_u32(&b, "k", 2);
    expect_refused(&b, "duplicate metadata key 'k'", "dup key");
    b_head(&b, 3, 0, 1);
    b_kv_u32(&b, "general.alignment", 24);
    expect_refused(&b, "power of two", "alignment");
    b_head(&b, 3, 0, 1);
    b_str(&b, "");
    b_u32(&b, GGUF_UINT8);
    pb_put(&b, "\x01", 1);
    expect_refused(&b, "empty metadata key", "empty key");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 5, (uint64_t[]){1, 1, 1, 1, 1}, GGML_F32, 0);
    expect_refused(&b, "5 dimensions", "dims");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 2, (uint64_t[]){4, 0}, GGML_F32, 0);
    expect_refused(&b, "dimension 1 is 0", "zero dim");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 4, (uint64_t[]){1u << 20, 1u << 20, 1u << 20, 1u << 20}, GGML_F32, 0);
    expect_refused(&b, "overflows", "overflow");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, ne1, 5, 0);
    expect_refused(&b, "unknown ggml type 5", "ggml type");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, (uint64_t[]){33}, GGML_Q8_0, 0);
    expect_refused(&b, "not a multiple of Q8_0's block of 32", "block");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, ne1, GGML_F32, 8);
    b_pad(&b, 32);
    pb_put(&b, src_b, 256);
    expect_refused(&b, "not aligned", "unaligned");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, ne1, GGML_F32, 0);
    b_pad(&b, 32);
    pb_put(&b, src_b, 100);
    expect_refused(&b, "past the end", "data past end");
    b_head(&b, 3, 2, 0);
    b_tensor(&b, "t", 1, ne1, GGML_F32, 0);
    b_tensor(&b, "u", 2, ne2, GGML_F16, 64);
    b_pad(&b, 32);
    pb_put(&b, src_b, 256);
    expect_refused(&b, "overlap", "overlap");
    b_head(&b, 3, 2, 0);
    b_tensor(&b, "t", 1, ne1, GGML_F32, 0);
    b_tensor(&b, "t", 1, ne1, GGML_F32, 128);
    expect_refused(&b, "duplicate tensor name 't'", "dup tensor");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "0123456789012345678901234567890123456789012345678901234567890123", 1, ne1, GGML_F32, 0);
    expect_refused(&b, "exceeds the limit of 63", "long name");
    /* a well-formed hand-made file is accepted (the builder is right) */
    b_head(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 64);
    b_tensor(&b, "t", 1, ne1, GGML_F32, 0);
    b_pad(&b, 64);
    pb_put(&b, src_b, 128);
    char err[512];
    CHECK(!refused(b.b, b.n, err, sizeof err), "valid hand-made file refused: %s", err);
    free(b.b);
}

static void conversions(void) {
    /* every fp16 value widens and narrows back to itself (NaNs stay NaN) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = gguf_fp16_to_fp32((uint16_t)h);
        uint16_t back = gguf_fp32_to_fp16(x);
        bad += isnan(x) ? !((back & 0x7c00) == 0x7c00 && (back & 0x3ff)) : back != h;
        _Float16 ref;
        memcpy(&ref, &h, 2);
        if (!isnan(x)) bad += x != (float)ref;
    }
    CHECK(bad == 0, "%d fp16 values do not round-trip", bad);
    /* narrowing agrees with the compiler's _Float16 (round to nearest even) */
    Rng r;
    rng_seed(&r, 7);
    bad = 0;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rng_u64(&r);
        float x;
        memcpy(&x, &u, 4);
        if (isnan(x)) continue;
        _Float16 ref = (_Float16)x;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        bad += gguf_fp32_to_fp16(x) != rb;
    }
    const float edge[] = {65504.0f, 65519.99f, 65520.0f, 6.1e-5f, 5.96e-8f, 2.98e-8f, 2.99e-8f, -0.0f, 1e-10f};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        _Float16 ref = (_Float16)edge[i];
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        bad += gguf_fp32_to_fp16(edge[i]) != rb;
    }
    CHECK(bad == 0, "%d fp32->fp16 conversions differ from _Float16", bad);
    /* bf16: ties to even, NaN stays NaN */
    CHECK(gguf_fp32_to_bf16(1.0f) == 0x3f80, "bf16 1");
    float t1, t2;
    uint32_t u1 = 0x3f808000u, u2 = 0x3f818000u; /* exactly halfway: to even */
    memcpy(&t1, &u1, 4);
    memcpy(&t2, &u2, 4);
    CHECK(gguf_fp32_to_bf16(t1) == 0x3f80 && gguf_fp32_to_bf16(t2) == 0x3f82, "bf16 ties to even");
    CHECK(isnan(gguf_bf16_to_fp32(gguf_fp32_to_bf16(NAN))), "bf16 NaN");
    /* Q8_0 block: d = 127/127 = 1 -> the integers exactly */
    float q[32], back[32];
    uint8_t blk[34];
    for (int i = 0; i < 32; i++) q[i] = (float)(i * 8 - 127 + (i == 31 ? 6 : 0));
    gguf_quantize_q8_0(q, blk, 32);
    gguf_dequantize_q8_0(blk, back, 32);
    CHECK(blk[0] == 0x00 && blk[1] == 0x3c && !memcmp(q, back, sizeof q), "q8_0 exact block");
    float z[32] = {0};
    gguf_quantize_q8_0(z, blk, 32);
    gguf_dequantize_q8_0(blk, back, 32);
    CHECK(!memcmp(z, back, sizeof z), "q8_0 zero block");
}

/* `dapt inspect FILE.gguf` output: header line, keys with types, tensors
 * with ggml shapes and types; a damaged file exits 1 with the offset. */
static void inspect(const char *path, const char *dir) {
    FILE *out = tmpfile();
    char err[1024];
    CHECK(gguf_is_gguf_file(path) == 1, "magic sniffing");
    CHECK(gguf_describe(path, out, err, sizeof err) == 0, "inspect failed");
    char text[8192] = "";
    rewind(out);
    text[fread(text, 1, sizeof text - 1, out)] = 0;
    CHECK_MSG(text, "GGUF v3");
    CHECK_MSG(text, "3 tensors");
    CHECK_MSG(text, "\"llama.block_count\"                        UINT32  3\n");
    CHECK_MSG(text, "\"x.strs\"                                   ARRAY   [STRING x 3] \"a\", \"\", ");
    CHECK_MSG(text, "\"b.q8\"                             {32, 3}              Q8_0");
    CHECK_MSG(text, "\"x.f32\"                                    FLOAT32 0.25\n");
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    char cut[96];
    snprintf(cut, sizeof cut, "%s/cut.gguf", dir);
    write_bytes(cut, b, n / 2);
    free(b);
    CHECK(gguf_describe(cut, out, err, sizeof err) == 1, "inspect of a truncated file succeeded");
    CHECK_MSG(err, "cut.gguf: byte offset");
    remove(cut);
    CHECK(gguf_is_gguf_file(dir) == 0, "a directory is not GGUF");
    fclose(out);
}

/* issue 28: 100,000 metadata keys and 100,000 tensors (a 2 MB file of keys
 * took 23 s when each key was compared with every earlier one). All
 * different: accepted, and every key and tensor is found by name; one name
 * repeated: refused naming it, at the second one's byte offset. The time is
 * printed, not asserted. */
static void many_names(void) {
    enum { N = 100000 };
    char name[32], err[512];
    for (int dup = 0; dup < 3; dup++) {
        B b = {0};
        b_head(&b, 3, N, N);
        size_t dup_at = 0;
        for (int i = 0; i < N; i++) {
            if (dup == 1 && i == N - 1) dup_at = b.n;
            snprintf(name, sizeof name, "k.%d", dup == 1 && i == N - 1 ? 7 : i);
            b_kv_u32(&b, name, (uint32_t)i);
        }
        for (int i = 0; i < N; i++) {
            if (dup == 2 && i == N - 1) dup_at = b.n;
            snprintf(name, sizeof name, "t.%d", dup == 2 && i == N - 1 ? 7 : i);
            const uint64_t ne[1] = {8};
            b_tensor(&b, name, 1, ne, GGML_F32, (uint64_t)i * 32);
        }
        b_pad(&b, 32);
        size_t data_at = b.n;
        b.b = realloc(b.b, data_at + (size_t)N * 32);
        memset(b.b + data_at, 0, (size_t)N * 32);
        b.n = data_at + (size_t)N * 32;
        double t0 = now_s();
        err[0] = 0;
        GgufFile *f = gguf_parse(b.b, b.n, "t.gguf", err, sizeof err);
        printf("many names (%s): %.3f s\n", dup ? "one duplicate" : "all different", now_s() - t0);
        if (!dup) {
            CHECK(f != NULL, "%s", err);
            int found = 0;
            for (int i = 0; f && i < N; i += 997) {
                snprintf(name, sizeof name, "k.%d", i);
                const GgufKV *kv = gguf_find_kv(f, name);
                snprintf(name, sizeof name, "t.%d", i);
                const GgufTensor *t = gguf_find_tensor(f, name);
                found += kv && kv->v.u == (uint64_t)i && t && t->offset == (uint64_t)i * 32;
            }
            CHECK(found == (N + 996) / 997);
            CHECK(f && !gguf_find_kv(f, "k.100000") && !gguf_find_tensor(f, "t.-1"));
        } else {
            char want[64];
            CHECK(f == NULL);
            CHECK_MSG(err,
                      dup == 1 ? "duplicate metadata key 'k.7'" : "duplicate tensor name 't.7'");
            snprintf(want, sizeof want, "byte offset %zu:", dup_at);
            CHECK_MSG(err, want);
        }
        gguf_close(f);
        free(b.b);
    }
}

int main(void) {
    char dir[] = "/tmp/dapt_gguf_rd_XXXXXX", path[64];
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    snprintf(path, sizeof path, "%s/s.gguf", dir);
    round_trip(path);
    truncations(path);
    inspect(path, dir);
    corruptions();
    many_names();
    conversions();
    char err[256];
    GgufFile *f = gguf_open(dir, err, sizeof err);
    CHECK(f == NULL, "a directory opened");
    CHECK_MSG(err, "not a regular file");
    remove(path);
    rmdir(dir);
    return CHECK_DONE();
}
