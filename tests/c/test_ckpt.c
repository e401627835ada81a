/* test_ckpt.c: checkpoints: save -> load restores parameters, Adam moments
 * and trainer state exactly; keep-last-k (of the saving run id only);
 * find-latest skips damaged and temporary directories; truncated or missing files and a different model
 * are refused with the file named; every file of the run's tokenizer is
 * copied and loads back as the same tokenizer. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "tests/c/gguf_testutil.h"
#include "tokenizer/tokenizer.h"
#include "trainer/ckpt.h"
#include "trainer/hf.h"
#include "trainer/rng.h"

static char dir[256];

static ModelConfig tiny(Arch arch) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 2;
    c.n_head = 2;
    c.n_kv_head = arch == ARCH_LLAMA ? 1 : 2;
    c.d_model = 8;
    c.d_ff = 12;
    c.vocab_size = 21;
    c.max_seq_len = 8;
    c.tie_embeddings = arch == ARCH_GPT2;
    return c;
}

static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_uniform(&r) - 0.5f;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void test_save_load(Arch arch) {
    char out[512], path[4200], err[512];
    snprintf(out, sizeof out, "%s/run-%s", dir, model_arch_name(arch));
    ModelConfig cfg = tiny(arch);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    size_t n = model_num_params(m);
    float *p = malloc(n * sizeof *p), *mm = malloc(n * sizeof *mm), *vv = malloc(n * sizeof *vv);
    float *p2 = malloc(n * sizeof *p), *mm2 = malloc(n * sizeof *mm), *vv2 = malloc(n * sizeof *vv);
    fill(p, n, 1);
    fill(mm, n, 2);
    fill(vv, n, 3);
    model_set_params(m, p);
    model_set_adam_state(m, mm, vv);
    CkptState st = {.step = 120, .tokens = 123456789012LL, .lr = 2.5e-4,
                    .data_fingerprint = "shards:abc123 mix:0.3",
                    .rng = {1, 0xffffffffffffffffull, 3, 0x0123456789abcdefull},
                    .config_text = "[run]\nname = \"x\"\n"};
    /* a tokenizer directory as HF ships one: the model and its config */
    static const char *const tok_names[3] = {"tokenizer.model", "tokenizer_config.json",
                                             "special_tokens_map.json"};
    static const char tok_config[] = "{\"add_bos_token\": true, \"add_eos_token\": false}";
    static const char tok_map[] = "{\"bos_token\": \"<s>\"}";
    char tok_dir[600], tp[700];
    snprintf(tok_dir, sizeof tok_dir, "%s/tok-%s", dir, model_arch_name(arch));
    mkdir(tok_dir, 0755);
    size_t spm_n;
    uint8_t *spm = spm_test_model(24, &spm_n);
    const void *tok_bytes[3] = {spm, tok_config, tok_map};
    size_t tok_len[3] = {spm_n, sizeof tok_config - 1, sizeof tok_map - 1};
    for (int i = 0; i < 3; i++) {
        snprintf(tp, sizeof tp, "%s/%s", tok_dir, tok_names[i]);
        CHECK(write_bytes(tp, tok_bytes[i], tok_len[i]) == 0);
    }
    Tokenizer *tok = NULL;
    CHECK_OK(tokenizer_load(&tok, tok_dir, err, sizeof err), err);
    for (int step = 100; step <= 120; step += 10) {
        st.step = step;
        st.tokenizer = step == 120 ? tok : NULL;
        CHECK(ckpt_save(out, m, &st, 2, path, sizeof path, err, sizeof err) == 0);
    }
    snprintf(path, sizeof path, "%s/ckpt/step-00000100", out);
    CHECK(!exists(path)); /* keep = 2 */
    snprintf(path, sizeof path, "%s/ckpt/step-00000110", out);
    CHECK(exists(path));
    char latest[4200];
    CHECK(ckpt_find_latest(out, latest, sizeof latest, err, sizeof err) == 0);
    CHECK(strstr(latest, "step-00000120") != NULL);

    Model *m2 = model_create(&cfg, ops_cpu(), err, sizeof err);
    CkptState got;
    CHECK(ckpt_load(latest, m2, &got, err, sizeof err) == 0);
    model_get_params(m2, p2);
    model_get_adam_state(m2, mm2, vv2);
    CHECK(memcmp(p, p2, n * sizeof *p) == 0);
    CHECK(memcmp(mm, mm2, n * sizeof *p) == 0);
    CHECK(memcmp(vv, vv2, n * sizeof *p) == 0);
    CHECK(got.step == 120 && got.tokens == 123456789012LL && got.lr == 2.5e-4);
    CHECK(got.adam_step == 120); /* saved as 0: AdamW's t is the step */
    CHECK(got.data_fingerprint && !strcmp(got.data_fingerprint, st.data_fingerprint));
    CHECK(got.config_text && !strcmp(got.config_text, st.config_text));
    CHECK(memcmp(got.rng, st.rng, sizeof st.rng) == 0);
    /* every file of the tokenizer was copied into the newest checkpoint
     * only, bytewise, and the checkpoint's tokenizer is the same one */
    char tpath[4400];
    snprintf(tpath, sizeof tpath, "%s/tokenizer.model", latest);
    CHECK(got.tokenizer_path && !strcmp(got.tokenizer_path, tpath));
    for (int i = 0; i < 3; i++) {
        size_t n_got;
        snprintf(tpath, sizeof tpath, "%s/%s", latest, tok_names[i]);
        uint8_t *b = read_bytes(tpath, &n_got);
        CHECK(b && n_got == tok_len[i] && !memcmp(b, tok_bytes[i], n_got));
        free(b);
    }
    Tokenizer *back = NULL;
    CHECK_OK(tokenizer_load(&back, latest, err, sizeof err), err);
    CHECK(back && tokenizer_hash(back) == tokenizer_hash(tok) && tokenizer_add_bos(back) == 1);
    tokenizer_free(back);
    /* the same .model alone adds no BOS, so its shards differ: so does the hash */
    snprintf(tpath, sizeof tpath, "%s/bare-%s.model", dir, model_arch_name(arch));
    CHECK(write_bytes(tpath, spm, spm_n) == 0);
    CHECK_OK(tokenizer_load(&back, tpath, err, sizeof err), err);
    CHECK(back && tokenizer_add_bos(back) == 0 && tokenizer_hash(back) != tokenizer_hash(tok));
    tokenizer_free(back);
    ckpt_state_free(&got);
    snprintf(path, sizeof path, "%s/ckpt/step-00000110", out);
    CHECK(ckpt_load(path, m2, &got, err, sizeof err) == 0 && got.tokenizer_path == NULL);
    ckpt_state_free(&got);
    st.tokenizer = NULL;
    tokenizer_free(tok);
    free(spm);

    /* a checkpoint is an HF model directory: init_from loads it */
    Model *m4 = hf_load_model(latest, ops_cpu(), err, sizeof err);
    CHECK(m4 != NULL);
    if (m4) {
        model_get_params(m4, p2);
        CHECK(model_num_params(m4) == n && memcmp(p, p2, n * sizeof *p) == 0);
        model_free(m4);
    }

    /* a different model is refused */
    ModelConfig other = cfg;
    other.d_ff = 16;
    Model *m3 = model_create(&other, ops_cpu(), err, sizeof err);
    CHECK(ckpt_load(latest, m3, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "different model");
    model_free(m3);

    /* a leftover temporary directory is not a checkpoint, and the next save removes it */
    snprintf(path, sizeof path, "%s/ckpt/.tmp-step-00000130", out);
    CHECK(mkdir(path, 0755) == 0);
    CHECK(ckpt_find_latest(out, latest, sizeof latest, err, sizeof err) == 0 &&
          strstr(latest, "step-00000120"));
    st.step = 125;
    CHECK(ckpt_save(out, m, &st, 0, NULL, 0, err, sizeof err) == 0);
    CHECK(!exists(path));
    /* re-saving an existing step replaces it */
    st.lr = 1e-5;
    st.adam_step = 175; /* a continued run's: 50 steps before its step 0 */
    CHECK(ckpt_save(out, m, &st, 0, NULL, 0, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/ckpt/step-00000125", out);
    CHECK(ckpt_load(path, m2, &got, err, sizeof err) == 0 && got.lr == 1e-5);
    CHECK(got.step == 125 && got.adam_step == 175);
    ckpt_state_free(&got);

    free(p), free(mm), free(vv), free(p2), free(mm2), free(vv2);
    model_free(m);
    model_free(m2);
}

static void truncate_file(const char *path, long by) {
    struct stat sb;
    CHECK(stat(path, &sb) == 0);
    CHECK(truncate(path, sb.st_size - by) == 0);
}

static void test_damage(void) {
    char out[512], path[4400], ck[4200], latest[4200], err[512];
    snprintf(out, sizeof out, "%s/run-damage", dir);
    ModelConfig cfg = tiny(ARCH_LLAMA);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    model_init_weights(m, 5);
    CkptState st = {.step = 1, .data_fingerprint = "fp", .config_text = ""};
    CHECK(ckpt_save(out, m, &st, 0, NULL, 0, err, sizeof err) == 0);
    st.step = 2;
    CHECK(ckpt_save(out, m, &st, 0, ck, sizeof ck, err, sizeof err) == 0);

    /* truncated model.safetensors: refused, the file named; latest falls back */
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    truncate_file(path, 3);
    CHECK(ckpt_load(ck, m, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "model.safetensors");
    CHECK_MSG(err, "truncated?");
    CHECK(ckpt_check(ck, err, sizeof err) != 0);
    CHECK(ckpt_find_latest(out, latest, sizeof latest, err, sizeof err) == 0 &&
          strstr(latest, "step-00000001"));

    /* missing trainer_state.json */
    snprintf(path, sizeof path, "%s/trainer_state.json", latest);
    CHECK(remove(path) == 0);
    CHECK(ckpt_load(latest, m, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "trainer_state.json is missing");
    CHECK(ckpt_find_latest(out, latest, sizeof latest, err, sizeof err) == 1);

    /* truncated optimizer.safetensors and trainer_state.json */
    st.step = 3;
    CHECK(ckpt_save(out, m, &st, 0, ck, sizeof ck, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ck);
    truncate_file(path, 1);
    /* a refused checkpoint leaves the model as it was */
    size_t n = model_num_params(m);
    float *before = malloc(n * sizeof *before), *after = malloc(n * sizeof *after);
    model_get_params(m, before);
    for (size_t i = 0; i < n; i++) after[i] = before[i] + 1.0f;
    model_set_params(m, after);
    model_get_params(m, before);
    CHECK(ckpt_load(ck, m, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "optimizer.safetensors");
    model_get_params(m, after);
    CHECK(memcmp(before, after, n * sizeof *after) == 0);
    free(before);
    free(after);
    st.step = 4;
    CHECK(ckpt_save(out, m, &st, 0, ck, sizeof ck, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/trainer_state.json", ck);
    truncate_file(path, 10);
    CHECK(ckpt_load(ck, m, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "trainer_state.json");
    /* a missing config.json */
    st.step = 5;
    CHECK(ckpt_save(out, m, &st, 0, ck, sizeof ck, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/config.json", ck);
    CHECK(remove(path) == 0);
    CHECK(ckpt_load(ck, m, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "config.json is missing");

    /* sharded weights: load back, and a truncated shard is named */
    st.step = 6;
    st.max_shard_bytes = 600;
    float *w0 = malloc(model_num_params(m) * sizeof *w0), *w1 = malloc(model_num_params(m) * sizeof *w1);
    model_get_params(m, w0);
    CHECK(ckpt_save(out, m, &st, 0, ck, sizeof ck, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", ck);
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors", ck);
    CHECK(access(path, F_OK) != 0);
    Model *ms = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK(ckpt_load(ck, ms, NULL, err, sizeof err) == 0);
    model_get_params(ms, w1);
    CHECK(memcmp(w0, w1, model_num_params(m) * sizeof *w0) == 0);
    CHECK(ckpt_find_latest(out, latest, sizeof latest, err, sizeof err) == 0 && strstr(latest, "step-00000006"));
    snprintf(path, sizeof path, "%s/model-00002-of-", ck);
    char shard[4500];
    snprintf(shard, sizeof shard, "%s", path);
    DIR *dd = opendir(ck);
    for (struct dirent *e; dd && (e = readdir(dd));)
        if (!strncmp(e->d_name, "model-00002-of-", 15)) snprintf(shard, sizeof shard, "%s/%s", ck, e->d_name);
    if (dd) closedir(dd);
    truncate_file(shard, 4);
    CHECK(ckpt_load(ck, ms, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "model-00002-of-");
    CHECK_MSG(err, "truncated?");
    CHECK(ckpt_find_latest(out, latest, sizeof latest, err, sizeof err) == 1); /* all others damaged above */
    model_free(ms);
    free(w0);
    free(w1);

    /* no checkpoints at all */
    snprintf(path, sizeof path, "%s/empty-run", dir);
    CHECK(ckpt_find_latest(path, latest, sizeof latest, err, sizeof err) == 1);
    model_free(m);
}

/* ZeRO-1 layout: three "ranks" (one process, the collective calls made in
 * turn) write their optimizer shards; the checkpoint loads bitwise into a
 * whole model and into each shard of 2 and 4 ranks (resharding reads the
 * overlapping ranges only); a missing or foreign shard file is refused. */
/* the weights a ZeRO save writes come from its source, not the model */
static int source_buffer(void *ctx, size_t offset, size_t count, float *dst, char *err,
                         size_t err_len) {
    (void)err, (void)err_len;
    memcpy(dst, (const float *)ctx + offset, count * sizeof *dst);
    return 0;
}

static void test_opt_shards(void) {
    char out[512], tmp[4200], ck[4200], path[4400], err[512];
    snprintf(out, sizeof out, "%s/run-zero", dir);
    ModelConfig cfg = tiny(ARCH_GPT2);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    size_t n = model_num_params(m);
    float *p = malloc(n * sizeof *p), *mm = malloc(n * sizeof *mm), *vv = malloc(n * sizeof *vv);
    float *got_m = malloc(n * sizeof *mm), *got_v = malloc(n * sizeof *vv);
    fill(got_m, n, 10), fill(p, n, 11), fill(mm, n, 12), fill(vv, n, 13);
    model_set_params(m, got_m); /* not what is saved: the source's p is */
    size_t counts[3] = {n / 3 + 1, n / 3, n - 2 * (n / 3) - 1}, off = 0;
    CkptState st = {.step = 7, .tokens = 70, .data_fingerprint = "fp", .config_text = "",
                    .params_src = source_buffer, .params_ctx = p, .opt_world = 3,
                    .opt_counts = counts};
    CHECK(ckpt_save_begin(out, st.step, tmp, sizeof tmp, err, sizeof err) == 0);
    for (int r = 0; r < 3; r++) {
        CHECK(ckpt_save_opt_shard(tmp, r, 3, st.step, counts[r], mm + off, vv + off, err,
                                  sizeof err) == 0);
        off += counts[r];
    }
    CHECK(ckpt_save_commit(out, tmp, m, &st, 0, ck, sizeof ck, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ck);
    CHECK(!exists(path));
    snprintf(path, sizeof path, "%s/optimizer-00001-of-00003.safetensors", ck);
    CHECK(exists(path));
    CHECK(ckpt_check(ck, err, sizeof err) == 0);

    /* into a whole model: every moment back bitwise */
    Model *w = model_create(&cfg, ops_cpu(), err, sizeof err);
    CkptState got;
    CHECK(ckpt_load(ck, w, &got, err, sizeof err) == 0);
    CHECK(got.opt_world == 3 && got.step == 7);
    ckpt_state_free(&got);
    model_get_adam_state(w, got_m, got_v);
    CHECK(memcmp(got_m, mm, n * sizeof *mm) == 0 && memcmp(got_v, vv, n * sizeof *vv) == 0);
    model_free(w);
    /* into the shards of 2 and of 4 ranks */
    for (int world = 2; world <= 4; world += 2) {
        size_t o = 0;
        for (int r = 0; r < world; r++) {
            size_t c = n / world + (r < (int)(n % world));
            Model *s = model_create(&cfg, ops_cpu(), err, sizeof err);
            CHECK(model_shard_optimizer(s, o, c, err, sizeof err) == 0);
            CHECK(ckpt_load(ck, s, NULL, err, sizeof err) == 0);
            model_get_adam_shard(s, got_m, got_v);
            CHECK(memcmp(got_m, mm + o, c * sizeof *mm) == 0);
            CHECK(memcmp(got_v, vv + o, c * sizeof *vv) == 0);
            model_get_params(s, got_m);
            CHECK(memcmp(got_m, p, n * sizeof *p) == 0);
            model_free(s);
            o += c;
        }
    }

    /* a shard of another step, a truncated one, a missing one: refused, named */
    snprintf(path, sizeof path, "%s/optimizer-00002-of-00003.safetensors", ck);
    CHECK(ckpt_save_opt_shard(ck, 2, 3, 6, counts[2], mm, vv, err, sizeof err) == 0);
    CHECK(ckpt_check(ck, err, sizeof err) != 0);
    CHECK_MSG(err, "optimizer-00002-of-00003.safetensors");
    CHECK_MSG(err, "step 7");
    /* the right step but other moments (rank 0's values): the shard's
     * checksum, recorded by the commit, differs */
    CHECK(ckpt_save_opt_shard(ck, 2, 3, 7, counts[2], mm, vv, err, sizeof err) == 0);
    CHECK(ckpt_check(ck, err, sizeof err) != 0);
    CHECK_MSG(err, "optimizer-00002-of-00003.safetensors does not match its checksum");
    truncate_file(path, 4);
    CHECK(ckpt_check(ck, err, sizeof err) != 0);
    CHECK_MSG(err, "optimizer-00002-of-00003.safetensors");
    CHECK(remove(path) == 0);
    Model *w2 = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK(ckpt_load(ck, w2, NULL, err, sizeof err) != 0);
    CHECK_MSG(err, "optimizer-00002-of-00003.safetensors is missing");
    CHECK(ckpt_find_latest(out, path, sizeof path, err, sizeof err) == 1);
    /* an aborted collective save leaves no temporary directory behind */
    CHECK(ckpt_save_begin(out, 8, tmp, sizeof tmp, err, sizeof err) == 0);
    CHECK(ckpt_save_opt_shard(tmp, 0, 3, 8, counts[0], mm, vv, err, sizeof err) == 0);
    ckpt_save_abort(tmp);
    CHECK(!exists(tmp));
    /* ckpt_save refuses the sharded layout (it has no shards to write) */
    CHECK(ckpt_save(out, m, &st, 0, NULL, 0, err, sizeof err) != 0);
    model_free(w2);
    model_free(m);
    free(p), free(mm), free(vv), free(got_m), free(got_v);
}

/* keep prunes only the saving run's checkpoints: another run's, newer or
 * older, and one without a run id stay; the run id is written and read
 * back. */
static void test_keep_run_id(void) {
    char out[300], path[400], err[512];
    snprintf(out, sizeof out, "%s/runid", dir);
    ModelConfig cfg = tiny(ARCH_LLAMA);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK(m != NULL);
    if (!m) return;
    CkptState st = {.step = 3, .tokens = 10, .data_fingerprint = "fp", .config_text = "",
                    .run_id = "00000000000000bb"};
    CHECK_OK(ckpt_save(out, m, &st, 1, NULL, 0, err, sizeof err), err); /* run B: 3 */
    st.run_id = NULL;
    st.step = 4;
    CHECK_OK(ckpt_save(out, m, &st, 0, NULL, 0, err, sizeof err), err); /* no id: 4 */
    st.run_id = "00000000000000aa";
    for (int s = 1; s <= 2; s++) { /* run A: 1, 2 with keep = 1 */
        st.step = s;
        CHECK_OK(ckpt_save(out, m, &st, 1, NULL, 0, err, sizeof err), err);
    }
    st.run_id = "00000000000000bb";
    st.step = 9; /* run B again, keep = 1: its step 3 goes, nothing of A's */
    CHECK_OK(ckpt_save(out, m, &st, 1, NULL, 0, err, sizeof err), err);
    const int want[] = {0, 0, 1, 0, 1, 0, 0, 0, 0, 1}; /* steps 0..9 */
    for (int s = 0; s <= 9; s++) {
        snprintf(path, sizeof path, "%s/ckpt/step-%08d", out, s);
        CHECK(exists(path) == want[s], "step %d: exists %d, expected %d", s, exists(path),
              want[s]);
    }
    snprintf(path, sizeof path, "%s/ckpt/step-00000004", out);
    CHECK(exists(path), "the checkpoint without a run id was deleted");
    CkptState got = {0};
    snprintf(path, sizeof path, "%s/ckpt/step-00000002", out);
    CHECK_OK(ckpt_load(path, m, &got, err, sizeof err), err);
    CHECK(got.run_id && !strcmp(got.run_id, "00000000000000aa"));
    ckpt_state_free(&got);
    snprintf(path, sizeof path, "%s/ckpt/step-00000004", out);
    CHECK_OK(ckpt_load(path, m, &got, err, sizeof err), err);
    CHECK(got.run_id == NULL);
    ckpt_state_free(&got);
    model_free(m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dapt-test-ckpt-XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    test_save_load(ARCH_LLAMA);
    test_save_load(ARCH_GPT2);
    test_damage();
    test_opt_shards();
    test_keep_run_id();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
