/* tests/data/check.h: the assertion macros of the data and tokenizer tests.
 * A failed CHECK prints file:line and the expression and counts a failure;
 * CHECK_DONE() returns 1 from main when anything failed, so ctest sees it.
 * The tests keep their scratch files in /dev/shm when it is writable: they
 * write thousands of small files, which a busy disk makes slow. */
#ifndef DAPT_TESTS_DATA_CHECK_H
#define DAPT_TESTS_DATA_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures = 0;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                   \
        }                                                                       \
    } while (0)

/* The call returns 0; otherwise print its error message. */
#define CHECK_OK(call, err)                                                     \
    do {                                                                        \
        if ((call) != 0) {                                                      \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, err); \
            check_failures++;                                                   \
        }                                                                       \
    } while (0)

/* The call fails and its error message contains every given substring. */
#define CHECK_FAILS(call, err, ...)                                             \
    do {                                                                        \
        (err)[0] = 0;                                                           \
        if ((call) == 0) {                                                      \
            fprintf(stderr, "%s:%d: %s succeeded, expected failure\n", __FILE__, __LINE__, #call); \
            check_failures++;                                                   \
        } else {                                                                \
            const char *subs_[] = {__VA_ARGS__};                                \
            for (size_t i_ = 0; i_ < sizeof subs_ / sizeof *subs_; i_++)        \
                if (!strstr((err), subs_[i_])) {                                \
                    fprintf(stderr, "%s:%d: error '%s' lacks '%s'\n", __FILE__, __LINE__, (err), subs_[i_]); \
                    check_failures++;                                           \
                }                                                               \
        }                                                                       \
    } while (0)

#define CHECK_DONE()                                                            \
    do {                                                                        \
        if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures); \
        return check_failures ? 1 : 0;                                          \
    } while (0)

#endif
