/* cli/train.c: `dapt train CONFIG.toml [--section.key=value ...] [--resume]`:
 * the command line, the process group and the config, then train_run
 * (trainer/train.h). The one place of the command that prints usage and
 * error messages and ends a multi-rank job that failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"
#include "trainer/train.h"

static const char USAGE[] =
    "usage: dapt train CONFIG.toml [--section.key=value ...] [--resume | --overwrite]\n\n"
    "Continues pretraining a model (model.init_from: an HF directory or a dapt\n"
    "checkpoint; empty: from scratch) on the domain/general mixture of [data] and\n"
    "[mix]. Writes RUN = run.out_dir/run.name: config.resolved.toml, metrics.jsonl,\n"
    "ckpt/step-NNNNNNNN/, run.json (the run id). docs/config.md lists every key.\n\n"
    "  --section.key=value  override one config key (any number)\n"
    "  --resume             continue from the newest complete checkpoint in RUN\n"
    "  --overwrite          RUN holds another run: move it aside to\n"
    "                       RUN.old-YYYYMMDD-HHMMSS and start a new one (without\n"
    "                       --resume or --overwrite such a RUN is refused)\n"
    "SIGINT/SIGTERM finish the current step, write a checkpoint and exit 0.\n";

int cmd_train(int argc, char **argv) {
    TrainArgs a = {0};
    char **ovr = calloc(argc, sizeof *ovr);
    int n_ovr = 0, n_pos = 0;
    const char *pos[1];
    CliOpt opts[] = {{"--resume", 0, 0, 0}, {"--overwrite", 0, 0, 0}, {NULL, 0, 0, 0}};
    CliSpec spec = {"train", USAGE, opts, 1, ovr, &n_ovr};
    if (!ovr) return cli_fail(&spec, "out of memory");
    int st = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (st == CLI_OK && n_pos == 0) st = cli_usage(&spec);
    if (st != CLI_OK) {
        free(ovr);
        return st == CLI_HELP ? 0 : st;
    }
    const char *path = pos[0];
    a.resume = cli_opt(&spec, "--resume")->seen > 0;
    a.overwrite = cli_opt(&spec, "--overwrite")->seen > 0;
    if (a.resume && a.overwrite) {
        free(ovr);
        return cli_usage_error(&spec, "--resume and --overwrite exclude each other");
    }
    char err[4096] = "";
    if (dist_init(&a.dist, err, sizeof err)) {
        fprintf(stderr, "dapt train: %s\n", err);
        free(ovr);
        return 1;
    }
    int world = dist_world(a.dist), rc = 1;
    /* rank 0 speaks for the job; the others print only errors */
    if (dist_rank(a.dist) > 0 && !freopen("/dev/null", "w", stdout))
        dist_abort(a.dist, 1, "cannot silence stdout");
    if (config_from_args(&a.cfg, path, n_ovr, ovr, err, sizeof err)) {
        fprintf(stderr, "dapt train: %s\n", err);
    } else if ((rc = train_run(&a, err, sizeof err)) && err[0]) {
        fprintf(stderr, "dapt train: %s\n", err);
    }
    rc = rc ? 1 : 0; /* the exit status: library errors may be -1 */
    free(ovr);
    config_free(&a.cfg);
    if (rc && world > 1) dist_abort(a.dist, rc, "dapt train failed (the message above says why)");
    dist_free(a.dist);
    return rc;
}
