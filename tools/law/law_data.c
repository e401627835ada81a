/* law_data.c: reads sweep results (JSONL or CSV) into a LawData and
 * validates them, so the fitter only ever sees clean observations.
 *
 * Accepted rows: N > 0, D > 0 (finite), 0 <= r_domain <= 1, at least one of
 * loss_general / loss_domain, each finite and > 0; optional "domain" name
 * and the cross-domain statistics k1, k2 (both or neither, finite, > 0, the
 * same on every row of one domain). No two rows share (domain, N, D,
 * r_domain). Every rejection names the file and the 1-based line. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kernels/util.h"
#include "tools/law/law.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Checks one numeric field: finite, and > 0 (or within [0,1] for r). */
static int check_value(const char *name, const char *field, int line, double v, int is_ratio,
                       char *err, size_t err_len) {
    if (isnan(v))
        return err_set(err, err_len, "%s:%d: %s is NaN (expected a finite number)", name, line,
                       field);
    if (isinf(v))
        return err_set(err, err_len, "%s:%d: %s is infinite (expected a finite number)", name, line,
                       field);
    if (is_ratio) {
        if (v < 0.0 || v > 1.0)
            return err_set(err, err_len, "%s:%d: %s = %g is outside [0, 1]", name, line, field, v);
    } else if (v <= 0.0) {
        return err_set(err, err_len, "%s:%d: %s = %g must be > 0", name, line, field, v);
    }
    return 0;
}

static int check_row(const char *name, LawObs *o, int has_k1, int has_k2, char *err,
                     size_t err_len) {
    int line = o->line;
    if (check_value(name, "N", line, o->N, 0, err, err_len)) return -1;
    if (check_value(name, "D", line, o->D, 0, err, err_len)) return -1;
    if (check_value(name, "r_domain", line, o->r_domain, 1, err, err_len)) return -1;
    if (o->has_general && check_value(name, "loss_general", line, o->loss_general, 0, err, err_len))
        return -1;
    if (o->has_domain && check_value(name, "loss_domain", line, o->loss_domain, 0, err, err_len))
        return -1;
    if (!o->has_general && !o->has_domain)
        return err_set(err, err_len, "%s:%d: row has neither loss_general nor loss_domain", name,
                       line);
    if (has_k1 != has_k2)
        return err_set(err, err_len, "%s:%d: k1 and k2 must be given together (found only %s)",
                       name, line, has_k1 ? "k1" : "k2");
    o->has_k = has_k1;
    if (o->has_k) {
        if (check_value(name, "k1", line, o->k1, 0, err, err_len)) return -1;
        if (check_value(name, "k2", line, o->k2, 0, err, err_len)) return -1;
    }
    return 0;
}

/* JSON: a required number, or an optional one (absent or null = absent). */
static int json_number(const char *name, int line, const cJSON *obj, const char *key, int required,
                       double *v, int *present, char *err, size_t err_len) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    *present = 0;
    if (!it || cJSON_IsNull(it)) {
        if (required)
            return err_set(err, err_len, "%s:%d: missing field \"%s\" (expected a number)", name,
                           line, key);
        return 0;
    }
    if (!cJSON_IsNumber(it))
        return err_set(err, err_len, "%s:%d: field \"%s\" is not a number", name, line, key);
    *v = it->valuedouble;
    *present = 1;
    return 0;
}

static int parse_json_line(const char *name, int line, const char *text, LawObs *o, char *err,
                           size_t err_len) {
    cJSON *obj = cJSON_Parse(text);
    if (!obj || !cJSON_IsObject(obj)) {
        cJSON_Delete(obj);
        if (strstr(text, "NaN") || strstr(text, "nan") || strstr(text, "Infinity"))
            return err_set(
                err, err_len,
                "%s:%d: not a valid JSON object (a NaN or Infinity value? losses must be "
                "finite numbers)",
                name, line);
        return err_set(err, err_len, "%s:%d: not a valid JSON object", name, line);
    }
    int p = 0, has_k1 = 0, has_k2 = 0, rc = -1;
    memset(o, 0, sizeof *o);
    o->line = line;
    if (json_number(name, line, obj, "N", 1, &o->N, &p, err, err_len)) goto done;
    if (json_number(name, line, obj, "D", 1, &o->D, &p, err, err_len)) goto done;
    if (json_number(name, line, obj, "r_domain", 1, &o->r_domain, &p, err, err_len)) goto done;
    if (json_number(name, line, obj, "loss_general", 0, &o->loss_general, &o->has_general, err,
                    err_len))
        goto done;
    if (json_number(name, line, obj, "loss_domain", 0, &o->loss_domain, &o->has_domain, err,
                    err_len))
        goto done;
    if (json_number(name, line, obj, "k1", 0, &o->k1, &has_k1, err, err_len)) goto done;
    if (json_number(name, line, obj, "k2", 0, &o->k2, &has_k2, err, err_len)) goto done;
    const cJSON *dom = cJSON_GetObjectItemCaseSensitive(obj, "domain");
    if (dom && !cJSON_IsNull(dom)) {
        if (!cJSON_IsString(dom) || strlen(dom->valuestring) >= LAW_DOMAIN_NAME_LEN) {
            err_set(err, err_len,
                    "%s:%d: field \"domain\" must be a string shorter than %d characters", name,
                    line, LAW_DOMAIN_NAME_LEN);
            goto done;
        }
        strcpy(o->domain, dom->valuestring);
    }
    rc = check_row(name, o, has_k1, has_k2, err, err_len);
done:
    cJSON_Delete(obj);
    return rc;
}

