// add: y = a + b, element-wise, same shapes (torch: a + b). y may alias a.
// Bindings: 0 a f32 [n], 1 b f32 [n], 2 y f32 [n]. Dispatch: ceil(n / WG) groups as (gx, gy, 1), at most 65535 each.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { eltwise_push p; };
layout(set = 0, binding = 0) readonly buffer A { float a[]; };
layout(set = 0, binding = 1) readonly buffer Bb { float b[]; };
layout(set = 0, binding = 2) writeonly buffer Y { float y[]; };

void main() {
  uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i < p.n) y[i] = a[i] + b[i];
}
