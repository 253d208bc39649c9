// Physical core count from sysfs topology (distinct package/core pairs), falling back to online CPUs.

#include <stdio.h>
#include <unistd.h>

#include "mambac.h"

int mc_cpu_physical_cores(void) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int n_cpu = online > 0 ? (int)online : 1;
    enum { MAX_CPUS = 4096 };
    long seen[256];
    int n_seen = 0;
    for (int cpu = 0; cpu < n_cpu && cpu < MAX_CPUS; cpu++) {
        char path[128];
        long core = -1, pkg = -1;
        snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        FILE *f = fopen(path, "r");
        if (f == NULL || fscanf(f, "%ld", &core) != 1) {
            if (f != NULL) {
                fclose(f);
            }
            return n_cpu;
        }
        fclose(f);
        snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        f = fopen(path, "r");
        if (f != NULL) {
            if (fscanf(f, "%ld", &pkg) != 1) {
                pkg = 0;
            }
            fclose(f);
        }
        long key = pkg * 65536 + core;
        int found = 0;
        for (int i = 0; i < n_seen; i++) {
            found |= seen[i] == key;
        }
        if (!found) {
            if (n_seen == (int)(sizeof(seen) / sizeof(seen[0]))) {
                return n_cpu;
            }
            seen[n_seen++] = key;
        }
    }
    return n_seen > 0 ? n_seen : n_cpu;
}
