/* ckpt.c: checkpoint save / check / load / find-latest / keep-last-k (see
 * ckpt.h for the layout and the invariants).
 *
 * Crash safety: everything goes to .tmp-step-N first; each file is fsynced
 * by its writer (st_write, hf_write_file_atomic), then the directory itself,
 * then it is renamed to step-N and the parent fsynced. Leftover .tmp-step-*
 * directories (a crash mid-save) are removed by the next save; one process
 * saves into an OUT_DIR at a time.
 */
#define _GNU_SOURCE /* nftw's FTW_DEPTH | FTW_PHYS */
#include "trainer/ckpt.h"
#include "kernels/util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "data/hash.h"
#include "trainer/hf.h"
#include "trainer/safetensors.h"

/* the files every checkpoint has; the optimizer state's depend on its
 * layout (trainer_state.json "optimizer") */
static const char *const ckpt_files[] = {"model.safetensors", "config.json",
                                         "trainer_state.json"};
#define N_CKPT_FILES 3

void ckpt_state_free(CkptState *st) {
    if (!st) return;
    free(st->data_fingerprint);
    free(st->config_text);
    free(st->tokenizer_path);
    free(st->run_id);
    st->data_fingerprint = st->config_text = st->tokenizer_path = st->run_id = NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}
static int rm_tree(const char *path) {
    if (access(path, F_OK) != 0) return 0;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 1;
    int rc = fsync(fd);
    close(fd);
    return rc != 0;
}

/* "step-00000012" -> 12; -1 when the name is not a checkpoint's */
static int64_t parse_step_name(const char *name) {
    if (strncmp(name, "step-", 5) || strlen(name) < 13) return -1;
    int64_t v = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT64_MAX / 10 - 10) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

void ckpt_opt_shard_name(char *buf, size_t len, int rank, int world) {
    snprintf(buf, len, "optimizer-%05d-of-%05d.safetensors", rank, world);
}

/* "optimizer": {"layout": "hf", "file": "optimizer.safetensors"}, or
 * {"layout": "zero1", "world": W, "numel": N, "shards": [{"file", "offset",
 * "count"} x W]}; 0 when out of memory */
static int add_opt_layout(cJSON *r, const CkptState *st) {
    cJSON *o = cJSON_AddObjectToObject(r, "optimizer");
    if (!o) return 0;
    if (st->opt_world <= 0)
        return cJSON_AddStringToObject(o, "layout", "hf") &&
               cJSON_AddStringToObject(o, "file", "optimizer.safetensors");
    cJSON *shards;
    size_t off = 0;
    for (int w = 0; w < st->opt_world; w++) off += st->opt_counts[w];
    if (!cJSON_AddStringToObject(o, "layout", "zero1") ||
        !cJSON_AddNumberToObject(o, "world", st->opt_world) ||
        !cJSON_AddNumberToObject(o, "numel", (double)off) ||
        !(shards = cJSON_AddArrayToObject(o, "shards")))
        return 0;
    off = 0;
    for (int w = 0; w < st->opt_world; w++) {
        char name[64];
        cJSON *e = cJSON_CreateObject();
        ckpt_opt_shard_name(name, sizeof name, w, st->opt_world);
        if (!e || !cJSON_AddItemToArray(shards, e) || !cJSON_AddStringToObject(e, "file", name) ||
            !cJSON_AddNumberToObject(e, "offset", (double)off) ||
            !cJSON_AddNumberToObject(e, "count", (double)st->opt_counts[w]))
            return 0;
        off += st->opt_counts[w];
    }
    return 1;
}

/* The checksum of every file: XXH3 64-bit (libxxhash; `xxhsum -H3 FILE`
 * prints the same value), as 16 hex digits, read back in 4 MiB blocks
 * after the file is written. Checkpoints written before it carry
 * data/hash.h's hash_file (FNV-1a 64 + the splitmix64 finaliser, ~1 GB/s),
 * which is still verified. */
#define CKPT_CHECKSUM_ALGORITHM "xxh3-64"
#define CKPT_CHECKSUM_OLD "fnv1a64-mix"

/* XXH3 64 of a whole file; 0 on success, -1 (errno set) when unreadable. */
static int file_xxh3(const char *path, uint64_t *hash_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    enum { BLOCK = 4 << 20 };
    unsigned char *buf = malloc(BLOCK);
    XXH3_state_t *x = XXH3_createState();
    int bad = !buf || !x || XXH3_64bits_reset(x) == XXH_ERROR;
    size_t n;
    while (!bad && (n = fread(buf, 1, BLOCK, f)) > 0)
        bad = XXH3_64bits_update(x, buf, n) == XXH_ERROR;
    bad = bad || ferror(f);
    if (!bad) *hash_out = XXH3_64bits_digest(x);
    fclose(f);
    free(buf);
    XXH3_freeState(x);
    if (bad) errno = errno ? errno : EIO;
    return bad ? -1 : 0;
}

