#include "rng.h"

#include <math.h>

void rng_seed(struct rng *r, uint64_t seed) {
  r->state[0] = (uint32_t)(seed & 0xffffffffu);
  for (int i = 1; i < 624; i++) r->state[i] = 1812433253u * (r->state[i - 1] ^ (r->state[i - 1] >> 30)) + (uint32_t)i;
  r->index = 624;
}

uint32_t rng_u32(struct rng *r) {
  if (r->index >= 624) {
    for (int i = 0; i < 624; i++) {
      uint32_t y = (r->state[i] & 0x80000000u) | (r->state[(i + 1) % 624] & 0x7fffffffu);
      r->state[i] = r->state[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1) ? 0x9908b0dfu : 0);
    }
    r->index = 0;
  }
  uint32_t y = r->state[r->index++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  return y ^ (y >> 18);
}

/* torch's uniform_real_distribution<float>: 24 random bits scaled in double, stored as float */
static float uniform(struct rng *r) { return (float)((double)(rng_u32(r) & ((1u << 24) - 1)) * (1.0 / 16777216.0)); }

/* torch normal_fill_16: pairs (j, j + 8) of 16 uniforms -> 16 normals, in float */
static void fill16(float *d) {
  for (int j = 0; j < 8; j++) {
    float u1 = 1 - d[j], u2 = d[j + 8];
    float radius = sqrtf(-2 * logf(u1));
    float theta = (float)(2.0f * 3.14159265358979323846 * u2);
    d[j] = radius * cosf(theta);
    d[j + 8] = radius * sinf(theta);
  }
}

void rng_randn(struct rng *r, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = uniform(r);
  for (size_t i = 0; i + 16 <= n; i += 16) fill16(out + i);
  if (n % 16 && n >= 16) { /* torch redraws the last 16 values */
    float *d = out + n - 16;
    for (int i = 0; i < 16; i++) d[i] = uniform(r);
    fill16(d);
  }
}
