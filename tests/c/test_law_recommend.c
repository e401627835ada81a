/* test_law_recommend.c: law_recommend finds the right domain share on laws
 * whose optimum is known in closed form (both usages of the paper), law.json
 * round-trips exactly, and law_predict / law_model_load reject bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/c/check.h"
#include "tools/law/law.h"


/* General law with B = 0: L_g = K + C/(1 - r_domain + eps)^gamma with
 * K = E + A/N^alpha, so the general-loss limit is reached in closed form at
 * r* = 1 + eps - (C / (limit - K))^(1/gamma). The domain law falls with r
 * everywhere, so the optimum of usage 1 is exactly r* when the limit binds. */
static LawModel usage1_model(void) {
    LawModel m = {0};
    m.has_general = m.has_domain = 1;
    m.general.p = (LawParams){.E = 1.8,
                              .A = 300,
                              .alpha = 0.32,
                              .B = 0,
                              .eta = 0.6,
                              .beta = 0.28,
                              .C = 0.25,
                              .gamma = 0.7,
                              .epsilon = 0.08};
    m.domain.p = (LawParams){.E = 1.5,
                             .A = 400,
                             .alpha = 0.35,
                             .B = 50,
                             .eta = 0.5,
                             .beta = 0.3,
                             .C = 0.4,
                             .gamma = 0.6,
                             .epsilon = 0.05};
    m.huber_delta = 1e-3;
    return m;
}

static void test_usage1(void) {
    LawModel m = usage1_model();
    const LawParams *g = &m.general.p;
    double N = 2e8, D = 1e9, T = 0.03;
    double K = g->E + g->A * pow(N, -g->alpha);
    double L0 = K + g->C * pow(1 + g->epsilon, -g->gamma); /* law at r_domain = 0 */
    double limit = (1 + T) * L0;
    double r_star = 1 + g->epsilon - pow(g->C / (limit - K), 1 / g->gamma);
    LawRecommendQuery q = {
        .N = N, .D = D, .max_general_rise = T, .base_general_loss = NAN, .flat_tol = 1e-3};
    LawRecommendation rec;
    char err[LAW_ERR_LEN];
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == 0, "%s", err);
    printf("usage 1: r %.10f (closed form %.10f), loss_general %.6f limit %.6f, flat [%.4f, "
           "%.4f]\n",
           rec.r_domain, r_star, rec.loss_general, limit, rec.flat_lo, rec.flat_hi);
    /* Brent's root finder brackets to 1e-14: 1e-9 leaves room for rounding. */
    CHECK(fabs(rec.r_domain - r_star) < 1e-9, "r %.12f vs %.12f", rec.r_domain, r_star);
    CHECK(rec.constraint_active, "constraint not reported as binding");
    CHECK(rec.loss_general <= limit && rec.loss_general > limit * (1 - 1e-9), "general %.12f",
          rec.loss_general);
    CHECK(fabs(rec.base_general_loss - L0) < 1e-12 && fabs(rec.general_limit - limit) < 1e-12,
          "base %.12f", rec.base_general_loss);
    CHECK(fabs(rec.loss_domain - law_eval(&m.domain.p, N, D, r_star, 0, 0)) < 1e-9, "domain");
    /* The optimum sits on the limit, so nothing above it is feasible and
     * the flat range ends at r itself. */
    CHECK(rec.flat_hi == rec.r_domain && rec.flat_lo < rec.r_domain, "flat [%g, %g]", rec.flat_lo,
          rec.flat_hi);

    /* An explicit base loss moves the limit and the answer with it. */
    q.base_general_loss = L0 * 1.01;
    limit = (1 + T) * q.base_general_loss;
    r_star = 1 + g->epsilon - pow(g->C / (limit - K), 1 / g->gamma);
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == 0, "%s", err);
    CHECK(fabs(rec.r_domain - r_star) < 1e-9, "r %.12f vs %.12f", rec.r_domain, r_star);

    /* A limit that never binds: the domain loss falls with r, so r = 1. */
    q.base_general_loss = NAN;
    q.max_general_rise = 10;
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == 0, "%s", err);
    CHECK(rec.r_domain == 1.0 && !rec.constraint_active, "r %g", rec.r_domain);

    /* A base loss below anything the law reaches: no feasible r. */
    q.max_general_rise = 0.03;
    q.base_general_loss = 1.0;
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == -1, "infeasible accepted");
    CHECK(strstr(err, "no r_domain") != NULL, "message: %s", err);

    m.has_general = 0;
    q.base_general_loss = NAN;
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == -1, "no general law accepted");
    CHECK(strstr(err, "general") != NULL, "message: %s", err);
}

/* Usage 2 with epsilon = 0: L_d(r) = const + B r^(eta+beta) / Dd^beta + C r^-gamma,
 * minimised at r*^(eta+beta+gamma) = C gamma Dd^beta / (B (eta + beta)). */
