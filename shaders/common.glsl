// Helpers shared by the kernels.
#ifndef VKD_COMMON_GLSL
#define VKD_COMMON_GLSL

// erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26); GLSL has no erf.
float vkd_erf(float x) {
  float s = sign(x);
  float a = abs(x);
  float t = 1.0 / (1.0 + 0.3275911 * a);
  float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t +
                   0.254829592) * t * exp(-a * a);
  return s * y;
}

float vkd_act(float x, uint act) {
  if (act == ACT_GELU) return 0.5 * x * (1.0 + vkd_erf(x * 0.70710678118654752));
  if (act == ACT_QUICK_GELU) return x / (1.0 + exp(-1.702 * x));
  if (act == ACT_SILU) return x / (1.0 + exp(-x));
  if (act == ACT_RELU) return max(x, 0.0);
  return x;
}

#endif
