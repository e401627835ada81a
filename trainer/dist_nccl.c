/* dist_nccl.c: the NCCL communicator of a data-parallel job (see
 * dist_nccl.h). Bootstrap: rank 0 calls ncclGetUniqueId, dist_broadcast
 * (MPI) gives the id to every rank, each calls ncclCommInitRankConfig on its
 * GPU with a non-blocking communicator, so that neither the initialisation
 * nor a collective can block the host thread: every wait is a polling loop
 * with a deadline (the watchdog).
 *
 * NCCL is dlopen'ed (nccl.h gives the types; the functions come from the
 * library found at run time), so binaries run on machines without it.
 * Unverified on hardware beyond one GPU (docs/gpu-log.md).
 */
#include "trainer/dist_nccl.h"
#include "kernels/util.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the NCCL entry points, from the dlopen'ed library */
typedef struct {
    void *lib;
    ncclResult_t (*GetVersion)(int *);
    const char *(*GetErrorString)(ncclResult_t);
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRankConfig)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
    ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*CommAbort)(ncclComm_t);
    ncclResult_t (*CommFinalize)(ncclComm_t);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                              cudaStream_t);
    ncclResult_t (*ReduceScatter)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                                  ncclComm_t, cudaStream_t);
    ncclResult_t (*AllGather)(const void *, void *, size_t, ncclDataType_t, ncclComm_t,
                              cudaStream_t);
    ncclResult_t (*Reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, int,
                           ncclComm_t, cudaStream_t);
    ncclResult_t (*Broadcast)(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t,
                              cudaStream_t);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
} NcclApi;

struct DistNccl {
    NcclApi api;
    ncclComm_t comm; /* NULL after an abort */
    cudaStream_t own_stream, stream;
    cudaEvent_t done;
    int rank, world, device;
    double timeout_s;
    int grouped; /* dist.nccl_grouped: the unequal-pieces path always */
    char version[32];
    /* the non-blocking int64 sum (dist_nccl_isum_i64_*), on own_stream */
    int64_t *sum_dev, *sum_host; /* (sum_cap) device, pinned host */
    size_t sum_cap, sum_n;
    int64_t *sum_dst; /* the caller's buffer while a sum is in flight, else NULL */
    cudaEvent_t sum_done;
    /* the overlapped gradient sums (dist_nccl_buckets_*), on own_stream */
    int bk_armed;
    char *bk_buf;
    size_t bk_n, bk_elem, bk_cap, bk_hi; /* [bk_hi, bk_n) already handed to NCCL */
    ncclDataType_t bk_type;
    size_t *bk_pieces; /* (world) ZeRO-1 owners' counts; NULL: all-reduce */
    cudaStream_t bk_compute;
    cudaEvent_t bk_ready, bk_done;
    /* the overlapped ZeRO-1 all-gather (dist_nccl_gather_*), on own_stream:
     * chunks [g_waited, g_chunks) are not waited for yet */
    size_t g_n, g_chunk, g_chunks, g_waited;
    cudaEvent_t *g_ev; /* (g_ev_n) one per chunk */
    size_t g_ev_n;
};

/* DAPT_NCCL_LIB: where libnccl.so.2 is, a fact about the machine (the
 * environment variables dapt reads are listed in docs/config.md,
 * "Environment") */
static int load_api(NcclApi *a, char *err, size_t err_len) {
    const char *path = getenv("DAPT_NCCL_LIB");
    if (!path || !*path) path = "libnccl.so.2";
    a->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!a->lib) {
        const char *why = dlerror();
        return err_set(err, err_len,
                       "cannot load NCCL (%s): %s; install NCCL (libnccl2) or point "
                       "DAPT_NCCL_LIB at libnccl.so.2",
                       path, why ? why : "dlopen failed");
    }
    /* POSIX: a void * from dlsym converts to a function pointer (memcpy
     * keeps -Wpedantic quiet) */
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        void *p_ = dlsym(a->lib, name);                                                            \
        if (!p_)                                                                                   \
            return err_set(err, err_len, "NCCL library %s lacks %s (NCCL >= 2.14 is needed)",      \
                           path, name),                                                            \
                   1;                                                                              \
        memcpy(&a->field, &p_, sizeof p_);                                                         \
    } while (0)
    SYM(GetVersion, "ncclGetVersion");
    SYM(GetErrorString, "ncclGetErrorString");
    SYM(GetUniqueId, "ncclGetUniqueId");
    SYM(CommInitRankConfig, "ncclCommInitRankConfig");
    SYM(CommGetAsyncError, "ncclCommGetAsyncError");
    SYM(CommAbort, "ncclCommAbort");
    SYM(CommDestroy, "ncclCommDestroy");
    SYM(CommFinalize, "ncclCommFinalize");
    SYM(AllReduce, "ncclAllReduce");
    SYM(ReduceScatter, "ncclReduceScatter");
    SYM(AllGather, "ncclAllGather");
    SYM(Reduce, "ncclReduce");
    SYM(Broadcast, "ncclBroadcast");
    SYM(GroupStart, "ncclGroupStart");
    SYM(GroupEnd, "ncclGroupEnd");