static void test_usage2(void) {
    LawModel m = usage1_model();
    LawParams *p = &m.domain.p;
    *p = (LawParams){.E = 1.5,
                     .A = 400,
                     .alpha = 0.35,
                     .B = 400,
                     .eta = 0.5,
                     .beta = 0.3,
                     .C = 0.4,
                     .gamma = 0.4,
                     .epsilon = 0.0};
    double Dd = 1e9;
    double r_star = pow(p->C * p->gamma * pow(Dd, p->beta) / (p->B * (p->eta + p->beta)),
                        1 / (p->eta + p->beta + p->gamma));
    LawRecommendQuery q = {
        .N = 2e8, .domain_tokens = Dd, .flat_tol = 1e-3, .base_general_loss = NAN};
    LawRecommendation rec;
    char err[LAW_ERR_LEN];
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == 0, "%s", err);
    printf("usage 2: r %.8f (closed form %.8f), D %.4g, flat [%.4f, %.4f]\n", rec.r_domain, r_star,
           rec.D, rec.flat_lo, rec.flat_hi);
    /* Brent's minimiser locates a smooth minimum to ~sqrt(machine eps) in
     * r: 1e-6 is a safe bound, while a scan-only answer could be off by up
     * to 5e-5 (half a grid step). */
    CHECK(fabs(rec.r_domain - r_star) < 1e-6, "r %.10f vs %.10f", rec.r_domain, r_star);
    CHECK(fabs(rec.D - Dd / rec.r_domain) < 1e-3 * rec.D, "D %g", rec.D);
    CHECK(!rec.constraint_active, "usage 2 has no constraint");
    /* Flatness: within 0.1% of the optimum inside the range, beyond it just
     * outside. */
    double Lmin = rec.loss_domain, cut = Lmin * (1 + 1e-3);
    double at_lo = law_eval(p, q.N, Dd / rec.flat_lo, rec.flat_lo, 0, 0);
    double at_hi = law_eval(p, q.N, Dd / rec.flat_hi, rec.flat_hi, 0, 0);
    double past_lo = law_eval(p, q.N, Dd / (rec.flat_lo - 1e-4), rec.flat_lo - 1e-4, 0, 0);
    double past_hi = law_eval(p, q.N, Dd / (rec.flat_hi + 1e-4), rec.flat_hi + 1e-4, 0, 0);
    CHECK(rec.flat_lo < r_star && r_star < rec.flat_hi, "flat range");
    CHECK(at_lo <= cut && at_hi <= cut && past_lo > cut && past_hi > cut,
          "flat ends %.8f %.8f past %.8f %.8f cut %.8f", at_lo, at_hi, past_lo, past_hi, cut);
    /* A looser tolerance widens the range. */
    double w = rec.flat_hi - rec.flat_lo;
    q.flat_tol = 1e-2;
    CHECK(law_recommend(&m, &q, &rec, err, sizeof err) == 0, "%s", err);
    CHECK(rec.flat_hi - rec.flat_lo > w, "range did not widen");
}

static void test_save_load(void) {
    LawModel m = usage1_model(), back;
    m.general.p.B = 1.0 / 3.0; /* needs all 17 digits to round-trip */
    m.general.n_obs = 140;
    m.general.r2 = 0.9991;
    m.general.holdout_mean_rel = NAN; /* stored as null */
    m.domain.n_groups = 2;
    m.domain.group_r[0] = 0.25;
    m.domain.group_mean_rel[0] = 0.004;
    m.domain.group_r[1] = 0.5;
    m.domain.group_mean_rel[1] = 0.002;
    char path[] = "/tmp/test_law_modelXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    char err[LAW_ERR_LEN];
    CHECK(law_model_save(&m, path, err, sizeof err) == 0, "%s", err);
    CHECK(law_model_load(path, &back, err, sizeof err) == 0, "%s", err);
    CHECK(!memcmp(&back.general.p, &m.general.p, sizeof m.general.p), "general params differ");
    CHECK(!memcmp(&back.domain.p, &m.domain.p, sizeof m.domain.p), "domain params differ");
    CHECK(back.general.n_obs == 140 && back.general.r2 == 0.9991, "diagnostics");
    CHECK(isnan(back.general.holdout_mean_rel), "NaN did not come back as NaN");
    CHECK(back.domain.n_groups == 2 && back.domain.group_r[1] == 0.5 &&
              back.domain.group_mean_rel[0] == 0.004,
          "groups");
    double lg, ld;
    CHECK(law_predict(&back, 2e8, 1e9, 0.3, NAN, NAN, &lg, &ld, err, sizeof err) == 0, "%s", err);
    CHECK(lg == law_eval(&m.general.p, 2e8, 1e9, 0.7, 0, 0) &&
              ld == law_eval(&m.domain.p, 2e8, 1e9, 0.3, 0, 0),
          "predict %g %g", lg, ld);
    CHECK(law_predict(&back, 2e8, 1e9, 1.2, NAN, NAN, &lg, &ld, err, sizeof err) == -1 &&
              strstr(err, "r_domain"),
          "r 1.2: %s", err);
    CHECK(law_predict(&back, -1, 1e9, 0.5, NAN, NAN, &lg, &ld, err, sizeof err) == -1 &&
              strstr(err, "N ="),
          "N -1: %s", err);
    back.cross = 1;
    CHECK(law_predict(&back, 2e8, 1e9, 0.5, NAN, NAN, &lg, &ld, err, sizeof err) == -1 &&
              strstr(err, "k1"),
          "cross without k: %s", err);

    /* A law file with a non-positive parameter or the wrong format. */
    FILE *f = fopen(path, "w");
    fputs("{\"format\": \"dapt-law\", \"version\": 1, \"domain\": {\"params\": {\"E\": 1, "
          "\"A\": 1, \"alpha\": 0.3, \"B\": 1, \"eta\": 1, \"beta\": 1, \"C\": 1, \"gamma\": -1, "
          "\"epsilon\": 0.1}}}",
          f);
    fclose(f);
    CHECK(law_model_load(path, &back, err, sizeof err) == -1 && strstr(err, "domain.params.gamma"),
          "message: %s", err);
    f = fopen(path, "w");
    fputs("{\"N\": 1}", f);
    fclose(f);
    CHECK(law_model_load(path, &back, err, sizeof err) == -1 && strstr(err, "format"),
          "message: %s", err);
    unlink(path);
}

int main(void) {
    test_usage1();
    test_usage2();
    test_save_load();
    return CHECK_DONE();
}
