// The body of layernorm.comp and layernorm_subgroup.comp (see layernorm.comp).
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { layernorm_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer G { float g[]; };
layout(set = 0, binding = 2) readonly buffer Bb { float b[]; };
layout(set = 0, binding = 3) writeonly buffer Y { float y[]; };

#include "reduce.glsl"

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
