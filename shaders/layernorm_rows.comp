// layernorm_rows: the same result as layernorm.comp, one invocation per row with no barrier (the
// variant for CPU devices: on lavapipe a work group's barriers are coroutine switches that cost
// more than a row's arithmetic; each SIMD lane there normalises its own row).
// Bindings: 0 x f32 [rows, cols], 1 g f32 [cols], 2 b f32 [cols], 3 y f32 [rows, cols].
// Dispatch: (ceil(rows / WG) as gx, gy, 1), at most 65535 each.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { layernorm_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer G { float g[]; };
layout(set = 0, binding = 2) readonly buffer Bb { float b[]; };
layout(set = 0, binding = 3) writeonly buffer Y { float y[]; };

void main() {
  uint row = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (row >= p.rows) return;
  uint o = row * p.cols;
  float s = 0.0;
  for (uint c = 0; c < p.cols; c++) s += x[o + c];
  float mean = s / float(p.cols);
  float v = 0.0;
  for (uint c = 0; c < p.cols; c++) {
    float d = x[o + c] - mean;
    v += d * d;
  }
  float inv = 1.0 / sqrt(v / float(p.cols) + p.eps);
  for (uint c = 0; c < p.cols; c++) y[o + c] = (x[o + c] - mean) * inv * g[c] + b[c];
}
