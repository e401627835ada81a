/* test_dist.c: trainer/dist.h for any world size. Run plainly it checks the
 * single-process backend (no MPI call is made: the launcher variables are
 * absent); run under `mpirun -np 3` (tests/dist/tests.cmake) it checks the
 * MPI collectives with rank-dependent data whose results are known exactly
 * (small integers in floats, so every summation order gives the same bits):
 * sum/avg/max allreduce, broadcast from a non-zero root, allgather and
 * reduce-scatter of uneven pieces, gather to a root, the shard split, and
 * the non-blocking int64 sum of the MoE count hooks.
 */
#include <stdlib.h>

#include "tests/c/check.h"
#include "trainer/dist.h"

/* rank r's value at index i */
static float val(int r, size_t i) { return (float)(r * 100 + (int)i); }

/* The non-blocking int64 sum (the MoE counts' hooks): rank-distinct values
 * beyond 2^32; between begin and finish the buffer is overwritten with
 * garbage and a blocking allreduce runs (the caller may do both), so the
 * sums must come from the values at begin and land in buf at finish
 * exactly; a finish that wrote nothing, or early, leaves the garbage or the
 * caller's values. Two rounds through the MoE hooks' signatures too. */
static void test_isum(Dist *d, int rank, int W) {
    char err[256] = "";
    enum { M = 37 };
    int64_t buf[M], want[M], other = rank + 1;
    for (int i = 0; i < M; i++) {
        buf[i] = ((int64_t)(rank + 1) << 33) + i * (rank + 1);
        want[i] = 0;
        for (int r = 0; r < W; r++) want[i] += ((int64_t)(r + 1) << 33) + i * (r + 1);
    }
    DistRequest *req = NULL;
    CHECK(dist_iallreduce_sum_i64_begin(d, buf, M, &req, err, sizeof err) == 0 && req, "%s", err);
    for (int i = 0; i < M; i++) buf[i] = -7;
    CHECK(dist_allreduce(d, &other, 1, DIST_I64, DIST_SUM, err, sizeof err) == 0 &&
              other == (int64_t)W * (W + 1) / 2,
          "blocking sum between begin and finish: %lld (%s)", (long long)other, err);
    CHECK(dist_iallreduce_finish(d, req, err, sizeof err) == 0, "%s", err);
    int bad = 0;
    for (int i = 0; i < M; i++) bad += buf[i] != want[i];
    CHECK(bad == 0, "non-blocking sum: %d of %d wrong (buf[1] = %lld, want %lld)", bad, M,
          (long long)buf[1], (long long)want[1]);
    for (int round = 0; round < 2; round++) {
        void *r = NULL;
        int64_t v[2] = {rank, -(int64_t)rank * round};
        CHECK(dist_moe_sum_begin(d, v, 2, &r, err, sizeof err) == 0 && r, "%s", err);
        CHECK(dist_moe_sum_finish(d, r, err, sizeof err) == 0, "%s", err);
        CHECK(v[0] == (int64_t)W * (W - 1) / 2 && v[1] == -(int64_t)W * (W - 1) / 2 * round,
              "hook round %d: %lld %lld", round, (long long)v[0], (long long)v[1]);
    }
    CHECK(dist_iallreduce_finish(d, NULL, err, sizeof err) != 0, "finish without begin");
    CHECK_MSG(err, "not begun");
}

