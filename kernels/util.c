/* kernels/util.c: the helpers every part of dapt shares (see util.h). */
#include "kernels/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int err_set(char *err, size_t err_len, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 0 when dir now exists as a directory; else -1 with errno set (ENOTDIR when
 * something else holds the name). */
static int mkdir_one(const char *dir) {
    struct stat st;
    if (mkdir(dir, 0755) == 0) return 0;
    if (errno != EEXIST) return -1;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    errno = ENOTDIR;
    return -1;
}

int mkdir_p(const char *path, char *err, size_t err_len) {
    char buf[8192];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return err_set(err, err_len, "cannot create directory %.1000s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir_one(buf))
            return err_set(err, err_len, "cannot create directory %.1000s: %s", buf,
                           strerror(errno));
        *p = '/';
    }
    if (mkdir_one(buf))
        return err_set(err, err_len, "cannot create directory %.1000s: %s", buf, strerror(errno));
    return 0;
}

int mkdir_parent(const char *path, char *err, size_t err_len) {
    char dir[8192];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return err_set(err, err_len, "cannot create directory for %.1000s: path too long", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    return mkdir_p(dir, err, err_len);
}

size_t edit_distance(const char *a, size_t n, const char *b) {
    size_t m = strlen(b), row[64];
    if (n >= 63 || m >= 63) return (size_t)-1;
    for (size_t j = 0; j <= m; j++)
        row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int find_duplicate(const char *const *names, size_t n, const char **dup) {
    if (n < 2) return 0;
    const char **s = malloc(n * sizeof *s);
    if (!s) return -1;
    memcpy(s, names, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_name);
    int found = 0;
    for (size_t i = 1; i < n && !found; i++)
        if (!strcmp(s[i - 1], s[i])) {
            *dup = s[i];
            found = 1;
        }
    free(s);
    return found;
}

const char *str_escape(const char *s, char *out, size_t out_len) {
    size_t k = 0;
    if (!out_len) return out;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char piece[5];
        if (ch == '\\')
            snprintf(piece, sizeof piece, "\\\\");
        else if (ch < 0x20 || ch == 0x7f)
            snprintf(piece, sizeof piece, "\\x%02x", ch);
        else
            piece[0] = (char)ch, piece[1] = 0;
        size_t n = strlen(piece);
        if (k + n >= out_len) break;
        memcpy(out + k, piece, n);
        k += n;
    }
    out[k] = 0;
    return out;
}
