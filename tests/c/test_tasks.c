/* test_tasks.c: the task files of `dapt eval` (trainer/tasks.h): what a good
 * file loads into (tasks grouped by name, the defaults), and that every bad
 * line is refused with FILE:LINE and what was wrong. The scores themselves
 * are checked against transformers by tests/eval/test_eval_hf.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/c/check.h"
#include "tests/data/scratch.h"
#include "trainer/tasks.h"

static char dir[256];

/* Writes text to DIR/name and returns the path (static buffer). */
static const char *put(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static void good_file(void) {
    char err[1024];
    TaskSet *ts = NULL;
    const char *p = put("facts.jsonl",
                        "{\"context\": \"2 + 2 =\", \"choices\": [\" 4\", \" 5\"], \"answer\": 0}\n"
                        "\n"
                        "{\"task\": \"wiki\", \"type\": \"perplexity\", \"text\": \"Hello.\"}\n"
                        "  \r\n"
                        "{\"task\": \"facts\", \"type\": \"multiple_choice\", \"context\": \"\", "
                        "\"choices\": [\"a\", \"b\", \"c\"], \"answer\": 2}\n");
    CHECK_OK(tasks_load(&ts, p, err, sizeof err), err);
    if (!ts) return;
    CHECK(ts->n_items == 3 && ts->n_tasks == 2, "%d items, %d tasks", ts->n_items, ts->n_tasks);
    CHECK(!strcmp(ts->tasks[0].name, "facts") && ts->tasks[0].type == TASK_MULTIPLE_CHOICE &&
          ts->tasks[0].n_items == 2);
    CHECK(!strcmp(ts->tasks[1].name, "wiki") && ts->tasks[1].type == TASK_PERPLEXITY &&
          ts->tasks[1].n_items == 1);
    CHECK(ts->items[0].line == 1 && ts->items[1].line == 3 && ts->items[2].line == 5);
    CHECK(ts->items[2].task == 0 && ts->items[2].n_choices == 3 && ts->items[2].answer == 2 &&
          !strcmp(ts->items[2].choices[2], "c") && !strcmp(ts->items[2].context, ""));
    CHECK(!strcmp(ts->items[1].text, "Hello."));
    tasks_free(ts);
}

static void bad_lines(void) {
    static const struct {
        const char *line, *want;
    } cases[] = {
        {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"]}", "\"answer\" must be the index"},
        {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 2}", "integer in [0, 1]"},
        {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": -1}", "integer in [0, 1]"},
        {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 0.5}", "\"answer\" must"},
        {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": \"0\"}", "\"answer\" must"},
        {"{\"context\": \"x\", \"choices\": [], \"answer\": 0}", "has 0 items; at least 2"},
        {"{\"context\": \"x\", \"choices\": [\"a\"], \"answer\": 0}", "has 1 item; at least 2"},
        {"{\"context\": \"x\", \"choices\": [\"a\", \"\"], \"answer\": 0}",
         "choice 1 must be a non-empty string"},
        {"{\"context\": \"x\", \"choices\": [\"a\", 3], \"answer\": 0}", "choice 1 must be"},
        {"{\"context\": \"x\", \"choices\": \"ab\", \"answer\": 0}", "needs an array \"choices\""},
        {"{\"choices\": [\"a\", \"b\"], \"answer\": 0}", "needs a string \"context\""},
        {"{\"context\": 1, \"choices\": [\"a\", \"b\"], \"answer\": 0}", "needs a string"},
        {"{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 0, \"anwser\": 1}",
         "unknown field \"anwser\""},
        {"{\"type\": \"generate\", \"text\": \"x\"}", "unknown type \"generate\""},
        {"{\"type\": 1, \"text\": \"x\"}", "\"type\" must be a string"},
        {"{\"type\": \"perplexity\"}", "needs a non-empty string \"text\""},
        {"{\"type\": \"perplexity\", \"text\": \"\"}", "needs a non-empty string \"text\""},
        {"{\"type\": \"perplexity\", \"text\": \"x\", \"answer\": 0}", "has only \"text\""},
        {"{\"text\": \"x\", \"context\": \"y\", \"choices\": [\"a\", \"b\"], \"answer\": 0}",
         "\"text\" belongs to perplexity"},
        {"{\"task\": \"a b\", \"type\": \"perplexity\", \"text\": \"x\"}", "task name \"a b\""},
        {"{\"task\": 3, \"type\": \"perplexity\", \"text\": \"x\"}", "\"task\" must be a string"},
        {"[1, 2]", "expected a JSON object"},
        {"{\"context\": \"x\", ", "not valid JSON"},
        {"{\"task\": \"t\", \"type\": \"perplexity\", \"text\": \"x\"}\n"
         "{\"task\": \"t\", \"context\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 0}",
         "mixes multiple_choice and perplexity"},
    };
    char err[1024], text[1024];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* a good item first and a blank line: the bad one is on line 3 (or 4) */
        snprintf(text, sizeof text,
                 "{\"task\": \"ok\", \"type\": \"perplexity\", \"text\": \"fine\"}\n\n%s\n",
                 cases[i].line);
        const char *p = put("bad.jsonl", text);
        char where[600];
        snprintf(where, sizeof where, "%s:%d: ", p, strchr(cases[i].line, '\n') ? 4 : 3);
        TaskSet *ts = (TaskSet *)1;
        CHECK_FAILS(tasks_load(&ts, p, err, sizeof err), err, where, cases[i].want);
        CHECK(ts == NULL);
    }
    TaskSet *ts = NULL;
    CHECK_FAILS(tasks_load(&ts, put("empty.jsonl", "\n  \n"), err, sizeof err), err,
                "empty.jsonl: no items");
    CHECK_FAILS(tasks_load(&ts,
                           put("bad name.jsonl", "{\"type\": \"perplexity\", \"text\": \"x\"}"),
                           err, sizeof err),
                err, "task name \"bad name\"", "give \"task\"");
    snprintf(text, sizeof text, "%s/missing.jsonl", dir);
    CHECK_FAILS(tasks_load(&ts, text, err, sizeof err), err, "missing.jsonl: No such file");
}

/* The sample tasks of configs/tasks (tools/make_tasks.py) load, one task
 * each of the type its name says (ctest runs this in tests/). */
static void sample_tasks(void) {
    static const struct {
        const char *name;
        TaskType type;
        int n_items;
    } files[] = {{"manpages_name", TASK_MULTIPLE_CHOICE, 200},
                 {"fortunes_end", TASK_MULTIPLE_CHOICE, 200},
                 {"manpages_ppl", TASK_PERPLEXITY, 20},
                 {"fortunes_ppl", TASK_PERPLEXITY, 40}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[256], err[1024];
        snprintf(path, sizeof path, "../configs/tasks/%s.jsonl", files[i].name);
        TaskSet *ts = NULL;
        CHECK_OK(tasks_load(&ts, path, err, sizeof err), err);
        if (!ts) continue;
        CHECK(ts->n_tasks == 1 && !strcmp(ts->tasks[0].name, files[i].name) &&
                  ts->tasks[0].type == files[i].type && ts->n_items == files[i].n_items,
              "%s: %d tasks, %d items", path, ts->n_tasks, ts->n_items);
        tasks_free(ts);
    }
}

int main(void) {
    if (scratch_make(dir, sizeof dir, "tasks")) {
        CHECK(0, "no scratch directory");
        return CHECK_DONE();
    }
    good_file();
    bad_lines();
    sample_tasks();
    if (!check_failures) scratch_remove(dir);
    return CHECK_DONE();
}
