# Sourced by the emulation scripts: where things are, and the build of one emulation program NAME.cpp (one
# translation unit with shim.h and the kernels cut into $out) against build-cuda's libmambac.a (the references).
here=$(cd "$(dirname "$0")" && pwd); root=$here/../..; out=${TMPDIR:-/tmp}/scan_par_emu; mkdir -p "$out"
emu_build() {
    g++ -std=c++20 -O1 -I"$out" -I"$here" -I"$root/src" -I"$root/include" "$here/$1.cpp" -o "$out/$1" \
        "$root/build-cuda/libmambac.a" -L/usr/local/cuda/lib64 -lcudart -lcublas -lcjson -lutf8proc -lopenblas \
        -fopenmp -lpthread -lm
}
