/* law_recommend.c: chooses the domain mixture ratio with a fitted law.
 *
 * Usage 1: minimise the domain loss at fixed (N, D) subject to
 * L_general(r) <= (1 + T) * L0. Usage 2: with a fixed domain-token budget
 * Dd, minimise the domain loss over r with D = Dd / r.
 *
 * Method: a scan of r on a uniform grid of LAW_SCAN + 1 points over [0, 1]
 * finds the best feasible grid point; it is then refined with GSL's Brent
 * root finder when the general-loss limit cuts the scan off at a better
 * neighbour (the optimum lies on the constraint), or with GSL's Brent
 * minimiser when the optimum is interior. The refined r is never worse
 * than the best grid point and is always feasible. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_min.h>
#include <gsl/gsl_roots.h>

#include "kernels/util.h"
#include "tools/law/law.h"

#define LAW_SCAN 20000

typedef struct {
    const LawModel *m;
    const LawRecommendQuery *q;
    double limit; /* usage 1: the general-loss limit; INFINITY in usage 2 */
} Ctx;

static double tokens_at(const Ctx *c, double r) {
    return c->q->domain_tokens > 0 ? c->q->domain_tokens / r : c->q->D;
}

static double domain_loss(double r, void *vc) {
    const Ctx *c = vc;
    return law_eval(&c->m->domain.p, c->q->N, tokens_at(c, r), r, c->q->k1, c->q->k2);
}

static double general_excess(double r, void *vc) {
    const Ctx *c = vc;
    return law_eval(&c->m->general.p, c->q->N, tokens_at(c, r), 1.0 - r, c->q->k1, c->q->k2) -
           c->limit;
}

static int feasible(const Ctx *c, double r) {
    return c->limit == INFINITY || general_excess(r, (void *)c) <= 0;
}

/* Brent root of the general-loss limit between a feasible lo and an
 * infeasible hi; returns the feasible end of the final bracket. */
static double boundary(Ctx *c, double lo, double hi) {
    gsl_function fn = {general_excess, c};
    gsl_root_fsolver *s = gsl_root_fsolver_alloc(gsl_root_fsolver_brent);
    if (!s || gsl_root_fsolver_set(s, &fn, fmin(lo, hi), fmax(lo, hi))) {
        gsl_root_fsolver_free(s);
        return lo;
    }
    for (int it = 0; it < 200; it++) {
        if (gsl_root_fsolver_iterate(s)) break;
        double a = gsl_root_fsolver_x_lower(s), b = gsl_root_fsolver_x_upper(s);
        if (gsl_root_test_interval(a, b, 1e-14, 0) == GSL_SUCCESS) break;
    }
    double a = gsl_root_fsolver_x_lower(s), b = gsl_root_fsolver_x_upper(s);
    gsl_root_fsolver_free(s);
    /* The end of the bracket on lo's side is feasible. */
    return lo < hi ? a : b;
}

/* Brent minimum of the domain loss in (lo, hi) around the grid point mid. */
static double interior(Ctx *c, double lo, double mid, double hi) {
    gsl_function fn = {domain_loss, c};
    gsl_min_fminimizer *s = gsl_min_fminimizer_alloc(gsl_min_fminimizer_brent);
    if (!s || gsl_min_fminimizer_set(s, &fn, mid, lo, hi)) {
        gsl_min_fminimizer_free(s);
        return mid;
    }
    for (int it = 0; it < 200; it++) {
        if (gsl_min_fminimizer_iterate(s)) break;
        double a = gsl_min_fminimizer_x_lower(s), b = gsl_min_fminimizer_x_upper(s);
        if (gsl_min_test_interval(a, b, 1e-13, 0) == GSL_SUCCESS) break;
    }
    double r = gsl_min_fminimizer_x_minimum(s);
    gsl_min_fminimizer_free(s);
    return r;
}

