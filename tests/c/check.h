/* check.h: the assertions of every C test program. A check that fails
 * prints file:line and what failed, is counted, and the test goes on, so one
 * run reports every failing property; main ends with
 *
 *     return CHECK_DONE();
 *
 * which prints "N checks, M failed" and is 1 when anything failed, else 0.
 *
 *   CHECK(cond)                    cond holds
 *   CHECK(cond, fmt, ...)          the same, printing the printf-style
 *                                  message when it does not
 *   CHECK_MSG(msg, sub)            the string msg contains sub
 *   CHECK_OK(call, err)            call returns 0; else prints the error
 *                                  message err it wrote
 *   CHECK_FAILS(call, err, sub...) call returns non-zero and its error
 *                                  message err (cleared first) contains
 *                                  every sub (one check each)
 *
 * The optional message of CHECK uses __VA_OPT__ (C23, and a GNU extension
 * that gcc, clang and nvcc's host compiler accept in gnu11 and C++17).
 * check_failures is the running count of failures, for a test that keeps
 * its scratch files when something failed. */
#ifndef DAPT_TEST_CHECK_H
#define DAPT_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_count, check_failures;

/* one failed check: where and what (the rest of the line is the caller's) */
static inline void check_failed_(const char *file, int line, const char *what) {
    check_failures++;
    fprintf(stderr, "%s:%d: check failed: %s", file, line, what);
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        check_count++;                                                                             \
        if (!(cond)) {                                                                             \
            check_failed_(__FILE__, __LINE__, #cond);                                              \
            __VA_OPT__(fputs(": ", stderr); fprintf(stderr, __VA_ARGS__);)                         \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(msg, sub)                                                                        \
    do {                                                                                           \
        const char *msg_ = (msg), *sub_ = (sub);                                                   \
        check_count++;                                                                             \
        if (!strstr(msg_, sub_)) {                                                                 \
            check_failed_(__FILE__, __LINE__, #msg " contains " #sub);                             \
            fprintf(stderr, ": message \"%s\" lacks \"%s\"\n", msg_, sub_);                        \
        }                                                                                          \
    } while (0)

#define CHECK_OK(call, err)                                                                        \
    do {                                                                                           \
        check_count++;                                                                             \
        if ((call) != 0) {                                                                         \
            check_failed_(__FILE__, __LINE__, #call " == 0");                                      \
            fprintf(stderr, ": %s\n", (err));                                                      \
        }                                                                                          \
    } while (0)

#define CHECK_FAILS(call, err, ...)                                                                \
    do {                                                                                           \
        (err)[0] = 0;                                                                              \
        check_count++;                                                                             \
        if ((call) == 0) {                                                                         \
            check_failed_(__FILE__, __LINE__, #call " != 0");                                      \
            fputs(": it succeeded, expected a failure\n", stderr);                                 \
        } else {                                                                                   \
            const char *subs_[] = {__VA_ARGS__};                                                   \
            for (size_t i_ = 0; i_ < sizeof subs_ / sizeof *subs_; i_++) {                         \
                check_count++;                                                                     \
                if (!strstr((err), subs_[i_])) {                                                   \
                    check_failed_(__FILE__, __LINE__, #call " fails with a message");              \
                    fprintf(stderr, ": \"%s\" lacks \"%s\"\n", (err), subs_[i_]);                  \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* the summary line and the exit status; warn_unused_result makes a bare
 * `CHECK_DONE();` (which would not return) a compile error under -Werror */
__attribute__((warn_unused_result)) static inline int check_done_(void) {
    printf("%d checks, %d failed\n", check_count, check_failures);
    fflush(stdout);
    return check_failures ? 1 : 0;
}
#define CHECK_DONE() check_done_()

#endif
