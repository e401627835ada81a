/* nccl_emu.c: libnccl_cuemu.so, the part of NCCL's API that
 * trainer/dist_nccl.c uses, for programs on the host emulator (dapt_emu):
 * `DAPT_NCCL_LIB=.../libnccl_cuemu.so mpirun -np N dapt_emu train ...`
 * runs the NCCL path of data parallelism (gradient all-reduce, ZeRO-1
 * reduce-scatter/all-gather, grouped reduces/broadcasts, the MoE counts'
 * non-blocking int64 sum, the watchdog) over N processes without a GPU.
 * tests/cuemu/nccl_dist.sh is its test; docs/cuda.md describes it.
 *
 * Each process is one rank with one emulated GPU; "device" buffers are host
 * memory, so a collective is an MPI one on a communicator split off
 * MPI_COMM_WORLD at ncclCommInitRankConfig (world size 1 needs no MPI).
 * What NCCL does asynchronously is asynchronous here too: a collective is
 * deferred onto its CUDA stream (cuemu_stream_defer, exported by the
 * emulator's program) and starts when it is first in that stream's line:
 * the send buffer is copied then, and an MPI_Iallgather (MPI_Ibcast for a
 * broadcast) gathers every rank's copy. The receive buffer is written only
 * when the program waits for the stream (cuemu.h: an event query, a launch
 * on that stream, ...), so a read that does not wait sees the old data. A
 * host thread that waits for an event polls MPI_Test; a peer that never
 * joins leaves the event not ready: dist_nccl.c's watchdog, not MPI, has to
 * end the job.
 *
 * Sums are done by each rank over the gathered copies in rank order 0, 1,
 * ..., so every rank gets the same bits; fp32 and bf16 round after each
 * addition (a chain, as a ring reduction does; bf16 with the emulated
 * device's conversion, cuemu_f32_to_bf16: to nearest even), int64 is
 * exact. Only ncclSum, and fp32, bf16, int64 (and bytes for gathers and
 * broadcasts) are supported; anything else returns ncclInvalidArgument, as
 * do buffers that are not device memory (cudaMalloc'd, whole) or that
 * overlap other than in NCCL's in-place form: a host copy would forgive
 * both, a GPU would not.
 *
 * Non-blocking communicators (config.blocking = 0) behave as NCCL
 * documents: initialisation, each call and ncclGroupEnd return
 * ncclInProgress, and ncclCommGetAsyncError reports ncclInProgress once
 * before ncclSuccess, so callers must poll.
 *
 * Fault injection, for the watchdog's tests: CUEMU_NCCL_FAULT = KIND:R:K
 * makes rank R's K-th collective call (counting from 1) fail:
 *   stall  the call never returns (a peer stuck before the collective);
 *   error  the communicator's asynchronous error becomes ncclRemoteError.
 * A line on stderr says when a fault is injected.
 *
 * CUEMU_NCCL_DUMP = DIR writes the operands of each rank's first bf16
 * all-reduce (the first step's gradient sum) for tests/cuemu/check_bf16_sum.py:
 * DIR/bf16-allreduce-rR.in (every rank's send buffer, rank after rank) and
 * DIR/bf16-allreduce-rR.out (this rank's result), raw little-endian bf16.
 */
#include <limits.h>
#include <mpi.h>
#include <nccl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuemu_export.h" /* what the emulator's program exports */

static const char ID_MAGIC[] = "cuemu-nccl-id";

/* n collectives, and the fewest and most kernels and GEMMs launched while
 * one was in flight */
typedef struct {
    long n;
    unsigned long lo, hi;
} Spread;

static void spread_add(Spread *s, unsigned long k) {
    if (!s->n++ || k < s->lo) s->lo = k;
    if (k > s->hi) s->hi = k;
}

static void spread_print(const Spread *s, int rank, const char *what) {
    if (s->n)
        fprintf(stderr,
                "nccl_emu: rank %d: %ld %s; kernels and GEMMs launched while one was in flight: "
                "%lu to %lu\n",
                rank, s->n, what, s->lo, s->hi);
}

