/* gguf.h: dapt's GGUF v3 library (llama.cpp's model file format): a writer,
 * a hardened reader, the element conversions (F16, BF16, Q8_0), and the
 * model export/import built on them. The format is described in
 * docs/gguf.md; in short, little-endian:
 *
 *   "GGUF" u32 version=3 u64 n_tensors u64 n_kv
 *   n_kv x   { string key, u32 value_type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   zero padding to general.alignment (default 32)
 *   tensor data, each tensor at data_start + offset, offsets aligned
 *   (string = u64 length + bytes, no NUL; array = u32 elem type, u64 count, elems)
 *
 * ggml shapes: ne[0] is the fastest-varying dimension, so a row-major
 * [out][in] weight has ne = {in, out}.
 *
 * Invariants: library functions never print or exit; they return 0 on
 * success and fill `err` (with the file and byte offset for a bad file)
 * otherwise. The reader never reads outside the bytes it was given: every
 * length, count, shape and offset is checked against the file size before
 * use. Files are written to PATH.tmp, fsynced and renamed, so a PATH that
 * exists is a whole file.
 */
#ifndef DAPT_GGUF_H
#define DAPT_GGUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "trainer/model.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_VERSION 3
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4

/* Metadata value types (gguf_type in ggml). */
typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4,
    GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_UINT64 = 10, GGUF_INT64 = 11, GGUF_FLOAT64 = 12, GGUF_N_VALUE_TYPES = 13
} GgufValueType;

/* The ggml tensor types dapt writes; the reader knows every type's block
 * size (gguf_ggml_type_info) so it can size and name the others. */
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q8_0 = 8, GGML_BF16 = 30 };
/* general.file_type values (llama_ftype). */
enum { GGUF_FTYPE_F32 = 0, GGUF_FTYPE_F16 = 1, GGUF_FTYPE_Q8_0 = 7, GGUF_FTYPE_BF16 = 32 };
/* Q8_0: 32 int8 values sharing one fp16 scale d (x = d * q): 34 bytes. */
#define GGUF_Q8_0_BLOCK 32
#define GGUF_Q8_0_BYTES 34

const char *gguf_value_type_name(uint32_t type);
/* Name, elements per block and bytes per block of a ggml type; 0 when the
 * type is unknown (name then NULL). */
int gguf_ggml_type_info(uint32_t type, const char **name, uint32_t *block_elems,
                        uint32_t *block_bytes);

/* ---------------- element conversions (gguf_quant.c) ---------------- */

/* IEEE binary16 / bfloat16 from fp32, round to nearest even (as ggml);
 * NaN stays NaN, overflow becomes Inf (fp16). The reverse is exact. */
uint16_t gguf_fp32_to_fp16(float x);
float gguf_fp16_to_fp32(uint16_t h);
uint16_t gguf_fp32_to_bf16(float x);
float gguf_bf16_to_fp32(uint16_t h);
/* n values (n a multiple of 32) to n/32 Q8_0 blocks, as ggml's reference
 * quantize_row_q8_0: d = max|x| / 127, q = round(x / d). */
void gguf_quantize_q8_0(const float *x, uint8_t *dst, size_t n);
void gguf_dequantize_q8_0(const uint8_t *src, float *y, size_t n);
/* fp32 -> n elements of type (F32, F16, BF16, Q8_0) into dst; 0 on success. */
int gguf_convert_from_f32(uint32_t type, const float *x, void *dst, size_t n);
/* n elements of type (F32, F16, BF16, Q8_0) -> fp32; 0 on success. */
int gguf_convert_to_f32(uint32_t type, const void *src, float *y, size_t n);

/* ---------------- writer (gguf_write.c) ---------------- */

typedef struct GgufWriter GgufWriter;

GgufWriter *gguf_writer_new(void);
void gguf_writer_free(GgufWriter *w);
/* Metadata, in the order added. A failure (out of memory, a duplicate key)
 * is remembered and reported by gguf_writer_write. */
void gguf_w_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_w_i32(GgufWriter *w, const char *key, int32_t v);
void gguf_w_f32(GgufWriter *w, const char *key, float v);
void gguf_w_bool(GgufWriter *w, const char *key, int v);
void gguf_w_str(GgufWriter *w, const char *key, const char *v);
void gguf_w_arr_str(GgufWriter *w, const char *key, const char *const *v, size_t n);
void gguf_w_arr_f32(GgufWriter *w, const char *key, const float *v, size_t n);
void gguf_w_arr_i32(GgufWriter *w, const char *key, const int32_t *v, size_t n);
/* A tensor of ggml type `type` (F32, F16, BF16 or Q8_0) whose fp32 source
 * `src` (ne[0] fastest) is converted while the file is written; src must
 * stay valid until gguf_writer_write returns. */
void gguf_w_tensor(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne, uint32_t type,
                   const float *src);