/* "checksums": {"algorithm", "files": {NAME: HEX}} of every regular file
 * in dir but trainer_state.json (which holds it), read back after they are
 * written: a ZeRO run's per-rank optimizer shards included. NULL and err
 * on failure. */
static cJSON *dir_checksums(const char *dir, char *err, size_t err_len) {
    char path[4200], hex[20];
    cJSON *c = cJSON_CreateObject(), *files = NULL;
    if (!c || !cJSON_AddStringToObject(c, "algorithm", CKPT_CHECKSUM_ALGORITHM) ||
        !(files = cJSON_AddObjectToObject(c, "files"))) {
        cJSON_Delete(c);
        return err_set(err, err_len, "out of memory"), NULL;
    }
    DIR *d = opendir(dir);
    if (!d) {
        cJSON_Delete(c);
        return err_set(err, err_len, "%s: cannot list: %s", dir, strerror(errno)), NULL;
    }
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        struct stat sb;
        uint64_t h;
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "trainer_state.json")) continue;
        if (hf_path(path, sizeof path, dir, e->d_name) || stat(path, &sb) || !S_ISREG(sb.st_mode))
            continue;
        if (file_xxh3(path, &h)) {
            rc = err_set(err, err_len, "%s: cannot read it back for its checksum: %s", path,
                         strerror(errno));
            break;
        }
        snprintf(hex, sizeof hex, "%016" PRIx64, h);
        if (!cJSON_AddStringToObject(files, e->d_name, hex))
            rc = err_set(err, err_len, "out of memory");
    }
    closedir(d);
    if (rc) cJSON_Delete(c);
    return rc ? NULL : c;
}

/* Checks dir's files against trainer_state.json's "checksums" (r); the
 * number of files checked into *n_files, 0 for a checkpoint written before
 * checksums existed. 1 and err naming the first file that is missing or
 * differs. */
static int verify_checksums(const cJSON *r, const char *dir, int *n_files, char *err,
                            size_t err_len) {
    char path[4200];
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "checksums");
    *n_files = 0;
    if (!c) return 0;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(c, "algorithm");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(c, "files");
    int old = cJSON_IsString(alg) && !strcmp(alg->valuestring, CKPT_CHECKSUM_OLD);
    if (!cJSON_IsString(alg) || (strcmp(alg->valuestring, CKPT_CHECKSUM_ALGORITHM) && !old) ||
        !cJSON_IsObject(files))
        return err_set(err, err_len,
                       "%s/trainer_state.json: \"checksums\" must be {\"algorithm\": \"%s\", "
                       "\"files\": {NAME: HEX}}",
                       dir, CKPT_CHECKSUM_ALGORITHM);
    const cJSON *f;
    cJSON_ArrayForEach(f, files) {
        uint64_t h, want;
        char *end = NULL;
        if (!cJSON_IsString(f) || !f->string[0] || strchr(f->string, '/') ||
            strlen(f->valuestring) != 16 ||
            (want = strtoull(f->valuestring, &end, 16), !end || *end))
            return err_set(err, err_len,
                           "%s/trainer_state.json: checksum of \"%s\" is not 16 hex digits", dir,
                           f->string);
        if (hf_path(path, sizeof path, dir, f->string))
            return err_set(err, err_len, "%s: path too long", dir);
        if (old ? hash_file(path, &h) : file_xxh3(path, &h))
            return err_set(err, err_len, "checkpoint %s: %s: cannot read it: %s", dir, f->string,
                           strerror(errno));
        if (h != want)
            return err_set(err, err_len,
                           "checkpoint %s: %s does not match its checksum (%s %016" PRIx64
                           " recorded, %016" PRIx64 " now): the file is damaged",
                           dir, f->string, alg->valuestring, want, h);
        (*n_files)++;
    }
    return 0;
}

