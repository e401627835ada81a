/* dist.h: the process group of a data-parallel run: rank, world size, local
 * rank, and the collectives the trainer needs (allreduce, broadcast,
 * allgather, reduce-scatter, barrier, abort) on host buffers.
 *
 * Backends: "single" (one process; every collective is a no-op or a copy, no
 * MPI call is ever made, so a plain `dapt train` works on a machine without
 * an MPI runtime) and "mpi" (built when CMake finds MPI; chosen at run time
 * only when the environment says the process was started by a launcher:
 * OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK). GPU buffers go through NCCL
 * (trainer/dist_nccl.h), bootstrapped over this group.
 *
 * Invariants: every rank calls the same collectives in the same order with
 * the same sizes. Floating-point allreduce is a reduce to rank 0 followed by
 * a broadcast, so its result is bitwise the same on every rank (parameters
 * updated from it never drift apart); integer allreduce is exact anyway.
 * In-place collectives address one full-size buffer per rank; rank r's
 * piece of an allgather/reduce-scatter is counts[r] elements at offset
 * counts[0] + ... + counts[r-1]. Collectives return 0 or fill err; an MPI
 * error inside a collective aborts the whole job (MPI_ERRORS_ARE_FATAL), so
 * no rank waits forever on a peer that failed.
 */
#ifndef DAPT_DIST_H
#define DAPT_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef enum { DIST_F32 = 0, DIST_F64 = 1, DIST_I64 = 2 } DistType;
typedef enum { DIST_SUM = 0, DIST_AVG = 1, DIST_MAX = 2 } DistOp;

typedef struct Dist Dist;

/* Joins the job's process group (MPI_Init when launched by mpirun/srun,
 * nothing otherwise). Fails with a message when the launcher reports more
 * than one process but dapt was built without MPI. */
int dist_init(Dist **out, char *err, size_t err_len);
/* Leaves the group (MPI_Finalize); NULL is fine. */
void dist_free(Dist *d);

int dist_rank(const Dist *d);
int dist_world(const Dist *d);
/* rank among the processes on this node (picks the GPU) */
int dist_local_rank(const Dist *d);
/* "single" | "mpi" */
const char *dist_backend(const Dist *d);

/* buf (n elements of type t) becomes the elementwise op over all ranks. */
int dist_allreduce(Dist *d, void *buf, size_t n, DistType t, DistOp op, char *err, size_t err_len);
/* n_bytes of buf on root are copied to every rank. */
int dist_broadcast(Dist *d, void *buf, size_t n_bytes, int root, char *err, size_t err_len);
/* In place: every rank's piece of buf is copied to every rank. */
int dist_allgather(Dist *d, void *buf, const size_t *counts, DistType t, char *err,
                   size_t err_len);
/* In place: rank r's piece of buf becomes the sum over all ranks of that
 * piece; the rest of buf is left unspecified. */
int dist_reduce_scatter(Dist *d, void *buf, const size_t *counts, DistType t, char *err,
                        size_t err_len);
/* Rank r's counts[r] elements at `piece` land in root's buf at offset
 * counts[0] + ... + counts[r-1]; buf (the sum of counts elements) is used on
 * root only (NULL elsewhere is fine), and root's own piece may already be in
 * place. Point to point in chunks, so neither pieces nor offsets are limited
 * to MPI's int counts. */
int dist_gather(Dist *d, const void *piece, void *buf, const size_t *counts, DistType t,
                int root, char *err, size_t err_len);
int dist_barrier(Dist *d, char *err, size_t err_len);

/* Prints "dapt: rank R of W: MSG; aborting the job" to stderr and ends every
 * process of the job with exit status code (single: exit(code)). */
_Noreturn void dist_abort(Dist *d, int code, const char *msg);

/* The even split of n elements over world ranks: rank r owns
 * [offset, offset + count); the first n % world ranks own one more. */
void dist_shard(size_t n, int world, int rank, size_t *offset, size_t *count);

/* Sum-allreduce of int64 counts with the MoE hook's signature
 * (trainer/moe.h MoeAllreduceI64); ctx is the Dist. */
int dist_allreduce_sum_i64_hook(void *ctx, int64_t *buf, size_t n, char *err, size_t err_len);

#endif
