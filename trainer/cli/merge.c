/* merge.c: `dapt merge OUT MODEL... --method M [--base DIR] ...` or
 * `dapt merge CONFIG.toml` (trainer/merge_config.c): the
 * command over merge_run (trainer/merge.h: the methods, the checks, the
 * streaming). Parses the per-model lists (--weights, --density) and the
 * method's parameters; docs/merge.md describes each. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/gguf/gguf.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"
#include "trainer/merge.h"

static const char usage[] =
    "usage: dapt merge CONFIG.toml [--force] [--quiet]\n"
    "       dapt merge OUT MODEL... --method METHOD [--base DIR] [--weights W,...]\n"
    "                  [--density D,...] [--lambda X] [--epsilon E]\n"
    "                  [--combine linear|ties] [--seed N] [--force] [--quiet]\n\n"
    "Merges MODELs (HF model directories, dapt checkpoints or F32/F16/BF16 GGUF files\n"
    "(imported into OUT/.gguf-input-N first, removed after) of one architecture,\n"
    "shape, vocabulary and tokenizer) into OUT, an HF model directory (config.json,\n"
    "model.safetensors in F32, the tokenizer files of the base, else of the first\n"
    "model), tensor by tensor. CONFIG.toml has a [merge] table (method, base, out,\n"
    "lambda, seed, combine, epsilon, density) and a [[model]] table per input\n"
    "(path, weight, density). Methods (docs/merge.md):\n"
    "  linear           sum w_k MODEL_k / sum w_k (no --base)\n"
    "  task_arithmetic  BASE + lambda * sum w_k (MODEL_k - BASE)  (chat vector)\n"
    "  ties             task vectors trimmed to the top --density magnitudes,\n"
    "                   sign elected, disjoint mean (Yadav et al. 2023)\n"
    "  dare             random drop with keep probability --density, rescale by\n"
    "                   1/density (Yu et al. 2024); --combine linear (default) or ties\n"
    "  della            magnitude-ranked keep probabilities density +- epsilon/2,\n"
    "                   rescale by 1/keep (Deep et al. 2024); --combine ties (default)\n"
    "                   or linear\n"
    "  moe              the models' FFNs become the experts of a Mixtral-shaped MoE;\n"
    "                   --shared average (default: the weighted mean of the models)\n"
    "                   or base for the other tensors; routers N(0, 0.02) from --seed;\n"
    "                   --top-k K experts per token (default 2)\n"
    "Options:\n"
    "  --base DIR       the model the task vectors are taken against\n"
    "  --weights LIST   one weight per MODEL, comma-separated (default 1 each)\n"
    "  --density LIST   one value for all MODELs or one each, in (0, 1] (default 1)\n"
    "  --lambda X       scale of the merged task vector (default 1)\n"
    "  --epsilon E      della's window of keep probabilities (default 0.1)\n"
    "  --seed N         seed of the random drops (default 0; merge.h's RNG)\n"
    "  --force          overwrite OUT's config.json and model.safetensors\n"
    "  --quiet          no progress lines on stderr\n";

/* a comma-separated list of numbers into x[0..*n) (at most max) */
static int parse_list(const CliSpec *spec, const char *opt, const char *s, double *x, int max,
                      int *n) {
    *n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v))
            return cli_usage_error(spec, "%s '%s': item %d is not a number", opt, s, *n + 1);
        if (*n == max) return cli_usage_error(spec, "%s '%s': more than %d items", opt, s, max);
        x[(*n)++] = v;
        if (*end == '\0') return 0;
        if (*end != ',')
            return cli_usage_error(spec, "%s '%s': item %d is not a number", opt, s, *n);
        p = end + 1;
    }
}

static int parse_number(const CliSpec *spec, const char *opt, double *x) {
    const char *s = cli_opt(spec, opt)->value;
    if (!s) return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v))
        return cli_usage_error(spec, "%s '%s' is not a number", opt, s);
    *x = v;
    return 0;
}

static int merge_and_report(const CliSpec *spec, const MergeOptions *o, const char *out);

/* GGUF inputs: each imported (gguf_import_to_dir, which holds the model in
 * memory) into OUT/.gguf-input-N, merged from there like a checkpoint, and
 * removed after the merge, whatever its outcome. */