enum { COL_N, COL_D, COL_R, COL_LG, COL_LD, COL_DOMAIN, COL_K1, COL_K2, N_COLS };
static const char *col_names[N_COLS] = {"N",           "D",      "r_domain", "loss_general",
                                        "loss_domain", "domain", "k1",       "k2"};

/* Splits a CSV line in place on commas (no quoting: names and numbers only)
 * and trims spaces. Returns the number of cells (at most max). */
static int csv_split(char *s, char **cells, int max) {
    int n = 0;
    for (;;) {
        char *comma = strchr(s, ',');
        if (comma) *comma = '\0';
        while (*s == ' ' || *s == '\t')
            s++;
        char *end = s + strlen(s);
        while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            *--end = '\0';
        if (n < max) cells[n] = s;
        n++;
        if (!comma) break;
        s = comma + 1;
    }
    return n;
}

static int csv_number(const char *name, int line, const char *cell, const char *field, double *v,
                      int *present, char *err, size_t err_len) {
    *present = 0;
    if (!cell || !*cell) return 0;
    char *end;
    errno = 0;
    *v = strtod(cell, &end);
    if (end == cell || *end)
        return err_set(err, err_len, "%s:%d: %s = \"%s\" is not a number", name, line, field, cell);
    *present = 1;
    return 0;
}

#define CSV_MAX_CELLS 64

static int parse_csv_header(const char *name, int line, char *hdr, int *col_of, int *n_cols,
                            char *err, size_t err_len) {
    char *cells[CSV_MAX_CELLS];
    int n = csv_split(hdr, cells, CSV_MAX_CELLS);
    *n_cols = n;
    if (n > CSV_MAX_CELLS)
        return err_set(err, err_len, "%s:%d: more than %d columns", name, line, CSV_MAX_CELLS);
    for (int c = 0; c < N_COLS; c++)
        col_of[c] = -1;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < N_COLS; c++)
            if (!strcmp(cells[i], col_names[c])) {
                if (col_of[c] >= 0)
                    return err_set(err, err_len, "%s:%d: column \"%s\" appears twice", name, line,
                                   cells[i]);
                col_of[c] = i;
            }
    for (int c = COL_N; c <= COL_R; c++)
        if (col_of[c] < 0)
            return err_set(err, err_len,
                           "%s:%d: header lacks column \"%s\" (expected N,D,r_domain,loss_general,"
                           "loss_domain)",
                           name, line, col_names[c]);
    return 0;
}

static int parse_csv_line(const char *name, int line, char *text, const int *col_of, int n_hdr,
                          LawObs *o, char *err, size_t err_len) {
    char *cells[CSV_MAX_CELLS];
    int n = csv_split(text, cells, CSV_MAX_CELLS);
    if (n != n_hdr)
        return err_set(err, err_len, "%s:%d: %d cells but the header has %d columns", name, line, n,
                       n_hdr);
    const char *cell[N_COLS];
    for (int c = 0; c < N_COLS; c++)
        cell[c] = col_of[c] >= 0 ? cells[col_of[c]] : NULL;
    memset(o, 0, sizeof *o);
    o->line = line;
    int p = 0, has_k1 = 0, has_k2 = 0;
    for (int c = COL_N; c <= COL_R; c++)
        if (!cell[c] || !*cell[c])
            return err_set(err, err_len, "%s:%d: %s is empty (expected a number)", name, line,
                           col_names[c]);
    if (csv_number(name, line, cell[COL_N], "N", &o->N, &p, err, err_len)) return -1;
    if (csv_number(name, line, cell[COL_D], "D", &o->D, &p, err, err_len)) return -1;
    if (csv_number(name, line, cell[COL_R], "r_domain", &o->r_domain, &p, err, err_len)) return -1;
    if (csv_number(name, line, cell[COL_LG], "loss_general", &o->loss_general, &o->has_general, err,
                   err_len))
        return -1;
    if (csv_number(name, line, cell[COL_LD], "loss_domain", &o->loss_domain, &o->has_domain, err,
                   err_len))
        return -1;
    if (csv_number(name, line, cell[COL_K1], "k1", &o->k1, &has_k1, err, err_len)) return -1;
    if (csv_number(name, line, cell[COL_K2], "k2", &o->k2, &has_k2, err, err_len)) return -1;
    if (cell[COL_DOMAIN]) {
        if (strlen(cell[COL_DOMAIN]) >= LAW_DOMAIN_NAME_LEN)
            return err_set(err, err_len, "%s:%d: domain name longer than %d characters", name, line,
                           LAW_DOMAIN_NAME_LEN - 1);
        strcpy(o->domain, cell[COL_DOMAIN]);
    }
    return check_row(name, o, has_k1, has_k2, err, err_len);
}

