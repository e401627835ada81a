/* comm.c: see comm.h. The plain collectives (all-reduce, reduce-scatter,
 * all-gather of a whole buffer, waited for) have one implementation per
 * transport behind CommVt; the overlapped ones exist over NCCL only. */
#include "trainer/comm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/dist_nccl.h"
#include "trainer/moe.h"

typedef struct {
    int (*allreduce_sum)(Comm *c, void *buf, size_t n, char *err, size_t err_len);
    int (*reduce_scatter_sum)(Comm *c, void *buf, const size_t *pieces, char *err, size_t err_len);
    int (*allgather)(Comm *c, void *buf, const size_t *pieces, char *err, size_t err_len);
} CommVt;

struct Comm {
    const CommVt *vt;
    Dist *d;
    DistNccl *nccl; /* NULL: the host group on host buffers */
    Model *m;
    int zero;    /* ZeRO stage 1..3 (0: off): sharded AdamW; 1, 2: the
                  * parameters all-gathered after it; 1: the gradients
                  * reduce-scattered after the backward; 2, 3: by the model
                  * during the backward, unit by unit */
    int overlap; /* NCCL with dist.bucket_mb > 0, stages 0 and 1 */
    double bucket_mb;
    size_t elem_bytes; /* the backend's act type size */
    size_t bucket_elems;
    size_t n_par;
    size_t shard_off, shard_n;
    size_t *pieces; /* (world) rank r's shard length */
    int step;       /* of the last comm_grad_sync_begin, for messages */
};

static int host_allreduce(Comm *c, void *buf, size_t n, char *err, size_t err_len) {
    return dist_allreduce(c->d, buf, n, DIST_F32, DIST_SUM, err, err_len);
}
static int host_reduce_scatter(Comm *c, void *buf, const size_t *pieces, char *err,
                               size_t err_len) {
    return dist_reduce_scatter(c->d, buf, pieces, DIST_F32, err, err_len);
}
static int host_allgather(Comm *c, void *buf, const size_t *pieces, char *err, size_t err_len) {
    return dist_allgather(c->d, buf, pieces, DIST_F32, err, err_len);
}
static const CommVt host_vt = {host_allreduce, host_reduce_scatter, host_allgather};

static int nccl_allreduce(Comm *c, void *buf, size_t n, char *err, size_t err_len) {
    return dist_nccl_allreduce_sum(c->nccl, buf, n, c->elem_bytes, err, err_len);
}
static int nccl_reduce_scatter(Comm *c, void *buf, const size_t *pieces, char *err,
                               size_t err_len) {
    return dist_nccl_reduce_scatter_sum(c->nccl, buf, pieces, c->elem_bytes, err, err_len);
}
static int nccl_allgather(Comm *c, void *buf, const size_t *pieces, char *err, size_t err_len) {
    return dist_nccl_allgather(c->nccl, buf, pieces, c->elem_bytes, err, err_len);
}
static const CommVt nccl_vt = {nccl_allreduce, nccl_reduce_scatter, nccl_allgather};

