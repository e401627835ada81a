/* test_law_sweep.c: the sweep library without training (tools/law/law_sweep.h):
 * SWEEP.toml parsing and every error's file:line:key, the non-embedding
 * parameter count against the model's own tensor table, the expansion into
 * run configs (names, overrides, token budgets, base-config checks), the
 * completeness rule, and the collection of evals from hand-written
 * metrics.jsonl files (resumed runs, step 0, partial runs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "tools/law/law.h"
#include "tools/law/law_sweep.h"
#include "trainer/model.h"

static char dir[64];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* A parse that must fail: the message names the file, the line and the key. */
static void bad_sweep(const char *text, const char *line_key, const char *what) {
    LawSweep s;
    char err[512] = "";
    int rc = law_sweep_parse("S.toml", text, &s, err, sizeof err);
    CHECK(rc == -1, "accepted: %s", text);
    CHECK_MSG(err, line_key);
    CHECK_MSG(err, what);
}

static void test_parse(void) {
    LawSweep s;
    char err[512] = "";
    const char *good = "# a comment\n"
                       "[sweep]\n"
                       "base = \"b.toml\"   # trailing comment\n"
                       "out_dir = \"runs/s\"\n"
                       "name_prefix = \"x_1\"\n"
                       "ratios = [0, 0.25, 1.0]\n"
                       "sizes = [[2, 64, 4, 128], [3, 96, 6, 2, 256]]\n"
                       "tokens = [1_024, 4096]\n";
    CHECK(law_sweep_parse("S.toml", good, &s, err, sizeof err) == 0, "%s", err);
    CHECK(!strcmp(s.base, "b.toml") && !strcmp(s.out_dir, "runs/s") && !strcmp(s.name_prefix, "x_1"),
          "strings %s %s %s", s.base, s.out_dir, s.name_prefix);
    CHECK(s.n_ratios == 3 && s.ratios[0] == 0 && s.ratios[1] == 0.25 && s.ratios[2] == 1, "ratios");
    CHECK(s.n_sizes == 2, "n_sizes %d", s.n_sizes);
    CHECK(s.sizes[0].n_layer == 2 && s.sizes[0].d_model == 64 && s.sizes[0].n_head == 4 &&
              s.sizes[0].n_kv_head == 4 && s.sizes[0].d_ff == 128,
          "size 1");
    CHECK(s.sizes[1].n_layer == 3 && s.sizes[1].n_head == 6 && s.sizes[1].n_kv_head == 2 &&
              s.sizes[1].d_ff == 256,
          "size 2 (5 numbers)");
    CHECK(s.budget_is_tokens && s.n_budgets == 2 && s.budgets[0] == 1024 && s.budgets[1] == 4096,
          "tokens");

    const char *h = "[sweep]\nbase = \"b\"\nout_dir = \"o\"\n";
    char t[512];
    snprintf(t, sizeof t, "%sratios = [0.5, 1.5]\nsteps = [10]\n", h);
    bad_sweep(t, "S.toml:4: ratios", "outside [0, 1]");
    snprintf(t, sizeof t, "%sratios = [0.5, 0.5]\nsteps = [10]\n", h);
    bad_sweep(t, "S.toml:4: ratios", "twice");
    snprintf(t, sizeof t, "%sratios = [0.5]\nsteps = [10, 2.5]\n", h);
    bad_sweep(t, "S.toml:5: steps", "not a positive integer");
    snprintf(t, sizeof t, "%sratios = [0.5]\nsteps = [10]\ntokens = [100]\n", h);
    bad_sweep(t, "S.toml:6: tokens", "either steps or tokens");
    snprintf(t, sizeof t, "%sratios = [0.5]\nsteps = [10]\nsizes = [[2, 64, 4]]\n", h);
    bad_sweep(t, "S.toml:6: sizes", "has 3 numbers");
    snprintf(t, sizeof t, "%sratios = [0.5]\nsteps = [10]\nsizes = [[2, 64, 0, 5]]\n", h);
    bad_sweep(t, "S.toml:6: sizes", "not a positive integer");
    snprintf(t, sizeof t, "%sratio = [0.5]\n", h);
    bad_sweep(t, "S.toml:4: ratio", "unknown key");
    snprintf(t, sizeof t, "%sratios = [0.5,\n  1.0]\n", h);
    bad_sweep(t, "S.toml:4: ratios", "one line");
    snprintf(t, sizeof t, "%sbase = \"c\"\n", h);
    bad_sweep(t, "S.toml:4: base", "given twice (first on line 2)");
    snprintf(t, sizeof t, "%sname_prefix = \"a b\"\n", h);
    bad_sweep(t, "S.toml:4: name_prefix", "letters, digits");
    snprintf(t, sizeof t, "%sratios = [0.5] x\n", h);
    bad_sweep(t, "S.toml:4: ratios", "unexpected text");
    snprintf(t, sizeof t, "%sratios = [abc]\n", h);
    bad_sweep(t, "S.toml:4: ratios",
              "expected a value (a \"string\", number, true/false or [array]) at column 3 "
              "(ratios takes an array of numbers in [0, 1])");
    /* well-formed TOML of the wrong type: what the key takes and what it got */
    snprintf(t, sizeof t, "%sratios = [0.5, \"1\"]\n", h);
    bad_sweep(t, "S.toml:4: ratios", "expected an array of numbers in [0, 1], item 2 is a string");
    snprintf(t, sizeof t, "%sname_prefix = 3\n", h);
    bad_sweep(t, "S.toml:4: name_prefix", "expected a string, got an integer");
    snprintf(t, sizeof t, "%ssteps = 10\n", h);
    bad_sweep(t, "S.toml:4: steps", "expected an array of positive integers, got an integer");
    snprintf(t, sizeof t, "%ssizes = [[2, 64, 4, 128], 5]\n", h);
    bad_sweep(t, "S.toml:4: sizes", "size 2 is an integer");
    snprintf(t, sizeof t, "%ssizes = [[2, 64, true, 128]]\n", h);
    bad_sweep(t, "S.toml:4: sizes", "size 1: item 3 is a boolean");
    snprintf(t, sizeof t, "%sname_prefix = \"a\\qb\"\n", h);
    bad_sweep(t, "S.toml:4: name_prefix", "unknown escape");
    /* TOML's escapes and literal strings, integral floats as budgets (tomllib agrees) */
    const char *toml = "[sweep]\nbase = 'b\\c.toml'\nout_dir = \"o\\u00e9\"\n"
                       "ratios = [1, 0.5,]\nsteps = [1e2, 20]\n";
    CHECK(law_sweep_parse("S.toml", toml, &s, err, sizeof err) == 0, "%s", err);
    CHECK(!strcmp(s.base, "b\\c.toml") && !strcmp(s.out_dir, "o\xc3\xa9"), "strings %s %s", s.base,
          s.out_dir);
    CHECK(s.n_ratios == 2 && s.n_budgets == 2 && s.budgets[0] == 100 && !s.budget_is_tokens,
          "ratios %d budgets %d %lld", s.n_ratios, s.n_budgets, s.budgets[0]);
    bad_sweep("base = \"b\"\n", "S.toml:1: base", "[sweep] table");
    bad_sweep("[model]\n", "S.toml:1: table", "only [sweep]");
    bad_sweep("[sw\n", "S.toml:1: table", "only [sweep]");
    bad_sweep("[sweep] x\n", "S.toml:1: table", "only [sweep]");
    bad_sweep("[sweep]\n[sweep]\n", "S.toml:2: [sweep]", "twice");
    bad_sweep("[sweep]\nout_dir = \"o\"\nratios = [0]\nsteps = [1]\n", "S.toml", "base");
    bad_sweep("[sweep]\nbase = \"b\"\nout_dir = \"o\"\nsteps = [1]\n", "S.toml", "ratios");
    bad_sweep("[sweep]\nbase = \"b\"\nout_dir = \"o\"\nratios = [1]\n", "S.toml", "steps or tokens");
}

