/* tasks.h: evaluation tasks scored by log-likelihood (`dapt eval`, and
 * [eval] tasks inside `dapt train`); the JSONL format is docs/eval.md.
 *
 * A task file holds items, one JSON object a line, grouped into tasks by
 * their "task" name (the file's stem when absent):
 *   multiple_choice  {"context", "choices": [...], "answer": INDEX}: each
 *                    choice's log-likelihood given the context, the way
 *                    lm-evaluation-harness scores multiple_choice tasks:
 *                    acc (argmax of the sum of the choice tokens'
 *                    log-probabilities) and acc_norm (argmax of the sum
 *                    divided by the choice's byte length);
 *   perplexity       {"text"}: token losses over the text (mean loss,
 *                    perplexity, bits per byte).
 *
 * Token sequences (the harness way): the continuation's tokens are
 * encode(context + choice) after its first len(encode(context)) tokens,
 * trailing whitespace of the context moved onto the choice first; the
 * sequence starts with the tokenizer's BOS (its EOS when it has no BOS) and
 * is cut from the left to the model's max_seq_len. A perplexity text longer
 * than max_seq_len is scored in disjoint windows of max_seq_len predicted
 * tokens. Few-shot: the K items after the item in its task (cyclically),
 * each as context + correct choice, joined by "\n\n" before the item's
 * context.
 *
 * Invariants: a loaded TaskSet was checked whole (every message names
 * FILE:LINE); scoring is deterministic (the same items, in file order, one
 * sequence per forward pass), so ranks of a sharded model may score in
 * lockstep. */
#ifndef DAPT_TASKS_H
#define DAPT_TASKS_H

#include <stddef.h>

#include "tokenizer/tokenizer.h"
#include "trainer/model.h"

typedef enum { TASK_MULTIPLE_CHOICE = 1, TASK_PERPLEXITY = 2 } TaskType;

#define TASK_NAME_LEN 64

typedef struct {
    int task;       /* index into TaskSet.tasks */
    int line;       /* in the file, from 1 */
    char *context;  /* multiple_choice ("" allowed) */
    char **choices; /* (n_choices) multiple_choice, each non-empty */
    int n_choices;
    int answer;
    char *text; /* perplexity, non-empty */
    /* filled by tasks_score */
    double *loglik;     /* (n_choices) Σ log p of each choice's tokens */
    int *n_cont_tokens; /* (n_choices) tokens of each continuation */
    int pred, pred_norm;
    double loss_sum; /* perplexity: Σ token losses (nats) */
    long long n_tokens;
    int truncated; /* the sequence was cut from the left */
} TaskItem;

typedef struct {
    char name[TASK_NAME_LEN];
    TaskType type;
    int n_items;
    /* filled by tasks_score */
    double acc, acc_norm;                           /* multiple_choice */
    double loss_sum, mean_loss, ppl, bits_per_byte; /* perplexity */
    long long n_tokens, n_bytes;
    int n_truncated;
} Task;

typedef struct {
    char path[1024];
    TaskItem *items; /* (n_items) in file order */
    int n_items;
    Task *tasks; /* (n_tasks) in order of first appearance */
    int n_tasks;
} TaskSet;

/* Reads and checks PATH; 0, or -1 with "PATH:LINE: what was wrong". */
int tasks_load(TaskSet **out, const char *path, char *err, size_t err_len);
void tasks_free(TaskSet *ts);

/* Scores every item with m (any backend; a forward pass per sequence) and
 * fills the scores of items and tasks. shots: few-shot examples per
 * multiple_choice item (< its task's item count; perplexity items take
 * none). The tokenizer's ids must fit the model's vocabulary. */
int tasks_score(TaskSet *ts, Model *m, const Tokenizer *tok, int shots, char *err, size_t err_len);

#endif
