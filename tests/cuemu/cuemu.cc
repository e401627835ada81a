/* cuemu.cc: the emulator's runtime (tests/cuemu/cuemu.h): fibers and the
 * block scheduler, warp collectives, the PTX instructions the kernels use
 * (mma.m16n8k16 bf16, ldmatrix.x4, cp.async), the runtime API, and
 * cuBLASLt / cuBLAS GEMMs through OpenBLAS.
 *
 * Fragment layouts of mma.sync.m16n8k16.row.col with bf16 operands (PTX
 * ISA, "Matrix fragments for mma.m16n8k16"), for lane l, g = l / 4,
 * t = l % 4; each 32-bit register holds two bf16, the lower column (or k)
 * in the low half:
 *   A (16 x 16): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..],
 *                a3 = A[g+8][2t+8..]
 *   B (16 x 8):  b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
 *   C, D (fp32): c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
 * ldmatrix.x4: lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of
 * matrix i; register i of lane l receives row l / 4, elements 2 (l % 4) and
 * 2 (l % 4) + 1 of matrix i, or with .trans of its transpose. */
#include "tests/cuemu/cuemu.h"

#include <cblas.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <deque>
#include <functional>
#include <set>
#include <unordered_map>
#include <vector>

namespace cuemu {

struct Pending {
    void *dst;
    const void *src;
    int valid;
    long group;
};

struct Fiber {
#if defined(__x86_64__)
    void *sp; /* saved stack pointer (callee-saved registers below it) */
#else
    ucontext_t uc;
#endif
    dim3 tid;
    int warp, lane;
    bool done;
    std::vector<Pending> copies; /* cp.async not yet landed */
    long committed;              /* groups committed so far */
    const char *waiting;         /* where it waits, for the deadlock report */
};

struct Warp {
    unsigned gen, arrived, lanes;
    int op[2][32];
    Slot slot[2][32];
};

Fiber *g_cur;
dim3 g_block, g_bdim, g_gdim;

namespace {

const size_t STACK = 256 << 10;
const size_t SMEM = 227 << 10; /* an H100's dynamic shared memory limit per block */
const size_t SMEM_DEFAULT = 48 << 10;

/* Switching: on x86-64 a stack switch of 15 instructions (the callee-saved
 * registers pushed on the old stack, popped from the new one); glibc's
 * swapcontext also saves the signal mask, a system call per switch, which
 * made the emulator several times slower. Elsewhere ucontext. */
#if defined(__x86_64__)
extern "C" void cuemu_switch(void **save_sp, void *to_sp);
asm(".text\n"
    ".globl cuemu_switch\n"
    ".type cuemu_switch, @function\n"
    "cuemu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size cuemu_switch, .-cuemu_switch\n");
void *g_sched_sp;
#else
ucontext_t g_sched;
#endif
std::vector<Fiber> g_fibers;
std::vector<Warp> g_warps;
char *g_stacks;
size_t g_n_stacks;
alignas(128) unsigned char g_smem[SMEM];
size_t g_smem_bytes;
unsigned g_live;
unsigned g_bar_arrived, g_bar_gen;
unsigned long long g_events;
void (*g_body)(void *);
void *g_ctx;
cudaError_t g_last;
/* CUEMU_ORDER=reverse: blocks, and threads between switches, run last
 * first, so a result that depends on the order (a missing barrier, one
 * block reading what another writes) differs between the two orders */
bool g_reverse; /* read at every launch */

struct FuncAttr {
    const void *kernel;
    int smem;
};
std::vector<FuncAttr> g_attrs;

void yield(void) {
#if defined(__x86_64__)
    cuemu_switch(&g_cur->sp, g_sched_sp);
#else
    swapcontext(&g_cur->uc, &g_sched);
#endif
}

void entry(void) {
    g_body(g_ctx);
    Fiber *f = g_cur;
    for (Pending &p : f->copies) /* still in flight at exit: they land */
        if (p.valid)
            memcpy(p.dst, p.src, 16);
        else
            memset(p.dst, 0, 16);
    f->copies.clear();
    f->done = true;
    g_events++;
    g_live--;
    Warp &w = g_warps[f->warp];
    if (w.arrived)
        fail("thread (%u,%u,%u) exited while its warp waits in a collective", f->tid.x, f->tid.y,
             f->tid.z);
    w.lanes--;
    if (g_bar_arrived && g_bar_arrived == g_live) g_bar_arrived = 0, g_bar_gen++;
#if defined(__x86_64__)
    void *dead;
    cuemu_switch(&dead, g_sched_sp); /* never resumed */
    __builtin_unreachable();
#endif
    /* (ucontext: uc_link returns to the scheduler) */
}

void ensure_stacks(size_t n) {
    if (n <= g_n_stacks) return;
    if (g_stacks) munmap(g_stacks, g_n_stacks * STACK);
    g_stacks = (char *)mmap(NULL, n * STACK, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_stacks == MAP_FAILED) fail("cannot map %zu fiber stacks", n);
    g_n_stacks = n;
}

int smem_limit(const void *kernel) {
    for (const FuncAttr &a : g_attrs)
        if (a.kernel == kernel) return a.smem;
    return (int)SMEM_DEFAULT;
}

void run_block(unsigned nthreads) {
    g_fibers.assign(nthreads, Fiber());
    unsigned nwarps = (nthreads + 31) / 32;
    g_warps.assign(nwarps, Warp());
    for (unsigned w = 0; w < nwarps; w++)
        g_warps[w].lanes = nthreads - 32 * w < 32 ? nthreads - 32 * w : 32;
    memset(g_smem, 0xff, g_smem_bytes); /* NaN bf16 and fp32: unloaded data shows */
    g_live = nthreads;
    g_bar_arrived = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        Fiber &f = g_fibers[i];
        f.tid = dim3(i % g_bdim.x, i / g_bdim.x % g_bdim.y, i / (g_bdim.x * g_bdim.y));
        f.warp = (int)(i / 32), f.lane = (int)(i % 32);
        f.done = false;
        f.committed = 0;
#if defined(__x86_64__)
        /* what cuemu_switch pops: six registers (zero), then entry as the
         * return address, with the stack aligned as after a call */
        void **top = (void **)(g_stacks + (size_t)(i + 1) * STACK) - 2;
        top[0] = (void *)entry, top[1] = NULL;
        top -= 6;
        memset(top, 0, 6 * sizeof *top);
        f.sp = top;
#else
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = g_stacks + (size_t)i * STACK;
        f.uc.uc_stack.ss_size = STACK;
        f.uc.uc_link = &g_sched;
        makecontext(&f.uc, entry, 0);
#endif
    }
    for (;;) {
        unsigned long long before = g_events;
        unsigned alive = 0;
        for (unsigned k = 0; k < nthreads; k++) {
            Fiber &f = g_fibers[g_reverse ? nthreads - 1 - k : k];
            if (f.done) continue;
            g_cur = &f;
#if defined(__x86_64__)
            cuemu_switch(&g_sched_sp, f.sp);
#else
            swapcontext(&g_sched, &f.uc);
#endif
            alive += !f.done;
        }
        g_cur = NULL;
        if (!alive) return;
        if (g_events == before) {
            fprintf(stderr, "cuemu: deadlock in block (%u,%u,%u):\n", g_block.x, g_block.y,
                    g_block.z);
            int shown = 0;
            for (Fiber &f : g_fibers)
                if (!f.done && shown++ < 8)
                    fprintf(stderr, "  thread (%u,%u,%u) waits at %s\n", f.tid.x, f.tid.y, f.tid.z,
                            f.waiting ? f.waiting : "?");
            fail("no thread can make progress");
        }
    }
}

} // namespace

