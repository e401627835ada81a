/* law.h: the D-CPT scaling law (Que et al. 2024) -- load sweep results, fit
 * the law with a robust multi-start minimiser (GSL), save/load the fitted
 * law as JSON, predict losses and recommend a domain mixture ratio.
 *
 *   L(N, D, r) = E + A/N^alpha + B*r^eta/D^beta + C/(r+epsilon)^gamma
 *                [ + F/K^mu,  K = w1/k1 + w2*k2   (cross-domain law) ]
 *
 * N is the parameter count, D the CPT token count, r the share of the
 * target's own data in the mixture: the general loss is fitted with
 * r = 1 - r_domain (the general share), the domain loss with r = r_domain.
 *
 * Invariants: every fitted parameter is positive (the fit works on
 * log-parameters; w1 + w2 = 1 so K's scale is carried by F alone); a
 * LawData that law_data_load accepted has finite N > 0, D > 0,
 * r_domain in [0,1], losses finite and > 0, no duplicate (N, D, r_domain,
 * domain) rows. Library functions return 0 on success and -1 on failure,
 * with a message naming the file, line and what was expected in err; they
 * never print or exit. */
#ifndef DAPT_LAW_H
#define DAPT_LAW_H

#include <stddef.h>

#define LAW_ERR_LEN         512
#define LAW_DOMAIN_NAME_LEN 64

/* One observation: a validation loss measured after D CPT tokens of a model
 * with N parameters trained on a mixture with domain share r_domain. */
typedef struct {
    double N, D, r_domain;
    double loss_general, loss_domain; /* valid when has_general / has_domain */
    int has_general, has_domain;
    char domain[LAW_DOMAIN_NAME_LEN]; /* "" when the row names no domain */
    double k1, k2;                    /* cross-domain statistics; valid when has_k */
    int has_k;
    int line; /* 1-based line in the source file */
} LawObs;

typedef struct {
    LawObs *rows; /* (n) */
    int n;
    char path[256];
} LawData;

/* Reads JSONL (one object per line) or CSV (header naming the columns; the
 * format is chosen by a ".csv" suffix) and validates every row. */
int law_data_load(const char *path, LawData *out, char *err, size_t err_len);
/* Parses an in-memory buffer; `name` is used in messages and format choice. */
int law_data_parse(const char *name, const char *text, LawData *out, char *err, size_t err_len);
void law_data_free(LawData *d);

typedef enum { LAW_GENERAL = 0, LAW_DOMAIN = 1 } LawTarget;

/* Parameters in the units of the data (N in parameters, D in tokens). */
typedef struct {
    double E, A, alpha, B, eta, beta, C, gamma, epsilon;
    double F, mu, w1, w2; /* used only when cross != 0 */
    int cross;
} LawParams;

/* The law at (N, D, r) with r the target's own share; k1, k2 only matter
 * for a cross-domain law. */
double law_eval(const LawParams *p, double N, double D, double r, double k1, double k2);
/* Number of free parameters: 9, or 12 for the cross-domain law. */
int law_n_params(int cross);

typedef struct {
    double huber_delta; /* Huber threshold on log-loss residuals (1e-3) */
    int n_starts;       /* best grid starts that get a full minimisation (16) */
    int max_iter;       /* minimiser iterations per start (1000) */
    int holdout;        /* compute leave-one-group-out error (1) */
    int cross_domain;   /* fit the cross-domain law (0) */
} LawFitOptions;

void law_fit_options_default(LawFitOptions *o);

#define LAW_MAX_GROUPS 64

/* One fitted law with its diagnostics. The held-out error is
 * leave-one-ratio-out (groups = distinct r_domain values) or, for the
 * cross-domain law, leave-one-domain-out (groups = domains). */
typedef struct {
    LawParams p;
    int n_obs;
    double huber_loss; /* mean Huber loss of log-residuals at the optimum */
    double r2;         /* coefficient of determination on the losses */
    double rmse_rel;   /* root mean square relative error on the fit data */
    double N_min, N_max, D_min, D_max;
    /* The paper requires dL/dr < 0. It holds for every D when it holds at
     * D_min (the only positive term of dL/dr shrinks with D); r_rise_from is
     * the smallest share r (the target's own) on a grid of step 0.001 where
     * dL/dr >= 0 at D_min, or NAN when the loss falls with r on all of (0, 1]. */
    double r_rise_from;
    int n_groups; /* groups with a held-out error */
    double holdout_mean_rel, holdout_max_rel;
    double group_r[LAW_MAX_GROUPS]; /* r_domain of each group (ratio mode) */
    char group_domain[LAW_MAX_GROUPS][LAW_DOMAIN_NAME_LEN]; /* (cross mode) */
    double group_mean_rel[LAW_MAX_GROUPS];
} LawFit;

int law_fit(const LawData *d, LawTarget t, const LawFitOptions *o, LawFit *out, char *err,
            size_t err_len);

/* A fitted law for both losses, as stored in law.json. */
typedef struct {
    int has_general, has_domain;
    LawFit general, domain;
    double huber_delta;
    int cross;
} LawModel;

int law_model_save(const LawModel *m, const char *path, char *err, size_t err_len);
int law_model_load(const char *path, LawModel *m, char *err, size_t err_len);

/* Both predicted losses at domain share r_domain (NAN for a loss the model
 * has no fit for). k1, k2 are required (finite, > 0) for a cross-domain
 * law and ignored otherwise. */
int law_predict(const LawModel *m, double N, double D, double r_domain, double k1, double k2,
                double *loss_general, double *loss_domain, char *err, size_t err_len);

/* Usage 1 (domain_tokens == 0): minimise the domain loss at fixed N, D
 * subject to loss_general <= (1 + max_general_rise) * base_general_loss;
 * base_general_loss NAN means the law's general loss at r_domain = 0.
 * Usage 2 (domain_tokens > 0): minimise the domain loss over r_domain with
 * D = domain_tokens / r_domain (D is ignored). */
typedef struct {
    double N, D;
    double max_general_rise;
    double base_general_loss;
    double domain_tokens;
    double flat_tol; /* relative domain-loss slack that defines "flat" (0.001) */
    double k1, k2;
} LawRecommendQuery;

typedef struct {
    double r_domain, loss_general, loss_domain;
    double D;                 /* tokens at the optimum (domain_tokens / r in usage 2) */
    double base_general_loss; /* usage 1 */
    double general_limit;     /* usage 1: (1 + T) * base */
    int constraint_active;    /* usage 1: the general-loss limit set the optimum */
    double flat_lo, flat_hi;  /* r range whose domain loss is within flat_tol of the
                                 optimum (and feasible) */
} LawRecommendation;

int law_recommend(const LawModel *m, const LawRecommendQuery *q, LawRecommendation *out, char *err,
                  size_t err_len);

#endif
