/* torch's CPU random numbers: torch.manual_seed(S); torch.randn(n) with the same bits, so a seed
 * gives the starting noise of ComfyUI and stable-diffusion.cpp's --rng cpu.
 *
 * PyTorch computes randn of 16 or more float32 values with one of two kernels, picked by the CPU
 * it runs on, whose results differ in the last bits of about a third of the values:
 *   RNG_CPU         the AVX2 kernel (normal_fill_16_AVX2: Cephes-derived float polynomials for
 *                   log and sincos, compiled with fused multiply-adds): what every x86-64 CPU with
 *                   AVX2 gives, where ComfyUI and the other PyTorch tools run. Reproduced here in
 *                   portable C (fmaf at exactly the places the compiler fused), bit for bit on
 *                   any machine.
 *   RNG_CPU_SCALAR  the scalar kernel (libm logf/cosf/sinf): what CPUs without AVX2 give (Arm).
 * Below 16 values both use the same double-precision Box-Muller, one value a call, with the
 * second value of each pair kept for the next call (torch's generator caches it too). */
#ifndef VKD_RNG_H
#define VKD_RNG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rng_kind { RNG_CPU, RNG_CPU_SCALAR };

struct rng {
  uint32_t state[624];
  int index;
  enum rng_kind kind;
  bool has_next; /* Box-Muller's cached second sample (the < 16 path) */
  double next;
};

void rng_seed(struct rng *r, uint64_t seed); /* torch.manual_seed; the kind is RNG_CPU */
void rng_seed_kind(struct rng *r, uint64_t seed, enum rng_kind kind);
uint32_t rng_u32(struct rng *r);             /* mt19937 */
/* torch.randn(n) for float32 (any n; n >= 16 is the vectorised layout that latents use). */
void rng_randn(struct rng *r, float *out, size_t n);
/* "cpu" / "cpu-scalar" -> the kind; -1 when unknown. */
int rng_kind_parse(const char *name);
const char *rng_kind_name(enum rng_kind k);

#endif