struct ncclComm {
    MPI_Comm mpi; /* MPI_COMM_NULL at world size 1 */
    int rank, world, blocking;
    ncclResult_t state; /* what ncclCommGetAsyncError reports next */
    int aborted, finalizing;
    long calls;   /* collective calls so far (fault injection counts them) */
    int inflight; /* collectives deferred and not finished */
    int dumped;   /* CUEMU_NCCL_DUMP: the first bf16 all-reduce is written */
    /* how much each kind of collective overlapped compute: kernels and
     * GEMMs launched between the call and the wait that finished it */
    Spread i64; /* the int64 all-reduces (MoE counts) */
    Spread f;   /* the fp32/bf16 all-reduces and reduces (gradient sums) */
    Spread bc;  /* the broadcasts (ZeRO-1's grouped parameter gathers) */
};

typedef enum { OP_ALLREDUCE, OP_REDUCE, OP_REDUCE_SCATTER, OP_ALLGATHER, OP_BROADCAST } OpKind;
static const char *const OP_NAME[] = {"all-reduce", "reduce", "reduce-scatter", "all-gather",
                                      "broadcast"};

typedef struct Work {
    ncclComm_t comm;
    OpKind kind;
    const void *send;
    void *recv;
    size_t count; /* elements: of the result (recvcount, sendcount for gathers) */
    ncclDataType_t type;
    int root, started;
    size_t piece_bytes; /* what each rank contributes */
    char *mine, *all;   /* this rank's copy; every rank's, rank after rank */
    MPI_Request req;
    cudaStream_t stream;
    unsigned long launches; /* cuemu_launches() at the call */
    struct Work *next;      /* in a group */
} Work;

static struct {
    int depth;
    Work *head, *tail;
} g_group;

static size_t type_bytes(ncclDataType_t t) {
    switch (t) {
    case ncclFloat32: return 4;
    case ncclBfloat16: return 2;
    case ncclInt64: return 8;
    case ncclInt8: case ncclUint8: return 1;
    default: return 0;
    }
}

/* out[i] = sum over ranks r of all[r * stride + off + i], r = 0, 1, ... */
static void sum_pieces(const Work *w, size_t off, size_t stride, void *out) {
    int n = w->comm->world;
    for (size_t i = 0; i < w->count; i++) {
        if (w->type == ncclFloat32) {
            const float *a = (const float *)w->all;
            float acc = a[off + i];
            for (int r = 1; r < n; r++) acc += a[r * stride + off + i];
            ((float *)out)[i] = acc;
        } else if (w->type == ncclBfloat16) {
            const uint16_t *a = (const uint16_t *)w->all;
            uint16_t acc = a[off + i];
            for (int r = 1; r < n; r++)
                acc = cuemu_f32_to_bf16(cuemu_bf16_to_f32(acc) +
                                        cuemu_bf16_to_f32(a[r * stride + off + i]));
            ((uint16_t *)out)[i] = acc;
        } else {
            const int64_t *a = (const int64_t *)w->all;
            int64_t acc = a[off + i];
            for (int r = 1; r < n; r++) acc += a[r * stride + off + i];
            ((int64_t *)out)[i] = acc;
        }
    }
}

/* the stream reached the work: copy what this rank sends, start the MPI side */
static void work_start(Work *w) {
    ncclComm_t c = w->comm;
    size_t pb = w->piece_bytes;
    w->mine = malloc(pb + 1), w->all = malloc(pb * c->world + 1);
    if (!w->mine || !w->all) fprintf(stderr, "nccl_emu: out of memory\n"), abort();
    if (w->kind != OP_BROADCAST || c->rank == w->root) memcpy(w->mine, w->send, pb);
    if (w->kind == OP_BROADCAST) {
        if (c->rank == w->root) memcpy(w->all, w->mine, pb);
        if (c->mpi != MPI_COMM_NULL)
            MPI_Ibcast(w->all, (int)pb, MPI_BYTE, w->root, c->mpi, &w->req);
    } else if (c->mpi != MPI_COMM_NULL) {
        MPI_Iallgather(w->mine, (int)pb, MPI_BYTE, w->all, (int)pb, MPI_BYTE, c->mpi, &w->req);
    } else {
        memcpy(w->all, w->mine, pb);
    }
    w->started = 1;
}

