/* hook.h: [eval] command, an external evaluation run after each checkpoint
 * of `dapt train` (rank 0), in the background (docs/train.md, "Evaluation at
 * checkpoints").
 *
 * Each run is `sh -c COMMAND` with {ckpt} replaced by the checkpoint
 * directory (single-quoted for the shell) and DAPT_CKPT, DAPT_STEP in its
 * environment, in a process group of its own (a Ctrl-C of the trainer does
 * not reach it), stdout and stderr into RUN/hooks/step-NNNNNNNN.{out,err}.
 * When it ends, a "hook" record goes to metrics.jsonl: its exit status and,
 * when the last line of its stdout is a JSON object, that object as
 * "result".
 *
 * Invariants: nothing here blocks training: runs are reaped with WNOHANG
 * (hook_poll, called every step); a failing hook is a record and a line on
 * stderr, never an error of the run; at most HOOK_MAX_RUNNING run at once
 * (a checkpoint that finds them all busy is recorded as skipped); at the
 * end (hook_finish) the runs get a bounded wait, then their process groups
 * are killed and recorded as such. */
#ifndef DAPT_HOOK_H
#define DAPT_HOOK_H

#include <stddef.h>

#include "trainer/metrics.h"

#define HOOK_MAX_RUNNING 4

typedef struct Hook Hook;

/* A hook for command (non-empty) writing its outputs under run_dir/hooks;
 * NULL with a message when the directory cannot be made. */
Hook *hook_create(const char *command, const char *run_dir, char *err, size_t err_len);
/* Starts the command for the checkpoint ckpt_dir of step; a failure to
 * start is recorded (and printed), not returned. NULL h: nothing. */
void hook_start(Hook *h, Metrics *mf, int step, const char *ckpt_dir);
/* Records the runs that have ended, without waiting. NULL h: nothing. */
void hook_poll(Hook *h, Metrics *mf);
/* Waits up to wait_s seconds for the runs still going, then kills their
 * process groups and records them as killed. */
void hook_finish(Hook *h, Metrics *mf, int wait_s);
void hook_free(Hook *h);

#endif
