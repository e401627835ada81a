/* dist_nccl.h: collectives on GPU buffers over NCCL, one communicator per
 * job, bootstrapped over the process group of trainer/dist.h (rank 0 makes
 * the unique id, dist_broadcast sends it; each rank takes GPU local_rank).
 * `dapt train` uses it for the gradient all-reduce and the ZeRO-1
 * reduce-scatter/all-gather when run.device = "cuda" and the job has more
 * than one rank, or whenever dist.backend = "nccl" (docs/distributed.md).
 *
 * libnccl is loaded with dlopen at dist_nccl_init (libnccl.so.2, or the
 * file DAPT_NCCL_LIB names), so neither dapt nor the test programs need
 * NCCL at run time unless a job asks for it. Compiled when the build has
 * CUDA and nccl.h; otherwise every function fails with "built without
 * NCCL" (stubs in dist.c).
 *
 * Invariants: buffers are device memory of the calling rank's GPU; sums are
 * in the buffer's type (fp32 or bf16). Every call is enqueued on the
 * communicator's stream (the CUDA backend's compute stream once
 * dist_nccl_set_stream was called, so the collective is ordered after the
 * backward that wrote the buffer and before the optimizer that reads it) and
 * waited for before returning, under a watchdog: while waiting, the
 * communicator's asynchronous error is polled, and when it reports an error
 * or the collective has not finished within timeout_s (a dead or stuck
 * peer), the communicator is aborted (ncclCommAbort) and the call returns
 * a message naming the collective and the cause. After such a failure the
 * communicator is unusable: the caller ends the job (dist_abort). The
 * exceptions are the overlapped collectives further down (the int64 sum,
 * the gradient buckets, ZeRO-1's parameter gather): they run on the
 * communicator's own stream and are waited for later, under the same
 * watchdog.
 */
#ifndef DAPT_DIST_NCCL_H
#define DAPT_DIST_NCCL_H

#include <stddef.h>

#include "trainer/dist.h"

typedef struct DistNccl DistNccl;

/* Picks GPU local_rank % device count (cudaSetDevice: call it before the
 * CUDA backend starts, which uses the current device) and joins the job's
 * communicator; the initialisation is non-blocking and bounded by
 * timeout_s too. grouped (dist.nccl_grouped): reduce-scatter and
 * all-gather always take the grouped per-piece path (below). Collective
 * (every rank of d calls it). */
int dist_nccl_init(Dist *d, double timeout_s, int grouped, DistNccl **out, char *err,
                   size_t err_len);
void dist_nccl_free(DistNccl *c);
/* The stream collectives are enqueued on (a cudaStream_t of the same
 * device; NULL: the communicator's own stream). */
void dist_nccl_set_stream(DistNccl *c, void *stream);
int dist_nccl_device(const DistNccl *c);
/* "2.28.9": the version of the NCCL library loaded */
const char *dist_nccl_version(const DistNccl *c);

/* buf (n elements of elem_bytes: 4 = fp32, 2 = bf16) becomes the sum over
 * all ranks. */
int dist_nccl_allreduce_sum(DistNccl *c, void *buf, size_t n, size_t elem_bytes, char *err,
                            size_t err_len);
/* In place, the layout of dist_reduce_scatter / dist_allgather (dist.h):
 * rank r's piece is counts[r] elements at counts[0] + ... + counts[r-1].
 * Equal pieces use ncclReduceScatter / ncclAllGather; unequal ones (the
 * flat parameter buffer rarely divides evenly) one ncclReduce /
 * ncclBroadcast per piece in one NCCL group (dist_nccl_init's grouped,
 * the config's dist.nccl_grouped, forces that path, for the one-GPU
 * check). */
int dist_nccl_reduce_scatter_sum(DistNccl *c, void *buf, const size_t *counts, size_t elem_bytes,
                                 char *err, size_t err_len);
int dist_nccl_allgather(DistNccl *c, void *buf, const size_t *counts, size_t elem_bytes,
                        char *err, size_t err_len);

