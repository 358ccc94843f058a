/* torch's CPU random numbers: torch.manual_seed(S); torch.randn(n) with the same values, so a seed
 * gives the starting noise of ComfyUI and stable-diffusion.cpp's --rng cpu. */
#ifndef VKD_RNG_H
#define VKD_RNG_H
#include <stddef.h>
#include <stdint.h>

struct rng {
  uint32_t state[624];
  int index;
};

void rng_seed(struct rng *r, uint64_t seed); /* torch.manual_seed */
uint32_t rng_u32(struct rng *r);             /* mt19937 */
/* torch.randn(n) for float32, n >= 16 (torch's vectorised Box-Muller layout; latents always are). */
void rng_randn(struct rng *r, float *out, size_t n);

#endif
