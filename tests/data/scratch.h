/* tests/data/scratch.h: the scratch directory of the data and tokenizer
 * tests. They write thousands of small files, which a busy disk makes slow,
 * so the directory is in /dev/shm when that is writable, else in /tmp. */
#ifndef DAPT_TESTS_DATA_SCRATCH_H
#define DAPT_TESTS_DATA_SCRATCH_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Make a fresh directory /dev/shm/dapt-<tag>-XXXXXX (or under /tmp) and
 * write its name to dir; 0 on success, -1 (with a message) on failure. */
static inline int scratch_make(char *dir, size_t size, const char *tag) {
    const char *root = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    int n = snprintf(dir, size, "%s/dapt-%s-XXXXXX", root, tag);
    if (n < 0 || (size_t)n >= size || !mkdtemp(dir)) {
        fprintf(stderr, "cannot make a scratch directory %s/dapt-%s-XXXXXX\n", root, tag);
        return -1;
    }
    return 0;
}

/* Remove the directory and everything in it; 0 on success. */
static inline int scratch_remove(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
