/* data/fail.h: the error-message helper of data/ and tokenizer/: format the
 * message into the caller's buffer (when there is one) and return -1, so an
 * error path is one line: `return fail(err, errlen, "%s: ...", path);`. */
#ifndef DAPT_DATA_FAIL_H
#define DAPT_DATA_FAIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4))) static inline int fail(char *err, size_t errlen,
                                                             const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

#endif