int comm_open(Dist *d, const Config *cfg, Comm **out, char *err, size_t err_len) {
    const int rank = dist_rank(d), world = dist_world(d);
    /* device buffers: NCCL; it must pick the GPU (local rank) before the
     * CUDA backend starts on the current device */
    const int on_gpu = strcmp(cfg->run.device, "cpu") != 0;
    const int want_nccl = !strcmp(cfg->dist.backend, "nccl") || (on_gpu && world > 1);
    *out = NULL;
    if (want_nccl && !on_gpu)
        return err_set(err, err_len,
                       "dist.backend = \"nccl\" needs run.device = \"cuda\" (run.device is "
                       "\"%s\")",
                       cfg->run.device);
    Comm *c = calloc(1, sizeof *c);
    if (!c || !(c->pieces = malloc(sizeof(size_t) * world))) {
        free(c);
        return err_set(err, err_len, "out of memory");
    }
    c->d = d;
    c->vt = &host_vt;
    if (want_nccl) {
        char why[1536];
        if (dist_nccl_init(d, cfg->dist.timeout, cfg->dist.nccl_grouped, &c->nccl, why,
                           sizeof why)) {
            if (world > 1)
                err_set(err, err_len,
                        "rank %d of %d: %s (data parallelism on run.device = \"cuda\" runs over "
                        "NCCL)",
                        rank, world, why);
            else
                err_set(err, err_len, "dist.backend = \"nccl\": %s", why);
            comm_free(c);
            return 1;
        }
        c->vt = &nccl_vt;
    }
    /* ZeRO shards the optimizer state (and from stage 2 the gradients,
     * from 3 the parameters) over the ranks (at world size 1, NCCL with one
     * GPU, the shard is everything) */
    c->zero = world > 1 || c->nccl ? cfg->dist.zero : 0;
    /* dist.bucket_mb > 0: collectives overlapped with compute (NCCL only;
     * stages 2 and 3 sum the gradients unit by unit in the backward) */
    c->overlap = c->nccl && cfg->dist.bucket_mb > 0 && c->zero < 2;
    c->bucket_mb = cfg->dist.bucket_mb;
    *out = c;
    return 0;
}

static int checked(Comm *c, int rc, int step, const char *err);

/* The model's collectives for stages 2 and 3 (model.h ModelShardComm); a
 * NCCL failure ends the job there and then (comm_fail), as the step's own
 * collectives do, whether a training or an evaluation pass met it. */
static int shard_allgather(void *ctx, void *buf, const size_t *counts, char *err,
                           size_t err_len) {
    Comm *c = ctx;
    return checked(c, c->vt->allgather(c, buf, counts, err, err_len), c->step, err);
}
static int shard_reduce_scatter(void *ctx, void *buf, const size_t *counts, char *err,
                                size_t err_len) {
    Comm *c = ctx;
    return checked(c, c->vt->reduce_scatter_sum(c, buf, counts, err, err_len), c->step, err);
}
/* stage 3's prefetch: over NCCL on the communicator's own stream after the
 * compute stream's queued kernels (dist_nccl_gather_begin, one chunk),
 * waited for under the watchdog. On the host group the gather is done at
 * begin (MPI's is blocking). */
static int shard_gather_begin(void *ctx, void *buf, const size_t *counts, char *err,
                              size_t err_len) {
    Comm *c = ctx;
    if (!c->nccl) return c->vt->allgather(c, buf, counts, err, err_len);
    size_t n = 0;
    for (int r = 0; r < dist_world(c->d); r++) n += counts[r];
    return checked(c,
                   dist_nccl_gather_begin(c->nccl, buf, n, c->elem_bytes, n ? n : 1, counts,
                                          ops_cuda_stream(), err, err_len),
                   c->step, err);
}
static int shard_gather_wait(void *ctx, char *err, size_t err_len) {
    Comm *c = ctx;
    if (!c->nccl) return 0;
    return checked(c, dist_nccl_gather_finish(c->nccl, err, err_len), c->step, err);
}

int comm_zero_world(const Comm *c) {
    return c->zero ? dist_world(c->d) : 0;
}

