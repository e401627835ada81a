/* dist.c: the process group (see dist.h): a single-process backend that
 * never calls MPI, and an MPI backend compiled when DAPT_HAVE_MPI is set and
 * used only when a launcher started this process.
 *
 * Invariants: MPI is initialised at most once per process and only when the
 * launcher's environment variables are present; MPI counts are int, so
 * allreduce and broadcast move large buffers in chunks of at most DIST_CHUNK
 * elements, and an allgather/reduce-scatter piece past INT_MAX elements is
 * an error; float sums are reduce-then-broadcast (identical bits on every
 * rank).
 */
#include "trainer/dist.h"
#include "kernels/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DAPT_HAVE_MPI
#include <mpi.h>
#endif

#define DIST_CHUNK ((size_t)1 << 28)

struct Dist {
    int rank, world, local_rank;
    int mpi; /* MPI_Init was called by dist_init */
};

/* launched by mpirun, or by srun --mpi=pmix (SLURM_NTASKS alone is not
 * enough: a plain process inside an allocation has it too). The launcher's
 * variables are among the few dapt reads from the environment (all listed
 * in docs/config.md, "Environment"). */
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

#ifndef DAPT_HAVE_MPI
static int launched_env_world(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return getenv("PMIX_RANK") ? 2 : 0; /* PMIx without a size variable: ask MPI */
}
#endif

int dist_init(Dist **out, char *err, size_t err_len) {
    *out = NULL;
    Dist *d = calloc(1, sizeof *d);
    if (!d) return err_set(err, err_len, "out of memory");
    d->world = 1;
    if (launched()) {
#ifdef DAPT_HAVE_MPI
        if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
            free(d);
            return err_set(err, err_len, "MPI_Init failed");
        }
        d->mpi = 1;
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->world);
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
        MPI_Comm_rank(node, &d->local_rank);
        MPI_Comm_free(&node);
#else
        int w = launched_env_world();
        if (w > 1) {
            free(d);
            return err_set(err, err_len,
                           "started by a launcher with %d processes, but this dapt was built "
                           "without MPI (install libopenmpi-dev and rebuild)",
                           w);
        }
#endif
    }
    *out = d;
    return 0;
}

void dist_free(Dist *d) {
    if (!d) return;
#ifdef DAPT_HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
    free(d);
}

int dist_rank(const Dist *d) { return d->rank; }
int dist_world(const Dist *d) { return d->world; }
int dist_local_rank(const Dist *d) { return d->local_rank; }
const char *dist_backend(const Dist *d) { return d->mpi ? "mpi" : "single"; }

void dist_shard(size_t n, int world, int rank, size_t *offset, size_t *count) {
    size_t base = n / (size_t)world, extra = n % (size_t)world, r = (size_t)rank;
    *count = base + (r < extra);
    *offset = r * base + (r < extra ? r : extra);
}

_Noreturn void dist_abort(Dist *d, int code, const char *msg) {
    fprintf(stderr, "dapt: rank %d of %d: %s; aborting the job\n", d ? d->rank : 0,
            d ? d->world : 1, msg);
    fflush(stderr);
    fflush(stdout);
#ifdef DAPT_HAVE_MPI
    if (d && d->mpi) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
#endif
    exit(code ? code : 1);
}

static int bad_type(DistType t, char *err, size_t err_len) {
    if ((unsigned)t <= DIST_I64) return 0;
    return err_set(err, err_len, "dist: unknown element type %d", (int)t);
}

static const size_t type_size[] = {4, 8, 8};

#ifdef DAPT_HAVE_MPI

static MPI_Datatype mpi_type(DistType t) {
    return t == DIST_F32 ? MPI_FLOAT : t == DIST_F64 ? MPI_DOUBLE : MPI_INT64_T;
}

/* MPI's int counts and displacements of the ranks' pieces: one malloc'd
 * array, counts [0, world) then displacements [world, 2 world); NULL (err
 * filled) when out of memory or a piece does not fit an int */