/* Gradient sums overlapped with the backward (dist.bucket_mb,
 * docs/distributed.md). begin arms them for one backward over buf (n
 * elements of elem_bytes, the model's gradients): the model's grad-ready
 * hook (trainer/model.h ModelGradReady; dist_nccl_buckets_ready has its
 * signature, ctx = the DistNccl) hands over [offset, end) as the backward
 * goes, and whenever at least bucket_elems elements are waiting (or offset
 * is 0) they are summed as one bucket: an event recorded on
 * compute_stream, the communicator's own stream made to wait for it, and
 * there ncclAllReduce (pieces NULL) or, for ZeRO-1 (pieces: the counts of
 * dist_nccl_reduce_scatter_sum), one ncclReduce to each owner of a part of
 * the bucket, in one NCCL group; the owner's part ends up as the
 * reduce-scatter would leave it. The backward's later kernels run beside
 * the sums. Every rank has the same buckets (they depend on the layout
 * alone), so the collectives are issued in the same order everywhere.
 * finish sums what is left and waits, under the watchdog, until every
 * bucket is done; then buf is what dist_nccl_allreduce_sum /
 * dist_nccl_reduce_scatter_sum would have made of it (on the emulated NCCL
 * bit for bit; with real NCCL on several GPUs sums over different ranges
 * may round differently, the same on every rank). The buckets share the
 * own stream with the int64 sum below, behind it. */
int dist_nccl_buckets_begin(DistNccl *c, void *buf, size_t n, size_t elem_bytes,
                            size_t bucket_elems, const size_t *pieces, void *compute_stream,
                            char *err, size_t err_len);
int dist_nccl_buckets_ready(void *ctx, size_t offset, char *err, size_t err_len);
int dist_nccl_buckets_finish(DistNccl *c, char *err, size_t err_len);

/* ZeRO-1's all-gather of the updated parameters overlapped with the next
 * forward (dist.bucket_mb > 0 with dist.zero = 1). begin (after the
 * optimizer step on compute_stream) makes NCCL's own stream wait for it and
 * queues there, for each chunk of chunk_elems elements of buf in order,
 * one ncclBroadcast from each owner of a part of the chunk (pieces: as for
 * dist_nccl_allgather), in one NCCL group, and an event. needed (the
 * model's params-needed hook, trainer/model.h; ctx = the DistNccl) waits
 * under the watchdog for the chunks below `end` that are not yet waited
 * for, so each block's forward starts once its own parameters are here
 * while the later chunks are still on the way; a no-op when nothing is
 * pending. finish waits for all of it (before a checkpoint reads the
 * parameters, and at the end). Broadcasts copy, so the parameters are
 * bitwise what dist_nccl_allgather would have made. */
int dist_nccl_gather_begin(DistNccl *c, void *buf, size_t n, size_t elem_bytes, size_t chunk_elems,
                           const size_t *pieces, void *compute_stream, char *err, size_t err_len);
int dist_nccl_gather_needed(void *ctx, size_t end, char *err, size_t err_len);
int dist_nccl_gather_finish(DistNccl *c, char *err, size_t err_len);

/* The non-blocking int64 sum of dist.h (dist_iallreduce_sum_i64_begin /
 * dist_iallreduce_finish: buf is written at finish, never before) over
 * NCCL, for the MoE expert counts of global-batch load balancing. begin
 * copies buf's n values to pinned host memory and, on the communicator's
 * own stream (not the compute stream: the sum runs beside the kernels the
 * compute stream runs meanwhile), uploads them, all-reduces them (int64
 * sum), downloads the sums and records an event; it waits only until NCCL
 * has enqueued the all-reduce. finish waits for the event under the
 * watchdog and copies the sums into buf. One sum in flight at a time, and
 * no other collective of c between begin and finish but the overlapped
 * buckets and gathers, which go on the same stream (they share the communicator; NCCL
 * does not order work across streams). */
int dist_nccl_isum_i64_begin(DistNccl *c, int64_t *buf, size_t n, char *err, size_t err_len);
int dist_nccl_isum_i64_finish(DistNccl *c, char *err, size_t err_len);
/* The two with the MoE hooks' signatures (trainer/moe.h); ctx is the
 * DistNccl, and so is the request. */
int dist_nccl_moe_sum_begin(void *ctx, int64_t *buf, size_t n, void **req, char *err,
                            size_t err_len);
int dist_nccl_moe_sum_finish(void *ctx, void *req, char *err, size_t err_len);

#endif
