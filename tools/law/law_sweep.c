/* law_sweep.c: `dapt law sweep` as a library (law_sweep.h): the SWEEP.toml
 * parser, the expansion into validated run configs, the completeness check
 * of a run directory, the child `dapt train` process, and the collection of
 * every eval into a results file for `dapt law fit`.
 *
 * SWEEP.toml is a TOML subset read line by line: comments, one [sweep]
 * table and `key = value` lines. The values are parsed by the config's TOML
 * value parser (trainer/toml.h: strings, numbers, single-line arrays), so
 * Python's tomllib reads the same file with the same meaning. */
#include "tools/law/law_sweep.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kernels/util.h"
#include "tools/law/law.h"
#include "trainer/config.h"
#include "trainer/hf.h"
#include "trainer/toml.h"

/* ---------------- SWEEP.toml ---------------- */

typedef struct {
    const char *name;
    int line;
    char *err;
    size_t err_len;
} Src;

/* "<file>:<line>: <key>: <message>" into src's buffer; -1 */
__attribute__((format(printf, 3, 4))) static int src_err(const Src *src, const char *key,
                                                         const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(src->err, src->err_len, "%s:%d: %s: %s", src->name, src->line, key, msg);
}

/* Whether only spaces, a comment or nothing is left on the line. */
static int rest_blank(const char *p) {
    p += strspn(p, " \t");
    return !*p || *p == '#' || *p == '\r';
}

/* The keys of [sweep] and what each takes, for messages. */
enum { K_BASE, K_OUT_DIR, K_NAME_PREFIX, K_RATIOS, K_SIZES, K_STEPS, K_TOKENS, N_KEYS };
static const struct {
    const char *key, *takes;
} sweep_keys[N_KEYS] = {
    {"base", "a string"},
    {"out_dir", "a string"},
    {"name_prefix", "a string"},
    {"ratios", "an array of numbers in [0, 1]"},
    {"sizes", "an array of [n_layer, d_model, n_head, d_ff] or "
              "[n_layer, d_model, n_head, n_kv_head, d_ff] arrays"},
    {"steps", "an array of positive integers"},
    {"tokens", "an array of positive integers"},
};

static int take_string(Src *src, int k, const Value *v, char *out, size_t out_len) {
    const char *key = sweep_keys[k].key;
    if (v->type != V_STR)
        return src_err(src, key, "expected %s, got %s", sweep_keys[k].takes, value_type_name(v));
    size_t n = strlen(v->s);
    if (n >= out_len) return src_err(src, key, "string longer than %zu bytes", out_len - 1);
    memcpy(out, v->s, n + 1);
    return 0;
}

/* An array of at most LAW_SWEEP_MAX numbers (integers or floats) into out. */
static int take_numbers(Src *src, int k, const Value *v, double *out) {
    const char *key = sweep_keys[k].key;
    if (v->type != V_ARRAY)
        return src_err(src, key, "expected %s, got %s", sweep_keys[k].takes, value_type_name(v));
    if (v->n > LAW_SWEEP_MAX) return src_err(src, key, "more than %d entries", LAW_SWEEP_MAX);
    for (int i = 0; i < v->n; i++)
        if (value_number(&v->items[i], &out[i]))
            return src_err(src, key, "expected %s, item %d is %s", sweep_keys[k].takes, i + 1,
                           value_type_name(&v->items[i]));
    return 0;
}

static int is_int(double v) {
    return v == floor(v) && fabs(v) < 9e15;
}

static int take_sizes(Src *src, LawSweep *s, const Value *v) {
    const char *key = sweep_keys[K_SIZES].key;
    if (v->type != V_ARRAY)
        return src_err(src, key, "expected %s, got %s", sweep_keys[K_SIZES].takes,
                       value_type_name(v));
    if (v->n > LAW_SWEEP_MAX) return src_err(src, key, "more than %d entries", LAW_SWEEP_MAX);
    for (int i = 0; i < v->n; i++) {
        const Value *row = &v->items[i];
        if (row->type != V_ARRAY)
            return src_err(src, key, "expected %s, size %d is %s", sweep_keys[K_SIZES].takes, i + 1,
                           value_type_name(row));
        if (row->n != 4 && row->n != 5)
            return src_err(src, key,
                           "size %d has %d numbers; expected [n_layer, d_model, n_head, d_ff] or "
                           "[n_layer, d_model, n_head, n_kv_head, d_ff]",
                           i + 1, row->n);
        int x[5];
        for (int j = 0; j < row->n; j++) {
            double d;
            if (value_number(&row->items[j], &d))
                return src_err(src, key, "size %d: item %d is %s, not a positive integer", i + 1,
                               j + 1, value_type_name(&row->items[j]));
            if (!is_int(d) || d < 1 || d > 1 << 20)
                return src_err(src, key, "size %d: %g is not a positive integer", i + 1, d);
            x[j] = (int)d;
        }
        LawSweepSize *z = &s->sizes[i];
        z->n_layer = x[0], z->d_model = x[1], z->n_head = x[2];
        z->n_kv_head = row->n == 5 ? x[3] : x[2];
        z->d_ff = row->n == 5 ? x[4] : x[3];
    }
    s->n_sizes = v->n;
    return 0;
}

