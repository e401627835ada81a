/* law_fit.c: fits the D-CPT law to one loss (general or domain) with a
 * robust objective and many starting points, using GSL's trust-region
 * Levenberg-Marquardt solver (gsl_multifit_nlinear).
 *
 * Objective: mean Huber loss (threshold delta) of the residuals
 * log(L_pred) - log(L_obs). The minimiser works on theta = log of every
 * positive parameter (and the logit of w2 for the cross-domain law), held
 * in a box (see th_lo), so every iterate is a law with finite, positive
 * coefficients and exponents. N and D
 * are divided by their geometric means inside the fit so that log A and
 * log B are O(1); law_fit converts back to data units before returning.
 *
 * Starts: a grid over the exponents (alpha, beta, eta, gamma, epsilon [, mu]);
 * at each grid point the coefficients (E, A, B, C [, F]) that enter linearly
 * come from a weighted linear least-squares solve. The n_starts grid points
 * with the lowest objective are minimised fully and the best result kept.
 * Held-out error refits the law without one group of rows (one r_domain
 * value, or one domain for the cross-domain law) and predicts that group. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_multifit.h>
#include <gsl/gsl_multifit_nlinear.h>
#include <gsl/gsl_vector.h>

#include "kernels/util.h"
#include "tools/law/law.h"

enum { P_E, P_A, P_ALPHA, P_B, P_ETA, P_BETA, P_C, P_GAMMA, P_EPS, P_F, P_MU, P_W, P_MAX };

/* One observation in fit units: n = N / N_ref, d = D / D_ref, r the
 * target's own share, y the observed loss. */
typedef struct {
    double n, d, r, y, k1, k2;
    int group;
} Pt;

typedef struct {
    const Pt *pts;
    int n_pts;
    int n_params;
    double delta;
} Problem;

void law_fit_options_default(LawFitOptions *o) {
    o->huber_delta = 1e-3;
    o->n_starts = 16;
    o->max_iter = 1000;
    o->holdout = 1;
    o->cross_domain = 0;
}

int law_n_params(int cross) {
    return cross ? 12 : 9;
}

/* Box on theta, so that every parameter stays finite and > 0 in double
 * precision whatever the data: coefficients (fit units) within e^+-60,
 * exponents and epsilon within [e^-20, e^3] = [2e-9, 20], w2 within
 * logit +-30. Outside the box the value is held at the edge (and the
 * derivative is zero), so the minimiser cannot leave it. */
static const double th_lo[P_MAX] = {-60, -60, -20, -60, -20, -20, -60, -20, -20, -60, -20, -30};
static const double th_hi[P_MAX] = {60, 60, 3, 60, 3, 3, 60, 3, 3, 60, 3, 30};

/* The parameter values of theta (w2 for P_W) and which are inside the box. */
static void values(const double *th, int np, double *v, double *inside) {
    for (int j = 0; j < np; j++) {
        double t = fmin(fmax(th[j], th_lo[j]), th_hi[j]);
        inside[j] = t == th[j];
        v[j] = j == P_W ? 1.0 / (1.0 + exp(-t)) : exp(t);
    }
}

/* The law at one point in fit units, and (when grad != NULL) d pred / d theta. */
static double model(const double *th, int np, const Pt *p, double *grad) {
    double v[P_MAX], in[P_MAX];
    values(th, np, v, in);
    double E = v[P_E], A = v[P_A], al = v[P_ALPHA], B = v[P_B], eta = v[P_ETA], be = v[P_BETA];
    double C = v[P_C], ga = v[P_GAMMA], eps = v[P_EPS];
    double tA = A * pow(p->n, -al);
    double tB = p->r > 0 ? B * pow(p->r, eta) * pow(p->d, -be) : 0.0;
    double re = p->r + eps;
    double tC = C * pow(re, -ga);
    double pred = E + tA + tB + tC;
    if (grad) {
        grad[P_E] = E;
        grad[P_A] = tA;
        grad[P_ALPHA] = -tA * al * log(p->n);
        grad[P_B] = tB;
        grad[P_ETA] = p->r > 0 ? tB * eta * log(p->r) : 0.0;
        grad[P_BETA] = -tB * be * log(p->d);
        grad[P_C] = tC;
        grad[P_GAMMA] = -tC * ga * log(re);
        grad[P_EPS] = -tC * ga * eps / re;
    }
    if (np > P_F) {
        double F = v[P_F], mu = v[P_MU], w = v[P_W];
        double K = (1.0 - w) / p->k1 + w * p->k2;
        double tF = F * pow(K, -mu);
        pred += tF;
        if (grad) {
            grad[P_F] = tF;
            grad[P_MU] = -tF * mu * log(K);
            grad[P_W] = -tF * mu / K * w * (1.0 - w) * (p->k2 - 1.0 / p->k1);
        }
    }
    if (grad)
        for (int j = 0; j < np; j++)
            grad[j] *= in[j];
    return pred;
}

