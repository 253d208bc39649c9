// Host emulation of sample.cu's argmax_rows_kernel (cut from the source by argmax.sh): rows of random, tied, NaN
// and −inf entries, V around the slice of a block, several rows at once, the counters reused across calls; against
// the device rule (the first index of the largest non-NaN entry, 0 when there is none).
#include <climits>
#include <cstring>
#include "shim.h"
static inline int __shfl_xor_sync(unsigned m, int v, int off) {
    float f;
    std::memcpy(&f, &v, 4);
    f = __shfl_xor_sync(m, f, off);
    std::memcpy(&v, &f, 4);
    return v;
}
static inline unsigned atomicAdd(unsigned *p, unsigned v) { std::lock_guard<std::mutex> g(g_atomic); unsigned o = *p; *p = o + v; return o; }
static inline void __threadfence() {}
template <class T> static T __ldcg(const T *p) { return *p; }
#include "argmax.inc"


static int want_of(const float *s, int64_t V) {
    int best = -1;
    for (int64_t i = 0; i < V; i++)
        if (!std::isnan(s[i]) && (best < 0 || s[i] > s[best])) best = (int)i;
    return best < 0 ? 0 : best;
}

int main() {
    std::vector<unsigned> count(8, 0);
    int bad = 0, cases = 0;
    for (int64_t V : {1, 100, 4096, 4097, 9000, 50280})
        for (int kind = 0; kind < 4; kind++) {
            const int64_t n = 3, ld = V + 5, G = (V + ARGMAX_SLICE - 1) / ARGMAX_SLICE;
            std::vector<float> x(n * ld), pv(n * G);
            std::vector<int> pi(n * G);
            std::vector<int32_t> out(n, -1);
            for (auto &v : x) v = kind == 1 ? (float)(int)U(0, 3) : U(-5, 5); // kind 1: many ties
            for (int64_t r = 0; r < n; r++) {
                float *s = x.data() + r * ld;
                if (kind == 2) for (int64_t i = 0; i < V; i += 3) s[i] = NAN;           // NaNs, s[0] among them
                if (kind == 3) for (int64_t i = 0; i < V; i++) s[i] = -INFINITY;       // no finite entry
                if (kind == 0 && r == 1) s[V - 1] = 100.0f;                            // the max in the last slice
            }
            launch((unsigned)G, (unsigned)n, 256, [&] {
                argmax_rows_kernel(x.data(), ld, V, pv.data(), pi.data(), count.data(), out.data());
            });
            for (int64_t r = 0; r < n; r++) {
                const int w = want_of(x.data() + r * ld, V);
                cases++;
                if (out[r] != w || count[r] != 0) {
                    bad++;
                    printf("V=%ld kind=%d row %ld: got %d want %d (count %u)\n", V, kind, r, out[r], w, count[r]);
                }
            }
        }
    printf("%s (%d rows, %d wrong)\n", bad == 0 ? "ok" : "FAILED", cases, bad);
    return bad != 0;
}