#undef SYM
    return 0;
}

/* short sleeps first (a collective of a few MB takes tens of microseconds),
 * then up to a millisecond */
static void nap(int iter) {
    struct timespec ts = {0, iter < 100 ? 10000 : iter < 1000 ? 100000 : 1000000};
    nanosleep(&ts, NULL);
}

/* The communicator failed or timed out: abort it (frees its resources and
 * makes its kernels return) and say why. Returns 1. */
static int fail_abort(DistNccl *c, const char *what, const char *why, char *err, size_t err_len) {
    err_set(err, err_len, "NCCL %s on rank %d of %d (GPU %d): %s; NCCL communicator aborted", what,
            c->rank, c->world, c->device, why);
    if (c->comm) c->api.CommAbort(c->comm);
    c->comm = NULL;
    return 1;
}

/* The watchdog, in two stages that poll the communicator's asynchronous
 * error until deadline. nccl_enqueued: until NCCL has enqueued the work (a
 * non-blocking communicator may return ncclInProgress; r is what the NCCL
 * call returned). nccl_event_wait: until the stream has run up to event
 * ev, recorded after the work. */
static int nccl_timed_out(DistNccl *c, const char *what, char *err, size_t err_len) {
    char why[256];
    snprintf(why, sizeof why,
             "not finished after %.0f s (dist.timeout): a peer rank died, hangs or never reached "
             "this collective",
             c->timeout_s);
    return fail_abort(c, what, why, err, err_len);
}

/* 1 (and the communicator aborted) when it reports an error; *a its state */
static int nccl_async_failed(DistNccl *c, const char *what, ncclResult_t *a, char *err,
                             size_t err_len) {
    char why[256];
    *a = ncclSuccess;
    ncclResult_t q = c->api.CommGetAsyncError(c->comm, a);
    if (q != ncclSuccess) *a = q;
    if (*a == ncclSuccess || *a == ncclInProgress) return 0;
    snprintf(why, sizeof why, "asynchronous error: %s", c->api.GetErrorString(*a));
    return fail_abort(c, what, why, err, err_len);
}

static int nccl_enqueued(DistNccl *c, ncclResult_t r, const char *what, double deadline, char *err,
                         size_t err_len) {
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", what);
    if (r != ncclSuccess && r != ncclInProgress)
        return fail_abort(c, what, c->api.GetErrorString(r), err, err_len);
    for (int iter = 0;; iter++) {
        ncclResult_t a;
        if (nccl_async_failed(c, what, &a, err, err_len)) return 1;
        if (a == ncclSuccess) return 0;
        if (now_s() > deadline) return nccl_timed_out(c, what, err, err_len);
        nap(iter);
    }
}

static int nccl_event_wait(DistNccl *c, cudaEvent_t ev, const char *what, double deadline,
                           char *err, size_t err_len) {
    char why[256];
    for (int iter = 0;; iter++) {
        ncclResult_t a;
        if (nccl_async_failed(c, what, &a, err, err_len)) return 1;
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) {
            snprintf(why, sizeof why, "CUDA error while waiting: %s", cudaGetErrorString(e));
            return fail_abort(c, what, why, err, err_len);
        }
        if (now_s() > deadline) return nccl_timed_out(c, what, err, err_len);
        nap(iter);
    }
}

