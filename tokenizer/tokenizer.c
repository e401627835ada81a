/* tokenizer/tokenizer.c: the tokenizer interface (see tokenizer/tokenizer.h):
 * finding the files, reading tokenizer_config.json, and dispatching to the
 * sentencepiece or byte-level BPE implementation. */
#define _GNU_SOURCE
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/hash.h"
#include "kernels/util.h"
#include "tokenizer/bpe.h"
#include "tokenizer/spm.h"

#define MAX_FILES 4
#define MAX_CONFIG_BYTES (16u << 20)

struct Tokenizer {
    TokenizerKind kind;
    SpmModel *spm;
    BpeModel *bpe;
    int bos, eos, add_bos, add_eos;
    uint64_t hash;
    TokenizerFile files[MAX_FILES];
    int n_files;
};

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int readable(const char *p) { return access(p, R_OK) == 0; }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int tokenizer_find(const char *dir, char *path, size_t path_len) {
    static const char *const names[] = {"tokenizer.json", "tokenizer.model"};
    for (int i = 0; i < 2; i++) {
        int w = snprintf(path, path_len, "%s/%s", dir, names[i]);
        if (w > 0 && (size_t)w < path_len && readable(path)) return 1;
    }
    return 0;
}

static int add_file(Tokenizer *t, const char *dir, const char *name, int required, char *err,
                    size_t errlen) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0) return err_set(err, errlen, "out of memory");
    if (!readable(p)) {
        free(p);
        return required ? err_set(err, errlen, "%s/%s: cannot read: %s", dir, name, strerror(errno))
                        : 0;
    }
    t->files[t->n_files].path = p;
    t->files[t->n_files].name = name;
    t->n_files++;
    return 0;
}

/* A token in tokenizer_config.json: a string, an AddedToken object
 * ({"content": ...}) or null. Returns the content or NULL. */
static const char *config_token(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static int token_id(const Tokenizer *t, const char *s) {
    if (t->bpe) return bpe_token_id(t->bpe, s, strlen(s));
    return -1; /* sentencepiece: the model's own special ids are used */
}

/* Reads dir/tokenizer_config.json when present: BOS/EOS and the add flags.
 * A token named there must exist in the vocabulary. */
static int read_config(Tokenizer *t, const char *dir, char *err, size_t errlen) {
    char path[4096];
    int w = snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (w < 0 || (size_t)w >= sizeof path) return err_set(err, errlen, "%s: path too long", dir);
    if (!readable(path)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size > MAX_CONFIG_BYTES) {
        fclose(f);
        return err_set(err, errlen, "%s: larger than %u bytes or unreadable", path,
                       MAX_CONFIG_BYTES);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = buf ? fread(buf, 1, (size_t)st.st_size, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        return err_set(err, errlen, "%s: short read", path);
    }
    buf[got] = 0;
    cJSON *root = cJSON_ParseWithLength(buf, got);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(err, errlen, "%s: not a JSON object", path);
    }
    int rc = 0;
    const char *keys[2] = {"bos_token", "eos_token"};
    int *ids[2] = {&t->bos, &t->eos};
    for (int i = 0; i < 2 && !rc; i++) {
        const char *s = config_token(root, keys[i]);
        if (!s || t->kind != TOKENIZER_BPE) continue;
        int id = token_id(t, s);
        if (id < 0)
            rc = err_set(err, errlen, "%s: \"%s\" is \"%s\", which is not a token of %s", path,
                         keys[i], s, t->files[0].path);
        else
            *ids[i] = id;
    }
    const char *flags[2] = {"add_bos_token", "add_eos_token"};
    int *outs[2] = {&t->add_bos, &t->add_eos};
    for (int i = 0; i < 2 && !rc; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, flags[i]);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsBool(v))
            rc = err_set(err, errlen, "%s: \"%s\" must be true or false", path, flags[i]);
        else
            *outs[i] = cJSON_IsTrue(v);
    }
    cJSON_Delete(root);
    if (!rc) rc = add_file(t, dir, "tokenizer_config.json", 1, err, errlen);
    if (!rc) rc = add_file(t, dir, "special_tokens_map.json", 0, err, errlen);
    return rc;
}

