/* merge.h: model merging (`dapt merge`, docs/merge.md): several models of
 * one architecture and vocabulary into one HF model directory, tensor by
 * tensor.
 *
 * Methods, per tensor, with m_k the inputs, b the base, tau_k = m_k - b the
 * task vectors and w_k the per-model weights:
 *   linear           sum_k w_k m_k / sum_k w_k (no base)
 *   task_arithmetic  b + lambda * sum_k w_k tau_k
 *   ties             each tau_k trimmed to its round(density_k * n) largest
 *                    magnitudes; sign g = sign(sum_k w_k tau_k); delta = the
 *                    w-weighted mean of the trimmed tau_k that are nonzero
 *                    with sign g (Yadav et al. 2023's disjoint mean when all
 *                    w_k = 1); b + lambda * delta
 *   dare             each entry of tau_k kept with probability density_k and
 *                    rescaled by 1/density_k (Yu et al. 2024), then combined
 *                    as task_arithmetic (combine linear) or ties without the
 *                    trim (combine ties)
 *   della            entries of tau_k ranked by magnitude over the tensor
 *                    (rank r = 0 for the smallest, ties by index): kept with
 *                    probability q_r = density_k - eps/2 + eps * r/(n-1) and
 *                    rescaled by 1/q_r (Deep et al. 2024's MagPrune, drop
 *                    probability 1 - q_r), then combined like dare
 *   moe              the dense llama models become the experts of a
 *                    Mixtral-shaped MoE (Branch-Train-MiX): layer l's
 *                    mlp.{gate,up,down}_proj of model k are
 *                    block_sparse_moe.experts.k.{w1,w3,w2}; every other
 *                    tensor is the w-weighted average of the models (shared
 *                    average) or the base's (shared base); each layer's
 *                    router block_sparse_moe.gate.weight (E, C) is
 *                    N(0, 0.02): entry j = 0.02 * rng_normal_of(splitmix64
 *                    outputs 2j, 2j+1 of the stream at seed ^ fnv1a64(NAME))
 *
 * Random drops are counter-based: entry j of tensor NAME of model k draws
 *   u_j = (splitmix64 output j of the stream whose state starts at
 *          seed ^ fnv1a64(NAME) ^ ((k + 1) * 0xD1B54A32D192ED03)) >> 11 * 2^-53
 * (rng_splitmix64 of trainer/rng.h) and is kept when u_j < q_j: the result
 * depends on the seed, the tensor's name and the model's position only,
 * never on tensor order or the number of threads.
 *
 * Inputs are directories (GGUF files are imported by the command, trainer/
 * cli/merge.c). Invariants: every input has the reference's (base, else first model's)
 * config shape keys, tensor names and shapes, and the same tokenizer files
 * where both have them; otherwise nothing is written and the message names
 * the key, tensor or file. Host memory: (inputs + 2) float tensors of the
 * largest tensor's size, plus (della) two 8-byte rank entries per element.
 */
#ifndef DAPT_MERGE_H
#define DAPT_MERGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MERGE_LINEAR = 0,
    MERGE_TASK_ARITHMETIC,
    MERGE_TIES,
    MERGE_DARE,
    MERGE_DELLA,
    MERGE_MOE
} MergeMethod;

/* moe: where the tensors outside the FFNs come from */
typedef enum { MERGE_SHARED_AVERAGE = 0, MERGE_SHARED_BASE } MergeShared;

/* how dare and della combine the sparsified task vectors */
typedef enum { MERGE_COMBINE_LINEAR = 0, MERGE_COMBINE_TIES } MergeCombine;

#define MERGE_MAX_MODELS 32
#define MERGE_MAX_LAYERS 1024

typedef struct {
    MergeMethod method;
    MergeCombine combine;
    const char *base; /* required by every method but linear (which refuses one) */
    int n_models;
    const char *models[MERGE_MAX_MODELS];
    double weights[MERGE_MAX_MODELS]; /* w_k */
    double density[MERGE_MAX_MODELS]; /* ties, dare, della: in (0, 1] */
    /* per layer: the tensors of layer l (model.layers.l.*, transformer.h.l.*)
     * take model k's layer_weights[k][l] and layer_density[k][l] instead of
     * weights[k], density[k] where given (NULL: not given); n_layer_* must
     * then be the models' number of layers */
    const double *layer_weights[MERGE_MAX_MODELS];
    int n_layer_weights[MERGE_MAX_MODELS];
    const double *layer_density[MERGE_MAX_MODELS];
    int n_layer_density[MERGE_MAX_MODELS];
    double lambda;      /* scale of the merged task vector */
    double epsilon;     /* della: window of keep probabilities */
    uint64_t seed;      /* dare, della, moe (router) */
    int top_k;          /* moe: experts per token, 1..n_models */
    MergeShared shared; /* moe */
    int force;          /* overwrite OUT's model files */
    int progress;       /* a line on stderr about once a second */
} MergeOptions;

/* MERGE.toml (docs/merge.md): [merge] method, base, out, lambda, seed,
 * combine, epsilon, density (the default of every model); [[model]] path,
 * weight, density, once per input. o's paths point into the struct: keep it
 * in place (no copies). [[model]] layer_weights, layer_densities: a list of
 * one value per layer (MergeOptions.layer_weights, layer_density). */
typedef struct {
    MergeOptions o;
    char out[4096], base[4096];
    char models[MERGE_MAX_MODELS][4096];
    double layer_weights[MERGE_MAX_MODELS][MERGE_MAX_LAYERS];
    double layer_density[MERGE_MAX_MODELS][MERGE_MAX_LAYERS];
    double density;
    int combine_set;
} MergeConfig;

/* Parses the text of PATH; nonzero with "PATH:LINE: KEY: what was wrong". */
int merge_config_parse(const char *path, const char *text, MergeConfig *c, char *err,
                       size_t err_len);
int merge_config_load(const char *path, MergeConfig *c, char *err, size_t err_len);

/* "linear" -> MERGE_LINEAR etc.; -1 when unknown. */
int merge_method_parse(const char *name);
const char *merge_method_name(MergeMethod m);

/* Merges into out_dir (created when missing): model.safetensors (F32),
 * config.json (moe: the reference's as Mixtral, hf_save_config) and the
 * tokenizer files of the reference, copied. Fills
 * *n_params (elements written). Nonzero with a message on any refusal or
 * I/O error. */
int merge_run(const MergeOptions *o, const char *out_dir, uint64_t *n_params, char *err,
              size_t err_len);

#endif