/* a CUDA call made for a collective failed: abort (0 when e is cudaSuccess) */
static int cuda_failed(DistNccl *c, const char *what, const char *call, cudaError_t e, char *err,
                       size_t err_len) {
    if (e == cudaSuccess) return 0;
    char why[256];
    snprintf(why, sizeof why, "%s: %s", call, cudaGetErrorString(e));
    return fail_abort(c, what, why, err, err_len);
}

/* A blocking collective: enqueued, then run by c->stream (the
 * initialisation has no event yet and nothing on a stream). */
static int nccl_wait(DistNccl *c, ncclResult_t r, const char *what, char *err, size_t err_len) {
    double deadline = now_s() + c->timeout_s;
    if (nccl_enqueued(c, r, what, deadline, err, err_len)) return 1;
    if (!c->done) return 0;
    if (cuda_failed(c, what, "cudaEventRecord", cudaEventRecord(c->done, c->stream), err, err_len))
        return 1;
    return nccl_event_wait(c, c->done, what, deadline, err, err_len);
}

static int nccl_type(size_t elem_bytes, ncclDataType_t *t, char *err, size_t err_len) {
    *t = elem_bytes == 2 ? ncclBfloat16 : ncclFloat32;
    if (elem_bytes != 4 && elem_bytes != 2)
        return err_set(err, err_len, "dist_nccl: %zu-byte elements (expected 4 or 2)", elem_bytes);
    return 0;
}

void dist_nccl_free(DistNccl *c) {
    if (!c) return;
    if (c->comm) {
        /* a non-blocking communicator is finalised (flushing its work) and
         * polled before it is destroyed; one that does not finish in time
         * is aborted instead */
        ncclResult_t r = c->api.CommFinalize(c->comm), a = r;
        double deadline = now_s() + c->timeout_s;
        for (int iter = 0; a == ncclInProgress && now_s() < deadline; iter++) {
            nap(iter);
            if (c->api.CommGetAsyncError(c->comm, &a) != ncclSuccess) a = ncclInternalError;
        }
        if (a == ncclSuccess) c->api.CommDestroy(c->comm);
        else c->api.CommAbort(c->comm);
    }
    if (c->done) cudaEventDestroy(c->done);
    if (c->sum_done) cudaEventDestroy(c->sum_done);
    if (c->bk_ready) cudaEventDestroy(c->bk_ready);
    if (c->bk_done) cudaEventDestroy(c->bk_done);
    free(c->bk_pieces);
    for (size_t i = 0; i < c->g_ev_n; i++)
        cudaEventDestroy(c->g_ev[i]);
    free(c->g_ev);
    if (c->sum_dev) cudaFree(c->sum_dev);
    if (c->sum_host) cudaFreeHost(c->sum_host);
    if (c->own_stream) cudaStreamDestroy(c->own_stream);
    /* the library stays loaded: NCCL may still have threads or exit
     * handlers of its own, and unloading it under them would crash */
    free(c);
}

