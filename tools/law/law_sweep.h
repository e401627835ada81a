/* law_sweep.h: `dapt law sweep` -- the grid of small training runs that
 * feeds the D-CPT law. A SWEEP.toml names a base training config and lists
 * of domain ratios, model sizes and training budgets; the sweep expands it
 * into one run config per (size, budget, ratio) -- the base config plus
 * `--section.key=value` overrides -- runs them with `dapt train` as child
 * processes, skips the runs that are complete, and collects every periodic
 * eval of every complete run into a results file for `dapt law fit`.
 *
 * Invariants: a LawSweep that law_sweep_parse accepted has 1..LAW_SWEEP_MAX
 * ratios in [0, 1], no two equal; sizes and budgets positive. Every
 * LawSweepRun that law_sweep_expand made has passed the trainer's own
 * config validation (config_from_args) with exactly its overrides. Library
 * functions return 0 on success and -1 on failure with a message naming the
 * file, line and key in err; they never print or exit. */
#ifndef DAPT_LAW_SWEEP_H
#define DAPT_LAW_SWEEP_H

#include <stddef.h>

#include "trainer/model.h"

#define LAW_SWEEP_MAX 64
#define LAW_SWEEP_PATH_LEN 1024
#define LAW_SWEEP_MAX_OVERRIDES 12

typedef struct {
    int n_layer, d_model, n_head, n_kv_head, d_ff;
} LawSweepSize;

typedef struct {
    char path[LAW_SWEEP_PATH_LEN]; /* the SWEEP.toml itself, for messages */
    char base[LAW_SWEEP_PATH_LEN];
    char out_dir[LAW_SWEEP_PATH_LEN];
    char name_prefix[64];
    double ratios[LAW_SWEEP_MAX]; /* domain shares, (n_ratios) */
    int n_ratios;
    LawSweepSize sizes[LAW_SWEEP_MAX]; /* (n_sizes); 0: the base config's [model] */
    int n_sizes;
    long long budgets[LAW_SWEEP_MAX]; /* steps, or tokens when budget_is_tokens, (n_budgets) */
    int n_budgets;
    int budget_is_tokens;
} LawSweep;

int law_sweep_load(const char *path, LawSweep *s, char *err, size_t err_len);
/* The same for text in memory; `name` stands for the file in messages. */
int law_sweep_parse(const char *name, const char *text, LawSweep *s, char *err, size_t err_len);

/* One run of the grid. */
typedef struct {
    char name[160];
    char run_dir[LAW_SWEEP_PATH_LEN + 168]; /* out_dir/name */
    double r_domain;
    int steps;
    long long tokens_per_step;
    double n_params; /* non-embedding parameters (law_sweep_count_params) */
    int n_overrides;
    char overrides[LAW_SWEEP_MAX_OVERRIDES][LAW_SWEEP_PATH_LEN + 32]; /* "--section.key=value" */
} LawSweepRun;

/* Expands the grid (order: size, budget, ratio) and validates every run's
 * config; *runs is malloc'd (free it). */
int law_sweep_expand(const LawSweep *s, LawSweepRun **runs, int *n_runs, char *err,
                     size_t err_len);

/* The parameter count the sweep writes as N: every parameter except the
 * token embedding, GPT-2's position embedding and an untied LM head. */
double law_sweep_count_params(const ModelConfig *m);

typedef enum { LAW_RUN_NONE = 0, LAW_RUN_PARTIAL = 1, LAW_RUN_COMPLETE = 2 } LawRunState;

/* COMPLETE: RUN/metrics.jsonl has a train record with step == steps and
 * both evals (val/domain, val/general) at that step; PARTIAL: the metrics
 * file exists without that; NONE: it does not exist. */
int law_sweep_run_state(const LawSweepRun *r, LawRunState *state, char *err, size_t err_len);

/* How run r in state st starts: LAW_START_RESUME (--resume) for a partial
 * run with RUN/ckpt (its newest checkpoint); LAW_START_OVERWRITE
 * (--overwrite: dapt train moves the old RUN aside) for a partial run
 * without one, whose RUN `dapt train` would refuse as another run's;
 * LAW_START_NEW otherwise. */
typedef enum { LAW_START_NEW = 0, LAW_START_RESUME = 1, LAW_START_OVERWRITE = 2 } LawStart;
LawStart law_sweep_resumes(const LawSweepRun *r, LawRunState st);
/* the flag of a LawStart: "", " --resume" or " --overwrite" */
const char *law_start_flag(LawStart how);

/* Runs `exe train BASE OVERRIDES... [--resume | --overwrite]` as a child process with its
 * stdout and stderr appended to log_path and waits for it; *exit_status is
 * its exit status (128 + signal number when a signal ended it). */
int law_sweep_exec(const char *exe, const LawSweep *s, const LawSweepRun *r, LawStart how,
                   const char *log_path, int *exit_status, char *err, size_t err_len);

/* Trains run r, in state st (law_sweep_run_state; not COMPLETE), to its
 * end: law_sweep_exec, started as law_sweep_resumes(r, st) says. Then
 * *status is 0 when the run is complete, the exit status when it was not 0,
 * and -1 when the run exited 0 without complete metrics. */
int law_sweep_train(const char *exe, const LawSweep *s, const LawSweepRun *r, LawRunState st,
                    const char *log_path, int *status, char *err, size_t err_len);

/* The command line of one run, shell-quoted, into buf (for --print). */
void law_sweep_command(const char *exe, const LawSweep *s, const LawSweepRun *r, char *buf,
                       size_t buf_len);

/* Writes one results row per eval step with tokens > 0 of every complete run
 * to out_path (JSONL for `dapt law fit`: N, D, r_domain, loss_general,
 * loss_domain, plus run and step), then loads it back with law_data_load.
 * When a step was evaluated more than once (a resumed run), the last record
 * counts. *n_rows and *n_complete say what was written. */
int law_sweep_collect(const LawSweepRun *runs, int n_runs, const char *out_path, int *n_rows,
                      int *n_complete, char *err, size_t err_len);

#endif
