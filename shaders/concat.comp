// concat: y[n] = cat(a[n], b[n]) along the first axis after the batch
// (torch: torch.cat([a, b], dim=1) for [N, Ca, H, W] and [N, Cb, H, W]; inner = C * H * W).
// Bindings: 0 a f32 [N, inner_a], 1 b f32 [N, inner_b], 2 y f32 [N, inner_a + inner_b].
// Dispatch: ceil((inner_a + inner_b) / WG) groups as (gx, N, gz), at most 65535 each.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { concat_push p; };
layout(set = 0, binding = 0) readonly buffer A { float a[]; };
layout(set = 0, binding = 1) readonly buffer Bb { float b[]; };
layout(set = 0, binding = 2) writeonly buffer Y { float y[]; };

void main() {
  uint i = (gl_WorkGroupID.z * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  uint n = gl_WorkGroupID.y, inner = p.inner_a + p.inner_b;
  if (i >= inner || n >= p.batch) return;
  y[n * inner + i] = i < p.inner_a ? a[n * p.inner_a + i] : b[n * p.inner_b + i - p.inner_a];
}
