/* tb.c: see tb.h. */
#include "trainer/tb.h"
#include "kernels/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct Tb {
    FILE *f;
    char path[4608]; /* tb_open: dir (4200) + the longest name */
};

uint32_t tb_crc32c(const void *data, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            table[i] = c;
        }
    uint32_t crc = 0xFFFFFFFFu;
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* TFRecord's masking of a CRC stored next to the data it covers */
static uint32_t masked_crc(const void *data, size_t n) {
    uint32_t crc = tb_crc32c(data, n);
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

/* ---------------- protobuf encoding of Event, Summary, Value ---------------- */

typedef struct {
    unsigned char *b;
    size_t len, cap;
    int oom;
} Buf;

static void put_bytes(Buf *o, const void *p, size_t n) {
    if (o->oom) return;
    if (o->len + n > o->cap) {
        size_t cap = (o->len + n) * 2 + 64;
        unsigned char *t = realloc(o->b, cap);
        if (!t) {
            o->oom = 1;
            return;
        }
        o->b = t, o->cap = cap;
    }
    memcpy(o->b + o->len, p, n);
    o->len += n;
}

static void put_varint(Buf *o, uint64_t v) {
    unsigned char b[10];
    int n = 0;
    do {
        b[n++] = (unsigned char)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
    put_bytes(o, b, (size_t)n);
}

/* field number and wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit) */
static void put_key(Buf *o, int field, int wire) {
    put_varint(o, (uint64_t)field << 3 | (uint64_t)wire);
}

static void put_le(Buf *o, uint64_t v, int n) {
    unsigned char b[8];
    for (int i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put_bytes(o, b, (size_t)n);
}

static void put_len_delim(Buf *o, int field, const void *p, size_t n) {
    put_key(o, field, 2);
    put_varint(o, n);
    put_bytes(o, p, n);
}

/* Event.wall_time = 1 (double) */
static void put_wall_time(Buf *o, double t) {
    uint64_t u;
    memcpy(&u, &t, 8);
    put_key(o, 1, 1);
    put_le(o, u, 8);
}

/* Summary.value = 1 (repeated Value{tag = 1, simple_value = 2 (float)}) */
static void put_value(Buf *summary, const char *tag, double v) {
    Buf val = {0};
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    put_len_delim(&val, 1, tag, strlen(tag));
    put_key(&val, 2, 5);
    put_le(&val, u, 4);
    if (val.oom) summary->oom = 1;
    put_len_delim(summary, 1, val.b, val.len);
    free(val.b);
}

/* ---------------- the file ---------------- */

static int write_event(Tb *tb, const Buf *ev, char *err, size_t err_len) {
    if (ev->oom) return err_set(err, err_len, "%s: out of memory", tb->path);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)ev->len >> (8 * i));
    uint32_t c_len = masked_crc(len, 8), c_data = masked_crc(ev->b, ev->len);
    unsigned char c[4];
    errno = 0;
    int bad = fwrite(len, 1, 8, tb->f) != 8;
    for (int i = 0; i < 4; i++)
        c[i] = (unsigned char)(c_len >> (8 * i));
    bad = bad || fwrite(c, 1, 4, tb->f) != 4 || fwrite(ev->b, 1, ev->len, tb->f) != ev->len;
    for (int i = 0; i < 4; i++)
        c[i] = (unsigned char)(c_data >> (8 * i));
    bad = bad || fwrite(c, 1, 4, tb->f) != 4 || fflush(tb->f);
    if (bad)
        return err_set(err, err_len, "cannot write %s: %s", tb->path,
                       errno ? strerror(errno) : "unknown error");
    return 0;
}

int tb_open(Tb **out, const char *run_dir, char *err, size_t err_len) {
    char dir[4200], host[256] = "localhost";
    *out = NULL;
    snprintf(dir, sizeof dir, "%s/tb", run_dir);
    if (mkdir_p(dir, err, err_len)) return 1;
    Tb *tb = calloc(1, sizeof *tb);
    if (!tb) return err_set(err, err_len, "out of memory");
    gethostname(host, sizeof host - 1);
    host[strcspn(host, "/")] = 0;
    long now = (long)time(NULL);
    int fd = -1;
    for (int k = 0; k < 1000 && fd < 0; k++) {
        if (k)
            snprintf(tb->path, sizeof tb->path, "%s/events.out.tfevents.%010ld.%s.%d", dir, now,
                     host, k);
        else
            snprintf(tb->path, sizeof tb->path, "%s/events.out.tfevents.%010ld.%s", dir, now, host);
        fd = open(tb->path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0 || !(tb->f = fdopen(fd, "wb"))) {
        err_set(err, err_len, "cannot create %s: %s", tb->path, strerror(errno));
        if (fd >= 0) close(fd);
        free(tb);
        return 1;
    }
    Buf ev = {0};
    put_wall_time(&ev, (double)now);
    put_len_delim(&ev, 3, "brain.Event:2", 13); /* Event.file_version = 3 */
    int rc = write_event(tb, &ev, err, err_len);
    free(ev.b);
    if (rc) {
        tb_close(tb);
        return 1;
    }
    *out = tb;
    return 0;
}

void tb_close(Tb *tb) {
    if (!tb) return;
    fclose(tb->f);
    free(tb);
}

const char *tb_path(const Tb *tb) {
    return tb->path;
}

/* The numbers under j as Values tagged prefix/key/... */
static void put_numbers(Buf *summary, const cJSON *j, char *tag, size_t tag_len, size_t cap) {
    if (cJSON_IsNumber(j)) {
        put_value(summary, tag, j->valuedouble);
        return;
    }
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return;
    int i = 0;
    for (const cJSON *c = j->child; c; c = c->next, i++) {
        int n = cJSON_IsObject(j) ? snprintf(tag + tag_len, cap - tag_len, "/%s", c->string)
                                  : snprintf(tag + tag_len, cap - tag_len, "/%d", i);
        if (n > 0 && tag_len + (size_t)n < cap)
            put_numbers(summary, c, tag, tag_len + (size_t)n, cap);
        tag[tag_len] = 0;
    }
}

int tb_write_record(Tb *tb, const char *json, double wall_time, char *err, size_t err_len) {
    cJSON *j = cJSON_Parse(json);
    if (!j) return err_set(err, err_len, "%s: a metrics record that is not JSON", tb->path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step");
    if (!cJSON_IsString(type) || !cJSON_IsNumber(step)) {
        cJSON_Delete(j);
        return 0;
    }
    char tag[1024];
    size_t tag_len = (size_t)snprintf(tag, sizeof tag, "%s", type->valuestring);
    for (const cJSON *c = j->child; c; c = c->next)
        if (cJSON_IsString(c) && c != type && tag_len < sizeof tag)
            tag_len += (size_t)snprintf(tag + tag_len, sizeof tag - tag_len, "/%s", c->valuestring);
    Buf summary = {0}, ev = {0};
    for (const cJSON *c = j->child; c; c = c->next) {
        if (c == step || cJSON_IsString(c) || tag_len >= sizeof tag) continue;
        int n = snprintf(tag + tag_len, sizeof tag - tag_len, "/%s", c->string);
        if (n > 0 && tag_len + (size_t)n < sizeof tag)
            put_numbers(&summary, c, tag, tag_len + (size_t)n, sizeof tag);
        tag[tag_len] = 0;
    }
    int rc = 0;
    if (summary.len || summary.oom) {
        put_wall_time(&ev, wall_time);
        put_key(&ev, 2, 0); /* Event.step = 2 (int64) */
        put_varint(&ev, (uint64_t)(int64_t)step->valuedouble);
        if (summary.oom) ev.oom = 1;
        put_len_delim(&ev, 5, summary.b, summary.len); /* Event.summary = 5 */
        rc = write_event(tb, &ev, err, err_len);
    }
    free(summary.b), free(ev.b);
    cJSON_Delete(j);
    return rc;
}

int tb_sync(Tb *tb, char *err, size_t err_len) {
    errno = 0;
    if (fflush(tb->f) || (fsync(fileno(tb->f)) && errno != EINVAL))
        return err_set(err, err_len, "cannot write %s: %s", tb->path,
                       errno ? strerror(errno) : "unknown error");
    return 0;
}
