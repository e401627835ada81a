/* spm.c: reads the vocabulary of a sentencepiece tokenizer.model for the
 * GGUF tokenizer metadata, with a minimal protobuf decoder (varints,
 * length-delimited fields, fixed32/fixed64; groups are refused).
 *
 * The fields used (sentencepiece_model.proto):
 *   ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
 *   SentencePiece   1: string piece   2: float score   3: Type type (default NORMAL = 1)
 *   TrainerSpec     3: model_type (default UNIGRAM = 1)  40: unk_id (0)  41: bos_id (1)
 *                   42: eos_id (2)  43: pad_id (-1)
 *   NormalizerSpec  3: add_dummy_prefix (default true)
 * Every other field is skipped by its wire type.
 *
 * Invariants: bounds are checked before every read (a length never runs
 * past its enclosing message); on failure nothing is left allocated; the
 * special ids are checked against the number of pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "tools/gguf/gguf.h"

typedef struct {
    const uint8_t *p, *end;
    const uint8_t *base;
    const char *where;
    char *err;
    size_t err_len;
} Pb;

/* -1 spelled out rather than err_set's: the readers leave their outputs unset
 * on this path, and gcc's flow analysis must see that it is a failure. */
static int pb_fail(Pb *b, const char *what) {
    err_set(b->err, b->err_len, "%s: byte offset %ld: %s (not a sentencepiece model?)", b->where,
            (long)(b->p - b->base), what);
    return -1;
}

static int pb_varint(Pb *b, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return pb_fail(b, "truncated varint");
        uint8_t c = *b->p++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return pb_fail(b, "varint longer than 10 bytes");
}

/* Reads a field key; *wire is the wire type. */
static int pb_key(Pb *b, uint32_t *field, uint32_t *wire) {
    uint64_t k;
    if (pb_varint(b, &k)) return 1;
    *field = (uint32_t)(k >> 3);
    *wire = (uint32_t)(k & 7);
    return 0;
}

/* A length-delimited field's bytes as a sub-reader. */
static int pb_bytes(Pb *b, Pb *sub) {
    uint64_t n;
    if (pb_varint(b, &n)) return 1;
    if (n > (uint64_t)(b->end - b->p)) return pb_fail(b, "length runs past the end of its message");
    *sub = *b;
    sub->end = b->p + n;
    b->p += n;
    return 0;
}

static int pb_skip(Pb *b, uint32_t wire) {
    uint64_t v;
    Pb sub;
    switch (wire) {
    case 0: return pb_varint(b, &v);
    case 1:
    case 5: {
        size_t n = wire == 1 ? 8 : 4;
        if ((size_t)(b->end - b->p) < n) return pb_fail(b, "truncated fixed-size field");
        b->p += n;
        return 0;
    }
    case 2: return pb_bytes(b, &sub);
    }
    return pb_fail(b, "unsupported protobuf wire type");
}

static int parse_piece_fields(Pb *b, SpmVocab *v) {
    int i = v->n;
    v->types[i] = 1;
    v->scores[i] = 0.0f;
    while (b->p < b->end) {
        uint32_t field, wire;
        if (pb_key(b, &field, &wire)) return 1;
        if (field == 1 && wire == 2) {
            Pb s;
            if (pb_bytes(b, &s)) return 1;
            free(v->pieces[i]);
            size_t n = (size_t)(s.end - s.p);
            if (!(v->pieces[i] = malloc(n + 1))) return pb_fail(b, "out of memory");
            memcpy(v->pieces[i], s.p, n);
            v->pieces[i][n] = 0;
        } else if (field == 2 && wire == 5) {
            if (b->end - b->p < 4) return pb_fail(b, "truncated score");
            memcpy(&v->scores[i], b->p, 4);
            b->p += 4;
        } else if (field == 3 && wire == 0) {
            uint64_t t;
            if (pb_varint(b, &t)) return 1;
            if (t < 1 || t > 6) return pb_fail(b, "piece type is not 1..6");
            v->types[i] = (int32_t)t;
        } else if (pb_skip(b, wire)) {
            return 1;
        }
    }
    if (!v->pieces[i]) return pb_fail(b, "a piece without its text");
    v->n++;
    return 0;
}

/* One SentencePiece message; a failed one leaves nothing allocated. */
static int parse_piece(Pb *b, SpmVocab *v) {
    if (!parse_piece_fields(b, v)) return 0;
    free(v->pieces[v->n]);
    v->pieces[v->n] = NULL;
    return 1;
}