static int *mpi_counts(const Dist *d, const size_t *counts, char *err, size_t err_len) {
    int *cnt = malloc(sizeof(int) * 2 * d->world);
    if (!cnt) return err_set(err, err_len, "out of memory"), NULL;
    size_t off = 0;
    for (int r = 0; r < d->world; r++) {
        if (counts[r] > (size_t)0x7fffffff || off > (size_t)0x7fffffff) {
            err_set(err, err_len, "dist: piece of %zu elements at %zu exceeds MPI's int counts",
                    counts[r], off);
            free(cnt);
            return NULL;
        }
        cnt[r] = (int)counts[r];
        cnt[d->world + r] = (int)off;
        off += counts[r];
    }
    return cnt;
}
#endif

int dist_allreduce(Dist *d, void *buf, size_t n, DistType t, DistOp op, char *err, size_t err_len) {
    if (bad_type(t, err, err_len)) return 1;
#ifdef DAPT_HAVE_MPI
    if (d->mpi && d->world > 1) {
        MPI_Op mop = op == DIST_MAX ? MPI_MAX : MPI_SUM;
        for (size_t at = 0; at < n; at += DIST_CHUNK) {
            int c = (int)(n - at < DIST_CHUNK ? n - at : DIST_CHUNK);
            char *p = (char *)buf + at * type_size[t];
            if (t == DIST_I64) {
                MPI_Allreduce(MPI_IN_PLACE, p, c, mpi_type(t), mop, MPI_COMM_WORLD);
            } else {
                MPI_Reduce(d->rank ? p : MPI_IN_PLACE, p, c, mpi_type(t), mop, 0, MPI_COMM_WORLD);
                MPI_Bcast(p, c, mpi_type(t), 0, MPI_COMM_WORLD);
            }
        }
    }
#endif
    if (op == DIST_AVG && d->world > 1) {
        for (size_t i = 0; i < n; i++) {
            if (t == DIST_F32) ((float *)buf)[i] /= (float)d->world;
            else if (t == DIST_F64) ((double *)buf)[i] /= d->world;
            else ((int64_t *)buf)[i] /= d->world;
        }
    }
    return 0;
}

int dist_broadcast(Dist *d, void *buf, size_t n_bytes, int root, char *err, size_t err_len) {
    if (root < 0 || root >= d->world)
        return err_set(err, err_len, "dist: broadcast root %d outside 0..%d", root, d->world - 1);
#ifdef DAPT_HAVE_MPI
    if (d->mpi && d->world > 1)
        for (size_t at = 0; at < n_bytes; at += DIST_CHUNK) {
            int c = (int)(n_bytes - at < DIST_CHUNK ? n_bytes - at : DIST_CHUNK);
            MPI_Bcast((char *)buf + at, c, MPI_BYTE, root, MPI_COMM_WORLD);
        }
#else
    (void)buf, (void)n_bytes;
#endif
    return 0;
}

int dist_allgather(Dist *d, void *buf, const size_t *counts, DistType t, char *err,
                   size_t err_len) {
    if (bad_type(t, err, err_len)) return 1;
#ifdef DAPT_HAVE_MPI
    if (d->mpi && d->world > 1) {
        int *cnt = mpi_counts(d, counts, err, err_len);
        if (!cnt) return 1;
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, cnt + d->world, mpi_type(t),
                       MPI_COMM_WORLD);
        free(cnt);
        return 0;
    }
#endif
    (void)d, (void)buf, (void)counts;
    return 0;
}

int dist_reduce_scatter(Dist *d, void *buf, const size_t *counts, DistType t, char *err,
                        size_t err_len) {
    if (bad_type(t, err, err_len)) return 1;
#ifdef DAPT_HAVE_MPI
    if (d->mpi && d->world > 1) {
        int *cnt = mpi_counts(d, counts, err, err_len);
        if (!cnt) return 1;
        /* MPI's in-place reduce-scatter leaves rank r's piece at the start
         * of buf; move it to its own offset */
        size_t es = type_size[t];
        MPI_Reduce_scatter(MPI_IN_PLACE, buf, cnt, mpi_type(t), MPI_SUM, MPI_COMM_WORLD);
        size_t off = (size_t)cnt[d->world + d->rank];
        if (off) memmove((char *)buf + off * es, buf, (size_t)cnt[d->rank] * es);
        free(cnt);
        return 0;
    }
#endif
    (void)d, (void)buf, (void)counts;
    return 0;
}