void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (g_cur)
        fprintf(stderr, " (block %u,%u,%u thread %u,%u,%u)", g_block.x, g_block.y, g_block.z,
                g_cur->tid.x, g_cur->tid.y, g_cur->tid.z);
    fprintf(stderr, "\n");
    fflush(stderr);
    abort();
}

const dim3 &thread_idx(void) {
    if (!g_cur) fail("threadIdx outside a kernel");
    return g_cur->tid;
}
int lane(void) { return g_cur->lane; }
void *dyn_smem(void) { return g_smem; }
int in_smem(const void *p, size_t n) {
    const unsigned char *c = (const unsigned char *)p;
    return c >= g_smem && c + n <= g_smem + g_smem_bytes;
}

void set_func_smem(const void *kernel, int bytes) {
    if (bytes > (int)SMEM)
        fail("cudaFuncSetAttribute: %d bytes of dynamic shared memory (limit %zu)", bytes, SMEM);
    for (FuncAttr &a : g_attrs)
        if (a.kernel == kernel) {
            a.smem = bytes;
            return;
        }
    g_attrs.push_back(FuncAttr{kernel, bytes});
}

void syncthreads(void) {
    Fiber *f = g_cur;
    unsigned gen = g_bar_gen;
    g_events++;
    if (++g_bar_arrived == g_live) {
        g_bar_arrived = 0, g_bar_gen++;
        return;
    }
    f->waiting = "__syncthreads";
    while (g_bar_gen == gen) yield();
    f->waiting = NULL;
}

const Slot *warp_collect(int op, const uint64_t in[SLOT], void (*complete)(Slot *all)) {
    Fiber *f = g_cur;
    Warp &w = g_warps[f->warp];
    if (w.lanes != 32) fail("warp collective in a warp of %u live lanes (full mask)", w.lanes);
    int ph = (int)(w.gen & 1);
    memcpy(w.slot[ph][f->lane], in, sizeof w.slot[ph][f->lane]);
    w.op[ph][f->lane] = op;
    unsigned gen = w.gen;
    g_events++;
    if (++w.arrived == w.lanes) {
        for (int l = 1; l < 32; l++)
            if (w.op[ph][l] != w.op[ph][0])
                fail("warp %d: lane 0 in collective %d, lane %d in %d", f->warp, w.op[ph][0], l,
                     w.op[ph][l]);
        if (complete) complete(w.slot[ph]);
        w.arrived = 0, w.gen++;
    } else {
        f->waiting = "a warp collective";
        while (w.gen == gen) yield();
        f->waiting = NULL;
    }
    return w.slot[ph];
}

