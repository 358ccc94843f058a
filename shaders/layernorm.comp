// layernorm: y = (x - mean) / sqrt(var + eps) * g + b over the last dimension, biased variance
// (torch: F.layer_norm(x, (cols,), g, b, eps)). Two passes (mean, then squared deviations).
// Bindings: 0 x f32 [rows, cols], 1 g f32 [cols], 2 b f32 [cols], 3 y f32 [rows, cols].
// Dispatch: rows work groups as (gx, gy, 1), at most 65535 each; one work group of WG invocations per row.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { layernorm_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer G { float g[]; };
layout(set = 0, binding = 2) readonly buffer Bb { float b[]; };
layout(set = 0, binding = 3) writeonly buffer Y { float y[]; };

const uint WG = gl_WorkGroupSize.x;
shared float red[WG];

float reduce_sum(float v) {
  uint lid = gl_LocalInvocationID.x;
  red[lid] = v;
  barrier();
  for (uint s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) red[lid] += red[lid + s];
    barrier();
  }
  float r = red[0];
  barrier();
  return r;
}

void main() {
  uint row = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x, lid = gl_LocalInvocationID.x;
  if (row >= p.rows) return; /* the whole work group: no barrier is skipped by part of it */
  uint o = row * p.cols;
  float s = 0.0;
  for (uint c = lid; c < p.cols; c += WG) s += x[o + c];
  float mean = reduce_sum(s) / float(p.cols);
  float v = 0.0;
  for (uint c = lid; c < p.cols; c += WG) {
    float d = x[o + c] - mean;
    v += d * d;
  }
  float inv = 1.0 / sqrt(reduce_sum(v) / float(p.cols) + p.eps);
  for (uint c = lid; c < p.cols; c += WG) y[o + c] = (x[o + c] - mean) * inv * g[c] + b[c];
}
