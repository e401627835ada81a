/* kernels/util.h: the helpers every part of dapt shares. It sits at the
 * bottom of the dependency order (kernels <- data <- tokenizer <- trainer <-
 * tools <- cli) so that any module can use it without a second copy.
 *
 * The error idiom: library functions take (char *err, size_t err_len), and a
 * failure is one line that names the file, line, key or byte offset and what
 * was expected:
 *     return err_set(err, err_len, "%s: byte %llu: expected ..., found ...", path, off, ...);
 * err_set always returns -1; callers test any nonzero status as failure. */
#ifndef DAPT_KERNELS_UTIL_H
#define DAPT_KERNELS_UTIL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Formats the message into err (truncated to err_len - 1 bytes and always
 * terminated); err == NULL or err_len == 0 writes nothing. Returns -1. */
__attribute__((format(printf, 3, 4))) int err_set(char *err, size_t err_len, const char *fmt, ...);

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
double now_s(void);

/* mkdir -p: creates path and its missing parents (mode 0755). Returns 0, or
 * -1 with "cannot create directory <component>: <reason>" in err. */
int mkdir_p(const char *path, char *err, size_t err_len);
/* mkdir_p of the directory that holds the file path (nothing for a bare
 * file name): every command creates its outputs' directories. */
int mkdir_parent(const char *path, char *err, size_t err_len);

/* Levenshtein distance between the first n chars of a and the string b,
 * for "did you mean" suggestions; (size_t)-1 when either is 63 chars or
 * longer (names that long get no suggestion). */
size_t edit_distance(const char *a, size_t n, const char *b);

/* s for a terminal: bytes below 0x20, 0x7f and backslash as \xNN (\\ for
 * the backslash), so a name read from a file cannot move the cursor or
 * retitle the window; printable ASCII and UTF-8 bytes >= 0x80 kept. Into
 * out (always terminated, cut at out_len - 1); returns out. */
const char *str_escape(const char *s, char *out, size_t out_len);

/* Whether n NUL-terminated names hold one twice, in O(n log n) (a sorted
 * copy of the pointers, adjacent names compared): 0 when all differ, 1 with
 * *dup pointing at a repeated name, -1 when the copy cannot be allocated.
 * The parsers' duplicate-key checks (a file with 100,000 keys must not cost
 * n^2 string compares). */
int find_duplicate(const char *const *names, size_t n, const char **dup);

#ifdef __cplusplus
}
#endif

#endif