/* ---- PTX ---- */

static inline float lo_bf(uint32_t r) { return cuemu_u2f(r << 16); }
static inline float hi_bf(uint32_t r) { return cuemu_u2f(r & 0xffff0000u); }

/* run once per warp by the last lane to arrive: every lane deposited
 * {a0 a1, a2 a3, b0 b1, d0 d1, d2 d3}; the d words become the results */
static void mma_complete(Slot *all) {
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l / 4, t = l % 4;
        uint32_t a[4] = {(uint32_t)all[l][0], (uint32_t)(all[l][0] >> 32), (uint32_t)all[l][1],
                         (uint32_t)(all[l][1] >> 32)};
        uint32_t b[2] = {(uint32_t)all[l][2], (uint32_t)(all[l][2] >> 32)};
        for (int i = 0; i < 4; i++) { /* a_i: row g + 8 (i % 2), columns 2t + 8 (i / 2) + {0, 1} */
            A[g + 8 * (i % 2)][2 * t + 8 * (i / 2)] = lo_bf(a[i]);
            A[g + 8 * (i % 2)][2 * t + 8 * (i / 2) + 1] = hi_bf(a[i]);
        }
        for (int i = 0; i < 2; i++) { /* b_i: rows 2t + 8 i + {0, 1}, column g */
            B[2 * t + 8 * i][g] = lo_bf(b[i]);
            B[2 * t + 8 * i + 1][g] = hi_bf(b[i]);
        }
    }
    /* D = C + A B row by row, the 8 columns side by side (each sum still
     * over k in order) */
    for (int r = 0; r < 16; r++) {
        float acc[8];
        for (int n = 0; n < 8; n++) /* d_i: row g + 8 (i / 2), column 2t + i % 2 */
            memcpy(&acc[n], (const char *)&all[(r % 8) * 4 + n / 2][3] + 4 * (2 * (r / 8) + n % 2),
                   4);
        for (int k = 0; k < 16; k++)
            for (int n = 0; n < 8; n++) acc[n] += A[r][k] * B[k][n];
        for (int n = 0; n < 8; n++)
            memcpy((char *)&all[(r % 8) * 4 + n / 2][3] + 4 * (2 * (r / 8) + n % 2), &acc[n], 4);
    }
}

void mma_bf16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    uint64_t in[SLOT] = {(uint64_t)a[0] | (uint64_t)a[1] << 32,
                         (uint64_t)a[2] | (uint64_t)a[3] << 32, (uint64_t)b0 | (uint64_t)b1 << 32};
    memcpy(&in[3], d, 4 * sizeof(float));
    const Slot *all = warp_collect(OP_MMA, in, mma_complete);
    memcpy(d, &all[g_cur->lane][3], 4 * sizeof(float));
}

/* Bank conflicts of ldmatrix: the 8 rows of one matrix (16 bytes each) are
 * read in one shared-memory wavefront when they fall in 8 different 16-byte
 * slots of the 128-byte bank window, else in as many wavefronts as the most
 * rows sharing a slot. Counted always; CUEMU_BANK_CONFLICTS=fail makes a
 * conflict a fault. */
long g_ldsm_matrices, g_ldsm_extra;
static void ldsm_complete(Slot *all) {
    static const int fail_on = [] {
        const char *e = getenv("CUEMU_BANK_CONFLICTS");
        return e && !strcmp(e, "fail");
    }();
    for (int i = 0; i < 4; i++) {
        int n[8] = {0}, worst = 0;
        for (int j = 0; j < 8; j++) {
            size_t off = (size_t)((const unsigned char *)(uintptr_t)all[8 * i + j][0] - g_smem);
            int k = ++n[(off >> 4) & 7];
            worst = k > worst ? k : worst;
        }
        g_ldsm_matrices++;
        g_ldsm_extra += worst - 1;
        if (worst > 1 && fail_on)
            fail("ldmatrix: matrix %d's 8 rows hit the same banks %d times (a %d-way conflict)", i,
                 worst, worst);
    }
}
void ldmatrix_stats(long *matrices, long *extra_wavefronts) {
    *matrices = g_ldsm_matrices, *extra_wavefronts = g_ldsm_extra;
}

