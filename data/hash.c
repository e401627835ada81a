/* data/hash.c: FNV-1a + splitmix hashing and the Feistel permutation
 * declared in data/hash.h. Invariant: outputs depend only on the inputs
 * (no global state), so they are the same on every machine and rank. */
#include "data/hash.h"

#include <errno.h>
#include <stdio.h>

uint64_t hash_bytes(const void *data, size_t n_bytes, uint64_t seed) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n_bytes; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return hash_mix64(h);
}

int hash_file(const char *path, uint64_t *hash_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) {
            h ^= buf[i];
            h *= 0x100000001b3ULL;
        }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        errno = EIO;
        return -1;
    }
    *hash_out = hash_mix64(h);
    return 0;
}

uint64_t hash_perm(uint64_t key, uint64_t n, uint64_t i) {
    if (n <= 1) return 0;
    int bits = 2;
    while (bits < 64 && (1ULL << bits) < n) bits += 2;
    int half = bits / 2;
    uint64_t mask = (1ULL << half) - 1;
    uint64_t x = i;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (int round = 0; round < 4; round++) {
            uint64_t f = hash_mix64(key ^ (r * 0xd6e8feb86659fd93ULL) ^ ((uint64_t)round << 56)) & mask;
            uint64_t t = l ^ f;
            l = r;
            r = t;
        }
        x = (l << half) | r;
    } while (x >= n); /* cycle walking: x stays a bijection restricted to [0, n) */
    return x;
}