static char *state_json(const CkptState *st, cJSON *checksums) {
    cJSON *r = cJSON_CreateObject();
    char hex[CKPT_RNG_WORDS][20];
    const char *hp[CKPT_RNG_WORDS];
    for (int i = 0; i < CKPT_RNG_WORDS; i++) {
        snprintf(hex[i], sizeof hex[i], "%016" PRIx64, st->rng[i]);
        hp[i] = hex[i];
    }
    if (!r || !cJSON_AddStringToObject(r, "format", "dapt-trainer-state") ||
        !cJSON_AddNumberToObject(r, "version", 1) ||
        !cJSON_AddNumberToObject(r, "step", (double)st->step) ||
        !cJSON_AddNumberToObject(r, "adam_step", (double)(st->adam_step ? st->adam_step : st->step)) ||
        !cJSON_AddNumberToObject(r, "tokens", (double)st->tokens) ||
        !cJSON_AddNumberToObject(r, "lr", st->lr) ||
        !cJSON_AddStringToObject(r, "data_fingerprint", st->data_fingerprint ? st->data_fingerprint : "") ||
        !cJSON_AddItemToObject(r, "rng", cJSON_CreateStringArray(hp, CKPT_RNG_WORDS)) ||
        !cJSON_AddStringToObject(r, "config", st->config_text ? st->config_text : "") ||
        (st->run_id && !cJSON_AddStringToObject(r, "run_id", st->run_id)) ||
        !add_opt_layout(r, st) || !cJSON_AddItemToObject(r, "checksums", checksums)) {
        if (!cJSON_GetObjectItemCaseSensitive(r, "checksums")) cJSON_Delete(checksums);
        cJSON_Delete(r);
        return NULL;
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}

/* Copies src to dst via dst.tmp + fsync + rename. */
static int copy_file(const char *src, const char *dst, char *err, size_t err_len) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 1;
    if (in < 0) return err_set(err, err_len, "%s: cannot open: %s", src, strerror(errno));
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        err_set(err, err_len, "%s: cannot create: %s", tmp, strerror(errno));
        close(in);
        return 1;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            err_set(err, err_len, "%s: read failed: %s", src, strerror(errno));
            goto done;
        }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                err_set(err, err_len, "%s: write failed: %s", tmp, strerror(errno));
                goto done;
            }
            off += w;
        }
    }
    if (fsync(out)) {
        err_set(err, err_len, "%s: fsync failed: %s", tmp, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    close(in);
    if (close(out) && !rc) rc = err_set(err, err_len, "%s: close failed", tmp);
    if (!rc && rename(tmp, dst))
        rc = err_set(err, err_len, "%s: rename failed: %s", tmp, strerror(errno));
    if (rc) unlink(tmp);
    return rc;
}

static int32_t step_i32(int64_t step) { return (int32_t)(step > INT32_MAX ? INT32_MAX : step); }

/* optimizer.safetensors: the whole moments in HF layout, from the model */
static int write_opt_whole(const char *dir, const Model *m, int64_t step, char *err,
                           size_t err_len) {
    char path[4200];
    size_t np = model_num_params(m);
    float *mv = malloc(2 * np * sizeof *mv + 1);
    if (!mv) return err_set(err, err_len, "out of memory for the optimizer state");
    model_get_adam_state(m, mv, mv + np);
    const float *bufs[] = {mv, mv + np};
    const char *prefixes[] = {"exp_avg.", "exp_avg_sq."};
    int32_t s32 = step_i32(step);
    StWriteTensor extra = {"step", ST_I32, 1, {1}, &s32};
    int rc = hf_path(path, sizeof path, dir, "optimizer.safetensors")
                 ? err_set(err, err_len, "%s: path too long", dir)
                 : hf_write_params(path, m, bufs, prefixes, 2, &extra, 1, err, err_len);
    free(mv);
    return rc;
}

int ckpt_save_opt_shard(const char *tmp_dir, int rank, int world, int64_t step, size_t count,
                        const float *adam_m, const float *adam_v, char *err, size_t err_len) {
    char name[64], path[4200];
    ckpt_opt_shard_name(name, sizeof name, rank, world);
    if (hf_path(path, sizeof path, tmp_dir, name))
        return err_set(err, err_len, "%s: path too long", tmp_dir);
    int32_t s32 = step_i32(step);
    StWriteTensor t[3] = {{"exp_avg", ST_F32, 1, {(int64_t)count}, adam_m},
                          {"exp_avg_sq", ST_F32, 1, {(int64_t)count}, adam_v},
                          {"step", ST_I32, 1, {1}, &s32}};
    const char *meta[] = {"format", "pt"};
    return st_write(path, t, 3, meta, 1, err, err_len);
}

static int write_into(const char *dir, const Model *m, const CkptState *st, char *err,
                      size_t err_len) {
    char path[4200];
    int n_tok = 0;
    const TokenizerFile *tf = st->tokenizer ? tokenizer_files(st->tokenizer, &n_tok) : NULL;
    for (int i = 0; i < n_tok; i++) {
        if (hf_path(path, sizeof path, dir, tf[i].name))
            return err_set(err, err_len, "%s: path too long", dir);
        if (copy_file(tf[i].path, path, err, err_len)) return 1;
    }
    if (hf_save_weights_from(dir, m, st->params_src, st->params_ctx, st->max_shard_bytes, err,
                             err_len) ||
        hf_save_config(dir, model_config(m), err, err_len))
        return 1;
    if (st->opt_world <= 0 && write_opt_whole(dir, m, st->step, err, err_len)) return 1;
    cJSON *sums = dir_checksums(dir, err, err_len);
    if (!sums) return 1;
    char *js = state_json(st, sums);
    if (!js) return err_set(err, err_len, "out of memory");
    if (hf_path(path, sizeof path, dir, "trainer_state.json")) {
        free(js);
        return err_set(err, err_len, "%s: path too long", dir);
    }
    int rc = hf_write_file_atomic(path, js, err, err_len);
    free(js);
    return rc;
}

/* Step numbers of the step-* directories, newest first (malloc'd). */
static int list_steps(const char *ckdir, int64_t **steps, int *n, char *err, size_t err_len) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(ckdir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return err_set(err, err_len, "%s: cannot list: %s", ckdir, strerror(errno));
    }
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int64_t s = parse_step_name(e->d_name);
        if (s < 0) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *p = realloc(*steps, (size_t)cap * sizeof *p);
            if (!p) {
                closedir(d);
                return err_set(err, err_len, "out of memory");
            }
            *steps = p;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return 0;
}

