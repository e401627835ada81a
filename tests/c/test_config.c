/* test_config.c: the config system: defaults are in range and valid, a file
 * using every value form parses to the expected values, every error class
 * gives a message with file, line and key, overrides follow the same rules,
 * the resolved TOML parses back to the same values, and mutated files never
 * crash the parser (run under ASan). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "trainer/config.h"
#include "trainer/config_keys.h"
#include "trainer/rng.h"

static const char *full =
    "# a config using every value form\n"
    "[run]\n"
    "name = \"med-cpt.v1\"   # trailing comment\n"
    "out_dir = 'runs/lit # not a comment; nor this'\n"
    "seed = 1_234\n"
    "device = \"cuda\"\n"
    "\n"
    "[model]\n"
    "  arch = \"llama\"\n"
    "  n_layer = 4\n"
    "\tn_head = 8\n"
    "n_kv_head = 2\n"
    "d_model = 256\n"
    "d_ff = 688\n"
    "vocab_size = 32000\n"
    "max_seq_len = 2048\n"
    "rope_theta = 5e5\n"
    "norm_eps = 1e-6\n"
    "tie_embeddings = true\n"
    "qkv_bias = false\n"
    "[data]\n"
    "seq_len = 1024\n"
    "domain = [\"/data/med/*.tok.zst\", \"/data/bio/\\u00e9t\\u00e9-*.tok.zst\",]\n"
    "general = [ \"/data/web/*.tok.zst\" ]\n"
    "val_domain = [\"/data/med/val.tok.zst\"]\n"
    "val_general = []\n"
    "[mix]\n"
    "schedule = [[0.0, 0.3], [0.85, 0.3], [0.85, 0.6], [1, 0.6]]\n"
    "[train]\n"
    "micro_batch = 4\n"
    "global_batch = 32\n"
    "steps = 2000\n"
    "lr = 0.0003\n"
    "min_lr = 3e-05\n"
    "warmup_steps = 50\n"
    "lr_schedule = \"wsd\"\n"
    "decay_frac = 0.1\n"
    "weight_decay = 0.1\n"
    "grad_clip = 1\n"
    "beta1 = 0.9\n"
    "beta2 = 0.95\n"
    "eps = 1e-8\n"
    "on_nonfinite = \"skip\"\n"
    "[eval]\n"
    "every = 200\n"
    "batches = 10\n"
    "[ckpt]\n"
    "every = 500\n"
    "keep = 2\n";

static void test_defaults(void) {
    char err[512];
    CHECK(config_num_keys <= (int)(sizeof(((Config *)0)->origin) / sizeof(int)));
    Config c;
    memset(&c, 0, sizeof c);
    for (int i = 0; i < config_num_keys; i++) { /* each default parses and is in range */
        Value v;
        int ok = value_parse(config_keys[i].def, &v, err, sizeof err) == 0 &&
                 key_assign(&c, &config_keys[i], &v, err, sizeof err) == 0;
        if (!ok) fprintf(stderr, "default of %s: %s\n", config_key_name(i), err);
        CHECK(ok);
        value_free(&v);
        const char *type, *def, *range;
        CHECK(config_key_info(i, &type, &def, &range) != NULL && strlen(range) > 0);
    }
    config_free(&c);
    config_init(&c);
    CHECK(config_validate(&c, err, sizeof err) == 0);
    CHECK(!strcmp(c.run.device, "cpu") && c.train.micro_batch == 8 && c.train.lr == 3e-4 &&
          c.model.n_layer == 12);
    config_free(&c);
}

