/* test_ckpt_mem.c: saving and loading a model never holds it whole in host
 * memory. A llama of 17.8M parameters (a 71 MB fp32 copy; largest tensor
 * 2.1M floats, 8 MB) is saved (hf_save_weights, single file and HF
 * shards), loaded back (hf_load_weights), exported to GGUF Q8_0 from the
 * directory (gguf_export_dir: the same bytes as gguf_export_model of the
 * Model), checked for non-finite values and initialised under an
 * address-space limit (RLIMIT_AS) of what the process
 * had mapped after a first, unlimited round of the same calls plus half of
 * one whole-model fp32 buffer. The limit is real: a malloc of n_params
 * floats under it fails (checked), so a path that went back to a
 * whole-model buffer fails here. Streaming needs one 4 MiB chunk and the
 * header; the loaded parameters equal the saved ones bitwise.
 *
 * Address space, not resident memory: the limit is a hard property of each
 * mmap/brk, the same on a loaded machine as on an idle one. The first round
 * maps everything that stays (libraries, malloc arenas: one arena, set
 * below); its large buffers are unmapped again when freed. Under
 * AddressSanitizer (its shadow memory is terabytes of address space) the
 * test says so and checks nothing. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "tests/c/check.h"
#include "tests/c/gguf_testutil.h"
#include "tools/gguf/gguf.h"
#include "trainer/hf.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static char dir[256];

/* bytes of address space mapped now (/proc/self/statm's first field) */
static size_t vm_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1) pages = 0;
    if (f) fclose(f);
    return (size_t)pages * 4096;
}

static ModelConfig cfg_llama(void) {
    ModelConfig c = model_config_default(ARCH_LLAMA);
    c.n_layer = 4;
    c.n_head = 8;
    c.n_kv_head = 8;
    c.d_model = 512;
    c.d_ff = 1536;
    c.vocab_size = 4096;
    c.max_seq_len = 16;
    c.tie_embeddings = 0;
    return c;
}

/* save m as one file and as shards, load each into m2, compare chunk by
 * chunk (a, b: 1M floats each) */
static void round_trip(Model *m, Model *m2, float *a, float *b, size_t chunk) {
    char err[512], single[300], sharded[300];
    snprintf(single, sizeof single, "%s/single", dir);
    snprintf(sharded, sizeof sharded, "%s/sharded", dir);
    mkdir(single, 0755), mkdir(sharded, 0755);
    CHECK_OK(hf_save_config(single, model_config(m), err, sizeof err), err);
    CHECK_OK(hf_save_weights(single, m, 0, err, sizeof err), err);
    CHECK_OK(hf_save_weights(sharded, m, 24u << 20, err, sizeof err), err); /* 3 shards */
    const char *dirs[2] = {single, sharded};
    for (int k = 0; k < 2; k++) {
        model_init_weights(m2, 99); /* something else first */
        CHECK_OK(hf_load_weights(dirs[k], m2, err, sizeof err), err);
        size_t n = model_num_params(m), bad = 0;
        for (size_t at = 0; at < n; at += chunk) {
            size_t c = n - at < chunk ? n - at : chunk;
            model_get_param_range(m, at, c, a);
            model_get_param_range(m2, at, c, b);
            bad += memcmp(a, b, c * sizeof *a) != 0;
        }
        CHECK(bad == 0, "%s: %zu chunks differ after the round trip\n", dirs[k], bad);
    }
    CHECK(model_find_nonfinite(m2) == NULL);
    /* GGUF from the directory, tensor by tensor, equals GGUF from the Model */
    char tok[300], g1[300], g2[300];
    snprintf(tok, sizeof tok, "%s/tokenizer.model", dir);
    snprintf(g1, sizeof g1, "%s/dir.gguf", dir);
    snprintf(g2, sizeof g2, "%s/model.gguf", dir);
    GgufExportOptions o = {.dtype = GGML_Q8_0, .tokenizer = tok, .force = 1};
    size_t np = 0, n1 = 0, n2 = 0;
    CHECK_OK(gguf_export_dir(single, g1, &o, &np, err, sizeof err), err);
    CHECK(np == model_num_params(m));
    CHECK_OK(gguf_export_model(m, g2, &o, err, sizeof err), err);
    FILE *f1 = fopen(g1, "rb"), *f2 = fopen(g2, "rb");
    int same = f1 && f2;
    for (int x = 0, y = 0; same && x != EOF; n1++, n2++) {
        x = fgetc(f1), y = fgetc(f2);
        same = x == y;
    }
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    CHECK(same && n1 > (size_t)model_num_params(m), "the GGUF files differ (%zu bytes)\n", n1);
}

int main(void) {
#ifdef UNDER_ASAN
    printf("test_ckpt_mem: skipped under AddressSanitizer (RLIMIT_AS cannot apply)\n");
    return 0;
#endif
    mallopt(M_ARENA_MAX, 1);
    snprintf(dir, sizeof dir, "/tmp/dapt-test-ckpt-mem-XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    char err[512], path[400];
    size_t spm_n;
    uint8_t *spm = spm_test_model(24, &spm_n);
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    CHECK(spm && write_bytes(path, spm, spm_n) == 0);
    free(spm);
    ModelConfig cfg = cfg_llama();
    Model *m = model_create(&cfg, ops_cpu(), err, sizeof err);
    Model *m2 = m ? model_create(&cfg, ops_cpu(), err, sizeof err) : NULL;
    CHECK_OK(!m2, err);
    if (!m2) return CHECK_DONE();
    size_t n = model_num_params(m), whole = n * sizeof(float), chunk = (size_t)1 << 20;
    CHECK(n > 17000000 && n < 18000000, "%zu parameters\n", n);
    float *a = malloc(chunk * sizeof *a), *b = malloc(chunk * sizeof *b);
    model_init_weights(m, 7);
    round_trip(m, m2, a, b, chunk); /* maps what stays mapped */

    struct rlimit lim = {vm_bytes() + whole / 2, RLIM_INFINITY};
    lim.rlim_max = lim.rlim_cur;
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
    float *big = malloc(whole); /* the limit bites: a whole-model buffer cannot exist */
    CHECK(big == NULL, "a %zu-byte buffer was allocated under the limit\n", whole);
    free(big);
    model_init_weights(m, 8); /* tensor by tensor */
    round_trip(m, m2, a, b, chunk);
    printf("limit: %zu MB mapped + %zu MB; the model's fp32 copy is %zu MB\n",
           (size_t)(lim.rlim_cur - whole / 2) >> 20, (whole / 2) >> 20, whole >> 20);
    free(a), free(b);
    model_free(m), model_free(m2);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
