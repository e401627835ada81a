/* dist_nccl.h: collectives on GPU buffers over NCCL, one communicator per
 * job, bootstrapped over the process group of trainer/dist.h (rank 0 makes
 * the unique id, dist_broadcast sends it; each rank takes GPU local_rank).
 * Built only with the CUDA backend (DAPT_HAVE_CUDA); NOT YET RUN ON A GPU
 * (docs/gpu-log.md) and not yet called by `dapt train`, which refuses more
 * than one rank on a CUDA device until it is.
 *
 * Invariants: buffers are device memory of the calling rank's GPU; sums are
 * in the buffer's type (fp32 or bf16); every call is enqueued on the
 * communicator's stream and synchronised before returning, so the caller
 * may use the result at once; a NCCL or CUDA failure returns a message
 * naming the call (the caller aborts the job: dist_abort).
 */
#ifndef DAPT_DIST_NCCL_H
#define DAPT_DIST_NCCL_H

#include <stddef.h>

#include "trainer/dist.h"

typedef struct DistNccl DistNccl;

/* Picks GPU local_rank % device count and joins the job's communicator. */
int dist_nccl_init(Dist *d, DistNccl **out, char *err, size_t err_len);
void dist_nccl_free(DistNccl *c);

/* elem_bytes: 4 (fp32) or 2 (bf16). */
int dist_nccl_allreduce_sum(DistNccl *c, void *buf, size_t n, size_t elem_bytes, char *err,
                            size_t err_len);
/* In place, equal pieces of n_per_rank elements: rank r's piece at
 * r * n_per_rank (pad the flat buffer to world * n_per_rank). */
int dist_nccl_reduce_scatter_sum(DistNccl *c, void *buf, size_t n_per_rank, size_t elem_bytes,
                                 char *err, size_t err_len);
int dist_nccl_allgather(DistNccl *c, void *buf, size_t n_per_rank, size_t elem_bytes, char *err,
                        size_t err_len);

#endif