/* The same with the fp32 data produced when the tensor is written:
 * fill(ctx, dst) writes the tensor's ne[0] * ne[1] * ... floats into dst
 * (a buffer the writer holds for this tensor only; nonzero: failed, message
 * in err, and the file is not written). ctx must stay valid until
 * gguf_writer_write returns. Host memory: one tensor at a time. */
typedef int (*GgufFill)(void *ctx, float *dst, char *err, size_t err_len);
void gguf_w_tensor_fill(GgufWriter *w, const char *name, int n_dims, const uint64_t *ne,
                        uint32_t type, GgufFill fill, void *ctx);
/* Writes the file (general.alignment taken as 32: the writer adds that key
 * itself first) via PATH.tmp + fsync + rename. */
int gguf_writer_write(GgufWriter *w, const char *path, char *err, size_t err_len);

/* ---------------- reader (gguf_read.c) ---------------- */

typedef struct {
    char *key;            /* NUL-terminated copy */
    uint32_t type;        /* GgufValueType */
    uint64_t offset;      /* byte offset of the key/value pair in the file */
    union {
        uint64_t u;       /* UINT8..UINT64, BOOL */
        int64_t i;        /* INT8..INT64 */
        double f;         /* FLOAT32, FLOAT64 */
    } v;
    char *str;            /* STRING: NUL-terminated copy (str_len bytes before it) */
    uint64_t str_len;
    uint32_t arr_type;    /* ARRAY: element type (never ARRAY) */
    uint64_t arr_n;
    const uint8_t *arr_data; /* ARRAY of numbers/bools: raw little-endian elements */
    char **arr_str;       /* ARRAY of strings: arr_n NUL-terminated copies */
    uint64_t *arr_str_len; /* and their lengths (a string may hold NUL bytes) */
} GgufKV;

typedef struct {
    char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint32_t type;              /* ggml type */
    uint64_t offset;            /* relative to the data section */
    uint64_t n_elems, n_bytes;
    const void *data;           /* within the file's bytes */
} GgufTensor;

typedef struct GgufFile GgufFile;

/* Opens and validates a GGUF file (memory-mapped, read only). */
GgufFile *gguf_open(const char *path, char *err, size_t err_len);
/* Validates a GGUF image in memory (not copied: buf must outlive the
 * GgufFile). `where` names it in messages. */
GgufFile *gguf_parse(const void *buf, size_t len, const char *where, char *err, size_t err_len);
void gguf_close(GgufFile *f);

uint32_t gguf_version(const GgufFile *f);
uint32_t gguf_alignment(const GgufFile *f);
uint64_t gguf_data_offset(const GgufFile *f);
uint64_t gguf_file_size(const GgufFile *f);
int gguf_n_kv(const GgufFile *f);
const GgufKV *gguf_kv(const GgufFile *f, int i);
const GgufKV *gguf_find_kv(const GgufFile *f, const char *key);
int gguf_n_tensors(const GgufFile *f);
const GgufTensor *gguf_tensor(const GgufFile *f, int i);
const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);
/* Typed metadata getters: 0 and the value; 1 with a message naming the key
 * and the expected and found types (or that it is missing). */
int gguf_get_u32(const GgufFile *f, const char *key, uint32_t *v, char *err, size_t err_len);
int gguf_get_f32(const GgufFile *f, const char *key, float *v, char *err, size_t err_len);
int gguf_get_str(const GgufFile *f, const char *key, const char **v, char *err, size_t err_len);

/* ---------------- sentencepiece vocabulary (spm.c) ---------------- */

typedef struct {
    int n;          /* pieces */
    char **pieces;  /* NUL-terminated UTF-8 */
    float *scores;
    int32_t *types; /* NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 UNUSED=5 BYTE=6 (as GGUF) */
    int unk_id, bos_id, eos_id, pad_id; /* -1 when absent */
    int add_dummy_prefix;
    int model_type; /* UNIGRAM=1 BPE=2 WORD=3 CHAR=4 */
} SpmVocab;

/* Reads the pieces and special ids of a sentencepiece tokenizer.model
 * (a ModelProto protobuf). */
int spm_vocab_load(const char *path, SpmVocab *v, char *err, size_t err_len);
/* Same from bytes in memory (`where` names them in messages). */
int spm_vocab_parse(const uint8_t *buf, size_t len, const char *where, SpmVocab *v, char *err,
                    size_t err_len);
void spm_vocab_free(SpmVocab *v);

/* ---------------- tokenizer metadata (vocab_export.c, vocab_import.c) ---------------- */

struct Tokenizer;
/* tokenizer.ggml.* for t, padded to vocab_size (the model's embedding
 * rows): a sentencepiece model as tokenizer.ggml.model "llama", a
 * byte-level BPE as "gpt2" with its merges and tokenizer.ggml.pre. Refuses
 * a tokenizer with more tokens than vocab_size and a BPE that llama.cpp
 * would tokenize differently (see vocab_export.c). */
