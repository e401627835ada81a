/* law_model.c: evaluates a fitted D-CPT law and stores it as law.json.
 *
 * law.json (format "dapt-law", version 1) holds, for each loss that was
 * fitted ("general", "domain"), the parameters in data units (N in
 * parameters, D in tokens) and the fit's diagnostics; docs/dcpt.md documents
 * every field. Loading checks every parameter is finite and > 0, so a
 * LawModel from law_model_load is always safe to evaluate. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kernels/util.h"
#include "tools/law/law.h"

#define LAW_FORMAT  "dapt-law"
#define LAW_VERSION 1

double law_eval(const LawParams *p, double N, double D, double r, double k1, double k2) {
    double L = p->E + p->A * pow(N, -p->alpha) + p->C * pow(r + p->epsilon, -p->gamma);
    if (r > 0) L += p->B * pow(r, p->eta) * pow(D, -p->beta);
    if (p->cross) L += p->F * pow(p->w1 / k1 + p->w2 * k2, -p->mu);
    return L;
}

typedef struct {
    const char *name;
    size_t offset;
} ParamField;

#define PF(x)                                                                                      \
    { #x, offsetof(LawParams, x) }
static const ParamField base_fields[] = {PF(E),    PF(A), PF(alpha), PF(B),      PF(eta),
                                         PF(beta), PF(C), PF(gamma), PF(epsilon)};
static const ParamField cross_fields[] = {PF(F), PF(mu), PF(w1), PF(w2)};
#define LEN(a) ((int)(sizeof(a) / sizeof(a)[0]))

static double *field(LawParams *p, const ParamField *f) {
    return (double *)((char *)p + f->offset);
}

static cJSON *fit_to_json(const LawFit *f, LawTarget t, int cross) {
    cJSON *o = cJSON_CreateObject(), *p = cJSON_CreateObject();
    cJSON_AddStringToObject(
        o, "r", t == LAW_GENERAL ? "general share = 1 - r_domain" : "domain share = r_domain");
    LawParams q = f->p;
    for (int i = 0; i < LEN(base_fields); i++)
        cJSON_AddNumberToObject(p, base_fields[i].name, *field(&q, &base_fields[i]));
    for (int i = 0; cross && i < LEN(cross_fields); i++)
        cJSON_AddNumberToObject(p, cross_fields[i].name, *field(&q, &cross_fields[i]));
    cJSON_AddItemToObject(o, "params", p);
    cJSON_AddNumberToObject(o, "n_obs", f->n_obs);
    cJSON_AddNumberToObject(o, "huber_loss", f->huber_loss);
    cJSON_AddNumberToObject(o, "r2", f->r2);
    cJSON_AddNumberToObject(o, "rmse_rel", f->rmse_rel);
    cJSON *range = cJSON_CreateObject();
    double nr[2] = {f->N_min, f->N_max}, dr[2] = {f->D_min, f->D_max};
    cJSON_AddItemToObject(range, "N", cJSON_CreateDoubleArray(nr, 2));
    cJSON_AddItemToObject(range, "D", cJSON_CreateDoubleArray(dr, 2));
    cJSON_AddItemToObject(o, "range", range);
    cJSON_AddNumberToObject(o, "r_rise_from", f->r_rise_from); /* null when it never rises */
    cJSON *h = cJSON_CreateObject(), *groups = cJSON_CreateArray();
    cJSON_AddStringToObject(h, "by", cross ? "domain" : "r_domain");
    cJSON_AddNumberToObject(h, "mean_rel_err", f->holdout_mean_rel);
    cJSON_AddNumberToObject(h, "max_rel_err", f->holdout_max_rel);
    for (int g = 0; g < f->n_groups; g++) {
        cJSON *e = cJSON_CreateObject();
        if (cross)
            cJSON_AddStringToObject(e, "domain", f->group_domain[g]);
        else
            cJSON_AddNumberToObject(e, "r_domain", f->group_r[g]);
        cJSON_AddNumberToObject(e, "mean_rel_err", f->group_mean_rel[g]);
        cJSON_AddItemToArray(groups, e);
    }
    cJSON_AddItemToObject(h, "groups", groups);
    cJSON_AddItemToObject(o, "holdout", h);
    return o;
}