int law_recommend(const LawModel *m, const LawRecommendQuery *q, LawRecommendation *out, char *err,
                  size_t err_len) {
    memset(out, 0, sizeof *out);
    gsl_set_error_handler_off(); /* GSL reports failures by status, never abort() */
    int usage2 = q->domain_tokens > 0;
    if (!m->has_domain)
        return err_set(err, err_len, "the law has no domain-loss fit (no loss_domain in the data)");
    if (!(q->N > 0) || !isfinite(q->N))
        return err_set(err, err_len, "N = %g must be a finite number > 0", q->N);
    if (usage2 && !isfinite(q->domain_tokens))
        return err_set(err, err_len, "domain_tokens = %g must be finite", q->domain_tokens);
    if (!usage2 && (!(q->D > 0) || !isfinite(q->D)))
        return err_set(err, err_len, "D = %g must be a finite number > 0", q->D);
    if (m->cross && (!(q->k1 > 0) || !(q->k2 > 0)))
        return err_set(err, err_len,
                       "this is a cross-domain law: k1 and k2 of the domain are required (> 0)");
    if (!(q->flat_tol >= 0))
        return err_set(err, err_len, "flat_tol = %g must be >= 0", q->flat_tol);
    Ctx c = {m, q, INFINITY};
    if (!usage2) {
        if (!m->has_general)
            return err_set(err, err_len,
                           "the law has no general-loss fit, so the general-loss limit cannot be "
                           "checked");
        if (!(q->max_general_rise >= 0) || !isfinite(q->max_general_rise))
            return err_set(err, err_len, "max_general_rise = %g must be a finite number >= 0",
                           q->max_general_rise);
        double base = q->base_general_loss;
        if (isnan(base)) base = law_eval(&m->general.p, q->N, q->D, 1.0, q->k1, q->k2);
        if (!(base > 0) || !isfinite(base))
            return err_set(err, err_len, "base general loss = %g must be a finite number > 0",
                           base);
        out->base_general_loss = base;
        c.limit = out->general_limit = (1.0 + q->max_general_rise) * base;
    }
    /* Scan. Usage 2 starts at the first grid point above 0 (D = Dd / r). */
    int first = usage2 ? 1 : 0, best = -1;
    double best_loss = INFINITY;
    for (int i = first; i <= LAW_SCAN; i++) {
        double r = (double)i / LAW_SCAN;
        if (!feasible(&c, r)) continue;
        double L = domain_loss(r, &c);
        if (L < best_loss) {
            best_loss = L;
            best = i;
        }
    }
    if (best < 0) {
        double g1 = general_excess(0.0, &c) + c.limit;
        return err_set(
            err, err_len,
            "no r_domain in [0, 1] keeps the general loss within %.6g (= (1 + %g) * %.6g); "
            "the law's general loss is %.6g at r_domain = 0",
            c.limit, q->max_general_rise, out->base_general_loss, g1);
    }
    double r = (double)best / LAW_SCAN;
    for (int side = -1; side <= 1; side += 2) {
        int j = best + side;
        if (j < first || j > LAW_SCAN) continue;
        double rj = (double)j / LAW_SCAN;
        if (!feasible(&c, rj) && domain_loss(rj, &c) < best_loss) {
            double rb = boundary(&c, r, rj);
            if (feasible(&c, rb) && domain_loss(rb, &c) <= best_loss) {
                r = rb;
                out->constraint_active = 1;
            }
        }
    }
    if (!out->constraint_active && best > first && best < LAW_SCAN &&
        feasible(&c, (best - 1.0) / LAW_SCAN) && feasible(&c, (best + 1.0) / LAW_SCAN)) {
        double ri = interior(&c, (best - 1.0) / LAW_SCAN, r, (best + 1.0) / LAW_SCAN);
        if (feasible(&c, ri) && domain_loss(ri, &c) <= best_loss) r = ri;
    }
    out->r_domain = r;
    out->D = tokens_at(&c, r);
    out->loss_domain = domain_loss(r, &c);
    out->loss_general =
        m->has_general ? law_eval(&m->general.p, q->N, out->D, 1.0 - r, q->k1, q->k2) : NAN;
    /* Flatness: the contiguous feasible grid range around the optimum whose
     * domain loss stays within flat_tol of the optimum. */
    double cut = out->loss_domain * (1.0 + q->flat_tol);
    int lo = best, hi = best;
    while (lo - 1 >= first && feasible(&c, (lo - 1.0) / LAW_SCAN) &&
           domain_loss((lo - 1.0) / LAW_SCAN, &c) <= cut)
        lo--;
    while (hi + 1 <= LAW_SCAN && feasible(&c, (hi + 1.0) / LAW_SCAN) &&
           domain_loss((hi + 1.0) / LAW_SCAN, &c) <= cut)
        hi++;
    out->flat_lo = fmin((double)lo / LAW_SCAN, r);
    out->flat_hi = fmax((double)hi / LAW_SCAN, r);
    return 0;
}
