/* vecmath.h: branch-free float exp / tanh / sigmoid that the compiler can
 * vectorise inside `#pragma omp simd` loops (libm's expf and tanhf are scalar
 * calls). Accuracy: vec_expf is within 2 ulp of expf over [-87, 88] (tested
 * in tests/c/test_vecmath.c); inputs below -87.3 give 0, above 88.7 give
 * +inf, NaN gives NaN.
 *
 * exp(x) = 2^k * exp(r), k = round(x / ln2), r = x - k ln2 in [-ln2/2, ln2/2]
 * (ln2 split in two parts so r is exact), exp(r) by a degree-6 Taylor/minimax
 * polynomial, 2^k assembled in the exponent bits.
 */
#ifndef DAPT_VECMATH_H
#define DAPT_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma omp declare simd notinbranch
static inline float vec_expf(float x) {
    const float lo = -87.33654f, hi = 88.72283f;
    float xc = x < lo ? lo : (x > hi ? hi : x);
    xc = xc == xc ? xc : 0.0f; /* NaN: compute exp(0), replaced below */
    float k = rintf(xc * 1.44269504088896341f);
    float r = xc - k * 0.693359375f; /* ln2 high part, exact in float */
    r = r - k * -2.12194440e-4f;     /* ln2 low part */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^k: k in [-126, 128]; split to stay in range for k = 128 and -126 */
    int32_t ki = (int32_t)k;
    int32_t k1 = ki / 2, k2 = ki - k1; /* both in [-63, 64]: biased exponents > 0 */
    uint32_t b1 = (uint32_t)(k1 + 127) << 23, b2 = (uint32_t)(k2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    float y = p * s1 * s2;
    y = x < lo ? 0.0f : y;
    y = x > hi ? INFINITY : y;
    return x != x ? x : y;
}

/* 1 / (1 + exp(-x)) */
#pragma omp declare simd notinbranch
static inline float vec_sigmoidf(float x) { return 1.0f / (1.0f + vec_expf(-x)); }

/* tanh(x) = 1 - 2 / (exp(2x) + 1); for |x| < 0.0625 the odd series, which
 * avoids cancellation near 0 */
#pragma omp declare simd notinbranch
static inline float vec_tanhf(float x) {
    float e = vec_expf(2.0f * x);
    float t = 1.0f - 2.0f / (e + 1.0f);
    float x2 = x * x;
    float s = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    return fabsf(x) < 0.0625f ? s : t;
}

#endif