int dist_nccl_init(Dist *d, double timeout_s, int grouped, DistNccl **out, char *err,
                   size_t err_len) {
    *out = NULL;
    DistNccl *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, err_len, "out of memory");
    c->rank = dist_rank(d), c->world = dist_world(d);
    c->timeout_s = timeout_s > 0 ? timeout_s : 600;
    c->grouped = grouped;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    /* a rank that fails before the broadcast still reaches it, so no peer
     * waits for it; it then returns the error and the caller aborts the job */
    int rc = load_api(&c->api, err, err_len);
    int n_dev = 0;
    if (!rc) {
        cudaError_t e = cudaGetDeviceCount(&n_dev);
        if (e != cudaSuccess || n_dev < 1)
            rc = err_set(err, err_len, "NCCL needs a GPU: cudaGetDeviceCount: %s",
                         e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (!rc) {
        c->device = dist_local_rank(d) % n_dev;
        cudaError_t e = cudaSetDevice(c->device);
        if (e != cudaSuccess)
            rc = err_set(err, err_len, "cudaSetDevice(%d): %s", c->device, cudaGetErrorString(e));
    }
    if (!rc) {
        int v = 0;
        c->api.GetVersion(&v);
        /* NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9 */
        snprintf(c->version, sizeof c->version, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    }
    if (!rc && c->rank == 0) {
        ncclResult_t r = c->api.GetUniqueId(&id);
        if (r != ncclSuccess)
            rc = err_set(err, err_len, "ncclGetUniqueId: %s", c->api.GetErrorString(r));
    }
    char berr[256];
    if (dist_broadcast(d, &id, sizeof id, 0, berr, sizeof berr) && !rc)
        rc = err_set(err, err_len, "%s", berr);
    if (!rc) {
        cudaError_t e = cudaStreamCreateWithFlags(&c->own_stream, cudaStreamNonBlocking);
        if (e != cudaSuccess)
            rc = err_set(err, err_len, "cudaStreamCreate: %s", cudaGetErrorString(e));
        c->stream = c->own_stream;
    }
    if (!rc) {
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        ncclResult_t r = c->api.CommInitRankConfig(&c->comm, c->world, id, c->rank, &cfg);
        if (r != ncclSuccess && r != ncclInProgress) {
            rc = err_set(err, err_len, "ncclCommInitRank(rank %d of %d, GPU %d): %s", c->rank,
                         c->world, c->device, c->api.GetErrorString(r));
            c->comm = NULL;
        } else {
            rc = nccl_wait(c, r, "initialisation", err, err_len);
        }
    }
    if (!rc) {
        cudaError_t e = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming);
        if (e != cudaSuccess)
            rc = err_set(err, err_len, "cudaEventCreate: %s", cudaGetErrorString(e));
    }
    if (rc) {
        dist_nccl_free(c);
        return 1;
    }
    *out = c;
    return 0;
}

void dist_nccl_set_stream(DistNccl *c, void *stream) {
    c->stream = stream ? (cudaStream_t)stream : c->own_stream;
}

int dist_nccl_device(const DistNccl *c) { return c->device; }
const char *dist_nccl_version(const DistNccl *c) { return c->version; }

int dist_nccl_allreduce_sum(DistNccl *c, void *buf, size_t n, size_t elem_bytes, char *err,
                            size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    if (!c->comm) return err_set(err, err_len, "NCCL all-reduce: the communicator was aborted");
    return nccl_wait(c, c->api.AllReduce(buf, buf, n, t, ncclSum, c->comm, c->stream),
                     "all-reduce", err, err_len);
}

/* 1 when every piece has the same length (and the grouped path is not
 * forced: the one-GPU check runs it that way, since one rank's piece is
 * always "equal") */
static int equal_pieces(const DistNccl *c, const size_t *counts) {
    if (c->grouped) return 0;
    for (int r = 1; r < c->world; r++)
        if (counts[r] != counts[0]) return 0;
    return 1;
}

/* the result of a group: the first failed call's, else ncclGroupEnd's */
static ncclResult_t group_end(DistNccl *c, ncclResult_t first) {
    ncclResult_t r = c->api.GroupEnd();
    return first != ncclSuccess && first != ncclInProgress ? first : r;
}

/* [*a, *b): the part of [lo, hi) in the piece [off, off + len); 1 when not
 * empty */
static int part_of(size_t off, size_t len, size_t lo, size_t hi, size_t *a, size_t *b) {
    *a = off > lo ? off : lo;
    *b = off + len < hi ? off + len : hi;
    return *a < *b;
}

/* [lo, hi) of buf (elements; rank k owns the piece counts[k], in rank order)
 * in one group on stream st: each owner's part reduced to it (ncclSum), or
 * broadcast from it (bcast); empty parts skipped */
static ncclResult_t grouped_pieces(DistNccl *c, int bcast, void *buf, const size_t *counts,
                                   size_t lo, size_t hi, size_t elem_bytes, ncclDataType_t t,
                                   cudaStream_t st) {
    ncclResult_t r = c->api.GroupStart();
    size_t off = 0;
    for (int k = 0; k < c->world && (r == ncclSuccess || r == ncclInProgress); k++) {
        size_t a, b;
        if (part_of(off, counts[k], lo, hi, &a, &b)) {
            char *p = (char *)buf + a * elem_bytes;
            r = bcast ? c->api.Broadcast(p, p, b - a, t, k, c->comm, st)
                      : c->api.Reduce(p, p, b - a, t, ncclSum, k, c->comm, st);
        }
        off += counts[k];
    }
    return group_end(c, r);
}

static size_t pieces_total(const DistNccl *c, const size_t *counts) {
    size_t n = 0;
    for (int k = 0; k < c->world; k++) n += counts[k];
    return n;
}

int dist_nccl_reduce_scatter_sum(DistNccl *c, void *buf, const size_t *counts, size_t elem_bytes,
                                 char *err, size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    if (!c->comm) return err_set(err, err_len, "NCCL reduce-scatter: the communicator was aborted");
    char *b = buf;
    if (equal_pieces(c, counts)) {
        /* in place: recvbuff = sendbuff + rank * recvcount */
        char *mine = b + (size_t)c->rank * counts[0] * elem_bytes;
        return nccl_wait(c, c->api.ReduceScatter(b, mine, counts[0], t, ncclSum, c->comm, c->stream),
                         "reduce-scatter", err, err_len);
    }
    return nccl_wait(c,
                     grouped_pieces(c, 0, b, counts, 0, pieces_total(c, counts), elem_bytes, t,
                                    c->stream),
                     "reduce-scatter (grouped reduces)", err, err_len);
}

int dist_nccl_allgather(DistNccl *c, void *buf, const size_t *counts, size_t elem_bytes,
                        char *err, size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    if (!c->comm) return err_set(err, err_len, "NCCL all-gather: the communicator was aborted");
    char *b = buf;
    if (equal_pieces(c, counts)) {
        const char *mine = b + (size_t)c->rank * counts[0] * elem_bytes;
        return nccl_wait(c, c->api.AllGather(mine, b, counts[0], t, c->comm, c->stream),
                         "all-gather", err, err_len);
    }
    return nccl_wait(c,
                     grouped_pieces(c, 1, b, counts, 0, pieces_total(c, counts), elem_bytes, t,
                                    c->stream),
                     "all-gather (grouped broadcasts)", err, err_len);
}

/* ---------------- gradient sums overlapped with the backward ---------------- */

/* *e created (once: a no-op when it exists) */
static int new_event(cudaEvent_t *e, const char *what, char *err, size_t err_len) {
    cudaError_t r = *e ? cudaSuccess : cudaEventCreateWithFlags(e, cudaEventDisableTiming);
    if (r == cudaSuccess) return 0;
    *e = NULL;
    return err_set(err, err_len, "NCCL %s: cudaEventCreate: %s", what, cudaGetErrorString(r));
}

/* own_stream's next work after the compute stream's work so far (an event
 * recorded there, waited for on own_stream; the host does not wait) */
static int own_after_compute(DistNccl *c, cudaStream_t compute, const char *what, char *err,
                             size_t err_len) {
    return cuda_failed(c, what, "cudaEventRecord", cudaEventRecord(c->bk_ready, compute), err,
                       err_len) ||
           cuda_failed(c, what, "cudaStreamWaitEvent",
                       cudaStreamWaitEvent(c->own_stream, c->bk_ready, 0), err, err_len);
}

static const char BK_WHAT[] = "gradient bucket sum (overlapped with the backward)";

int dist_nccl_buckets_begin(DistNccl *c, void *buf, size_t n, size_t elem_bytes,
                            size_t bucket_elems, const size_t *pieces, void *compute_stream,
                            char *err, size_t err_len) {
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", BK_WHAT);
    if (c->bk_armed) return err_set(err, err_len, "NCCL %s: begun twice", BK_WHAT);
    if (nccl_type(elem_bytes, &c->bk_type, err, err_len)) return 1;
    if (new_event(&c->bk_ready, BK_WHAT, err, err_len) ||
        new_event(&c->bk_done, BK_WHAT, err, err_len))
        return 1;
    if (pieces && !c->bk_pieces && !(c->bk_pieces = malloc((size_t)c->world * sizeof(size_t))))
        return err_set(err, err_len, "NCCL %s: out of memory", BK_WHAT);
    if (pieces) memcpy(c->bk_pieces, pieces, (size_t)c->world * sizeof(size_t));
    c->bk_buf = buf, c->bk_n = n, c->bk_hi = n, c->bk_elem = elem_bytes;
    c->bk_cap = bucket_elems ? bucket_elems : 1;
    c->bk_compute = (cudaStream_t)compute_stream;
    c->bk_armed = pieces ? 2 : 1;
    return 0;
}

/* [lo, bk_hi) to NCCL, on own_stream after the compute stream's work so far */
static int bucket_issue(DistNccl *c, size_t lo, char *err, size_t err_len) {
    size_t hi = c->bk_hi, e = c->bk_elem;
    cudaStream_t st = c->own_stream;
    if (own_after_compute(c, c->bk_compute, BK_WHAT, err, err_len)) return 1;
    ncclResult_t r;
    if (c->bk_armed == 1) {
        char *p = c->bk_buf + lo * e;
        r = c->api.AllReduce(p, p, hi - lo, c->bk_type, ncclSum, c->comm, st);
    } else { /* ZeRO-1: each owner's part of [lo, hi) reduced to it */
        r = grouped_pieces(c, 0, c->bk_buf, c->bk_pieces, lo, hi, e, c->bk_type, st);
    }
    if (nccl_enqueued(c, r, BK_WHAT, now_s() + c->timeout_s, err, err_len)) return 1;
    c->bk_hi = lo;
    return 0;
}

int dist_nccl_buckets_ready(void *ctx, size_t offset, char *err, size_t err_len) {
    DistNccl *c = ctx;
    if (!c->bk_armed) return err_set(err, err_len, "NCCL %s: not begun", BK_WHAT);
    if (offset > c->bk_hi)
        return err_set(err, err_len, "NCCL %s: offset %zu after %zu was handed over", BK_WHAT,
                       offset, c->bk_hi);
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", BK_WHAT);
    if (c->bk_hi - offset < c->bk_cap && offset > 0) return 0;
    return offset < c->bk_hi ? bucket_issue(c, offset, err, err_len) : 0;
}

int dist_nccl_buckets_finish(DistNccl *c, char *err, size_t err_len) {
    if (!c->bk_armed) return err_set(err, err_len, "NCCL %s: finish without a begin", BK_WHAT);
    int rc = c->bk_hi > 0 ? dist_nccl_buckets_ready(c, 0, err, err_len) : 0;
    c->bk_armed = 0;
    if (rc) return 1;
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", BK_WHAT);
    if (cuda_failed(c, BK_WHAT, "cudaEventRecord", cudaEventRecord(c->bk_done, c->own_stream), err,
                    err_len))
        return 1;
    return nccl_event_wait(c, c->bk_done, BK_WHAT, now_s() + c->timeout_s, err, err_len);
}

/* ---------------- ZeRO-1's all-gather overlapped with the forward ---------------- */

static const char G_WHAT[] = "parameter all-gather (overlapped with the forward)";

int dist_nccl_gather_begin(DistNccl *c, void *buf, size_t n, size_t elem_bytes, size_t chunk_elems,
                           const size_t *pieces, void *compute_stream, char *err, size_t err_len) {
    ncclDataType_t t;
    if (nccl_type(elem_bytes, &t, err, err_len)) return 1;
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", G_WHAT);
    if (c->g_waited < c->g_chunks)
        return err_set(err, err_len, "NCCL %s: begun while the last one is pending", G_WHAT);
    size_t chunk = chunk_elems ? chunk_elems : 1, chunks = n ? (n - 1) / chunk + 1 : 0;
    if (chunks > c->g_ev_n) {
        cudaEvent_t *ev = realloc(c->g_ev, chunks * sizeof *ev);
        if (!ev) return err_set(err, err_len, "NCCL %s: out of memory", G_WHAT);
        c->g_ev = ev;
        for (; c->g_ev_n < chunks; c->g_ev_n++) {
            ev[c->g_ev_n] = NULL;
            if (new_event(&ev[c->g_ev_n], G_WHAT, err, err_len)) return 1;
        }
    }
    if (new_event(&c->bk_ready, G_WHAT, err, err_len) ||
        own_after_compute(c, (cudaStream_t)compute_stream, G_WHAT, err, err_len))
        return 1;
    cudaStream_t st = c->own_stream;
    for (size_t i = 0; i < chunks; i++) {
        size_t lo = i * chunk, hi = lo + chunk < n ? lo + chunk : n;
        ncclResult_t r = grouped_pieces(c, 1, buf, pieces, lo, hi, elem_bytes, t, st);
        if (nccl_enqueued(c, r, G_WHAT, now_s() + c->timeout_s, err, err_len) ||
            cuda_failed(c, G_WHAT, "cudaEventRecord", cudaEventRecord(c->g_ev[i], st), err,
                        err_len))
            return 1;
    }
    c->g_n = n, c->g_chunk = chunk, c->g_chunks = chunks, c->g_waited = 0;
    return 0;
}

int dist_nccl_gather_needed(void *ctx, size_t end, char *err, size_t err_len) {
    DistNccl *c = ctx;
    double deadline = now_s() + c->timeout_s;
    while (c->g_waited < c->g_chunks && c->g_waited * c->g_chunk < end) {
        if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", G_WHAT);
        if (nccl_event_wait(c, c->g_ev[c->g_waited], G_WHAT, deadline, err, err_len)) return 1;
        c->g_waited++;
    }
    return 0;
}

int dist_nccl_gather_finish(DistNccl *c, char *err, size_t err_len) {
    return dist_nccl_gather_needed(c, c->g_n, err, err_len);
}

/* ---------------- the non-blocking int64 sum ---------------- */

int dist_nccl_isum_i64_begin(DistNccl *c, int64_t *buf, size_t n, char *err, size_t err_len) {
    static const char what[] = "int64 all-reduce (MoE counts)";
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", what);
    if (c->sum_dst)
        return err_set(err, err_len, "NCCL %s: begun while the previous one is in flight", what);
    if (n > c->sum_cap) {
        /* grows once: the counts of a model have one size */
        if (c->sum_dev) cudaFree(c->sum_dev), c->sum_dev = NULL;
        if (c->sum_host) cudaFreeHost(c->sum_host), c->sum_host = NULL;
        c->sum_cap = 0;
        cudaError_t e = cudaMalloc((void **)&c->sum_dev, n * sizeof(int64_t));
        if (e == cudaSuccess) e = cudaMallocHost((void **)&c->sum_host, n * sizeof(int64_t));
        if (e != cudaSuccess)
            return err_set(err, err_len, "NCCL %s: allocating %zu values: %s", what, n,
                           cudaGetErrorString(e));
        c->sum_cap = n;
    }
    if (!c->sum_done) {
        cudaError_t e = cudaEventCreateWithFlags(&c->sum_done, cudaEventDisableTiming);
        if (e != cudaSuccess)
            return err_set(err, err_len, "NCCL %s: cudaEventCreate: %s", what,
                           cudaGetErrorString(e));
    }
    size_t bytes = n * sizeof(int64_t);
    memcpy(c->sum_host, buf, bytes);
    cudaStream_t st = c->own_stream;
    if (cuda_failed(c, what, "cudaMemcpyAsync (upload)",
                    cudaMemcpyAsync(c->sum_dev, c->sum_host, bytes, cudaMemcpyHostToDevice, st), err,
                    err_len))
        return 1;
    ncclResult_t r = c->api.AllReduce(c->sum_dev, c->sum_dev, n, ncclInt64, ncclSum, c->comm, st);
    if (nccl_enqueued(c, r, what, now_s() + c->timeout_s, err, err_len)) return 1;
    if (cuda_failed(c, what, "cudaMemcpyAsync (download)",
                    cudaMemcpyAsync(c->sum_host, c->sum_dev, bytes, cudaMemcpyDeviceToHost, st), err,
                    err_len) ||
        cuda_failed(c, what, "cudaEventRecord", cudaEventRecord(c->sum_done, st), err, err_len))
        return 1;
    c->sum_dst = buf, c->sum_n = n;
    return 0;
}

int dist_nccl_isum_i64_finish(DistNccl *c, char *err, size_t err_len) {
    static const char what[] = "int64 all-reduce (MoE counts)";
    if (!c->sum_dst) return err_set(err, err_len, "NCCL %s: finish without a begin", what);
    int64_t *dst = c->sum_dst;
    c->sum_dst = NULL;
    if (!c->comm) return err_set(err, err_len, "NCCL %s: the communicator was aborted", what);
    if (nccl_event_wait(c, c->sum_done, what, now_s() + c->timeout_s, err, err_len)) return 1;
    memcpy(dst, c->sum_host, c->sum_n * sizeof(int64_t));
    return 0;
}

int dist_nccl_moe_sum_begin(void *ctx, int64_t *buf, size_t n, void **req, char *err,
                            size_t err_len) {
    *req = ctx;
    return dist_nccl_isum_i64_begin((DistNccl *)ctx, buf, n, err, err_len);
}

int dist_nccl_moe_sum_finish(void *ctx, void *req, char *err, size_t err_len) {
    (void)req;
    return dist_nccl_isum_i64_finish((DistNccl *)ctx, err, err_len);
}
