/* law.c: `dapt law fit | predict | recommend | sweep`, the command-line
 * face of the D-CPT law library (tools/law: law.h, law_sweep.h). It prints
 * and chooses the exit status: 0 success, 1 bad input or failed fit,
 * 2 usage error. Machine-readable output (--json) is one JSON object on
 * stdout; human-readable output goes to stdout, notes and errors to stderr. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "kernels/util.h"
#include "tools/law/law.h"
#include "tools/law/law_sweep.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"

static const char *usage_law =
    "usage: dapt law <fit|predict|recommend|sweep> [args]   (dapt law <sub> --help for each)\n"
    "\n"
    "The D-CPT law (Que et al. 2024), fitted separately for the general loss\n"
    "(r = general share) and the domain loss (r = domain share):\n"
    "  L(N, D, r) = E + A/N^alpha + B*r^eta/D^beta + C/(r+epsilon)^gamma\n"
    "\n"
    "  fit        fit the law to sweep results, write law.json\n"
    "  predict    predicted general and domain loss at (N, D, r_domain)\n"
    "  recommend  the domain share r_domain to train with\n"
    "  sweep      run the grid of small training runs, collect results.jsonl\n";

static const char *usage_fit =
    "usage: dapt law fit RESULTS --out law.json [options]\n"
    "\n"
    "RESULTS: JSONL, one object per line, or CSV (name ending in .csv) with a header:\n"
    "  {\"N\": params, \"D\": tokens, \"r_domain\": share, \"loss_general\": L, \"loss_domain\": "
    "L}\n"
    "  Either loss may be absent (or null / an empty CSV cell) in a row.\n"
    "  Cross-domain rows also carry \"domain\": name, \"k1\": x, \"k2\": y (docs/dcpt.md).\n"
    "\n"
    "options:\n"
    "  --out PATH          where to write the fitted law (required)\n"
    "  --huber-delta X     Huber threshold on log-loss residuals (default 1e-3)\n"
    "  --starts K          grid starts minimised fully per fit (default 16)\n"
    "  --max-iter K        minimiser iterations per start (default 1000)\n"
    "  --no-holdout        skip the leave-one-ratio-out (leave-one-domain-out) refits\n"
    "  --cross-domain      fit the cross-domain law (adds F/K^mu, K = w1/k1 + w2*k2;\n"
    "                      needs >= 3 domains)\n";

static const char *usage_predict =
    "usage: dapt law predict LAW.json --N n --D d --r-domain r [--k1 x --k2 y] [--json]\n"
    "       dapt law predict LAW.json --stdin\n"
    "\n"
    "Prints the predicted general and domain loss of a model with n parameters after\n"
    "d CPT tokens at domain share r. Numbers accept k, M, B (or G) and T suffixes.\n"
    "--k1/--k2: the new domain's early statistics, required by a cross-domain law.\n"
    "--json: one object {\"loss_general\": x, \"loss_domain\": y}.\n"
    "--stdin: many points, one a line on standard input, \"N D r_domain [k1 k2]\";\n"
    "         one --json object a line on standard output for each, in order.\n";

static const char *usage_recommend =
    "usage: dapt law recommend LAW.json --N n --D d --max-general-rise T\n"
    "                          [--base-general-loss L0] [options]\n"
    "       dapt law recommend LAW.json --N n --domain-tokens Dd [options]\n"
    "\n"
    "1) the r_domain minimising the domain loss at (n, d) while the general loss stays\n"
    "   within (1+T)*L0; L0 defaults to the law's general loss at r_domain = 0, same n, d.\n"
    "2) with a fixed budget of Dd domain tokens: the r_domain minimising the domain loss\n"
    "   when training on D = Dd / r_domain tokens.\n"
    "\n"
    "options:\n"
    "  --flat-tol X   report the r_domain range whose domain loss is within a fraction X\n"
    "                 of the optimum (default 0.001)\n"
    "  --k1 x --k2 y  the domain's early statistics (cross-domain law only)\n"
    "  --json         one object {\"r_domain\": r, \"loss_general\": x, \"loss_domain\": y}\n";

static const char *usage_sweep =
    "usage: dapt law sweep SWEEP.toml [--print [--launcher PREFIX]] [--collect]\n"
    "                      [--results PATH]\n"
    "\n"
    "Expands SWEEP.toml (a base training config and lists of domain ratios, model\n"
    "sizes and budgets; docs/dcpt.md) into one `dapt train` run per (size, budget,\n"
    "ratio), runs them one after another as child processes (log: OUT_DIR/NAME.log),\n"
    "skips complete runs, resumes a partial run from its newest checkpoint, and\n"
    "writes every eval of every complete run to OUT_DIR/results.jsonl for\n"
    "`dapt law fit` (N = non-embedding parameters, D = tokens trained so far).\n"
    "\n"
    "options:\n"
    "  --print            print the command of every run that is not complete, run nothing\n"
    "  --launcher PREFIX  with --print: put PREFIX (e.g. 'mpirun -n 4', 'srun') before each\n"
    "  --collect          run nothing, only collect the complete runs\n"
    "  --results PATH     where to write the results (default OUT_DIR/results.jsonl)\n";

/* A number with an optional k/M/B/G/T suffix; the whole string must parse. */
static int parse_number(const char *s, double *v) {
    char *end;
    *v = strtod(s, &end);
    if (end == s) return -1;
    double mult = 1;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K':
            mult = 1e3;
            break;
        case 'M':
            mult = 1e6;
            break;
        case 'B':
        case 'G':
            mult = 1e9;
            break;
        case 'T':
            mult = 1e12;
            break;
        default:
            return -1;
        }
        if (end[1]) return -1;
    }
    *v *= mult;
    return isfinite(*v) ? 0 : -1;
}

