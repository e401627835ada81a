/* fuzz_gguf.c: libFuzzer harness for the GGUF reader, its byte-level BPE
 * vocabulary reader (gguf_tokenizer_json), the sentencepiece protobuf
 * reader and the model import (built with -DDAPT_FUZZ=ON; tools/fuzz runs
 * it). An input starting with the GGUF magic goes to the GGUF reader, any
 * other to the sentencepiece reader.
 * An accepted GGUF is walked like tests/c/test_gguf_fuzz.c does, so a bad
 * offset or length that slipped through shows up as an ASan report, its
 * vocabulary (if gpt2) is converted to tokenizer.json text, and it is
 * imported as a model (gguf_import_model: which must refuse, or build a
 * model whose every weight came from the file, before allocating more than
 * the file's tensors hold). */
#include "tests/fuzz/fuzz_util.h"
#include "tools/gguf/gguf.h"

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
    const char *path = fuzz_path(data, size);
    Model *m = path ? gguf_import_model(path, err, sizeof err) : NULL;
    model_free(m);
    return 0;
}