static void remove_tmp_dirs(const char *ckdir) {
    DIR *d = opendir(ckdir);
    if (!d) return;
    char path[4200];
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, ".tmp-step-", 10) && strncmp(e->d_name, ".old-step-", 10)) continue;
        if (!hf_path(path, sizeof path, ckdir, e->d_name)) rm_tree(path);
    }
    closedir(d);
}

/* OUT_DIR/ckpt into ckdir; 0 or err filled */
static int ckpt_dir_of(const char *out_dir, char *ckdir, size_t len, char *err, size_t err_len) {
    if (hf_path(ckdir, len - 64, out_dir, "ckpt"))
        return err_set(err, err_len, "%s: path too long", out_dir);
    return 0;
}

static cJSON *load_state_json(const char *dir, char *err, size_t err_len);

/* 1 when the checkpoint dir was written by run_id (any checkpoint when
 * run_id is NULL); one whose trainer state cannot be read is not. */
static int same_run(const char *dir, const char *run_id) {
    char e[512];
    if (!run_id) return 1;
    cJSON *r = load_state_json(dir, e, sizeof e);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "run_id");
    int same = cJSON_IsString(id) && !strcmp(id->valuestring, run_id);
    cJSON_Delete(r);
    return same;
}

int ckpt_save_begin(const char *out_dir, int64_t step, char *tmp_dir, size_t tmp_len, char *err,
                    size_t err_len) {
    char ckdir[4096], name[64];
    if (step < 0 || step > INT32_MAX)
        return err_set(err, err_len, "checkpoint step %lld out of range", (long long)step);
    if (ckpt_dir_of(out_dir, ckdir, sizeof ckdir, err, err_len)) return 1;
    if (mkdir_p(ckdir, err, err_len)) return -1;
    remove_tmp_dirs(ckdir);
    snprintf(name, sizeof name, ".tmp-step-%08lld", (long long)step);
    if (hf_path(tmp_dir, tmp_len, ckdir, name))
        return err_set(err, err_len, "%s: path too long", ckdir);
    if (mkdir(tmp_dir, 0755))
        return err_set(err, err_len, "%s: cannot create: %s", tmp_dir, strerror(errno));
    return 0;
}

void ckpt_save_abort(const char *tmp_dir) { rm_tree(tmp_dir); }

int ckpt_save_commit(const char *out_dir, const char *tmp_dir, const Model *m,
                     const CkptState *st, int keep, char *path_out, size_t path_len, char *err,
                     size_t err_len) {
    char ckdir[4096], final[4200], old[4200], name[64];
    if (st->step < 0 || st->step > INT32_MAX || st->tokens < 0) {
        err_set(err, err_len, "checkpoint step %lld / tokens %lld out of range",
                (long long)st->step, (long long)st->tokens);
        rm_tree(tmp_dir);
        return 1;
    }
    if (ckpt_dir_of(out_dir, ckdir, sizeof ckdir, err, err_len)) return 1;
    snprintf(name, sizeof name, "step-%08lld", (long long)st->step);
    hf_path(final, sizeof final, ckdir, name);
    snprintf(name, sizeof name, ".old-step-%08lld", (long long)st->step);
    hf_path(old, sizeof old, ckdir, name);
    if (write_into(tmp_dir, m, st, err, err_len)) {
        rm_tree(tmp_dir);
        return 1;
    }
    if (fsync_dir(tmp_dir)) {
        err_set(err, err_len, "%s: fsync failed: %s", tmp_dir, strerror(errno));
        rm_tree(tmp_dir);
        return 1;
    }
    int replaced = access(final, F_OK) == 0;
    if ((replaced && rename(final, old)) || rename(tmp_dir, final)) {
        err_set(err, err_len, "%s: cannot rename to %s: %s", tmp_dir, final, strerror(errno));
        rm_tree(tmp_dir);
        return 1;
    }
    fsync_dir(ckdir);
    if (replaced) rm_tree(old);
    if (path_out) snprintf(path_out, path_len, "%s", final);
    if (keep > 0) {
        int64_t *steps;
        int n, mine = 0;
        if (list_steps(ckdir, &steps, &n, err, err_len)) return 1;
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "step-%08lld", (long long)steps[i]);
            hf_path(old, sizeof old, ckdir, name);
            if (!same_run(old, st->run_id) || ++mine <= keep) continue;
            /* renamed out of the step-* names first: a kill while the tree
             * is deleted leaves a .old-step-* (removed by the next save),
             * never a step-N missing some of its files */
            char gone[4200];
            snprintf(name, sizeof name, ".old-step-%08lld", (long long)steps[i]);
            hf_path(gone, sizeof gone, ckdir, name);
            if (rename(old, gone) || rm_tree(gone)) {
                err_set(err, err_len, "%s: cannot delete an old checkpoint: %s", old,
                        strerror(errno));
                free(steps);
                return 1;
            }
        }
        free(steps);
        fsync_dir(ckdir);
    }
    return 0;
}

