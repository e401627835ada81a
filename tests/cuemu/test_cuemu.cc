/* test_cuemu.cc: the emulator's own checks (tests/cuemu/cuemu.h), kernels
 * written here against plain host loops:
 * - mma.m16n8k16: fragments gathered by the PTX ISA's layout from random
 *   A (16 x 16) and B (16 x 8) matrices; D = C + A B against a loop;
 * - ldmatrix.x4 and .trans: the registers against the same layout read
 *   straight from shared memory;
 * - cp.async: nothing lands before its group is waited for; zero-fill;
 * - shuffles (xor, idx, down), __syncthreads between warps, static shared
 *   memory, grid-stride indices over a 3-d grid, kernel parameters as
 *   per-thread copies;
 * - faults the emulator must stop on (each in a child process, which must
 *   die with the emulator's message): a barrier one warp skips, lanes of a
 *   warp in different collectives, > 48 KiB of dynamic shared memory
 *   without cudaFuncSetAttribute, an ldmatrix address outside shared memory,
 *   a read one element past the end of a cudaMalloc'd buffer;
 * - streams with deferred work (cuemu_stream_defer, what the emulated NCCL
 *   uses): it starts when first in line, finishes only when waited for;
 *   copies and events queue behind it, a launch on its stream or a
 *   synchronous copy after a blocking stream finishes it, other streams
 *   run on; cuemu_device_range.
 * Exit 0 when all pass. */
#include "tests/cuemu/cuemu.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/c/check.h"

