// Data-parallel training's collectives: the ranks of one job (launched by mpirun) exchange gradients, losses and
// optimizer shards through MPI (Open MPI from Debian) on the CPU backend. Without MPI, or outside mpirun, there is
// one rank and every collective is the identity. A collective that does not complete within the timeout
// (MAMBAC_DIST_TIMEOUT seconds, default 600) fails with a message naming this rank, instead of hanging.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "mambac.h"

int mc_dist_rank(void);
int mc_dist_size(void);

// Sums buf over all ranks, in place, on every rank.
mc_status mc_dist_allreduce_f32(float *buf, int64_t n, mc_error *err);
mc_status mc_dist_allreduce_f64(double *buf, int64_t n, mc_error *err);
mc_status mc_dist_allreduce_i64(int64_t *buf, int64_t n, mc_error *err);

// Copies root's buf to every rank.
mc_status mc_dist_bcast_f32(float *buf, int64_t n, int root, mc_error *err);

// Waits for every rank.
mc_status mc_dist_barrier(mc_error *err);