/* Scans a sub-message for varint fields; each wanted field number's value
 * goes to out[k] (as int, sign-extended from 64 bits) when present. */
static int parse_varints(Pb *b, const uint32_t *fields, int *out, int n_fields) {
    while (b->p < b->end) {
        uint32_t field, wire;
        if (pb_key(b, &field, &wire)) return 1;
        int k = -1;
        for (int j = 0; j < n_fields; j++)
            if (fields[j] == field && wire == 0) k = j;
        if (k < 0) {
            if (pb_skip(b, wire)) return 1;
            continue;
        }
        uint64_t x;
        if (pb_varint(b, &x)) return 1;
        out[k] = (int)(int64_t)x;
    }
    return 0;
}

void spm_vocab_free(SpmVocab *v) {
    if (v->pieces)
        for (int i = 0; i < v->n; i++) free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

int spm_vocab_parse(const uint8_t *buf, size_t len, const char *where, SpmVocab *v, char *err,
                    size_t err_len) {
    memset(v, 0, sizeof *v);
    Pb b = {buf, buf + len, buf, where, err, err_len};
    /* a piece takes at least 2 bytes (key + length): bound the arrays */
    size_t cap = len / 2 + 1;
    v->pieces = calloc(cap, sizeof *v->pieces);
    v->scores = calloc(cap, sizeof *v->scores);
    v->types = calloc(cap, sizeof *v->types);
    if (!v->pieces || !v->scores || !v->types) {
        spm_vocab_free(v);
        return err_set(err, err_len, "%s: out of memory", where);
    }
    int trainer[5] = {1, 0, 1, 2, -1}; /* model_type, unk, bos, eos, pad defaults */
    int normalizer[1] = {1};          /* add_dummy_prefix */
    static const uint32_t trainer_fields[5] = {3, 40, 41, 42, 43};
    static const uint32_t normalizer_fields[1] = {3};
    while (b.p < b.end) {
        uint32_t field, wire;
        Pb sub;
        int rc = pb_key(&b, &field, &wire);
        if (!rc && wire == 2 && field >= 1 && field <= 3) {
            rc = pb_bytes(&b, &sub);
            if (!rc && field == 1) rc = parse_piece(&sub, v);
            if (!rc && field == 2) rc = parse_varints(&sub, trainer_fields, trainer, 5);
            if (!rc && field == 3) rc = parse_varints(&sub, normalizer_fields, normalizer, 1);
        } else if (!rc) {
            rc = pb_skip(&b, wire);
        }
        if (rc) {
            spm_vocab_free(v);
            return 1;
        }
    }
    if (v->n == 0) {
        spm_vocab_free(v);
        return err_set(err, err_len, "%s: no vocabulary pieces (not a sentencepiece model?)",
                       where);
    }
    v->model_type = trainer[0];
    v->unk_id = trainer[1];
    v->bos_id = trainer[2];
    v->eos_id = trainer[3];
    v->pad_id = trainer[4];
    v->add_dummy_prefix = normalizer[0] != 0;
    int *ids[4] = {&v->unk_id, &v->bos_id, &v->eos_id, &v->pad_id};
    static const char *names[4] = {"unk_id", "bos_id", "eos_id", "pad_id"};
    for (int k = 0; k < 4; k++) {
        if (*ids[k] < 0) *ids[k] = -1;
        if (*ids[k] >= v->n) {
            err_set(err, err_len, "%s: trainer_spec.%s = %d but the model has %d pieces", where,
                    names[k], *ids[k], v->n);
            spm_vocab_free(v);
            return 1;
        }
    }
    return 0;
}

int spm_vocab_load(const char *path, SpmVocab *v, char *err, size_t err_len) {
    memset(v, 0, sizeof *v);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, err_len, "%s: cannot open", path);
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (len == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            uint8_t *q = cap > ((size_t)1 << 31) ? NULL : realloc(buf, cap);
            if (!q) {
                free(buf);
                fclose(f);
                return err_set(err, err_len, "%s: too large or out of memory", path);
            }
            buf = q;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? err_set(err, err_len, "%s: read error", path)
                 : spm_vocab_parse(buf, len, path, v, err, err_len);
    free(buf);
    return rc;
}