void ldmatrix_x4(uint32_t r[4], const void *row_addr, int trans) {
    if (((uintptr_t)row_addr & 15) || !in_smem(row_addr, 16))
        fail("ldmatrix: row address %p not a 16-byte aligned shared-memory row", row_addr);
    uint64_t in[SLOT] = {(uint64_t)(uintptr_t)row_addr};
    const Slot *all = warp_collect(trans ? OP_LDSM_T : OP_LDSM, in, ldsm_complete);
    int l = g_cur->lane;
    for (int i = 0; i < 4; i++) {
        uint16_t e[2];
        for (int j = 0; j < 2; j++) {
            int row = trans ? 2 * (l % 4) + j : l / 4, col = trans ? l / 4 : 2 * (l % 4) + j;
            const uint16_t *p = (const uint16_t *)(uintptr_t)all[8 * i + row][0];
            e[j] = p[col];
        }
        r[i] = (uint32_t)e[0] | (uint32_t)e[1] << 16;
    }
}

void cp_async16(void *dst, const void *src, int valid) {
    if (((uintptr_t)dst & 15) || !in_smem(dst, 16))
        fail("cp.async: destination %p not 16-byte aligned shared memory", dst);
    if ((uintptr_t)src & 15) fail("cp.async: source %p not 16-byte aligned", src);
    /* in flight, the destination holds neither the old nor the new bytes: a
     * GPU may land them at any time until the wait, so another warp still
     * reading the old data (a missing barrier before a buffer's reuse)
     * reads NaN here, as a thread reading before its own wait does */
    memset(dst, 0xff, 16);
    g_cur->copies.push_back(Pending{dst, src, valid, g_cur->committed});
}
void cp_async_commit(void) { g_cur->committed++; }
void cp_async_wait(int n) {
    Fiber *f = g_cur;
    /* groups committed before the newest n land; later ones stay in flight */
    long keep_from = f->committed - n;
    std::vector<Pending> rest;
    for (Pending &p : f->copies) {
        if (p.group < keep_from) {
            if (p.valid)
                memcpy(p.dst, p.src, 16);
            else
                memset(p.dst, 0, 16);
        } else {
            rest.push_back(p);
        }
    }
    f->copies.swap(rest);
    /* a switch point, as a barrier is: the other threads run on while this
     * one waits (the copies it issued before can overwrite what they read) */
    g_events++;
    f->waiting = "cp.async.wait_group";
    yield();
    f->waiting = NULL;
}

/* ---- launches ---- */

/* a launch's configuration, checked when it is queued */
static void check_launch(const LaunchCfg &cfg) {
    if (g_cur) fail("kernel launch from inside a kernel");
    unsigned nthreads = cfg.block.x * cfg.block.y * cfg.block.z;
    if (nthreads == 0 || nthreads > 1024 || cfg.block.z > 64)
        fail("launch with a block of %u x %u x %u threads", cfg.block.x, cfg.block.y, cfg.block.z);
    if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0 || cfg.grid.y > 65535 ||
        cfg.grid.z > 65535 || cfg.grid.x > 0x7fffffffu)
        fail("launch with a grid of %u x %u x %u blocks", cfg.grid.x, cfg.grid.y, cfg.grid.z);
    if (cfg.smem > (size_t)smem_limit(cfg.kernel))
        fail("launch with %zu bytes of dynamic shared memory, %d allowed (cudaFuncSetAttribute)",
             cfg.smem, smem_limit(cfg.kernel));
}

void run_grid(const LaunchCfg &cfg, void (*body)(void *), void *ctx) {
    check_launch(cfg);
    unsigned nthreads = cfg.block.x * cfg.block.y * cfg.block.z;
    const char *order = getenv("CUEMU_ORDER");
    g_reverse = order && !strcmp(order, "reverse");
    ensure_stacks(nthreads);
    g_body = body, g_ctx = ctx;
    g_bdim = cfg.block, g_gdim = cfg.grid;
    g_smem_bytes = cfg.smem;
    size_t nblocks = (size_t)cfg.grid.x * cfg.grid.y * cfg.grid.z;
    for (size_t k = 0; k < nblocks; k++) {
        size_t b = g_reverse ? nblocks - 1 - k : k;
        g_block = dim3((unsigned)(b % cfg.grid.x), (unsigned)(b / cfg.grid.x % cfg.grid.y),
                       (unsigned)(b / ((size_t)cfg.grid.x * cfg.grid.y)));
        run_block(nthreads);
    }
    g_fibers.clear();
}

} // namespace cuemu

using cuemu::fail;

/* ---- runtime API ---- */

/* Device memory: each allocation its own mapping, ending (rounded up to 256
 * bytes, cudaMalloc's alignment) right before an inaccessible guard page,
 * so a kernel reading or writing past the end of a buffer faults at once
 * (a GPU would often read on silently); the fault handler names the block
 * and thread. In use and peak bytes are counted (CUEMU_MEM_REPORT=1: the
 * peak printed at exit). */