int main(void) {
    char err[256] = "";
    Dist *d = NULL;
    CHECK(dist_init(&d, err, sizeof err) == 0, "%s", err);
    if (!d) return CHECK_DONE();
    int rank = dist_rank(d), W = dist_world(d);
    CHECK(rank >= 0 && rank < W, "rank %d of %d", rank, W);
    CHECK(dist_local_rank(d) >= 0 && dist_local_rank(d) <= rank, "local rank %d",
          dist_local_rank(d));
    CHECK(!strcmp(dist_backend(d), W > 1 ? "mpi" : dist_backend(d)) &&
              (!strcmp(dist_backend(d), "mpi") || !strcmp(dist_backend(d), "single")),
          "backend %s with world %d", dist_backend(d), W);
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK"))
        CHECK(!strcmp(dist_backend(d), "single"), "no launcher, but backend %s", dist_backend(d));

    /* shards: cover [0, n) in order, sizes differ by at most one */
    size_t ns[] = {0, 1, 2, 7, 139584, 1000003};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int w = 1; w <= 5; w++) {
            size_t next = 0, lo = (size_t)-1, hi = 0;
            for (int r = 0; r < w; r++) {
                size_t off, cnt;
                dist_shard(ns[k], w, r, &off, &cnt);
                CHECK(off == next, "n %zu world %d rank %d: offset %zu, expected %zu", ns[k], w, r,
                      off, next);
                next = off + cnt;
                lo = cnt < lo ? cnt : lo, hi = cnt > hi ? cnt : hi;
            }
            CHECK(next == ns[k] && hi - lo <= 1, "n %zu world %d: covers %zu, sizes %zu..%zu",
                  ns[k], w, next, lo, hi);
        }

    /* allreduce: sum, avg, max of floats, doubles, int64 */
    enum { N = 1001 };
    float *f = malloc(sizeof(float) * N);
    double dd[3];
    int64_t q[2];
    for (size_t i = 0; i < N; i++) f[i] = val(rank, i);
    CHECK(dist_allreduce(d, f, N, DIST_F32, DIST_SUM, err, sizeof err) == 0, "%s", err);
    int bad = 0;
    for (size_t i = 0; i < N; i++) {
        float want = 0;
        for (int r = 0; r < W; r++) want += val(r, i);
        bad += f[i] != want;
    }
    CHECK(bad == 0, "%d wrong sums", bad);
    dd[0] = rank + 1, dd[1] = -rank, dd[2] = 2.0 * W;
    CHECK(dist_allreduce(d, dd, 3, DIST_F64, DIST_AVG, err, sizeof err) == 0, "%s", err);
    CHECK(dd[0] == (W + 1) / 2.0 && dd[1] == -(W - 1) / 2.0 && dd[2] == 2.0 * W,
          "avg %g %g %g", dd[0], dd[1], dd[2]);
    dd[0] = rank == W - 1 ? 7.5 : -1;
    CHECK(dist_allreduce(d, dd, 1, DIST_F64, DIST_MAX, err, sizeof err) == 0 && dd[0] == 7.5,
          "max %g", dd[0]);
    q[0] = (int64_t)1 << 40, q[1] = rank;
    CHECK(dist_allreduce(d, q, 2, DIST_I64, DIST_SUM, err, sizeof err) == 0, "%s", err);
    CHECK(q[0] == ((int64_t)W << 40) && q[1] == (int64_t)W * (W - 1) / 2, "i64 %lld %lld",
          (long long)q[0], (long long)q[1]);
    test_isum(d, rank, W);
    CHECK(dist_allreduce(d, q, 1, (DistType)9, DIST_SUM, err, sizeof err) != 0, "bad type");
    CHECK_MSG(err, "unknown element type");

    /* broadcast from the last rank */
    char msg[32];
    snprintf(msg, sizeof msg, "from rank %d", rank);
    CHECK(dist_broadcast(d, msg, sizeof msg, W - 1, err, sizeof err) == 0, "%s", err);
    char want[32];
    snprintf(want, sizeof want, "from rank %d", W - 1);
    CHECK(!strcmp(msg, want), "broadcast gave '%s'", msg);
    CHECK(dist_broadcast(d, msg, 1, W, err, sizeof err) != 0, "root out of range");
    CHECK_MSG(err, "broadcast root");

    /* allgather and reduce-scatter of uneven pieces of N */
    size_t *pieces = malloc(sizeof(size_t) * W), my_off = 0, my_n = 0;
    for (int r = 0; r < W; r++) {
        size_t o;
        dist_shard(N, W, r, &o, &pieces[r]);
        if (r == rank) my_off = o, my_n = pieces[r];
    }
    for (size_t i = 0; i < N; i++) f[i] = -1;
    for (size_t i = my_off; i < my_off + my_n; i++) f[i] = val(rank, i);
    CHECK(dist_allgather(d, f, pieces, DIST_F32, err, sizeof err) == 0, "%s", err);
    bad = 0;
    for (int r = 0, i = 0; r < W; r++)
        for (size_t k = 0; k < pieces[r]; k++, i++) bad += f[i] != val(r, (size_t)i);
    CHECK(bad == 0, "%d wrong gathered values", bad);
    for (size_t i = 0; i < N; i++) f[i] = val(rank, i);
    CHECK(dist_reduce_scatter(d, f, pieces, DIST_F32, err, sizeof err) == 0, "%s", err);
    bad = 0;
    for (size_t i = my_off; i < my_off + my_n; i++) {
        float s = 0;
        for (int r = 0; r < W; r++) s += val(r, i);
        bad += f[i] != s;
    }
    CHECK(bad == 0, "%d wrong values in rank %d's reduced piece", bad, rank);
    /* gather of uneven pieces to rank 0 and to the last rank: only the root
     * gets them, from separate piece buffers (int64 as the second type) */
    for (int root = 0; root < W; root += W > 1 ? W - 1 : 1) {
        int64_t *piece = malloc(sizeof(int64_t) * (my_n + 1)), *all = NULL;
        for (size_t k = 0; k < my_n; k++) piece[k] = 1000 * rank + (int64_t)(my_off + k);
        if (rank == root) {
            all = malloc(sizeof(int64_t) * N);
            for (size_t i = 0; i < N; i++) all[i] = -1;
        }
        CHECK(dist_gather(d, piece, all, pieces, DIST_I64, root, err, sizeof err) == 0, "%s", err);
        bad = 0;
        for (int r = 0, i = 0; all && r < W; r++)
            for (size_t k = 0; k < pieces[r]; k++, i++) bad += all[i] != 1000 * r + i;
        CHECK(bad == 0, "%d wrong values gathered on root %d", bad, root);
        free(piece), free(all);
    }
    CHECK(dist_gather(d, f, f, pieces, DIST_F32, W, err, sizeof err) != 0,
          "gather root out of range");
    CHECK_MSG(err, "gather to rank");
    CHECK(dist_barrier(d, err, sizeof err) == 0, "%s", err);

    free(pieces), free(f);
    int rc = CHECK_DONE();
    dist_free(d);
    return rc;
}