typedef struct {
    char dirs[MERGE_MAX_MODELS + 1][4200];
    int n;
} GgufStage;

static void stage_remove(GgufStage *g) {
    for (int i = 0; i < g->n; i++) {
        DIR *d = opendir(g->dirs[i]);
        if (d) {
            struct dirent *e;
            char path[4600];
            while ((e = readdir(d)))
                if (e->d_name[0] != '.') {
                    snprintf(path, sizeof path, "%s/%s", g->dirs[i], e->d_name);
                    unlink(path);
                }
            closedir(d);
        }
        rmdir(g->dirs[i]);
    }
}

static int stage_gguf(const CliSpec *spec, GgufStage *g, const char *out, const char **path) {
    struct stat st;
    if (stat(*path, &st) || !S_ISREG(st.st_mode) || !gguf_is_gguf_file(*path)) return 0;
    if (mkdir(out, 0755) && errno != EEXIST)
        return cli_fail(spec, "%s: cannot create: %s", out, strerror(errno));
    char *dir = g->dirs[g->n];
    snprintf(dir, sizeof g->dirs[0], "%s/.gguf-input-%d", out, g->n);
    g->n++;
    char err[2048];
    if (gguf_import_to_dir(*path, dir, 1, err, sizeof err))
        return cli_fail(spec, "%s: importing it for the merge: %s", *path, err);
    *path = dir;
    return 0;
}

static int run(const CliSpec *spec, const MergeOptions *in, const char *out) {
    MergeOptions o = *in;
    GgufStage g = {.n = 0};
    int rc = o.base ? stage_gguf(spec, &g, out, &o.base) : 0;
    for (int k = 0; !rc && k < o.n_models; k++)
        rc = stage_gguf(spec, &g, out, &o.models[k]);
    if (!rc) rc = merge_and_report(spec, &o, out);
    stage_remove(&g);
    return rc;
}

static int merge_and_report(const CliSpec *spec, const MergeOptions *o, const char *out) {
    char err[2048];
    uint64_t n_params = 0;
    if (merge_run(o, out, &n_params, err, sizeof err)) return cli_fail(spec, "%s", err);
    printf("wrote %s (%s of %d model%s, %llu parameters)\n", out, merge_method_name(o->method),
           o->n_models, o->n_models == 1 ? "" : "s", (unsigned long long)n_params);
    return 0;
}

/* `dapt merge CONFIG.toml [--force] [--quiet]`: everything else is the
 * config's */
