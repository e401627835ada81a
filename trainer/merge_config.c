/* merge_config.c: MERGE.toml for `dapt merge CONFIG.toml` (docs/merge.md):
 * a [merge] table (method, base, out, lambda, seed, combine, epsilon, and a
 * density default) and one [[model]] table per input (path, weight,
 * density). Values by the config's value parser (toml.h); every message
 * names the file, the line and the key. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/merge.h"
#include "trainer/safetensors.h"
#include "trainer/toml.h"

typedef struct {
    const char *path;
    int line;
    char *err;
    size_t err_len;
} Src;

__attribute__((format(printf, 3, 4))) static int src_err(const Src *s, const char *key,
                                                         const char *fmt, ...) {
    int n = snprintf(s->err, s->err_len, "%s:%d: %s: ", s->path, s->line, key);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < s->err_len) vsnprintf(s->err + n, s->err_len - (size_t)n, fmt, ap);
    va_end(ap);
    return 1;
}

static int rest_blank(const char *p) {
    p += strspn(p, " \t");
    return !*p || *p == '#' || *p == '\r';
}

static int get_string(const Src *s, const char *key, const Value *v, char *dst, size_t n) {
    if (v->type != V_STR) return src_err(s, key, "expected a string, got %s", value_type_name(v));
    if (strlen(v->s) >= n) return src_err(s, key, "longer than %zu bytes", n - 1);
    snprintf(dst, n, "%s", v->s);
    return 0;
}

static int get_number(const Src *s, const char *key, const Value *v, double *x) {
    if (value_number(v, x)) return src_err(s, key, "expected a number, got %s", value_type_name(v));
    return 0;
}

enum { T_NONE, T_MERGE, T_MODEL };

static int assign(const Src *s, MergeConfig *c, int table, const char *key, const Value *v,
                  int *density_set) {
    MergeOptions *o = &c->o;
    if (table == T_MODEL) {
        int k = o->n_models - 1;
        if (!strcmp(key, "path")) return get_string(s, key, v, c->models[k], sizeof c->models[k]);
        if (!strcmp(key, "weight")) return get_number(s, key, v, &o->weights[k]);
        if (!strcmp(key, "density")) {
            density_set[k] = 1;
            return get_number(s, key, v, &o->density[k]);
        }
        if (!strcmp(key, "layer_weights") || !strcmp(key, "layer_densities")) {
            int dens = !strcmp(key, "layer_densities");
            if (v->type != V_ARRAY || v->n < 1 || v->n > MERGE_MAX_LAYERS)
                return src_err(s, key, "expected a list of 1 to %d numbers (one per layer)",
                               MERGE_MAX_LAYERS);
            double *dst = dens ? c->layer_density[k] : c->layer_weights[k];
            for (int i = 0; i < v->n; i++)
                if (value_number(&v->items[i], &dst[i]))
                    return src_err(s, key, "item %d is %s, not a number", i + 1,
                                   value_type_name(&v->items[i]));
            if (dens) {
                o->layer_density[k] = dst;
                o->n_layer_density[k] = v->n;
            } else {
                o->layer_weights[k] = dst;
                o->n_layer_weights[k] = v->n;
            }
            return 0;
        }
        return src_err(s, key,
                       "unknown key in [[model]] (expected path, weight, density, layer_weights "
                       "or layer_densities)");
    }
    if (!strcmp(key, "method")) {
        char m[32];
        if (get_string(s, key, v, m, sizeof m)) return 1;
        int method = merge_method_parse(m);
        if (method < 0)
            return src_err(s, key, "'%s' is not one of linear, task_arithmetic, ties, dare, della",
                           m);
        o->method = (MergeMethod)method;
        return 0;
    }
    if (!strcmp(key, "combine")) {
        char m[32];
        if (get_string(s, key, v, m, sizeof m)) return 1;
        if (strcmp(m, "linear") && strcmp(m, "ties"))
            return src_err(s, key, "'%s' is not one of linear, ties", m);
        c->combine_set = 1;
        o->combine = strcmp(m, "ties") ? MERGE_COMBINE_LINEAR : MERGE_COMBINE_TIES;
        return 0;
    }
    if (!strcmp(key, "base")) {
        if (get_string(s, key, v, c->base, sizeof c->base)) return 1;
        o->base = c->base;
        return 0;
    }
    if (!strcmp(key, "out")) return get_string(s, key, v, c->out, sizeof c->out);
    if (!strcmp(key, "lambda")) return get_number(s, key, v, &o->lambda);
    if (!strcmp(key, "epsilon")) return get_number(s, key, v, &o->epsilon);
    if (!strcmp(key, "density")) return get_number(s, key, v, &c->density);
    if (!strcmp(key, "seed")) {
        if (v->type != V_INT || v->i < 0)
            return src_err(s, key, "expected a non-negative integer, got %s", value_type_name(v));
        o->seed = (uint64_t)v->i;
        return 0;
    }
    if (!strcmp(key, "top_k")) {
        if (v->type != V_INT || v->i < 1 || v->i > MERGE_MAX_MODELS)
            return src_err(s, key, "expected an integer in [1, %d]", MERGE_MAX_MODELS);
        o->top_k = (int)v->i;
        return 0;
    }
    if (!strcmp(key, "shared")) {
        char m[32];
        if (get_string(s, key, v, m, sizeof m)) return 1;
        if (strcmp(m, "average") && strcmp(m, "base"))
            return src_err(s, key, "'%s' is not one of average, base", m);
        o->shared = strcmp(m, "base") ? MERGE_SHARED_AVERAGE : MERGE_SHARED_BASE;
        return 0;
    }
    return src_err(s, key,
                   "unknown key in [merge] (expected method, base, out, lambda, seed, combine, "
                   "epsilon, density, top_k or shared)");
}

int merge_config_parse(const char *path, const char *text, MergeConfig *c, char *err,
                       size_t err_len) {
    memset(c, 0, sizeof *c);
    MergeOptions *o = &c->o;
    o->lambda = 1.0;
    o->epsilon = 0.1;
    o->top_k = 2;
    c->density = 1.0;
    int density_set[MERGE_MAX_MODELS] = {0};
    Src s = {path, 0, err, err_len};
    int table = T_NONE, seen_merge = 0, seen_method = 0;
    char line[8192];
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        s.line++;
        if (len >= sizeof line)
            return src_err(&s, "line", "longer than %zu bytes", sizeof line - 1);
        memcpy(line, p, len);
        line[len] = 0;
        p += len + (e != NULL);
        const char *q = line + strspn(line, " \t");
        if (rest_blank(q)) continue;
        if (!strncmp(q, "[[model]]", 9) && rest_blank(q + 9)) {
            if (o->n_models == MERGE_MAX_MODELS)
                return src_err(&s, "[[model]]", "more than %d models", MERGE_MAX_MODELS);
            o->weights[o->n_models++] = 1.0;
            table = T_MODEL;
            continue;
        }
        if (!strncmp(q, "[merge]", 7) && rest_blank(q + 7)) {
            if (seen_merge) return src_err(&s, "[merge]", "the table appears twice");
            seen_merge = 1;
            table = T_MERGE;
            continue;
        }
        if (*q == '[') return src_err(&s, "table", "unknown table '%s' ([merge], [[model]])", q);
        char key[64];
        size_t kn = strcspn(q, " \t=");
        if (!kn || kn >= sizeof key) return src_err(&s, "line", "expected key = value");
        memcpy(key, q, kn);
        key[kn] = 0;
        const char *v = q + kn + strspn(q + kn, " \t");
        if (*v != '=') return src_err(&s, key, "expected '=' after the key");
        if (table == T_NONE) return src_err(&s, key, "keys belong in [merge] or [[model]]");
        Value val;
        char why[512];
        if (value_parse(v + 1, &val, why, sizeof why)) return src_err(&s, key, "%s", why);
        if (table == T_MERGE && !strcmp(key, "method")) seen_method = 1;
        int rc = assign(&s, c, table, key, &val, density_set);
        value_free(&val);
        if (rc) return 1;
    }
    s.line = 0;
    if (!seen_method) return src_err(&s, "[merge]", "method is required");
    if (!c->out[0]) return src_err(&s, "[merge]", "out (the output directory) is required");
    for (int k = 0; k < o->n_models; k++) {
        if (!c->models[k][0]) return src_err(&s, "[[model]]", "model %d has no path", k + 1);
        o->models[k] = c->models[k];
        if (!density_set[k]) o->density[k] = c->density;
    }
    if (!c->combine_set)
        o->combine = o->method == MERGE_DELLA ? MERGE_COMBINE_TIES : MERGE_COMBINE_LINEAR;
    return 0;
}

int merge_config_load(const char *path, MergeConfig *c, char *err, size_t err_len) {
    char *text = st_read_text(path, 1u << 20, err, err_len);
    if (!text) return 1;
    int rc = merge_config_parse(path, text, c, err, err_len);
    free(text);
    return rc;
}
