/* safetensors.h: reading and writing the safetensors format (Hugging Face):
 *
 *   u64 little-endian N | N bytes of JSON header | data section
 *
 * The header maps tensor names to {"dtype", "shape", "data_offsets": [begin,
 * end]} with offsets relative to the data section, plus an optional
 * "__metadata__" object of string values.
 *
 * Reader invariants: st_open validates every entry before returning (known
 * dtype, non-negative shape, begin <= end inside the data section, byte size
 * == numel * dtype size, no two tensors overlapping), so later reads never
 * go past the end of the file; data is read with pread, never mapped.
 * F32/F16/BF16 convert to fp32 on read; I32 reads as int32. The host is
 * assumed little-endian (as the format is).
 *
 * Writer invariants: the file appears under its final name only when it is
 * complete and fsynced (written as PATH.tmp, then renamed); the header is
 * padded with spaces to a multiple of 8 bytes so the data section is aligned.
 *
 * StSet: a model directory's weights, one file (model.safetensors) or
 * shards listed by model.safetensors.index.json ("weight_map": name ->
 * file); every name the index lists must be in its shard.
 */
#ifndef DAPT_SAFETENSORS_H
#define DAPT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ST_F32 = 0,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_F64,
    ST_I64,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_BOOL,
    ST_NUM_DTYPES
} StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; /* byte offsets into the data section */
} StTensor;

typedef struct StFile StFile;

/* "F32" -> ST_F32 etc.; -1 when unknown. */
int st_dtype_parse(const char *name);
const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);

/* Opens and validates a file. NULL with a message naming the file (and the
 * byte offset or tensor) on any problem. */
StFile *st_open(const char *path, char *err, size_t err_len);
void st_close(StFile *f);
const char *st_path(const StFile *f);
int st_num_tensors(const StFile *f);
const StTensor *st_tensor(const StFile *f, int i);
/* index of the tensor with this name, or -1 */
int st_find(const StFile *f, const char *name);
/* value of a __metadata__ key, or NULL */
const char *st_metadata(const StFile *f, const char *key);
/* Tensor i as fp32 (numel floats) from F32, F16 or BF16 data. */
int st_read_f32(StFile *f, int i, float *dst, char *err, size_t err_len);
/* Elements [first, first + count) of tensor i (flat, row-major) as fp32;
 * fails naming the tensor when the range is outside it. */
int st_read_f32_range(StFile *f, int i, uint64_t first, uint64_t count, float *dst, char *err,
                      size_t err_len);
/* Tensor i as int32 (numel values) from I32 data. */
int st_read_i32(StFile *f, int i, int32_t *dst, char *err, size_t err_len);

/* Half-precision conversions (exact; subnormals, inf and nan kept). */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t h);

typedef struct {
    const char *name;
    StDtype dtype; /* ST_F32 or ST_I32 */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* numel elements of dtype */
} StWriteTensor;

/* Writes the tensors (in the given order) and the metadata pairs
 * meta[2k] = key, meta[2k+1] = value, to PATH.tmp, fsyncs it and renames it
 * to PATH. Names must be unique. */
int st_write(const char *path, const StWriteTensor *tensors, int n, const char *const *meta,
             int n_meta, char *err, size_t err_len);

/* The streaming writer: the header is computed up front from the tensors'
 * names, dtypes and shapes (their `data` is ignored), then tensor i's bytes
 * are asked for in order, in pieces: fill(ctx, i, first, count, dst) writes
 * elements [first, first + count) of tensor i (flat, row-major, count <=
 * ST_STREAM_CHUNK) into dst. Host memory: the header and one chunk of
 * ST_STREAM_CHUNK elements, whatever the tensors' sizes. Same file, same
 * tmp + fsync + rename as st_write (st_write is this with a fill that
 * copies from `data`). A nonzero fill (message in err) abandons the file. */
#define ST_STREAM_CHUNK ((size_t)1 << 20)
typedef int (*StFill)(void *ctx, int i, uint64_t first, size_t count, void *dst, char *err,
                      size_t err_len);
int st_write_stream(const char *path, const StWriteTensor *tensors, int n, const char *const *meta,
                    int n_meta, StFill fill, void *ctx, char *err, size_t err_len);

/* ---- a directory's weights, single file or sharded ---- */
typedef struct StSet StSet;

/* Opens DIR/model.safetensors, or the shards named by
 * DIR/model.safetensors.index.json when there is no single file. */
StSet *st_set_open(const char *dir, char *err, size_t err_len);
/* A set of one file (e.g. optimizer.safetensors). */
StSet *st_set_open_file(const char *path, char *err, size_t err_len);
void st_set_close(StSet *s);
int st_set_num_files(const StSet *s);
StFile *st_set_file(StSet *s, int i);
/* Finds a tensor by name: returns 0 and sets *file, *index, or -1. */
int st_set_find(StSet *s, const char *name, StFile **file, int *index);

/* A whole (small) text file as a NUL-terminated string (malloc'd), at most
 * max_bytes; NULL with a message naming the file. A NUL byte in the file is
 * refused ("path:line: a NUL byte at byte offset N"): the parsers would
 * stop there and take the rest for missing. */
char *st_read_text(const char *path, size_t max_bytes, char *err, size_t err_len);

#endif