static int merge_from_config(const CliSpec *spec, const char *path) {
    static const char *const flags[] = {"--method", "--base",    "--weights", "--density",
                                        "--lambda", "--epsilon", "--combine", "--seed"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (cli_opt(spec, flags[i])->seen)
            return cli_usage_error(spec, "%s: with a config, give it in %s", flags[i], path);
    static MergeConfig c; /* ~140 KiB of paths */
    char err[2048];
    if (merge_config_load(path, &c, err, sizeof err)) return cli_fail(spec, "%s", err);
    c.o.force = cli_opt(spec, "--force")->seen > 0;
    c.o.progress = cli_opt(spec, "--quiet")->seen == 0;
    return run(spec, &c.o, c.out);
}

int cmd_merge(int argc, char **argv) {
    CliOpt opts[] = {{"--method", 1, 0, 0},  {"--base", 1, 0, 0},   {"--weights", 1, 0, 0},
                     {"--density", 1, 0, 0}, {"--lambda", 1, 0, 0}, {"--epsilon", 1, 0, 0},
                     {"--combine", 1, 0, 0}, {"--seed", 1, 0, 0},   {"--force", 0, 0, 0},
                     {"--quiet", 0, 0, 0},   {"--top-k", 1, 0, 0},  {"--shared", 1, 0, 0},
                     {NULL, 0, 0, 0}};
    const CliSpec spec = {"merge", usage, opts, MERGE_MAX_MODELS + 1, NULL, NULL};
    const char *pos[MERGE_MAX_MODELS + 1];
    int n_pos;
    int rc = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    size_t len0 = n_pos == 1 ? strlen(pos[0]) : 0;
    if (len0 > 5 && !strcmp(pos[0] + len0 - 5, ".toml")) return merge_from_config(&spec, pos[0]);
    if (n_pos < 2) return cli_usage(&spec);
    MergeOptions o = {.lambda = 1.0, .epsilon = 0.1, .n_models = n_pos - 1};
    for (int k = 0; k < o.n_models; k++) {
        o.models[k] = pos[k + 1];
        o.weights[k] = 1.0;
        o.density[k] = 1.0;
    }
    const char *m = cli_opt(&spec, "--method")->value;
    if (!m)
        return cli_usage_error(&spec, "--method is required (linear, task_arithmetic, ties, "
                                      "dare, della)");
    int method = merge_method_parse(m);
    if (method < 0)
        return cli_usage_error(&spec,
                               "--method '%s' is not one of linear, task_arithmetic, ties, "
                               "dare, della, moe",
                               m);
    o.method = (MergeMethod)method;
    o.combine = o.method == MERGE_DELLA ? MERGE_COMBINE_TIES : MERGE_COMBINE_LINEAR;
    const char *c = cli_opt(&spec, "--combine")->value;
    if (c) {
        if (o.method != MERGE_DARE && o.method != MERGE_DELLA)
            return cli_usage_error(&spec, "--combine is for dare and della");
        if (!strcmp(c, "linear"))
            o.combine = MERGE_COMBINE_LINEAR;
        else if (!strcmp(c, "ties"))
            o.combine = MERGE_COMBINE_TIES;
        else
            return cli_usage_error(&spec, "--combine '%s' is not one of linear, ties", c);
    }
    o.base = cli_opt(&spec, "--base")->value;
    const char *w = cli_opt(&spec, "--weights")->value;
    int n;
    if (w) {
        if (parse_list(&spec, "--weights", w, o.weights, MERGE_MAX_MODELS, &n)) return 2;
        if (n != o.n_models)
            return cli_usage_error(&spec, "--weights has %d items for %d models", n, o.n_models);
    }
    const char *d = cli_opt(&spec, "--density")->value;
    if (d) {
        if (o.method == MERGE_LINEAR || o.method == MERGE_TASK_ARITHMETIC)
            return cli_usage_error(&spec, "--density is for ties, dare and della");
        if (parse_list(&spec, "--density", d, o.density, MERGE_MAX_MODELS, &n)) return 2;
        if (n == 1)
            for (int k = 1; k < o.n_models; k++)
                o.density[k] = o.density[0];
        else if (n != o.n_models)
            return cli_usage_error(&spec, "--density has %d items for %d models", n, o.n_models);
    }
    if (cli_opt(&spec, "--lambda")->value && o.method == MERGE_LINEAR)
        return cli_usage_error(&spec, "--lambda is not for linear");
    if (cli_opt(&spec, "--epsilon")->value && o.method != MERGE_DELLA)
        return cli_usage_error(&spec, "--epsilon is for della");
    if (parse_number(&spec, "--lambda", &o.lambda) || parse_number(&spec, "--epsilon", &o.epsilon))
        return 2;
    if (cli_u64(&spec, cli_opt(&spec, "--seed"), 0, UINT64_MAX, &o.seed)) return 2;
    if ((cli_opt(&spec, "--top-k")->seen || cli_opt(&spec, "--shared")->seen) &&
        o.method != MERGE_MOE)
        return cli_usage_error(&spec, "--top-k and --shared are for moe");
    uint64_t top_k = 2;
    if (cli_u64(&spec, cli_opt(&spec, "--top-k"), 1, MERGE_MAX_MODELS, &top_k)) return 2;
    o.top_k = (int)top_k;
    const char *sh = cli_opt(&spec, "--shared")->value;
    if (sh && strcmp(sh, "average") && strcmp(sh, "base"))
        return cli_usage_error(&spec, "--shared '%s' is not one of average, base", sh);
    o.shared = sh && !strcmp(sh, "base") ? MERGE_SHARED_BASE : MERGE_SHARED_AVERAGE;
    o.force = cli_opt(&spec, "--force")->seen > 0;
    o.progress = cli_opt(&spec, "--quiet")->seen == 0;
    return run(&spec, &o, pos[0]);
}
