/* tasks.c: evaluation tasks (tasks.h): the JSONL task files and their
 * scoring by log-likelihood. docs/eval.md is the format and the rules. */
#include "trainer/tasks.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"

#define TASKS_SHOT_SEP "\n\n"

/* ---------------- loading ---------------- */

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void item_free(TaskItem *it) {
    free(it->context);
    for (int c = 0; c < it->n_choices; c++)
        free(it->choices ? it->choices[c] : NULL);
    free(it->choices);
    free(it->text);
    free(it->loglik);
    free(it->n_cont_tokens);
}

void tasks_free(TaskSet *ts) {
    if (!ts) return;
    for (int i = 0; i < ts->n_items; i++)
        item_free(&ts->items[i]);
    free(ts->items);
    free(ts->tasks);
    free(ts);
}

/* The default task name: the file name without its directory and .jsonl. */
static void file_stem(const char *path, char *name, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t len = strlen(b);
    if (len > 6 && !strcmp(b + len - 6, ".jsonl")) len -= 6;
    if (len >= n) len = n - 1;
    memcpy(name, b, len);
    name[len] = 0;
}

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= TASK_NAME_LEN) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return 0;
    return 1;
}

/* One JSON object into it (task index resolved by the caller). *type and
 * name get the item's type and task name. */
static int parse_item(const cJSON *j, const char *where, const char *stem, TaskItem *it,
                      TaskType *type, char *name, char *err, size_t err_len) {
    static const char *const keys[] = {"task", "type", "context", "choices", "answer", "text"};
    if (!cJSON_IsObject(j)) return err_set(err, err_len, "%s: expected a JSON object", where);
    for (const cJSON *f = j->child; f; f = f->next) {
        size_t k = 0;
        while (k < sizeof keys / sizeof *keys && strcmp(f->string, keys[k]))
            k++;
        if (k == sizeof keys / sizeof *keys)
            return err_set(err, err_len,
                           "%s: unknown field \"%.64s\" (fields: task, type, context, choices, "
                           "answer, text)",
                           where, f->string);
    }
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(j, "context");
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(j, "answer");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (task && !cJSON_IsString(task))
        return err_set(err, err_len, "%s: \"task\" must be a string", where);
    const char *nm = task ? task->valuestring : stem;
    if (!name_ok(nm))
        return err_set(err, err_len,
                       "%s: task name \"%.80s\" must be 1 to %d characters of A-Z a-z 0-9 _ - . "
                       "(give \"task\" when the file name is not one)",
                       where, nm, TASK_NAME_LEN - 1);
    memcpy(name, nm, strlen(nm) + 1); /* name_ok: shorter than TASK_NAME_LEN */
    if (ty && !cJSON_IsString(ty))
        return err_set(err, err_len, "%s: \"type\" must be a string", where);
    const char *tname = ty ? ty->valuestring : "multiple_choice";
    if (!strcmp(tname, "perplexity")) {
        *type = TASK_PERPLEXITY;
        if (ctx || ch || ans)
            return err_set(err, err_len,
                           "%s: a perplexity item has only \"text\" (no context, choices or "
                           "answer)",
                           where);
        if (!cJSON_IsString(text) || !text->valuestring[0])
            return err_set(err, err_len, "%s: a perplexity item needs a non-empty string \"text\"",
                           where);
        if (!(it->text = dup_str(text->valuestring))) return err_set(err, err_len, "out of memory");
        return 0;
    }
    if (strcmp(tname, "multiple_choice"))
        return err_set(err, err_len, "%s: unknown type \"%.64s\" (multiple_choice or perplexity)",
                       where, tname);
    *type = TASK_MULTIPLE_CHOICE;
    if (text)
        return err_set(err, err_len,
                       "%s: \"text\" belongs to perplexity items (this one is multiple_choice)",
                       where);
    if (!cJSON_IsString(ctx))
        return err_set(err, err_len, "%s: a multiple_choice item needs a string \"context\"",
                       where);
    if (!cJSON_IsArray(ch))
        return err_set(err, err_len, "%s: a multiple_choice item needs an array \"choices\"",
                       where);
    int n = cJSON_GetArraySize(ch);
    if (n < 2)
        return err_set(err, err_len, "%s: \"choices\" has %d item%s; at least 2 are needed", where,
                       n, n == 1 ? "" : "s");
    it->choices = calloc((size_t)n, sizeof *it->choices);
    if (!it->choices || !(it->context = dup_str(ctx->valuestring)))
        return err_set(err, err_len, "out of memory");
    it->n_choices = n;
    int c = 0;
    for (const cJSON *e = ch->child; e; e = e->next, c++) {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return err_set(err, err_len, "%s: choice %d must be a non-empty string", where, c);
        if (!(it->choices[c] = dup_str(e->valuestring)))
            return err_set(err, err_len, "out of memory");
    }
    if (!cJSON_IsNumber(ans) || ans->valuedouble != floor(ans->valuedouble) ||
        ans->valuedouble < 0 || ans->valuedouble >= n)
        return err_set(err, err_len,
                       "%s: \"answer\" must be the index of the correct choice, an integer in "
                       "[0, %d]",
                       where, n - 1);
    it->answer = (int)ans->valuedouble;
    return 0;
}