namespace cuemu {
namespace {
struct Alloc {
    void *base;
    size_t map_bytes, n;
};
std::unordered_map<void *, Alloc> g_allocs;
size_t g_dev_bytes, g_dev_peak;
const size_t PAGE = 4096;
void mem_report(void) {
    fprintf(stderr, "cuemu: device memory peak %zu bytes (%.3f GiB), %zu in use at exit\n",
            g_dev_peak, g_dev_peak / 1073741824.0, g_dev_bytes);
}
void on_fault(int sig, siginfo_t *si, void *) {
    /* (not async-signal-safe; the process ends here anyway) */
    if (g_cur)
        fprintf(stderr,
                "cuemu: memory fault (signal %d) at %p in a kernel: block %u,%u,%u thread %u,%u,%u "
                "(past the end of a device buffer?)\n",
                sig, si->si_addr, g_block.x, g_block.y, g_block.z, g_cur->tid.x, g_cur->tid.y,
                g_cur->tid.z);
    else
        fprintf(stderr, "cuemu: memory fault (signal %d) at %p outside kernels\n", sig,
                si->si_addr);
    signal(sig, SIG_DFL);
    raise(sig);
}
void start(void) {
    static bool done;
    if (done) return;
    done = true;
    const char *e = getenv("CUEMU_MEM_REPORT");
    if (e && !strcmp(e, "1")) atexit(mem_report);
    /* the handler runs on its own stack: a fault may come from a fiber */
    static char alt[1 << 16];
    stack_t ss = {};
    ss.ss_sp = alt, ss.ss_size = sizeof alt;
    sigaltstack(&ss, NULL);
    struct sigaction sa = {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}
} // namespace
void device_bytes(size_t *current, size_t *peak) { *current = g_dev_bytes, *peak = g_dev_peak; }
} // namespace cuemu

cudaError_t cudaMalloc(void **p, size_t n) {
    using namespace cuemu;
    start();
    *p = NULL;
    size_t len = (n + 255) / 256 * 256, data = (len + PAGE - 1) / PAGE * PAGE;
    if (!len) len = 256, data = PAGE;
    size_t map_bytes = data + PAGE;
    char *base = (char *)mmap(NULL, map_bytes, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) return g_last = cudaErrorMemoryAllocation;
    if (mprotect(base + data, PAGE, PROT_NONE)) fail("mprotect of a guard page failed");
    *p = base + data - len;
    memset(*p, 0xa5, len); /* cudaMalloc'd memory is not zeroed */
    g_allocs[*p] = Alloc{base, map_bytes, n};
    g_dev_bytes += n;
    if (g_dev_bytes > g_dev_peak) g_dev_peak = g_dev_bytes;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    using namespace cuemu;
    if (!p) return cudaSuccess;
    cudaDeviceSynchronize(); /* as the runtime: queued work may still use p */
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) fail("cudaFree(%p): not a cudaMalloc'd pointer", p);
    g_dev_bytes -= it->second.n;
    munmap(it->second.base, it->second.map_bytes);
    g_allocs.erase(it);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    return *p ? cudaSuccess : (cuemu::g_last = cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void *p) {
    cudaDeviceSynchronize(); /* queued copies may still use p */
    free(p);
    return cudaSuccess;
}
/* an 80 GiB device whose used bytes are the emulator's live allocations */
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    size_t live, peak, total = (size_t)80 << 30;
    cuemu::device_bytes(&live, &peak);
    *total_bytes = total;
    *free_bytes = live < total ? total - live : 0;
    return cudaSuccess;
}

/* Streams: a queue of work (cuemu.h, "Streams"): kernels, GEMMs, event
 * time stamps, the emulated NCCL's collectives (cuemu_stream_defer), waits
 * for other streams' events, and the copies behind them. The null stream
 * is g_null; as the legacy default stream, the synchronous
 * cudaMemcpy/cudaMemset wait for it and for every stream created without
 * cudaStreamNonBlocking. */
