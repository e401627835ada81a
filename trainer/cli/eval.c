/* eval.c: `dapt eval MODEL --tasks FILE.jsonl [--shots K] [--out FILE]`,
 * multiple-choice and perplexity tasks scored by log-likelihood
 * (trainer/tasks.h; the format and the rules are docs/eval.md).
 *
 * Loads a dapt checkpoint or an HF model directory on the chosen backend,
 * its tokenizer (or --tokenizer), scores every item and prints one line per
 * task; --out writes the scores and every item's per-choice
 * log-likelihoods as JSON (via a temporary name, renamed when whole). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "tokenizer/tokenizer.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"
#include "trainer/hf.h"
#include "trainer/tasks.h"

static const char usage[] =
    "usage: dapt eval MODEL --tasks FILE.jsonl [options]\n\n"
    "Scores MODEL (a dapt checkpoint or an HF model directory) on the tasks of a JSONL\n"
    "file (docs/eval.md): multiple_choice items by the log-likelihood of each choice\n"
    "given the context (acc, acc_norm, as lm-evaluation-harness), perplexity items by\n"
    "their token losses (mean loss, perplexity, bits per byte).\n\n"
    "  --tasks FILE       the task file (JSONL, one item a line)\n"
    "  --shots K          few-shot examples before each multiple_choice item: the K\n"
    "                     items after it in its task (default 0)\n"
    "  --out FILE         write the scores and per-item log-likelihoods as JSON\n"
    "  --device NAME      cpu (default), cuda or cuda-fp32\n"
    "  --tokenizer PATH   an HF model directory, tokenizer.json or sentencepiece .model\n"
    "                     (default: MODEL's tokenizer.json or tokenizer.model)\n";

static cJSON *results_json(const TaskSet *ts, const char *model, int shots, const char *device) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model", model);
    cJSON_AddStringToObject(r, "tasks_file", ts->path);
    cJSON_AddNumberToObject(r, "shots", shots);
    cJSON_AddStringToObject(r, "device", device);
    cJSON *tasks = cJSON_AddObjectToObject(r, "tasks");
    for (int t = 0; t < ts->n_tasks; t++) {
        const Task *tk = &ts->tasks[t];
        cJSON *o = cJSON_AddObjectToObject(tasks, tk->name);
        cJSON_AddStringToObject(o, "type",
                                tk->type == TASK_PERPLEXITY ? "perplexity" : "multiple_choice");
        cJSON_AddNumberToObject(o, "n_items", tk->n_items);
        if (tk->type == TASK_MULTIPLE_CHOICE) {
            cJSON_AddNumberToObject(o, "acc", tk->acc);
            cJSON_AddNumberToObject(o, "acc_norm", tk->acc_norm);
            cJSON_AddNumberToObject(o, "n_truncated", tk->n_truncated);
        } else {
            cJSON_AddNumberToObject(o, "loss", tk->mean_loss);
            cJSON_AddNumberToObject(o, "ppl", tk->ppl);
            cJSON_AddNumberToObject(o, "bits_per_byte", tk->bits_per_byte);
            cJSON_AddNumberToObject(o, "n_tokens", (double)tk->n_tokens);
            cJSON_AddNumberToObject(o, "n_bytes", (double)tk->n_bytes);
        }
    }
    cJSON *items = cJSON_AddArrayToObject(r, "items");
    for (int k = 0; k < ts->n_items; k++) {
        const TaskItem *it = &ts->items[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(items, o);
        cJSON_AddStringToObject(o, "task", ts->tasks[it->task].name);
        cJSON_AddNumberToObject(o, "line", it->line);
        if (ts->tasks[it->task].type == TASK_MULTIPLE_CHOICE) {
            cJSON_AddItemToObject(o, "loglik", cJSON_CreateDoubleArray(it->loglik, it->n_choices));
            cJSON_AddItemToObject(o, "n_tokens",
                                  cJSON_CreateIntArray(it->n_cont_tokens, it->n_choices));
            cJSON_AddNumberToObject(o, "answer", it->answer);
            cJSON_AddNumberToObject(o, "pred", it->pred);
            cJSON_AddNumberToObject(o, "pred_norm", it->pred_norm);
            cJSON_AddBoolToObject(o, "truncated", it->truncated);
        } else {
            cJSON_AddNumberToObject(o, "loss_sum", it->loss_sum);
            cJSON_AddNumberToObject(o, "n_tokens", (double)it->n_tokens);
        }
    }
    return r;
}

/* results.json: the JSON text and a newline, written atomically (PATH.tmp,
 * fsync, rename) into its directory, made with its parents if missing */
