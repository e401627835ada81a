/* comm.h: the training step's collectives on the model's gradient and
 * parameter buffers, one handle made from the config (dist.backend,
 * dist.zero, dist.bucket_mb, dist.timeout) over the job's process group.
 * The step asks for "sum the gradients", "step the optimizer" and "gather
 * the parameters"; how is this module's business:
 *
 *   - the host group (trainer/dist.h, MPI or a single process) on CPU
 *     buffers, or NCCL (trainer/dist_nccl.h) on GPU buffers, ordered on the
 *     CUDA backend's compute stream: run.device = "cuda" with more than one
 *     rank, or dist.backend = "nccl";
 *   - ZeRO-1 (dist.zero = 1 with more than one rank or with NCCL): the
 *     gradients are reduce-scattered, each rank steps its shard of the
 *     optimizer state (dist_shard of the flat buffer) and the parameters
 *     are all-gathered; otherwise the gradients are all-reduced;
 *   - overlap (NCCL with dist.bucket_mb > 0): the gradient sums run bucket
 *     by bucket during the last micro-batch's backward (model.c's
 *     grad-ready hook), and ZeRO-1's parameter gather during the next
 *     forward, waited for block by block (its params-needed hook).
 *
 * The MoE expert counts of global-batch load balancing go over the same
 * transport (comm_bind sets the model's hooks). Host-side sums (losses,
 * the stop flag, eval sums, checkpoint gathers) stay on the Dist.
 *
 * Invariants: a NCCL failure or timeout leaves the communicator aborted and
 * the compute stream unusable, so the calls below that can meet one end the
 * job at once (dist_abort, message "dapt train: step STEP: ...") without
 * touching the GPU again; failures on the host group return 1 with a
 * message. Nothing may free the parameters while a gather is pending:
 * comm_drain before model_free. */
#ifndef DAPT_COMM_H
#define DAPT_COMM_H

#include <stddef.h>

#include "kernels/ops.h"
#include "trainer/config.h"
#include "trainer/dist.h"
#include "trainer/model.h"

typedef struct Comm Comm;

/* Before the backend starts (NCCL picks the rank's GPU): the transport and
 * the options of c. Collective when it joins NCCL. */
int comm_open(Dist *d, const Config *c, Comm **out, char *err, size_t err_len);
/* The number of optimizer shards a model must be cut into
 * (model_shard_optimizer with dist_shard), 0 when ZeRO-1 is off. */
int comm_zero_world(const Comm *c);
/* Ties the handle to the model (on backend ops): its buffers, the MoE
 * count sums, and with an overlapped gather its params-needed hook. The
 * model's optimizer shard must be this rank's shard. */
int comm_bind(Comm *c, Model *m, const Ops *ops, char *err, size_t err_len);
/* The console lines describing the data parallelism. */
void comm_print(const Comm *c, int rows_per_rank);

/* Gradient sums. begin before each micro-batch's forward/backward (last:
 * it is the step's last, whose backward hands its gradients over as they
 * are ready when overlapped); finish after the last one: the gradients are
 * then summed over the ranks (this rank's shard of them under ZeRO-1). */
int comm_grad_sync_begin(Comm *c, int last, int step, char *err, size_t err_len);
int comm_grad_sync_finish(Comm *c, int step, char *err, size_t err_len);
/* Under ZeRO-1: the sum of squares of this rank's summed gradient shard,
 * for the caller to sum over ranks; 0 otherwise. */
double comm_grad_sumsq(Comm *c);
/* The global gradient norm, from the sum over ranks of comm_grad_sumsq. */
float comm_grad_norm(Comm *c, double sumsq_all);
/* AdamW step t with learning rate lr on this rank's parameters: all of
 * them, or under ZeRO-1 its shard, clipped for grad_norm. */
void comm_optimizer_step(Comm *c, const AdamWConfig *opt, float lr, int t, float grad_norm);
/* Under ZeRO-1 after comm_optimizer_step: the updated shards gathered on
 * every rank, at once, or pending until the next forward needs them
 * (overlap); a no-op otherwise. */
int comm_params_gather(Comm *c, int step, char *err, size_t err_len);
/* Waits for a pending parameter gather (before something other than a
 * forward reads the parameters, or before a rank without eval windows
 * skips its forward); a no-op otherwise. */
int comm_gather_wait(Comm *c, int step, char *err, size_t err_len);
/* A failure of a step's collective met elsewhere (a forward/backward whose
 * MoE count sum ran over NCCL): over NCCL ends the job (see above); no-op
 * on the host group. */
void comm_fail(Comm *c, int step, const char *err);

/* ZeRO-1: rank r's shard length for r < world (checkpoints). */
const size_t *comm_pieces(const Comm *c);
/* Waits for anything pending on the parameters (the end of a run, before
 * model_free; a failure ends the job). comm_free after model_free. NULL is
 * a no-op for both. */
void comm_drain(Comm *c);
void comm_free(Comm *c);

#endif
