/* Helpers of the benchmarks (and of the progress display's clock). */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <time.h>

#include "cli.h"
#include "ops.h"

double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static enum status peak_of(struct gpu *g, bool half, double *gflops) {
  struct gpu_arena *a = NULL;
  const uint32_t groups = 64, iters = 4096;
  enum status st = gpu_arena_create(g, groups * 256 * 4 + 4096, "peak", &a);
  struct gpu_tensor y;
  if (!st) st = gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){groups * 256}, &y);
  double best = 1e30;
  for (int rep = 0; rep < 3 && !st; rep++) {
    double t0 = bench_now();
    if (!(st = gpu_begin(g))) st = (half ? op_peak16 : op_peak)(g, &y, groups, iters);
    if (!st) st = gpu_submit(g);
    double t = bench_now() - t0;
    if (t < best) best = t;
  }
  gpu_arena_destroy(a);
  *gflops = st ? 0 : (double)groups * 256 * iters * 64 / best * 1e-9;
  return st;
}

enum status bench_peak(struct gpu *g, double *gflops) { return peak_of(g, false, gflops); }

enum status bench_peak16(struct gpu *g, double *gflops) {
  *gflops = 0;
  return gpu_info(g)->shader_float16 ? peak_of(g, true, gflops) : STATUS_OK;
}

struct gpu *bench_open(long device, double *peak) {
  struct gpu *g = cli_gpu("bench", (int)device);
  if (g && bench_peak(g, peak)) {
    cli_finish_gpu(g, cli_fail("bench", "peak"));
    return NULL;
  }
  if (g) gpu_memory_reset_peak(g);
  return g;
}

