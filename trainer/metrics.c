/* metrics.c: see metrics.h. */
#include "trainer/metrics.h"
#include "kernels/util.h"
#include "trainer/tb.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct Metrics {
    FILE *f;
    char path[4096];
    char failed[4400]; /* the first write failure's cause; "" while none */
    off_t good;        /* bytes of whole records in the file */
    Tb *tb;            /* [log] tensorboard: the records' numbers as events too */
};

int metrics_open(Metrics **out, const char *run_dir, char *err, size_t err_len) {
    Metrics *mf = calloc(1, sizeof *mf);
    *out = NULL;
    if (!mf) return err_set(err, err_len, "out of memory");
    snprintf(mf->path, sizeof mf->path, "%s/metrics.jsonl", run_dir);
    if (!(mf->f = fopen(mf->path, "a"))) {
        err_set(err, err_len, "cannot open %s: %s", mf->path, strerror(errno));
        free(mf);
        return 1;
    }
    /* unbuffered: a record goes to the file in metrics_write or not at all,
     * so a failed one can be cut off and nothing is left to flush later */
    setvbuf(mf->f, NULL, _IONBF, 0);
    struct stat sb;
    mf->good = fstat(fileno(mf->f), &sb) == 0 && S_ISREG(sb.st_mode) ? sb.st_size : 0;
    *out = mf;
    return 0;
}

void metrics_close(Metrics *mf) {
    if (!mf) return;
    tb_close(mf->tb);
    fclose(mf->f);
    free(mf);
}

/* Records the first failure (errno's text) and puts it into err; the part
 * of a record that did reach the file is cut off (a reader never sees half
 * a line). */
static int metrics_fail(Metrics *mf, const char *what, int errnum, char *err, size_t err_len) {
    struct stat sb;
    if (fstat(fileno(mf->f), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > mf->good &&
        ftruncate(fileno(mf->f), mf->good) == 0)
        fsync(fileno(mf->f));
    if (!mf->failed[0])
        snprintf(mf->failed, sizeof mf->failed, "cannot %s %s: %s", what, mf->path,
                 errnum ? strerror(errnum) : "unknown error");
    return err_set(err, err_len, "%s", mf->failed);
}

static double wall_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int metrics_tensorboard(Metrics *mf, const char *run_dir, char *err, size_t err_len) {
    return tb_open(&mf->tb, run_dir, err, err_len);
}

/* A failed write of the event file fails the metrics like one of
 * metrics.jsonl (whose records stay whole). */
static int metrics_tb_fail(Metrics *mf, const char *cause, char *err, size_t err_len) {
    if (!mf->failed[0]) snprintf(mf->failed, sizeof mf->failed, "%s", cause);
    return err_set(err, err_len, "%s", mf->failed);
}

int metrics_sync(Metrics *mf, char *err, size_t err_len) {
    if (!mf) return 0;
    if (mf->failed[0]) return err_set(err, err_len, "%s", mf->failed);
    if (mf->tb && tb_sync(mf->tb, err, err_len)) return metrics_tb_fail(mf, err, err, err_len);
    errno = 0;
    if (fflush(mf->f)) return metrics_fail(mf, "write", errno, err, err_len);
    if (fsync(fileno(mf->f)) && errno != EINVAL) /* EINVAL: a file that cannot sync */
        return metrics_fail(mf, "fsync", errno, err, err_len);
    return 0;
}

int metrics_failed(const Metrics *mf) {
    return mf && mf->failed[0];
}

static void put(MetricsRec *r, const char *fmt, ...) {
    va_list ap;
    if (r->oom) return;
    for (;;) {
        size_t room = r->cap - r->len;
        va_start(ap, fmt);
        int k = r->s ? vsnprintf(r->s + r->len, room, fmt, ap) : -2;
        va_end(ap);
        if (k == -1) return;
        if (k >= 0 && (size_t)k < room) {
            r->len += (size_t)k;
            return;
        }
        size_t cap = r->cap * 2 + (k > 0 ? (size_t)k : 0) + 256;
        char *t = realloc(r->s, cap);
        if (!t) {
            r->oom = 1;
            return;
        }
        r->s = t, r->cap = cap;
    }
}

/* The separator and key before a value. */
static void put_key(MetricsRec *r, const char *key) {
    if (r->has[r->depth]) put(r, ",");
    r->has[r->depth] = 1;
    if (key) put(r, "\"%s\":", key);
}

static void put_string(MetricsRec *r, const char *v) {
    put(r, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            put(r, "\\%c", *p);
        else if (*p < 0x20)
            put(r, "\\u%04x", *p);
        else
            put(r, "%c", *p);
    }
    put(r, "\"");
}

void metrics_rec_begin(MetricsRec *r, const char *type) {
    memset(r, 0, sizeof *r);
    put(r, "{");
    metrics_rec_str(r, "type", type);
}

void metrics_rec_int(MetricsRec *r, const char *key, long long v) {
    put_key(r, key);
    put(r, "%lld", v);
}

void metrics_rec_num(MetricsRec *r, const char *key, const char *fmt, double v) {
    put_key(r, key);
    if (isfinite(v))
        put(r, fmt, v);
    else
        put(r, "null");
}

void metrics_rec_str(MetricsRec *r, const char *key, const char *v) {
    put_key(r, key);
    put_string(r, v);
}

static void open_nested(MetricsRec *r, const char *key, const char *bracket) {
    put_key(r, key);
    put(r, "%s", bracket);
    if (r->depth + 1 < METRICS_MAX_DEPTH)
        r->has[++r->depth] = 0;
    else
        r->oom = 1;
}

static void close_nested(MetricsRec *r, const char *bracket) {
    put(r, "%s", bracket);
    if (r->depth > 0) r->depth--;
}

void metrics_rec_array_begin(MetricsRec *r, const char *key) { open_nested(r, key, "["); }
void metrics_rec_array_end(MetricsRec *r) { close_nested(r, "]"); }
void metrics_rec_object_begin(MetricsRec *r, const char *key) { open_nested(r, key, "{"); }
void metrics_rec_object_end(MetricsRec *r) { close_nested(r, "}"); }

void metrics_rec_free(MetricsRec *r) {
    free(r->s);
    r->s = NULL;
}

int metrics_write(Metrics *mf, MetricsRec *r, char *err, size_t err_len) {
    int rc = 0;
    put(r, "}\n");
    if (r->oom || r->depth) {
        rc = 1;
        err_set(err, err_len, "metrics record: %s",
                r->oom ? "out of memory" : "unclosed array or object");
    } else if (mf && mf->failed[0]) {
        rc = err_set(err, err_len, "%s", mf->failed);
    } else if (mf) {
        errno = 0;
        if (fwrite(r->s, 1, r->len, mf->f) != r->len || fflush(mf->f))
            rc = metrics_fail(mf, "write", errno, err, err_len);
        else
            mf->good += (off_t)r->len;
        char e2[1200];
        if (!rc && mf->tb && tb_write_record(mf->tb, r->s, wall_s(), e2, sizeof e2))
            rc = metrics_tb_fail(mf, e2, err, err_len);
    }
    metrics_rec_free(r);
    return rc;
}