int law_model_save(const LawModel *m, const char *path, char *err, size_t err_len) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", LAW_FORMAT);
    cJSON_AddNumberToObject(root, "version", LAW_VERSION);
    cJSON_AddStringToObject(root, "law",
                            m->cross ? "L = E + A/N^alpha + B*r^eta/D^beta + C/(r+epsilon)^gamma"
                                       " + F/K^mu, K = w1/k1 + w2*k2"
                                     : "L = E + A/N^alpha + B*r^eta/D^beta + C/(r+epsilon)^gamma");
    cJSON_AddBoolToObject(root, "cross_domain", m->cross);
    cJSON_AddNumberToObject(root, "huber_delta", m->huber_delta);
    if (m->has_general)
        cJSON_AddItemToObject(root, "general", fit_to_json(&m->general, LAW_GENERAL, m->cross));
    if (m->has_domain)
        cJSON_AddItemToObject(root, "domain", fit_to_json(&m->domain, LAW_DOMAIN, m->cross));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return err_set(err, err_len, "%s: out of memory", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (mkdir_parent(path, err, err_len)) {
        free(text);
        return 1;
    }
    FILE *f = fopen(tmp, "w");
    int rc = 0;
    if (!f)
        rc = err_set(err, err_len, "%s: cannot create", tmp);
    else {
        int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
        bad |= fclose(f) != 0;
        if (bad)
            rc = err_set(err, err_len, "%s: write failed", tmp);
        else if (rename(tmp, path))
            rc = err_set(err, err_len, "%s: cannot rename to %s", tmp, path);
    }
    free(text);
    return rc;
}

/* A number from obj[key]; NAN when absent or null (if allowed). */
static int get_num(const cJSON *obj, const char *key, int required, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) {
        *v = NAN;
        return required ? -1 : 0;
    }
    if (!cJSON_IsNumber(it)) return -1;
    *v = it->valuedouble;
    return 0;
}

static int fit_from_json(const cJSON *o, const char *path, const char *which, int cross, LawFit *f,
                         char *err, size_t err_len) {
    memset(f, 0, sizeof *f);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "params");
    if (!cJSON_IsObject(o) || !cJSON_IsObject(p))
        return err_set(err, err_len, "%s: \"%s.params\" missing (expected an object of parameters)",
                       path, which);
    f->p.cross = cross;
    for (int i = 0; i < LEN(base_fields) + (cross ? LEN(cross_fields) : 0); i++) {
        const ParamField *pf =
            i < LEN(base_fields) ? &base_fields[i] : &cross_fields[i - LEN(base_fields)];
        double *v = field(&f->p, pf);
        if (get_num(p, pf->name, 1, v) || !isfinite(*v) || *v <= 0)
            return err_set(err, err_len, "%s: \"%s.params.%s\" missing or not a finite number > 0",
                           path, which, pf->name);
    }
    double n_obs = 0;
    get_num(o, "n_obs", 0, &n_obs);
    f->n_obs = isfinite(n_obs) ? (int)n_obs : 0;
    get_num(o, "huber_loss", 0, &f->huber_loss);
    get_num(o, "r2", 0, &f->r2);
    get_num(o, "rmse_rel", 0, &f->rmse_rel);
    get_num(o, "r_rise_from", 0, &f->r_rise_from);
    const cJSON *range = cJSON_GetObjectItemCaseSensitive(o, "range");
    const cJSON *rn = cJSON_GetObjectItemCaseSensitive(range, "N");
    const cJSON *rd = cJSON_GetObjectItemCaseSensitive(range, "D");
    f->N_min = f->N_max = f->D_min = f->D_max = NAN;
    if (cJSON_GetArraySize(rn) == 2 && cJSON_GetArraySize(rd) == 2) {
        f->N_min = cJSON_GetArrayItem(rn, 0)->valuedouble;
        f->N_max = cJSON_GetArrayItem(rn, 1)->valuedouble;
        f->D_min = cJSON_GetArrayItem(rd, 0)->valuedouble;
        f->D_max = cJSON_GetArrayItem(rd, 1)->valuedouble;
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "holdout");
    get_num(h, "mean_rel_err", 0, &f->holdout_mean_rel);
    get_num(h, "max_rel_err", 0, &f->holdout_max_rel);
    const cJSON *g, *groups = cJSON_GetObjectItemCaseSensitive(h, "groups");
    cJSON_ArrayForEach(g, groups) {
        if (f->n_groups == LAW_MAX_GROUPS) break;
        int k = f->n_groups++;
        get_num(g, "r_domain", 0, &f->group_r[k]);
        get_num(g, "mean_rel_err", 0, &f->group_mean_rel[k]);
        const cJSON *dn = cJSON_GetObjectItemCaseSensitive(g, "domain");
        if (cJSON_IsString(dn))
            snprintf(f->group_domain[k], LAW_DOMAIN_NAME_LEN, "%s", dn->valuestring);
    }
    return 0;
}

