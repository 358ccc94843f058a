// peak16: the device's fp16 FMA throughput (shaderFloat16 only), as peak.comp in f16vec4: 8
// independent chains for `iters` iterations, 64 flops per iteration; the chains are summed in fp32.
// Only the benchmark uses fp16 arithmetic (every kernel computes in fp32); it shows what a GPU's
// fp16 units could add. Bindings: 0 y f32 [invocations]. Dispatch: (groups, 1, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { peak_push p; };
layout(set = 0, binding = 0) writeonly buffer Y { float y[]; };

void main() {
  float16_t s = float16_t(float(gl_GlobalInvocationID.x % 64u) * 1e-3);
  f16vec4 a0 = f16vec4(s), a1 = a0 + 0.1hf, a2 = a0 + 0.2hf, a3 = a0 + 0.3hf;
  f16vec4 a4 = a0 + 0.4hf, a5 = a0 + 0.5hf, a6 = a0 + 0.6hf, a7 = a0 + 0.7hf;
  const f16vec4 m = f16vec4(0.5hf), c = f16vec4(0.25hf); // the product is exact: fused or not, one rounding
  for (uint i = 0; i < p.iters; i++) {
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  vec4 t = vec4(a0) + vec4(a1) + vec4(a2) + vec4(a3) + vec4(a4) + vec4(a5) + vec4(a6) + vec4(a7);
  y[gl_GlobalInvocationID.x] = t.x + t.y + t.z + t.w;
}