/* The option's number (parse_number), or def when absent; 2 after a usage
 * error. */
static int opt_number(const CliSpec *spec, const char *name, double def, double *v) {
    const CliOpt *o = cli_opt(spec, name);
    *v = def;
    if (!o->seen) return 0;
    if (parse_number(o->value, v))
        return cli_usage_error(spec, "%s '%s' is not a number", name, o->value);
    return 0;
}

static int require(const CliSpec *spec, const char *name) {
    if (cli_opt(spec, name)->seen) return 0;
    cli_usage_error(spec, "%s is required", name);
    return cli_usage(spec);
}

static void print_fit(const char *title, const LawFit *f, int cross) {
    const LawParams *p = &f->p;
    printf("%s: %d observations\n", title, f->n_obs);
    printf("  E=%.6g A=%.6g alpha=%.6g B=%.6g eta=%.6g beta=%.6g C=%.6g gamma=%.6g "
           "epsilon=%.6g\n",
           p->E, p->A, p->alpha, p->B, p->eta, p->beta, p->C, p->gamma, p->epsilon);
    if (cross) printf("  F=%.6g mu=%.6g w1=%.6g w2=%.6g\n", p->F, p->mu, p->w1, p->w2);
    printf("  huber loss %.4g, R2 %.6f, rms relative error %.3f%%\n", f->huber_loss, f->r2,
           100 * f->rmse_rel);
    if (f->N_min == f->N_max)
        printf("  WARNING: one model size only: A/N^alpha is not separable from E, so predictions "
               "at other N are meaningless\n");
    if (f->D_min == f->D_max)
        printf("  WARNING: one token count only: the D dependence is not determined\n");
    if (f->r2 < 0.9) printf("  WARNING: R2 %.3f: the law does not describe these data\n", f->r2);
    if (isnan(f->r_rise_from))
        printf("  trend: loss falls with r on all of (0, 1] (at every D >= %.4g)\n", f->D_min);
    else
        printf("  WARNING: loss rises with r for r >= %.3f at D = %.4g (the law should fall "
               "with r; more data at high r may help)\n",
               f->r_rise_from, f->D_min);
    if (isnan(f->holdout_mean_rel)) {
        printf("  held-out error: not computed\n");
        return;
    }
    printf("  leave-one-%s-out error: mean %.3f%%, max %.3f%%\n", cross ? "domain" : "ratio",
           100 * f->holdout_mean_rel, 100 * f->holdout_max_rel);
    for (int g = 0; g < f->n_groups; g++) {
        if (cross)
            printf("    domain %-12s ", f->group_domain[g]);
        else
            printf("    r_domain %-8.4g ", f->group_r[g]);
        if (isnan(f->group_mean_rel[g]))
            printf("(too few rows left to refit)\n");
        else
            printf("mean %.3f%%\n", 100 * f->group_mean_rel[g]);
    }
}

