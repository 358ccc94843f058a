// geglu: y[r, c] = x[r, c] * gelu(x[r, cols + c]) with the exact erf GELU
// (ldm GEGLU: a, gate = proj(x).chunk(2, dim=-1); a * F.gelu(gate)).
// Bindings: 0 x f32 [rows, 2 cols], 1 y f32 [rows, cols]. Dispatch: (ceil(cols / WG), gy, gz), rows = gy * gz spread so neither exceeds 65535.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { geglu_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

void main() {
  uint c = gl_GlobalInvocationID.x, r = gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y;
  if (c >= p.cols || r >= p.rows) return;
  y[r * p.cols + c] = x[r * 2 * p.cols + c] * vkd_act(x[r * 2 * p.cols + p.cols + c], ACT_GELU);
}