/* law_sweep_count_params == all parameters minus the embedding and head
 * tensors of the model the trainer builds: exact integer counts. */
static void count_case(Arch arch, int L, int C, int H, int KV, int F, int tie, int qkv_bias) {
    ModelConfig mc = model_config_default(arch);
    mc.n_layer = L, mc.d_model = C, mc.n_head = H, mc.n_kv_head = KV, mc.d_ff = F;
    mc.vocab_size = 97, mc.max_seq_len = 16, mc.tie_embeddings = tie, mc.qkv_bias = qkv_bias;
    char err[512] = "";
    Model *m = model_create(&mc, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "%s", err);
    if (!m) return;
    size_t emb = 0;
    const char *names[] = {"transformer.wte.weight", "transformer.wpe.weight",
                           "model.embed_tokens.weight", "lm_head.weight"};
    for (int i = 0; i < 4; i++) {
        int t = model_find_tensor(m, names[i]);
        if (t >= 0) emb += model_tensor(m, t)->numel;
    }
    double want = (double)(model_num_params(m) - emb), got = law_sweep_count_params(&mc);
    CHECK(got == want, "%s L%d C%d H%d KV%d F%d tie %d bias %d: %.0f vs model's %.0f",
          model_arch_name(arch), L, C, H, KV, F, tie, qkv_bias, got, want);
    model_free(m);
}

