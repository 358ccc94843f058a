#include "weights.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

uint64_t weights_fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) {
    h ^= (uint8_t)*s;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t weights_splitmix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !memcmp(s + a - b, suffix, b);
}

int weights_rule(const char *name, int ndim) {
  const char *dot = strrchr(name, '.');
  const char *last = dot ? dot + 1 : name;
  if (!strcmp(last, "bias")) return 1;
  if (ends_with(name, "embedding.weight") || ends_with(last, "embedding")) return 2;
  if (ndim == 1) return 3;
  if (ndim >= 2) return 4;
  return 5;
}

void weights_fill(const char *name, int ndim, const int64_t *shape, uint64_t seed, float *out) {
  uint64_t s = weights_fnv1a64(name) ^ seed;
  int64_t numel = 1, fan_in = 1;
  for (int i = 0; i < ndim; i++) numel *= shape[i];
  for (int i = 1; i < ndim; i++) fan_in *= shape[i];
  int rule = weights_rule(name, ndim);
  double scale = rule == 1 ? 0.02 : rule == 2 ? 0.02 * sqrt(3.0) : rule == 3 ? 0.1 : rule == 4 ? sqrt(3.0 / (double)fan_in) : 0.02;
  for (int64_t i = 0; i < numel; i++) {
    uint64_t z = weights_splitmix64(s + (uint64_t)i);
    double t = 2.0 * ((double)(z >> 11) * (1.0 / 9007199254740992.0)) - 1.0;
    double v = scale * t;
    if (rule == 3) v = 1.0 + v;
    out[i] = (float)v;
  }
}
