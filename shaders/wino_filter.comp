// wino_filter: the filter transform of a Winograd F(4x4, 3x3) convolution (Lavin & Gray 2016),
// U = G g G^T for output channels [c0, c0 + cb), in the layout of the element-wise stage's 36
// matrix products:  u[(xi * cb + o) * channels + c] = (G g[c0 + o, c] G^T)[xi], xi = 6 * i + j.
//   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
// Computed in fp32 at each call from the convolution's own weights (f32 or f16), so the model keeps
// one copy of them.
// An invocation transforms 4 input channels c .. c + 3 (channels % 4 == 0): their 36 weights are
// 9 whole texels (row o starts at a multiple of 4 and c * 9 is one), and their 4 results per xi
// are one vec4 store.
// Bindings: 0 u f32 [36, cb, channels]; 8 w RGBA32F or RGBA16F texels, the device layout
//           [Cout, kp] (row o: g[o, c, ky, kx] at c * 9 + ky * 3 + kx).
// Dispatch: (ceil(channels / 4 / WG), cb, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { wino_push p; };
layout(set = 0, binding = 0) writeonly buffer U { vec4 u[]; };
layout(set = 0, binding = 8) uniform samplerBuffer W;

// G times a column of 3 (4 channels at once)
void gmul(vec4 a, vec4 b, vec4 c, out vec4 r[6]) {
  r[0] = 0.25 * a;
  r[1] = -(a + b + c) * (1.0 / 6.0);
  r[2] = -(a - b + c) * (1.0 / 6.0);
  r[3] = a * (1.0 / 24.0) + b * (1.0 / 12.0) + c * (1.0 / 6.0);
  r[4] = a * (1.0 / 24.0) - b * (1.0 / 12.0) + c * (1.0 / 6.0);
  r[5] = c;
}

void main() {
  uint c4 = gl_GlobalInvocationID.x, o = gl_WorkGroupID.y;
  if (c4 * 4u >= p.channels) return;
  int base = int(((p.c0 + o) * p.kp + c4 * 36u) / 4u);
  float w[36]; // channel c4 * 4 + q's 3x3 filter at w[9 q ..]
  [[unroll]] for (int i = 0; i < 9; i++) {
    vec4 t = texelFetch(W, base + i);
    w[4 * i] = t.x, w[4 * i + 1] = t.y, w[4 * i + 2] = t.z, w[4 * i + 3] = t.w;
  }
  vec4 g[9]; // g[e].q: element e of channel q's filter
  [[unroll]] for (int e = 0; e < 9; e++) g[e] = vec4(w[e], w[9 + e], w[18 + e], w[27 + e]);
  vec4 t[3][6]; // t[kx][i] = (G g)[i][kx]
  [[unroll]] for (int kx = 0; kx < 3; kx++) gmul(g[kx], g[3 + kx], g[6 + kx], t[kx]);
  uint stride = p.cb * p.channels / 4u, at = o * p.channels / 4u + c4;
  [[unroll]] for (int i = 0; i < 6; i++) {
    vec4 r[6];
    gmul(t[0][i], t[1][i], t[2][i], r);
    [[unroll]] for (int j = 0; j < 6; j++) u[uint(6 * i + j) * stride + at] = r[j];
  }
}
