/* toml.c: the TOML value grammar dapt accepts (trainer/toml.h): one value
 * and what may follow it on its line, for the config (config.c) and
 * SWEEP.toml (tools/law/law_sweep.c).
 *
 * The grammar is a strict subset of TOML 1.0 so that anything accepted here
 * means the same to tomllib: integers without leading zeros (underscores
 * between digits allowed), floats with digits on both sides of the point
 * and/or an exponent (no inf/nan), true/false, basic strings with TOML's
 * escapes, literal strings, and arrays on one line (trailing comma allowed).
 */
#include "trainer/toml.h"
#include "kernels/util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s, *p;
    char *err;
    size_t err_len;
} Cur;

static int fail(Cur *c, const char *what) {
    err_set(c->err, c->err_len, "%s at column %d", what, (int)(c->p - c->s) + 1);
    return 1;
}

static void skip_ws(Cur *c) {
    while (*c->p == ' ' || *c->p == '\t')
        c->p++;
}

static int is_digit(char ch) {
    return ch >= '0' && ch <= '9';
}

/* digits with single underscores between them, copied without the '_' */
static int digits(Cur *c, char *out, size_t *n, size_t cap) {
    if (!is_digit(*c->p)) return fail(c, "expected a digit");
    while (is_digit(*c->p) || (*c->p == '_' && is_digit(c->p[1]) && is_digit(c->p[-1]))) {
        if (*c->p != '_') {
            if (*n + 1 >= cap) return fail(c, "number too long");
            out[(*n)++] = *c->p;
        }
        c->p++;
    }
    return 0;
}

/* one character into a number's buffer, refusing past cap - 1 (the NUL) */
static int put_char(Cur *c, char *out, size_t *n, size_t cap) {
    if (*n + 1 >= cap) return fail(c, "number too long");
    out[(*n)++] = *c->p++;
    return 0;
}

static int parse_number(Cur *c, Value *v) {
    char buf[128];
    size_t n = 0;
    const char *start = c->p;
    if ((*c->p == '+' || *c->p == '-') && put_char(c, buf, &n, sizeof buf)) return 1;
    if (!strncmp(c->p, "inf", 3) || !strncmp(c->p, "nan", 3))
        return fail(c, "inf and nan are not accepted");
    const char *int_start = c->p;
    if (digits(c, buf, &n, sizeof buf)) return 1;
    if (*int_start == '0' && c->p - int_start > 1) {
        c->p = int_start;
        return fail(c, "leading zeros are not allowed in TOML numbers");
    }
    int is_float = 0;
    if (*c->p == '.') {
        if (put_char(c, buf, &n, sizeof buf)) return 1;
        if (digits(c, buf, &n, sizeof buf)) return 1;
        is_float = 1;
    }
    if (*c->p == 'e' || *c->p == 'E') {
        if (put_char(c, buf, &n, sizeof buf)) return 1;
        if ((*c->p == '+' || *c->p == '-') && put_char(c, buf, &n, sizeof buf)) return 1;
        if (digits(c, buf, &n, sizeof buf)) return 1;
        is_float = 1;
    }
    buf[n] = 0;
    errno = 0;
    char *end;
    if (is_float) {
        v->type = V_FLOAT;
        v->f = strtod(buf, &end);
        if (errno == ERANGE && !isfinite(v->f)) {
            c->p = start;
            return fail(c, "float out of range");
        }
    } else {
        v->type = V_INT;
        v->i = strtoll(buf, &end, 10);
        if (errno == ERANGE) {
            c->p = start;
            return fail(c, "integer out of the 64-bit range");
        }
    }
    return 0;
}

