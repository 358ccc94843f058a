// activation: y = act(x), element-wise; act = ACT_GELU (erf form: torch F.gelu(x)),
// ACT_QUICK_GELU (x * sigmoid(1.702 x)), ACT_SILU (F.silu) or ACT_RELU. y may alias x.
// Bindings: 0 x f32 [n], 1 y f32 [n]. Dispatch: ceil(n / WG) groups as (gx, gy, 1), at most 65535 each.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { eltwise_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

void main() {
  uint i = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
  if (i < p.n) y[i] = vkd_act(x[i], p.act);
}
