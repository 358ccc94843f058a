// upsample: nearest-neighbour x2, y[q, 2h + i, 2w + j] = x[q, h, w]
// (torch: F.interpolate(x, scale_factor=2.0, mode="nearest")).
// Bindings: 0 x f32 [planes, H, W], 1 y f32 [planes, 2H, 2W]. Dispatch: (ceil(4HW / WG), planes, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { upsample_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };

void main() {
  uint i = gl_GlobalInvocationID.x, q = gl_WorkGroupID.y, W2 = 2 * p.width;
  if (i >= 4 * p.height * p.width || q >= p.planes) return;
  uint oy = i / W2, ox = i % W2;
  y[q * 4 * p.height * p.width + i] = x[(q * p.height + oy / 2) * p.width + ox / 2];
}