static double huber(double x, double delta) {
    double a = fabs(x);
    return a <= delta ? 0.5 * x * x : delta * (a - 0.5 * delta);
}

/* Mean Huber loss divided by delta^2 (so that it is O(1) when residuals are
 * O(delta)). Invalid parameter regions (non-finite or non-positive
 * predictions) get a huge value. */
static double objective(const double *th, const Problem *pb) {
    double sum = 0.0;
    for (int i = 0; i < pb->n_pts; i++) {
        const Pt *p = &pb->pts[i];
        double pred = model(th, pb->n_params, p, NULL);
        if (!(pred > 0) || !isfinite(pred)) return 1e30;
        sum += huber(log(pred) - log(p->y), pb->delta);
    }
    double f = sum / (pb->n_pts * pb->delta * pb->delta);
    return isfinite(f) ? f : 1e30;
}

/* Huber as least squares: with rho(x) = sign(x) * sqrt(2 huber(x)), the sum
 * of rho^2 / 2 is the Huber loss, and rho is continuously differentiable
 * (rho = x inside [-delta, delta], d rho / dx = delta / |rho| outside), so a
 * Levenberg-Marquardt solver on rho minimises the Huber objective itself. */
static int lm_f(const gsl_vector *x, void *vp, gsl_vector *f) {
    const Problem *pb = vp;
    for (int i = 0; i < pb->n_pts; i++) {
        const Pt *p = &pb->pts[i];
        double pred = model(x->data, pb->n_params, p, NULL);
        if (!(pred > 0) || !isfinite(pred)) return GSL_EDOM;
        double res = log(pred) - log(p->y);
        double rho = sqrt(2.0 * huber(res, pb->delta));
        gsl_vector_set(f, (size_t)i, (res < 0 ? -rho : rho) / pb->delta);
    }
    return GSL_SUCCESS;
}

static int lm_df(const gsl_vector *x, void *vp, gsl_matrix *J) {
    const Problem *pb = vp;
    double g[P_MAX];
    for (int i = 0; i < pb->n_pts; i++) {
        const Pt *p = &pb->pts[i];
        double pred = model(x->data, pb->n_params, p, g);
        if (!(pred > 0) || !isfinite(pred)) return GSL_EDOM;
        double res = log(pred) - log(p->y);
        double a = fabs(res);
        double drho = a <= pb->delta ? 1.0 : pb->delta / sqrt(2.0 * huber(res, pb->delta));
        for (int j = 0; j < pb->n_params; j++)
            gsl_matrix_set(J, (size_t)i, (size_t)j, drho * g[j] / pred / pb->delta);
    }
    return GSL_SUCCESS;
}

/* Minimises from th (in place) with GSL's trust-region Levenberg-Marquardt
 * and returns the objective at the result (never worse than at the start). */
static double minimise(const Problem *pb, double *th, int max_iter) {
    size_t np = (size_t)pb->n_params, n = (size_t)pb->n_pts;
    double best = objective(th, pb);
    gsl_multifit_nlinear_parameters par = gsl_multifit_nlinear_default_parameters();
    gsl_multifit_nlinear_workspace *w =
        gsl_multifit_nlinear_alloc(gsl_multifit_nlinear_trust, &par, n, np);
    gsl_vector_view x0 = gsl_vector_view_array(th, np);
    gsl_multifit_nlinear_fdf fdf = {lm_f, lm_df, NULL, n, np, (void *)pb, 0, 0, 0};
    int info;
    if (w && gsl_multifit_nlinear_init(&x0.vector, &fdf, w) == GSL_SUCCESS) {
        gsl_multifit_nlinear_driver((size_t)max_iter, 1e-12, 1e-12, 0.0, NULL, NULL, &info, w);
        const gsl_vector *x = gsl_multifit_nlinear_position(w);
        double f = objective(x->data, pb);
        if (f < best) {
            best = f;
            memcpy(th, x->data, np * sizeof *th);
        }
    }
    gsl_multifit_nlinear_free(w);
    return best;
}

/* Grid values of the nonlinear parameters (see the file comment). */
static const double grid_alpha[] = {0.1, 0.3, 0.6};
static const double grid_beta[] = {0.1, 0.3, 0.6};
static const double grid_eta[] = {0.1, 0.5, 1.0};
static const double grid_gamma[] = {0.1, 0.4, 1.0};
static const double grid_eps[] = {0.01, 0.2};
static const double grid_mu[] = {0.5, 2.0};
#define LEN(a) ((int)(sizeof(a) / sizeof(a)[0]))

