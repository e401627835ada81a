/* metrics.c: see metrics.h. */
#include "trainer/metrics.h"
#include "kernels/util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct Metrics {
    FILE *f;
    char path[4096];
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
    *out = mf;
    return 0;
}

void metrics_close(Metrics *mf) {
    if (!mf) return;
    fclose(mf->f);
    free(mf);
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
    } else if (mf && (fputs(r->s, mf->f) == EOF || fflush(mf->f))) {
        rc = 1;
        err_set(err, err_len, "cannot write %s: %s", mf->path, strerror(errno));
    }
    metrics_rec_free(r);
    return rc;
}