static int assign(Src *src, LawSweep *s, int k, const Value *v) {
    const char *key = sweep_keys[k].key;
    double nums[LAW_SWEEP_MAX];
    switch (k) {
    case K_BASE:
        return take_string(src, k, v, s->base, sizeof s->base);
    case K_OUT_DIR:
        return take_string(src, k, v, s->out_dir, sizeof s->out_dir);
    case K_NAME_PREFIX:
        if (take_string(src, k, v, s->name_prefix, sizeof s->name_prefix)) return -1;
        for (const char *c = s->name_prefix; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_' && *c != '.')
                return src_err(src, key, "use only letters, digits, '-', '_' and '.'");
        return 0;
    case K_RATIOS:
        if (take_numbers(src, k, v, nums)) return -1;
        for (int i = 0; i < v->n; i++) {
            if (nums[i] < 0 || nums[i] > 1)
                return src_err(src, key, "%g is outside [0, 1]", nums[i]);
            for (int j = 0; j < i; j++)
                if (nums[j] == nums[i]) return src_err(src, key, "%g is listed twice", nums[i]);
            s->ratios[i] = nums[i];
        }
        s->n_ratios = v->n;
        return 0;
    case K_SIZES:
        return take_sizes(src, s, v);
    case K_STEPS:
    case K_TOKENS: {
        int tok = k == K_TOKENS;
        if (s->n_budgets) return src_err(src, key, "give either steps or tokens, not both");
        if (take_numbers(src, k, v, nums)) return -1;
        for (int i = 0; i < v->n; i++) {
            if (!is_int(nums[i]) || nums[i] < 1 || (!tok && nums[i] > 1e9))
                return src_err(src, key, "%g is not a positive integer", nums[i]);
            s->budgets[i] = (long long)nums[i];
        }
        if (!v->n) return src_err(src, key, "the list is empty");
        s->n_budgets = v->n;
        s->budget_is_tokens = tok;
        return 0;
    }
    }
    return -1;
}

/* Key k's value from text (what follows the '='), by the config's parser. */
static int set_key(Src *src, LawSweep *s, int k, const char *text) {
    Value v;
    char why[512];
    if (value_parse(text, &v, why, sizeof why))
        return src_err(src, sweep_keys[k].key, "%s (%s takes %s)", why, sweep_keys[k].key,
                       sweep_keys[k].takes);
    int rc = assign(src, s, k, &v);
    value_free(&v);
    return rc;
}

int law_sweep_parse(const char *name, const char *text, LawSweep *s, char *err, size_t err_len) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", name);
    snprintf(s->name_prefix, sizeof s->name_prefix, "sweep");
    Src src = {name, 0, err, err_len};
    int in_sweep = 0, seen_sweep = 0;
    int seen_line[N_KEYS] = {0};
    char line[8192];
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        src.line++;
        if (len >= sizeof line)
            return src_err(&src, "line", "longer than %zu bytes", sizeof line - 1);
        memcpy(line, p, len);
        line[len] = 0;
        p += len + (e != NULL);
        const char *q = line + strspn(line, " \t");
        if (rest_blank(q)) continue;
        if (*q == '[') {
            const char *t = q + 1 + strspn(q + 1, " \t");
            int is_sweep = !strncmp(t, "sweep", 5);
            const char *close = is_sweep ? t + 5 + strspn(t + 5, " \t") : t;
            if (is_sweep && *close == ']' && rest_blank(close + 1)) {
                if (seen_sweep) return src_err(&src, "[sweep]", "the table appears twice");
                in_sweep = seen_sweep = 1;
                continue;
            }
            return src_err(&src, "table", "unknown table '%s' (only [sweep])", q);
        }
        char key[64];
        size_t kn = strcspn(q, " \t=");
        if (!kn || kn >= sizeof key) return src_err(&src, "line", "expected key = value");
        memcpy(key, q, kn);
        key[kn] = 0;
        const char *v = q + kn + strspn(q + kn, " \t");
        if (*v != '=') return src_err(&src, key, "expected '=' after the key");
        if (!in_sweep) return src_err(&src, key, "keys belong in the [sweep] table");
        int k = 0;
        while (k < N_KEYS && strcmp(key, sweep_keys[k].key))
            k++;
        if (k == N_KEYS)
            return src_err(&src, key,
                           "unknown key (expected base, out_dir, name_prefix, ratios, sizes, "
                           "steps or tokens)");
        if (seen_line[k]) return src_err(&src, key, "given twice (first on line %d)", seen_line[k]);
        seen_line[k] = src.line;
        if (set_key(&src, s, k, v + 1)) return -1;
    }
    src.line = 0;
    if (!seen_sweep) return err_set(err, err_len, "%s: no [sweep] table", name);
    if (!s->base[0])
        return err_set(err, err_len, "%s: [sweep] base (the base training config) is required",
                       name);
    if (!s->out_dir[0]) return err_set(err, err_len, "%s: [sweep] out_dir is required", name);
    if (!s->n_ratios)
        return err_set(err, err_len, "%s: [sweep] ratios (a list of domain shares) is required",
                       name);
    if (!s->n_budgets)
        return err_set(err, err_len, "%s: [sweep] steps or tokens (a list of budgets) is required",
                       name);
    return 0;
}