typedef struct {
    double th[P_MAX];
    double f;
} Start;

static int cmp_start(const void *a, const void *b) {
    double x = ((const Start *)a)->f, y = ((const Start *)b)->f;
    return x < y ? -1 : x > y;
}

/* Fills the linear coefficients of th (exponents already set) by weighted
 * least squares of the loss on the law's terms, weights 1/y^2 so that the
 * solve approximates a fit of relative error. Non-positive solutions are
 * replaced by a term worth ~1% of the mean loss: this is only a start. */
static void linear_start(const Problem *pb, double *th, gsl_matrix *X, gsl_vector *w, gsl_vector *y,
                         gsl_vector *c, gsl_matrix *cov, gsl_multifit_linear_workspace *ws) {
    int np = pb->n_params, nc = np > P_F ? 5 : 4;
    static const int coef[5] = {P_E, P_A, P_B, P_C, P_F};
    double ymean = 0.0, colmean[5] = {0};
    for (int k = 0; k < nc; k++)
        th[coef[k]] = 0.0; /* unit coefficients: model terms alone */
    for (int i = 0; i < pb->n_pts; i++) {
        const Pt *p = &pb->pts[i];
        double g[P_MAX];
        model(th, np, p, g);
        for (int k = 0; k < nc; k++) {
            gsl_matrix_set(X, (size_t)i, (size_t)k, g[coef[k]]);
            colmean[k] += g[coef[k]] / pb->n_pts;
        }
        gsl_vector_set(y, (size_t)i, p->y);
        gsl_vector_set(w, (size_t)i, 1.0 / (p->y * p->y));
        ymean += p->y / pb->n_pts;
    }
    double chisq;
    int ok = gsl_multifit_wlinear(X, w, y, c, cov, &chisq, ws) == GSL_SUCCESS;
    for (int k = 0; k < nc; k++) {
        double v = ok ? gsl_vector_get(c, (size_t)k) : 0.0;
        if (!(v > 0) || !isfinite(v)) v = 0.01 * ymean / (colmean[k] > 0 ? colmean[k] : 1.0);
        th[coef[k]] = log(v);
    }
}

/* Multi-start fit of pb; th_out gets the best parameters. `extra`, when not
 * NULL, is one more start (used by the held-out refits). Returns the best
 * objective, or a negative value when memory ran out. */
static double fit_problem(const Problem *pb, int n_starts, int max_iter, const double *extra,
                          double *th_out) {
    int np = pb->n_params, cross = np > P_F;
    int n_grid = LEN(grid_alpha) * LEN(grid_beta) * LEN(grid_eta) * LEN(grid_gamma) *
                 LEN(grid_eps) * (cross ? LEN(grid_mu) : 1);
    Start *st = calloc((size_t)n_grid, sizeof *st);
    size_t m = (size_t)pb->n_pts, nc = cross ? 5 : 4;
    gsl_matrix *X = gsl_matrix_alloc(m, nc), *cov = gsl_matrix_alloc(nc, nc);
    gsl_vector *w = gsl_vector_alloc(m), *y = gsl_vector_alloc(m), *c = gsl_vector_alloc(nc);
    gsl_multifit_linear_workspace *ws = gsl_multifit_linear_alloc(m, nc);
    double best = -1.0;
    if (!st || !X || !cov || !w || !y || !c || !ws) goto done;
    int k = 0;
    for (int a = 0; a < LEN(grid_alpha); a++)
        for (int b = 0; b < LEN(grid_beta); b++)
            for (int e = 0; e < LEN(grid_eta); e++)
                for (int g = 0; g < LEN(grid_gamma); g++)
                    for (int s = 0; s < LEN(grid_eps); s++)
                        for (int u = 0; u < (cross ? LEN(grid_mu) : 1); u++, k++) {
                            double *th = st[k].th;
                            th[P_ALPHA] = log(grid_alpha[a]);
                            th[P_BETA] = log(grid_beta[b]);
                            th[P_ETA] = log(grid_eta[e]);
                            th[P_GAMMA] = log(grid_gamma[g]);
                            th[P_EPS] = log(grid_eps[s]);
                            if (cross) {
                                th[P_MU] = log(grid_mu[u]);
                                th[P_W] = 0.0;
                            }
                            linear_start(pb, th, X, w, y, c, cov, ws);
                            st[k].f = objective(th, pb);
                        }
    qsort(st, (size_t)n_grid, sizeof *st, cmp_start);
    if (n_starts > n_grid) n_starts = n_grid;
    best = INFINITY;
    for (int i = 0; i < n_starts + (extra != NULL); i++) {
        double th[P_MAX] = {0};
        memcpy(th, i < n_starts ? st[i].th : extra, sizeof th);
        double f = minimise(pb, th, max_iter);
        if (f < best) {
            best = f;
            memcpy(th_out, th, sizeof th);
        }
    }
done:
    free(st);
    gsl_matrix_free(X);
    gsl_matrix_free(cov);
    gsl_vector_free(w);
    gsl_vector_free(y);
    gsl_vector_free(c);
    gsl_multifit_linear_free(ws);
    return best;
}

