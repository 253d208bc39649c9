// Host emulation of conv1d_tile_kernel (cut into conv.inc by conv.sh): every (block, thread) of the grid run in
// turn, compared with mc_ref_conv1d per sequence; prints the worst relative error per shape and ok or FAIL.
#include "shim.h"
extern "C" {
#include "kernels/ref/ref.h"
}
#include "conv.inc"

static double run(int64_t Bt, int64_t L, int64_t E, bool with_bias) {
    constexpr int K = 4, TT = 8, NT = 128;
    const int64_t ldx = 2 * E + 1;
    std::vector<float> x(Bt * L * ldx), w(E * K), b(E), st(Bt * E * K), got(Bt * L * E, NAN), want(Bt * L * E);
    for (auto *v : { &x, &w, &b, &st }) {
        for (float &f : *v) f = U(-1, 1);
    }
    std::vector<float> st2 = st;
    mc_exec ex = {};
    ex.n_threads = 1;
    for (int64_t q = 0; q < Bt; q++) {
        mc_ref_conv1d(&ex, want.data() + q * L * E, st2.data() + q * E * K, x.data() + q * L * ldx, ldx, w.data(),
                      with_bias ? b.data() : nullptr, L, E, K);
    }
    const unsigned gx = (unsigned)((L + TT - 1) / TT), gy = (unsigned)((E + NT - 1) / NT);
    blockDim = { NT, 1, 1 };
    for (unsigned bz = 0; bz < Bt; bz++)
        for (unsigned by = 0; by < gy; by++)
            for (unsigned bx = 0; bx < gx; bx++)
                for (unsigned t = 0; t < NT; t++) {
                    blockIdx = { bx, by, bz };
                    threadIdx = { t, 0, 0 };
                    conv1d_tile_kernel<K, TT>(got.data(), st.data(), x.data(), ldx, w.data(),
                                              with_bias ? b.data() : nullptr, L, E);
                }
    return relerr(got.data(), want.data(), Bt * L * E);
}

int main() {
    bool bad = false;
    const int64_t shapes[][3] = { { 1, 1, 1 }, { 2, 3, 17 }, { 3, 8, 128 }, { 1, 9, 129 }, { 2, 17, 65 }, { 2, 130, 300 } };
    for (const auto &s : shapes) {
        for (int bias = 0; bias < 2; bias++) {
            const double e = run(s[0], s[1], s[2], bias);
            printf("conv Bt=%lld L=%lld E=%lld bias=%d: %.3g\n", (long long)s[0], (long long)s[1], (long long)s[2], bias,
                   e);
            bad |= !(e < 1e-6);
        }
    }
    puts(bad ? "FAIL" : "ok");
    return bad;
}
