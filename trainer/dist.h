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

/* Non-blocking sum-allreduce of int64 values (the MoE expert counts,
 * trainer/moe.h): begin copies buf's n values and starts their sum over the
 * ranks (MPI_Iallreduce; single: nothing to do) and returns at once with a
 * request; finish waits for it, writes the n sums into the buf given to
 * begin and frees the request. In between, the caller computes, and may
 * call other collectives of d (every rank in the same order); buf is the
 * caller's until finish overwrites it (reading it early sees the caller's
 * own values, never a partial sum). Integer sums: exact and identical on
 * every rank. Every begin needs its finish (MPI: before dist_free). */
typedef struct DistRequest DistRequest;
int dist_iallreduce_sum_i64_begin(Dist *d, int64_t *buf, size_t n, DistRequest **req, char *err,
                                  size_t err_len);
int dist_iallreduce_finish(Dist *d, DistRequest *req, char *err, size_t err_len);
/* The two with the MoE hooks' signatures (trainer/moe.h MoeSumBegin,
 * MoeSumFinish); ctx is the Dist, *req / req a DistRequest. */
int dist_moe_sum_begin(void *ctx, int64_t *buf, size_t n, void **req, char *err, size_t err_len);
int dist_moe_sum_finish(void *ctx, void *req, char *err, size_t err_len);

#endif