/* DIR/bf16-allreduce-rR.SUFFIX := n bytes at p; a failure ends the test */
static void dump_file(const char *dir, int rank, const char *suffix, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/bf16-allreduce-r%d.%s", dir, rank, suffix);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f))
        fprintf(stderr, "nccl_emu: CUEMU_NCCL_DUMP: cannot write %s\n", path), abort();
}

/* CUEMU_NCCL_DUMP: the operands and result of this rank's first bf16
 * all-reduce, once its result is written */
static void dump_first_bf16_sum(const Work *w) {
    const char *dir = getenv("CUEMU_NCCL_DUMP");
    ncclComm_t c = w->comm;
    if (!dir || c->dumped || w->kind != OP_ALLREDUCE || w->type != ncclBfloat16) return;
    c->dumped = 1;
    dump_file(dir, c->rank, "in", w->all, w->piece_bytes * c->world);
    dump_file(dir, c->rank, "out", w->recv, w->count * type_bytes(w->type));
}

/* every rank's piece is here: write this rank's result */
static void work_finish(Work *w) {
    ncclComm_t c = w->comm;
    size_t e = type_bytes(w->type);
    switch (w->kind) {
    case OP_ALLREDUCE: sum_pieces(w, 0, w->count, w->recv); break;
    case OP_REDUCE:
        if (c->rank == w->root) sum_pieces(w, 0, w->count, w->recv);
        break;
    case OP_REDUCE_SCATTER:
        sum_pieces(w, (size_t)c->rank * w->count, w->count * c->world, w->recv);
        break;
    case OP_ALLGATHER: memmove(w->recv, w->all, w->count * e * c->world); break;
    case OP_BROADCAST: memmove(w->recv, w->all, w->count * e); break;
    }
    dump_first_bf16_sum(w);
    unsigned long k = cuemu_launches() - w->launches;
    if (w->kind == OP_ALLREDUCE && w->type == ncclInt64)
        spread_add(&c->i64, k);
    else if (w->kind == OP_ALLREDUCE || w->kind == OP_REDUCE)
        spread_add(&c->f, k);
    else if (w->kind == OP_BROADCAST)
        spread_add(&c->bc, k);
}

/* cuemu_stream_defer's poll: 1 when done (or dropped by an abort) */
static int work_poll(void *ctx, int wait) {
    Work *w = ctx;
    ncclComm_t c = w->comm;
    if (!c->aborted) {
        if (!w->started) work_start(w);
        if (wait < 0) return 0;
        if (c->mpi != MPI_COMM_NULL) {
            int flag = 1;
            if (wait) MPI_Wait(&w->req, MPI_STATUS_IGNORE);
            else MPI_Test(&w->req, &flag, MPI_STATUS_IGNORE);
            if (!flag) return 0;
        }
        work_finish(w);
    }
    /* an aborted communicator's MPI request cannot be cancelled (MPI has no
     * cancel for collectives): it and its buffers are left to the job's end */
    if (!c->aborted) free(w->mine), free(w->all);
    c->inflight--;
    free(w);
    return 1;
}

/* what a call returns: a non-blocking communicator is "in progress" until
 * the next ncclCommGetAsyncError */
static ncclResult_t returned(ncclComm_t c) {
    if (c->blocking) return c->state;
    if (c->state == ncclSuccess) c->state = ncclInProgress;
    return ncclInProgress;
}

static void enqueue(Work *w) {
    w->comm->inflight++;
    cuemu_stream_defer(w->stream, work_poll, w);
}

/* NCCL's rules for buffers, which a host copy would forgive: device memory
 * of this GPU, and send and receive overlapping only in NCCL's in-place
 * form (the same pointer; for reduce-scatter recv = send + rank * count,
 * for all-gather send = recv + rank * count). 0 when they hold. */
