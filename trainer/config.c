/* config.c: loading, overriding, validating and writing dapt's config (see
 * config.h; the keys are in config_keys.c, the value grammar in toml.c).
 *
 * libinih splits the file into sections and key lines. Our reader feeds it
 * one line at a time, so the handler knows the line number (Debian's inih
 * is built without INI_HANDLER_LINENO), strips leading whitespace (an
 * indented TOML line is not an INI continuation line) and checks the line's
 * TOML syntax; the handler re-reads the value from the raw line, so quoting
 * and `#` inside strings follow TOML, not INI.
 */
#include "trainer/config.h"

#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/config_keys.h"
#include "trainer/hf.h"
#include "trainer/moe.h"

static void list_free(ConfigList *l) {
    for (int k = 0; k < l->n; k++) free(l->items[k]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void config_free(Config *c) {
    ConfigList *ls[] = {&c->data.domain, &c->data.general, &c->data.val_domain, &c->data.val_general};
    for (int i = 0; i < 4; i++) list_free(ls[i]);
    for (int j = 0; j < c->data.n_sources; j++) {
        list_free(&c->data.sources[j].train);
        list_free(&c->data.sources[j].val);
    }
    list_free(&c->eval.tasks);
    c->data.n_sources = 0;
}

void config_init(Config *c) {
    memset(c, 0, sizeof *c);
    char err[256];
    for (int i = 0; i < config_num_keys; i++) {
        Value v;
        /* the defaults are constants of the table: a failure is a bug that
         * test_config catches (every default is parsed and range-checked) */
        if (value_parse(config_keys[i].def, &v, err, sizeof err) == 0) {
            key_assign(c, &config_keys[i], &v, err, sizeof err);
            value_free(&v);
        }
    }
}

const char *config_key_name(int i) {
    static char buf[64];
    if (i < 0 || i >= config_num_keys) return NULL;
    snprintf(buf, sizeof buf, "%s.%s", config_keys[i].section, config_keys[i].key);
    return buf;
}

const char *config_key_info(int i, const char **type, const char **def, const char **range) {
    static char exp[160];
    if (i < 0 || i >= config_num_keys) return NULL;
    key_expectation(&config_keys[i], exp, sizeof exp);
    *type = config_keys[i].type == K_STR ? "string" : config_keys[i].type == K_BOOL ? "bool"
          : config_keys[i].type == K_FLOAT ? "float" : config_keys[i].type == K_GLOBS ? "array"
          : config_keys[i].type == K_POINTS ? "array" : "integer";
    *def = config_keys[i].def;
    *range = exp;
    return config_keys[i].doc;
}

/* ---------------- suggestions ---------------- */

/* the closest candidate within max(2, len/3) edits, or NULL */
static const char *closest(const char *word, const char *const *cands, int n) {
    const char *best = NULL;
    size_t len = strlen(word), bd = len / 3;
    if (bd < 2) bd = 2;
    bd++;
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(word, len, cands[i]);
        if (d < bd) bd = d, best = cands[i];
    }
    return best;
}

static int find_section(const char *s) {
    for (int i = 0; i < config_num_sections; i++)
        if (!strcmp(config_sections[i], s)) return i;
    return -1;
}

static int find_key(const char *section, const char *key) {
    for (int i = 0; i < config_num_keys; i++)
        if (!strcmp(config_keys[i].section, section) && !strcmp(config_keys[i].key, key)) return i;
    return -1;
}

static void unknown_key(const char *section, const char *key, char *msg, size_t n) {
    const char *cands[64];
    int nc = 0;
    for (int i = 0; i < config_num_keys; i++)
        if (!strcmp(config_keys[i].section, section)) cands[nc++] = config_keys[i].key;
    const char *s = closest(key, cands, nc);
    if (s) {
        snprintf(msg, n, "unknown key '%s' in [%s] (did you mean '%s'?)", key, section, s);
        return;
    }
    /* a key of another section? */
    for (int i = 0; i < config_num_keys; i++)
        if (!strcmp(config_keys[i].key, key)) {
            snprintf(msg, n, "unknown key '%s' in [%s] (did you mean [%s] %s?)", key, section,
                     config_keys[i].section, key);
            return;
        }
    int k = snprintf(msg, n, "unknown key '%s' in [%s] (keys:", key, section);
    for (int i = 0; i < nc && k > 0 && (size_t)k < n; i++)
        k += snprintf(msg + k, n - (size_t)k, " %s", cands[i]);
    if (k > 0 && (size_t)k < n) snprintf(msg + k, n - (size_t)k, ")");
}

static void unknown_section(const char *section, char *msg, size_t n) {
    const char *s = closest(section, config_sections, config_num_sections);
    if (s) {
        snprintf(msg, n, "unknown section [%s] (did you mean [%s]?)", section, s);
        return;
    }
    int k = snprintf(msg, n, "unknown section [%s] (sections:", section);
    for (int i = 0; i < config_num_sections && k > 0 && (size_t)k < n; i++)
        k += snprintf(msg + k, n - (size_t)k, " [%s]", config_sections[i]);
    if (k > 0 && (size_t)k < n) snprintf(msg + k, n - (size_t)k, ")");
}

/* ---------------- file parsing ---------------- */

typedef struct {
    Config *c;
    const char *name; /* file name for messages */
    const char *text, *pos;
    int line;
    char raw[8192];         /* the current line, leading whitespace stripped */
    const char *value;      /* text after '=' in raw, for the handler */
    int section_seen[CONFIG_MAX_SECTIONS];
    int in_source; /* key lines go to c->data.sources[n_sources - 1] */
    char *err;
    size_t err_len;
    int failed;
} Parse;

static int is_bare(const char *s, size_t n) {
    if (!n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", s[i]) || !s[i])
            return 0;
    return 1;
}

static void perr(Parse *p, const char *fmt, const char *a, const char *b) {
    if (p->failed) return;
    p->failed = 1;
    int k = snprintf(p->err, p->err_len, "%s:%d: ", p->name, p->line);
    if (k > 0 && (size_t)k < p->err_len) snprintf(p->err + k, p->err_len - (size_t)k, fmt, a, b);
}

/* "[[data.sources]]": the only array of tables; opens a new source with
 * its defaults (weight 1, no val shards). */
static void source_header(Parse *p, const char *r) {
    const char *s = r + 2;
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strcspn(s, "] \t");
    const char *close = strstr(s, "]]"), *after = close ? close + 2 : "";
    while (*after == ' ' || *after == '\t') after++;
    if (!close || n != 12 || strncmp(s, "data.sources", 12) || (*after && *after != '#')) {
        perr(p, "bad header '%s': the only array of tables is [[data.sources]]%s", r, "");
        return;
    }
    Config *c = p->c;
    if (c->data.n_sources == CONFIG_MAX_SOURCES) {
        char max[16];
        snprintf(max, sizeof max, "%d", CONFIG_MAX_SOURCES);
        perr(p, "more than %s [[data.sources]] tables%s", max, "");
        return;
    }
    ConfigSource *src = &c->data.sources[c->data.n_sources++];
    memset(src, 0, sizeof *src);
    src->weight = 1.0;
    src->line = p->line;
    p->in_source = 1;
}

/* "key = value" inside a [[data.sources]] table. */
static void source_key(Parse *p, const char *r, size_t kn) {
    Config *c = p->c;
    const int j = c->data.n_sources - 1;
    ConfigSource *src = &c->data.sources[j];
    char key[64], msg[700], e[400];
    snprintf(key, sizeof key, "%.*s", (int)kn, r);
    int k = 0;
    while (k < source_num_keys && strcmp(source_keys[k].key, key)) k++;
    if (k == source_num_keys) {
        perr(p, "unknown key '%s' in [[data.sources]] (keys: name role train val weight)%s", key, "");
        return;
    }
    if (src->key_line[k]) {
        snprintf(msg, sizeof msg, "data.sources[%d].%s is set twice (first on line %d)", j, key,
                 src->key_line[k]);
        perr(p, "%s%s", msg, "");
        return;
    }
    Value v;
    int rc = value_parse(p->value, &v, e, sizeof e);
    if (!rc) {
        rc = key_assign(src, &source_keys[k], &v, e, sizeof e);
        value_free(&v);
    }
    if (rc) {
        snprintf(msg, sizeof msg, "data.sources[%d].%s: %s", j, key, e);
        perr(p, "%s%s", msg, "");
        return;
    }
    src->key_line[k] = p->line;
}

/* fgets-style reader for inih: hands over a normalised copy of each line
 * ("[section]" or "key = v"), after checking its TOML syntax. */
static char *reader(char *str, int num, void *stream) {
    Parse *p = stream;
    if (!*p->pos) return NULL;
    const char *end = strchr(p->pos, '\n');
    size_t len = end ? (size_t)(end - p->pos) : strlen(p->pos);
    p->line++;
    const char *line = p->pos;
    p->pos += len + (end != NULL);
    str[0] = 0;
    if (p->failed) return str;
    if (len >= sizeof p->raw) {
        perr(p, "line longer than %s bytes%s", "8191", "");
        return str;
    }
    while (len && (*line == ' ' || *line == '\t')) line++, len--;
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
    memcpy(p->raw, line, len);
    p->raw[len] = 0;
    char *r = p->raw;
    if (!len || r[0] == '#') return str; /* blank or comment: nothing for inih */
    if (r[0] == '[') {
        p->in_source = 0;
        if (r[1] == '[') {
            source_header(p, r);
            return str;
        }
        char *close = strchr(r, ']');
        size_t n = close ? (size_t)(close - r - 1) : 0;
        const char *s = r + 1;
        while (n && (*s == ' ' || *s == '\t')) s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
        const char *after = close ? close + 1 : "";
        while (*after == ' ' || *after == '\t') after++;
        if (!close || !is_bare(s, n) || (*after && *after != '#')) {
            perr(p, "bad section header '%s' (expected [name])%s", r, "");
            return str;
        }
        snprintf(str, (size_t)num, "[%.*s]\n", (int)n, s);
        char sec[64], msg[300];
        snprintf(sec, sizeof sec, "%.*s", (int)(n < 63 ? n : 63), s);
        if (find_section(sec) < 0) {
            unknown_section(sec, msg, sizeof msg);
            perr(p, "%s%s", msg, "");
            str[0] = 0;
        }
        return str;
    }
    char *eq = strchr(r, '=');
    size_t kn = eq ? (size_t)(eq - r) : 0;
    while (kn && (r[kn - 1] == ' ' || r[kn - 1] == '\t')) kn--;
    if (!eq) {
        perr(p, "expected 'key = value', a [section] or a # comment, got '%.60s'%s", r, "");
        return str;
    }
    if (!is_bare(r, kn) || kn > 60) {
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(kn > 100 ? 100 : kn), r);
        perr(p, "bad key '%s' (keys are bare words like lr or micro_batch)%s", key, "");
        return str;
    }
    p->value = eq + 1;
    if (p->in_source) {
        source_key(p, r, kn);
        return str;
    }
    snprintf(str, (size_t)num, "%.*s = v\n", (int)kn, r);
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    Parse *p = user;
    (void)value;
    if (p->failed) return 1;
    char msg[600];
    if (!section[0]) {
        perr(p, "key '%s' before any [section]%s", name, "");
        return 0;
    }
    int s = find_section(section);
    if (s < 0) {
        unknown_section(section, msg, sizeof msg);
        perr(p, "%s%s", msg, "");
        return 0;
    }
    int k = find_key(section, name);
    if (k < 0) {
        unknown_key(section, name, msg, sizeof msg);
        perr(p, "%s%s", msg, "");
        return 0;
    }
    if (p->c->origin[k] > 0) {
        snprintf(msg, sizeof msg, "%s.%s is set twice (first on line %d)", section, name, p->c->origin[k]);
        perr(p, "%s%s", msg, "");
        return 0;
    }
    Value v;
    char e[400];
    if (value_parse(p->value, &v, e, sizeof e)) {
        snprintf(msg, sizeof msg, "%s.%s: %s", section, name, e);
        perr(p, "%s%s", msg, "");
        return 0;
    }
    int rc = key_assign(p->c, &config_keys[k], &v, e, sizeof e);
    value_free(&v);
    if (rc) {
        snprintf(msg, sizeof msg, "%s.%s: %s", section, name, e);
        perr(p, "%s%s", msg, "");
        return 0;
    }
    p->c->origin[k] = p->line;
    return 1;
}

/* TOML forbids reopening a table: track [section] lines ourselves */
static int check_sections(Parse *p) {
    int line = 0, seen[CONFIG_MAX_SECTIONS] = {0};
    for (const char *q = p->text; *q;) {
        const char *end = strchr(q, '\n');
        size_t len = end ? (size_t)(end - q) : strlen(q);
        line++;
        const char *s = q;
        while (*s == ' ' || *s == '\t') s++;
        if (*s == '[' && s[1] != '[') {
            char name[64];
            size_t n = strcspn(s + 1, "]");
            if (n < sizeof name) {
                snprintf(name, sizeof name, "%.*s", (int)n, s + 1);
                char *t = name + strspn(name, " \t");
                t[strcspn(t, " \t")] = 0;
                int k = find_section(t);
                if (k >= 0 && seen[k]) {
                    char first[16];
                    snprintf(first, sizeof first, "%d", seen[k]);
                    p->line = line;
                    perr(p, "section [%s] appears twice (first on line %s)", t, first);
                    return 1;
                }
                if (k >= 0) seen[k] = line;
            }
        }
        q += len + (end != NULL);
    }
    return 0;
}

int config_load_string(Config *c, const char *text, const char *name, char *err, size_t err_len) {
    Parse p = {.c = c, .name = name, .text = text, .pos = text, .err = err, .err_len = err_len};
    if (check_sections(&p)) return 1;
    snprintf(c->source, sizeof c->source, "%s", name);
    int rc = ini_parse_stream(reader, &p, handler, &p);
    if (p.failed) return 1;
    if (rc) {
        err_set(err, err_len, "%s:%d: syntax error", name, rc);
        return 1;
    }
    return 0;
}

int config_load(Config *c, const char *path, char *err, size_t err_len) {
    char *text = st_read_text(path, 1u << 20, err, err_len);
    if (!text) return 1;
    int rc = config_load_string(c, text, path, err, err_len);
    free(text);
    return rc;
}

int config_override(Config *c, const char *arg, char *err, size_t err_len) {
    const char *a = strncmp(arg, "--", 2) ? arg : arg + 2;
    const char *dot = strchr(a, '.'), *eq = strchr(a, '=');
    if (!dot || !eq || dot > eq)
        return err_set(err, err_len, "override '%s': expected --section.key=value", arg);
    char section[64], key[64], msg[600];
    snprintf(section, sizeof section, "%.*s", (int)(dot - a), a);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    if (find_section(section) < 0) {
        unknown_section(section, msg, sizeof msg);
        return err_set(err, err_len, "override '%s': %s", arg, msg);
    }
    int k = find_key(section, key);
    if (k < 0) {
        unknown_key(section, key, msg, sizeof msg);
        return err_set(err, err_len, "override '%s': %s", arg, msg);
    }
    const char *val = eq + 1;
    Value v = {0};
    int rc;
    if (config_keys[k].type == K_STR && *val != '"' && *val != '\'') {
        v.type = V_STR;
        v.s = strdup(val); /* unquoted string: verbatim */
        rc = v.s ? 0 : (snprintf(msg, sizeof msg, "out of memory"), 1);
    } else {
        rc = value_parse(val, &v, msg, sizeof msg);
    }
    if (!rc) rc = key_assign(c, &config_keys[k], &v, msg, sizeof msg);
    value_free(&v);
    if (rc) return err_set(err, err_len, "override --%s.%s: %s", section, key, msg);
    c->origin[k] = -1;
    return 0;
}

/* ---------------- cross-key rules ---------------- */

/* "train.lr (line 12)" / "(default)" / "(--override)" */
static const char *where(const Config *c, const char *section, const char *key, char *buf, size_t n) {
    int k = find_key(section, key), o = k >= 0 ? c->origin[k] : 0;
    if (o > 0) snprintf(buf, n, "%s.%s (%s:%d)", section, key, c->source, o);
    else snprintf(buf, n, "%s.%s (%s)", section, key, o < 0 ? "command line" : "default");
    return buf;
}

static int is_set(const Config *c, const char *section, const char *key) {
    int k = find_key(section, key);
    return k >= 0 && c->origin[k] != 0;
}

static const char *const shape_keys[] = {
    "arch", "n_layer", "n_head", "n_kv_head", "d_model", "d_ff", "vocab_size", "max_seq_len",
    "rope_theta", "norm_eps", "tie_embeddings", "qkv_bias", "head_dim", "qk_norm",
    "rope_scaling", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor",
    "rope_original_max_seq_len"};
#define N_SHAPE_KEYS ((int)(sizeof shape_keys / sizeof *shape_keys))

/* "data.sources[1].weight (cfg.toml:14)", or the table's header line for a
 * key not set */
static const char *src_where(const Config *c, int j, int k, char *buf, size_t n) {
    const ConfigSource *s = &c->data.sources[j];
    int line = k >= 0 && s->key_line[k] ? s->key_line[k] : s->line;
    snprintf(buf, n, "data.sources[%d]%s%s (%s:%d)", j, k >= 0 ? "." : "",
             k >= 0 ? source_keys[k].key : "", c->source, line);
    return buf;
}

/* [[data.sources]]: complete tables, distinct names, not together with the
 * shorthand keys, a source for every role the mixture schedule asks for. */
static int validate_sources(const Config *c, char *err, size_t err_len) {
    char a[CONFIG_PATH_LEN + 64], b[CONFIG_PATH_LEN + 64];
    static const char *const shorthand[] = {"domain", "general", "val_domain", "val_general"};
    if (!c->data.n_sources) return 0;
    const ConfigList *lists[] = {&c->data.domain, &c->data.general, &c->data.val_domain,
                                 &c->data.val_general};
    for (int i = 0; i < 4; i++)
        if (lists[i]->n)
            return err_set(err, err_len,
                           "%s and [[data.sources]] (%s:%d) are both given: use one (data.%s is "
                           "shorthand for one source)",
                           where(c, "data", shorthand[i], a, sizeof a), c->source,
                           c->data.sources[0].line, shorthand[i]);
    int has_role[2] = {0, 0};
    for (int j = 0; j < c->data.n_sources; j++) {
        const ConfigSource *s = &c->data.sources[j];
        for (int k = 0; k < 3; k++) /* name, role, train: required */
            if (!s->key_line[k])
                return err_set(err, err_len, "%s has no %s (a source needs name, role and train)",
                               src_where(c, j, -1, a, sizeof a), source_keys[k].key);
        if (!strcmp(s->name, "domain") || !strcmp(s->name, "general"))
            return err_set(err, err_len,
                           "%s = \"%s\": the name is taken by the role aggregate val/%s; "
                           "name the source after its corpus",
                           src_where(c, j, 0, a, sizeof a), s->name, s->name);
        for (int i = 0; i < j; i++)
            if (!strcmp(c->data.sources[i].name, s->name))
                return err_set(err, err_len, "%s = \"%s\" is also %s: names must differ",
                               src_where(c, j, 0, a, sizeof a), s->name,
                               src_where(c, i, 0, b, sizeof b));
        if (s->train.n == 0)
            return err_set(err, err_len, "%s is empty: a source needs train shards",
                           src_where(c, j, 2, a, sizeof a));
        has_role[strcmp(s->role, "domain") ? 1 : 0] = 1;
    }
    MixPoint pts[CONFIG_MAX_MIX_POINTS];
    int n = config_mix_points(c, pts, CONFIG_MAX_MIX_POINTS);
    double lo = 1, hi = 0;
    for (int i = 0; i < n; i++) {
        if (pts[i].fraction < lo) lo = pts[i].fraction;
        if (pts[i].fraction > hi) hi = pts[i].fraction;
    }
    const char *mk = is_set(c, "mix", "schedule") ? "schedule" : "domain_frac";
    if (hi > 0 && !has_role[0])
        return err_set(err, err_len,
                       "[[data.sources]]: no source has role \"domain\", but %s asks for domain "
                       "samples (a domain fraction up to %g)",
                       where(c, "mix", mk, a, sizeof a), hi);
    if (lo < 1 && !has_role[1])
        return err_set(err, err_len,
                       "[[data.sources]]: no source has role \"general\", but %s asks for general "
                       "samples (a domain fraction down to %g)",
                       where(c, "mix", mk, a, sizeof a), lo);
    return 0;
}

int config_validate(const Config *c, char *err, size_t err_len) {
    char a[CONFIG_PATH_LEN + 64], b[CONFIG_PATH_LEN + 64], e[400];
    if (validate_sources(c, err, err_len)) return 1;
    if (c->train.global_batch % c->train.micro_batch)
        return err_set(err, err_len, "%s = %d must be a multiple of %s = %d",
                       where(c, "train", "global_batch", a, sizeof a), c->train.global_batch,
                       where(c, "train", "micro_batch", b, sizeof b), c->train.micro_batch);
    if (c->data.reset_positions && !c->data.doc_mask)
        return err_set(err, err_len, "%s = true needs %s = true (positions restart per document)",
                       where(c, "data", "reset_positions", a, sizeof a),
                       where(c, "data", "doc_mask", b, sizeof b));
    if (is_set(c, "mix", "schedule") && is_set(c, "mix", "domain_frac"))
        return err_set(err, err_len, "%s and %s are both given: use one (a constant or a schedule)",
                       where(c, "mix", "domain_frac", a, sizeof a),
                       where(c, "mix", "schedule", b, sizeof b));
    if (is_set(c, "mix", "schedule") && c->mix.n_schedule == 0)
        return err_set(err, err_len, "%s is empty: give at least one [progress, fraction] point",
                       where(c, "mix", "schedule", a, sizeof a));
    int ups = is_set(c, "mix", "upsample_start"), upf = is_set(c, "mix", "upsample_domain_frac");
    if (ups != upf)
        return err_set(
            err, err_len, "%s needs %s too",
            where(c, "mix", ups ? "upsample_start" : "upsample_domain_frac", a, sizeof a),
            ups ? "mix.upsample_domain_frac" : "mix.upsample_start");
    if (ups && is_set(c, "mix", "schedule"))
        return err_set(err, err_len,
                       "%s goes with mix.domain_frac, not with %s (put the step into the schedule)",
                       where(c, "mix", "upsample_start", a, sizeof a),
                       where(c, "mix", "schedule", b, sizeof b));
    LrSchedule s;
    if (config_to_schedule(c, &s, e, sizeof e)) return err_set(err, err_len, "%s", e);
    if (c->model.init_optimizer && !c->model.init_from[0])
        return err_set(err, err_len, "%s = true needs model.init_from (the dapt checkpoint whose "
                       "run to continue)", where(c, "model", "init_optimizer", a, sizeof a));
    if (c->model.init_from[0] && c->moe.upcycle_from[0])
        return err_set(err, err_len, "%s and %s are both given: a run starts from one model",
                       where(c, "model", "init_from", a, sizeof a),
                       where(c, "model", "upcycle_from", b, sizeof b));
    if (c->moe.upcycle_from[0] && c->moe.n_experts < 2)
        return err_set(err, err_len, "%s needs [moe] n_experts >= 2 (the experts to build)",
                       where(c, "model", "upcycle_from", a, sizeof a));
    if (c->model.init_from[0]) {
        static const char *const moe_shape[] = {"n_experts", "top_k", "layer_start", "layer_step",
                                                "norm_topk_prob"};
        for (int i = 0; i < 5; i++)
            if (is_set(c, "moe", moe_shape[i]))
                return err_set(err, err_len,
                               "%s is set, but model.init_from = \"%s\" takes the "
                               "experts and routing from its config.json: remove it",
                               where(c, "moe", moe_shape[i], a, sizeof a), c->model.init_from);
    }
    if (c->model.init_from[0] || c->moe.upcycle_from[0]) {
        for (int i = 0; i < N_SHAPE_KEYS; i++)
            if (is_set(c, "model", shape_keys[i]))
                return err_set(err, err_len,
                               "%s is set, but model.%s = \"%s\" takes the model's "
                               "shape from its config.json: remove it",
                               where(c, "model", shape_keys[i], a, sizeof a),
                               c->model.init_from[0] ? "init_from" : "upcycle_from",
                               c->model.init_from[0] ? c->model.init_from : c->moe.upcycle_from);
    } else {
        ModelConfig m;
        if (config_to_model_config(c, &m, e, sizeof e)) return err_set(err, err_len, "%s", e);
        if (config_check_model(c, &m, e, sizeof e)) return err_set(err, err_len, "%s", e);
    }
    return 0;
}

int config_check_model(const Config *c, const ModelConfig *m, char *err, size_t err_len) {
    char a[CONFIG_PATH_LEN + 64];
    if (c->data.seq_len > m->max_seq_len)
        return err_set(err, err_len, "%s = %d is longer than the model's max_seq_len (%d%s)",
                       where(c, "data", "seq_len", a, sizeof a), c->data.seq_len, m->max_seq_len,
                       c->model.init_from[0] ? ", from init_from's config.json"
                                             : ", model.max_seq_len");
    const int hpb = c->cuda.flash_heads_per_block, kv = m->n_kv_head ? m->n_kv_head : m->n_head;
    const int group = m->n_head / kv;
    if (strcmp(c->run.device, "cpu") && hpb && (hpb > group || group % hpb))
        return err_set(err, err_len,
                       "%s = %d must divide the model's %d query heads per kv head (n_head %d / "
                       "n_kv_head %d)",
                       where(c, "cuda", "flash_heads_per_block", a, sizeof a), hpb, group,
                       m->n_head, kv);
    return 0;
}

int config_from_args(Config *c, const char *path, int n_overrides, char *const *overrides,
                     char *err, size_t err_len) {
    config_init(c);
    if (path && config_load(c, path, err, err_len)) return 1;
    for (int i = 0; i < n_overrides; i++)
        if (config_override(c, overrides[i], err, err_len)) return 1;
    return config_validate(c, err, err_len);
}

/* ---------------- conversions ---------------- */

int config_mix_points(const Config *c, MixPoint *pts, int max_pts) {
    MixPoint tmp[CONFIG_MAX_MIX_POINTS];
    int n = 0;
    if (c->mix.n_schedule) {
        n = c->mix.n_schedule;
        memcpy(tmp, c->mix.schedule, (size_t)n * sizeof *tmp);
    } else if (is_set(c, "mix", "upsample_start")) {
        double f = c->mix.domain_frac, u = c->mix.upsample_start, g = c->mix.upsample_domain_frac;
        tmp[n++] = (MixPoint){0.0, f};
        tmp[n++] = (MixPoint){u, f};
        tmp[n++] = (MixPoint){u, g};
        tmp[n++] = (MixPoint){1.0, g};
    } else {
        tmp[n++] = (MixPoint){0.0, c->mix.domain_frac};
        tmp[n++] = (MixPoint){1.0, c->mix.domain_frac};
    }
    if (n > max_pts) n = max_pts;
    memcpy(pts, tmp, (size_t)n * sizeof *pts);
    return n;
}

int config_to_model_config(const Config *c, ModelConfig *m, char *err, size_t err_len) {
    Arch arch;
    char e[300];
    if (model_arch_parse(c->model.arch, &arch, e, sizeof e))
        return err_set(err, err_len, "model.arch: %s", e);
    *m = model_config_default(arch);
    m->n_layer = c->model.n_layer;
    m->n_head = c->model.n_head;
    m->n_kv_head = c->model.n_kv_head ? c->model.n_kv_head : c->model.n_head;
    m->d_model = c->model.d_model;
    m->d_ff = c->model.d_ff;
    m->vocab_size = c->model.vocab_size;
    m->max_seq_len = c->model.max_seq_len;
    m->rope_theta = (float)c->model.rope_theta;
    m->norm_eps = (float)c->model.norm_eps;
    m->tie_embeddings = c->model.tie_embeddings;
    m->qkv_bias = c->model.qkv_bias;
    m->head_dim = c->model.head_dim;
    m->qk_norm = c->model.qk_norm;
    m->rope_scaling = !strcmp(c->model.rope_scaling, "linear")   ? ROPE_SCALING_LINEAR
                      : !strcmp(c->model.rope_scaling, "llama3") ? ROPE_SCALING_LLAMA3
                                                                 : ROPE_SCALING_NONE;
    m->rope_factor = (float)c->model.rope_factor;
    m->rope_low_freq_factor = (float)c->model.rope_low_freq_factor;
    m->rope_high_freq_factor = (float)c->model.rope_high_freq_factor;
    m->rope_original_max_pos = c->model.rope_original_max_seq_len;
    if (config_apply_moe(c, m, 0, e, sizeof e)) return err_set(err, err_len, "%s", e);
    if (model_config_check(m, e, sizeof e)) return err_set(err, err_len, "[model]: %s", e);
    return 0;
}

int config_apply_moe(const Config *c, ModelConfig *m, int training_only, char *err,
                     size_t err_len) {
    char e[300];
    if (moe_lbl_mode_parse(c->moe.lbl, &m->lbl_mode, e, sizeof e) ||
        moe_lbl_norm_parse(c->moe.lbl_norm, &m->lbl_norm, e, sizeof e))
        return err_set(err, err_len, "%s", e);
    m->lbl_coef = (float)c->moe.lbl_coef;
    m->z_loss_coef = (float)c->moe.z_loss_coef;
    if (!training_only) {
        m->n_experts = c->moe.n_experts;
        m->top_k = c->moe.top_k;
        m->moe_layer_start = c->moe.layer_start;
        m->moe_layer_step = c->moe.layer_step;
        m->norm_topk_prob = c->moe.norm_topk_prob;
    }
    if (moe_config_check(m, e, sizeof e)) return err_set(err, err_len, "[moe]: %s", e);
    return 0;
}

int config_to_schedule(const Config *c, LrSchedule *s, char *err, size_t err_len) {
    char e[300];
    if (sched_kind_parse(c->train.lr_schedule, &s->kind, e, sizeof e))
        return err_set(err, err_len, "train.lr_schedule: %s", e);
    s->lr = (float)c->train.lr;
    s->min_lr = (float)c->train.min_lr;
    s->warmup_steps = c->train.warmup_steps;
    s->total_steps = c->train.steps;
    s->decay_frac = (float)c->train.decay_frac;
    if (sched_check(s, e, sizeof e)) return err_set(err, err_len, "[train]: %s", e);
    return 0;
}

AdamWConfig config_to_adamw(const Config *c) {
    AdamWConfig a = {(float)c->train.beta1, (float)c->train.beta2, (float)c->train.eps,
                     (float)c->train.weight_decay, (float)c->train.grad_clip};
    return a;
}

OpsOptions config_to_ops_options(const Config *c) {
    OpsOptions o = {.cuda = {.flash_attention = c->cuda.flash_attention,
                             .flash_heads_per_block = c->cuda.flash_heads_per_block,
                             .fused_norm = c->cuda.fused_norm,
                             .moe_grouped_gemm = c->cuda.moe_grouped_gemm,
                             .lmhead_chunk_rows = c->cuda.lmhead_chunk_rows,
                             .sync_debug = c->cuda.sync_debug}};
    return o;
}

/* ---------------- writing ---------------- */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(Buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
}

/* shortest decimal that reads back as the same double, always a TOML float */
static void put_float(Buf *b, double x) {
    char t[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, x);
        if (strtod(t, NULL) == x) break;
    }
    if (!strpbrk(t, ".e")) strcat(t, ".0");
    put(b, "%s", t);
}