/* A warning when every row of a target has one mixture ratio: the law's
 * terms in r (B r^eta / D^beta, C / (r + epsilon)^gamma) are then fitted
 * to nothing that varies, and predictions at another r_domain are not
 * backed by the data (the cross-domain law groups by domain instead). */
static void note_one_ratio(const char *what, const LawFit *f, int cross) {
    if (cross || f->n_groups != 1) return;
    fprintf(stderr,
            "warning: every row with %s has r_domain = %g: the law's dependence on the "
            "mixture is not determined by these rows, and its predictions at any other "
            "r_domain are not backed by data (add runs at other ratios)%s\n",
            what, f->group_r[0],
            f->group_r[0] == 0 && !strcmp(what, "loss_domain")
                ? "; at r_domain = 0 the domain loss is the base model's, never trained on"
                : "");
}

static int law_cmd_fit(int argc, char **argv) {
    CliOpt opts[] = {
        {"--out", 1, 0, 0},      {"--huber-delta", 1, 0, 0}, {"--starts", 1, 0, 0},
        {"--max-iter", 1, 0, 0}, {"--no-holdout", 0, 0, 0},  {"--cross-domain", 0, 0, 0},
        {NULL, 0, 0, 0}};
    const CliSpec spec = {"law fit", usage_fit, opts, 1, NULL, NULL};
    const char *pos[1] = {NULL};
    int n_pos, rc = cli_parse(&spec, argc, argv, 2, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    const char *results = pos[0];
    const char *out = cli_opt(&spec, "--out")->value;
    if (!results || !out) {
        cli_usage_error(&spec, "%s is required", results ? "--out" : "RESULTS");
        return cli_usage(&spec);
    }
    LawFitOptions fo;
    law_fit_options_default(&fo);
    double delta, starts, iters;
    if (opt_number(&spec, "--huber-delta", fo.huber_delta, &delta) ||
        opt_number(&spec, "--starts", fo.n_starts, &starts) ||
        opt_number(&spec, "--max-iter", fo.max_iter, &iters))
        return 2;
    if (!(delta > 0) || starts < 1 || starts > 10000 || iters < 1 || iters > 1e6)
        return cli_usage_error(&spec, "--huber-delta must be > 0, --starts in [1, 10000], "
                                      "--max-iter in [1, 1e6]");
    fo.huber_delta = delta;
    fo.n_starts = (int)starts;
    fo.max_iter = (int)iters;
    fo.holdout = !cli_opt(&spec, "--no-holdout")->seen;
    fo.cross_domain = cli_opt(&spec, "--cross-domain")->seen;

    char err[LAW_ERR_LEN];
    LawData d;
    if (law_data_load(results, &d, err, sizeof err)) return cli_fail(&spec, "%s", err);
    LawModel m = {0};
    m.huber_delta = fo.huber_delta;
    m.cross = fo.cross_domain;
    int n_general = 0, n_domain = 0;
    for (int i = 0; i < d.n; i++) {
        n_general += d.rows[i].has_general;
        n_domain += d.rows[i].has_domain;
    }
    printf("dapt law fit: %s: %d rows (%d with loss_general, %d with loss_domain)\n", results, d.n,
           n_general, n_domain);
    rc = 0;
    if (n_general) {
        rc = law_fit(&d, LAW_GENERAL, &fo, &m.general, err, sizeof err);
        m.has_general = !rc;
        if (!rc) print_fit("general loss (r = general share)", &m.general, m.cross);
        if (!rc) note_one_ratio("loss_general", &m.general, m.cross);
    }
    if (!rc && n_domain) {
        rc = law_fit(&d, LAW_DOMAIN, &fo, &m.domain, err, sizeof err);
        m.has_domain = !rc;
        if (!rc) print_fit("domain loss (r = domain share)", &m.domain, m.cross);
        if (!rc) note_one_ratio("loss_domain", &m.domain, m.cross);
    }
    law_data_free(&d);
    if (!rc) rc = law_model_save(&m, out, err, sizeof err);
    if (rc) return cli_fail(&spec, "%s", err);
    printf("wrote %s\n", out);
    return 0;
}

/* Notes on stderr when a query extrapolates beyond the fitted data. */
static void note_range(const LawFit *f, double N, double D) {
    if (isfinite(f->N_min) && (N < f->N_min || N > f->N_max))
        fprintf(stderr, "note: N = %.4g is outside the fitted range [%.4g, %.4g]\n", N, f->N_min,
                f->N_max);
    if (isfinite(f->D_min) && (D < f->D_min || D > f->D_max))
        fprintf(stderr, "note: D = %.4g is outside the fitted range [%.4g, %.4g]\n", D, f->D_min,
                f->D_max);
}

static int load_model(const CliSpec *spec, const char *path, LawModel *m) {
    if (!path) {
        cli_usage_error(spec, "LAW.json is required");
        return cli_usage(spec);
    }
    char err[LAW_ERR_LEN];
    if (law_model_load(path, m, err, sizeof err)) return cli_fail(spec, "%s", err);
    return 0;
}

/* A loss for humans: "n/a" when the law has no fit for it. buf: 32 bytes. */
static const char *fmt_loss(double L, char *buf) {
    if (isnan(L)) return "n/a (no fit for this loss)";
    snprintf(buf, 32, "%.6f", L);
    return buf;
}

static void print_json_losses(cJSON *o, double general, double domain) {
    if (isnan(general))
        cJSON_AddNullToObject(o, "loss_general");
    else
        cJSON_AddNumberToObject(o, "loss_general", general);
    if (isnan(domain))
        cJSON_AddNullToObject(o, "loss_domain");
    else
        cJSON_AddNumberToObject(o, "loss_domain", domain);
    char *s = cJSON_PrintUnformatted(o);
    if (s) puts(s);
    free(s);
    cJSON_Delete(o);
}

/* --stdin: "N D r [k1 k2]" a line -> one JSON object a line; a line that is
 * not 3 or 5 numbers, or a point the law refuses, stops with stdin:LINE */
static int predict_lines(const CliSpec *spec, const LawModel *m) {
    char line[1024], err[LAW_ERR_LEN];
    for (long no = 1; fgets(line, sizeof line, stdin); no++) {
        double x[6];
        int n = 0;
        for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
            if (n == 6 || parse_number(tok, &x[n]))
                return cli_fail(spec, "stdin:%ld: expected \"N D r_domain [k1 k2]\" (numbers)", no);
            n++;
        }
        if (n == 0) continue;
        if (n != 3 && n != 5)
            return cli_fail(
                spec, "stdin:%ld: expected 3 or 5 numbers (N D r_domain [k1 k2]), got %d", no, n);
        double lg, ld;
        if (law_predict(m, x[0], x[1], x[2], n == 5 ? x[3] : NAN, n == 5 ? x[4] : NAN, &lg, &ld,
                        err, sizeof err))
            return cli_fail(spec, "stdin:%ld: %s", no, err);
        print_json_losses(cJSON_CreateObject(), lg, ld);
        /* a line out for each line in: a caller may wait for each answer */
        if (fflush(stdout)) return cli_fail(spec, "cannot write the predictions");
    }
    return 0;
}