int law_model_load(const char *path, LawModel *m, char *err, size_t err_len) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, err_len, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > (64 << 20)) {
        fclose(f);
        return err_set(err, err_len, "%s: not a law file (size %ld bytes)", path, size);
    }
    char *text = malloc((size_t)size + 1);
    size_t got = text ? fread(text, 1, (size_t)size, f) : 0;
    fclose(f);
    if (!text || got != (size_t)size) {
        free(text);
        return err_set(err, err_len, "%s: read failed", path);
    }
    text[size] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    int rc = -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    double version = 0;
    if (!root)
        err_set(err, err_len, "%s: not valid JSON", path);
    else if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, LAW_FORMAT))
        err_set(err, err_len, "%s: \"format\" is not \"%s\" (not a file written by `dapt law fit`)",
                path, LAW_FORMAT);
    else if (get_num(root, "version", 1, &version) || version != LAW_VERSION)
        err_set(err, err_len, "%s: \"version\" must be %d", path, LAW_VERSION);
    else {
        m->cross = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "cross_domain"));
        get_num(root, "huber_delta", 0, &m->huber_delta);
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "general");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "domain");
        m->has_general = g != NULL;
        m->has_domain = d != NULL;
        if (!g && !d)
            err_set(err, err_len, "%s: neither \"general\" nor \"domain\" law present", path);
        else if (g && fit_from_json(g, path, "general", m->cross, &m->general, err, err_len)) {
        } else if (d && fit_from_json(d, path, "domain", m->cross, &m->domain, err, err_len)) {
        } else
            rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

int law_predict(const LawModel *m, double N, double D, double r_domain, double k1, double k2,
                double *loss_general, double *loss_domain, char *err, size_t err_len) {
    if (!(N > 0) || !isfinite(N))
        return err_set(err, err_len, "N = %g must be a finite number > 0", N);
    if (!(D > 0) || !isfinite(D))
        return err_set(err, err_len, "D = %g must be a finite number > 0", D);
    if (!(r_domain >= 0 && r_domain <= 1))
        return err_set(err, err_len, "r_domain = %g is outside [0, 1]", r_domain);
    if (m->cross && (!(k1 > 0) || !(k2 > 0) || !isfinite(k1) || !isfinite(k2)))
        return err_set(err, err_len,
                       "this is a cross-domain law: k1 and k2 of the domain are required (> 0)");
    *loss_general = m->has_general ? law_eval(&m->general.p, N, D, 1.0 - r_domain, k1, k2) : NAN;
    *loss_domain = m->has_domain ? law_eval(&m->domain.p, N, D, r_domain, k1, k2) : NAN;
    return 0;
}
