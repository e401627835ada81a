/* test_gguf_hostile.c: `dapt import gguf` against edited exports (issue 28).
 *
 * A tiny llama is exported, then single fields of the file are overwritten
 * in place (found by their key or tensor name) and the import must refuse:
 *   - llama.rope.freq_base = +inf, -inf, nan, 0, -1: refused naming
 *     rope_theta (an inf used to be written into config.json as `inf`);
 *   - llama.feed_forward_length = 2^28: refused naming the key before any
 *     allocation (it used to allocate a model of that size first);
 *   - blk.1.ffn_up.weight declared with 1 row: the metadata's model has more
 *     parameters than the file's tensors hold, refused before allocation.
 * And --force onto a directory (import_to_dir):
 *   - holding a file the import did not write: refused, nothing changed;
 *   - holding only an earlier import's files: replaced by the new import,
 *     no temporary directory left beside it.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "gguf_testutil.h"
#include "trainer/hf.h"

static char dir[64], tok[128], gguf[128];
static uint8_t *orig;
static size_t orig_n;

/* the byte offset just after the GGUF string `s` (u64 length + bytes) */
static size_t after_string(const uint8_t *b, size_t n, const char *s) {
    size_t len = strlen(s);
    for (size_t i = 8; i + len <= n; i++)
        if (!memcmp(b + i, s, len)) {
            uint64_t l;
            memcpy(&l, b + i - 8, 8);
            if (l == len) return i + len;
        }
    return 0;
}

/* writes a copy of the export with `len` bytes at `at` replaced; the path */
static const char *patched(const char *what, size_t at, const void *bytes, size_t len) {
    static char path[192];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, what);
    uint8_t *b = malloc(orig_n);
    memcpy(b, orig, orig_n);
    CHECK(at && at + len <= orig_n, "%s: field not found", what);
    if (at && at + len <= orig_n) memcpy(b + at, bytes, len);
    CHECK(write_bytes(path, b, orig_n) == 0);
    free(b);
    return path;
}

static void expect_refused(const char *path, const char *need) {
    char err[1024] = "";
    Model *m = gguf_import_model(path, err, sizeof err);
    CHECK(m == NULL, "%s: imported", path);
    model_free(m);
    CHECK_MSG(err, need);
}

static void test_rope_theta(void) {
    size_t at = after_string(orig, orig_n, "llama.rope.freq_base");
    uint32_t type = 0;
    if (at) memcpy(&type, orig + at, 4);
    CHECK(type == GGUF_FLOAT32);
    const float bad[] = {INFINITY, -INFINITY, NAN, 0.0f, -1.0f};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = patched("freq_base", at + 4, &bad[i], 4);
        expect_refused(p, "rope_theta must be a finite number > 0");
        char out[192], err[1024] = "";
        snprintf(out, sizeof out, "%s/freq_base.ckpt", dir);
        CHECK(gguf_import_to_dir(p, out, 0, err, sizeof err) != 0);
        CHECK(access(out, F_OK) != 0, "a refused import left %s", out);
    }
}

static void test_feed_forward_length(void) {
    size_t at = after_string(orig, orig_n, "llama.feed_forward_length");
    uint32_t big = 1u << 28;
    expect_refused(patched("ffl", at + 4, &big, 4),
                   "llama.feed_forward_length = 268435456 needs a 2-D tensor blk.0.ffn_up.weight");
}

static void test_params_backed(void) {
    /* tensor info: name, u32 n_dims, u64 ne[0], u64 ne[1] */
    size_t at = after_string(orig, orig_n, "blk.1.ffn_up.weight");
    uint32_t nd = 0;
    uint64_t ne1 = 0;
    if (at) memcpy(&nd, orig + at, 4), memcpy(&ne1, orig + at + 12, 8);
    CHECK(nd == 2 && ne1 == 96, "blk.1.ffn_up.weight: n_dims %u ne[1] %llu", nd,
          (unsigned long long)ne1);
    uint64_t one = 1;
    expect_refused(patched("ffn_rows", at + 12, &one, 8), "the metadata describe a model of");
}

static int count_entries(const char *d, const char *prefix) {
    DIR *dd = opendir(d);
    int n = 0;
    for (struct dirent *e; dd && (e = readdir(dd));)
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (dd) closedir(dd);
    return n;
}

static void test_force(void) {
    char out[192], p[256], err[1024] = "";
    snprintf(out, sizeof out, "%s/ckpt", dir);
    CHECK(gguf_import_to_dir(gguf, out, 0, err, sizeof err) == 0, "%s", err);
    /* a file dapt did not write: --force refuses and changes nothing */
    snprintf(p, sizeof p, "%s/notes.txt", out);
    CHECK(write_bytes(p, "mine", 4) == 0);
    size_t n_before, n_after, n_notes;
    snprintf(p, sizeof p, "%s/model.safetensors", out);
    uint8_t *before = read_bytes(p, &n_before);
    CHECK(gguf_import_to_dir(gguf, out, 1, err, sizeof err) != 0);
    CHECK_MSG(err, "holds notes.txt");
    CHECK_MSG(err, "nothing was changed");
    uint8_t *after = read_bytes(p, &n_after);
    CHECK(before && after && n_before == n_after && !memcmp(before, after, n_before));
    snprintf(p, sizeof p, "%s/config.json", out);
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/notes.txt", out);
    uint8_t *notes = read_bytes(p, &n_notes);
    CHECK(notes && n_notes == 4 && !memcmp(notes, "mine", 4));
    free(before), free(after), free(notes);
    /* only an import's files: replaced, by a model of the new file */
    remove(p);
    snprintf(p, sizeof p, "%s/config.json", out);
    CHECK(write_bytes(p, "{}", 2) == 0); /* marks the old one */
    CHECK(gguf_import_to_dir(gguf, out, 1, err, sizeof err) == 0, "%s", err);
    ModelConfig c;
    CHECK(hf_load_config(out, &c, err, sizeof err) == 0 && c.d_ff == 96, "%s", err);
    CHECK(count_entries(dir, "ckpt.") == 0, "a temporary directory was left beside %s", out);
    /* a plain file in the way */
    snprintf(p, sizeof p, "%s/afile", dir);
    CHECK(write_bytes(p, "x", 1) == 0);
    CHECK(gguf_import_to_dir(gguf, p, 1, err, sizeof err) != 0);
    CHECK_MSG(err, "is not a directory");
    remove(p);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dapt_gguf_hostile_XXXXXX");
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    size_t n;
    uint8_t *b = spm_test_model(30, &n);
    snprintf(tok, sizeof tok, "%s/tokenizer.model", dir);
    CHECK(write_bytes(tok, b, n) == 0);
    free(b);
    ModelConfig c = gguf_test_config(ARCH_LLAMA, 0, 0, 0);
    char err[1024];
    Model *m = model_create(&c, ops_cpu(), err, sizeof err);
    CHECK(m != NULL, "%s", err);
    if (!m) return CHECK_DONE();
    test_model_randomize(m, 7);
    snprintf(gguf, sizeof gguf, "%s/tiny.gguf", dir);
    GgufExportOptions o = {.dtype = GGML_F32, .tokenizer = tok, .name = "tiny"};
    CHECK(gguf_export_model(m, gguf, &o, err, sizeof err) == 0, "%s", err);
    model_free(m);
    orig = read_bytes(gguf, &orig_n);
    CHECK(orig != NULL);
    if (orig) {
        test_rope_theta();
        test_feed_forward_length();
        test_params_backed();
        test_force();
    }
    free(orig);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (check_failures == 0 && system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return CHECK_DONE();
}