static int law_cmd_predict(int argc, char **argv) {
    CliOpt opts[] = {{"--N", 1, 0, 0},     {"--D", 1, 0, 0},  {"--r-domain", 1, 0, 0},
                     {"--k1", 1, 0, 0},    {"--k2", 1, 0, 0}, {"--json", 0, 0, 0},
                     {"--stdin", 0, 0, 0}, {NULL, 0, 0, 0}};
    const CliSpec spec = {"law predict", usage_predict, opts, 1, NULL, NULL};
    const char *pos[1] = {NULL};
    int n_pos, rc = cli_parse(&spec, argc, argv, 2, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    const char *path = pos[0];
    if (cli_opt(&spec, "--stdin")->seen) {
        LawModel m;
        if ((rc = load_model(&spec, path, &m))) return rc;
        return predict_lines(&spec, &m);
    }
    double N, D, r, k1, k2;
    if (require(&spec, "--N") || require(&spec, "--D") || require(&spec, "--r-domain") ||
        opt_number(&spec, "--N", NAN, &N) || opt_number(&spec, "--D", NAN, &D) ||
        opt_number(&spec, "--r-domain", NAN, &r) || opt_number(&spec, "--k1", NAN, &k1) ||
        opt_number(&spec, "--k2", NAN, &k2))
        return 2;
    LawModel m;
    if ((rc = load_model(&spec, path, &m))) return rc;
    double lg, ld;
    char err[LAW_ERR_LEN];
    if (law_predict(&m, N, D, r, k1, k2, &lg, &ld, err, sizeof err))
        return cli_fail(&spec, "%s", err);
    note_range(m.has_domain ? &m.domain : &m.general, N, D);
    if (cli_opt(&spec, "--json")->seen) {
        print_json_losses(cJSON_CreateObject(), lg, ld);
        return 0;
    }
    printf("N=%.6g D=%.6g r_domain=%.6g: loss_general %s, loss_domain %s\n", N, D, r,
           fmt_loss(lg, (char[32]){0}), fmt_loss(ld, (char[32]){0}));
    return 0;
}

static int law_cmd_recommend(int argc, char **argv) {
    CliOpt opts[] = {{"--N", 1, 0, 0},
                     {"--D", 1, 0, 0},
                     {"--max-general-rise", 1, 0, 0},
                     {"--base-general-loss", 1, 0, 0},
                     {"--domain-tokens", 1, 0, 0},
                     {"--flat-tol", 1, 0, 0},
                     {"--k1", 1, 0, 0},
                     {"--k2", 1, 0, 0},
                     {"--json", 0, 0, 0},
                     {NULL, 0, 0, 0}};
    const CliSpec spec = {"law recommend", usage_recommend, opts, 1, NULL, NULL};
    const char *pos[1] = {NULL};
    int n_pos, rc = cli_parse(&spec, argc, argv, 2, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    const char *path = pos[0];
    int usage2 = cli_opt(&spec, "--domain-tokens")->seen;
    if (require(&spec, "--N")) return 2;
    if (usage2 && (cli_opt(&spec, "--D")->seen || cli_opt(&spec, "--max-general-rise")->seen ||
                   cli_opt(&spec, "--base-general-loss")->seen))
        return cli_usage_error(&spec, "--domain-tokens (usage 2) sets D = Dd / r and takes "
                                      "no --D, --max-general-rise or --base-general-loss");
    if (!usage2 && (require(&spec, "--D") || require(&spec, "--max-general-rise"))) return 2;
    LawRecommendQuery q;
    if (opt_number(&spec, "--N", NAN, &q.N) || opt_number(&spec, "--D", NAN, &q.D) ||
        opt_number(&spec, "--max-general-rise", NAN, &q.max_general_rise) ||
        opt_number(&spec, "--base-general-loss", NAN, &q.base_general_loss) ||
        opt_number(&spec, "--domain-tokens", 0, &q.domain_tokens) ||
        opt_number(&spec, "--flat-tol", 1e-3, &q.flat_tol) ||
        opt_number(&spec, "--k1", NAN, &q.k1) || opt_number(&spec, "--k2", NAN, &q.k2))
        return 2;
    if (usage2 && !(q.domain_tokens > 0)) {
        return cli_usage_error(&spec, "--domain-tokens must be > 0");
    }
    LawModel m;
    if ((rc = load_model(&spec, path, &m))) return rc;
    LawRecommendation rec;
    char err[LAW_ERR_LEN];
    if (law_recommend(&m, &q, &rec, err, sizeof err)) return cli_fail(&spec, "%s", err);
    note_range(&m.domain, q.N, rec.D);
    if (cli_opt(&spec, "--json")->seen) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "r_domain", rec.r_domain);
        print_json_losses(o, rec.loss_general, rec.loss_domain);
        return 0;
    }
    printf("recommended r_domain %.4f (N=%.6g, D=%.6g)\n", rec.r_domain, q.N, rec.D);
    printf("  predicted loss_domain %.6f, loss_general %s\n", rec.loss_domain,
           fmt_loss(rec.loss_general, (char[32]){0}));
    if (!usage2)
        printf("  general-loss limit %.6f = (1 + %g) * %.6f%s; the limit is %s\n",
               rec.general_limit, q.max_general_rise, rec.base_general_loss,
               isnan(q.base_general_loss) ? " (law at r_domain = 0)" : "",
               rec.constraint_active ? "binding" : "not binding");
    else
        printf("  domain tokens %.6g, so D = Dd / r_domain\n", q.domain_tokens);
    printf("  flatness: r_domain in [%.4f, %.4f] keeps loss_domain within %.3g%% of the optimum\n",
           rec.flat_lo, rec.flat_hi, 100 * q.flat_tol);
    return 0;
}