int ckpt_save(const char *out_dir, const Model *m, const CkptState *st, int keep, char *path_out,
              size_t path_len, char *err, size_t err_len) {
    char tmp[4200];
    if (st->opt_world > 0)
        return err_set(err, err_len,
                       "ckpt_save writes the whole optimizer state; a sharded one "
                       "is saved with ckpt_save_begin / _opt_shard / _commit");
    /* begin checks the step, commit the step and tokens */
    return ckpt_save_begin(out_dir, st->step, tmp, sizeof tmp, err, err_len) ||
           ckpt_save_commit(out_dir, tmp, m, st, keep, path_out, path_len, err, err_len);
}

static cJSON *load_state_json(const char *dir, char *err, size_t err_len) {
    char path[4200];
    if (hf_path(path, sizeof path, dir, "trainer_state.json"))
        return err_set(err, err_len, "%s: path too long", dir), NULL;
    char *text = st_read_text(path, 64u << 20, err, err_len);
    if (!text) return NULL;
    cJSON *r = cJSON_Parse(text);
    free(text);
    if (!r) {
        err_set(err, err_len, "%s: not valid JSON (truncated?)", path);
        return NULL;
    }
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(r, "step");
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(r, "tokens");
    if (!cJSON_IsNumber(step) || !(step->valuedouble >= 0 && step->valuedouble < 2147483647.0) ||
        !cJSON_IsNumber(tokens) || !(tokens->valuedouble >= 0 && tokens->valuedouble < 9e15)) {
        err_set(err, err_len,
                "%s: \"step\" and \"tokens\" must be non-negative integers "
                "(damaged file?)",
                path);
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* trainer_state.json's "optimizer": where the Adam moments are */
typedef struct {
    int world;         /* 0: optimizer.safetensors, HF layout */
    size_t numel;      /* zero1: the flat parameter count */
    size_t *off, *cnt; /* zero1: (world) each shard's range */
} OptLayout;

static void layout_free(OptLayout *L) {
    free(L->off), free(L->cnt);
    memset(L, 0, sizeof *L);
}

static int json_size(const cJSON *j, size_t *v) {
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= 0 && j->valuedouble <= 9007199254740992.0) ||
        j->valuedouble != (double)(uint64_t)j->valuedouble)
        return 1;
    *v = (size_t)j->valuedouble;
    return 0;
}

/* Checkpoints without "optimizer" (written before it existed) are "hf". */
static int parse_layout(const cJSON *r, const char *dir, OptLayout *L, char *err, size_t err_len) {
    memset(L, 0, sizeof *L);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(r, "optimizer");
    if (!o) return 0;
    const cJSON *lay = cJSON_GetObjectItemCaseSensitive(o, "layout");
    if (cJSON_IsString(lay) && !strcmp(lay->valuestring, "hf")) return 0;
    if (!cJSON_IsString(lay) || strcmp(lay->valuestring, "zero1"))
        return err_set(err, err_len,
                       "%s/trainer_state.json: unknown optimizer layout (expected "
                       "\"hf\" or \"zero1\")",
                       dir);
    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(o, "shards");
    size_t world, numel, off = 0;
    int n = cJSON_IsArray(shards) ? cJSON_GetArraySize(shards) : -1;
    if (json_size(cJSON_GetObjectItemCaseSensitive(o, "world"), &world) ||
        json_size(cJSON_GetObjectItemCaseSensitive(o, "numel"), &numel) || world < 1 ||
        world > 99999 || n != (int)world)
        return err_set(err, err_len,
                       "%s/trainer_state.json: \"optimizer\" needs \"world\" "
                       "(1..99999), \"numel\" and one \"shards\" entry per rank",
                       dir);
    L->world = (int)world;
    L->numel = numel;
    L->off = malloc(world * sizeof(size_t));
    L->cnt = malloc(world * sizeof(size_t));
    if (!L->off || !L->cnt) return layout_free(L), err_set(err, err_len, "out of memory");
    for (int w = 0; w < n; w++) {
        const cJSON *e = cJSON_GetArrayItem(shards, w);
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
        char name[64];
        ckpt_opt_shard_name(name, sizeof name, w, L->world);
        if (!cJSON_IsString(f) || strcmp(f->valuestring, name) ||
            json_size(cJSON_GetObjectItemCaseSensitive(e, "offset"), &L->off[w]) ||
            json_size(cJSON_GetObjectItemCaseSensitive(e, "count"), &L->cnt[w]) ||
            L->off[w] != off || L->cnt[w] > numel - off) {
            layout_free(L);
            return err_set(err, err_len,
                           "%s/trainer_state.json: optimizer shard %d must be "
                           "{\"file\": \"%s\", \"offset\": %zu, \"count\": N} within %zu "
                           "elements",
                           dir, w, name, off, numel);
        }
        off += L->cnt[w];
    }
    if (off != numel) {
        layout_free(L);
        return err_set(err, err_len,
                       "%s/trainer_state.json: the optimizer shards cover %zu of "
                       "%zu elements",
                       dir, off, numel);
    }
    return 0;
}

