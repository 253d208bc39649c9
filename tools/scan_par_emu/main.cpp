#include "shim.h"
extern "C" {
#include "kernels/ref/backward.h"
#include "kernels/ref/ref.h"
}
#include "kern.inc" // cut from scan_par.cu by run.sh

static bool g_aligned; // rows of q as x_proj lays them out for Mamba (B and C 16-byte aligned) or misaligned
template <int S, int W, int G, int NP> void run(int64_t Bt, int64_t L, int64_t E, int64_t N) {
    const int64_t R = g_aligned ? 4 : 3, ldbc = R + 2 * N + (g_aligned ? 0 : 1), ldz = 2 * E + 1, rows = Bt * L,
                  SS = Bt * E * N;
    std::vector<float> u(rows * E), dt(rows * E), q(rows * ldbc), xz(rows * ldz), dtb(E), A(E * N), D(E), h0(SS), dy(rows * E), dhT(SS);
    for (auto &v : u) v = U(-2, 2);
    for (auto &v : dt) { int k = (int)U(0, 10); v = k < 7 ? U(-5, 2.5) : k < 8 ? U(19, 21) : k < 9 ? 95.f : -30.f; }
    for (auto &v : q) v = U(-1, 1);
    if (g_aligned && (uintptr_t)q.data() % 16 != 0) { puts("q is not 16-byte aligned: FAIL"); exit(1); }
    for (auto &v : xz) v = U(-4, 4);
    for (auto &v : dtb) v = U(-2, 1);
    for (auto &v : A) v = -expf(U(-2, logf((float)N) + 0.5f));
    for (auto &v : D) v = U(-1, 1);
    for (auto &v : h0) v = U(-1, 1);
    for (auto &v : dy) v = U(-1, 1);
    for (auto &v : dhT) v = U(-1, 1);
    mc_exec ex = {}; ex.n_threads = 1;
    // forward reference
    std::vector<float> wy(rows * E), wh = h0;
    for (int64_t b = 0; b < Bt; b++)
        mc_ref_selective_scan(&ex, wy.data() + b * L * E, wh.data() + b * E * N, u.data() + b * L * E, dt.data() + b * L * E, dtb.data(), A.data(), q.data() + b * L * ldbc + R, q.data() + b * L * ldbc + R + N, ldbc, D.data(), xz.data() + b * L * ldz + E, ldz, L, E, N);
    std::vector<float> gy(rows * E, NAN), gh = h0;
    fwd_args fa = {};
    fa.y = gy.data(); fa.h = gh.data(); fa.u = u.data(); fa.dt = dt.data(); fa.dt_bias = dtb.data(); fa.A = A.data();
    fa.B = q.data() + R; fa.C = q.data() + R + N; fa.D = D.data(); fa.z = xz.data() + E; fa.ldbc = ldbc; fa.ldz = ldz; fa.L = L; fa.E = E; fa.N = N;
    constexpr int T = 32 * S;
    fa.nch = (L + T - 1) / T;
    launch((E + W - 1) / W, Bt, 32 * W, [&] { scan_par_fwd_kernel<S, W, NP, false, 1>(fa); });
    printf("fwd S=%d NP=%d Bt=%ld L=%ld E=%ld N=%ld: y %.3g h %.3g\n", S, NP, Bt, L, E, N, relerr(gy.data(), wy.data(), rows * E), relerr(gh.data(), wh.data(), SS));
    // backward reference
    std::vector<float> wdu(rows * E), wddt(rows * E), wdxz(rows * ldz, 7.25f), wdq(rows * ldbc, 7.25f), wdA(E * N, 0.5f), wdD(E, -0.25f), wdb(E, 0.125f), wdh0(SS);
    mc_ref_selective_scan_bwd(&ex, wdu.data(), wddt.data(), wdxz.data() + E, wdq.data() + R, wdq.data() + R + N, wdA.data(), wdD.data(), wdb.data(), wdh0.data(), dy.data(), dhT.data(), u.data(), dt.data(), dtb.data(), A.data(), q.data() + R, q.data() + R + N, ldbc, D.data(), xz.data() + E, ldz, h0.data(), Bt, L, E, N);
    std::vector<float> gdu(rows * E, NAN), gddt(rows * E, NAN), gdxz(rows * ldz, 7.25f), gdq(rows * ldbc, 7.25f), gdA(E * N, 0.5f), gdD(E, -0.25f), gdb(E, 0.125f), gdh0(SS, NAN);
    constexpr int CB = W * G;
    const int64_t nch = (L + T - 1) / T, nblk = (E + CB - 1) / CB;
    std::vector<float> ck(Bt * nch * E * N + 1, NAN), part(Bt * nblk * 2 * N * L + 1, NAN);
    fwd_args f = fa; f.y = nullptr; f.h = nullptr; f.h0 = h0.data(); f.ck = ck.data(); f.C = nullptr; f.D = nullptr; f.z = nullptr; f.nch = nch;
    if (nch > 0) launch((E + 7) / 8, Bt, 256, [&] { scan_par_fwd_kernel<S, 8, NP, true, 1>(f); });
    bwd_args a = {};
    a.du = gdu.data(); a.ddt = gddt.data(); a.dz = gdxz.data() + E; a.dB = gdq.data() + R; a.dC = gdq.data() + R + N; a.dA = gdA.data(); a.dD = gdD.data(); a.ddt_bias = gdb.data(); a.dh0 = gdh0.data();
    a.dy = dy.data(); a.dh_final = dhT.data(); a.u = u.data(); a.dt = dt.data(); a.dt_bias = dtb.data(); a.A = A.data(); a.B = q.data() + R; a.C = q.data() + R + N; a.D = D.data(); a.z = xz.data() + E;
    a.ck = ck.data(); a.part = part.data(); a.ldbc = ldbc; a.ldz = ldz; a.L = L; a.E = E; a.N = N; a.nch = nch; a.nblk = nblk;
    launch(nblk, Bt, 32 * W, [&] { scan_par_bwd_kernel<S, W, G, NP, 1>(a); });
    blockDim = {1, 1, 1}; // one thread a block, run here in order
    for (int64_t i = 0; i < Bt * 2 * N * L; i++) { blockIdx = {(unsigned)i, 0, 0}; threadIdx = {0, 0, 0}; scan_par_bc_kernel(a.dB, a.dC, ldbc, part.data(), Bt, L, N, nblk); }
    double e1 = relerr(gdu.data(), wdu.data(), rows * E), e2 = relerr(gddt.data(), wddt.data(), rows * E), e3 = relerr(gdxz.data(), wdxz.data(), rows * ldz), e4 = relerr(gdq.data(), wdq.data(), rows * ldbc);
    double e5 = relerr(gdA.data(), wdA.data(), E * N), e6 = relerr(gdD.data(), wdD.data(), E), e7 = relerr(gdb.data(), wdb.data(), E), e8 = relerr(gdh0.data(), wdh0.data(), SS);
    printf("bwd S=%d G=%d NP=%d: du %.3g ddt %.3g dxz %.3g dq %.3g dA %.3g dD %.3g db %.3g dh0 %.3g\n", S, G, NP, e1, e2, e3, e4, e5, e6, e7, e8);
}
int main(int argc, char **argv) {
    int64_t Bt = atoll(argv[1]), L = atoll(argv[2]), E = atoll(argv[3]), N = atoll(argv[4]);
    int cfg = argc > 5 ? atoi(argv[5]) : 1;
    g_aligned = argc > 6 && atoi(argv[6]) != 0;
    if (cfg == 1) run<4, 8, 4, 16>(Bt, L, E, N);
    if (cfg == 2) run<8, 8, 2, 16>(Bt, L, E, N);
    if (cfg == 3) run<4, 8, 4, 64>(Bt, L, E, N);
    if (cfg == 4) run<8, 8, 4, 16>(Bt, L, E, N);
    if (cfg == 5) run<16, 8, 4, 16>(Bt, L, E, N); // the forward's configuration 4 (S 16); its backward as a check too
}
