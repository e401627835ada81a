/* runner_check.h: the assertion macros of the C unit tests. A failed CHECK
 * prints file, line and the condition and is counted; TEST_EXIT() returns 1
 * when anything failed, and prints "N passed, M failed". */
#ifndef DAPT_RUNNER_CHECK_H
#define DAPT_RUNNER_CHECK_H

#include <stdio.h>
#include <string.h>

static int test_passed_, test_failed_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) test_passed_++;                                                                  \
        else {                                                                                     \
            test_failed_++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* CHECK that the message contains a substring (and show it when not) */
#define CHECK_MSG(msg, sub)                                                                        \
    do {                                                                                           \
        if (strstr((msg), (sub))) test_passed_++;                                                  \
        else {                                                                                     \
            test_failed_++;                                                                        \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, (msg),     \
                    (sub));                                                                        \
        }                                                                                          \
    } while (0)

#define TEST_EXIT()                                                                                \
    (printf("%d passed, %d failed\n", test_passed_, test_failed_), test_failed_ ? 1 : 0)

#endif