static int bad_buffers(OpKind kind, const void *send, void *recv, size_t count, size_t e, int root,
                       const struct ncclComm *c) {
    const char *s = send, *r = recv;
    size_t send_bytes = (kind == OP_REDUCE_SCATTER ? count * c->world : count) * e;
    size_t recv_bytes = (kind == OP_ALLGATHER ? count * c->world : count) * e;
    int uses_send = kind != OP_BROADCAST || c->rank == root;
    int uses_recv = kind != OP_REDUCE || c->rank == root;
    const char *why = NULL;
    if (uses_send && !cuemu_device_range(s, send_bytes))
        why = "the send buffer is not device memory";
    else if (uses_recv && !cuemu_device_range(r, recv_bytes))
        why = "the receive buffer is not device memory";
    else if (uses_send && uses_recv && s < r + recv_bytes && r < s + send_bytes) {
        const char *in_place = kind == OP_REDUCE_SCATTER ? s + (size_t)c->rank * count * e
                               : kind == OP_ALLGATHER    ? r + (size_t)c->rank * count * e
                                                         : s;
        if (kind == OP_ALLGATHER ? s != in_place : r != in_place)
            why = "send and receive buffers overlap, not in NCCL's in-place form";
    }
    if (!why) return 0;
    fprintf(stderr, "nccl_emu: rank %d: %s: %s\n", c->rank, OP_NAME[kind], why);
    return 1;
}

/* CUEMU_NCCL_FAULT: 1 when this call is the one to fail (and it failed) */
static int injected_fault(ncclComm_t c) {
    const char *f = getenv("CUEMU_NCCL_FAULT");
    char kind[16];
    int rank;
    long k;
    c->calls++;
    if (!f || sscanf(f, "%15[a-z]:%d:%ld", kind, &rank, &k) != 3) return 0;
    if (rank != c->rank || k != c->calls) return 0;
    fprintf(stderr, "nccl_emu: rank %d: injected fault \"%s\" at collective call %ld\n", c->rank,
            kind, k);
    if (!strcmp(kind, "stall"))
        for (;;) pause();
    c->state = ncclRemoteError;
    return 1;
}

static ncclResult_t collective(OpKind kind, const void *send, void *recv, size_t count,
                               ncclDataType_t type, ncclRedOp_t op, int root, ncclComm_t c,
                               cudaStream_t stream) {
    if (!c || c->aborted || c->finalizing) return ncclInvalidUsage;
    size_t e = type_bytes(type);
    int reduces = kind == OP_ALLREDUCE || kind == OP_REDUCE || kind == OP_REDUCE_SCATTER;
    if (!e || (reduces && (op != ncclSum || e == 1))) return ncclInvalidArgument;
    if ((kind == OP_REDUCE || kind == OP_BROADCAST) && (root < 0 || root >= c->world))
        return ncclInvalidArgument;
    size_t piece = kind == OP_REDUCE_SCATTER ? count * c->world : count;
    if (piece > (size_t)INT_MAX / e) return ncclInvalidArgument; /* MPI counts are int */
    if (bad_buffers(kind, send, recv, count, e, root, c)) return ncclInvalidArgument;
    if (injected_fault(c)) return returned(c);
    Work *w = calloc(1, sizeof *w);
    if (!w) return ncclSystemError;
    *w = (Work){.comm = c, .kind = kind, .send = send, .recv = recv, .count = count, .type = type,
                .root = root, .piece_bytes = piece * e, .stream = stream,
                .launches = cuemu_launches()};
    if (g_group.depth) {
        if (g_group.tail) g_group.tail->next = w;
        else g_group.head = w;
        g_group.tail = w;
        return ncclSuccess;
    }
    enqueue(w);
    return returned(c);
}

