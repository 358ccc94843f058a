// group_norm: y = (x - mean_g) / sqrt(var_g + eps) * gamma[c] + beta[c], optionally SiLU after;
// statistics over the channels of group g and all pixels, biased variance, two passes
// (torch: F.group_norm(x, groups, gamma, beta, eps), then F.silu when silu = 1).
// Bindings: 0 x f32 [N, C, P], 1 gamma f32 [C], 2 beta f32 [C], 3 y f32 [N, C, P] (may alias x).
// Dispatch: (groups, N, 1); one work group of WG invocations per (image, group).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { groupnorm_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer G { float gamma[]; };
layout(set = 0, binding = 2) readonly buffer Bb { float beta[]; };
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
  uint g = gl_WorkGroupID.x, n = gl_WorkGroupID.y, lid = gl_LocalInvocationID.x;
  uint cpg = p.channels / p.groups, count = cpg * p.pixels;
  uint base = (n * p.channels + g * cpg) * p.pixels; // the group's elements are contiguous
  float s = 0.0;
  for (uint i = lid; i < count; i += WG) s += x[base + i];
  float mean = reduce_sum(s) / float(count);
  float v = 0.0;
  for (uint i = lid; i < count; i += WG) {
    float d = x[base + i] - mean;
    v += d * d;
  }
  float inv = 1.0 / sqrt(reduce_sum(v) / float(count) + p.eps);
  for (uint i = lid; i < count; i += WG) {
    uint c = g * cpg + i / p.pixels;
    float r = (x[base + i] - mean) * inv * gamma[c] + beta[c];
    if (p.silu != 0) r = r / (1.0 + exp(-r));
    y[base + i] = r;
  }
}
