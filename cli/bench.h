/* Shared helpers of the benchmarks. */
#ifndef VKD_BENCH_H
#define VKD_BENCH_H
#include "gpu.h"

double bench_now(void);
/* The device's fp32 FMA throughput measured with the peak shader, GFLOP/s. */
enum status bench_peak(struct gpu *g, double *gflops);
/* The same in fp16 arithmetic; 0 where the device has none (shaderFloat16). */
enum status bench_peak16(struct gpu *g, double *gflops);

/* The device for a benchmark and its measured FMA peak (GFLOP/s); NULL after printing the error. */
struct gpu *bench_open(long device, double *peak);

#endif
