// Builds the CPU backend's op table from the per-op selectors; each picks its variant for the running CPU.
#include "kernels/cpu/cpu.h"

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ssm.h"

void mc_ops_cpu_init(mc_ops *ops) {
    ops->name = "cpu";
    ops->matmul = mc_cpu_matmul_select();
    ops->embed = mc_cpu_embed_select();
    ops->rmsnorm = mc_cpu_rmsnorm_select();
    ops->conv1d = mc_cpu_conv1d_select();
    ops->selective_scan = mc_cpu_selective_scan_select();
    ops->conv1d_step = mc_cpu_conv1d_step_select();
    ops->selective_scan_step = mc_cpu_selective_scan_step_select();
    ops->nll = mc_cpu_nll;
}
