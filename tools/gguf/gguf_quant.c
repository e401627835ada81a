/* gguf_quant.c: the element types of GGUF tensors: the table of ggml types
 * (block size and bytes, for sizing any tensor), and the conversions dapt
 * does itself: fp32 <-> F16, BF16 and Q8_0.
 *
 * Invariants: the conversions round exactly as ggml's reference code does
 * (nearest-even for F16/BF16, NaN kept a NaN; Q8_0 scale d = max|x|/127
 * stored as fp16, q = round(x / d) half away from zero); widening to fp32
 * is exact. They touch exactly n elements (n/32 blocks for Q8_0).
 */
#include <math.h>
#include <string.h>

#include "tools/gguf/gguf.h"

typedef struct {
    uint32_t id;
    const char *name;
    uint32_t block_elems, block_bytes;
} TypeInfo;

/* ggml's type table (ggml.h / ggml.c type_traits), the types a GGUF file
 * can name today; ids 4, 5 and 31-33 are retired in ggml. */
static const TypeInfo types[] = {
    {0, "F32", 1, 4},          {1, "F16", 1, 2},          {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},       {6, "Q5_0", 32, 22},       {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},       {9, "Q8_1", 32, 36},       {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},    {12, "Q4_K", 256, 144},    {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},    {15, "Q8_K", 256, 292},    {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},   {18, "IQ3_XXS", 256, 98},  {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},    {21, "IQ3_S", 256, 110},   {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136},  {24, "I8", 1, 1},          {25, "I16", 1, 2},
    {26, "I32", 1, 4},         {27, "I64", 1, 8},         {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},    {30, "BF16", 1, 2},        {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},    {39, "MXFP4", 32, 17},
};

int gguf_ggml_type_info(uint32_t type, const char **name, uint32_t *block_elems,
                        uint32_t *block_bytes) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].id == type) {
            if (name) *name = types[i].name;
            if (block_elems) *block_elems = types[i].block_elems;
            if (block_bytes) *block_bytes = types[i].block_bytes;
            return 1;
        }
    if (name) *name = NULL;
    return 0;
}

uint16_t gguf_fp32_to_fp16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* Inf, or NaN kept quiet and non-zero */
        return sign | 0x7c00 | (a > 0x7f800000u ? 0x0200 : 0);
    if (a >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {                      /* below 2^-14: fp16 subnormal or zero */
        float ax;
        memcpy(&ax, &a, 4);
        /* ax * 2^24 is exact; lrintf rounds to nearest even; 1024 is the
         * encoding of the smallest normal, so the carry is right too */
        return sign | (uint16_t)lrintf(ax * 16777216.0f);
    }
    uint32_t e = a - (112u << 23); /* rebias exponent 127 -> 15 */
    return sign | (uint16_t)((e + 0x0fffu + ((e >> 13) & 1u)) >> 13);
}

float gguf_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (e == 0) {
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    u = e == 31 ? sign | 0x7f800000u | (mant << 13) : sign | ((e + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t gguf_fp32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float gguf_bf16_to_fp32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void gguf_quantize_q8_0(const float *x, uint8_t *dst, size_t n) {
    for (size_t b = 0; b < n / GGUF_Q8_0_BLOCK; b++, x += GGUF_Q8_0_BLOCK, dst += GGUF_Q8_0_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < GGUF_Q8_0_BLOCK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = gguf_fp32_to_fp16(d);
        dst[0] = (uint8_t)(dh & 0xff);
        dst[1] = (uint8_t)(dh >> 8);
        for (int j = 0; j < GGUF_Q8_0_BLOCK; j++) dst[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

void gguf_dequantize_q8_0(const uint8_t *src, float *y, size_t n) {
    for (size_t b = 0; b < n / GGUF_Q8_0_BLOCK; b++, y += GGUF_Q8_0_BLOCK, src += GGUF_Q8_0_BYTES) {
        float d = gguf_fp16_to_fp32((uint16_t)(src[0] | (src[1] << 8)));
        for (int j = 0; j < GGUF_Q8_0_BLOCK; j++) y[j] = d * (float)(int8_t)src[2 + j];
    }
}

int gguf_convert_from_f32(uint32_t type, const float *x, void *dst, size_t n) {
    uint8_t *d = dst;
    switch (type) {
    case GGML_F32:
        memcpy(dst, x, n * sizeof *x);
        return 0;
    case GGML_F16:
    case GGML_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = type == GGML_F16 ? gguf_fp32_to_fp16(x[i]) : gguf_fp32_to_bf16(x[i]);
            d[2 * i] = (uint8_t)(h & 0xff);
            d[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return 0;
    case GGML_Q8_0:
        if (n % GGUF_Q8_0_BLOCK) return 1;
        gguf_quantize_q8_0(x, d, n);
        return 0;
    }
    return 1;
}

int gguf_convert_to_f32(uint32_t type, const void *src, float *y, size_t n) {
    const uint8_t *s = src;
    switch (type) {
    case GGML_F32:
        memcpy(y, src, n * sizeof *y);
        return 0;
    case GGML_F16:
    case GGML_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
            y[i] = type == GGML_F16 ? gguf_fp16_to_fp32(h) : gguf_bf16_to_fp32(h);
        }
        return 0;
    case GGML_Q8_0:
        if (n % GGUF_Q8_0_BLOCK) return 1;
        gguf_dequantize_q8_0(s, y, n);
        return 0;
    }
    return 1;
}