/* DIR/NAME into path; 0 when it is readable, else 1 with "incomplete" in err */
static int present(const char *dir, const char *name, char *path, size_t len, char *err,
                   size_t err_len) {
    if (hf_path(path, len, dir, name)) return err_set(err, err_len, "%s: path too long", dir);
    if (access(path, R_OK) != 0)
        return err_set(err, err_len, "checkpoint %s is incomplete: %s is missing", dir, name);
    return 0;
}

/* A shard file of the zero1 layout: exp_avg and exp_avg_sq F32 [count] and
 * the checkpoint's step; the index of exp_avg and exp_avg_sq to *im, *iv. */
static StFile *open_opt_shard(const char *dir, const OptLayout *L, int w, int64_t step, int *im,
                              int *iv, char *err, size_t err_len) {
    char name[64], path[4200];
    ckpt_opt_shard_name(name, sizeof name, w, L->world);
    if (present(dir, name, path, sizeof path, err, err_len)) return NULL;
    StFile *f = st_open(path, err, err_len);
    if (!f) return NULL;
    int is = st_find(f, "step");
    *im = st_find(f, "exp_avg"), *iv = st_find(f, "exp_avg_sq");
    int32_t s32 = -1;
    const StTensor *tm = *im >= 0 ? st_tensor(f, *im) : NULL;
    const StTensor *tv = *iv >= 0 ? st_tensor(f, *iv) : NULL;
    if (!tm || !tv || tm->dtype != ST_F32 || tv->dtype != ST_F32 || tm->numel != L->cnt[w] ||
        tv->numel != L->cnt[w] || is < 0 || st_tensor(f, is)->numel != 1 ||
        st_read_i32(f, is, &s32, err, err_len) || s32 != step) {
        err_set(err, err_len,
                "%s: expected exp_avg and exp_avg_sq (F32 [%zu]) and step %lld "
                "(damaged, or from another checkpoint?)",
                path, L->cnt[w], (long long)step);
        st_close(f);
        return NULL;
    }
    return f;
}


/* ckpt_verify, the checksums only when `sums` (else every file present and
 * whole: what ckpt_load needs of a directory ckpt_find_latest verified). */
static int verify_dir(const char *dir, int sums, int *n_checksummed, char *err, size_t err_len) {
    char path[4200], idx[4200];
    *n_checksummed = 0;
    if (hf_path(path, sizeof path, dir, ckpt_files[0]) ||
        hf_path(idx, sizeof idx, dir, "model.safetensors.index.json"))
        return err_set(err, err_len, "%s: path too long", dir);
    int sharded = access(path, F_OK) != 0 && access(idx, F_OK) == 0;
    for (int i = sharded; i < N_CKPT_FILES; i++)
        if (present(dir, ckpt_files[i], path, sizeof path, err, err_len)) return 1;
    /* the weights (single or every shard) and the optimizer state are whole */
    StSet *s = st_set_open(dir, err, err_len);
    if (!s) return 1;
    st_set_close(s);
    ModelConfig cfg;
    if (hf_load_config(dir, &cfg, err, err_len)) return 1;
    cJSON *r = load_state_json(dir, err, err_len);
    if (!r) return 1;
    OptLayout L;
    int rc = parse_layout(r, dir, &L, err, err_len);
    int64_t step = (int64_t)cJSON_GetObjectItemCaseSensitive(r, "step")->valuedouble;
    /* a step-N directory holds step N's state (not a copy of another step) */
    const char *base = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    long long named;
    int len = 0;
    if (!rc && sscanf(base, "step-%lld%n", &named, &len) == 1 && !base[len] && named != step)
        rc = err_set(err, err_len,
                     "checkpoint %s: its trainer_state.json holds step %lld, its name says "
                     "step %lld (a checkpoint copied or renamed from another step?)",
                     dir, (long long)step, named);
    if (!rc && !L.world) {
        StFile *f = present(dir, "optimizer.safetensors", path, sizeof path, err, err_len)
                        ? NULL
                        : st_open(path, err, err_len);
        rc = !f;
        st_close(f);
    }
    for (int w = 0; w < L.world && !rc; w++) {
        int im, iv;
        StFile *f = open_opt_shard(dir, &L, w, step, &im, &iv, err, err_len);
        rc = !f;
        st_close(f);
    }
    /* whole, then the same bytes as written */
    if (!rc && sums) rc = verify_checksums(r, dir, n_checksummed, err, err_len);
    layout_free(&L);
    cJSON_Delete(r);
    return rc;
}

