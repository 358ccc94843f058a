/* Built with -ffp-contract=off: the only fused multiply-adds are the explicit fmaf calls, placed
 * where PyTorch's AVX2 build fused them (found by comparing every placement with torch 1.13's
 * randn over 5 x 2^20 values: one placement gives all of them bit for bit). */
#include "rng.h"

#include <math.h>
#include <string.h>

#include "half.h"

void rng_seed_kind(struct rng *r, uint64_t seed, enum rng_kind kind) {
  r->state[0] = (uint32_t)(seed & 0xffffffffu);
  for (int i = 1; i < 624; i++) r->state[i] = 1812433253u * (r->state[i - 1] ^ (r->state[i - 1] >> 30)) + (uint32_t)i;
  r->index = 624;
  r->kind = kind;
  r->has_next = false;
}

void rng_seed(struct rng *r, uint64_t seed) { rng_seed_kind(r, seed, RNG_CPU); }

int rng_kind_parse(const char *name) {
  if (!strcmp(name, "cpu")) return RNG_CPU;
  if (!strcmp(name, "cpu-scalar")) return RNG_CPU_SCALAR;
  return -1;
}

const char *rng_kind_name(enum rng_kind k) { return k == RNG_CPU_SCALAR ? "cpu-scalar" : "cpu"; }

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
static float uniform_f(struct rng *r) { return (float)((double)(rng_u32(r) & ((1u << 24) - 1)) * (1.0 / 16777216.0)); }

/* ... and <double>: 53 bits of random64() = (first draw << 32) | second draw */
static double uniform_d(struct rng *r) {
  uint64_t hi = rng_u32(r), lo = rng_u32(r);
  return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* avx_mathfun.h's log256_ps, one lane: the exponent split off, the mantissa folded to
 * [sqrt(1/2), sqrt(2)), a degree-8 Cephes polynomial (Horner steps fused). Inputs here are in (0, 1]. */
static float cephes_logf(float x) {
  if (x < float_from_bits(0x00800000u)) x = float_from_bits(0x00800000u); /* no denormals */
  int32_t exponent = (int32_t)(float_bits(x) >> 23) - 0x7f;
  x = float_from_bits((float_bits(x) & ~0x7f800000u) | float_bits(0.5f));
  float e = (float)exponent + 1.0f;
  bool small = x < 0.707106781186547524f;
  float extra = small ? x : 0.0f;
  x = x - 1.0f;
  e = e - (small ? 1.0f : 0.0f);
  x = x + extra;
  float z = x * x;
  static const float p[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                             -1.2420140846E-1f, 1.4249322787E-1f,  -1.6668057665E-1f,
                             2.0000714765E-1f,  -2.4999993993E-1f, 3.3333331174E-1f};
  float y = p[0];
  for (int i = 1; i < 9; i++) y = fmaf(y, x, p[i]);
  y = y * x;
  y = fmaf(y, z, e * -2.12194440e-4f);
  y = y - z * 0.5f;
  x = x + y;
  return x + e * 0.693359375f; /* e * 0.693359375 is exact: fused or not, the same */
}

/* avx_mathfun.h's sincos256_ps, one lane: octant from x * 4/pi, Cody-Waite reduction in three
 * fused steps, both polynomials, selection and signs by the octant. */
static void cephes_sincosf(float xin, float *s, float *c) {
  float x = fabsf(xin);
  uint32_t sign_sin = float_bits(xin) & 0x80000000u;
  int32_t j = (int32_t)(x * 1.27323954473516f); /* truncation, as cvttps */
  j = (j + 1) & ~1;
  float y = (float)j;
  sign_sin ^= (uint32_t)(j & 4) << 29;
  uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
  bool sine_poly = (j & 2) == 0;
  x = fmaf(y, -0.78515625f, x);
  x = fmaf(y, -2.4187564849853515625e-4f, x);
  x = fmaf(y, -3.77489497744594108e-8f, x);
  float z = x * x;
  float yc = fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
  yc = fmaf(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;
  float ys = fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
  ys = fmaf(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = fmaf(ys, x, x);
  *s = float_from_bits(float_bits(sine_poly ? ys : yc) ^ sign_sin);
  *c = float_from_bits(float_bits(sine_poly ? yc : ys) ^ sign_cos);
}

/* normal_fill_16: pairs (j, j + 8) of 16 uniforms -> 16 normals, in place */
static void fill16(float *d, enum rng_kind kind) {
  const float two_pi = (float)(2.0 * 3.14159265358979323846);
  for (int j = 0; j < 8; j++) {
    float u1 = 1 - d[j], u2 = d[j + 8];
    if (kind == RNG_CPU) { /* normal_fill_16_AVX2 (mean 0, std 1: its final fmadd changes nothing) */
      float radius = sqrtf(-2.0f * cephes_logf(u1)), sn, cs;
      cephes_sincosf(two_pi * u2, &sn, &cs);
      d[j] = radius * cs;
      d[j + 8] = radius * sn;
    } else { /* the scalar normal_fill_16 */
      float radius = sqrtf(-2 * logf(u1));
      float theta = (float)(2.0f * 3.14159265358979323846 * u2);
      d[j] = radius * cosf(theta);
      d[j + 8] = radius * sinf(theta);
    }
  }
}

/* at::normal_distribution<double>: one value, the pair's second kept for the next call */
static double normal_d(struct rng *r) {
  if (r->has_next) {
    r->has_next = false;
    return r->next;
  }
  double u1 = uniform_d(r), u2 = uniform_d(r);
  double radius = sqrt(-2.0 * log1p(-u2)), theta = 2.0 * 3.14159265358979323846 * u1;
  r->next = radius * sin(theta);
  r->has_next = true;
  return radius * cos(theta);
}

void rng_randn(struct rng *r, float *out, size_t n) {
  if (n < 16) { /* torch's serial kernel */
    for (size_t i = 0; i < n; i++) out[i] = (float)normal_d(r);
    return;
  }
  for (size_t i = 0; i < n; i++) out[i] = uniform_f(r);
  for (size_t i = 0; i + 16 <= n; i += 16) fill16(out + i, r->kind);
  if (n % 16) { /* torch redraws the last 16 values */
    float *d = out + n - 16;
    for (int i = 0; i < 16; i++) d[i] = uniform_f(r);
    fill16(d, r->kind);
  }
}
