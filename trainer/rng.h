/* rng.h: a small deterministic random number generator (splitmix64 seeding
 * xoshiro256**), for weight initialisation and tests. The stream depends on
 * the seed alone, never on threads or the platform. */
#ifndef DAPT_RNG_H
#define DAPT_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

static inline uint64_t rng_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void rng_seed(Rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = rng_splitmix64(&seed);
}

static inline uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5, result = ((x << 7) | (x >> 57)) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* uniform in [0, 1) with 53 bits */
static inline double rng_uniform(Rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

/* uniform integer in [0, n) (n > 0), without modulo bias worth caring about
 * for n far below 2^64 */
static inline uint64_t rng_below(Rng *r, uint64_t n) { return rng_u64(r) % n; }

/* The normal rng_normal makes of two consecutive rng_u64 outputs: callers
 * that draw the u64 stream first may compute the values in any order (in
 * parallel) and get the same numbers. */
static inline double rng_normal_of(uint64_t a, uint64_t b) {
    double u1 = (double)(a >> 11) * 0x1.0p-53, u2 = (double)(b >> 11) * 0x1.0p-53;
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* standard normal (Box-Muller, one value per call: two u64 draws) */
static inline double rng_normal(Rng *r) {
    uint64_t a = rng_u64(r);
    return rng_normal_of(a, rng_u64(r));
}

#endif