struct CUstream_st {
    std::deque<std::function<int(int)>> q;
    uint64_t queued = 0, done = 0; /* works ever queued / finished */
    bool blocking = true;
};
namespace cuemu {
namespace {
CUstream_st g_null;
std::set<CUstream_st *> g_streams = {&g_null};
CUstream_st *stream_of(cudaStream_t s) { return s ? s : &g_null; }
/* runs s's queue in order up to the upto-th work ever queued; wait = 0:
 * stops at the first that is not done yet. 1 when it got there. */
int stream_advance(CUstream_st *s, int wait, uint64_t upto) {
    while (s->done < upto) {
        if (!s->q.front()(wait)) return 0;
        s->q.pop_front(), s->done++;
    }
    return 1;
}
/* f queued on s: it runs when s gets to it (a host wait on s, on an event
 * behind f, or on a stream that waits for such an event) */
void stream_push(cudaStream_t st, std::function<void(void)> f) {
    CUstream_st *s = stream_of(st);
    s->q.push_back([f](int) { return f(), 1; }), s->queued++;
}
/* copies and memsets: f runs now when nothing is queued on s */
void stream_run(cudaStream_t st, std::function<void(void)> f) {
    CUstream_st *s = stream_of(st);
    if (s->q.empty()) return f();
    stream_push(st, f);
}
unsigned long g_launches;
/* a kernel or GEMM on s: counted now, run when s gets to it */
void launch_on(cudaStream_t s, std::function<void(void)> f) {
    g_launches++;
    stream_push(s, f);
}
} // namespace
void stream_finish(cudaStream_t st) {
    CUstream_st *s = stream_of(st);
    stream_advance(s, 1, s->queued);
}
void enqueue_grid(cudaStream_t s, const LaunchCfg &cfg, void (*body)(void *),
                  std::shared_ptr<void> ctx) {
    check_launch(cfg);
    launch_on(s, [cfg, body, ctx] { run_grid(cfg, body, ctx.get()); });
}
/* the synchronous copies: after the legacy default stream's work */
void legacy_sync(void) {
    for (CUstream_st *s : g_streams)
        if (s->blocking) stream_finish(s);
}
} // namespace cuemu
void cuemu_stream_defer(void *st, int (*poll)(void *, int), void *ctx) {
    CUstream_st *s = cuemu::stream_of((cudaStream_t)st);
    if (s->q.empty()) poll(ctx, -1); /* first in line: it starts now */
    s->q.push_back([poll, ctx](int wait) { return poll(ctx, wait); }), s->queued++;
}
int cuemu_device_range(const void *p, size_t n) {
    const char *q = (const char *)p;
    for (auto &a : cuemu::g_allocs)
        if (q >= (const char *)a.first && q + n <= (const char *)a.first + a.second.n) return 1;
    return 0;
}
unsigned long cuemu_launches(void) { return cuemu::g_launches; }
void cuemu_device_bytes(size_t *current, size_t *peak) { cuemu::device_bytes(current, peak); }
uint16_t cuemu_f32_to_bf16(float f) { return cuemu_f2bf(f); }
float cuemu_bf16_to_f32(uint16_t h) { return cuemu_u2f((uint32_t)h << 16); }
void cuemu_progress(void) {
    for (CUstream_st *s : cuemu::g_streams) cuemu::stream_advance(s, 0, s->queued);
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind) {
    cuemu::legacy_sync();
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t s) {
    if (n) cuemu::stream_run(s, [=] { memmove(dst, src, n); });
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n) {
    cuemu::legacy_sync();
    if (n) memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    if (n) cuemu::stream_run(s, [=] { memset(p, v, n); });
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    cuemu::stream_finish(s);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    for (CUstream_st *s : cuemu::g_streams) cuemu::stream_finish(s);
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    /* few SMs: grid-stride loops and grid caps get exercised at small sizes */
    if (a != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
    const char *e = getenv("CUEMU_SM_COUNT");
    *v = e && atoi(e) > 0 ? atoi(e) : 2;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    *s = new CUstream_st;
    (*s)->blocking = !(flags & cudaStreamNonBlocking);
    cuemu::g_streams.insert(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (!s || !cuemu::g_streams.erase(s)) fail("cudaStreamDestroy(%p): not a created stream", s);
    cuemu::stream_finish(s); /* as the runtime: destroyed once its work is done */
    delete s;
    return cudaSuccess;
}
/* an event is ready once its stream has finished the work queued before
 * its record (s: that stream, NULL when nothing was queued); its time is
 * the host clock when the stream got to it (records counts the records, so
 * that a stamp queued by an earlier record does not overwrite a later) */
struct cuemuEvent {
    double t;
    int recorded;
    CUstream_st *s;
    uint64_t upto, records;
};
static double host_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = new cuemuEvent{0.0, 0, NULL, 0, 0};
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    cudaEventSynchronize(e); /* its time stamp still queued refers to it */
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t st) {
    CUstream_st *s = cuemu::stream_of(st);
    uint64_t rec = ++e->records;
    e->recorded = 1;
    if (s->q.empty()) {
        e->t = host_s(), e->s = NULL, e->upto = s->queued;
        return cudaSuccess;
    }
    cuemu::stream_push(st, [e, rec] {
        if (e->records == rec) e->t = host_s();
    });
    e->s = s, e->upto = s->queued;
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    if (!e->s || cuemu::g_streams.count(e->s) == 0) return cudaSuccess;
    return cuemu::stream_advance(e->s, 0, e->upto) ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (e->s && cuemu::g_streams.count(e->s)) cuemu::stream_advance(e->s, 1, e->upto);
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t e, unsigned flags) {
    if (flags) return cuemu::g_last = cudaErrorInvalidValue;
    CUstream_st *s = cuemu::stream_of(st), *es = e->s;
    if (!es || es == s || !cuemu::g_streams.count(es)) return cudaSuccess;
    uint64_t upto = e->upto;
    if (cuemu::stream_advance(es, 0, upto)) return cudaSuccess; /* ready: nothing to wait for */
    s->q.push_back([es, upto](int wait) -> int {
        if (wait < 0 || !cuemu::g_streams.count(es)) return wait >= 0;
        return cuemu::stream_advance(es, wait, upto);
    });
    s->queued++;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t stop) {
    if (!start->recorded || !stop->recorded) return cudaErrorInvalidValue;
    *ms = (float)((stop->t - start->t) * 1e3);
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    cudaError_t e = cuemu::g_last;
    cuemu::g_last = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotReady: return "device not ready";
    default: return "invalid argument";
    }
}

