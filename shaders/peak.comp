// peak: measures the device's fp32 FMA throughput. Each invocation runs 8 independent vec4 FMA
// chains for `iters` iterations: 64 flops per iteration. The sum is stored so nothing is elided.
// Bindings: 0 y f32 [invocations]. Dispatch: (groups, 1, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { peak_push p; };
layout(set = 0, binding = 0) writeonly buffer Y { float y[]; };

void main() {
  float s = float(gl_GlobalInvocationID.x) * 1e-9;
  vec4 a0 = vec4(s), a1 = a0 + 0.1, a2 = a0 + 0.2, a3 = a0 + 0.3;
  vec4 a4 = a0 + 0.4, a5 = a0 + 0.5, a6 = a0 + 0.6, a7 = a0 + 0.7;
  const vec4 m = vec4(0.999999), c = vec4(1e-7);
  for (uint i = 0; i < p.iters; i++) {
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  vec4 t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
  y[gl_GlobalInvocationID.x] = t.x + t.y + t.z + t.w;
}