int ckpt_check(const char *dir, char *err, size_t err_len) {
    int n;
    return verify_dir(dir, 1, &n, err, err_len);
}

int ckpt_verify(const char *dir, int *n_checksummed, char *err, size_t err_len) {
    return verify_dir(dir, 1, n_checksummed, err, err_len);
}

/* trainer_state.json -> st (strings malloc'd) */
static int parse_state(const cJSON *r, const char *dir, CkptState *st, char *err, size_t err_len) {
    const cJSON *j;
    memset(st, 0, sizeof *st);
    st->step = (int64_t)cJSON_GetObjectItemCaseSensitive(r, "step")->valuedouble;
    if (cJSON_IsNumber(j = cJSON_GetObjectItemCaseSensitive(r, "tokens"))) st->tokens = (int64_t)j->valuedouble;
    j = cJSON_GetObjectItemCaseSensitive(r, "adam_step");
    st->adam_step = cJSON_IsNumber(j) ? (int64_t)j->valuedouble : st->step;
    if (cJSON_IsNumber(j = cJSON_GetObjectItemCaseSensitive(r, "lr"))) st->lr = j->valuedouble;
    j = cJSON_GetObjectItemCaseSensitive(r, "data_fingerprint");
    st->data_fingerprint = strdup(cJSON_IsString(j) ? j->valuestring : "");
    j = cJSON_GetObjectItemCaseSensitive(r, "config");
    st->config_text = strdup(cJSON_IsString(j) ? j->valuestring : "");
    j = cJSON_GetObjectItemCaseSensitive(r, "run_id");
    if (cJSON_IsString(j) && !(st->run_id = strdup(j->valuestring))) {
        ckpt_state_free(st);
        return err_set(err, err_len, "out of memory");
    }
    if (!st->data_fingerprint || !st->config_text) {
        ckpt_state_free(st);
        return err_set(err, err_len, "out of memory");
    }
    j = cJSON_GetObjectItemCaseSensitive(r, "rng");
    int ok = cJSON_IsArray(j) && cJSON_GetArraySize(j) == CKPT_RNG_WORDS;
    for (int i = 0; ok && i < CKPT_RNG_WORDS; i++) {
        const cJSON *w = cJSON_GetArrayItem(j, i);
        char *end = NULL;
        ok = cJSON_IsString(w) && w->valuestring[0] && strlen(w->valuestring) <= 16;
        if (ok) st->rng[i] = strtoull(w->valuestring, &end, 16);
        ok = ok && end && !*end;
    }
    if (!ok) {
        ckpt_state_free(st);
        return err_set(err, err_len, "%s/trainer_state.json: \"rng\" must be %d hex strings", dir,
                       CKPT_RNG_WORDS);
    }
    return 0;
}

/* The model's optimizer shard [o, o + c) of the moments, read from the
 * zero1 shard files that overlap it, into mom (c floats of exp_avg, then c
 * of exp_avg_sq). */
static int read_opt_range(const char *dir, const OptLayout *L, int64_t step, size_t o, size_t c,
                          float *mom, char *err, size_t err_len) {
    for (int w = 0; w < L->world; w++) {
        size_t lo = L->off[w] > o ? L->off[w] : o;
        size_t hi = L->off[w] + L->cnt[w] < o + c ? L->off[w] + L->cnt[w] : o + c;
        if (lo >= hi) continue;
        int im, iv;
        StFile *f = open_opt_shard(dir, L, w, step, &im, &iv, err, err_len);
        size_t first = lo - L->off[w], at = lo - o;
        int rc = !f || st_read_f32_range(f, im, first, hi - lo, mom + at, err, err_len) ||
                 st_read_f32_range(f, iv, first, hi - lo, mom + c + at, err, err_len);
        st_close(f);
        if (rc) return 1;
    }
    return 0;
}

