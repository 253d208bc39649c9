# Sourced by the emulation scripts: where things are, the build of one emulation program NAME.cpp (one translation
# unit with shim.h and the kernels cut into $out) against build-cuda's libmambac.a (the references), and emu_cut.
here=$(cd "$(dirname "$0")" && pwd); root=$here/../..; out=${TMPDIR:-/tmp}/scan_par_emu; mkdir -p "$out"
emu_build() {
    g++ -std=c++20 -O1 -I"$out" -I"$here" -I"$root/src" -I"$root/include" "$here/$1.cpp" -o "$out/$1" \
        "$root/build-cuda/libmambac.a" -L/usr/local/cuda/lib64 -lcudart -lcublas -lcjson -lutf8proc -lopenblas \
        -fopenmp -lpthread -lm
}
# emu_cut SRC OUT FROM TO: SRC's text from the first FROM up to the first TO after it, into OUT (a \n in the markers
# stands for a newline).
emu_cut() {
    python3 -c '
import sys
src, out, a, b = (v.replace("\\n", "\n") for v in sys.argv[1:5])
s = open(src).read()
i = s.index(a)
open(out, "w").write(s[i:s.index(b, i)])
' "$@"
}
