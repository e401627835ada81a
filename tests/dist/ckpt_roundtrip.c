/* ckpt_roundtrip.c: a ZeRO checkpoint (train_ckpt_save with per-rank
 * optimizer shards) saved and loaded bitwise, under mpirun -np 1, 2 and 3
 * (tests/dist/tests.cmake), for a llama and a GPT-2 (whose Conv1D weights
 * are transposed whole) and for both weight layouts: one
 * model.safetensors, and HF shards with model.safetensors.index.json.
 *
 * Every rank holds the true parameters only inside its optimizer shard and
 * rank-specific garbage elsewhere, so the saved weights are right only if
 * each chunk came from the rank that owns it. The oracles: the saved files
 * equal, byte for byte, what one process writes (hf_save_weights) for a
 * model holding the true parameters; a whole model loading the checkpoint
 * gets the true parameters and moments bitwise; each rank's sharded model
 * loading it gets the true parameters everywhere and its shard of the
 * moments bitwise. The embedding and head (4500 x 256 = 1.15M elements)
 * are larger than one streaming chunk (ST_STREAM_CHUNK = 1M), so a tensor
 * crosses chunk and shard boundaries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "trainer/ckpt.h"
#include "trainer/dist.h"
#include "trainer/hf.h"
#include "trainer/rng.h"
#include "trainer/train_ckpt.h"

static ModelConfig cfg_of(Arch arch) {
    ModelConfig c = model_config_default(arch);
    c.n_layer = 2;
    c.n_head = 4;
    c.n_kv_head = arch == ARCH_LLAMA ? 2 : 4;
    c.d_model = 256;
    c.d_ff = 128;
    c.vocab_size = 4500;
    c.max_seq_len = 16;
    c.tie_embeddings = arch == ARCH_GPT2;
    return c;
}

static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)rng_uniform(&r) - 0.5f;
}

/* the bytes of two files are equal */
static int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        same = x == y;
        if (x == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void round_trip(Dist *d, const char *root, Arch arch, size_t shard_bytes) {
    const int rank = dist_rank(d), world = dist_world(d);
    char err[1024], run[600], ck[800], ref[700], a[900], b[900];
    ModelConfig cfg = cfg_of(arch);
    snprintf(run, sizeof run, "%s/%s-%zu", root, model_arch_name(arch), shard_bytes);
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK_OK(!m, err);
    if (!m) return;
    size_t n = model_num_params(m), off, cnt;
    size_t *pieces = malloc((size_t)world * sizeof *pieces);
    for (int r = 0; r < world; r++)
        dist_shard(n, world, r, &off, &pieces[r]);
    dist_shard(n, world, rank, &off, &cnt);
    float *truth = malloc(n * sizeof *truth), *tm = malloc(n * sizeof *tm);
    float *tv = malloc(n * sizeof *tv), *got = malloc(n * sizeof *got);
    float *gm = malloc(n * sizeof *gm), *gv = malloc(n * sizeof *gv);
    fill(truth, n, 1), fill(tm, n, 2), fill(tv, n, 3);
    CHECK_OK(model_shard_optimizer(m, off, cnt, err, sizeof err), err);
    /* true inside the shard, this rank's garbage outside */
    fill(got, n, 100 + (uint64_t)rank);
    memcpy(got + off, truth + off, cnt * sizeof *got);
    model_set_params(m, got);
    model_set_adam_shard(m, tm + off, tv + off);

    TrainCkpt k = {.run_dir = run,
                   .keep = 0,
                   .seed = 5,
                   .fingerprint = 0x1234,
                   .config_text = "",
                   .d = d,
                   .pieces = pieces,
                   .max_shard_bytes = shard_bytes};
    CHECK(train_ckpt_save(&k, m, 3, 300, 1e-3) == 0, "rank %d: save failed\n", rank);
    snprintf(ck, sizeof ck, "%s/ckpt/step-00000003", run);

    if (rank == 0) {
        /* the weights equal one process's save of the true parameters */
        Model *t = model_create(&cfg, ops_cpu(), err, sizeof err);
        snprintf(ref, sizeof ref, "%s/ref", run);
        mkdir(ref, 0755);
        model_set_params(t, truth);
        CHECK_OK(hf_save_weights(ref, t, shard_bytes, err, sizeof err), err);
        int total = 1; /* the files one process wrote: model.safetensors or 1..total */
        for (int t = 2; shard_bytes && t < 100 && total == 1; t++) {
            snprintf(b, sizeof b, "%s/model-00001-of-%05d.safetensors", ref, t);
            if (!access(b, F_OK)) total = t;
        }
        CHECK(shard_bytes ? total >= 3 : 1, "%d shards\n", total);
        for (int f = 1; f <= total; f++) {
            char name[64];
            if (shard_bytes)
                snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", f, total);
            else
                snprintf(name, sizeof name, "model.safetensors");
            snprintf(a, sizeof a, "%s/%s", ck, name);
            snprintf(b, sizeof b, "%s/%s", ref, name);
            CHECK(same_file(a, b), "%s differs from one process's save\n", a);
        }
        if (shard_bytes) {
            snprintf(a, sizeof a, "%s/model.safetensors.index.json", ck);
            snprintf(b, sizeof b, "%s/model.safetensors.index.json", ref);
            CHECK(same_file(a, b));
        }
        model_free(t);
        /* a whole model gets everything back bitwise */
        Model *w = model_create(&cfg, ops_cpu(), err, sizeof err);
        CkptState st;
        CHECK_OK(ckpt_load(ck, w, &st, err, sizeof err), err);
        CHECK(st.step == 3 && st.tokens == 300 && st.opt_world == (world > 1 ? world : 0));
        ckpt_state_free(&st);
        model_get_params(w, got);
        model_get_adam_state(w, gm, gv);
        CHECK(!memcmp(got, truth, n * sizeof *got), "whole model: weights differ\n");
        CHECK(!memcmp(gm, tm, n * sizeof *gm) && !memcmp(gv, tv, n * sizeof *gv),
              "whole model: moments differ\n");
        model_free(w);
    }
    /* every rank's sharded model gets the true weights and its moments */
    Model *s = model_create(&cfg, ops_cpu(), err, sizeof err);
    CHECK_OK(model_shard_optimizer(s, off, cnt, err, sizeof err), err);
    CHECK_OK(ckpt_load(ck, s, NULL, err, sizeof err), err);
    model_get_params(s, got);
    model_get_adam_shard(s, gm, gv);
    CHECK(!memcmp(got, truth, n * sizeof *got), "rank %d: weights differ\n", rank);
    CHECK(!memcmp(gm, tm + off, cnt * sizeof *gm) && !memcmp(gv, tv + off, cnt * sizeof *gv),
          "rank %d: moments differ\n", rank);
    model_free(s);
    CHECK(dist_barrier(d, err, sizeof err) == 0);
    model_free(m);
    free(pieces), free(truth), free(tm), free(tv), free(got), free(gm), free(gv);
}

int main(void) {
    Dist *d;
    char err[512], root[300] = "";
    if (dist_init(&d, err, sizeof err)) return fprintf(stderr, "%s\n", err), 1;
    if (dist_rank(d) == 0) {
        snprintf(root, sizeof root, "/tmp/dapt-test-ckpt-rt-XXXXXX");
        if (!mkdtemp(root)) dist_abort(d, 1, "mkdtemp failed");
    }
    if (dist_broadcast(d, root, sizeof root, 0, err, sizeof err)) return 1;
    for (int arch = 0; arch < 2; arch++)
        for (int sharded = 0; sharded < 2; sharded++)
            /* shards of at most 2 MiB: the embedding (4.6 MB) alone, a
             * block (1.2-1.3 MB) each: 3 files or more */
            round_trip(d, root, arch ? ARCH_GPT2 : ARCH_LLAMA, sharded ? (size_t)2 << 20 : 0);
    double failed = check_failures;
    if (dist_allreduce(d, &failed, 1, DIST_F64, DIST_SUM, err, sizeof err)) failed = 1;
    if (dist_rank(d) == 0) {
        printf("ckpt_roundtrip: %d ranks, %d checks on rank 0, %g failed on all ranks\n",
               dist_world(d), check_count, failed);
        if (!failed) {
            char cmd[400];
            snprintf(cmd, sizeof cmd, "rm -rf %s", root);
            if (system(cmd)) fprintf(stderr, "could not remove %s\n", root);
        }
    }
    dist_free(d);
    return failed > 0;
}
