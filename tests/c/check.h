/* check.h: the C tests' assertions. CHECK records a failure with file and
 * line and goes on; CHECK_DONE() prints the count and returns the exit code,
 * so one run reports every failing property. */
#ifndef DAPT_TEST_CHECK_H
#define DAPT_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures, check_count;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failures++;                                                                      \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

/* the message contains every one of the given substrings */
#define CHECK_MSG(msg, needle) CHECK(strstr((msg), (needle)) != NULL, "message '%s' lacks '%s'", (msg), (needle))

#define CHECK_DONE()                                                                               \
    (printf("%d checks, %d failed\n", check_count, check_failures), check_failures ? 1 : 0)

#endif