static void test_full_file(void) {
    Config c;
    char err[512];
    config_init(&c);
    int rc = config_load_string(&c, full, "full.toml", err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK(rc == 0);
    CHECK(config_validate(&c, err, sizeof err) == 0);
    CHECK(!strcmp(c.run.name, "med-cpt.v1"));
    CHECK(!strcmp(c.run.out_dir, "runs/lit # not a comment; nor this"));
    CHECK(c.run.seed == 1234 && !strcmp(c.run.device, "cuda"));
    CHECK(c.model.n_layer == 4 && c.model.n_head == 8 && c.model.n_kv_head == 2);
    CHECK(c.model.rope_theta == 5e5 && c.model.norm_eps == 1e-6 && c.model.tie_embeddings == 1);
    CHECK(c.data.domain.n == 2 && !strcmp(c.data.domain.items[1], "/data/bio/\xc3\xa9t\xc3\xa9-*.tok.zst"));
    CHECK(c.data.general.n == 1 && c.data.val_general.n == 0);
    CHECK(c.mix.n_schedule == 4 && c.mix.schedule[2].progress == 0.85 && c.mix.schedule[3].fraction == 0.6);
    CHECK(c.train.grad_clip == 1.0 && c.train.eps == 1e-8 && !strcmp(c.train.lr_schedule, "wsd"));
    CHECK(c.eval.every == 200 && c.ckpt.keep == 2);
    ModelConfig m;
    CHECK(config_to_model_config(&c, &m, err, sizeof err) == 0);
    CHECK(m.arch == ARCH_LLAMA && m.n_kv_head == 2 && m.d_ff == 688 && m.rope_theta == 5e5f &&
          m.norm_eps == 1e-6f && m.tie_embeddings);
    LrSchedule s;
    CHECK(config_to_schedule(&c, &s, err, sizeof err) == 0);
    CHECK(s.kind == SCHED_WSD && s.total_steps == 2000 && s.warmup_steps == 50 && s.decay_frac == 0.1f);
    AdamWConfig a = config_to_adamw(&c);
    CHECK(a.beta2 == 0.95f && a.grad_clip == 1.0f && a.weight_decay == 0.1f);
    config_free(&c);
}

/* `text` must be refused with a message containing each of the substrings */
static void refuse(const char *text, const char *s1, const char *s2) {
    Config c;
    char err[1024] = "";
    config_init(&c);
    int rc = config_load_string(&c, text, "cfg.toml", err, sizeof err);
    if (!rc) rc = config_validate(&c, err, sizeof err);
    CHECK(rc != 0);
    CHECK_MSG(err, s1);
    if (s2) CHECK_MSG(err, s2);
    config_free(&c);
}

static void test_errors(void) {
    /* bad type, out of range, choices */
    refuse("[train]\n\nlr = \"high\"\n", "cfg.toml:3: train.lr: expected a number in (0, 10], got a string", NULL);
    refuse("[train]\nmicro_batch = 0\n", "cfg.toml:2: train.micro_batch: expected an integer in [1, 65536], got 0", NULL);
    refuse("[train]\nsteps = 1.5\n", "train.steps: expected an integer", "got a float");
    refuse("[train]\nbeta2 = 1.0\n", "train.beta2: expected a number in [0, 1), got 1", NULL);
    refuse("[run]\ndevice = \"tpu\"\n", "cfg.toml:2: run.device: expected one of \"cpu/cuda/cuda-fp32\", got \"tpu\"", NULL);
    refuse("[model]\ntie_embeddings = 1\n", "model.tie_embeddings: expected true or false, got an integer", NULL);
    refuse("[run]\nname = \"a/b\"\n", "run.name", "directory");
    refuse("[data]\ndomain = \"x\"\n", "data.domain: expected an array of strings, got a string", NULL);
    refuse("[data]\ndomain = [\"a\", 3]\n", "data.domain", "item 1 is an integer");
    refuse("[mix]\nschedule = [[0.0, 0.3], [0.5]]\n", "mix.schedule: point 1", "two numbers");
    refuse("[mix]\nschedule = [[0.0, 1.3]]\n", "point 0: [0, 1.3]", "[0, 1]");
    refuse("[mix]\nschedule = [[0.5, 0.3], [0.2, 0.6]]\n", "point 1: progress 0.2 comes before", "sorted");
    /* unknown key / section with suggestions */
    refuse("[train]\nmicro_bach = 4\n", "cfg.toml:2: unknown key 'micro_bach' in [train] (did you mean 'micro_batch'?)", NULL);
    refuse("[train]\nseq_len = 4\n", "unknown key 'seq_len' in [train] (did you mean [data] seq_len?)", NULL);
    refuse("[train]\nfrobnicate = 4\n", "unknown key 'frobnicate' in [train] (keys: micro_batch", NULL);
    refuse("[run]\nname = \"x\"\n[trian]\nlr = 1\n", "cfg.toml:3: unknown section [trian] (did you mean [train]?)", NULL);
    refuse("[zzzzzzzz]\n", "cfg.toml:1: unknown section [zzzzzzzz] (sections:", NULL);
    refuse("lr = 1\n", "cfg.toml:1: key 'lr' before any [section]", NULL);
    /* syntax */
    refuse("[train]\nlr = 0.1\nsteps 100\n", "cfg.toml:3: expected 'key = value'", NULL);
    refuse("[run]\nname = \"abc\n", "cfg.toml:2: run.name: unterminated string", NULL);
    refuse("[run]\nname = \"a\\qb\"\n", "run.name: unknown escape", NULL);
    refuse("[train]\nsteps = 0100\n", "train.steps: leading zeros", NULL);
    refuse("[train]\nlr = .5\n", "train.lr: expected a value", NULL);
    refuse("[train]\nlr = 1.\n", "train.lr: expected a digit", NULL);
    refuse("[train]\nlr = nan\n", "inf and nan", NULL);
    refuse("[train]\nsteps = 10 20\n", "train.steps: unexpected text after the value at column 5", NULL);
    refuse("[data]\ndomain = [\"a\",\n  \"b\"]\n", "cfg.toml:2: data.domain: unterminated array (arrays must be on one line)", NULL);
    refuse("[train]\nlr =\n", "train.lr: missing value", NULL);
    refuse("[train\n", "cfg.toml:1: bad section header", NULL);
    refuse("[train] x\n", "bad section header", NULL);
    refuse("[model]\ninit_optimizer = true\n", "model.init_optimizer (cfg.toml:2) = true needs model.init_from", NULL);
    refuse("[[train]]\n", "cfg.toml:1: bad header '[[train]]'", "the only array of tables is [[data.sources]]");
    refuse("[train]\n\"lr\" = 1\n", "bad key", NULL);
    refuse("[train]\ntrain.lr = 1\n", "bad key", NULL);
    refuse("[run]\nname = {a = 1}\n", "inline tables", NULL);
    /* duplicates */
    refuse("[train]\nlr = 0.1\n\nlr = 0.2\n", "cfg.toml:4: train.lr is set twice (first on line 2)", NULL);
    refuse("[train]\nlr = 0.1\n[eval]\nevery = 1\n[train]\nsteps = 3\n",
           "cfg.toml:5: section [train] appears twice (first on line 1)", NULL);
    /* cross-key rules name both keys and where they were set */
    refuse("[train]\nmicro_batch = 6\nglobal_batch = 64\n",
           "train.global_batch (cfg.toml:3) = 64 must be a multiple of train.micro_batch (cfg.toml:2) = 6", NULL);
    refuse("[data]\nseq_len = 4096\n", "data.seq_len (cfg.toml:2) = 4096 is longer than the model's max_seq_len (1024", NULL);
    refuse("[mix]\ndomain_frac = 0.2\nschedule = [[0, 0.1]]\n", "mix.domain_frac (cfg.toml:2) and mix.schedule (cfg.toml:3) are both given", NULL);
    refuse("[mix]\nupsample_start = 0.9\n", "mix.upsample_start (cfg.toml:2) needs mix.upsample_domain_frac", NULL);
    refuse("[mix]\nschedule = [[0, 0.1]]\nupsample_start = 0.9\nupsample_domain_frac = 0.5\n",
           "goes with mix.domain_frac", NULL);
    refuse("[mix]\nschedule = []\n", "mix.schedule (cfg.toml:2) is empty", NULL);
    refuse("[model]\ninit_from = \"/models/tinyllama\"\nn_layer = 4\n",
           "model.n_layer (cfg.toml:3) is set, but model.init_from", NULL);
    refuse("[train]\nsteps = 10\nwarmup_steps = 20\n", "[train]: warmup_steps must be in [0, steps=10]", NULL);
    refuse("[train]\nlr = 1e-4\nmin_lr = 1e-3\n", "[train]: min_lr", NULL);
    refuse("[model]\nn_head = 12\nn_kv_head = 5\n", "[model]: n_head (12) must be divisible by n_kv_head (5)", NULL);
    refuse("[model]\narch = \"gpt2\"\nn_kv_head = 4\n", "[model]: gpt2 has no grouped-query attention", NULL);
    /* the newer architectures' keys: choices, ranges, the model rules, and
     * init_from takes them from its config.json */
    refuse("[model]\nrope_scaling = \"yarn\"\n", "model.rope_scaling", "none/linear/llama3");
    refuse("[model]\nrope_scaling = \"llama3\"\nrope_low_freq_factor = 4.0\n",
           "[model]: llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor", NULL);
    refuse("[model]\nhead_dim = 33\n", "[model]: RoPE needs an even head size (head_dim = 33)", NULL);
    refuse("[model]\nqk_norm = true\nqkv_bias = true\n", "[model]: qk_norm with qkv_bias", NULL);
    refuse("[model]\narch = \"gpt2\"\nn_kv_head = 12\nqk_norm = true\n", "qk_norm is a llama option",
           NULL);
    refuse("[model]\ninit_from = \"/models/qwen3\"\nqk_norm = true\n",
           "model.qk_norm (cfg.toml:3) is set, but model.init_from", NULL);
}

/* issue 28: hostile configs. A number of 127 digits then "e-5" wrote its
 * exponent sign one byte past the parser's buffer (ASan: stack overflow);
 * a NUL byte, raw or as \u0000, silently cut the file or the string. */
static void test_hostile(void) {
    Config c;
    char err[1024] = "", arg[256];
    int n = snprintf(arg, sizeof arg, "--train.lr=");
    for (int d = 126; d <= 127; d++) {
        snprintf(arg + n, sizeof arg - (size_t)n, "1%0*de-5", d - 1, 0);
        char *ov[] = {arg};
        err[0] = 0;
        CHECK(config_from_args(&c, NULL, 1, ov, err, sizeof err) != 0);
        CHECK_MSG(err, "number too long");
        config_free(&c);
    }
    refuse("[run]\nname = \"a\\u0000b\"\n", "cfg.toml:2: run.name: \\u0000", "not allowed");
    char path[] = "/tmp/dapt-test-config-nul-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    static const char text[] = "[train]\nlr = 0.1\n\0steps = 3\n";
    CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
    close(fd);
    config_init(&c);
    err[0] = 0;
    CHECK(config_load(&c, path, err, sizeof err) != 0);
    CHECK_MSG(err, ":3: a NUL byte at byte offset 17");
    CHECK_MSG(err, path);
    config_free(&c);
    unlink(path);
}

/* Qwen3- and Llama-3.1-shaped models from [model] keys */
static void test_arch_keys(void) {
    Config c;
    char err[1024] = "";
    config_init(&c);
    CHECK(config_load_string(&c, "[model]\nn_head = 8\nn_kv_head = 4\nd_model = 256\n"
                                 "head_dim = 64\nqk_norm = true\nrope_scaling = \"llama3\"\n"
                                 "rope_factor = 32.0\nrope_original_max_seq_len = 4096\n",
                             "cfg.toml", err, sizeof err) == 0);
    ModelConfig m;
    CHECK(config_to_model_config(&c, &m, err, sizeof err) == 0);
    CHECK(m.head_dim == 64 && model_head_dim(&m) == 64 && m.qk_norm &&
          m.rope_scaling == ROPE_SCALING_LLAMA3 && m.rope_factor == 32.0f &&
          m.rope_low_freq_factor == 1.0f && m.rope_high_freq_factor == 4.0f &&
          m.rope_original_max_pos == 4096);
    config_free(&c);
    config_init(&c); /* the defaults: no scaling, d_model / n_head, no norms */
    CHECK(config_to_model_config(&c, &m, err, sizeof err) == 0);
    CHECK(m.head_dim == 0 && !m.qk_norm && m.rope_scaling == ROPE_SCALING_NONE);
    char *ov[] = {"--model.rope_scaling=linear", "--model.rope_factor=4"};
    config_free(&c);
    CHECK(config_from_args(&c, NULL, 2, ov, err, sizeof err) == 0);
    CHECK(config_to_model_config(&c, &m, err, sizeof err) == 0);
    CHECK(m.rope_scaling == ROPE_SCALING_LINEAR && m.rope_factor == 4.0f);
    config_free(&c);
}

static void test_overrides(void) {
    Config c;
    char err[1024];
    char *ok[] = {"--train.lr=1e-4", "--run.name=trial3", "run.out_dir=\"x y\"",
                  "--data.domain=[\"a/*.zst\", \"b/*.zst\"]", "--mix.schedule=[[0, 0.3], [1, 0.6]]",
                  "--model.tie_embeddings=true", "--train.steps=500"};
    CHECK(config_from_args(&c, NULL, 7, ok, err, sizeof err) == 0);
    CHECK(c.train.lr == 1e-4 && !strcmp(c.run.name, "trial3") && !strcmp(c.run.out_dir, "x y"));
    CHECK(c.data.domain.n == 2 && !strcmp(c.data.domain.items[1], "b/*.zst"));
    CHECK(c.mix.n_schedule == 2 && c.model.tie_embeddings && c.train.steps == 500);
    /* an override replaces a file value; the origin says "command line" */
    CHECK(config_override(&c, "--train.global_batch=10", err, sizeof err) == 0);
    CHECK(config_validate(&c, err, sizeof err) != 0);
    CHECK_MSG(err, "train.global_batch (command line) = 10 must be a multiple of train.micro_batch (default) = 8");
    config_free(&c);

    struct { const char *arg, *msg; } bad[] = {
        {"--train.lrr=1", "override '--train.lrr=1': unknown key 'lrr' in [train] (did you mean 'lr'?)"},
        {"--trian.lr=1", "unknown section [trian] (did you mean [train]?)"},
        {"--train.lr=abc", "override --train.lr: expected a value"},
        {"--train.lr=-1", "override --train.lr: expected a number in (0, 10], got -1"},
        {"--train.steps=\"5\"", "expected an integer in [1, 1000000000], got a string"},
        {"--run.device=tpu", "expected one of \"cpu/cuda/cuda-fp32\", got \"tpu\""},
        {"--bogus", "expected --section.key=value"},
        {"--train.lr", "expected --section.key=value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        config_init(&c);
        CHECK(config_override(&c, bad[i].arg, err, sizeof err) != 0);
        CHECK_MSG(err, bad[i].msg);
        config_free(&c);
    }
}

static void test_line_endings(void) {
    Config c;
    char err[512];
    config_init(&c);
    CHECK(config_load_string(&c, "[train]\r\nlr = 0.1\r\n# c\r\nsteps = 7", "crlf.toml", err, sizeof err) == 0);
    CHECK(c.train.lr == 0.1 && c.train.steps == 7);
    config_free(&c);
    config_init(&c); /* errors count lines across CRLF too */
    CHECK(config_load_string(&c, "[train]\r\n\r\nlr = x\r\n", "crlf.toml", err, sizeof err) != 0);
    CHECK_MSG(err, "crlf.toml:3: train.lr");
    config_free(&c);
}

static void test_mix_points(void) {
    Config c;
    char err[512];
    MixPoint p[CONFIG_MAX_MIX_POINTS];
    config_init(&c);
    CHECK(config_load_string(&c, "[mix]\ndomain_frac = 0.25\n", "a", err, sizeof err) == 0);
    CHECK(config_mix_points(&c, p, CONFIG_MAX_MIX_POINTS) == 2 && p[0].fraction == 0.25 && p[1].progress == 1.0);
    config_free(&c);
    config_init(&c);
    CHECK(config_load_string(&c, "[mix]\ndomain_frac = 0.3\nupsample_start = 0.85\nupsample_domain_frac = 0.6\n",
                             "b", err, sizeof err) == 0);
    CHECK(config_validate(&c, err, sizeof err) == 0);
    CHECK(config_mix_points(&c, p, CONFIG_MAX_MIX_POINTS) == 4);
    CHECK(p[1].progress == 0.85 && p[1].fraction == 0.3 && p[2].progress == 0.85 && p[2].fraction == 0.6 &&
          p[3].fraction == 0.6);
    config_free(&c);
}

/* resolved TOML -> parse -> resolved TOML is a fixed point with equal values */
static void test_round_trip(void) {
    Config a, b;
    char err[512];
    config_init(&a);
    CHECK(config_load_string(&a, full, "full.toml", err, sizeof err) == 0);
    CHECK(config_override(&a, "--run.out_dir=with\"quote\\and\ttab", err, sizeof err) == 0);
    char *t1 = config_to_toml(&a);
    config_init(&b);
    int rc = config_load_string(&b, t1, "resolved.toml", err, sizeof err);
    if (rc) fprintf(stderr, "%s\n%s\n", err, t1);
    CHECK(rc == 0 && config_validate(&b, err, sizeof err) == 0);
    char *t2 = config_to_toml(&b);
    CHECK(t1 && t2 && !strcmp(t1, t2));
    CHECK(!strcmp(b.run.out_dir, "with\"quote\\and\ttab") && b.train.lr == a.train.lr && b.train.eps == a.train.eps &&
          b.model.norm_eps == a.model.norm_eps && b.run.seed == a.run.seed &&
          b.mix.n_schedule == a.mix.n_schedule &&
          !memcmp(b.mix.schedule, a.mix.schedule, sizeof a.mix.schedule[0] * a.mix.n_schedule) &&
          !strcmp(b.data.domain.items[1], a.data.domain.items[1]));
    free(t1);
    free(t2);
    config_free(&a);
    config_free(&b);
    /* a config with init_from omits the model's shape keys, and still round-trips */
    config_init(&a);
    CHECK(config_load_string(&a, "[model]\ninit_from = \"/m/tiny\"\ninit_optimizer = true\n[train]\nlr = 0.1\n", "i.toml", err, sizeof err) == 0);
    t1 = config_to_toml(&a);
    CHECK(t1 && !strstr(t1, "n_layer") && strstr(t1, "init_from = \"/m/tiny\"") &&
          strstr(t1, "init_optimizer = true"));
    config_init(&b);
    CHECK(config_load_string(&b, t1, "r.toml", err, sizeof err) == 0 && config_validate(&b, err, sizeof err) == 0);
    free(t1);
    config_free(&a);
    config_free(&b);
}

/* [[data.sources]]: parsed into tables in order, defaults, round trip, and
 * every bad input refused with file:line and the key. */
static void test_sources(void) {
    static const char *ok =
        "[data]\nseq_len = 64\n"
        "[[data.sources]]\nname = \"pubmed\"\nrole = \"domain\"\ntrain = [\"p/*.tok.zst\"]\n"
        "val = [\"pv/*.tok.zst\"]\nweight = 15\n"
        "[[data.sources]]  # clinical notes\nname = \"notes\"\nrole = \"domain\"\n"
        "train = [\"n/a.tok.zst\", \"n/b.tok.zst\"]\n"
        "[mix]\ndomain_frac = 0.5\n"
        "[[data.sources]]\nname = \"web\"\nrole = \"general\"\ntrain = [\"w/*\"]\nweight = 0.25\n";
    Config a, b;
    char err[1024];
    config_init(&a);
    CHECK_OK(config_load_string(&a, ok, "s.toml", err, sizeof err), err);
    CHECK_OK(config_validate(&a, err, sizeof err), err);
    CHECK(a.data.n_sources == 3 && a.data.seq_len == 64 && a.mix.domain_frac == 0.5);
    CHECK(!strcmp(a.data.sources[0].name, "pubmed") && !strcmp(a.data.sources[0].role, "domain") &&
          a.data.sources[0].weight == 15 && a.data.sources[0].val.n == 1 &&
          !strcmp(a.data.sources[0].val.items[0], "pv/*.tok.zst"));
    CHECK(!strcmp(a.data.sources[1].name, "notes") && a.data.sources[1].weight == 1.0 &&
          a.data.sources[1].train.n == 2 && a.data.sources[1].val.n == 0 &&
          a.data.sources[1].line == 9);
    CHECK(!strcmp(a.data.sources[2].role, "general") && a.data.sources[2].weight == 0.25);
    char *t1 = config_to_toml(&a);
    config_init(&b);
    CHECK_OK(config_load_string(&b, t1, "r.toml", err, sizeof err), err);
    CHECK_OK(config_validate(&b, err, sizeof err), err);
    char *t2 = config_to_toml(&b);
    CHECK(t1 && t2 && !strcmp(t1, t2) && strstr(t1, "[[data.sources]]\nname = \"web\""));
    CHECK(b.data.n_sources == 3 && b.data.sources[2].weight == 0.25 &&
          !strcmp(b.data.sources[1].train.items[1], "n/b.tok.zst"));
    free(t1), free(t2);
    config_free(&a), config_free(&b);

    const char *dom = "[[data.sources]]\nname = \"d\"\nrole = \"domain\"\ntrain = [\"d\"]\n";
    const char *gen = "[[data.sources]]\nname = \"g\"\nrole = \"general\"\ntrain = [\"g\"]\n";
    char text[1024];
    refuse("[[data.sources]]\nname = \"d\"\nweight = 0\n", "cfg.toml:3: data.sources[0].weight",
           "expected a number in (0");
    refuse("[[data.sources]]\nname = \"d\"\nweight = -2\n", "cfg.toml:3: data.sources[0].weight", NULL);
    refuse("[[data.sources]]\nname = \"d\"\nrole = \"replay\"\n", "cfg.toml:3: data.sources[0].role",
           "one of \"domain/general\"");
    refuse("[[data.sources]]\nname = \"d\"\nname = \"e\"\n", "cfg.toml:3: data.sources[0].name is set twice",
           "line 2");
    refuse("[[data.sources]]\nname = \"a b\"\n", "cfg.toml:2: data.sources[0].name", "letters, digits");
    refuse("[[data.sources]]\nshards = []\n", "cfg.toml:2: unknown key 'shards' in [[data.sources]]", NULL);
    refuse("[[data.source]]\n", "cfg.toml:1: bad header", "[[data.sources]]");
    snprintf(text, sizeof text, "%s%s[[data.sources]]\nname = \"d\"\nrole = \"general\"\ntrain = [\"x\"]\n", dom, gen);
    refuse(text, "data.sources[2].name (cfg.toml:10) = \"d\" is also data.sources[0].name (cfg.toml:2)",
           "names must differ");
    snprintf(text, sizeof text, "%s[[data.sources]]\nname = \"g\"\nrole = \"general\"\ntrain = []\n", dom);
    refuse(text, "data.sources[1].train (cfg.toml:8) is empty", "needs train shards");
    snprintf(text, sizeof text, "%s[[data.sources]]\nname = \"g\"\nrole = \"general\"\n", dom);
    refuse(text, "data.sources[1] (cfg.toml:5) has no train", NULL);
    refuse("[[data.sources]]\nname = \"general\"\nrole = \"general\"\ntrain = [\"x\"]\n",
           "data.sources[0].name (cfg.toml:2) = \"general\"", "role aggregate");
    /* a role with no source while the schedule asks for it */
    refuse(gen, "no source has role \"domain\"", "mix.domain_frac (default)");
    refuse(dom, "no source has role \"general\"", "mix.domain_frac (default)");
    snprintf(text, sizeof text, "%s[mix]\nschedule = [[0, 0.0], [0.9, 0.0], [0.9, 0.5]]\n", gen);
    refuse(text, "no source has role \"domain\"", "mix.schedule (cfg.toml:6) asks for domain samples (a domain fraction up to 0.5)");
    snprintf(text, sizeof text, "%s[mix]\ndomain_frac = 1.0\n", dom); /* fine: only domain samples */
    config_init(&a);
    CHECK_OK(config_load_string(&a, text, "d.toml", err, sizeof err), err);
    CHECK_OK(config_validate(&a, err, sizeof err), err);
    config_free(&a);
    /* not together with the shorthand */
    snprintf(text, sizeof text, "[data]\nval_general = [\"v\"]\n%s%s", dom, gen);
    refuse(text, "data.val_general (cfg.toml:2) and [[data.sources]] (cfg.toml:3) are both given", NULL);
}

/* Random byte edits of a valid file: a clean error or success, no crash. */
static void test_fuzz(void) {
    Rng r;
    rng_seed(&r, 9);
    size_t n = strlen(full);
    char *buf = malloc(n + 1), err[1024];
    const char alphabet[] = "[]=\"'#.,\\ \n0123456789eE+-_abtrufls{}\t";
    int refused = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, full, n + 1);
        int edits = 1 + (int)(rng_u64(&r) % 3);
        for (int e = 0; e < edits; e++) buf[rng_u64(&r) % n] = alphabet[rng_u64(&r) % (sizeof alphabet - 1)];
        Config c;
        config_init(&c);
        err[0] = 0;
        int rc = config_load_string(&c, buf, "fz.toml", err, sizeof err);
        if (!rc) rc = config_validate(&c, err, sizeof err);
        if (rc) {
            refused++;
            if (!err[0]) CHECK(!"refusal without a message");
        }
        config_free(&c);
    }
    CHECK(refused > 100);
    free(buf);
}

