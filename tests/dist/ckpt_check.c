/* ckpt_check.c: `ckpt_check DIR`: exit 0 when DIR is a complete dapt
 * checkpoint (trainer/ckpt.h ckpt_check), else print why and exit 1. Used by
 * the kill test of tests/dist/dist_e2e.sh. */
#include <stdio.h>

#include "trainer/ckpt.h"

int main(int argc, char **argv) {
    if (argc != 2) return fprintf(stderr, "usage: ckpt_check DIR\n"), 2;
    char err[1024];
    if (ckpt_check(argv[1], err, sizeof err)) return fprintf(stderr, "%s: %s\n", argv[1], err), 1;
    printf("%s: complete\n", argv[1]);
    return 0;
}