/* Collects the target's observations in fit units and assigns groups.
 * Returns the number of points, or -1 with err set. */
static int collect(const LawData *d, LawTarget t, int cross, Pt *pts, LawFit *out, char *err,
                   size_t err_len) {
    int n = 0;
    out->n_groups = 0;
    for (int i = 0; i < d->n; i++) {
        const LawObs *o = &d->rows[i];
        if (!(t == LAW_GENERAL ? o->has_general : o->has_domain)) continue;
        if (cross && (!o->has_k || !o->domain[0]))
            return err_set(
                err, err_len,
                "%s:%d: the cross-domain law needs \"domain\", \"k1\" and \"k2\" on every "
                "row",
                d->path, o->line);
        Pt *p = &pts[n++];
        p->n = o->N;
        p->d = o->D;
        p->r = t == LAW_GENERAL ? 1.0 - o->r_domain : o->r_domain;
        p->y = t == LAW_GENERAL ? o->loss_general : o->loss_domain;
        p->k1 = o->k1;
        p->k2 = o->k2;
        int g = 0;
        for (; g < out->n_groups; g++)
            if (cross ? !strcmp(out->group_domain[g], o->domain) : out->group_r[g] == o->r_domain)
                break;
        if (g == out->n_groups) {
            if (g == LAW_MAX_GROUPS)
                return err_set(err, err_len, "%s:%d: more than %d distinct %s values", d->path,
                               o->line, LAW_MAX_GROUPS, cross ? "domain" : "r_domain");
            out->group_r[g] = o->r_domain;
            snprintf(out->group_domain[g], LAW_DOMAIN_NAME_LEN, "%s", o->domain);
            out->n_groups++;
        }
        p->group = g;
    }
    return n;
}

static void to_params(const double *th, int cross, double N_ref, double D_ref, LawParams *p) {
    double v[P_MAX], in[P_MAX];
    values(th, law_n_params(cross), v, in);
    memset(p, 0, sizeof *p);
    p->alpha = v[P_ALPHA];
    p->beta = v[P_BETA];
    p->E = v[P_E];
    p->A = v[P_A] * pow(N_ref, p->alpha);
    p->B = v[P_B] * pow(D_ref, p->beta);
    p->eta = v[P_ETA];
    p->C = v[P_C];
    p->gamma = v[P_GAMMA];
    p->epsilon = v[P_EPS];
    p->cross = cross;
    if (cross) {
        p->F = v[P_F];
        p->mu = v[P_MU];
        p->w2 = v[P_W];
        p->w1 = 1.0 - p->w2;
    }
}

static double rise_from(const LawParams *p, double D) {
    for (int k = 1; k <= 1000; k++) {
        double r = k / 1000.0;
        double dL = p->B * p->eta * pow(r, p->eta - 1) * pow(D, -p->beta) -
                    p->C * p->gamma * pow(r + p->epsilon, -p->gamma - 1);
        if (dL >= 0) return r;
    }
    return NAN;
}

/* Leave-one-group-out: refit without each group and predict it. */
static int holdout(const Problem *full, const double *th_full, const LawFitOptions *o, LawFit *out,
                   char *err, size_t err_len) {
    Pt *train = malloc((size_t)full->n_pts * sizeof *train);
    if (!train) return err_set(err, err_len, "out of memory");
    double sum = 0.0, max = 0.0;
    int count = 0, n_groups = out->n_groups, n_starts = o->n_starts / 4 > 4 ? o->n_starts / 4 : 4;
    for (int g = 0; g < n_groups; g++)
        out->group_mean_rel[g] = NAN;
    for (int g = 0; g < n_groups; g++) {
        int m = 0;
        for (int i = 0; i < full->n_pts; i++)
            if (full->pts[i].group != g) train[m++] = full->pts[i];
        if (m < full->n_params) continue; /* too few rows left to refit */
        Problem pb = *full;
        pb.pts = train;
        pb.n_pts = m;
        double th[P_MAX] = {0};
        if (fit_problem(&pb, n_starts, o->max_iter, th_full, th) < 0) {
            free(train);
            return err_set(err, err_len, "out of memory");
        }
        double gsum = 0.0;
        int gn = 0;
        for (int i = 0; i < full->n_pts; i++) {
            const Pt *p = &full->pts[i];
            if (p->group != g) continue;
            double rel = fabs(model(th, full->n_params, p, NULL) - p->y) / p->y;
            gsum += rel;
            gn++;
            if (rel > max) max = rel;
        }
        out->group_mean_rel[g] = gsum / gn;
        sum += gsum;
        count += gn;
    }
    out->holdout_mean_rel = count ? sum / count : NAN;
    out->holdout_max_rel = count ? max : NAN;
    free(train);
    return 0;
}