/* The index of the task called name (appended when new); -1 on a type
 * that differs from the task's. */
static int task_index(TaskSet *ts, const char *name, TaskType type, int *cap) {
    for (int t = 0; t < ts->n_tasks; t++)
        if (!strcmp(ts->tasks[t].name, name)) return ts->tasks[t].type == type ? t : -1;
    if (ts->n_tasks == *cap) {
        int nc = *cap ? 2 * *cap : 8;
        Task *nt = realloc(ts->tasks, (size_t)nc * sizeof *nt);
        if (!nt) return -2;
        ts->tasks = nt, *cap = nc;
    }
    Task *t = &ts->tasks[ts->n_tasks];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    return ts->n_tasks++;
}

static int load_lines(TaskSet *ts, FILE *f, const char *path, char *err, size_t err_len) {
    char stem[TASK_NAME_LEN * 4], where[1100];
    file_stem(path, stem, sizeof stem);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    int cap_items = 0, cap_tasks = 0, rc = 0;
    for (int ln = 1; (n = getline(&line, &line_cap, f)) >= 0; ln++) {
        snprintf(where, sizeof where, "%.1000s:%d", path, ln);
        size_t i = 0;
        while (i < (size_t)n &&
               (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n'))
            i++;
        if (i == (size_t)n) continue; /* blank */
        if (strlen(line) != (size_t)n) {
            rc = err_set(err, err_len, "%s: a NUL byte in the line", where);
            break;
        }
        cJSON *j = cJSON_ParseWithLength(line, (size_t)n);
        if (!j) {
            const char *e = cJSON_GetErrorPtr();
            rc = err_set(err, err_len, "%s: not valid JSON (near byte %ld of the line)", where,
                         e ? (long)(e - line) + 1 : 0L);
            break;
        }
        if (ts->n_items == cap_items) {
            int nc = cap_items ? 2 * cap_items : 64;
            TaskItem *ni = realloc(ts->items, (size_t)nc * sizeof *ni);
            if (!ni) {
                cJSON_Delete(j);
                rc = err_set(err, err_len, "out of memory");
                break;
            }
            ts->items = ni, cap_items = nc;
        }
        TaskItem *it = &ts->items[ts->n_items++];
        memset(it, 0, sizeof *it);
        it->line = ln;
        TaskType type = TASK_MULTIPLE_CHOICE;
        char name[TASK_NAME_LEN];
        rc = parse_item(j, where, stem, it, &type, name, err, err_len);
        cJSON_Delete(j);
        if (rc) break;
        it->task = task_index(ts, name, type, &cap_tasks);
        if (it->task == -2) {
            rc = err_set(err, err_len, "out of memory");
            break;
        }
        if (it->task < 0) {
            rc = err_set(err, err_len, "%s: task \"%s\" mixes multiple_choice and perplexity items",
                         where, name);
            break;
        }
        ts->tasks[it->task].n_items++;
    }
    free(line);
    if (!rc && ferror(f)) rc = err_set(err, err_len, "%s: read error: %s", path, strerror(errno));
    if (!rc && ts->n_items == 0)
        rc = err_set(err, err_len, "%s: no items (an empty task file)", path);
    return rc;
}

int tasks_load(TaskSet **out, const char *path, char *err, size_t err_len) {
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return err_set(err, err_len, "%s: %s", path, strerror(errno));
    TaskSet *ts = calloc(1, sizeof *ts);
    if (!ts) {
        fclose(f);
        return err_set(err, err_len, "out of memory");
    }
    snprintf(ts->path, sizeof ts->path, "%s", path);
    int rc = load_lines(ts, f, path, err, err_len);
    fclose(f);
    if (rc) {
        tasks_free(ts);
        return rc;
    }
    *out = ts;
    return 0;
}

/* ---------------- scoring ---------------- */

/* A growable int32 sequence. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} Seq;

static int seq_push(Seq *s, int32_t x) {
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 256;
        int32_t *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv, s->cap = nc;
    }
    s->v[s->n++] = x;
    return 0;
}

typedef struct {
    Model *m;
    const Tokenizer *tok;
    int start; /* BOS, else EOS, else -1 */
    int L;     /* max_seq_len */
    uint32_t *ids;
    size_t n_ids, ids_cap;
    Seq inp, tgt;
    char *err;
    size_t err_len;
} Scorer;

static int encode(Scorer *s, const char *text, size_t n, const char *where) {
    char why[512];
    if (tokenizer_encode(s->tok, text, n, &s->ids, &s->n_ids, &s->ids_cap, why, sizeof why))
        return err_set(s->err, s->err_len, "%s: %s", where, why);
    return 0;
}

/* Σ losses of seq[first..n) each given everything before it (seq[0] is
 * never a target), in windows of at most L predicted tokens, each window's
 * input the tokens before its targets, cut from the left to L. */
static int score_tokens(Scorer *s, const int32_t *seq, size_t n, size_t first, double *loss_sum,
                        int *truncated, const char *where) {
    *loss_sum = 0.0;
    for (size_t a = first; a < n; a += (size_t)s->L) {
        size_t b = a + (size_t)s->L < n ? a + (size_t)s->L : n;      /* targets seq[a..b) */
        size_t lo = b - 1 > (size_t)s->L ? b - 1 - (size_t)s->L : 0; /* input seq[lo..b-1) */
        if (lo > 0 && a == first) *truncated = 1;
        s->inp.n = s->tgt.n = 0;
        for (size_t i = lo; i + 1 < b; i++)
            if (seq_push(&s->inp, seq[i]) || seq_push(&s->tgt, i + 1 >= a ? seq[i + 1] : -1))
                return err_set(s->err, s->err_len, "out of memory");
        float mean;
        char why[512];
        int T = (int)s->inp.n;
        if (model_forward(s->m, s->inp.v, s->tgt.v, 1, T, &mean, why, sizeof why))
            return err_set(s->err, s->err_len, "%s: %s", where, why);
        const float *tl = model_token_losses(s->m); /* (T) */
        for (int t = 0; t < T; t++)
            if (s->tgt.v[t] >= 0) *loss_sum += tl[t];
    }
    return 0;
}

/* The log-likelihood of choice c of it after prefix (few-shot examples). */
static int score_choice(Scorer *s, TaskItem *it, int c, const char *prefix, const char *where) {
    size_t np = strlen(prefix), nc = strlen(it->context), nch = strlen(it->choices[c]);
    char *whole = malloc(np + nc + nch + 1);
    if (!whole) return err_set(s->err, s->err_len, "out of memory");
    memcpy(whole, prefix, np);
    memcpy(whole + np, it->context, nc);
    memcpy(whole + np + nc, it->choices[c], nch + 1);
    /* the harness moves the context's trailing whitespace onto the choice */
    size_t n_ctx = np + nc;
    while (n_ctx > 0 && strchr(" \t\n\r\f\v", whole[n_ctx - 1]))
        n_ctx--;
    int rc = encode(s, whole, n_ctx, where);
    size_t n_ctx_tok = s->n_ids;
    Seq seq = {0};
    if (!rc && s->start >= 0 && seq_push(&seq, s->start))
        rc = err_set(s->err, s->err_len, "out of memory");
    if (!rc) rc = encode(s, whole, np + nc + nch, where);
    for (size_t i = 0; !rc && i < s->n_ids; i++)
        if (seq_push(&seq, (int32_t)s->ids[i])) rc = err_set(s->err, s->err_len, "out of memory");
    size_t first = seq.n - (s->n_ids - (n_ctx_tok < s->n_ids ? n_ctx_tok : s->n_ids));
    if (!rc && first == seq.n)
        rc = err_set(s->err, s->err_len, "%s: choice %d has no tokens of its own after the context",
                     where, c);
    if (!rc && first == 0)
        rc = err_set(s->err, s->err_len,
                     "%s: choice %d: nothing before it to condition on (an empty context and a "
                     "tokenizer without BOS or EOS)",
                     where, c);
    if (!rc && seq.n - first > (size_t)s->L)
        rc = err_set(s->err, s->err_len,
                     "%s: choice %d is %zu tokens, longer than the model's max_seq_len %d", where,
                     c, seq.n - first, s->L);
    double loss = 0.0;
    int trunc = 0;
    if (!rc) rc = score_tokens(s, seq.v, seq.n, first, &loss, &trunc, where);
    it->loglik[c] = -loss;
    it->n_cont_tokens[c] = (int)(seq.n - first);
    it->truncated |= trunc;
    free(seq.v);
    free(whole);
    return rc;
}

/* The few-shot prefix of item k of task t: the `shots` items after it in
 * the task (cyclically), each context + answer, each followed by the
 * separator. */
static char *fewshot_prefix(const TaskSet *ts, int k, int shots) {
    const TaskItem *it = &ts->items[k];
    size_t len = 0, cap = 1;
    char *p = malloc(cap);
    if (!p) return NULL;
    p[0] = 0;
    int j = k;
    for (int n = 0; n < shots;) {
        j = (j + 1) % ts->n_items;
        if (ts->items[j].task != it->task) continue;
        const TaskItem *e = &ts->items[j];
        const char *parts[3] = {e->context, e->choices[e->answer], TASKS_SHOT_SEP};
        for (int q = 0; q < 3; q++) {
            size_t m = strlen(parts[q]);
            if (len + m + 1 > cap) {
                cap = 2 * (len + m + 1);
                char *np = realloc(p, cap);
                if (!np) return free(p), NULL;
                p = np;
            }
            memcpy(p + len, parts[q], m + 1);
            len += m;
        }
        n++;
    }
    return p;
}

static int score_item(Scorer *s, TaskSet *ts, int k, int shots) {
    TaskItem *it = &ts->items[k];
    char where[1100];
    snprintf(where, sizeof where, "%.1000s:%d", ts->path, it->line);
    if (ts->tasks[it->task].type == TASK_PERPLEXITY) {
        s->n_ids = 0;
        Seq seq = {0};
        int rc = encode(s, it->text, strlen(it->text), where);
        if (!rc && s->start >= 0 && seq_push(&seq, s->start))
            rc = err_set(s->err, s->err_len, "out of memory");
        for (size_t i = 0; !rc && i < s->n_ids; i++)
            if (seq_push(&seq, (int32_t)s->ids[i]))
                rc = err_set(s->err, s->err_len, "out of memory");
        int trunc = 0;
        if (!rc) rc = score_tokens(s, seq.v, seq.n, 1, &it->loss_sum, &trunc, where);
        it->n_tokens = seq.n > 1 ? (long long)seq.n - 1 : 0;
        free(seq.v);
        return rc;
    }
    free(it->loglik);
    free(it->n_cont_tokens);
    it->loglik = calloc((size_t)it->n_choices, sizeof *it->loglik);
    it->n_cont_tokens = calloc((size_t)it->n_choices, sizeof *it->n_cont_tokens);
    char *prefix = fewshot_prefix(ts, k, shots);
    if (!it->loglik || !it->n_cont_tokens || !prefix) {
        free(prefix);
        return err_set(s->err, s->err_len, "out of memory");
    }
    it->truncated = 0;
    int rc = 0;
    for (int c = 0; !rc && c < it->n_choices; c++)
        rc = score_choice(s, it, c, prefix, where);
    free(prefix);
    if (rc) return rc;
    it->pred = it->pred_norm = 0;
    for (int c = 1; c < it->n_choices; c++) {
        if (it->loglik[c] > it->loglik[it->pred]) it->pred = c;
        if (it->loglik[c] / (double)strlen(it->choices[c]) >
            it->loglik[it->pred_norm] / (double)strlen(it->choices[it->pred_norm]))
            it->pred_norm = c;
    }
    return 0;
}

int tasks_score(TaskSet *ts, Model *m, const Tokenizer *tok, int shots, char *err, size_t err_len) {
    const ModelConfig *mc = model_config(m);
    if (tokenizer_vocab_size(tok) > (uint32_t)mc->vocab_size)
        return err_set(err, err_len, "the tokenizer has %u tokens, the model only %d",
                       tokenizer_vocab_size(tok), mc->vocab_size);
    if (shots < 0) return err_set(err, err_len, "shots must be >= 0, not %d", shots);
    for (int t = 0; t < ts->n_tasks; t++)
        if (ts->tasks[t].type == TASK_MULTIPLE_CHOICE && shots >= ts->tasks[t].n_items)
            return err_set(err, err_len,
                           "%s: task %s has %d items: %d-shot needs at least %d (the shots are "
                           "other items of the task)",
                           ts->path, ts->tasks[t].name, ts->tasks[t].n_items, shots, shots + 1);
    Scorer s = {.m = m, .tok = tok, .L = mc->max_seq_len, .err = err, .err_len = err_len};
    s.start = tokenizer_bos_id(tok) >= 0 ? tokenizer_bos_id(tok) : tokenizer_eos_id(tok);
    int rc = 0;
    for (int k = 0; !rc && k < ts->n_items; k++)
        rc = score_item(&s, ts, k, shots);
    free(s.ids);
    free(s.inp.v);
    free(s.tgt.v);
    if (rc) return rc;
    for (int t = 0; t < ts->n_tasks; t++) {
        Task *tk = &ts->tasks[t];
        double hit = 0, hit_norm = 0;
        tk->loss_sum = 0, tk->n_tokens = tk->n_bytes = 0, tk->n_truncated = 0;
        for (int k = 0; k < ts->n_items; k++) {
            const TaskItem *it = &ts->items[k];
            if (it->task != t) continue;
            tk->n_truncated += it->truncated;
            if (tk->type == TASK_MULTIPLE_CHOICE) {
                hit += it->pred == it->answer;
                hit_norm += it->pred_norm == it->answer;
            } else {
                tk->loss_sum += it->loss_sum;
                tk->n_tokens += it->n_tokens;
                tk->n_bytes += (long long)strlen(it->text);
            }
        }
        tk->acc = hit / tk->n_items;
        tk->acc_norm = hit_norm / tk->n_items;
        tk->mean_loss = tk->n_tokens ? tk->loss_sum / (double)tk->n_tokens : NAN;
        tk->ppl = exp(tk->mean_loss);
        tk->bits_per_byte = tk->loss_sum / (log(2.0) * (double)tk->n_bytes);
    }
    return 0;
}
