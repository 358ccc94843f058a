// group_norm for small groups: the same result as group_norm.comp, one invocation per (image,
// group) doing the group's two statistics passes and the normalisation alone, with no barrier.
// A group of a few thousand values costs less this way than a work group's reductions (on lavapipe
// each barrier is a switch between the work group's coroutines: 2.4 ms a call on the demo U-Net's
// 512-value groups, against microseconds of arithmetic).
// Bindings: 0 x f32 [N, C, P], 1 gamma f32 [C], 2 beta f32 [C], 3 y f32 [N, C, P] (may alias x).
// Dispatch: (ceil(groups / WG), N, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { groupnorm_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer G { float gamma[]; };
layout(set = 0, binding = 2) readonly buffer Bb { float beta[]; };
layout(set = 0, binding = 3) writeonly buffer Y { float y[]; };

void main() {
  uint g = gl_GlobalInvocationID.x, n = gl_GlobalInvocationID.y;
  if (g >= p.groups) return;
  uint cpg = p.channels / p.groups, count = cpg * p.pixels;
  uint base = (n * p.channels + g * cpg) * p.pixels; // the group's elements are contiguous
  float s = 0.0;
  for (uint i = 0; i < count; i++) s += x[base + i];
  float mean = s / float(count);
  float v = 0.0;
  for (uint i = 0; i < count; i++) {
    float d = x[base + i] - mean;
    v += d * d;
  }
  float inv = 1.0 / sqrt(v / float(count) + p.eps);
  for (uint c = 0; c < cpg; c++) {
    float a = inv * gamma[g * cpg + c], b = beta[g * cpg + c];
    uint row = base + c * p.pixels;
    for (uint i = 0; i < p.pixels; i++) {
      float r = (x[row + i] - mean) * a + b;
      if (p.silu != 0) r = r / (1.0 + exp(-r));
      y[row + i] = r;
    }
  }
}
