// wino_filter: the filter transform of a Winograd F(4x4, 3x3) convolution (Lavin & Gray 2016),
// U = G g G^T for output channels [c0, c0 + cb), in the layout of the element-wise stage's 36
// matrix products:  u[(xi * cb + o) * channels + c] = (G g[c0 + o, c] G^T)[xi], xi = 6 * i + j.
//   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
// Computed in fp32 at each call from the convolution's own weights (f32 or f16), so the model keeps
// one copy of them.
// Bindings: 0 u f32 [36, cb, channels]; 8 w RGBA32F or RGBA16F texels, the device layout
//           [Cout, kp] (row o: g[o, c, ky, kx] at c * 9 + ky * 3 + kx).
// Dispatch: (ceil(channels / WG), cb, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { wino_push p; };
layout(set = 0, binding = 0) writeonly buffer U { float u[]; };
layout(set = 0, binding = 8) uniform samplerBuffer W;

// G times a column of 3
void gmul(float a, float b, float c, out float r[6]) {
  r[0] = 0.25 * a;
  r[1] = -(a + b + c) * (1.0 / 6.0);
  r[2] = -(a - b + c) * (1.0 / 6.0);
  r[3] = a * (1.0 / 24.0) + b * (1.0 / 12.0) + c * (1.0 / 6.0);
  r[4] = a * (1.0 / 24.0) - b * (1.0 / 12.0) + c * (1.0 / 6.0);
  r[5] = c;
}

void main() {
  uint c = gl_GlobalInvocationID.x, o = gl_WorkGroupID.y;
  if (c >= p.channels) return;
  uint base = (p.c0 + o) * p.kp + c * 9u;
  float g[9];
  [[unroll]] for (uint i = 0; i < 9u; i++) {
    uint e = base + i;
    g[i] = texelFetch(W, int(e >> 2))[e & 3u];
  }
  float t[3][6]; // t[kx][i] = (G g)[i][kx]
  [[unroll]] for (int kx = 0; kx < 3; kx++) gmul(g[kx], g[3 + kx], g[6 + kx], t[kx]);
  uint stride = p.cb * p.channels, at = o * p.channels + c;
  [[unroll]] for (int i = 0; i < 6; i++) {
    float r[6];
    gmul(t[0][i], t[1][i], t[2][i], r);
    [[unroll]] for (int j = 0; j < 6; j++) u[uint(6 * i + j) * stride + at] = r[j];
  }
}
