/* cmd_logits.c: `dapt logits MODEL --ids 1,2,3 [--out FILE]`, the common
 * instrument of every parity check (HF transformers, llama.cpp, PyTorch).
 *
 * Loads a dapt checkpoint or an HF model directory (hf_load_model, CPU
 * backend, fp32), runs one forward pass over the ids as a single sequence
 * and either writes the logits as raw little-endian float32, row-major
 * [n_ids x vocab] (no header), or prints one line per position: id, argmax
 * and logsumexp of its logits row.
 *
 * Invariants: the ids are parsed strictly (decimal, comma-separated, no
 * empty items, within int32); range checks against the vocabulary and
 * max_seq_len are the model's (model_forward). --out is written to a
 * temporary name and renamed, so a FILE that exists is whole.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/cli.h"
#include "trainer/hf.h"

static void logits_usage(FILE *f) {
    fprintf(f,
            "usage: dapt logits MODEL --ids ID,ID,... [--out FILE]\n\n"
            "Runs the forward pass of MODEL (a dapt checkpoint or an HF model directory:\n"
            "config.json + model.safetensors) on one sequence of token ids, on the CPU in fp32.\n"
            "  --ids LIST   comma-separated token ids, e.g. 1,15043,3186\n"
            "  --out FILE   write float32 logits, row-major [n_ids x vocab], little-endian,\n"
            "               no header; without it, print per position: id, argmax, logsumexp\n");
}

/* "1,2,3" -> ids (malloc'd); 0 on success. */
static int parse_ids(const char *s, int32_t **ids_out, int *n_out, char *err, size_t err_len) {
    int n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return snprintf(err, err_len, "out of memory"), 1;
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || errno || v < 0 || v > INT32_MAX) {
            snprintf(err, err_len, "--ids: item %d ('%.*s') is not a token id (a non-negative integer)",
                     i + 1, (int)strcspn(p, ","), p);
            free(ids);
            return 1;
        }
        ids[i] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

static int write_f32(const char *path, const float *x, size_t n, char *err, size_t err_len) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return snprintf(err, err_len, "%s: path too long", path), 1;
    FILE *f = fopen(tmp, "wb");
    if (!f) return snprintf(err, err_len, "%.900s: %s", tmp, strerror(errno)), 1;
    int bad = fwrite(x, sizeof *x, n, f) != n;
    if (fclose(f)) bad = 1;
    if (bad || rename(tmp, path)) {
        snprintf(err, err_len, "%.900s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return 1;
    }
    return 0;
}

int cmd_logits(int argc, char **argv) {
    const char *model_dir = NULL, *ids_arg = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            logits_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--ids") && i + 1 < argc) {
            ids_arg = argv[++i];
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "dapt logits: unknown or incomplete option '%s'\n", argv[i]);
            logits_usage(stderr);
            return 2;
        } else if (!model_dir) {
            model_dir = argv[i];
        } else {
            fprintf(stderr, "dapt logits: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model_dir || !ids_arg) {
        logits_usage(stderr);
        return 2;
    }
    char err[1024];
    int32_t *ids = NULL;
    int n = 0;
    if (parse_ids(ids_arg, &ids, &n, err, sizeof err)) {
        fprintf(stderr, "dapt logits: %s\n", err);
        return 2;
    }
    Model *m = hf_load_model(model_dir, ops_cpu(), err, sizeof err);
    if (!m) {
        fprintf(stderr, "dapt logits: %s\n", err);
        free(ids);
        return 1;
    }
    int rc = 1;
    float loss, *logits = NULL;
    const int V = model_config(m)->vocab_size;
    if (model_forward(m, ids, NULL, 1, n, &loss, err, sizeof err)) {
        fprintf(stderr, "dapt logits: %s: %s\n", model_dir, err);
        goto done;
    }
    logits = malloc((size_t)n * (size_t)V * sizeof *logits); /* (n, V) */
    if (!logits) {
        fprintf(stderr, "dapt logits: out of memory for %d x %d logits\n", n, V);
        goto done;
    }
    model_logits(m, logits);
    if (out) {
        if (write_f32(out, logits, (size_t)n * (size_t)V, err, sizeof err)) {
            fprintf(stderr, "dapt logits: %s\n", err);
            goto done;
        }
        printf("wrote %d x %d float32 logits to %s\n", n, V, out);
    } else {
        printf("%-6s %-8s %-8s %-12s %s\n", "pos", "id", "argmax", "max", "logsumexp");
        for (int t = 0; t < n; t++) {
            const float *row = logits + (size_t)t * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[best]) best = v;
            double s = 0.0;
            for (int v = 0; v < V; v++) s += exp((double)row[v] - row[best]);
            printf("%-6d %-8d %-8d %-12.6g %.6g\n", t, ids[t], best, row[best], row[best] + log(s));
        }
    }
    rc = 0;
done:
    free(logits);
    free(ids);
    model_free(m);
    return rc;
}
