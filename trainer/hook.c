/* hook.c: [eval] command runs after checkpoints (hook.h). posix_spawn, not
 * fork: the trainer may hold CUDA contexts, MPI transports and threads that
 * a forked copy must not touch. */
#include "trainer/hook.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kernels/util.h"

extern char **environ;

typedef struct {
    pid_t pid; /* 0: free slot */
    int step;
    double t0;
    char out[1200]; /* its stdout file */
} HookRun;

struct Hook {
    char *command;
    char dir[1100]; /* RUN/hooks */
    HookRun runs[HOOK_MAX_RUNNING];
};

Hook *hook_create(const char *command, const char *run_dir, char *err, size_t err_len) {
    Hook *h = calloc(1, sizeof *h);
    if (!h || !(h->command = strdup(command))) {
        free(h);
        err_set(err, err_len, "out of memory");
        return NULL;
    }
    snprintf(h->dir, sizeof h->dir, "%.1000s/hooks", run_dir);
    if (mkdir_p(h->dir, err, err_len)) {
        hook_free(h);
        return NULL;
    }
    return h;
}

void hook_free(Hook *h) {
    if (!h) return;
    free(h->command);
    free(h);
}

/* command with every {ckpt} replaced by the single-quoted path (malloc'd). */
static char *substitute(const char *command, const char *ckpt) {
    size_t q = 2;
    for (const char *p = ckpt; *p; p++)
        q += *p == '\'' ? 4 : 1;
    size_t n = 1;
    for (const char *p = command; *p;)
        if (!strncmp(p, "{ckpt}", 6))
            n += q, p += 6;
        else
            n++, p++;
    char *s = malloc(n), *o = s;
    if (!s) return NULL;
    for (const char *p = command; *p;) {
        if (strncmp(p, "{ckpt}", 6)) {
            *o++ = *p++;
            continue;
        }
        *o++ = '\'';
        for (const char *c = ckpt; *c; c++)
            if (*c == '\'')
                memcpy(o, "'\\''", 4), o += 4;
            else
                *o++ = *c;
        *o++ = '\'';
        p += 6;
    }
    *o = 0;
    return s;
}

/* The JSON value v as fields of the record (key NULL: an array element). */
static void put_json(MetricsRec *r, const char *key, const cJSON *v, int depth) {
    if (cJSON_IsNumber(v)) {
        metrics_rec_num(r, key, "%.10g", v->valuedouble);
    } else if (cJSON_IsString(v)) {
        metrics_rec_str(r, key, v->valuestring);
    } else if (cJSON_IsBool(v)) {
        metrics_rec_int(r, key, cJSON_IsTrue(v));
    } else if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && depth + 2 < METRICS_MAX_DEPTH) {
        int obj = cJSON_IsObject(v);
        if (obj)
            metrics_rec_object_begin(r, key);
        else
            metrics_rec_array_begin(r, key);
        for (const cJSON *c = v->child; c; c = c->next)
            put_json(r, obj ? c->string : NULL, c, depth + 1);
        if (obj)
            metrics_rec_object_end(r);
        else
            metrics_rec_array_end(r);
    } else {
        metrics_rec_num(r, key, "%g", NAN); /* null, and what nests too deep */
    }
}

/* The last non-blank line of the file as a JSON object, or NULL. */
static cJSON *last_json_line(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *line = NULL, *last = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && strchr(" \t\r\n", line[n - 1]))
            line[--n] = 0;
        if (n == 0) continue;
        free(last);
        last = strdup(line);
    }
    free(line);
    fclose(f);
    cJSON *j = last ? cJSON_Parse(last) : NULL;
    free(last);
    if (j && !cJSON_IsObject(j)) cJSON_Delete(j), j = NULL;
    return j;
}

static void write_rec(Metrics *mf, MetricsRec *r) {
    char err[1200];
    if (metrics_write(mf, r, err, sizeof err)) fprintf(stderr, "dapt train: %s\n", err);
}