int dist_gather(Dist *d, const void *piece, void *buf, const size_t *counts, DistType t,
                int root, char *err, size_t err_len) {
    if (bad_type(t, err, err_len)) return 1;
    if (root < 0 || root >= d->world)
        return err_set(err, err_len, "dist: gather to rank %d of %d", root, d->world);
    size_t es = type_size[t], off = 0;
    for (int r = 0; r < d->rank; r++) off += counts[r];
    if (d->rank == root && counts[root] && (char *)buf + off * es != (const char *)piece)
        memmove((char *)buf + off * es, piece, counts[root] * es);
#ifdef DAPT_HAVE_MPI
    if (d->mpi && d->world > 1) {
        /* point to point in chunks: pieces and offsets may pass MPI's int */
        if (d->rank != root) {
            for (size_t at = 0; at < counts[d->rank]; at += DIST_CHUNK) {
                size_t c = counts[d->rank] - at < DIST_CHUNK ? counts[d->rank] - at : DIST_CHUNK;
                MPI_Send((const char *)piece + at * es, (int)c, mpi_type(t), root, 7,
                         MPI_COMM_WORLD);
            }
            return 0;
        }
        off = 0;
        for (int r = 0; r < d->world; r++) {
            for (size_t at = 0; r != root && at < counts[r]; at += DIST_CHUNK) {
                size_t c = counts[r] - at < DIST_CHUNK ? counts[r] - at : DIST_CHUNK;
                MPI_Recv((char *)buf + (off + at) * es, (int)c, mpi_type(t), r, 7,
                         MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            }
            off += counts[r];
        }
    }
#endif
    return 0;
}

int dist_barrier(Dist *d, char *err, size_t err_len) {
    (void)err, (void)err_len;
#ifdef DAPT_HAVE_MPI
    if (d->mpi && d->world > 1) MPI_Barrier(MPI_COMM_WORLD);
#else
    (void)d;
#endif
    return 0;
}

#ifndef DAPT_HAVE_NCCL
/* trainer/dist_nccl.h in a build without CUDA or nccl.h */
#include "trainer/dist_nccl.h"

static int no_nccl(char *err, size_t err_len) {
    return err_set(err, err_len,
                   "this dapt was built without NCCL (it needs the CUDA toolkit "
                   "and nccl.h at build time)");
}
int dist_nccl_init(Dist *d, double timeout_s, int grouped, DistNccl **out, char *err,
                   size_t err_len) {
    (void)d, (void)timeout_s, (void)grouped;
    *out = NULL;
    return no_nccl(err, err_len);
}
void dist_nccl_free(DistNccl *c) { (void)c; }
void dist_nccl_set_stream(DistNccl *c, void *stream) { (void)c, (void)stream; }
int dist_nccl_device(const DistNccl *c) { return (void)c, -1; }
const char *dist_nccl_version(const DistNccl *c) { return (void)c, "none"; }
int dist_nccl_allreduce_sum(DistNccl *c, void *buf, size_t n, size_t elem_bytes, char *err,
                            size_t err_len) {
    (void)c, (void)buf, (void)n, (void)elem_bytes;
    return no_nccl(err, err_len);
}
int dist_nccl_reduce_scatter_sum(DistNccl *c, void *buf, const size_t *counts, size_t elem_bytes,
                                 char *err, size_t err_len) {
    (void)c, (void)buf, (void)counts, (void)elem_bytes;
    return no_nccl(err, err_len);
}
int dist_nccl_allgather(DistNccl *c, void *buf, const size_t *counts, size_t elem_bytes,
                        char *err, size_t err_len) {
    (void)c, (void)buf, (void)counts, (void)elem_bytes;
    return no_nccl(err, err_len);
}
int dist_nccl_buckets_begin(DistNccl *c, void *buf, size_t n, size_t elem_bytes,
                            size_t bucket_elems, const size_t *pieces, void *compute_stream,
                            char *err, size_t err_len) {
    (void)c, (void)buf, (void)n, (void)elem_bytes, (void)bucket_elems, (void)pieces;
    (void)compute_stream;
    return no_nccl(err, err_len);
}
int dist_nccl_buckets_ready(void *ctx, size_t offset, char *err, size_t err_len) {
    (void)ctx, (void)offset;
    return no_nccl(err, err_len);
}
int dist_nccl_buckets_finish(DistNccl *c, char *err, size_t err_len) {
    (void)c;
    return no_nccl(err, err_len);
}
int dist_nccl_gather_begin(DistNccl *c, void *buf, size_t n, size_t elem_bytes, size_t chunk_elems,
                           const size_t *pieces, void *compute_stream, char *err, size_t err_len) {
    (void)c, (void)buf, (void)n, (void)elem_bytes, (void)chunk_elems, (void)pieces;
    (void)compute_stream;
    return no_nccl(err, err_len);
}
int dist_nccl_gather_needed(void *ctx, size_t end, char *err, size_t err_len) {
    (void)ctx, (void)end;
    return no_nccl(err, err_len);
}
int dist_nccl_gather_finish(DistNccl *c, char *err, size_t err_len) {
    (void)c;
    return no_nccl(err, err_len);
}
/* the non-blocking sum of trainer/dist_nccl.h in a build without NCCL */
int dist_nccl_isum_i64_begin(DistNccl *c, int64_t *buf, size_t n, char *err, size_t err_len) {
    (void)c, (void)buf, (void)n;
    return no_nccl(err, err_len);
}
int dist_nccl_isum_i64_finish(DistNccl *c, char *err, size_t err_len) {
    (void)c;
    return no_nccl(err, err_len);
}
int dist_nccl_moe_sum_begin(void *ctx, int64_t *buf, size_t n, void **req, char *err,
                            size_t err_len) {
    (void)ctx, (void)buf, (void)n;
    *req = NULL;
    return no_nccl(err, err_len);
}
int dist_nccl_moe_sum_finish(void *ctx, void *req, char *err, size_t err_len) {
    (void)ctx, (void)req;
    return no_nccl(err, err_len);
}
#endif

/* ---------------- non-blocking int64 sum (dist.h) ---------------- */

/* the request: the caller's buffer, and the values in flight (MPI: the
 * send copy then the receive buffer, 2 n; single: the copy, n) */
struct DistRequest {
    int64_t *dst;
    size_t n;
#ifdef DAPT_HAVE_MPI
    MPI_Request mpi; /* MPI_REQUEST_NULL: nothing in flight (single) */
#endif
    int64_t vals[];
};

int dist_iallreduce_sum_i64_begin(Dist *d, int64_t *buf, size_t n, DistRequest **req, char *err,
                                  size_t err_len) {
    *req = NULL;
    if (n > (size_t)0x7fffffff)
        return err_set(err, err_len,
                       "dist: non-blocking sum of %zu values exceeds MPI's int counts", n);
    DistRequest *r = malloc(sizeof *r + 2 * n * sizeof(int64_t));
    if (!r) return err_set(err, err_len, "out of memory");
    r->dst = buf, r->n = n;
    memcpy(r->vals, buf, n * sizeof(int64_t));
#ifdef DAPT_HAVE_MPI
    r->mpi = MPI_REQUEST_NULL;
    if (d->mpi && d->world > 1)
        MPI_Iallreduce(r->vals, r->vals + n, (int)n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD, &r->mpi);
#else
    (void)d;
#endif
    *req = r;
    return 0;
}

int dist_iallreduce_finish(Dist *d, DistRequest *req, char *err, size_t err_len) {
    (void)d;
    if (!req) return err_set(err, err_len, "dist: finish of a sum that was not begun");
    const int64_t *sum = req->vals;
#ifdef DAPT_HAVE_MPI
    if (req->mpi != MPI_REQUEST_NULL) {
        MPI_Wait(&req->mpi, MPI_STATUS_IGNORE);
        sum = req->vals + req->n;
    }
#endif
    memcpy(req->dst, sum, req->n * sizeof(int64_t));
    free(req);
    return 0;
}

int dist_moe_sum_begin(void *ctx, int64_t *buf, size_t n, void **req, char *err, size_t err_len) {
    DistRequest *r = NULL;
    int rc = dist_iallreduce_sum_i64_begin((Dist *)ctx, buf, n, &r, err, err_len);
    *req = r;
    return rc;
}

int dist_moe_sum_finish(void *ctx, void *req, char *err, size_t err_len) {
    return dist_iallreduce_finish((Dist *)ctx, (DistRequest *)req, err, err_len);
}

