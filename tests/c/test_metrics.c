/* test_metrics.c: the metrics.jsonl record writer (trainer/metrics.h). The
 * oracle is the exact text the readers of metrics.jsonl were written
 * against: keys in call order, each number in its printf format, null for
 * a number that is not finite, nested arrays with commas only between
 * elements, strings escaped, one record per line, appended. Also the
 * CRC32C of the TensorBoard event files (trainer/tb.h) against the test
 * vectors of RFC 3720 B.4 and the check value of "123456789" (the event
 * files themselves are read back by tests/train/check_tb.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "trainer/metrics.h"
#include "trainer/tb.h"

/* the whole file as a string (malloc'd) */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *s = calloc(1, 1 << 16);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

int main(void) {
    char dir[] = "/tmp/dapt_test_metrics_XXXXXX", err[512], path[600];
    CHECK(mkdtemp(dir) != NULL);
    Metrics *mf = NULL;
    CHECK_OK(metrics_open(&mf, dir, err, sizeof err), err);

    MetricsRec r;
    metrics_rec_begin(&r, "train");
    metrics_rec_int(&r, "step", 12);
    metrics_rec_int(&r, "tokens", 3072LL * 1000000000LL);
    metrics_rec_num(&r, "loss", "%.6f", 4.7123456789);
    metrics_rec_num(&r, "loss_domain", "%.6f", NAN);
    metrics_rec_num(&r, "lr", "%.6g", 0.0025);
    metrics_rec_num(&r, "tok_s", "%.1f", INFINITY);
    metrics_rec_array_begin(&r, "moe_lbl");
    metrics_rec_num(&r, NULL, "%.6g", 1.5);
    metrics_rec_num(&r, NULL, "%.6g", -NAN);
    metrics_rec_array_end(&r);
    metrics_rec_array_begin(&r, "routing");
    for (int i = 0; i < 2; i++) {
        metrics_rec_array_begin(&r, NULL);
        for (int e = 0; e < 3; e++)
            metrics_rec_num(&r, NULL, "%.6g", i * 3 + e);
        metrics_rec_array_end(&r);
    }
    metrics_rec_array_end(&r);
    metrics_rec_array_begin(&r, "empty");
    metrics_rec_array_end(&r);
    metrics_rec_object_begin(&r, "samples");
    metrics_rec_int(&r, "pubmed", 7);
    metrics_rec_num(&r, "web", "%.6f", NAN);
    metrics_rec_object_end(&r);
    metrics_rec_object_begin(&r, "none");
    metrics_rec_object_end(&r);
    metrics_rec_num(&r, "last", "%.6g", 0.5);
    CHECK_OK(metrics_write(mf, &r, err, sizeof err), err);

    metrics_rec_begin(&r, "event");
    metrics_rec_str(&r, "tensor", "a\"b\\c\nd");
    CHECK_OK(metrics_write(mf, &r, err, sizeof err), err);

    /* a record with an array left open is refused, and nothing is written */
    metrics_rec_begin(&r, "eval");
    metrics_rec_array_begin(&r, "x");
    CHECK_FAILS(metrics_write(mf, &r, err, sizeof err), err, "unclosed array");
    metrics_rec_begin(&r, "eval");
    metrics_rec_object_begin(&r, "x");
    CHECK_FAILS(metrics_write(mf, &r, err, sizeof err), err, "unclosed array or object");
    /* a rank without the file builds and drops records */
    metrics_rec_begin(&r, "eval");
    CHECK_OK(metrics_write(NULL, &r, err, sizeof err), err);
    metrics_close(mf);

    /* appended, never truncated */
    CHECK_OK(metrics_open(&mf, dir, err, sizeof err), err);
    metrics_rec_begin(&r, "eval");
    metrics_rec_str(&r, "split", "val/domain");
    CHECK_OK(metrics_write(mf, &r, err, sizeof err), err);
    metrics_close(mf);

    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    char *got = slurp(path);
    const char *want = "{\"type\":\"train\",\"step\":12,\"tokens\":3072000000000,\"loss\":4.712346,"
                       "\"loss_domain\":null,\"lr\":0.0025,\"tok_s\":null,\"moe_lbl\":[1.5,null],"
                       "\"routing\":[[0,1,2],[3,4,5]],\"empty\":[],"
                       "\"samples\":{\"pubmed\":7,\"web\":null},\"none\":{},\"last\":0.5}\n"
                       "{\"type\":\"event\",\"tensor\":\"a\\\"b\\\\c\\u000ad\"}\n"
                       "{\"type\":\"eval\",\"split\":\"val/domain\"}\n";
    CHECK(got && !strcmp(got, want), "got:\n%s\nwant:\n%s", got ? got : "(nothing)", want);
    free(got);

    unsigned char zeros[32] = {0}, ones[32], inc[32];
    for (int i = 0; i < 32; i++)
        ones[i] = 0xFF, inc[i] = (unsigned char)i;
    CHECK(tb_crc32c("123456789", 9) == 0xE3069283u, "crc32c 123456789 %08x",
          tb_crc32c("123456789", 9));
    CHECK(tb_crc32c(zeros, 32) == 0x8A9136AAu, "crc32c zeros %08x", tb_crc32c(zeros, 32));
    CHECK(tb_crc32c(ones, 32) == 0x62A8AB43u, "crc32c ones %08x", tb_crc32c(ones, 32));
    CHECK(tb_crc32c(inc, 32) == 0x46DD794Eu, "crc32c 0..31 %08x", tb_crc32c(inc, 32));

    /* RUN/tb that cannot be a directory: the error names it */
    CHECK_OK(metrics_open(&mf, dir, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/tb", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    CHECK_FAILS(metrics_tensorboard(mf, dir, err, sizeof err), err, "cannot create", "/tb");
    metrics_close(mf);
    unlink(path);

    snprintf(path, sizeof path, "%s/nodir", dir);
    CHECK_FAILS(metrics_open(&mf, path, err, sizeof err), err, "cannot open", "nodir");
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    unlink(path);
    rmdir(dir);
    return CHECK_DONE();
}
