#!/usr/bin/env python3
"""hostify.py: rewrite a kernels/cuda source (.cu or .cuh) for the host
compiler and the emulator (tests/cuemu/cuemu.h).

    hostify.py IN OUT

Three rewrites, nothing else changes (line numbers are kept, so compiler
messages point at the original lines):
- the CUDA headers (<cuda_runtime.h>, <cuda_bf16.h>, <cublasLt.h>,
  <cublas_v2.h>) become "tests/cuemu/cuemu.h";
- a launch `kernel<args><<<grid, block[, smem[, stream]]>>>(params)` becomes
  `cuemu::launch(kernel<args>, grid, block[, smem[, stream]])(params)`;
- `extern __shared__ T name[];` becomes `T *name = (T *)cuemu::dyn_smem();`.
A launch whose kernel expression cannot be found is an error, so a source
the emulator would silently miscompile fails the build instead."""
import os
import re
import sys

CUDA_HEADERS = re.compile(r'#include\s*<(cuda_runtime|cuda_bf16|cublasLt|cublas_v2)\.h>')
DYN_SMEM = re.compile(r'extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]\s*;')


def kernel_start(src, end):
    """index where the kernel expression ending at `end` (exclusive) starts:
    an identifier with an optional balanced <...> template argument list"""
    i = end
    while i > 0 and src[i - 1].isspace():
        i -= 1
    if i > 0 and src[i - 1] == '>':
        depth = 0
        while i > 0:
            i -= 1
            if src[i] == '>':
                depth += 1
            elif src[i] == '<':
                depth -= 1
                if depth == 0:
                    break
        else:
            raise ValueError('unbalanced template arguments')
    j = i
    while j > 0 and (src[j - 1].isalnum() or src[j - 1] in '_:'):
        j -= 1
    if j == i:
        raise ValueError('no kernel name')
    return j


def rewrite_launches(src, path):
    out, pos = [], 0
    while True:
        a = src.find('<<<', pos)
        if a < 0:
            out.append(src[pos:])
            return ''.join(out)
        b = src.find('>>>', a)
        if b < 0:
            sys.exit(f'{path}: "<<<" without ">>>"')
        try:
            k = kernel_start(src, a)
        except ValueError as e:
            line = src.count('\n', 0, a) + 1
            sys.exit(f'{path}:{line}: cannot rewrite the launch: {e}')
        if k < pos:
            sys.exit(f'{path}: overlapping launches')
        kernel = src[k:a]
        cfg = src[a + 3:b]
        # keep the newlines of the kernel expression and config in place
        out.append(src[pos:k])
        out.append('cuemu::launch(' + kernel + ', ' + cfg + ')')
        pos = b + 3


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: hostify.py IN OUT')
    path = sys.argv[1]
    with open(path) as f:
        src = f.read()
    src = CUDA_HEADERS.sub('#include "tests/cuemu/cuemu.h"', src)
    src = DYN_SMEM.sub(
        lambda m: f'{m.group(1)} *{m.group(2)} = ({m.group(1)} *)cuemu::dyn_smem();', src)
    src = rewrite_launches(src, path)
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[2])), exist_ok=True)
    with open(sys.argv[2], "w") as f:
        f.write(f'#line 1 "{path}"\n' + src)


if __name__ == '__main__':
    main()