static int write_text(const char *path, const char *text, char *err, size_t err_len) {
    size_t n = strlen(text);
    char *line = malloc(n + 2);
    if (!line) return err_set(err, err_len, "out of memory for %s", path);
    memcpy(line, text, n);
    line[n] = '\n', line[n + 1] = 0;
    int rc = mkdir_parent(path, err, err_len) || hf_write_file_atomic(path, line, err, err_len);
    free(line);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    CliOpt opts[] = {{"--tasks", 1, 0, 0},  {"--shots", 1, 0, 0},     {"--out", 1, 0, 0},
                     {"--device", 1, 0, 0}, {"--tokenizer", 1, 0, 0}, {NULL, 0, 0, 0}};
    const CliSpec spec = {"eval", usage, opts, 1, NULL, NULL};
    const char *pos[1];
    int n_pos, prc = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (prc) return prc == CLI_HELP ? 0 : prc;
    const char *tasks_path = cli_opt(&spec, "--tasks")->value;
    const char *out = cli_opt(&spec, "--out")->value;
    const char *device = cli_opt(&spec, "--device")->value;
    const char *tok_path = cli_opt(&spec, "--tokenizer")->value;
    uint64_t shots = 0;
    if (cli_u64(&spec, cli_opt(&spec, "--shots"), 0, 1000, &shots)) return CLI_USAGE;
    if (n_pos == 0 || !tasks_path) return cli_usage(&spec);
    if (!device) device = "cpu";
    const char *model_dir = pos[0];
    char err[2048], found[2048];
    TaskSet *ts = NULL;
    if (tasks_load(&ts, tasks_path, err, sizeof err)) return cli_fail(&spec, "%s", err);
    if (!tok_path) {
        if (!tokenizer_find(model_dir, found, sizeof found)) {
            tasks_free(ts);
            return cli_fail(&spec,
                            "%s has neither tokenizer.json nor tokenizer.model: pass --tokenizer "
                            "PATH",
                            model_dir);
        }
        tok_path = model_dir;
    }
    const Ops *ops = ops_get(device, NULL, err, sizeof err);
    if (!ops) {
        tasks_free(ts);
        return cli_usage_error(&spec, "--device: %s", err);
    }
    Tokenizer *tok = NULL;
    Model *m = NULL;
    int rc = 1;
    if (tokenizer_load(&tok, tok_path, err, sizeof err)) {
        cli_fail(&spec, "%s", err);
        goto done;
    }
    if (!(m = hf_load_model(model_dir, ops, err, sizeof err))) {
        cli_fail(&spec, "%s", err);
        goto done;
    }
    double t0 = now_s();
    if (tasks_score(ts, m, tok, (int)shots, err, sizeof err)) {
        cli_fail(&spec, "%s", err);
        goto done;
    }
    for (int t = 0; t < ts->n_tasks; t++) {
        const Task *tk = &ts->tasks[t];
        if (tk->type == TASK_MULTIPLE_CHOICE)
            printf("%-24s multiple_choice %5d items  acc %.4f  acc_norm %.4f%s\n", tk->name,
                   tk->n_items, tk->acc, tk->acc_norm, tk->n_truncated ? "  (some truncated)" : "");
        else
            printf("%-24s perplexity      %5d items  loss %.4f  ppl %.3f  bits/byte %.4f\n",
                   tk->name, tk->n_items, tk->mean_loss, tk->ppl, tk->bits_per_byte);
    }
    printf("dapt eval: %d items, %d-shot, %s, %.1fs\n", ts->n_items, (int)shots, ops->name,
           now_s() - t0);
    if (out) {
        cJSON *r = results_json(ts, model_dir, (int)shots, ops->name);
        char *text = r ? cJSON_Print(r) : NULL;
        cJSON_Delete(r);
        if (!text) {
            cli_fail(&spec, "out of memory for %s", out);
            goto done;
        }
        int bad = write_text(out, text, err, sizeof err);
        free(text);
        if (bad) {
            cli_fail(&spec, "%s", err);
            goto done;
        }
        printf("wrote %s\n", out);
    }
    rc = 0;
done:
    model_free(m);
    tokenizer_free(tok);
    tasks_free(ts);
    return rc;
}
