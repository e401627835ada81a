/* fuzz_gguf.c: libFuzzer harness for the GGUF reader, its byte-level BPE
 * vocabulary reader (gguf_tokenizer_json) and the sentencepiece protobuf
 * reader (not part of the build; clang only). An input starting with the
 * GGUF magic goes to the GGUF reader, any other to the sentencepiece
 * reader.
 * An accepted GGUF is walked like tests/c/test_gguf_fuzz.c does, so a bad
 * offset or length that slipped through shows up as an ASan report, and its
 * vocabulary (if gpt2) is converted to tokenizer.json text.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/gguf/fuzz_gguf.c \
 *       tools/gguf/gguf_read.c tools/gguf/gguf_quant.c tools/gguf/spm.c \
 *       tools/gguf/vocab_import.c tokenizer/bpe.c tokenizer/bpe_json.c \
 *       tokenizer/corpus.c kernels/util.c \
 *       $(pkg-config --cflags --libs libcjson libpcre2-8 libutf8proc) -lz -lzstd -lm \
 *       -o /tmp/fuzz_gguf
 *   mkdir -p /tmp/fz && /tmp/fuzz_gguf -max_total_time=300 -max_len=8192 /tmp/fz tests/gguf/corpus
 */
#include <stdlib.h>
#include <string.h>

#include "tools/gguf/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    if (size < 4 || memcmp(data, GGUF_MAGIC, 4)) {
        SpmVocab v;
        if (!spm_vocab_parse(data, size, "fuzz", &v, err, sizeof err)) spm_vocab_free(&v);
        return 0;
    }
    GgufFile *f = gguf_parse(data, size, "fuzz", err, sizeof err);
    if (!f) return 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const GgufTensor *t = gguf_tensor(f, i);
        float *y = malloc(t->n_elems * sizeof *y + 1);
        if (y && (t->type == 0 || t->type == 1 || t->type == 8 || t->type == 30))
            gguf_convert_to_f32(t->type, t->data, y, t->n_elems);
        free(y);
    }
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const GgufKV *kv = gguf_kv(f, i);
        if (kv->type == GGUF_ARRAY && kv->arr_n && kv->arr_type != GGUF_STRING) {
            volatile uint8_t last = kv->arr_data[0];
            (void)last;
        }
    }
    char *json, *config;
    if (!gguf_tokenizer_json(f, &json, &config, err, sizeof err)) {
        free(json);
        free(config);
    }
    gguf_close(f);
    return 0;
}
