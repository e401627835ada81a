/* inspect.c: the description of a GGUF file that `dapt inspect FILE.gguf`
 * prints: the header, every metadata pair
 * (arrays shortened to their first elements) and the tensor table (name,
 * ggml shape, type, offset, bytes) of a GGUF file, read with the hardened
 * reader, so a damaged file gets the reader's message with its byte offset.
 *
 * Invariants: it prints only what the reader validated; strings are printed
 * with control bytes escaped, so a hostile file cannot drive the terminal.
 */
#include <stdio.h>
#include <string.h>

#include "tools/gguf/gguf.h"

int gguf_is_gguf_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    int ok = fread(magic, 1, 4, f) == 4 && !memcmp(magic, GGUF_MAGIC, 4);
    fclose(f);
    return ok;
}

/* s quoted, control bytes, quotes and backslashes escaped, at most max
 * source bytes ("..." after a cut), into buf (at least 4 * max + 8 bytes). */
static const char *escape(char *buf, const char *s, size_t max) {
    size_t n = 0, k = 0;
    buf[k++] = '"';
    for (; *s && n < max; s++, n++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') k += (size_t)sprintf(buf + k, "\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) k += (size_t)sprintf(buf + k, "\\x%02x", ch);
        else buf[k++] = (char)ch;
    }
    buf[k++] = '"';
    if (*s) k += (size_t)sprintf(buf + k, "...");
    buf[k] = 0;
    return buf;
}

static void put_escaped(FILE *out, const char *s, size_t max) {
    char buf[4 * 200 + 8];
    fputs(escape(buf, s, max < 200 ? max : 200), out);
}

static void put_elem(FILE *out, uint32_t type, const uint8_t *p) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } x;
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    memcpy(&x, p, sz[type]);
    switch (type) {
    case GGUF_UINT8: fprintf(out, "%u", x.u8); break;
    case GGUF_INT8: fprintf(out, "%d", x.i8); break;
    case GGUF_UINT16: fprintf(out, "%u", x.u16); break;
    case GGUF_INT16: fprintf(out, "%d", x.i16); break;
    case GGUF_UINT32: fprintf(out, "%u", x.u32); break;
    case GGUF_INT32: fprintf(out, "%d", x.i32); break;
    case GGUF_FLOAT32: fprintf(out, "%g", x.f32); break;
    case GGUF_BOOL: fprintf(out, "%s", x.u8 ? "true" : "false"); break;
    case GGUF_UINT64: fprintf(out, "%llu", (unsigned long long)x.u64); break;
    case GGUF_INT64: fprintf(out, "%lld", (long long)x.i64); break;
    case GGUF_FLOAT64: fprintf(out, "%g", x.f64); break;
    }
}

static void put_value(FILE *out, const GgufKV *kv) {
    switch (kv->type) {
    case GGUF_STRING: put_escaped(out, kv->str, 200); return;
    case GGUF_ARRAY: {
        static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        fprintf(out, "[%s x %llu] ", gguf_value_type_name(kv->arr_type), (unsigned long long)kv->arr_n);
        uint64_t show = kv->arr_n < 8 ? kv->arr_n : 8;
        for (uint64_t i = 0; i < show; i++) {
            if (i) fputs(", ", out);
            if (kv->arr_type == GGUF_STRING) put_escaped(out, kv->arr_str[i], 40);
            else put_elem(out, kv->arr_type, kv->arr_data + i * sz[kv->arr_type]);
        }
        if (show < kv->arr_n) fputs(", ...", out);
        return;
    }
    case GGUF_FLOAT32:
    case GGUF_FLOAT64: fprintf(out, "%.9g", kv->v.f); return;
    case GGUF_INT8:
    case GGUF_INT16:
    case GGUF_INT32:
    case GGUF_INT64: fprintf(out, "%lld", (long long)kv->v.i); return;
    case GGUF_BOOL: fputs(kv->v.u ? "true" : "false", out); return;
    }
    fprintf(out, "%llu", (unsigned long long)kv->v.u);
}

int gguf_describe(const char *path, FILE *out, char *err, size_t err_len) {
    GgufFile *f = gguf_open(path, err, err_len);
    if (!f) return 1;
    uint64_t total = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) total += gguf_tensor(f, i)->n_elems;
    fprintf(out, "%s: GGUF v%u, %llu bytes, %d metadata pairs, %d tensors (%llu elements), "
                 "alignment %u, data at byte %llu\n",
            path, gguf_version(f), (unsigned long long)gguf_file_size(f), gguf_n_kv(f),
            gguf_n_tensors(f), (unsigned long long)total, gguf_alignment(f),
            (unsigned long long)gguf_data_offset(f));
    fprintf(out, "\nmetadata:\n");
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const GgufKV *kv = gguf_kv(f, i);
        char buf[4 * 120 + 8];
        fprintf(out, "  %-42s %-7s ", escape(buf, kv->key, 120), gguf_value_type_name(kv->type));
        put_value(out, kv);
        fputc('\n', out);
    }
    fprintf(out, "\ntensors: name, ne (ggml order), type, offset in data, bytes\n");
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const GgufTensor *t = gguf_tensor(f, i);
        char shape[96];
        int n = snprintf(shape, sizeof shape, "{");
        for (uint32_t d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%llu", d ? ", " : "",
                          (unsigned long long)t->ne[d]);
        snprintf(shape + n, sizeof shape - (size_t)n, "}");
        const char *tn = "?";
        gguf_ggml_type_info(t->type, &tn, NULL, NULL);
        char buf[4 * 64 + 8];
        fprintf(out, "  %-34s %-20s %-6s %12llu %12llu\n", escape(buf, t->name, 64), shape, tn,
                (unsigned long long)t->offset, (unsigned long long)t->n_bytes);
    }
    gguf_close(f);
    return 0;
}
