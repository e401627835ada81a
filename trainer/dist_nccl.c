/* dist_nccl.c: the NCCL communicator of a data-parallel job (see
 * dist_nccl.h). Bootstrap: rank 0 calls ncclGetUniqueId, dist_broadcast
 * (MPI) gives the id to every rank, each calls ncclCommInitRank on its GPU.
 * Unverified on hardware: compiled in CI only.
 */
#include "trainer/dist_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct DistNccl {
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, world, device;
};

#define NCCL_TRY(call)                                                                             \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess)                                                                     \
            return snprintf(err, err_len, "%s:%d: %s: %s", __FILE__, __LINE__, #call,              \
                            ncclGetErrorString(r_)),                                               \
                   1;                                                                              \
    } while (0)
#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t r_ = (call);                                                                   \
        if (r_ != cudaSuccess)                                                                     \
            return snprintf(err, err_len, "%s:%d: %s: %s", __FILE__, __LINE__, #call,              \
                            cudaGetErrorString(r_)),                                               \
                   1;                                                                              \
    } while (0)

static int nccl_type(size_t elem_bytes, ncclDataType_t *t, char *err, size_t err_len) {
    if (elem_bytes == 4) *t = ncclFloat32;
    else if (elem_bytes == 2) *t = ncclBfloat16;
    else return snprintf(err, err_len, "dist_nccl: %zu-byte elements (expected 4 or 2)", elem_bytes), 1;
    return 0;
}

int dist_nccl_init(Dist *d, DistNccl **out, char *err, size_t err_len) {
    *out = NULL;
    int n_dev = 0;
    CUDA_TRY(cudaGetDeviceCount(&n_dev));
    if (n_dev < 1) return snprintf(err, err_len, "dist_nccl: no CUDA device"), 1;
    DistNccl *c = calloc(1, sizeof *c);
    if (!c) return snprintf(err, err_len, "out of memory"), 1;
    c->rank = dist_rank(d), c->world = dist_world(d), c->device = dist_local_rank(d) % n_dev;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int rc = 0;
    if (cudaSetDevice(c->device) != cudaSuccess)
        rc = (snprintf(err, err_len, "dist_nccl: cudaSetDevice(%d) failed", c->device), 1);
    if (!rc && c->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess)
        rc = (snprintf(err, err_len, "dist_nccl: ncclGetUniqueId failed"), 1);
    /* every rank reaches the broadcast, even one that failed above, so that
     * no peer waits for it; the failing rank then aborts the job */
    if (dist_broadcast(d, &id, sizeof id, 0, err, err_len)) rc = 1;
    if (!rc && cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking) != cudaSuccess)
        rc = (snprintf(err, err_len, "dist_nccl: cudaStreamCreate failed"), 1);
    if (!rc) {
        ncclResult_t r = ncclCommInitRank(&c->comm, c->world, id, c->rank);
        if (r != ncclSuccess)
            rc = (snprintf(err, err_len, "dist_nccl: ncclCommInitRank(rank %d of %d, GPU %d): %s",
                           c->rank, c->world, c->device, ncclGetErrorString(r)), 1);
    }
    if (rc) {
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
        return 1;
    }
    *out = c;
    return 0;
}

void dist_nccl_free(DistNccl *c) {
    if (!c) return;
    if (c->comm) ncclCommDestroy(c->comm);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

int dist_nccl_allreduce_sum(DistNccl *c, void *buf, size_t n, size_t elem_bytes, char *err,
                            size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    NCCL_TRY(ncclAllReduce(buf, buf, n, t, ncclSum, c->comm, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}

int dist_nccl_reduce_scatter_sum(DistNccl *c, void *buf, size_t n_per_rank, size_t elem_bytes,
                                 char *err, size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    char *mine = (char *)buf + (size_t)c->rank * n_per_rank * elem_bytes;
    NCCL_TRY(ncclReduceScatter(buf, mine, n_per_rank, t, ncclSum, c->comm, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}

int dist_nccl_allgather(DistNccl *c, void *buf, size_t n_per_rank, size_t elem_bytes, char *err,
                        size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    const char *mine = (const char *)buf + (size_t)c->rank * n_per_rank * elem_bytes;
    NCCL_TRY(ncclAllGather(mine, buf, n_per_rank, t, c->comm, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}
