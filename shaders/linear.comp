// linear: the generic matrix product for any K (linear_tiled needs K % 4 == 0):
//   y[y_offset + m * ldy + n] = act(sum_k a[m, k] * b[n, k] + bias[n]) (+ y when accumulate),
//   or at y[y_offset + n * ldy + m] with transpose_y
// Bindings: 0 a f32 [M, K], 1 bias f32 [N] (any buffer when absent), 2 y f32;
//           8 b uniform texel buffer R32F or R16F [N, K] (fp32 accumulation).
// Dispatch: (ceil(N / WG), M, 1); one output per invocation.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { linear_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 2) buffer Y { float y[]; };
layout(set = 0, binding = 8) uniform samplerBuffer W;

void main() {
  uint n = gl_GlobalInvocationID.x, m = gl_WorkGroupID.y;
  if (n >= p.cols || m >= p.rows) return;
  uint xo = m * p.inner;
  int wo = int(n * p.inner);
  float acc = 0.0;
  for (uint k = 0; k < p.inner; k++) acc += x[xo + k] * texelFetch(W, wo + int(k)).x;
  if (p.bias_mode == BIAS_COL) acc += bias[p.bias_offset + n]; // batches: the tiled kernels only
  acc = vkd_act(acc, p.act);
  uint o = p.y_offset + (p.transpose_y != 0 ? n * p.ldy + m : m * p.ldy + n);
  y[o] = p.accumulate != 0 ? y[o] + acc : acc;
}