/* Well-known end-of-text spellings, for a tokenizer.json without a config. */
static int guess_eos(const Tokenizer *t) {
    static const char *const names[] = {"<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int id = token_id(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

int tokenizer_load(Tokenizer **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, errlen, "out of memory");
    t->bos = t->eos = -1;
    char file[4096], dir[4096];
    int rc = 0;
    if (is_dir(path)) {
        if (!tokenizer_find(path, file, sizeof file)) {
            free(t);
            return err_set(err, errlen,
                           "%s: holds neither tokenizer.json nor tokenizer.model (an HF model "
                           "directory, a tokenizer.json or a sentencepiece .model is expected)",
                           path);
        }
        snprintf(dir, sizeof dir, "%s", path);
    } else {
        if (!readable(path)) {
            free(t);
            return err_set(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        }
        snprintf(file, sizeof file, "%s", path);
        const char *slash = strrchr(path, '/');
        if (slash)
            snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        else
            snprintf(dir, sizeof dir, ".");
    }
    int bpe = ends_with(file, ".json");
    if (bpe && is_dir(path)) {
        /* A directory with both files (Llama 2, Mistral, Gemma): their
         * tokenizer.json is a sentencepiece-style BPE (Metaspace, byte
         * fallback) that bpe_load refuses, and the tokenizer.model beside
         * it is the same tokenizer: that one is loaded instead. */
        char model[4096];
        int w = snprintf(model, sizeof model, "%s/tokenizer.model", dir);
        if (w > 0 && (size_t)w < sizeof model && readable(model)) {
            char why[512];
            if (bpe_load(&t->bpe, file, why, sizeof why)) {
                t->bpe = NULL;
                snprintf(file, sizeof file, "%s", model);
                bpe = 0;
            }
        }
    }
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    if (bpe) {
        t->kind = TOKENIZER_BPE;
        rc = t->bpe ? 0 : bpe_load(&t->bpe, file, err, errlen);
        if (!rc) {
            t->files[0].path = strdup(file);
            t->files[0].name = "tokenizer.json";
            t->n_files = 1;
            if (!t->files[0].path) rc = err_set(err, errlen, "out of memory");
        }
        if (!rc) {
            t->bos = bpe_template_bos(t->bpe);
            t->add_bos = t->bos >= 0;
            t->eos = guess_eos(t);
            /* tokenizer_config.json is read only beside a file named
             * tokenizer.json: another name is a tokenizer on its own. */
            if (!strcmp(base, "tokenizer.json")) rc = read_config(t, dir, err, errlen);
        }
        if (!rc && t->add_bos && t->bos < 0)
            rc = err_set(err, errlen, "%s: add_bos_token is true but there is no bos_token", file);
        uint64_t h = 0;
        if (!rc && hash_file(file, &h))
            rc = err_set(err, errlen, "%s: cannot read: %s", file, strerror(errno));
        if (!rc) {
            int64_t mix[4] = {t->bos, t->eos, t->add_bos, t->add_eos};
            t->hash = hash_bytes(mix, sizeof mix, h);
        }
    } else {
        t->kind = TOKENIZER_SPM;
        rc = spm_load(&t->spm, file, err, errlen);
        if (!rc) {
            t->bos = spm_bos_id(t->spm);
            t->eos = spm_eos_id(t->spm);
            t->files[0].path = strdup(file);
            t->files[0].name = "tokenizer.model";
            t->n_files = 1;
            if (!t->files[0].path) rc = err_set(err, errlen, "out of memory");
        }
        if (!rc && hash_file(file, &t->hash))
            rc = err_set(err, errlen, "%s: cannot read: %s", file, strerror(errno));
        /* tokenizer_config.json may ask for BOS (Llama 2's does); a bare
         * .model adds none, as dapt always did. */
        if (!rc && !strcmp(base, "tokenizer.model")) rc = read_config(t, dir, err, errlen);
        if (!rc && t->add_bos && t->bos < 0)
            rc = err_set(err, errlen, "%s: add_bos_token is true but the model has no BOS", file);
        /* Shards that start documents with BOS are not those of the bare
         * .model: the flag joins the hash (without it, the hash stays the
         * file's, which older shards record). */
        if (!rc && t->add_bos) {
            int64_t mix[2] = {t->bos, t->add_bos};
            t->hash = hash_bytes(mix, sizeof mix, t->hash);
        }
    }
    if (rc) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    if (t->spm) spm_free(t->spm);
    if (t->bpe) bpe_free(t->bpe);
    for (int i = 0; i < t->n_files; i++) free((char *)t->files[i].path);
    free(t);
}

TokenizerKind tokenizer_kind(const Tokenizer *t) { return t->kind; }
const char *tokenizer_kind_name(const Tokenizer *t) {
    return t->kind == TOKENIZER_BPE ? "bpe (tokenizer.json)" : "sentencepiece";
}
uint32_t tokenizer_vocab_size(const Tokenizer *t) {
    return t->bpe ? bpe_vocab_size(t->bpe) : spm_vocab_size(t->spm);
}
int tokenizer_bos_id(const Tokenizer *t) { return t->bos; }
int tokenizer_eos_id(const Tokenizer *t) { return t->eos; }
int tokenizer_add_bos(const Tokenizer *t) { return t->add_bos; }
int tokenizer_add_eos(const Tokenizer *t) { return t->add_eos; }
uint64_t tokenizer_hash(const Tokenizer *t) { return t->hash; }
const TokenizerFile *tokenizer_files(const Tokenizer *t, int *n_out) {
    *n_out = t->n_files;
    return t->files;
}
const struct BpeModel *tokenizer_bpe(const Tokenizer *t) { return t->bpe; }
const struct SpmModel *tokenizer_spm(const Tokenizer *t) { return t->spm; }

int tokenizer_encode(const Tokenizer *t, const char *text, size_t n, uint32_t **ids,
                     size_t *n_ids, size_t *cap, char *err, size_t errlen) {
    if (t->bpe) return bpe_encode(t->bpe, text, n, ids, n_ids, cap, err, errlen);
    return spm_encode(t->spm, text, n, ids, n_ids, cap, err, errlen);
}

int tokenizer_encode_doc(const Tokenizer *t, const char *text, size_t n, uint32_t **ids,
                         size_t *n_ids, size_t *cap, char *err, size_t errlen) {
    if (t->eos < 0)
        return err_set(err, errlen,
                       "%s: the tokenizer has no end-of-sequence token to end documents with "
                       "(give eos_token in tokenizer_config.json)",
                       t->files[0].path);
    /* The body goes into the caller's buffer, then moves up one for BOS. */
    if (tokenizer_encode(t, text, n, ids, n_ids, cap, err, errlen)) return -1;
    size_t need = *n_ids + 2;
    if (need > *cap) {
        uint32_t *p = realloc(*ids, need * sizeof *p);
        if (!p) return err_set(err, errlen, "out of memory");
        *ids = p;
        *cap = need;
    }
    if (t->add_bos) {
        memmove(*ids + 1, *ids, *n_ids * sizeof **ids);
        (*ids)[0] = (uint32_t)t->bos;
        (*n_ids)++;
    }
    (*ids)[(*n_ids)++] = (uint32_t)t->eos;
    return 0;
}

int tokenizer_decode(const Tokenizer *t, const uint32_t *ids, size_t n, int skip_special,
                     char **text_out, size_t *len_out, char *err, size_t errlen) {
    if (t->bpe) return bpe_decode(t->bpe, ids, n, skip_special, text_out, len_out, err, errlen);
    /* sentencepiece decodes control tokens (BOS/EOS) to nothing already. */
    if (spm_decode(t->spm, ids, n, text_out, err, errlen)) return -1;
    if (len_out) *len_out = strlen(*text_out);
    return 0;
}