static void test_count(void) {
    count_case(ARCH_LLAMA, 2, 32, 4, 2, 48, 0, 0);
    count_case(ARCH_LLAMA, 3, 48, 6, 6, 64, 1, 1);
    count_case(ARCH_LLAMA, 1, 16, 4, 1, 40, 1, 0);
    count_case(ARCH_GPT2, 2, 32, 4, 4, 128, 1, 0);
    count_case(ARCH_GPT2, 1, 24, 2, 2, 40, 0, 0);
}

static const char *base_toml = "[run]\nname = \"b\"\nout_dir = \"x\"\n"
                               "[model]\narch = \"llama\"\nn_layer = 1\nn_head = 2\nn_kv_head = 2\n"
                               "d_model = 16\nd_ff = 32\nvocab_size = 64\nmax_seq_len = 16\n"
                               "[data]\nseq_len = 8\ndomain = [\"d*\"]\ngeneral = [\"g*\"]\n"
                               "val_domain = [\"vd\"]\nval_general = [\"vg\"]\n%s"
                               "[train]\nmicro_batch = 2\nglobal_batch = 4\nsteps = 5\nwarmup_steps = 1\n";

static void write_base(const char *name, const char *mix) {
    char path[128], text[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(text, sizeof text, base_toml, mix);
    write_file(path, text);
}

static int expand(const char *sweep_body, LawSweep *s, LawSweepRun **runs, int *n, char *err,
                  size_t err_len) {
    char text[2048];
    snprintf(text, sizeof text, "[sweep]\nout_dir = \"%s/out\"\n%s", dir, sweep_body);
    if (law_sweep_parse("S.toml", text, s, err, err_len)) return -1;
    return law_sweep_expand(s, runs, n, err, err_len);
}

static void test_expand(void) {
    write_base("base.toml", "");
    write_base("sched.toml", "[mix]\nschedule = [[0, 0.1], [1, 0.5]]\n");
    char body[1024], err[1024] = "";
    LawSweep s;
    LawSweepRun *runs = NULL;
    int n = 0;
    snprintf(body, sizeof body,
             "base = \"%s/base.toml\"\nname_prefix = \"t\"\nratios = [0.1, 1]\n"
             "sizes = [[1, 16, 2, 32], [2, 32, 4, 1, 64]]\ntokens = [64, 320]\n",
             dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == 0, "%s", err);
    CHECK(n == 8, "n_runs %d", n);
    if (n == 8) {
        /* order: size, budget, ratio; 32 tokens a step (global_batch 4 x seq_len 8) */
        CHECK(!strcmp(runs[0].name, "t-L1-d16-h2-f32-s2-r0.100"), "%s", runs[0].name);
        CHECK(!strcmp(runs[3].name, "t-L1-d16-h2-f32-s10-r1.000"), "%s", runs[3].name);
        CHECK(!strcmp(runs[7].name, "t-L2-d32-h4-kv1-f64-s10-r1.000"), "%s", runs[7].name);
        CHECK(runs[0].steps == 2 && runs[3].steps == 10 && runs[0].tokens_per_step == 32, "steps");
        CHECK(runs[1].r_domain == 1 && runs[0].r_domain == 0.1, "ratios");
        /* llama, non-embedding: L * (2C + 2*C*C + 2*kvd*C + 3*F*C) + C */
        CHECK(runs[0].n_params == 1 * (32 + 2 * 256 + 2 * 16 * 16 + 3 * 32 * 16) + 16, "N %.0f",
              runs[0].n_params);
        CHECK(runs[4].n_params == 2 * (64 + 2 * 1024 + 2 * 8 * 32 + 3 * 64 * 32) + 32, "N %.0f",
              runs[4].n_params);
        int has = 0;
        for (int i = 0; i < runs[5].n_overrides; i++) {
            has += !strcmp(runs[5].overrides[i], "--mix.domain_frac=1");
            has += !strcmp(runs[5].overrides[i], "--model.n_kv_head=1");
            has += !strcmp(runs[5].overrides[i], "--train.steps=2");
            has += !strcmp(runs[5].overrides[i], "--run.name=t-L2-d32-h4-kv1-f64-s2-r1.000");
        }
        CHECK(has == 4, "run 6 overrides (%d of 4 found)", has);
        char out[256];
        snprintf(out, sizeof out, "%s/out/t-L1-d16-h2-f32-s2-r0.100", dir);
        CHECK(!strcmp(runs[0].run_dir, out), "run_dir %s", runs[0].run_dir);
        char cmd[8192];
        law_sweep_command("/bin/dapt x", &s, &runs[0], cmd, sizeof cmd);
        CHECK_MSG(cmd, "'/bin/dapt x' train ");
        CHECK_MSG(cmd, " --mix.domain_frac=0.1 --train.steps=2 --model.n_layer=1");
    }
    free(runs);
    runs = NULL;

    snprintf(body, sizeof body, "base = \"%s/base.toml\"\nratios = [0.5]\ntokens = [100]\n", dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == -1, "tokens not a multiple of 32");
    CHECK_MSG(err, "100 is not a multiple of the 32 tokens");
    snprintf(body, sizeof body, "base = \"%s/sched.toml\"\nratios = [0.5]\nsteps = [3]\n", dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == -1, "a base with a mix schedule");
    CHECK_MSG(err, "mix.schedule");
    snprintf(body, sizeof body, "base = \"%s/missing.toml\"\nratios = [0.5]\nsteps = [3]\n", dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == -1, "a missing base config");
    CHECK_MSG(err, "missing.toml");
    /* the trainer's own validation of each run: 3 heads do not divide d_model 16 */
    snprintf(body, sizeof body,
             "base = \"%s/base.toml\"\nratios = [0.5]\nsteps = [3]\nsizes = [[1, 16, 3, 32]]\n", dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == -1, "n_head 3, d_model 16");
    CHECK_MSG(err, "run sweep-L1-d16-h3-f32-s3-r0.500");
    snprintf(body, sizeof body, "base = \"%s/base.toml\"\nratios = [0.1, 0.1001]\nsteps = [3]\n", dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == -1, "names collide");
    CHECK_MSG(err, "share the name");
}

static void write_metrics(const char *run_dir, const char *text) {
    char p[1200];
    mkdir(run_dir, 0755);
    snprintf(p, sizeof p, "%s/metrics.jsonl", run_dir);
    write_file(p, text);
}

static void test_collect(void) {
    char body[512], err[1024] = "";
    LawSweep s;
    LawSweepRun *runs = NULL;
    int n = 0;
    snprintf(body, sizeof body, "base = \"%s/base.toml\"\nratios = [0, 0.5, 1]\nsteps = [4]\n", dir);
    CHECK(expand(body, &s, &runs, &n, err, sizeof err) == 0, "%s", err);
    if (n != 3) return free(runs);
    char d[128];
    snprintf(d, sizeof d, "%s/out", dir);
    mkdir(d, 0755);
    LawRunState st;
    CHECK(law_sweep_run_state(&runs[0], &st, err, sizeof err) == 0 && st == LAW_RUN_NONE, "none");
    /* run 0: complete, but resumed at step 2: the second records of steps 2 and 4 win */
    write_metrics(runs[0].run_dir,
                  "{\"type\":\"eval\",\"step\":0,\"tokens\":0,\"split\":\"val/domain\",\"loss\":9}\n"
                  "{\"type\":\"eval\",\"step\":0,\"tokens\":0,\"split\":\"val/general\",\"loss\":9}\n"
                  "{\"type\":\"train\",\"step\":1,\"tokens\":32,\"loss\":8}\n"
                  "{\"type\":\"train\",\"step\":2,\"tokens\":64,\"loss\":7}\n"
                  "{\"type\":\"eval\",\"step\":2,\"tokens\":64,\"split\":\"val/domain\",\"loss\":5.5}\n"
                  "{\"type\":\"eval\",\"step\":2,\"tokens\":64,\"split\":\"val/general\",\"loss\":4.5}\n"
                  "{\"type\":\"train\",\"step\":3,\"tokens\":96,\"loss\":6}\n"
                  "{\"type\":\"eval\",\"step\":4,\"tokens\":128,\"split\":\"val/dom" /* cut short */
                  "\n"
                  "{\"type\":\"eval\",\"step\":2,\"tokens\":64,\"split\":\"val/domain\",\"loss\":5.25}\n"
                  "{\"type\":\"eval\",\"step\":2,\"tokens\":64,\"split\":\"val/general\",\"loss\":4.25}\n"
                  "{\"type\":\"train\",\"step\":3,\"tokens\":96,\"loss\":6}\n"
                  "{\"type\":\"train\",\"step\":4,\"tokens\":128,\"loss\":5}\n"
                  "{\"type\":\"eval\",\"step\":4,\"tokens\":128,\"split\":\"val/domain\",\"loss\":4.125}\n"
                  "{\"type\":\"eval\",\"step\":4,\"tokens\":128,\"split\":\"val/general\",\"loss\":3.875}\n");
    /* run 1: stopped at step 3 (partial); run 2: trained to the end but no final eval yet */
    write_metrics(runs[1].run_dir,
                  "{\"type\":\"train\",\"step\":3,\"tokens\":96,\"loss\":6}\n"
                  "{\"type\":\"eval\",\"step\":2,\"tokens\":64,\"split\":\"val/domain\",\"loss\":5}\n"
                  "{\"type\":\"eval\",\"step\":2,\"tokens\":64,\"split\":\"val/general\",\"loss\":5}\n");
    write_metrics(runs[2].run_dir,
                  "{\"type\":\"train\",\"step\":4,\"tokens\":128,\"loss\":6}\n"
                  "{\"type\":\"eval\",\"step\":4,\"tokens\":128,\"split\":\"val/domain\",\"loss\":5}\n");
    CHECK(law_sweep_run_state(&runs[0], &st, err, sizeof err) == 0 && st == LAW_RUN_COMPLETE,
          "complete: %d %s", st, err);
    CHECK(law_sweep_run_state(&runs[1], &st, err, sizeof err) == 0 && st == LAW_RUN_PARTIAL,
          "partial: %d", st);
    CHECK(law_sweep_run_state(&runs[2], &st, err, sizeof err) == 0 && st == LAW_RUN_PARTIAL,
          "no final eval: %d", st);
    char out[128];
    snprintf(out, sizeof out, "%s/results.jsonl", dir);
    int n_rows = -1, n_complete = -1;
    CHECK(law_sweep_collect(runs, n, out, &n_rows, &n_complete, err, sizeof err) == 0, "%s", err);
    CHECK(n_rows == 2 && n_complete == 1, "rows %d complete %d", n_rows, n_complete);
    LawData data;
    CHECK(law_data_load(out, &data, err, sizeof err) == 0, "%s", err);
    if (data.n == 2) {
        double want_N = runs[0].n_params;
        CHECK(data.rows[0].N == want_N && data.rows[0].D == 64 && data.rows[0].r_domain == 0,
              "row 1: N %g D %g r %g", data.rows[0].N, data.rows[0].D, data.rows[0].r_domain);
        CHECK(data.rows[0].loss_domain == 5.25 && data.rows[0].loss_general == 4.25,
              "row 1 losses (the resumed run's records win): %g %g", data.rows[0].loss_domain,
              data.rows[0].loss_general);
        CHECK(data.rows[1].D == 128 && data.rows[1].loss_domain == 4.125 &&
                  data.rows[1].loss_general == 3.875,
              "row 2");
        law_data_free(&data);
    } else
        CHECK(0, "%d rows loaded", data.n);

    /* an eval record without a loss is an error naming the file and line */
    write_metrics(runs[1].run_dir,
                  "{\"type\":\"train\",\"step\":4,\"tokens\":128,\"loss\":6}\n"
                  "{\"type\":\"eval\",\"step\":4,\"tokens\":128,\"split\":\"val/domain\"}\n");
    CHECK(law_sweep_collect(runs, n, out, &n_rows, &n_complete, err, sizeof err) == -1,
          "eval without loss");
    CHECK_MSG(err, "metrics.jsonl:2:");
    free(runs);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dapt-law-sweep-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_parse();
    test_count();
    test_expand();
    test_collect();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!check_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
