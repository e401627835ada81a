/* test_vecmath.c: the vectorisable exp/tanh/sigmoid of kernels/cpu/vecmath.h
 * against libm in double precision, over a dense sweep of their range. */
#include <float.h>
#include <math.h>

#include "kernels/cpu/vecmath.h"
#include "tests/c/check.h"

static double ulp_of(double y) {
    int e;
    frexp(y, &e);
    return ldexp(1.0, e - 24); /* float has a 24-bit significand */
}

int main(void) {
    double worst_exp = 0.0, worst_tanh = 0.0, worst_sig = 0.0;
    for (float x = -87.0f; x <= 88.0f; x += 0.00137f) {
        double ref = exp((double)x);
        double err = fabs((double)vec_expf(x) - ref) / ulp_of(ref);
        if (err > worst_exp) worst_exp = err;
    }
    for (float x = -12.0f; x <= 12.0f; x += 0.000731f) {
        /* absolute error: the model uses tanh inside 0.5 x (1 + tanh) */
        double e = fabs((double)vec_tanhf(x) - tanh((double)x));
        if (e > worst_tanh) worst_tanh = e;
        double s = fabs((double)vec_sigmoidf(x) - 1.0 / (1.0 + exp(-(double)x)));
        if (s > worst_sig) worst_sig = s;
    }
    printf("vec_expf worst %.2f ulp; vec_tanhf worst abs %.2e; vec_sigmoidf worst abs %.2e\n",
           worst_exp, worst_tanh, worst_sig);
    CHECK(worst_exp <= 2.0, "exp error %.2f ulp", worst_exp);
    CHECK(worst_tanh <= 2.5e-7, "tanh error %.2e", worst_tanh);
    CHECK(worst_sig <= 1.5e-7, "sigmoid error %.2e", worst_sig);
    /* small arguments keep relative accuracy (series branch) */
    CHECK(fabs(vec_tanhf(1e-3f) / tanh(1e-3) - 1.0) < 1e-6, "tanh(1e-3) = %.9g", vec_tanhf(1e-3f));
    /* edges */
    CHECK(vec_expf(-100.0f) == 0.0f, "exp(-100) = %g", vec_expf(-100.0f));
    CHECK(isinf(vec_expf(100.0f)), "exp(100) = %g", vec_expf(100.0f));
    CHECK(isnan(vec_expf(NAN)), "exp(NaN) = %g", vec_expf(NAN));
    CHECK(vec_expf(0.0f) == 1.0f, "exp(0) = %.9g", vec_expf(0.0f));
    CHECK(vec_expf(88.7f) <= FLT_MAX, "exp(88.7) overflowed");
    CHECK(vec_tanhf(20.0f) == 1.0f && vec_tanhf(-20.0f) == -1.0f, "tanh saturation");
    return CHECK_DONE();
}