int law_sweep_load(const char *path, LawSweep *s, char *err, size_t err_len) {
    char *text = st_read_text(path, 1u << 20, err, err_len);
    if (!text) return -1;
    int rc = law_sweep_parse(path, text, s, err, err_len);
    free(text);
    return rc;
}

/* ---------------- expansion ---------------- */

double law_sweep_count_params(const ModelConfig *m) {
    double C = m->d_model, F = m->d_ff, L = m->n_layer;
    if (m->arch == ARCH_GPT2) /* ln1, c_attn, c_proj, ln2, c_fc, mlp c_proj (+ biases); ln_f */
        return L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C) + 2 * C;
    double hd = C / m->n_head, qd = m->n_head * hd, kvd = m->n_kv_head * hd;
    double attn = qd * C + 2 * kvd * C + C * qd + (m->qkv_bias ? qd + 2 * kvd : 0);
    return L * (C + attn + C + 3 * F * C) + C; /* + model.norm */
}

/* The shortest %g text that reads back as v. */
static const char *shortest(double v, char *buf, size_t len) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

static void add_override(LawSweepRun *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_override(LawSweepRun *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->overrides[r->n_overrides++], sizeof r->overrides[0], fmt, ap);
    va_end(ap);
}

/* Frees the runs made so far after the message was written (it may name one). */
static int expand_fail(LawSweepRun *rs, int rc) {
    free(rs);
    return rc;
}

