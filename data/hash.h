/* data/hash.h: the small hashes and keyed permutations the data pipeline
 * uses. They are part of the on-disk and on-the-wire contract (a document's
 * train/val assignment, a tokenizer's hash in shard headers, the sample order
 * of a mixture stream), so they must never change for a given input: the
 * values are fixed by tests (tests/c/test_data_mix.c). */
#ifndef DAPT_DATA_HASH_H
#define DAPT_DATA_HASH_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64 finaliser: a bijective 64-bit mixer. */
static inline uint64_t hash_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* FNV-1a over the bytes, then hash_mix64 so that every output bit depends
 * on every input bit. `seed` starts the state (0 for the plain hash). */
uint64_t hash_bytes(const void *data, size_t n_bytes, uint64_t seed);

/* hash_bytes of a whole file; 0 on success, -1 (errno set) when unreadable. */
int hash_file(const char *path, uint64_t *hash_out);

/* Combine keys into one: hash_key(a, b) = mix(a ^ mix(b)). */
static inline uint64_t hash_key(uint64_t a, uint64_t b) {
    return hash_mix64(a ^ hash_mix64(b + 0x632be59bd9b4e019ULL));
}

/* A keyed bijection of [0, n): a 4-round Feistel network on the smallest
 * even number of bits covering n, with cycle walking back into [0, n).
 * O(1) expected per call; requires i < n, n >= 1. */
uint64_t hash_perm(uint64_t key, uint64_t n, uint64_t i);

#endif
