/* ops.c: backend selection by name, the defaults of the backend options,
 * and the host code every backend shares (the RoPE table).
 * The CUDA backend defines ops_cuda() in kernels/cuda when the build has
 * CUDA; otherwise the stub below explains. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/util.h"

#ifndef DAPT_HAVE_CUDA
const Ops *ops_cuda(const OpsOptions *opt, char *err, size_t err_len) {
    (void)opt;
    err_set(err, err_len, "this dapt was built without CUDA (nvcc was not found at build time)");
    return NULL;
}
const Ops *ops_cuda_fp32(const OpsOptions *opt, char *err, size_t err_len) {
    return ops_cuda(opt, err, err_len);
}
void *ops_cuda_stream(void) { return NULL; }
void ops_cuda_forget_gemm_plans(void) {}
void ops_cuda_ktime_enable(int on) { (void)on; }
int ops_cuda_mem(size_t *used, size_t *total) {
    *used = *total = 0;
    return 1;
}
void ops_cuda_ktime_report(FILE *f, int steps) { (void)f, (void)steps; }
#endif

OpsOptions ops_options_default(void) {
    OpsOptions o = {.cuda = {.flash_attention = 1,
                             .flash_heads_per_block = 0,
                             .fused_norm = 1,
                             .moe_grouped_gemm = 0,
                             .lmhead_chunk_rows = 1024,
                             .sync_debug = 0}};
    return o;
}

const Ops *ops_get(const char *name, const OpsOptions *opt, char *err, size_t err_len) {
    if (!strcmp(name, "cpu")) return ops_cpu(); /* no options */
    if (!strcmp(name, "cuda")) return ops_cuda(opt, err, err_len);
    if (!strcmp(name, "cuda-fp32")) return ops_cuda_fp32(opt, err, err_len);
    err_set(err, err_len, "unknown device '%s' (expected \"cpu\", \"cuda\" or \"cuda-fp32\")",
            name);
    return NULL;
}

void ops_rope_table(float *cs, float *sn, int T, int half, const float *inv_freq) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            float a = (float)t * inv_freq[i];
            cs[(size_t)t * half + i] = cosf(a);
            sn[(size_t)t * half + i] = sinf(a);
        }
}