static int cmp_obs(const void *a, const void *b) {
    const LawObs *x = a, *y = b;
    int c = strcmp(x->domain, y->domain);
    if (c) return c;
    if (x->N != y->N) return x->N < y->N ? -1 : 1;
    if (x->D != y->D) return x->D < y->D ? -1 : 1;
    if (x->r_domain != y->r_domain) return x->r_domain < y->r_domain ? -1 : 1;
    return x->line - y->line;
}

/* Rejects duplicate rows and domains whose rows disagree on k1, k2. Works on
 * a sorted copy so the data keep file order. */
static int check_rows(const LawData *d, char *err, size_t err_len) {
    LawObs *s = malloc((size_t)d->n * sizeof *s);
    if (!s) return err_set(err, err_len, "%s: out of memory", d->path);
    memcpy(s, d->rows, (size_t)d->n * sizeof *s);
    qsort(s, (size_t)d->n, sizeof *s, cmp_obs);
    int rc = 0, first = 0;
    for (int i = 1; i < d->n && !rc; i++) {
        const LawObs *a = &s[i - 1], *b = &s[i];
        if (!strcmp(a->domain, b->domain) && a->N == b->N && a->D == b->D &&
            a->r_domain == b->r_domain)
            rc = err_set(err, err_len, "%s:%d: duplicate row: same N, D, r_domain%s as line %d",
                         d->path, b->line, b->domain[0] ? " and domain" : "", a->line);
        if (strcmp(a->domain, b->domain)) first = i;
        const LawObs *f = &s[first];
        if (!rc && i != first &&
            (f->has_k != b->has_k || (b->has_k && (f->k1 != b->k1 || f->k2 != b->k2))))
            rc = err_set(err, err_len,
                         "%s:%d: k1, k2 differ from line %d of the same domain \"%s\" (they are "
                         "per-domain constants)",
                         d->path, b->line, f->line, b->domain);
    }
    free(s);
    return rc;
}

int law_data_parse(const char *name, const char *text, LawData *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", name);
    int csv = ends_with(name, ".csv");
    if (!strncmp(text, "\xEF\xBB\xBF", 3)) text += 3; /* UTF-8 byte-order mark */
    char *buf = strdup(text);
    if (!buf) return err_set(err, err_len, "%s: out of memory", name);
    int cap = 0, line = 0, rc = 0, col_of[N_COLS], n_hdr = 0, have_hdr = 0;
    char *save = NULL;
    for (char *p = buf; p && !rc; p = save) {
        char *nl = strchr(p, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl) *nl = '\0';
        line++;
        char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r')
            q++;
        if (!*q || *q == '#') continue;
        if (csv && !have_hdr) {
            rc = parse_csv_header(name, line, p, col_of, &n_hdr, err, err_len);
            have_hdr = 1;
            continue;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            LawObs *r = realloc(out->rows, (size_t)cap * sizeof *r);
            if (!r) {
                rc = err_set(err, err_len, "%s: out of memory", name);
                break;
            }
            out->rows = r;
        }
        LawObs *o = &out->rows[out->n];
        rc = csv ? parse_csv_line(name, line, p, col_of, n_hdr, o, err, err_len)
                 : parse_json_line(name, line, p, o, err, err_len);
        if (!rc) out->n++;
    }
    free(buf);
    if (!rc && out->n == 0)
        rc = err_set(err, err_len, "%s: no observations (expected one row per line)", name);
    if (!rc) rc = check_rows(out, err, err_len);
    if (rc) law_data_free(out);
    return rc;
}

int law_data_load(const char *path, LawData *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, err_len, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    int rc = 0;
    while (text) {
        n += fread(text + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *t = realloc(text, cap);
        if (!t) free(text);
        text = t;
    }
    if (!text)
        rc = err_set(err, err_len, "%s: out of memory", path);
    else if (ferror(f))
        rc = err_set(err, err_len, "%s: read error", path);
    else if (memchr(text, '\0', n))
        rc = err_set(err, err_len, "%s: contains a NUL byte (not a text file)", path);
    fclose(f);
    if (!rc) {
        text[n] = '\0';
        rc = law_data_parse(path, text, out, err, err_len);
    }
    free(text);
    return rc;
}

void law_data_free(LawData *d) {
    free(d->rows);
    d->rows = NULL;
    d->n = 0;
}
