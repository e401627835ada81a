/* ops.c: backend selection by name. The CUDA backend defines ops_cuda() in
 * kernels/cuda when the build has CUDA; otherwise the stub below explains. */
#include <stdio.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/util.h"

#ifndef DAPT_HAVE_CUDA
const Ops *ops_cuda(char *err, size_t err_len) {
    err_set(err, err_len, "this dapt was built without CUDA (nvcc was not found at build time)");
    return NULL;
}
const Ops *ops_cuda_fp32(char *err, size_t err_len) { return ops_cuda(err, err_len); }
void *ops_cuda_stream(void) { return NULL; }
void ops_cuda_forget_gemm_plans(void) {}
void ops_cuda_ktime_enable(int on) { (void)on; }
void ops_cuda_ktime_report(FILE *f, int steps) { (void)f, (void)steps; }
#endif

const Ops *ops_get(const char *name, char *err, size_t err_len) {
    if (!strcmp(name, "cpu")) return ops_cpu();
    if (!strcmp(name, "cuda")) return ops_cuda(err, err_len);
    if (!strcmp(name, "cuda-fp32")) return ops_cuda_fp32(err, err_len);
    err_set(err, err_len, "unknown device '%s' (expected \"cpu\", \"cuda\" or \"cuda-fp32\")",
            name);
    return NULL;
}
