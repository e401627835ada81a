/* logits.c: `dapt logits MODEL --ids 1,2,3 [--out FILE]`, the common
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

#include "kernels/util.h"
#include "trainer/cli/cli.h"
#include "trainer/cli/opt.h"
#include "trainer/hf.h"

static const char usage[] =
    "usage: dapt logits MODEL --ids ID,ID,... [--out FILE]\n\n"
    "Runs the forward pass of MODEL (a dapt checkpoint or an HF model directory:\n"
    "config.json + model.safetensors) on one sequence of token ids, on the CPU in fp32.\n"
    "  --ids LIST   comma-separated token ids, e.g. 1,15043,3186\n"
    "  --out FILE   write float32 logits, row-major [n_ids x vocab], little-endian,\n"
    "               no header; without it, print per position: id, argmax, logsumexp\n";

/* "1,2,3" -> ids (malloc'd); 0 on success. */
static int parse_ids(const char *s, int32_t **ids_out, int *n_out, char *err, size_t err_len) {
    int n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) return err_set(err, err_len, "out of memory");
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || errno || v < 0 || v > INT32_MAX) {
            err_set(err, err_len,
                    "--ids: item %d ('%.*s') is not a token id (a non-negative integer)", i + 1,
                    (int)strcspn(p, ","), p);
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
        return err_set(err, err_len, "%s: path too long", path);
    if (mkdir_parent(path, err, err_len)) return 1;
    FILE *f = fopen(tmp, "wb");
    if (!f) return err_set(err, err_len, "%.900s: %s", tmp, strerror(errno));
    int bad = fwrite(x, sizeof *x, n, f) != n;
    if (fclose(f)) bad = 1;
    if (bad || rename(tmp, path)) {
        err_set(err, err_len, "%.900s: write failed: %s", path, strerror(errno));
        remove(tmp);
        return 1;
    }
    return 0;
}

int cmd_logits(int argc, char **argv) {
    CliOpt opts[] = {{"--ids", 1, 0, 0}, {"--out", 1, 0, 0}, {NULL, 0, 0, 0}};
    const CliSpec spec = {"logits", usage, opts, 1, NULL, NULL};
    const char *pos[1];
    int n_pos, prc = cli_parse(&spec, argc, argv, 1, pos, &n_pos);
    if (prc) return prc == CLI_HELP ? 0 : prc;
    const char *ids_arg = cli_opt(&spec, "--ids")->value, *out = cli_opt(&spec, "--out")->value;
    if (n_pos == 0 || !ids_arg) return cli_usage(&spec);
    const char *model_dir = pos[0];
    char err[1024];
    int32_t *ids = NULL;
    int n = 0;
    if (parse_ids(ids_arg, &ids, &n, err, sizeof err)) return cli_usage_error(&spec, "%s", err);
    Model *m = hf_load_model(model_dir, ops_cpu(), err, sizeof err);
    if (!m) {
        cli_fail(&spec, "%s", err);
        free(ids);
        return 1;
    }
    int rc = 1;
    float loss, *logits = NULL;
    const int V = model_config(m)->vocab_size;
    if (model_forward(m, ids, NULL, 1, n, &loss, err, sizeof err)) {
        cli_fail(&spec, "%s: %s", model_dir, err);
        goto done;
    }
    logits = malloc((size_t)n * (size_t)V * sizeof *logits); /* (n, V) */
    if (!logits) {
        cli_fail(&spec, "out of memory for %d x %d logits", n, V);
        goto done;
    }
    model_logits(m, logits);
    if (out) {
        if (write_f32(out, logits, (size_t)n * (size_t)V, err, sizeof err)) {
            cli_fail(&spec, "%s", err);
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
            for (int v = 0; v < V; v++)
                s += exp((double)row[v] - row[best]);
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
