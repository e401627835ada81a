/* fuzz_bpe_json.c: libFuzzer harness for the tokenizer.json reader
 * (tokenizer/bpe_json.c) and the BPE encoder (built with -DDAPT_FUZZ=ON;
 * tools/fuzz runs it). An accepted file encodes a few texts, and the ids
 * decode; tests/c/test_bpe_fuzz.c is the deterministic version that ctest
 * runs, from the same seeds (tests/tok/corpus). */
#include "tests/fuzz/fuzz_util.h"
#include "tokenizer/bpe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const texts[] = {"Hello world, it's 2024!",
                                        "  \t\n日本語 مرحبا 👍🏽",
                                        "<|endoftext|><|im_start|>[MASK]", "=========="};
    char err[512];
    BpeModel *m;
    if (bpe_parse(&m, (const char *)data, size, "fuzz", err, sizeof err)) return 0;
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    for (size_t t = 0; t < sizeof texts / sizeof *texts; t++) {
        if (bpe_encode(m, texts[t], strlen(texts[t]), &ids, &n, &cap, err, sizeof err)) continue;
        char *text;
        if (!bpe_decode(m, ids, n, 0, &text, NULL, err, sizeof err)) free(text);
    }
    free(ids);
    bpe_free(m);
    return 0;
}
