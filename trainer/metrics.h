/* metrics.h: RUN/metrics.jsonl, one JSON object per line, and the one
 * writer of its records (train, eval and event records of `dapt train`;
 * docs/train.md lists their fields). A record is built field by field
 * (metrics_rec_*) and appended whole (metrics_write), so a reader never
 * sees half a line.
 *
 * Formatting is part of the format: readers (tests/train/check_metrics.py,
 * tests/dist/compare_losses.py, tools/plot, the law sweep) compare numbers
 * as written, so each number field names its printf format ("%.6f",
 * "%.6g", ...); a number that is not finite is written as null. Keys are
 * written in call order. Invariant: metrics_rec_* never fail; out of memory
 * marks the record, and metrics_write then reports it without writing. */
#ifndef DAPT_METRICS_H
#define DAPT_METRICS_H

#include <stddef.h>

typedef struct Metrics Metrics;

/* Opens (appends to) RUN/metrics.jsonl. Every record is flushed as it is
 * written (metrics_write) and the file fsynced at checkpoints
 * (metrics_sync); the first failed write, flush or fsync marks the file
 * failed (metrics_failed) and every later write fails with the same cause. */
int metrics_open(Metrics **out, const char *run_dir, char *err, size_t err_len);
/* [log] tensorboard: every record written from now on also goes, as one
 * event of its numbers, to a new event file under RUN/tb (trainer/tb.h),
 * flushed with the record and fsynced by metrics_sync; a failed write of
 * it fails the metrics like one of metrics.jsonl. */
int metrics_tensorboard(Metrics *mf, const char *run_dir, char *err, size_t err_len);
/* NULL is a no-op. */
void metrics_close(Metrics *mf);
/* Flushes and fsyncs the file (NULL: a no-op); 0 or err names the file and
 * the cause. */
int metrics_sync(Metrics *mf, char *err, size_t err_len);
/* 1 when a write, flush or fsync of mf has failed (NULL: 0). */
int metrics_failed(const Metrics *mf);

#define METRICS_MAX_DEPTH 8

/* One record being built: {"type":TYPE, ...}. */
typedef struct {
    char *s;
    size_t len, cap;
    int oom;
    int depth;                            /* open arrays and objects */
    unsigned char has[METRICS_MAX_DEPTH]; /* a value was written at this depth */
} MetricsRec;

void metrics_rec_begin(MetricsRec *r, const char *type);
/* Fields of the object (key != NULL) or elements of the innermost open
 * array (key == NULL). fmt: a printf format for one double. */
void metrics_rec_int(MetricsRec *r, const char *key, long long v);
void metrics_rec_num(MetricsRec *r, const char *key, const char *fmt, double v);
void metrics_rec_str(MetricsRec *r, const char *key, const char *v);
void metrics_rec_array_begin(MetricsRec *r, const char *key);
void metrics_rec_array_end(MetricsRec *r);
/* A nested object: its fields are written with their keys (key != NULL). */
void metrics_rec_object_begin(MetricsRec *r, const char *key);
void metrics_rec_object_end(MetricsRec *r);
/* Appends the record and a newline to mf and flushes; frees the record
 * (also when mf is NULL: a rank other than 0 builds records it drops). */
int metrics_write(Metrics *mf, MetricsRec *r, char *err, size_t err_len);
/* Frees a record without writing it. */
void metrics_rec_free(MetricsRec *r);

#endif