/* ---- GEMMs ---- */

struct cuemuLtHandle {
    int dummy;
};
struct cuemuLtDesc {
    cublasComputeType_t compute;
    cublasOperation_t ta, tb;
    cublasLtEpilogue_t epi;
    const void *bias;
    cudaDataType_t bias_type;
    int bias_type_set;
};
struct cuemuLtLayout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
};
struct cuemuLtPref {
    int dummy;
};
struct cuemuHandle {
    cudaStream_t stream;
};

namespace {

float load(const void *p, cudaDataType_t t, size_t i) {
    return t == CUDA_R_32F ? ((const float *)p)[i]
                           : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
void store(void *p, cudaDataType_t t, size_t i, float v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = v;
    else
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}
/* TF32: 10 mantissa bits, round to nearest (ties away, as cvt.rna.tf32) */
float tf32(float x) {
    uint32_t u = cuemu_f2u(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;
    u = (u + 0x1000u) & 0xffffe000u;
    return cuemu_u2f(u);
}

/* column-major D (m x n) = alpha op(A) op(B) + beta C (+ bias[m] per
 * column); op(A) is m x k of A stored (m x k) or, transposed, (k x m) */
void gemm_cm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
             const void *A, cudaDataType_t at, int64_t lda, const void *B, cudaDataType_t bt,
             int64_t ldb, float beta, const void *C, cudaDataType_t ct, int64_t ldc, void *D,
             int64_t ldd, const void *bias, cudaDataType_t biast, int round_tf32) {
    if (m <= 0 || n <= 0) return;
    /* fp32 copies of op(A) (m x k) and op(B) (k x n), column-major, packed */
    std::vector<float> a((size_t)m * k), b((size_t)k * n), d((size_t)m * n);
    for (int j = 0; j < k; j++)
        for (int i = 0; i < m; i++) {
            float v = ta == CUBLAS_OP_N ? load(A, at, (size_t)i + (size_t)j * lda)
                                        : load(A, at, (size_t)j + (size_t)i * lda);
            a[(size_t)i + (size_t)j * m] = round_tf32 ? tf32(v) : v;
        }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < k; i++) {
            float v = tb == CUBLAS_OP_N ? load(B, bt, (size_t)i + (size_t)j * ldb)
                                        : load(B, bt, (size_t)j + (size_t)i * ldb);
            b[(size_t)i + (size_t)j * k] = round_tf32 ? tf32(v) : v;
        }
    if (k > 0)
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), m,
                    b.data(), k, 0.0f, d.data(), m);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float v = alpha * d[(size_t)i + (size_t)j * m];
            if (beta != 0.0f) v += beta * load(C, ct, (size_t)i + (size_t)j * ldc);
            if (bias) v += load(bias, biast, (size_t)i);
            store(D, ct, (size_t)i + (size_t)j * ldd, v);
        }
}

} // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    static cuemuLtHandle one;
    *h = &one;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasLtGetStatusString(cublasStatus_t s) {
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_(emulated error)";
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
                                        cudaDataType_t scale) {
    if (scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new cuemuLtDesc{c, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, NULL, CUDA_R_32F,
                         0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
/* an attribute's value into its field, when the sizes agree */
static cublasStatus_t set_field(void *field, size_t size, const void *v, size_t n) {
    if (n != size) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(field, v, n);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return set_field(&d->ta, sizeof d->ta, v, n);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set_field(&d->tb, sizeof d->tb, v, n);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set_field(&d->epi, sizeof d->epi, v, n);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set_field(&d->bias, sizeof d->bias, v, n);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: {
        cublasStatus_t st = set_field(&d->bias_type, sizeof d->bias_type, v, n);
        d->bias_type_set |= st == CUBLAS_STATUS_SUCCESS;
        return st;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows && rows > 1) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new cuemuLtLayout{t, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t a, const void *v,
                                                size_t n) {
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT) return set_field(&l->batch, sizeof l->batch, v, n);
    if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET)
        return set_field(&l->stride, sizeof l->stride, v, n);
    return CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new cuemuLtPref{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                    cublasLtMatmulPreferenceAttributes_t,
                                                    const void *, size_t) {
    return CUBLAS_STATUS_SUCCESS;
}

/* the shapes cublasLtMatmul checks: op(A) m x k, op(B) k x n, C and D m x n */
static cublasStatus_t check_shapes(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                   cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c) {
    uint64_t m = c->rows, n = c->cols;
    uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols,
             ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols,
             bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != m || bn != n || ak != bk || a->type != b->type) return CUBLAS_STATUS_INVALID_VALUE;
    if (a->batch != b->batch || a->batch != c->batch) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t,
                                              cublasLtMatmulPreference_t, int requested,
                                              cublasLtMatmulHeuristicResult_t *out, int *found) {
    *found = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t s = check_shapes(d, a, b, c);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    memset(out, 0, sizeof *out);
    out->algo.data[0] = 0xc0e0;
    out->state = CUBLAS_STATUS_SUCCESS;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t,
                                       const cublasLtMatmulAlgo_t *algo,
                                       cublasLtMatmulHeuristicResult_t *out) {
    memset(out, 0, sizeof *out);
    out->algo = *algo;
    out->state = check_shapes(d, a, b, c);
    return out->state;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *, size_t, cudaStream_t st) {
    if (!algo || algo->data[0] != 0xc0e0)
        fail("cublasLtMatmul without an algorithm from the heuristic");
    cublasStatus_t s = check_shapes(d, la, lb, lc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (C != D || lc->type != ld->type) return CUBLAS_STATUS_NOT_SUPPORTED; /* dapt's use */
    if (d->epi == CUBLASLT_EPILOGUE_BIAS && !d->bias)
        fail("cublasLtMatmul: bias epilogue without a bias pointer");
    const void *bias = d->epi == CUBLASLT_EPILOGUE_BIAS ? d->bias : NULL;
    cudaDataType_t bt = d->bias_type_set ? d->bias_type : lc->type;
    size_t ea = la->type == CUDA_R_32F ? 4 : 2, ec = lc->type == CUDA_R_32F ? 4 : 2;
    int k = (int)(d->ta == CUBLAS_OP_N ? la->cols : la->rows);
    int tf = d->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && la->type == CUDA_R_32F;
    /* queued with the descriptors' values at the call (the host may change
     * or destroy them before the stream gets to it, as with cuBLASLt) */
    cuemuLtDesc dv = *d;
    cuemuLtLayout a = *la, b = *lb, c = *lc;
    float al = *(const float *)alpha, be = *(const float *)beta;
    cuemu::launch_on(st, [=] {
        for (int i = 0; i < c.batch; i++)
            gemm_cm(dv.ta, dv.tb, (int)c.rows, (int)c.cols, k, al,
                    (const char *)A + (size_t)(i * a.stride) * ea, a.type, a.ld,
                    (const char *)B + (size_t)(i * b.stride) * ea, b.type, b.ld, be,
                    (const char *)C + (size_t)(i * c.stride) * ec, c.type, c.ld,
                    (char *)D + (size_t)(i * c.stride) * ec, c.ld, bias, bt, tf);
    });
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = new cuemuHandle{};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGemmGroupedBatchedEx(
    cublasHandle_t h, const cublasOperation_t transa[], const cublasOperation_t transb[],
    const int m[], const int n[], const int k[], const void *alpha, const void *const A[],
    cudaDataType_t at, const int lda[], const void *const B[], cudaDataType_t bt, const int ldb[],
    const void *beta, void *const C[], cudaDataType_t ct, const int ldc[], int group_count,
    const int group_size[], cublasComputeType_t compute) {
    if (compute != CUBLAS_COMPUTE_32F || at != bt || at != ct) return CUBLAS_STATUS_NOT_SUPPORTED;
    /* the per-group host arrays copied at the call; A, B and C are device
     * arrays of pointers, read when the stream gets to the GEMMs */
    struct Group {
        cublasOperation_t ta, tb;
        int m, n, k, lda, ldb, ldc, size;
        float alpha, beta;
    };
    std::vector<Group> gs;
    for (int g = 0; g < group_count; g++) {
        int rows_a = transa[g] == CUBLAS_OP_N ? m[g] : k[g];
        int rows_b = transb[g] == CUBLAS_OP_N ? k[g] : n[g];
        if (lda[g] < rows_a || ldb[g] < rows_b || ldc[g] < m[g]) return CUBLAS_STATUS_INVALID_VALUE;
        gs.push_back(Group{transa[g], transb[g], m[g], n[g], k[g], lda[g], ldb[g], ldc[g],
                           group_size[g], ((const float *)alpha)[g], ((const float *)beta)[g]});
    }
    cuemu::launch_on(h->stream, [=] {
        int p = 0;
        for (const Group &g : gs)
            for (int i = 0; i < g.size; i++, p++)
                gemm_cm(g.ta, g.tb, g.m, g.n, g.k, g.alpha, A[p], at, g.lda, B[p], bt, g.ldb,
                        g.beta, C[p], ct, g.ldc, C[p], g.ldc, NULL, ct, 0);
    });
    return CUBLAS_STATUS_SUCCESS;
}