static int put_utf8(char *out, size_t *n, unsigned long cp) {
    if (cp < 0x80)
        out[(*n)++] = (char)cp;
    else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | cp >> 6);
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        if (cp >= 0xd800 && cp <= 0xdfff) return 1;
        out[(*n)++] = (char)(0xe0 | cp >> 12);
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp <= 0x10ffff) {
        out[(*n)++] = (char)(0xf0 | cp >> 18);
        out[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else
        return 1;
    return 0;
}

static int parse_string(Cur *c, Value *v) {
    char q = *c->p++;
    size_t cap = strlen(c->p) + 8, n = 0;
    char *out = malloc(cap);
    if (!out) return fail(c, "out of memory");
    for (;;) {
        unsigned char ch = (unsigned char)*c->p;
        if (!ch || ch == '\n' || ch == '\r') {
            free(out);
            return fail(c, "unterminated string (strings must end on their line)");
        }
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            free(out);
            return fail(c, "control character in a string");
        }
        if (ch == (unsigned char)q) {
            c->p++;
            break;
        }
        if (q == '"' && ch == '\\') {
            char e = c->p[1];
            const char *map = "b\bt\tn\nf\fr\r\"\"\\\\";
            const char *m = e ? strchr(map, e) : NULL;
            if (m && (m - map) % 2 == 0) {
                out[n++] = m[1];
                c->p += 2;
                continue;
            }
            if (e == 'u' || e == 'U') {
                int len = e == 'u' ? 4 : 8;
                unsigned long cp = 0;
                for (int i = 0; i < len; i++) {
                    char h = c->p[2 + i];
                    int d = is_digit(h)              ? h - '0'
                            : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                            : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                                     : -1;
                    if (d < 0) {
                        free(out);
                        return fail(c, "bad \\u escape (expected hex digits)");
                    }
                    cp = cp * 16 + (unsigned long)d;
                }
                if (!cp) { /* would cut the string short where it is used */
                    free(out);
                    return fail(c, "\\u0000 (a NUL character) is not allowed in a string");
                }
                if (put_utf8(out, &n, cp)) {
                    free(out);
                    return fail(c, "\\u escape is not a Unicode scalar value");
                }
                c->p += 2 + len;
                continue;
            }
            free(out);
            return fail(
                c, "unknown escape (TOML has \\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX \\UXXXXXXXX)");
        }
        out[n++] = (char)ch;
        c->p++;
    }
    out[n] = 0;
    v->type = V_STR;
    v->s = out;
    return 0;
}

static int parse_any(Cur *c, Value *v, int depth);

static int parse_array(Cur *c, Value *v, int depth) {
    c->p++; /* [ */
    v->type = V_ARRAY;
    int cap = 0;
    for (;;) {
        skip_ws(c);
        if (*c->p == ']') {
            c->p++;
            return 0;
        }
        if (!*c->p || *c->p == '#')
            return fail(c, "unterminated array (arrays must be on one line)");
        if (v->n == cap) {
            cap = cap ? 2 * cap : 4;
            Value *p = realloc(v->items, (size_t)cap * sizeof *p);
            if (!p) return fail(c, "out of memory");
            v->items = p;
        }
        memset(&v->items[v->n], 0, sizeof *v->items);
        v->n++;
        if (parse_any(c, &v->items[v->n - 1], depth + 1)) return 1;
        skip_ws(c);
        if (*c->p == ',')
            c->p++;
        else if (*c->p != ']')
            return fail(c, "expected ',' or ']' in an array");
    }
}

static int parse_any(Cur *c, Value *v, int depth) {
    if (depth > 8) return fail(c, "arrays nested too deeply");
    char ch = *c->p;
    if (ch == '"' || ch == '\'') {
        if (c->p[1] == ch && c->p[2] == ch) return fail(c, "multi-line strings are not accepted");
        return parse_string(c, v);
    }
    if (ch == '[') return parse_array(c, v, depth);
    if (!strncmp(c->p, "true", 4) || !strncmp(c->p, "false", 5)) {
        v->type = V_BOOL;
        v->b = ch == 't';
        c->p += v->b ? 4 : 5;
        return 0;
    }
    if (ch == '{') return fail(c, "inline tables are not accepted");
    if (is_digit(ch) || ch == '+' || ch == '-' || ch == 'i' || ch == 'n') return parse_number(c, v);
    return fail(c, ch ? "expected a value (a \"string\", number, true/false or [array])"
                      : "missing value");
}

void value_free(Value *v) {
    if (!v) return;
    free(v->s);
    for (int i = 0; i < v->n; i++)
        value_free(&v->items[i]);
    free(v->items);
    memset(v, 0, sizeof *v);
}

int value_parse(const char *text, Value *v, char *err, size_t err_len) {
    Cur c = {text, text, err, err_len};
    memset(v, 0, sizeof *v);
    skip_ws(&c);
    int rc = parse_any(&c, v, 0);
    if (!rc) {
        skip_ws(&c);
        if (*c.p == '#') {
            for (const char *q = c.p; *q; q++)
                if ((unsigned char)*q < 0x20 && *q != '\t' && *q != '\n' && *q != '\r') {
                    c.p = q;
                    rc = fail(&c, "control character in a comment");
                    break;
                }
        } else if (*c.p && *c.p != '\n' && *c.p != '\r') {
            rc = fail(&c, "unexpected text after the value");
        }
    }
    if (rc) value_free(v);
    return rc;
}

const char *value_type_name(const Value *v) {
    switch (v->type) {
    case V_STR:
        return "a string";
    case V_INT:
        return "an integer";
    case V_FLOAT:
        return "a float";
    case V_BOOL:
        return "a boolean";
    case V_ARRAY:
        return "an array";
    }
    return "?";
}

int value_number(const Value *v, double *x) {
    if (v->type == V_INT)
        *x = (double)v->i;
    else if (v->type == V_FLOAT)
        *x = v->f;
    else
        return 1;
    return 0;
}
