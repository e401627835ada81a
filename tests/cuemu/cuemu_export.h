/* cuemu_export.h: what the emulator's programs (dapt_emu) export to C code
 * beside the emulator, the emulated NCCL (tests/cuemu/nccl_emu.c), which is
 * compiled against the real nccl.h and cuda_runtime.h and so cannot include
 * cuemu.h. cuemu.h includes this inside its extern "C" block. */
#ifndef DAPT_CUEMU_EXPORT_H
#define DAPT_CUEMU_EXPORT_H

#include <stddef.h>
#include <stdint.h>

/* Work that a stream runs in its order, from a library outside the
 * emulator (tests/cuemu/nccl_emu.c): poll(ctx, wait) advances it and
 * returns 1 when it is done (wait = 1: blocks until then; wait = -1: only
 * starts it, returns 0); after a 1 it is not called again. */
void cuemu_stream_defer(void *stream, int (*poll)(void *ctx, int wait), void *ctx);
/* advances every stream's deferred work as far as it goes without waiting */
void cuemu_progress(void);
/* 1 when [p, p + n) lies inside one cudaMalloc'd buffer */
int cuemu_device_range(const void *p, size_t n);
/* bytes cudaMalloc'd and not yet freed, and the most there ever were
 * (cuemu::device_bytes), for C programs (tests/cuemu/plan_emu.c) */
void cuemu_device_bytes(size_t *current, size_t *peak);
/* kernels and GEMMs launched so far, on any stream */
unsigned long cuemu_launches(void);
/* the emulated device's bf16 conversions (cuemu_f2bf: to nearest even),
 * for C code beside the emulator */
uint16_t cuemu_f32_to_bf16(float f);
float cuemu_bf16_to_f32(uint16_t h);

#endif