int comm_bind(Comm *c, Model *m, const Ops *ops, char *err, size_t err_len) {
    const int rank = dist_rank(c->d), world = dist_world(c->d);
    c->m = m;
    c->elem_bytes = ops->act_bytes;
    if (c->nccl) dist_nccl_set_stream(c->nccl, ops_cuda_stream());
    /* MoE global-batch load balancing sums expert counts over the ranks,
     * non-blocking (trainer/moe.h): over NCCL when the run has it */
    if (c->nccl)
        model_moe_set_allreduce(m, dist_nccl_moe_sum_begin, dist_nccl_moe_sum_finish, c->nccl);
    else
        model_moe_set_allreduce(m, dist_moe_sum_begin, dist_moe_sum_finish, c->d);
    /* ZeRO-1: this rank's shard [shard_off, shard_off + shard_n) of the flat
     * parameter buffer */
    c->n_par = model_num_params(m);
    c->shard_off = 0, c->shard_n = c->n_par;
    for (int r = 0; r < world; r++) {
        size_t o;
        dist_shard(c->n_par, world, r, &o, &c->pieces[r]);
        if (r == rank) c->shard_off = o, c->shard_n = c->pieces[r];
    }
    if (c->zero &&
        (model_optimizer_offset(m) != c->shard_off || model_optimizer_count(m) != c->shard_n))
        return err_set(err, err_len,
                       "internal error: optimizer shard differs from the ZeRO layout");
    if (c->zero >= 2 && model_zero_stage(m) != c->zero)
        return err_set(err, err_len, "internal error: the model is not made for ZeRO-%d",
                       c->zero);
    if (c->zero >= 2)
        model_set_shard_comm(m, &(ModelShardComm){shard_allgather, shard_reduce_scatter,
                                                   shard_gather_begin, shard_gather_wait, c});
    /* the gradient sums overlap the last backward (with MPI on host
     * buffers they stay after it) */
    c->bucket_elems = (size_t)(c->bucket_mb * 1048576.0 / ops->act_bytes);
    if (c->bucket_elems < 1) c->bucket_elems = 1;
    /* ZeRO-1: every forward pass (training and evaluation) waits for the
     * parameters' all-gather block by block, when one is pending */
    if (c->overlap && c->zero) model_set_params_needed(m, dist_nccl_gather_needed, c->nccl);
    return 0;
}

void comm_print(const Comm *c, int rows_per_rank) {
    const Ops *ops = model_ops(c->m);
    int world = dist_world(c->d);
    static const char *const zeros[] = {
        "", ", ZeRO-1 optimizer state", ", ZeRO-2 optimizer state and gradients",
        ", ZeRO-3 optimizer state, gradients and parameters"};
    const char *zero = zeros[c->zero];
    if (world > 1 && !c->nccl)
        printf("  data parallel: %d ranks (%s), %d sequences per rank per step%s\n", world,
               dist_backend(c->d), rows_per_rank, zero);
    if (c->nccl)
        printf("  data parallel: %d ranks (%s + nccl %s, GPU %d on rank 0), %d sequences per rank "
               "per step%s\n",
               world, dist_backend(c->d), dist_nccl_version(c->nccl), dist_nccl_device(c->nccl),
               rows_per_rank, zero);
    if (c->overlap)
        printf("  gradient sums overlapped with the backward%s: buckets of %zu elements (%.3g "
               "MiB)\n",
               c->zero ? ", the parameters' all-gather with the next forward" : "", c->bucket_elems,
               c->bucket_mb);
    else if (c->bucket_mb > 0 && c->zero >= 2)
        printf("  dist.bucket_mb: ignored, ZeRO-%d sums the gradients block by block in the "
               "backward\n",
               c->zero);
    else if (c->bucket_mb > 0 && world > 1)
        printf(
            "  dist.bucket_mb: ignored, the MPI backend sums the gradients after the backward\n");
    if (world > 1 || c->nccl || model_offload(c->m))
        printf("  optimizer state: %zu bytes on rank 0 (%s for %zu of %zu parameters)%s\n",
               model_optimizer_bytes(c->m),
               ops->act_bytes != sizeof(float) ? "Adam m, v and fp32 master" : "Adam m, v",
               model_optimizer_count(c->m), c->n_par,
               model_offload(c->m) ? ", offloaded: in host memory, AdamW on the CPU" : "");
    if (c->zero >= 2)
        printf("  parameters: %zu bytes, gradients: %zu bytes on rank 0 (%s, with the windows "
               "of one block)\n",
               model_param_bytes(c->m), model_grad_bytes(c->m),
               c->zero >= 3 ? "both sharded" : "whole parameters, sharded gradients");
}

