// What this machine offers the CPU backend: physical core count.
#pragma once

int mc_cpu_count_physical(void);
