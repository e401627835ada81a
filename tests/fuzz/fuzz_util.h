/* fuzz_util.h: what the libFuzzer harnesses of tests/fuzz share (header
 * only). Readers that take a path (safetensors, shards, GGUF import) get
 * the input through one memfd, rewritten for each input: no disk writes,
 * no descriptor per input. A broken property (beyond a crash, which ASan
 * and UBSan report) ends the run through fuzz_fail, which prints it and
 * aborts so libFuzzer saves the input. (memfd_create needs _GNU_SOURCE:
 * tests/fuzz/CMakeLists.txt defines it for every harness.) */
#ifndef DAPT_FUZZ_UTIL_H
#define DAPT_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "/proc/self/fd/N" of a memfd holding exactly data[0, size); NULL when the
 * memfd cannot be made or written (then the input is skipped). */
static inline const char *fuzz_path(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("dapt-fuzz", 0);
        if (fd < 0) return NULL;
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) return NULL;
    return path;
}

/* a NUL-terminated heap copy of the input (exactly size + 1 bytes) */
static inline char *fuzz_text(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

__attribute__((noreturn)) static inline void fuzz_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz property broken: %s: %s\n", what, detail);
    abort();
}

#endif
