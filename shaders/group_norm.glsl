// The body of group_norm.comp and group_norm_subgroup.comp (see group_norm.comp).
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { groupnorm_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer G { float gamma[]; };
layout(set = 0, binding = 2) readonly buffer Bb { float beta[]; };
layout(set = 0, binding = 3) writeonly buffer Y { float y[]; };

#include "reduce.glsl"

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
