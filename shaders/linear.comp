// linear: y[m, n] = act(sum_k x[m, k] * W[n, k] + b[n])      (torch: act(F.linear(x, W, b)))
// Generic path for any K (the tiled kernel needs K % 4 == 0).
// Bindings: 0 x f32 [M, K], 1 b f32 [N] (x when absent), 2 y f32 [M, N];
//           8 W uniform texel buffer R32F or R16F [N, K] (fp32 accumulation).
// Dispatch: (ceil(N / WG), M, 1); one output per invocation.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { linear_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer B { float bias[]; };
layout(set = 0, binding = 2) writeonly buffer Y { float y[]; };
layout(set = 0, binding = 8) uniform samplerBuffer W;

void main() {
  uint n = gl_GlobalInvocationID.x, m = gl_WorkGroupID.y;
  if (n >= p.cols || m >= p.rows) return;
  uint xo = m * p.inner;
  int wo = int(n * p.inner);
  float acc = 0.0;
  for (uint k = 0; k < p.inner; k++) acc += x[xo + k] * texelFetch(W, wo + int(k)).x;
  if (p.has_bias != 0) acc += bias[n];
  y[m * p.cols + n] = vkd_act(acc, p.act);
}