/* The record of an ended run (status from waitpid, or killed). */
static void record_end(HookRun *run, Metrics *mf, int status, int killed) {
    MetricsRec r;
    metrics_rec_begin(&r, "hook");
    metrics_rec_int(&r, "step", run->step);
    double secs = now_s() - run->t0;
    if (killed) {
        metrics_rec_str(&r, "status", "killed");
    } else if (WIFEXITED(status)) {
        metrics_rec_str(&r, "status", WEXITSTATUS(status) ? "failed" : "ok");
        metrics_rec_int(&r, "exit_code", WEXITSTATUS(status));
    } else {
        metrics_rec_str(&r, "status", "signal");
        metrics_rec_int(&r, "signal", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    metrics_rec_num(&r, "seconds", "%.3f", secs);
    metrics_rec_str(&r, "output", run->out);
    cJSON *j = killed ? NULL : last_json_line(run->out);
    if (j) put_json(&r, "result", j, 0);
    cJSON_Delete(j);
    write_rec(mf, &r);
    int ok = !killed && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok)
        fprintf(stderr,
                "dapt train: eval.command for step %d %s after %.1fs (training goes on); its "
                "output: %s\n",
                run->step,
                killed              ? "was killed at the end of training"
                : WIFEXITED(status) ? "failed"
                                    : "died of a signal",
                secs, run->out);
    else
        printf("eval.command for step %d done in %.1fs%s\n", run->step, secs,
               j ? " (result recorded)" : "");
    run->pid = 0;
}

static void record_not_started(Metrics *mf, int step, const char *why) {
    MetricsRec r;
    metrics_rec_begin(&r, "hook");
    metrics_rec_int(&r, "step", step);
    metrics_rec_str(&r, "status", "not_started");
    metrics_rec_str(&r, "error", why);
    write_rec(mf, &r);
    fprintf(stderr, "dapt train: eval.command for step %d not started: %s (training goes on)\n",
            step, why);
}

void hook_start(Hook *h, Metrics *mf, int step, const char *ckpt_dir) {
    if (!h) return;
    hook_poll(h, mf);
    HookRun *run = NULL;
    for (int i = 0; i < HOOK_MAX_RUNNING && !run; i++)
        if (!h->runs[i].pid) run = &h->runs[i];
    if (!run) {
        record_not_started(mf, step, "the previous runs are all still going");
        return;
    }
    char err_path[1200], env_ckpt[1200], env_step[32], why[1400];
    snprintf(run->out, sizeof run->out, "%s/step-%08d.out", h->dir, step);
    snprintf(err_path, sizeof err_path, "%s/step-%08d.err", h->dir, step);
    snprintf(env_ckpt, sizeof env_ckpt, "DAPT_CKPT=%.1100s", ckpt_dir);
    snprintf(env_step, sizeof env_step, "DAPT_STEP=%d", step);
    char *cmd = substitute(h->command, ckpt_dir);
    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **env = malloc((n_env + 3) * sizeof *env);
    if (!cmd || !env) {
        free(cmd), free(env);
        record_not_started(mf, step, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "DAPT_CKPT=", 10) && strncmp(environ[i], "DAPT_STEP=", 10))
            env[k++] = environ[i];
    env[k++] = env_ckpt, env[k++] = env_step, env[k] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, run->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    char *argv[] = {"sh", "-c", cmd, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(cmd), free(env);
    if (rc) {
        snprintf(why, sizeof why, "/bin/sh: %s", strerror(rc));
        record_not_started(mf, step, why);
        return;
    }
    run->pid = pid, run->step = step, run->t0 = now_s();
    printf("eval.command for step %d started (pid %d, output %s)\n", step, (int)pid, run->out);
}

void hook_poll(Hook *h, Metrics *mf) {
    if (!h) return;
    for (int i = 0; i < HOOK_MAX_RUNNING; i++) {
        HookRun *run = &h->runs[i];
        int status;
        if (run->pid && waitpid(run->pid, &status, WNOHANG) == run->pid)
            record_end(run, mf, status, 0);
    }
}

void hook_finish(Hook *h, Metrics *mf, int wait_s) {
    if (!h) return;
    double end = now_s() + wait_s;
    for (int said = 0;; said = 1) {
        hook_poll(h, mf);
        int running = 0;
        for (int i = 0; i < HOOK_MAX_RUNNING; i++)
            running += h->runs[i].pid != 0;
        if (!running || now_s() >= end) break;
        if (!said) printf("waiting for %d eval.command run(s), at most %ds\n", running, wait_s);
        fflush(stdout);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < HOOK_MAX_RUNNING; i++) {
        HookRun *run = &h->runs[i];
        if (!run->pid) continue;
        kill(-run->pid, SIGKILL);
        int status;
        waitpid(run->pid, &status, 0);
        record_end(run, mf, status, 1);
    }
}