ncclResult_t ncclGetVersion(int *v) {
    *v = NCCL_VERSION_CODE;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error (out of memory?)";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    memcpy(id->internal, ID_MAGIC, sizeof ID_MAGIC);
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    long v[3] = {(long)getpid(), (long)t.tv_sec, t.tv_nsec};
    memcpy(id->internal + 32, v, sizeof v);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t *config) {
    *out = NULL;
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    if (memcmp(id.internal, ID_MAGIC, sizeof ID_MAGIC)) {
        fprintf(stderr, "nccl_emu: rank %d: the unique id is not one from ncclGetUniqueId\n", rank);
        return ncclInvalidArgument;
    }
    ncclComm_t c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    c->mpi = MPI_COMM_NULL, c->rank = rank, c->world = nranks;
    c->blocking = !(config && config->blocking == 0);
    if (nranks > 1) {
        int up = 0, size = 0, me = -1;
        MPI_Initialized(&up);
        if (!up) {
            fprintf(stderr, "nccl_emu: %d ranks need MPI (run under mpirun)\n", nranks);
            return free(c), ncclInvalidUsage;
        }
        MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &c->mpi);
        MPI_Comm_size(c->mpi, &size);
        MPI_Comm_rank(c->mpi, &me);
        /* every rank must hold rank 0's id: the caller's bootstrap */
        ncclUniqueId root = id;
        MPI_Bcast(root.internal, (int)sizeof root.internal, MPI_BYTE, 0, c->mpi);
        int same = !memcmp(root.internal, id.internal, sizeof id.internal), all_same = 0;
        MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_MIN, c->mpi);
        if (size != nranks || me != rank || !all_same) {
            fprintf(stderr,
                    "nccl_emu: rank %d of %d: MPI has rank %d of %d; %s\n", rank, nranks, me, size,
                    all_same ? "ids agree" : "the ranks hold different unique ids");
            MPI_Comm_free(&c->mpi);
            return free(c), ncclInvalidUsage;
        }
    }
    if (rank == 0)
        fprintf(stderr, "nccl_emu: emulated NCCL (tests/cuemu/nccl_emu.c), %d rank%s over %s\n",
                nranks, nranks > 1 ? "s" : "", nranks > 1 ? "MPI" : "memcpy");
    *out = c;
    return returned(c);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *state) {
    if (!c) return ncclInvalidArgument;
    if (c->finalizing) cuemu_progress(); /* finalising flushes what is in flight */
    int failed = c->state != ncclSuccess && c->state != ncclInProgress;
    if (c->finalizing && c->inflight && !failed) { /* finalising waits for them */
        *state = ncclInProgress;
        return ncclSuccess;
    }
    *state = c->state;
    if (c->state == ncclInProgress) c->state = ncclSuccess;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t c) {
    if (!c || c->aborted) return ncclInvalidArgument;
    c->finalizing = 1;
    return returned(c);
}

static void comm_free(ncclComm_t c) {
    if (c->mpi != MPI_COMM_NULL) MPI_Comm_free(&c->mpi);
    free(c);
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    if (c->inflight) return ncclInvalidUsage; /* destroyed under running collectives */
    spread_print(&c->i64, c->rank, "int64 all-reduces");
    spread_print(&c->f, c->rank, "fp32/bf16 all-reduces and reduces");
    spread_print(&c->bc, c->rank, "broadcasts");
    comm_free(c);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
    if (!c) return ncclSuccess;
    c->aborted = 1;
    /* works still queued on streams point at c: it stays allocated */
    if (!c->inflight) comm_free(c);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t s) {
    return collective(OP_ALLREDUCE, send, recv, count, type, op, 0, c, s);
}

ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                        ncclRedOp_t op, int root, ncclComm_t c, cudaStream_t s) {
    return collective(OP_REDUCE, send, recv, count, type, op, root, c, s);
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount,
                               ncclDataType_t type, ncclRedOp_t op, ncclComm_t c,
                               cudaStream_t s) {
    return collective(OP_REDUCE_SCATTER, send, recv, recvcount, type, op, 0, c, s);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type,
                           ncclComm_t c, cudaStream_t s) {
    return collective(OP_ALLGATHER, send, recv, sendcount, type, ncclSum, 0, c, s);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t c, cudaStream_t s) {
    return collective(OP_BROADCAST, send, recv, count, type, ncclSum, root, c, s);
}

ncclResult_t ncclGroupStart(void) {
    g_group.depth++;
    return ncclSuccess;
}

/* the group's collectives are deferred in call order, when the outermost
 * group ends; the result is a non-blocking communicator's ncclInProgress */
ncclResult_t ncclGroupEnd(void) {
    if (g_group.depth <= 0) return ncclInvalidUsage;
    if (--g_group.depth) return ncclSuccess;
    ncclResult_t r = ncclSuccess;
    for (Work *w = g_group.head, *next; w; w = next) {
        ncclComm_t c = w->comm; /* w may be done and freed by enqueue */
        next = w->next;
        w->next = NULL;
        enqueue(w);
        r = returned(c);
    }
    g_group.head = g_group.tail = NULL;
    return r;
}