/* [cuda] and dist.nccl_grouped: the defaults are the backend's own
 * (ops_options_default: today's behaviour), a file and overrides set them,
 * out-of-range values are refused naming the key, the resolved TOML lists
 * them and parses back, and config_check_model holds
 * cuda.flash_heads_per_block to the model's GQA group */
static void test_backend_keys(void) {
    char err[1024];
    Config c;
    config_init(&c);
    OpsOptions o = config_to_ops_options(&c), d = ops_options_default();
    CHECK(!memcmp(&o, &d, sizeof o));
    CHECK(o.cuda.flash_attention == 1 && o.cuda.flash_heads_per_block == 0 &&
          o.cuda.fused_norm == 1 && o.cuda.moe_grouped_gemm == 0 &&
          o.cuda.lmhead_chunk_rows == 1024 && o.cuda.sync_debug == 0);
    CHECK(c.dist.nccl_grouped == 0);
    char *toml = config_to_toml(&c);
    CHECK(toml && strstr(toml, "\n[cuda]\n") && strstr(toml, "\nflash_attention = true\n") &&
          strstr(toml, "\nflash_heads_per_block = 0\n") && strstr(toml, "\nfused_norm = true\n") &&
          strstr(toml, "\nmoe_grouped_gemm = false\n") &&
          strstr(toml, "\nlmhead_chunk_rows = 1024\n") && strstr(toml, "\nsync_debug = false\n") &&
          strstr(toml, "\nnccl_grouped = false\n"));
    free(toml);
    config_free(&c);

    CHECK(config_load_string(&c,
                             "[cuda]\nfused_norm = false\nlmhead_chunk_rows = 4096\n"
                             "[dist]\nnccl_grouped = true\n",
                             "b.toml", err, sizeof err) == 0);
    char *over[] = {"--cuda.flash_attention=false", "--cuda.moe_grouped_gemm=true",
                    "--cuda.sync_debug=true", "--cuda.flash_heads_per_block=2"};
    for (int i = 0; i < 4; i++)
        CHECK(config_override(&c, over[i], err, sizeof err) == 0);
    CHECK(config_validate(&c, err, sizeof err) == 0);
    o = config_to_ops_options(&c);
    CHECK(o.cuda.flash_attention == 0 && o.cuda.flash_heads_per_block == 2 &&
          o.cuda.fused_norm == 0 && o.cuda.moe_grouped_gemm == 1 &&
          o.cuda.lmhead_chunk_rows == 4096 && o.cuda.sync_debug == 1 && c.dist.nccl_grouped == 1);
    /* the resolved TOML holds them and parses back to the same options */
    toml = config_to_toml(&c);
    CHECK(toml && strstr(toml, "\nlmhead_chunk_rows = 4096\n") &&
          strstr(toml, "\nnccl_grouped = true\n") && strstr(toml, "\nfused_norm = false\n"));
    Config back;
    config_init(&back);
    CHECK(toml && config_load_string(&back, toml, "resolved.toml", err, sizeof err) == 0);
    OpsOptions ob = config_to_ops_options(&back);
    CHECK(!memcmp(&o, &ob, sizeof o) && back.dist.nccl_grouped == 1);
    config_free(&back);
    free(toml);

    /* flash_heads_per_block against the model: 8 heads over 2 kv heads (a
     * group of 4) take 1, 2 or 4; only on a CUDA device */
    ModelConfig m = model_config_default(ARCH_LLAMA);
    m.n_head = 8, m.n_kv_head = 2, m.max_seq_len = 2048;
    snprintf(c.run.device, sizeof c.run.device, "cuda");
    CHECK(config_check_model(&c, &m, err, sizeof err) == 0);
    CHECK(config_override(&c, "--cuda.flash_heads_per_block=3", err, sizeof err) == 0);
    CHECK(config_check_model(&c, &m, err, sizeof err) != 0);
    CHECK_MSG(err, "cuda.flash_heads_per_block (command line) = 3 must divide the model's 4 query "
                   "heads per kv head");
    snprintf(c.run.device, sizeof c.run.device, "cpu");
    CHECK(config_check_model(&c, &m, err, sizeof err) == 0);
    config_free(&c);

    /* out of range or of the wrong type: refused, naming the key */
    refuse("[cuda]\nlmhead_chunk_rows = 0\n",
           "cfg.toml:2: cuda.lmhead_chunk_rows: expected an integer in [1, 1048576], got 0", NULL);
    refuse("[cuda]\nflash_heads_per_block = -1\n", "cuda.flash_heads_per_block", "[0, 1024]");
    refuse("[cuda]\nfused_norm = 0\n", "cfg.toml:2: cuda.fused_norm: expected true or false", NULL);
    refuse("[cuda]\nfused_norms = false\n", "did you mean 'fused_norm'", NULL);
    refuse("[dist]\nnccl_grouped = 1\n", "dist.nccl_grouped", NULL);
    struct {
        const char *arg, *msg;
    } bad[] = {
        {"--cuda.lmhead_chunk_rows=2000000", "override --cuda.lmhead_chunk_rows: expected an "
                                             "integer in [1, 1048576], got 2000000"},
        {"--cuda.sync_debug=1", "override --cuda.sync_debug"},
        {"--cuda.flash_heads_per_block=1025", "cuda.flash_heads_per_block"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        config_init(&c);
        CHECK(config_override(&c, bad[i].arg, err, sizeof err) != 0);
        CHECK_MSG(err, bad[i].msg);
        config_free(&c);
    }
}

/* docs/config.md has a table row for every key (tests run in tests/) */
static void test_documented(void) {
    FILE *f = fopen("../docs/config.md", "rb");
    CHECK(f != NULL);
    if (!f) return;
    static char doc[1 << 16];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
    for (int i = 0; i < config_num_keys + source_num_keys; i++) {
        char row[96];
        if (i < config_num_keys) snprintf(row, sizeof row, "| `%s` |", config_key_name(i));
        else snprintf(row, sizeof row, "| `data.sources.%s` |", source_keys[i - config_num_keys].key);
        if (!strstr(doc, row)) fprintf(stderr, "docs/config.md lacks the row %s\n", row);
        CHECK(strstr(doc, row) != NULL);
    }
}

int main(void) {
    test_documented();
    test_defaults();
    test_full_file();
    test_errors();
    test_hostile();
    test_overrides();
    test_arch_keys();
    test_backend_keys();
    test_line_endings();
    test_mix_points();
    test_round_trip();
    test_sources();
    test_fuzz();
    return CHECK_DONE();
}