int law_sweep_expand(const LawSweep *s, LawSweepRun **runs, int *n_runs, char *err,
                     size_t err_len) {
    *runs = NULL;
    *n_runs = 0;
    char why[1024];
    Config base; /* config_from_args initialises it; config_free after either outcome */
    if (config_from_args(&base, s->base, 0, NULL, why, sizeof why)) {
        config_free(&base);
        return err_set(err, err_len, "%s: base config: %s", s->path, why);
    }
    const char *problem = NULL;
    if (base.model.init_from[0])
        problem = "model.init_from is set; the sweep trains each size from scratch, so the base "
                  "config must leave init_from empty";
    else if (base.mix.n_schedule > 0 || base.mix.upsample_start < 1.0)
        problem = "the sweep sets a constant mix.domain_frac per run; remove mix.schedule and "
                  "mix.upsample_* from the base config";
    else if (!base.data.val_domain.n || !base.data.val_general.n)
        problem = "both data.val_domain and data.val_general are needed (the law fits both losses)";
    long long tps = (long long)base.train.global_batch * base.data.seq_len;
    config_free(&base);
    if (problem) return err_set(err, err_len, "%s: base config %s: %s", s->path, s->base, problem);

    int n_sizes = s->n_sizes ? s->n_sizes : 1;
    int n = n_sizes * s->n_budgets * s->n_ratios;
    LawSweepRun *rs = calloc((size_t)n, sizeof *rs);
    if (!rs) return err_set(err, err_len, "out of memory");
    int k = 0;
    for (int zi = 0; zi < n_sizes; zi++)
        for (int bi = 0; bi < s->n_budgets; bi++)
            for (int ri = 0; ri < s->n_ratios; ri++, k++) {
                LawSweepRun *r = &rs[k];
                long long b = s->budgets[bi];
                if (s->budget_is_tokens && b % tps)
                    return expand_fail(
                        rs, err_set(err, err_len,
                                    "%s: tokens: %lld is not a multiple of the %lld tokens of "
                                    "a step (train.global_batch * data.seq_len)",
                                    s->path, b, tps));
                long long steps = s->budget_is_tokens ? b / tps : b;
                if (steps > 1000000000)
                    return expand_fail(rs, err_set(err, err_len,
                                                   "%s: tokens: %lld is more than 1e9 steps",
                                                   s->path, b));
                r->steps = (int)steps;
                r->tokens_per_step = tps;
                r->r_domain = s->ratios[ri];
                char size_tag[96] = "", num[32];
                if (s->n_sizes) {
                    const LawSweepSize *z = &s->sizes[zi];
                    snprintf(size_tag, sizeof size_tag, "-L%d-d%d-h%d", z->n_layer, z->d_model, z->n_head);
                    if (z->n_kv_head != z->n_head)
                        snprintf(size_tag + strlen(size_tag), sizeof size_tag - strlen(size_tag),
                                 "-kv%d", z->n_kv_head);
                    snprintf(size_tag + strlen(size_tag), sizeof size_tag - strlen(size_tag),
                             "-f%d", z->d_ff);
                }
                if (snprintf(r->name, sizeof r->name, "%s%s-s%d-r%.3f", s->name_prefix, size_tag,
                             r->steps, r->r_domain) >= (int)sizeof r->name)
                    return expand_fail(
                        rs, err_set(err, err_len, "%s: run name too long: %s", s->path, r->name));
                snprintf(r->run_dir, sizeof r->run_dir, "%s/%s", s->out_dir, r->name);
                for (int j = 0; j < k; j++)
                    if (!strcmp(rs[j].name, r->name))
                        return expand_fail(
                            rs, err_set(err, err_len,
                                        "%s: two runs would share the name %s (ratios that "
                                        "agree to 3 decimals?)",
                                        s->path, r->name));
                add_override(r, "--run.out_dir=%s", s->out_dir);
                add_override(r, "--run.name=%s", r->name);
                add_override(r, "--mix.domain_frac=%s", shortest(r->r_domain, num, sizeof num));
                add_override(r, "--train.steps=%d", r->steps);
                if (s->n_sizes) {
                    const LawSweepSize *z = &s->sizes[zi];
                    add_override(r, "--model.n_layer=%d", z->n_layer);
                    add_override(r, "--model.d_model=%d", z->d_model);
                    add_override(r, "--model.n_head=%d", z->n_head);
                    add_override(r, "--model.n_kv_head=%d", z->n_kv_head);
                    add_override(r, "--model.d_ff=%d", z->d_ff);
                }
                char *ov[LAW_SWEEP_MAX_OVERRIDES];
                for (int j = 0; j < r->n_overrides; j++) ov[j] = r->overrides[j];
                Config c;
                ModelConfig mc;
                int bad = config_from_args(&c, s->base, r->n_overrides, ov, why, sizeof why) ||
                          config_to_model_config(&c, &mc, why, sizeof why);
                int moe = !bad && c.moe.n_experts > 0;
                config_free(&c);
                if (bad)
                    return expand_fail(
                        rs, err_set(err, err_len, "%s: run %s: %s", s->path, r->name, why));
                if (moe)
                    return expand_fail(rs,
                                       err_set(err, err_len,
                                               "%s: the base config is a mixture of experts "
                                               "([moe] n_experts > 0): sweeps count N for dense "
                                               "models only (total or active parameters is not "
                                               "decided yet)",
                                               s->path));
                r->n_params = law_sweep_count_params(&mc);
            }
    *runs = rs;
    *n_runs = n;
    return 0;
}

/* ---------------- run directories ---------------- */

/* The eval losses of one run by step (last record wins) and whether the
 * final train record is there. */
typedef struct {
    int step;
    long long tokens;
    double loss_domain, loss_general; /* NAN when absent */
} EvalRow;