static int load_dir(const char *dir, int sums, Model *m, CkptState *st, char *err,
                    size_t err_len) {
    int n_sums;
    if (verify_dir(dir, sums, &n_sums, err, err_len)) return 1;
    ModelConfig cfg;
    if (hf_load_config(dir, &cfg, err, err_len)) return 1;
    if (!model_config_same(&cfg, model_config(m)))
        return err_set(err, err_len,
                       "%s/config.json describes a different model than the one "
                       "being trained (compare its sizes with the run's [model] section)",
                       dir);
    cJSON *r = load_state_json(dir, err, err_len);
    if (!r) return 1;
    char path[4200];
    int rc = 1;
    size_t np = model_num_params(m), o = model_optimizer_offset(m), c = model_optimizer_count(m);
    float *mom = NULL; /* exp_avg | exp_avg_sq */
    StSet *f = NULL;
    CkptState tmp = {0};
    OptLayout L = {0};
    /* check everything (the weights' names and shapes, the state, the
     * moments read) before touching the model; the weights then stream in */
    if (hf_check_weights(dir, m, err, err_len) || parse_state(r, dir, &tmp, err, err_len) ||
        parse_layout(r, dir, &L, err, err_len))
        goto out;
    if (L.world) {
        /* per-rank shards: only the ranges this model's shard needs */
        if (L.numel != np) {
            err_set(err, err_len,
                    "%s: the optimizer shards hold %zu elements, the model has %zu "
                    "parameters",
                    dir, L.numel, np);
            goto out;
        }
        if (!(mom = malloc(2 * c * sizeof *mom + 1))) {
            err_set(err, err_len, "out of memory for the optimizer state");
            goto out;
        }
        if (read_opt_range(dir, &L, tmp.step, o, c, mom, err, err_len)) goto out;
    } else {
        int k;
        StFile *sf;
        int32_t opt_step = -1;
        hf_path(path, sizeof path, dir, "optimizer.safetensors");
        if (!(mom = malloc(2 * np * sizeof *mom + 1))) {
            err_set(err, err_len, "out of memory for the optimizer state");
            goto out;
        }
        if (!(f = st_set_open_file(path, err, err_len)) ||
            hf_read_params(f, m, "exp_avg.", mom, err, err_len) ||
            hf_read_params(f, m, "exp_avg_sq.", mom + np, err, err_len))
            goto out;
        if (st_set_find(f, "step", &sf, &k) || st_tensor(sf, k)->numel != 1 ||
            st_read_i32(sf, k, &opt_step, err, err_len) || opt_step != tmp.step) {
            err_set(err, err_len,
                    "%s: \"step\" (%d) is missing or differs from trainer_state.json's "
                    "step (%lld)",
                    path, opt_step, (long long)tmp.step);
            goto out;
        }
    }
    if (hf_load_weights(dir, m, err, err_len)) goto out;
    if (L.world) model_set_adam_shard(m, mom, mom + c);
    else model_set_adam_state(m, mom, mom + np);
    if (tokenizer_find(dir, path, sizeof path) && !(tmp.tokenizer_path = strdup(path))) {
        err_set(err, err_len, "out of memory");
        goto out;
    }
    tmp.opt_world = L.world;
    if (st) {
        *st = tmp;
        memset(&tmp, 0, sizeof tmp);
    }
    rc = 0;
out:
    ckpt_state_free(&tmp);
    layout_free(&L);
    st_set_close(f);
    free(mom);
    cJSON_Delete(r);
    return rc;
}

int ckpt_load(const char *dir, Model *m, CkptState *st, char *err, size_t err_len) {
    return load_dir(dir, 1, m, st, err, err_len);
}

int ckpt_load_found(const char *dir, Model *m, CkptState *st, char *err, size_t err_len) {
    return load_dir(dir, 0, m, st, err, err_len);
}

int ckpt_find_latest(const char *out_dir, char *path, size_t path_len, char *err, size_t err_len) {
    char ckdir[4096], dir[4200], e2[512], name[64];
    if (hf_path(ckdir, sizeof ckdir, out_dir, "ckpt"))
        return err_set(err, err_len, "%s: path too long", out_dir);
    int64_t *steps;
    int n;
    if (list_steps(ckdir, &steps, &n, err, err_len)) return -1;
    int found = 1;
    if (err_len) err[0] = 0;
    for (int i = 0; i < n && found; i++) {
        snprintf(name, sizeof name, "step-%08lld", (long long)steps[i]);
        hf_path(dir, sizeof dir, ckdir, name);
        if (ckpt_check(dir, e2, sizeof e2) == 0) {
            snprintf(path, path_len, "%s", dir);
            found = 0;
        } else if (err_len && !err[0]) {
            err_set(err, err_len, "skipped %s: %s", name, e2);
        }
    }
    free(steps);
    return found;
}
