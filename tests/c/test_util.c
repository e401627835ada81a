/* test_util.c: the shared helpers (kernels/util.h). err_set formats into the
 * caller's buffer, truncates at err_len and stays terminated, writes nothing
 * without a buffer, and always returns -1; mkdir_p creates nested
 * directories, accepts ones that exist, and fails naming the path when a
 * component is a file; now_s never goes backwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/util.h"
#include "tests/c/check.h"

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void test_err_set(void) {
    char err[64];
    CHECK(err_set(err, sizeof err, "%s: byte %llu: expected %d", "a.bin", 12ULL, 7) == -1);
    CHECK(!strcmp(err, "a.bin: byte 12: expected 7"), "got \"%s\"", err);

    /* truncation: at most err_len - 1 characters, then the terminator; the
     * bytes after the buffer are untouched */
    char small[8 + 4];
    memset(small, 'x', sizeof small);
    CHECK(err_set(small, 8, "%s", "0123456789abcdef") == -1);
    CHECK(!strcmp(small, "0123456"), "got \"%s\"", small);
    CHECK(small[8] == 'x' && small[11] == 'x', "wrote past err_len");

    /* err_len 1: only the terminator */
    char one[2] = {'x', 'x'};
    CHECK(err_set(one, 1, "long message") == -1);
    CHECK(one[0] == 0 && one[1] == 'x');

    /* no buffer: nothing written, still -1 */
    char untouched[4] = "abc";
    CHECK(err_set(NULL, 0, "x %d", 1) == -1);
    CHECK(err_set(NULL, 100, "x %d", 1) == -1);
    CHECK(err_set(untouched, 0, "x %d", 1) == -1);
    CHECK(!strcmp(untouched, "abc"));
}

static void test_mkdir_p(void) {
    char root[] = "/tmp/dapt_test_util_XXXXXX", path[256], file[256], err[512];
    CHECK(mkdtemp(root) != NULL);

    snprintf(path, sizeof path, "%s/a/b/c", root);
    CHECK_OK(mkdir_p(path, err, sizeof err), err);
    CHECK(is_dir(path));
    CHECK_OK(mkdir_p(path, err, sizeof err), err);  /* exists: fine */
    snprintf(path, sizeof path, "%s/a/b/c/", root); /* trailing slash */
    CHECK_OK(mkdir_p(path, err, sizeof err), err);

    /* a component that is a file: -1 and the message names the path */
    snprintf(file, sizeof file, "%s/f", root);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/f/sub/dir", root);
    err[0] = 0;
    CHECK(mkdir_p(path, err, sizeof err) == -1);
    CHECK_MSG(err, "cannot create directory ");
    CHECK_MSG(err, file);
    /* the last component a file: not a directory, so not success */
    err[0] = 0;
    CHECK(mkdir_p(file, err, sizeof err) == -1);
    CHECK_MSG(err, file);
    CHECK(mkdir_p(path, NULL, 0) == -1);

    /* mkdir_parent: the directories above a file, not the file itself; a
     * bare name needs none */
    snprintf(path, sizeof path, "%s/p/q/out.gguf", root);
    CHECK_OK(mkdir_parent(path, err, sizeof err), err);
    snprintf(path, sizeof path, "%s/p/q", root);
    CHECK(is_dir(path));
    snprintf(path, sizeof path, "%s/p/q/out.gguf", root);
    CHECK(access(path, F_OK) != 0, "mkdir_parent created the file's own name");
    CHECK_OK(mkdir_parent("out.gguf", err, sizeof err), err);
    snprintf(path, sizeof path, "%s/f/out.gguf", root);
    CHECK(mkdir_parent(path, err, sizeof err) == -1);
    CHECK_MSG(err, file);
    snprintf(path, sizeof path, "%s/p/q", root);
    rmdir(path);
    snprintf(path, sizeof path, "%s/p", root);
    rmdir(path);

    snprintf(path, sizeof path, "%s/a/b/c", root);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a/b", root);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a", root);
    rmdir(path);
    unlink(file);
    CHECK(rmdir(root) == 0, "scratch directory %s left non-empty", root);
}

static void test_now_s(void) {
    double prev = now_s();
    CHECK(prev > 0);
    int n_back = 0;
    for (int i = 0; i < 100000; i++) {
        double t = now_s();
        n_back += t < prev;
        prev = t;
    }
    CHECK(n_back == 0, "now_s went back %d times in 100000 reads", n_back);
    /* it advances: 20 ms of sleep shows as at least 15 ms */
    double t0 = now_s();
    usleep(20000);
    CHECK(now_s() - t0 >= 0.015);
}

static void test_edit_distance(void) {
    CHECK(edit_distance("resume", 6, "resume") == 0);
    CHECK(edit_distance("resum", 5, "resume") == 1);
    CHECK(edit_distance("--modle", 7, "--model") == 2); /* a swap is two edits */
    CHECK(edit_distance("kitten", 6, "sitting") == 3);
    CHECK(edit_distance("abcdef", 3, "abc") == 0); /* only the first n chars */
    CHECK(edit_distance("", 0, "abc") == 3);
    char long_name[70];
    memset(long_name, 'x', sizeof long_name - 1), long_name[sizeof long_name - 1] = 0;
    CHECK(edit_distance(long_name, strlen(long_name), "x") == (size_t)-1);
}

/* find_duplicate: none in distinct names (empty, one, many), the repeated
 * one found wherever the two copies are; names compared by content */
static void test_find_duplicate(void) {
    const char *dup = NULL;
    const char *none[] = {"b", "a", "c", "ab", ""};
    CHECK(find_duplicate(none, 0, &dup) == 0 && find_duplicate(none, 1, &dup) == 0);
    CHECK(find_duplicate(none, 5, &dup) == 0);
    char x1[] = "x", x2[] = "x"; /* equal strings at different addresses */
    const char *two[] = {"q", x1, "a", "z", x2, "b"};
    CHECK(find_duplicate(two, 6, &dup) == 1 && dup && !strcmp(dup, "x"));
    const char *ends[] = {"", "m", ""};
    CHECK(find_duplicate(ends, 3, &dup) == 1 && !strcmp(dup, ""));
}

/* str_escape: control bytes and backslash escaped, the rest (UTF-8 too)
 * kept; cut at the buffer's end, never mid-escape */
static void test_str_escape(void) {
    char out[64];
    CHECK(!strcmp(str_escape("a\x1b[2Jb\\c\x7f\n", out, sizeof out), "a\\x1b[2Jb\\\\c\\x7f\\x0a"));
    CHECK(!strcmp(str_escape("caf\xc3\xa9 ok", out, sizeof out), "caf\xc3\xa9 ok"));
    CHECK(!strcmp(str_escape("ab\x01", out, 6), "ab"));
    CHECK(!strcmp(str_escape("ab\x01", out, 7), "ab\\x01"));
}

int main(void) {
    test_err_set();
    test_mkdir_p();
    test_now_s();
    test_edit_distance();
    test_find_duplicate();
    test_str_escape();
    return CHECK_DONE();
}
