/* law_err.h: private to tools/law. ERR(...) formats a message into the
 * caller's (err, err_len) buffer and evaluates to -1, so library functions
 * can `return ERR("%s:%d: ...", path, line)`. */
#ifndef DAPT_LAW_ERR_H
#define DAPT_LAW_ERR_H

#include <stdarg.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4))) static inline int law_err_set(char *err, size_t err_len,
                                                                    const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && err_len) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

#define ERR(...) law_err_set(err, err_len, __VA_ARGS__)

#endif
