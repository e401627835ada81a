/* fuzz_shard.c: libFuzzer harness for the .tok.zst reader (data/shard.c:
 * the header frame, the seek table and footer, every zstd frame).
 * The header's check value is recomputed over the mutated header before
 * the file is opened (when the input is long enough to hold one), so the
 * fuzzer reaches the header's fields instead of stopping at the check.
 * An opened shard is scanned whole: every frame decoded, its token count
 * and ids checked by the reader; the scan's counts must then agree with
 * the header (shard_scan refuses otherwise, with a message). */
#include "data/hash.h"
#include "data/shard.h"
#include "tests/fuzz/fuzz_util.h"

enum { HDR_AT = 8, HDR_CHECKED = 184 }; /* payload offset; check value after 184 bytes */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *b = malloc(size + 1);
    if (!b) return 0;
    memcpy(b, data, size);
    if (size >= HDR_AT + HDR_CHECKED + 8) {
        uint64_t h = hash_bytes(b + HDR_AT, HDR_CHECKED, 0);
        for (int i = 0; i < 8; i++)
            b[HDR_AT + HDR_CHECKED + i] = (uint8_t)(h >> (8 * i));
    }
    const char *path = fuzz_path(b, size);
    free(b);
    if (!path) return 0;
    char err[SHARD_ERR_MAX] = "";
    Shard *s;
    if (shard_open(&s, path, err, sizeof err)) {
        if (!err[0]) fuzz_fail("shard_open", "refused without a message");
        return 0;
    }
    ShardScan sc;
    uint32_t first[64];
    err[0] = 0;
    if (shard_scan(s, &sc, first, 64, err, sizeof err) && !err[0])
        fuzz_fail("shard_scan", "refused without a message");
    shard_close(s);
    return 0;
}