static void put_string(Buf *b, const char *s) {
    put(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') put(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) put(b, "\\u%04x", *p);
        else put(b, "%c", *p);
    }
    put(b, "\"");
}

static int is_moe_training_key(const char *key) {
    return !strcmp(key, "lbl") || !strcmp(key, "lbl_norm") || !strcmp(key, "lbl_coef") ||
           !strcmp(key, "z_loss_coef");
}

char *config_to_toml(const Config *c) {
    Buf b = {malloc(4096), 0, 4096, 0};
    if (!b.s) return NULL;
    b.s[0] = 0;
    put(&b, "# dapt resolved config: every key with the value the run used\n");
    for (int s = 0; s < config_num_sections; s++) {
        const char *sec = config_sections[s];
        put(&b, "\n[%s]\n", sec);
        if (!strcmp(sec, "mix")) { /* the mixture as its explicit schedule */
            MixPoint pts[CONFIG_MAX_MIX_POINTS];
            int n = config_mix_points(c, pts, CONFIG_MAX_MIX_POINTS);
            put(&b, "schedule = [");
            for (int i = 0; i < n; i++) {
                put(&b, "%s[", i ? ", " : "");
                put_float(&b, pts[i].progress);
                put(&b, ", ");
                put_float(&b, pts[i].fraction);
                put(&b, "]");
            }
            put(&b, "]\n");
            continue;
        }
        for (int i = 0; i < config_num_keys; i++) {
            const KeyDef *k = &config_keys[i];
            if (strcmp(k->section, sec)) continue;
            if (!strcmp(sec, "model") && c->model.init_from[0] && strncmp(k->key, "init_", 5))
                continue; /* init_from's config.json has the shape */
            if (!strcmp(sec, "model") && c->moe.upcycle_from[0] && strncmp(k->key, "upcycle_", 8))
                continue; /* upcycling takes the shape from the dense model */
            if (!strcmp(sec, "moe") && c->model.init_from[0] && !is_moe_training_key(k->key))
                continue; /* init_from's config.json has the experts */
            const void *v = (const char *)c + k->off;
            put(&b, "%s = ", k->key);
            switch (k->type) {
            case K_STR: put_string(&b, v); break;
            case K_INT: put(&b, "%d", *(const int *)v); break;
            case K_INT64: put(&b, "%lld", (long long)*(const int64_t *)v); break;
            case K_FLOAT: put_float(&b, *(const double *)v); break;
            case K_BOOL: put(&b, "%s", *(const int *)v ? "true" : "false"); break;
            case K_GLOBS: {
                const ConfigList *l = v;
                put(&b, "[");
                for (int j = 0; j < l->n; j++) {
                    if (j) put(&b, ", ");
                    put_string(&b, l->items[j]);
                }
                put(&b, "]");
                break;
            }
            case K_POINTS: break; /* only in [mix], written above */
            }
            put(&b, "\n");
        }
    }
    for (int j = 0; j < c->data.n_sources; j++) {
        const ConfigSource *src = &c->data.sources[j];
        const ConfigList *ls[2] = {&src->train, &src->val};
        put(&b, "\n[[data.sources]]\nname = ");
        put_string(&b, src->name);
        put(&b, "\nrole = ");
        put_string(&b, src->role);
        for (int i = 0; i < 2; i++) {
            put(&b, "\n%s = [", i ? "val" : "train");
            for (int g = 0; g < ls[i]->n; g++) {
                if (g) put(&b, ", ");
                put_string(&b, ls[i]->items[g]);
            }
            put(&b, "]");
        }
        put(&b, "\nweight = ");
        put_float(&b, src->weight);
        put(&b, "\n");
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

int config_write(const Config *c, const char *path, char *err, size_t err_len) {
    char *t = config_to_toml(c);
    if (!t) return err_set(err, err_len, "out of memory");
    int rc = hf_write_file_atomic(path, t, err, err_len);
    free(t);
    return rc;
}