int gguf_write_tokenizer(GgufWriter *w, const struct Tokenizer *t, int vocab_size, char *err,
                         size_t err_len);
/* The "gpt2" (byte-level BPE) tokenizer of a GGUF file as the malloc'd
 * text of an HF tokenizer.json and tokenizer_config.json; both NULL (and
 * 0) when tokenizer.ggml.model is absent or another model (a sentencepiece
 * "llama" vocabulary is not converted back). Every key it reads is
 * checked; a bad one is refused naming the key and its byte offset. */
int gguf_tokenizer_json(const GgufFile *f, char **tokenizer_json, char **tokenizer_config,
                        char *err, size_t err_len);

/* ---------------- model export / import (export.c, import.c) ---------------- */

typedef struct {
    uint32_t dtype;          /* GGML_F32, GGML_F16, GGML_BF16 or GGML_Q8_0 */
    const char *tokenizer;   /* as tokenizer_load takes it: an HF model directory, a
                              * tokenizer.json or a sentencepiece .model; NULL: none
                              * (refused: llama.cpp needs the vocabulary) */
    const char *name;        /* general.name; NULL: "dapt" */
    int force;               /* overwrite an existing output file */
} GgufExportOptions;

struct Model;
/* Writes m as a GGUF file llama.cpp loads (arch llama or gpt2, dense or
 * Mixtral-style MoE). Refuses, naming the part, what llama.cpp cannot
 * represent (e.g. MoE with dense layers in between or without top-k
 * renormalisation). */
int gguf_export_model(const struct Model *m, const char *path, const GgufExportOptions *o,
                      char *err, size_t err_len);
/* The same for the model directory DIR (config.json and model.safetensors
 * or HF shards: an HF model or a dapt checkpoint) without loading it: each
 * tensor is read from the safetensors, converted (permuted, quantized) and
 * written before the next is read, so host memory holds one tensor (an MoE
 * layer's stack of experts: all E of them) plus its permutation copy, never
 * the model. The parameter count goes to *n_params (NULL: not wanted). */
int gguf_export_dir(const char *dir, const char *path, const GgufExportOptions *o,
                    size_t *n_params, char *err, size_t err_len);
/* llama.cpp's architecture for a config: "gpt2"; "qwen3" for a llama with
 * q/k head norms; else "llama" (general.architecture and the key prefix). */
const char *gguf_arch_name(const ModelConfig *c);
/* llama3 rope scaling as llama.cpp's rope_freqs.weight: head_dim / 2
 * factors, each the plain inverse frequency over the scaled one (llama.cpp
 * divides the frequency by it); 1 when out of memory. */
int gguf_rope_freq_factors(const ModelConfig *c, float *factors);
/* GGUF name of a dapt (HF) tensor name for the architecture, and the
 * number of heads its rows are permuted over (0: none; the caller leaves
 * qwen3's unpermuted); 0 when known. */
int gguf_tensor_name(int arch, const char *hf_name, int n_head, int n_kv_head, char *out,
                     size_t out_len, int *permute_heads);
/* GGUF name of one Mixtral expert matrix, model.layers.N.block_sparse_moe.
 * experts.E.w{1,2,3}.weight: blk.N.ffn_{gate,down,up}_exps.weight, the 3-D
 * stack of all experts' (ne = {in, out, n_experts}, expert E at slice E,
 * returned in *expert); 1 when hf_name is not an expert matrix. */
int gguf_expert_tensor_name(const char *hf_name, char *out, size_t out_len, int *expert);
/* Row permutation between HF rotate_half order and ggml's adjacent pairs
 * for one [rows, cols] matrix (cols = 1 for a bias) of n_heads heads:
 * inverse = 0 HF -> GGUF, 1 GGUF -> HF. */
void gguf_permute_rows(const float *src, float *dst, int rows, int cols, int n_heads, int inverse);

/* Reads an F32/F16/BF16 llama (dense or MoE: llama.expert_count > 0) or
 * gpt2 GGUF into a new Model (CPU backend);
 * quantized tensors are refused with the type named. */
struct Model *gguf_import_model(const char *path, char *err, size_t err_len);
/* gguf_import_model + a checkpoint directory OUT_DIR (config.json,
 * model.safetensors) written as OUT_DIR.tmp and renamed. */
int gguf_import_to_dir(const char *path, const char *out_dir, int force, char *err, size_t err_len);

/* ---------------- description (inspect.c) ---------------- */

/* 1 when PATH starts with the GGUF magic (for `dapt inspect` dispatch). */
int gguf_is_gguf_file(const char *path);
/* Header, metadata and tensor table of the file at path, printed to out
 * (`dapt inspect FILE.gguf`); 1 with a message on a bad file. */
int gguf_describe(const char *path, FILE *out, char *err, size_t err_len);

#endif