typedef __nv_bfloat16 bf16;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) / 16777216.0) * 2.0f - 1.0f;
}
static float bfr(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

static uint32_t pk(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | (uint32_t)__bfloat16_as_ushort(hi) << 16;
}

/* ---- mma ---- */

static void mma_kernel(float *D, const bf16 *A, const bf16 *B, const float *C) {
    int l = threadIdx.x, g = l / 4, t = l % 4;
    uint32_t a[4] = {pk(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]),
                     pk(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                     pk(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                     pk(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
    /* B is 16 x 8 row-major: B[k][n] at k * 8 + n */
    uint32_t b0 = pk(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
    uint32_t b1 = pk(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
    float d[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                  C[(g + 8) * 8 + 2 * t + 1]};
    cuemu::mma_bf16_16816(d, a, b0, b1);
    D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

static void check_mma(void) {
    bf16 A[256], B[128];
    float C[128], D[128];
    for (int i = 0; i < 256; i++) A[i] = __float2bfloat16_rn(urand());
    for (int i = 0; i < 128; i++) B[i] = __float2bfloat16_rn(urand()), C[i] = urand();
    cuemu::launch(mma_kernel, 1, 32)(D, A, B, C);
    cudaDeviceSynchronize();
    double worst = 0;
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            double s = C[r * 8 + n];
            for (int k = 0; k < 16; k++) s += (double)(float)A[r * 16 + k] * (float)B[k * 8 + n];
            worst = fmax(worst, fabs(s - D[r * 8 + n]));
        }
    CHECK(worst < 1e-5, "mma: worst |D - (C + A B)| = %g", worst);
}

/* ---- ldmatrix ---- */

/* four 8 x 8 matrices side by side in a 8 x 40 shared tile (row stride 40
 * elements, 80 bytes: 16-byte aligned rows); r[i] of every lane, plain and
 * transposed, into out[(trans 4 + i) 32 + lane] */
static void ldsm_kernel(uint32_t *out, const bf16 *src) {
    bf16 *S = (bf16 *)cuemu::dyn_smem();
    int l = threadIdx.x;
    for (int i = l; i < 8 * 40; i += 32) S[i] = src[i];
    __syncthreads();
    for (int trans = 0; trans < 2; trans++) {
        uint32_t r[4];
        /* lane l: row l % 8 of matrix l / 8 (columns 8 (l / 8)..) */
        cuemu::ldmatrix_x4(r, S + (l % 8) * 40 + (l / 8) * 8, trans);
        for (int i = 0; i < 4; i++) out[(trans * 4 + i) * 32 + l] = r[i];
    }
}

/* rows 128 bytes apart: all 8 rows of a matrix in the same banks */
static void ldsm_conflict_kernel(void) {
    bf16 *S = (bf16 *)cuemu::dyn_smem();
    uint32_t r[4];
    cuemu::ldmatrix_x4(r, S + threadIdx.x * 64, 0);
}

static void check_ldmatrix(void) {
    bf16 src[8 * 40];
    for (int i = 0; i < 8 * 40; i++) src[i] = __float2bfloat16_rn((float)i);
    uint32_t out[8 * 32];
    cuemu::launch(ldsm_kernel, 1, 32, 8 * 40 * sizeof(bf16))(out, src);
    cudaDeviceSynchronize();
    int bad = 0;
    for (int trans = 0; trans < 2; trans++)
        for (int i = 0; i < 4; i++)
            for (int l = 0; l < 32; l++) {
                /* matrix i element (row, col) is src[row * 40 + 8 i + col] */
                int r = l / 4, c = 2 * (l % 4);
                float want0 = trans ? (float)(c * 40 + 8 * i + r) : (float)(r * 40 + 8 * i + c);
                float want1 =
                    trans ? (float)((c + 1) * 40 + 8 * i + r) : (float)(r * 40 + 8 * i + c + 1);
                uint32_t v = out[(trans * 4 + i) * 32 + l];
                float got0 = cuemu_u2f(v << 16), got1 = cuemu_u2f(v & 0xffff0000u);
                bad += got0 != bfr(want0) || got1 != bfr(want1);
            }
    CHECK(bad == 0, "ldmatrix: %d registers differ from the layout", bad);
    /* the 80-byte rows above: 8 distinct 16-byte slots mod 128, no conflict
     * (two matrices of 4 each: plain and .trans); 128-byte rows: 8-way */
    long mats, extra;
    cuemu::ldmatrix_stats(&mats, &extra);
    CHECK(mats == 8 && extra == 0, "ldmatrix: %ld matrices, %ld extra wavefronts (want 8, 0)", mats,
          extra);
    cuemu::launch(ldsm_conflict_kernel, 1, 32, 32 * 128)();
    cudaDeviceSynchronize();
    long mats2, extra2;
    cuemu::ldmatrix_stats(&mats2, &extra2);
    CHECK(mats2 - mats == 4 && extra2 - extra == 4 * 7,
          "ldmatrix at a 128-byte row stride: %ld extra wavefronts, want 28", extra2 - extra);
}

/* ---- cp.async ---- */

static void cp_kernel(float *out, const float *src) {
    float *S = (float *)cuemu::dyn_smem();
    int l = threadIdx.x;
    if (l < 2) {
        cuemu::cp_async16(S + 4 * l, src + 4 * l, l == 0); /* lane 1: zero-fill */
        cuemu::cp_async_commit();
        cuemu::cp_async16(S + 8 + 4 * l, src + 8 + 4 * l, 1);
        cuemu::cp_async_commit();
        out[l] = S[4 * l]; /* before any wait: still the NaN fill */
        cuemu::cp_async_wait(1);
        out[2 + l] = S[4 * l];     /* the first group landed */
        out[4 + l] = S[8 + 4 * l]; /* the second not yet */
        cuemu::cp_async_wait(0);
        out[6 + l] = S[8 + 4 * l];
    }
}

static void check_cp_async(void) {
    float src[16], out[8];
    for (int i = 0; i < 16; i++) src[i] = (float)(i + 1);
    cuemu::launch(cp_kernel, 1, 32, 64)(out, src);
    cudaDeviceSynchronize();
    CHECK(isnan(out[0]) && isnan(out[1]), "cp.async: data visible before the wait (%g %g)", out[0],
          out[1]);
    CHECK(out[2] == 1.0f && out[3] == 0.0f, "cp.async: first group %g %g, want 1 0", out[2],
          out[3]);
    CHECK(isnan(out[4]) && isnan(out[5]), "cp.async: second group landed early (%g %g)", out[4],
          out[5]);
    CHECK(out[6] == 9.0f && out[7] == 13.0f, "cp.async: second group %g %g, want 9 13", out[6],
          out[7]);
}

/* A double-buffered pipeline, as the fused attention's: stage s + 1 is
 * copied into one buffer while every thread reads stage s (what another
 * warp copied) from the other; the barrier at the end of a stage keeps the
 * next copy into a buffer from overwriting what slower warps still read.
 * 64 threads; threads 0-15 copy a stage's 64 floats, 16 bytes each. */
static void pipe_kernel(float *out, const float *src, int stages, int end_barrier) {
    float *S = (float *)cuemu::dyn_smem(); /* (2, 64) */
    int t = (int)threadIdx.x;
    float acc = 0.0f;
    if (t < 16) cuemu::cp_async16(S + 4 * t, src + 4 * t, 1);
    cuemu::cp_async_commit();
    for (int s = 0; s < stages; s++) {
        if (s + 1 < stages && t < 16)
            cuemu::cp_async16(S + 64 * ((s + 1) % 2) + 4 * t, src + 64 * (s + 1) + 4 * t, 1);
        cuemu::cp_async_commit();
        cuemu::cp_async_wait(1);
        __syncthreads();
        acc += S[64 * (s % 2) + 63 - t];
        if (end_barrier) __syncthreads();
    }
    out[t] = acc;
}

/* without the end-of-stage barrier, a buffer's next copy is issued while
 * other warps still read it: its bytes are NaN from the issue (a GPU may
 * land them then), in both block and thread orders */
static void check_cp_async_reuse(void) {
    const int stages = 4;
    float src[4 * 64], out[64];
    for (int i = 0; i < stages * 64; i++) src[i] = (float)(i % 97);
    for (int rev = 0; rev < 2; rev++) {
        if (rev) setenv("CUEMU_ORDER", "reverse", 1);
        for (int barrier = 1; barrier >= 0; barrier--) {
            cuemu::launch(pipe_kernel, 1, 64, 2 * 64 * sizeof(float))(out, src, stages, barrier);
            cudaDeviceSynchronize();
            int wrong = 0, nan = 0;
            for (int t = 0; t < 64; t++) {
                float want = 0.0f;
                for (int s = 0; s < stages; s++) want += src[64 * s + 63 - t];
                wrong += out[t] != want;
                nan += isnan(out[t]);
            }
            if (barrier)
                CHECK(wrong == 0, "cp.async pipeline (%s): %d wrong sums",
                      rev ? "reverse" : "forward", wrong);
            else
                CHECK(nan > 0, "cp.async into a buffer other warps still read (%s order): not seen",
                      rev ? "reverse" : "forward");
        }
    }
    unsetenv("CUEMU_ORDER");
}

/* ---- shuffles, barriers, static shared memory, grids, parameters ---- */

static void warp_kernel(int *out) {
    int l = threadIdx.x % 32, w = threadIdx.x / 32;
    int x = __shfl_xor_sync(0xffffffffu, l * 10 + w, 5);
    float s = __shfl_sync(0xffffffffu, (float)l, 7);
    int d = __shfl_down_sync(0xffffffffu, l, 3);
    out[threadIdx.x * 3] = x, out[threadIdx.x * 3 + 1] = (int)s, out[threadIdx.x * 3 + 2] = d;
}

static void block_kernel(int *out, int n) {
    __shared__ int sh[64];
    sh[threadIdx.x] = (int)threadIdx.x * n;
    __syncthreads();
    /* every thread reads what another warp wrote */
    out[blockIdx.x * 64 + threadIdx.x] = sh[63 - threadIdx.x] + (int)blockIdx.x;
    n = -1; /* a parameter is the thread's own copy */
}

static void grid_kernel(int *count, size_t total) {
    size_t id = ((size_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    size_t i = id * blockDim.x * blockDim.y + threadIdx.y * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * gridDim.y * gridDim.z * blockDim.x * blockDim.y;
    for (; i < total; i += stride) count[i]++;
}

static void check_threads(void) {
    int out[64 * 3];
    cuemu::launch(warp_kernel, 1, 64)(out);
    cudaDeviceSynchronize();
    int bad = 0;
    for (int t = 0; t < 64; t++) {
        int l = t % 32, w = t / 32;
        bad += out[t * 3] != (l ^ 5) * 10 + w;
        bad += out[t * 3 + 1] != 7;
        bad += out[t * 3 + 2] != (l + 3 < 32 ? l + 3 : l);
    }
    CHECK(bad == 0, "shuffles: %d wrong values", bad);

    int b[3 * 64];
    cuemu::launch(block_kernel, 3, 64)(b, 2);
    cudaDeviceSynchronize();
    bad = 0;
    for (int k = 0; k < 3; k++)
        for (int t = 0; t < 64; t++) bad += b[k * 64 + t] != (63 - t) * 2 + k;
    CHECK(bad == 0, "__syncthreads / static shared memory / parameters: %d wrong values", bad);

    static int count[10007];
    cuemu::launch(grid_kernel, dim3(3, 2, 2), dim3(8, 4))(count, (size_t)10007);
    cudaDeviceSynchronize();
    bad = 0;
    for (int i = 0; i < 10007; i++) bad += count[i] != 1;
    CHECK(bad == 0, "grid-stride loop over a 3-d grid: %d elements not visited once", bad);
}

/* CUEMU_ORDER=reverse: blocks and threads run last first */
static void order_kernel(int *order, int *counter) {
    if (threadIdx.x == 0) order[blockIdx.x] = atomicAdd(counter, 1);
    __syncthreads();
    if (blockIdx.x == 0) order[4 + threadIdx.x] = atomicAdd(counter, 1);
}

static void check_order(void) {
    for (int rev = 0; rev < 2; rev++) {
        if (rev)
            setenv("CUEMU_ORDER", "reverse", 1);
        else
            unsetenv("CUEMU_ORDER");
        int order[4 + 32], counter = 0;
        cuemu::launch(order_kernel, 4, 32)(order, &counter);
        cudaDeviceSynchronize();
        /* blocks in order (or reversed); after the barrier the thread that
         * completed it goes on first, the others in order (or reversed) */
        int bad = 0;
        for (int b = 0; b < 3; b++) bad += rev ? order[b] < order[b + 1] : order[b] > order[b + 1];
        for (int t = 1; t < 30; t++)
            bad += rev ? order[4 + t] < order[5 + t] : order[4 + t] > order[5 + t];
        CHECK(bad == 0, "CUEMU_ORDER=%s: %d launches out of order", rev ? "reverse" : "(unset)",
              bad);
    }
    unsetenv("CUEMU_ORDER");
}

/* ---- faults ---- */

/* half a warp waits at the barrier for the other half, which waits in a
 * shuffle for the first */
static void skip_barrier_kernel(void) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        (void)__shfl_xor_sync(0xffffffffu, 1, 1);
}
static void mixed_collective_kernel(void) {
    uint32_t r[4];
    if (threadIdx.x < 16)
        (void)__shfl_xor_sync(0xffffffffu, 1, 1);
    else
        cuemu::ldmatrix_x4(r, cuemu::dyn_smem(), 0);
}
static void nothing_kernel(void) {}
static void ldsm_global_kernel(const bf16 *p) {
    uint32_t r[4];
    cuemu::ldmatrix_x4(r, p, 0);
}

static void past_end_kernel(float *out, const float *in, int n) { out[0] = in[n]; }
static void run_past_end(void) {
    float *in, *out;
    cudaMalloc(&in, 64 * sizeof(float)); /* 256 bytes: ends at the guard page */
    cudaMalloc(&out, sizeof(float));
    cuemu::launch(past_end_kernel, 1, 32)(out, in, 64);
    cudaDeviceSynchronize();
}
static void in_bounds(void) {
    float *in, *out;
    cudaMalloc(&in, 64 * sizeof(float));
    cudaMalloc(&out, sizeof(float));
    cuemu::launch(past_end_kernel, 1, 32)(out, in, 63);
    cudaDeviceSynchronize();
    size_t cur, peak;
    cuemu::device_bytes(&cur, &peak);
    cudaFree(in), cudaFree(out);
    size_t cur2, peak2;
    cuemu::device_bytes(&cur2, &peak2);
    CHECK(cur - cur2 == 65 * sizeof(float) && peak2 >= 65 * sizeof(float),
          "device_bytes: %zu freed (want 260), peak %zu", cur - cur2, peak2);
}

/* runs f in a child; it must die, and its stderr must contain `want` */
static int dies_with(void (*f)(void), const char *want) {
    int fd[2];
    if (pipe(fd)) return 0;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        f();
        cudaDeviceSynchronize(); /* the queued launch runs */
        _exit(0);
    }
    close(fd[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof buf - 1 && (k = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
    buf[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    int ok = !(WIFEXITED(st) && WEXITSTATUS(st) == 0) && strstr(buf, want);
    if (!ok) fprintf(stderr, "  child said: %s\n", buf);
    return ok;
}

static void run_skip_barrier(void) { cuemu::launch(skip_barrier_kernel, 1, 32)(); }
static void run_mixed(void) { cuemu::launch(mixed_collective_kernel, 1, 32, 512)(); }
static void run_big_smem(void) { cuemu::launch(nothing_kernel, 1, 32, 64 << 10)(); }
static void run_ldsm_global(void) {
    static bf16 g[64];
    cuemu::launch(ldsm_global_kernel, 1, 32)(g);
    cudaDeviceSynchronize();
}

static void check_faults(void) {
    CHECK(dies_with(run_skip_barrier, "deadlock"), "a barrier one warp skips is not reported");
    CHECK(dies_with(run_mixed, "lane 0 in collective"),
          "lanes in different collectives are not reported");
    CHECK(dies_with(run_big_smem, "dynamic shared memory"),
          "64 KiB of dynamic shared memory passed");
    CHECK(dies_with(run_ldsm_global, "ldmatrix"), "ldmatrix from global memory passed");
    CHECK(dies_with(run_past_end, "memory fault"), "a read past the end of a buffer passed");
    in_bounds();
    /* and with the attribute set, the launch runs */
    cudaFuncSetAttribute(nothing_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10);
    cuemu::launch(nothing_kernel, 1, 32, 64 << 10)();
    cudaDeviceSynchronize();
}

/* deferred work that is done at its `need`-th non-waiting poll */
struct Deferred {
    int started, polls, need, done;
};
static int deferred_poll(void *ctx, int wait) {
    Deferred *d = (Deferred *)ctx;
    d->started = 1;
    if (wait < 0) return 0;
    if (wait || ++d->polls >= d->need) d->done = 1;
    return d->done;
}
static void add_one_kernel(float *x) { x[0] += 1.0f; }

/* deferred work that copies src's first float to dst when it starts */
struct Reader {
    const float *src;
    float got;
};
static int reader_poll(void *ctx, int wait) {
    Reader *r = (Reader *)ctx;
    if (wait < 0) r->got = r->src[0];
    return wait >= 0;
}

/* Kernels are queued, so work on one stream (a collective of the emulated
 * NCCL reads its input when it starts) sees another stream's kernels' results
 * only when it waits for them: without cudaStreamWaitEvent it reads what
 * was there before (dist_nccl.c's own_after_compute is this wait). */
static void check_cross_stream(cudaStream_t s, cudaStream_t nb, float *dev, cudaEvent_t ev) {
    cudaStreamSynchronize(nb);
    float before = dev[0];
    cuemu::launch(add_one_kernel, 1, 1, 0, nb)(dev);
    Reader r = {dev, -1.0f};
    cuemu_stream_defer(s, reader_poll, &r);
    CHECK(r.got == before, "no wait: the other stream's work read %g, want %g (the kernel not run)",
          r.got, before);
    cudaStreamSynchronize(s);
    cuemu::launch(add_one_kernel, 1, 1, 0, nb)(dev);
    cudaEventRecord(ev, nb);
    cudaStreamWaitEvent(s, ev, 0);
    Reader w = {dev, -1.0f};
    cuemu_stream_defer(s, reader_poll, &w);
    cudaStreamSynchronize(s);
    CHECK(w.got == before + 2.0f, "behind cudaStreamWaitEvent: read %g, want %g", w.got,
          before + 2.0f);
}

static void check_streams(void) {
    cudaStream_t s, nb;
    cudaStreamCreateWithFlags(&s, 0);
    cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking);
    float *dev, host = 5.0f, back = -1.0f;
    cudaMalloc(&dev, 4 * sizeof(float));
    CHECK(cuemu_device_range(dev + 1, 3 * sizeof(float)) && !cuemu_device_range(dev + 1, 16) &&
              !cuemu_device_range(&host, 4),
          "cuemu_device_range");
    cudaMemcpy(dev, &host, 4, cudaMemcpyHostToDevice);
    /* deferred work on nb, then a copy and an event behind it */
    Deferred a = {0, 0, 3, 0};
    cuemu_stream_defer(nb, deferred_poll, &a);
    CHECK(a.started && !a.done, "deferred work: started %d done %d, want 1 0", a.started, a.done);
    cudaMemcpyAsync(&back, dev, 4, cudaMemcpyDeviceToHost, nb);
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    cudaEventRecord(ev, nb);
    CHECK(back == -1.0f, "a copy behind deferred work ran at once (%g)", back);
    /* the other stream and synchronous copies run on (nb is non-blocking) */
    cuemu::launch(add_one_kernel, 1, 1, 0, s)(dev);
    float now = 0.0f;
    cudaMemcpy(&now, dev, 4, cudaMemcpyDeviceToHost);
    CHECK(now == 6.0f && !a.done, "another stream: %g (want 6), deferred done %d (want 0)", now,
          a.done);
    int ready = 0, queries = 0;
    for (; queries < 10 && !ready; queries++) ready = cudaEventQuery(ev) == cudaSuccess;
    CHECK(ready && queries == 3 && a.done && back == 6.0f,
          "event: ready %d after %d queries (want 3), deferred done %d, copy %g (want 6)", ready,
          queries, a.done, back);
    /* a launch is queued behind the stream's deferred work; it runs when
     * the host waits for the stream */
    Deferred b = {0, 0, 1000, 0};
    cuemu_stream_defer(nb, deferred_poll, &b);
    cuemu::launch(add_one_kernel, 1, 1, 0, nb)(dev);
    CHECK(!b.done && dev[0] == 6.0f, "a launch ran before the stream's deferred work (%g)", dev[0]);
    cudaStreamSynchronize(nb);
    CHECK(b.done && dev[0] == 7.0f, "synchronizing: deferred done %d, %g (want 1, 7)", b.done,
          dev[0]);
    /* a synchronous copy waits for a blocking stream */
    Deferred c = {0, 0, 1000, 0};
    cuemu_stream_defer(s, deferred_poll, &c);
    cudaMemcpy(&now, dev, 4, cudaMemcpyDeviceToHost);
    CHECK(c.done && now == 7.0f, "cudaMemcpy after a blocking stream: done %d, %g (want 1, 7)",
          c.done, now);
    /* cudaStreamWaitEvent: work queued on s behind the wait runs after
     * nb's deferred work, and only when s is advanced */
    Deferred d = {0, 0, 2, 0}, e = {0, 0, 1, 0};
    cuemu_stream_defer(nb, deferred_poll, &d);
    cudaEventRecord(ev, nb);
    CHECK(cudaStreamWaitEvent(s, ev, 0) == cudaSuccess, "cudaStreamWaitEvent failed");
    cuemu_stream_defer(s, deferred_poll, &e);
    CHECK(d.started && !d.done && !e.started,
          "behind a wait: nb's work started %d done %d (want 1 0), s's started %d (want 0)",
          d.started, d.done, e.started);
    cudaStreamSynchronize(s);
    CHECK(d.done && e.done, "synchronizing s left nb's work %d / s's %d undone", d.done, e.done);
    /* an event already reached: the wait is a no-op, what follows starts */
    Deferred f = {0, 0, 1, 0};
    cudaEventRecord(ev, nb);
    cudaStreamWaitEvent(s, ev, 0);
    cuemu_stream_defer(s, deferred_poll, &f);
    CHECK(f.started, "a wait on a ready event held back the work behind it");
    cudaStreamSynchronize(s);
    check_cross_stream(s, nb, dev, ev);
    cudaEventDestroy(ev);
    cudaFree(dev);
    cudaStreamDestroy(s);
    cudaStreamDestroy(nb);
}

int main(void) {
    check_streams();
    check_mma();
    check_ldmatrix();
    check_cp_async();
    check_cp_async_reuse();
    check_threads();
    check_order();
    check_faults();
    return CHECK_DONE();
}
