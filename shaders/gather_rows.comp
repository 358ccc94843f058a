// gather_rows: y[i, c] = x[index[i], c]   (torch: x[index])
// Bindings: 0 index i32 [n], 1 x f32 [rows, cols], 2 y f32 [n, cols]. Indices are checked on the host.
// Dispatch: (ceil(cols / WG), n, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { gather_push p; };
layout(set = 0, binding = 0) readonly buffer I { int index[]; };
layout(set = 0, binding = 1) readonly buffer X { float x[]; };
layout(set = 0, binding = 2) writeonly buffer Y { float y[]; };

void main() {
  uint c = gl_GlobalInvocationID.x, i = gl_WorkGroupID.y;
  if (c >= p.cols || i >= p.n) return;
  uint r = uint(clamp(index[i], 0, int(p.rows) - 1));
  y[i * p.cols + c] = x[r * p.cols + c];
}