int law_fit(const LawData *d, LawTarget t, const LawFitOptions *o, LawFit *out, char *err,
            size_t err_len) {
    memset(out, 0, sizeof *out);
    gsl_set_error_handler_off(); /* GSL reports failures by status, never abort() */
    const char *what = t == LAW_GENERAL ? "loss_general" : "loss_domain";
    int cross = o->cross_domain, np = law_n_params(cross);
    if (!(o->huber_delta > 0) || o->n_starts < 1 || o->max_iter < 1)
        return err_set(err, err_len,
                       "law_fit: huber_delta must be > 0, n_starts and max_iter >= 1");
    Pt *pts = malloc((size_t)(d->n ? d->n : 1) * sizeof *pts);
    if (!pts) return err_set(err, err_len, "%s: out of memory", d->path);
    int n = collect(d, t, cross, pts, out, err, err_len), rc = -1;
    if (n < 0) goto done;
    if (n < np) {
        err_set(err, err_len,
                "%s: %d rows have %s but the law has %d parameters (need at least %d observations)",
                d->path, n, what, np, np);
        goto done;
    }
    if (cross && out->n_groups < 3) {
        err_set(err, err_len,
                "%s: the cross-domain law needs at least 3 domains with %s (found %d)", d->path,
                what, out->n_groups);
        goto done;
    }
    /* Geometric means of N and D: the fit's units. */
    double lnN = 0.0, lnD = 0.0;
    out->N_min = out->D_min = INFINITY;
    for (int i = 0; i < n; i++) {
        lnN += log(pts[i].n) / n;
        lnD += log(pts[i].d) / n;
        out->N_min = fmin(out->N_min, pts[i].n);
        out->N_max = fmax(out->N_max, pts[i].n);
        out->D_min = fmin(out->D_min, pts[i].d);
        out->D_max = fmax(out->D_max, pts[i].d);
    }
    double N_ref = exp(lnN), D_ref = exp(lnD);
    for (int i = 0; i < n; i++) {
        pts[i].n /= N_ref;
        pts[i].d /= D_ref;
    }
    Problem pb = {pts, n, np, o->huber_delta};
    double th[P_MAX] = {0};
    double f = fit_problem(&pb, o->n_starts, o->max_iter, NULL, th);
    if (f < 0) {
        err_set(err, err_len, "%s: out of memory", d->path);
        goto done;
    }
    if (!isfinite(f) || f >= 1e30) {
        err_set(err, err_len, "%s: the fit of %s failed to find finite parameters", d->path, what);
        goto done;
    }
    to_params(th, cross, N_ref, D_ref, &out->p);
    out->n_obs = n;
    out->huber_loss = f * o->huber_delta * o->huber_delta;
    double ymean = 0.0, ss_tot = 0.0, ss_res = 0.0, sq_rel = 0.0;
    for (int i = 0; i < n; i++)
        ymean += pts[i].y / n;
    for (int i = 0; i < n; i++) {
        double pred = model(th, np, &pts[i], NULL), e = pred - pts[i].y;
        ss_res += e * e;
        ss_tot += (pts[i].y - ymean) * (pts[i].y - ymean);
        sq_rel += (e / pts[i].y) * (e / pts[i].y);
    }
    out->r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : (ss_res == 0 ? 1.0 : 0.0);
    out->rmse_rel = sqrt(sq_rel / n);
    out->r_rise_from = rise_from(&out->p, out->D_min);
    out->holdout_mean_rel = out->holdout_max_rel = NAN;
    if (o->holdout && out->n_groups >= 2 && holdout(&pb, th, o, out, err, err_len)) goto done;
    if (!o->holdout || out->n_groups < 2) {
        for (int g = 0; g < out->n_groups; g++)
            out->group_mean_rel[g] = NAN;
    }
    rc = 0;
done:
    free(pts);
    return rc;
}
