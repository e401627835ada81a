/* fuzz_bpe.c: libFuzzer harness for the tokenizer.json reader and the BPE
 * encoder (not part of the build; clang only). An accepted file encodes a
 * few texts, and the ids decode; tests/c/test_bpe_fuzz.c is the
 * deterministic version that ctest runs, from the same seeds.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/tok/fuzz_bpe.c \
 *       tokenizer/bpe.c tokenizer/bpe_json.c tokenizer/corpus.c kernels/util.c \
 *       -lcjson -lpcre2-8 -lutf8proc -lz -lzstd -o /tmp/fuzz_bpe
 *   mkdir -p /tmp/fzb && /tmp/fuzz_bpe -max_total_time=300 -max_len=16384 /tmp/fzb tests/tok/corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/bpe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
