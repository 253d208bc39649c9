// The one numeric comparison every parity test uses must be able to fail: one perturbed element past the bound,
// or a non-finite value where the reference is finite, fails it; agreement within the bound passes.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "check.h"

static void test_check_close(void **unused) {
    float want[64], got[64];
    for (int i = 0; i < 64; i++) {
        want[i] = sinf((float)i) * 10.0f; // max |want| just under 10
        got[i] = want[i];
    }
    assert_true(mc_check_close(got, want, 64, 1e-5, "identical"));
    got[17] += 9e-5f; // below 1e-5 of the scale (about 1e-4)
    assert_true(mc_check_close(got, want, 64, 1e-5, "within the bound"));
    got[17] = want[17] + 1e-3f; // ten times the bound at one element
    assert_false(mc_check_close(got, want, 64, 1e-5, "one perturbed element (expected to fail)"));
    got[17] = want[17];
    got[40] = NAN;
    assert_false(mc_check_close(got, want, 64, 1e-5, "NaN where the reference is finite (expected to fail)"));
    got[40] = INFINITY;
    assert_false(mc_check_close(got, want, 64, 1e-5, "inf where the reference is finite (expected to fail)"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