static const char *run_state_name(LawRunState st) {
    return st == LAW_RUN_COMPLETE ? "complete" : st == LAW_RUN_PARTIAL ? "partial" : "not started";
}

static int law_cmd_sweep(int argc, char **argv) {
    CliOpt opts[] = {{"--print", 0, NULL, 0},
                     {"--launcher", 1, NULL, 0},
                     {"--collect", 0, NULL, 0},
                     {"--results", 1, NULL, 0},
                     {NULL, 0, NULL, 0}};
    const CliSpec spec = {"law sweep", usage_sweep, opts, 1, NULL, NULL};
    const char *pos[1] = {NULL};
    int n_pos, rc = cli_parse(&spec, argc, argv, 2, pos, &n_pos);
    if (rc) return rc == CLI_HELP ? 0 : rc;
    const char *path = pos[0];
    if (!path) {
        cli_usage_error(&spec, "SWEEP.toml is required");
        return cli_usage(&spec);
    }
    int print = cli_opt(&spec, "--print")->seen, collect_only = cli_opt(&spec, "--collect")->seen;
    const CliOpt *launcher = cli_opt(&spec, "--launcher"), *results = cli_opt(&spec, "--results");
    if (launcher->seen && !print) {
        cli_usage_error(&spec, "--launcher goes with --print");
        return cli_usage(&spec);
    }
    if (print && collect_only) {
        cli_usage_error(&spec, "--print and --collect exclude each other");
        return cli_usage(&spec);
    }
    char err[LAW_ERR_LEN * 2];
    LawSweep s;
    LawSweepRun *runs;
    int n_runs;
    if (law_sweep_load(path, &s, err, sizeof err) ||
        law_sweep_expand(&s, &runs, &n_runs, err, sizeof err))
        return cli_fail(&spec, "%s", err);
    char exe[LAW_SWEEP_PATH_LEN];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        cli_fail(&spec, "cannot find the dapt binary (/proc/self/exe)");
        free(runs);
        return 1;
    }
    exe[n] = 0;
    if (print) {
        char cmd[LAW_SWEEP_PATH_LEN * (LAW_SWEEP_MAX_OVERRIDES + 4)];
        for (int i = 0; i < n_runs; i++) {
            LawRunState st;
            if (law_sweep_run_state(&runs[i], &st, err, sizeof err)) {
                cli_fail(&spec, "%s", err);
                free(runs);
                return 1;
            }
            if (st == LAW_RUN_COMPLETE) continue;
            law_sweep_command(exe, &s, &runs[i], cmd, sizeof cmd);
            printf("%s%s%s%s\n", launcher->seen ? launcher->value : "", launcher->seen ? " " : "",
                   cmd, law_start_flag(law_sweep_resumes(&runs[i], st)));
        }
        free(runs);
        return 0;
    }
    if (mkdir_p(s.out_dir, err, sizeof err)) {
        cli_fail(&spec, "%s", err);
        free(runs);
        return 1;
    }
    int n_failed = 0;
    for (int i = 0; i < n_runs && !collect_only; i++) {
        const LawSweepRun *r = &runs[i];
        LawRunState st;
        if (law_sweep_run_state(r, &st, err, sizeof err)) {
            cli_fail(&spec, "%s", err);
            free(runs);
            return 1;
        }
        printf("run %d/%d %s (N %.0f, r_domain %g, %d steps): ", i + 1, n_runs, r->name,
               r->n_params, r->r_domain, r->steps);
        if (st == LAW_RUN_COMPLETE) {
            printf("complete, skipped\n");
            continue;
        }
        char log_path[sizeof s.out_dir + sizeof r->name + 8];
        snprintf(log_path, sizeof log_path, "%s/%s.log", s.out_dir, r->name);
        LawStart how = law_sweep_resumes(r, st);
        printf("%s, %s ...\n", run_state_name(st),
               how == LAW_START_RESUME      ? "resuming"
               : how == LAW_START_OVERWRITE ? "training again (the partial run moved aside)"
                                            : "training");
        fflush(stdout);
        double t0 = now_s();
        int status;
        if (law_sweep_train(exe, &s, r, st, log_path, &status, err, sizeof err)) {
            cli_fail(&spec, "%s", err);
            free(runs);
            return 1;
        }
        if (status) {
            n_failed++;
            cli_fail(&spec, "run %s failed (%s %d); see %s", r->name,
                     status < 0 ? "exit 0 but incomplete metrics, status" : "exit status", status,
                     log_path);
        } else
            printf("  done in %.1f s (log %s)\n", now_s() - t0, log_path);
        fflush(stdout);
    }
    char out[LAW_SWEEP_PATH_LEN + 32];
    if (results->seen)
        snprintf(out, sizeof out, "%s", results->value);
    else
        snprintf(out, sizeof out, "%s/results.jsonl", s.out_dir);
    int n_rows, n_complete;
    rc = law_sweep_collect(runs, n_runs, out, &n_rows, &n_complete, err, sizeof err);
    free(runs);
    if (rc) return cli_fail(&spec, "%s", err);
    printf("results: %s: %d rows from %d of %d runs complete\n", out, n_rows, n_complete, n_runs);
    if (n_failed) return cli_fail(&spec, "%d run(s) failed", n_failed);
    return 0;
}

int cmd_law(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage_law, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "fit")) return law_cmd_fit(argc, argv);
    if (!strcmp(argv[1], "predict")) return law_cmd_predict(argc, argv);
    if (!strcmp(argv[1], "recommend")) return law_cmd_recommend(argc, argv);
    if (!strcmp(argv[1], "sweep")) return law_cmd_sweep(argc, argv);
    fprintf(stderr, "dapt law: unknown subcommand '%s'\n%s", argv[1], usage_law);
    return 2;
}