typedef struct {
    EvalRow *rows;
    int n, cap;
    int last_train_step;
} RunMetrics;

static EvalRow *eval_row(RunMetrics *m, int step) {
    for (int i = 0; i < m->n; i++)
        if (m->rows[i].step == step) return &m->rows[i];
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 64;
        EvalRow *r = realloc(m->rows, (size_t)cap * sizeof *r);
        if (!r) return NULL;
        m->rows = r, m->cap = cap;
    }
    m->rows[m->n] = (EvalRow){step, 0, NAN, NAN};
    return &m->rows[m->n++];
}

/* Reads RUN/metrics.jsonl; 1 when it does not exist. */
static int read_metrics(const LawSweepRun *r, RunMetrics *m, char *err, size_t err_len) {
    memset(m, 0, sizeof *m);
    m->last_train_step = -1;
    char path[sizeof r->run_dir + 16];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->run_dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 1;
        return err_set(err, err_len, "cannot open %s: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        cJSON *o = cJSON_Parse(line);
        if (!o) /* a line cut short by a killed run: the run will be redone or resumed */
            continue;
        const cJSON *type = cJSON_GetObjectItem(o, "type"), *step = cJSON_GetObjectItem(o, "step");
        if (cJSON_IsString(type) && cJSON_IsNumber(step)) {
            int st = step->valueint;
            if (!strcmp(type->valuestring, "train") && st > m->last_train_step)
                m->last_train_step = st;
            if (!strcmp(type->valuestring, "eval")) {
                const cJSON *split = cJSON_GetObjectItem(o, "split"),
                            *loss = cJSON_GetObjectItem(o, "loss"),
                            *tok = cJSON_GetObjectItem(o, "tokens");
                if (!cJSON_IsString(split) || !cJSON_IsNumber(loss) || !cJSON_IsNumber(tok)) {
                    cJSON_Delete(o);
                    free(line);
                    fclose(f);
                    free(m->rows);
                    return err_set(err, err_len,
                                   "%s:%d: an eval record without split, loss and tokens", path,
                                   lineno);
                }
                EvalRow *e = eval_row(m, st);
                if (!e) {
                    cJSON_Delete(o);
                    free(line);
                    fclose(f);
                    free(m->rows);
                    return err_set(err, err_len, "out of memory");
                }
                e->tokens = (long long)tok->valuedouble;
                if (!strcmp(split->valuestring, "val/domain")) e->loss_domain = loss->valuedouble;
                if (!strcmp(split->valuestring, "val/general")) e->loss_general = loss->valuedouble;
            }
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return 0;
}

static int metrics_complete(const LawSweepRun *r, const RunMetrics *m) {
    if (m->last_train_step != r->steps) return 0;
    for (int i = 0; i < m->n; i++)
        if (m->rows[i].step == r->steps)
            return !isnan(m->rows[i].loss_domain) && !isnan(m->rows[i].loss_general);
    return 0;
}

int law_sweep_run_state(const LawSweepRun *r, LawRunState *state, char *err, size_t err_len) {
    RunMetrics m;
    int rc = read_metrics(r, &m, err, err_len);
    if (rc < 0) return -1;
    *state = rc == 1 ? LAW_RUN_NONE : metrics_complete(r, &m) ? LAW_RUN_COMPLETE : LAW_RUN_PARTIAL;
    free(m.rows);
    return 0;
}

/* ---------------- child processes ---------------- */

const char *law_start_flag(LawStart how) {
    return how == LAW_START_RESUME ? " --resume" : how == LAW_START_OVERWRITE ? " --overwrite" : "";
}

int law_sweep_exec(const char *exe, const LawSweep *s, const LawSweepRun *r, LawStart how,
                   const char *log_path, int *exit_status, char *err, size_t err_len) {
    char *argv[LAW_SWEEP_MAX_OVERRIDES + 5];
    int a = 0;
    argv[a++] = "dapt";
    argv[a++] = "train";
    argv[a++] = (char *)s->base;
    for (int i = 0; i < r->n_overrides; i++) argv[a++] = (char *)r->overrides[i];
    if (how != LAW_START_NEW) argv[a++] = (char *)law_start_flag(how) + 1;
    argv[a] = NULL;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return err_set(err, err_len, "cannot open %s: %s", log_path, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return err_set(err, err_len, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        execv(exe, argv);
        dprintf(2, "dapt law sweep: cannot run %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    close(fd);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return err_set(err, err_len, "waitpid: %s", strerror(errno));
    *exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return 0;
}

static void append_quoted(char *buf, size_t buf_len, const char *arg) {
    size_t n = strlen(buf);
    int plain = *arg != 0;
    for (const char *c = arg; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("_./=:,+-@%", *c)) plain = 0;
    if (plain) {
        snprintf(buf + n, buf_len - n, "%s%s", n ? " " : "", arg);
        return;
    }
    if (n + 2 < buf_len) buf[n++] = ' ', buf[n++] = '\'';
    for (const char *c = arg; *c && n + 5 < buf_len; c++) {
        if (*c == '\'') {
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else
            buf[n++] = *c;
    }
    if (n + 1 < buf_len) buf[n++] = '\'';
    buf[n] = 0;
}

void law_sweep_command(const char *exe, const LawSweep *s, const LawSweepRun *r, char *buf,
                       size_t buf_len) {
    buf[0] = 0;
    append_quoted(buf, buf_len, exe);
    append_quoted(buf, buf_len, "train");
    append_quoted(buf, buf_len, s->base);
    for (int i = 0; i < r->n_overrides; i++) append_quoted(buf, buf_len, r->overrides[i]);
}

/* ---------------- results ---------------- */

static void json_num(FILE *f, const char *key, double v) {
    if (isnan(v)) fprintf(f, ",\"%s\":null", key);
    else {
        char num[32];
        fprintf(f, ",\"%s\":%s", key, shortest(v, num, sizeof num));
    }
}

int law_sweep_collect(const LawSweepRun *runs, int n_runs, const char *out_path, int *n_rows,
                      int *n_complete, char *err, size_t err_len) {
    *n_rows = *n_complete = 0;
    char tmp[LAW_SWEEP_PATH_LEN + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return err_set(err, err_len, "cannot write %s: %s", tmp, strerror(errno));
    for (int i = 0; i < n_runs; i++) {
        const LawSweepRun *r = &runs[i];
        RunMetrics m;
        int rc = read_metrics(r, &m, err, err_len);
        if (rc < 0) {
            fclose(f);
            remove(tmp);
            return -1;
        }
        if (rc == 0 && metrics_complete(r, &m)) {
            (*n_complete)++;
            for (int j = 0; j < m.n; j++) {
                const EvalRow *e = &m.rows[j];
                if (e->tokens <= 0 || e->step > r->steps) continue; /* D = 0: no CPT tokens yet */
                if (isnan(e->loss_domain) && isnan(e->loss_general)) continue;
                char num[32];
                fprintf(f, "{\"N\":%.17g,\"D\":%lld,\"r_domain\":%s", r->n_params, e->tokens,
                        shortest(r->r_domain, num, sizeof num));
                json_num(f, "loss_general", e->loss_general);
                json_num(f, "loss_domain", e->loss_domain);
                fprintf(f, ",\"run\":\"%s\",\"step\":%d}\n", r->name, e->step);
                (*n_rows)++;
            }
        }
        free(m.rows);
    }
    if (fclose(f))
        return remove(tmp), err_set(err, err_len, "cannot write %s: %s", tmp, strerror(errno));
    if (rename(tmp, out_path))
        return remove(tmp), err_set(err, err_len, "cannot rename %s: %s", tmp, strerror(errno));
    if (*n_rows == 0) return 0;
    LawData d;
    char why[LAW_ERR_LEN];
    if (law_data_load(out_path, &d, why, sizeof why))
        return err_set(err, err_len, "the collected results do not load: %s", why);
    law_data_free(&d);
    return 0;
}

LawStart law_sweep_resumes(const LawSweepRun *r, LawRunState st) {
    char ckpt[sizeof r->run_dir + 8];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", r->run_dir);
    if (st != LAW_RUN_PARTIAL) return LAW_START_NEW;
    return access(ckpt, F_OK) == 0 ? LAW_START_RESUME : LAW_START_OVERWRITE;
}

int law_sweep_train(const char *exe, const LawSweep *s, const LawSweepRun *r, LawRunState st,
                    const char *log_path, int *status, char *err, size_t err_len) {
    if (law_sweep_exec(exe, s, r, law_sweep_resumes(r, st), log_path, status, err, err_len))
        return 1;
    char ignored[LAW_ERR_LEN];
    if (*status == 0 &&
        (law_sweep_run_state(r, &st, ignored, sizeof ignored) || st != LAW_RUN_COMPLETE))
        *status = -1;
    return 0;
}