void comm_fail(Comm *c, int step, const char *err) {
    if (!c->nccl) return;
    char msg[2600];
    snprintf(msg, sizeof msg, "dapt train: step %d: %s", step, err);
    dist_abort(c->d, 1, msg);
}

/* rc, after comm_fail on a nonzero rc */
static int checked(Comm *c, int rc, int step, const char *err) {
    if (rc) comm_fail(c, step, err);
    return rc;
}

int comm_grad_sync_begin(Comm *c, int last, int step, char *err, size_t err_len) {
    c->step = step;
    const int arm = c->overlap && last;
    if (arm &&
        checked(c,
                dist_nccl_buckets_begin(c->nccl, model_grads_buffer(c->m), c->n_par, c->elem_bytes,
                                        c->bucket_elems, c->zero ? c->pieces : NULL,
                                        ops_cuda_stream(), err, err_len),
                step, err))
        return 1;
    model_set_grad_ready(c->m, arm ? dist_nccl_buckets_ready : NULL, c->nccl);
    return 0;
}

int comm_grad_sync_finish(Comm *c, int step, char *err, size_t err_len) {
    int rc;
    model_set_grad_ready(c->m, NULL, NULL);
    if (c->zero >= 2) return 0; /* summed by the backward, unit by unit */
    if (c->overlap)
        rc = dist_nccl_buckets_finish(c->nccl, err, err_len);
    else if (c->zero)
        rc = c->vt->reduce_scatter_sum(c, model_grads_buffer(c->m), c->pieces, err, err_len);
    else
        rc = c->vt->allreduce_sum(c, model_grads_buffer(c->m), c->n_par, err, err_len);
    return checked(c, rc, step, err);
}

double comm_grad_sumsq(Comm *c) {
    return c->zero ? model_grad_sumsq_range(c->m, c->shard_off, c->shard_n) : 0.0;
}

float comm_grad_norm(Comm *c, double sumsq_all) {
    return c->zero ? (float)sqrt(sumsq_all) : model_grad_norm(c->m);
}

void comm_optimizer_step(Comm *c, const AdamWConfig *opt, float lr, int t, float grad_norm) {
    if (c->zero)
        model_adamw_step_range(c->m, opt, lr, t, c->shard_off, c->shard_n,
                               model_clip_scale(opt, grad_norm));
    else
        model_adamw_step(c->m, opt, lr, t);
}

int comm_params_gather(Comm *c, int step, char *err, size_t err_len) {
    int rc;
    if (!c->zero || c->zero >= 3) return 0; /* stage 3: gathered by each forward */
    /* overlapped: the next forward waits for each block's part */
    if (c->overlap)
        rc = dist_nccl_gather_begin(c->nccl, model_params_buffer(c->m), c->n_par, c->elem_bytes,
                                    c->bucket_elems, c->pieces, ops_cuda_stream(), err, err_len);
    else
        rc = c->vt->allgather(c, model_params_buffer(c->m), c->pieces, err, err_len);
    return checked(c, rc, step, err);
}

int comm_gather_wait(Comm *c, int step, char *err, size_t err_len) {
    if (!(c->overlap && c->zero)) return 0;
    return checked(c, dist_nccl_gather_finish(c->nccl, err, err_len), step, err);
}

const size_t *comm_pieces(const Comm *c) {
    return c->pieces;
}

void comm_drain(Comm *c) {
    if (!c || !(c->overlap && c->zero)) return;
    char gerr[512], msg[600];
    if (dist_nccl_gather_finish(c->nccl, gerr, sizeof gerr)) {
        snprintf(msg, sizeof msg, "dapt train: at the end: %s", gerr);
        dist_abort(c->d, 1, msg);
    }
}

void comm_free(Comm *c) {
    if (!c) return;
    dist_nccl_free(c->nccl);
    free(c->pieces);
    free(c);
}
