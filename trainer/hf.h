/* hf.h: Hugging Face interop: config.json <-> ModelConfig, and model
 * weights from an HF directory (model.safetensors or sharded) into a Model.
 *
 * Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM (all as dapt's `llama`; Qwen2 sets qkv_bias, Qwen3
 * qk_norm), MixtralForCausalLM (`llama` with n_experts = num_local_experts,
 * top_k = num_experts_per_tok, every layer MoE, renormalised top-k) and
 * GPT2LMHeadModel (`gpt2`); head_dim and rope_scaling (linear, llama3) for
 * every llama family. An MoE model Mixtral cannot express (mixed dense/MoE
 * layers, no renormalisation) is written as Mixtral plus
 * dapt_moe_layer_start/_step, dapt_norm_topk_prob keys that dapt reads back
 * (transformers then reports missing experts). What dapt cannot compute
 * exactly (another rope_scaling type, an active sliding window beyond what
 * max_seq_len can absorb, an o_proj bias, another activation, ...) is
 * refused with the config key named, never silently approximated.
 *
 * Weights: every parameter of the Model must be in the files with its HF
 * shape (GPT-2 Conv1D weights are [in, out] on disk and transposed on the
 * way in and out); known non-parameter buffers are skipped; any other extra
 * tensor, or a missing one, is an error naming it. F32, F16 and BF16 files
 * load exactly (as fp32; a bf16 table rounds them). Neither direction holds
 * the whole model in host memory: tensors move in chunks.
 */
#ifndef DAPT_HF_H
#define DAPT_HF_H

#include <stddef.h>

#include "kernels/ops.h"
#include "trainer/model.h"
#include "trainer/safetensors.h"

/* Reads DIR/config.json into *cfg (checked with model_config_check). */
int hf_load_config(const char *dir, ModelConfig *cfg, char *err, size_t err_len);
/* Parses config.json text (`where` names it in messages). */
int hf_parse_config(const char *json, const char *where, ModelConfig *cfg, char *err,
                    size_t err_len);
/* config.json text for cfg (malloc'd; caller frees), loadable by
 * transformers: architectures, model_type, torch_dtype float32, the size
 * keys, head_dim when needed and rope_scaling. NULL when out of memory or
 * when a float of cfg is inf or nan (JSON has neither). */
char *hf_config_json(const ModelConfig *cfg);
/* Writes DIR/config.json (via a temporary file, fsynced, renamed). */
int hf_save_config(const char *dir, const ModelConfig *cfg, char *err, size_t err_len);

/* Where weights come from when they are written: dst gets parameters
 * [offset, offset + count) (host fp32, m's in-memory layout). A save asks
 * for each tensor in order, in chunks of at most ST_STREAM_CHUNK elements
 * (a GPT-2 Conv1D weight whole), so a source may gather them from other
 * processes (trainer/train_ckpt.c under ZeRO). Nonzero: failed, message in
 * err. */
typedef int (*HfParamSource)(void *ctx, size_t offset, size_t count, float *dst, char *err,
                             size_t err_len);
/* Where weights go when they are read: src holds parameters [offset,
 * offset + count). */
typedef int (*HfParamSink)(void *ctx, size_t offset, size_t count, const float *src, char *err,
                           size_t err_len);

/* Checks, without reading any data, that DIR's safetensors (single or
 * sharded) hold every parameter of m with its HF shape and nothing else but
 * known buffers. */
int hf_check_weights(const char *dir, const Model *m, char *err, size_t err_len);
/* Reads every parameter of m from DIR into m (model_set_param_range),
 * tensor by tensor in chunks: host memory is one chunk (4 MiB), plus twice
 * the largest GPT-2 Conv1D weight. Names and shapes are all checked before
 * the first write into m; a read error after that (I/O) leaves m partly
 * loaded. */
int hf_load_weights(const char *dir, Model *m, char *err, size_t err_len);
/* hf_load_config + model_create + hf_load_weights; NULL with a message. */
Model *hf_load_model(const char *dir, const Ops *ops, char *err, size_t err_len);
/* Writes m's parameters (F32, HF layout) as DIR/model.safetensors, or as
 * shards model-0000i-of-0000n.safetensors of at most max_shard_bytes each
 * (a larger tensor gets a shard of its own) plus
 * model.safetensors.index.json when they do not fit in one; 0 means
 * HF_SHARD_BYTES. A stale single file or index of the other kind is removed.
 * Streams: host memory is one chunk (4 MiB) and the header, plus the
 * largest GPT-2 Conv1D weight. */
#define HF_SHARD_BYTES ((size_t)5 << 30)
int hf_save_weights(const char *dir, const Model *m, size_t max_shard_bytes, char *err,
                    size_t err_len);
/* hf_save_weights of the parameters `src` produces instead of m's own (NULL:
 * m's, model_get_param_range). */
int hf_save_weights_from(const char *dir, const Model *m, HfParamSource src, void *ctx,
                         size_t max_shard_bytes, char *err, size_t err_len);

/* Lower level, shared with ckpt.c. `prefix` is prepended to every HF tensor
 * name ("" for weights, "exp_avg." for Adam moments).
 * Every parameter tensor `prefix + name` is in s with its HF shape. */
int hf_check_params(StSet *s, const Model *m, const char *prefix, char *err, size_t err_len);
/* Reads every parameter tensor `prefix + name` from s into sink, tensor by
 * tensor in table order, in chunks of at most ST_STREAM_CHUNK elements. */
int hf_read_params_to(StSet *s, const Model *m, const char *prefix, HfParamSink sink, void *ctx,
                      char *err, size_t err_len);
/* Tensor i of m's table alone from s into dst (its numel floats, in-memory
 * layout; a GPT-2 Conv1D weight transposed through a buffer of its size). */
int hf_read_tensor(StSet *s, const Model *m, int i, float *dst, char *err, size_t err_len);
/* The same into a host buffer dst (model_num_params floats, m's layout). */
int hf_read_params(StSet *s, const Model *m, const char *prefix, float *dst, char *err,
                   size_t err_len);
/* Writes n_bufs (at most 4) host parameter buffers (model_num_params fp32
 * each, m's layout), buffer b under names prefixes[b] + name, in HF layout
 * (GPT-2 Conv1D weights transposed), plus `extra` tensors, as one F32 file
 * with __metadata__ format=pt (st_write_stream: tmp + rename). */
int hf_write_params(const char *path, const Model *m, const float *const *bufs,
                    const char *const *prefixes, int n_bufs, const StWriteTensor *extra,
                    int n_extra, char *err, size_t err_len);

/* dst = dir + "/" + name; 1 (and dst empty) when it does not fit in n. */
int hf_path(char *dst, size_t n, const char *dir, const char *name);
/* Writes text to PATH via PATH.tmp + fsync + rename (shared with ckpt.c). */
int hf_write_file_atomic(const char *path, const char *text, char *err, size_t err_len);

#endif
