// wino_output: the output transform of a Winograd F(4x4, 3x3) convolution: the 4x4 pixels of
// tile tile0 + t, output channel c0 + o, are A^T m A (+ bias) with m[xi] = M[(xi * cb + o) * ntiles + t],
// the element-wise stage's products; added to y when accumulate. Pixels past the edge are not stored.
// Tiles are numbered across the batch: tile g is tile g % T of image g / T (bias at
// n * bias_batch), T the tiles of an image.
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
// Bindings: 0 bias f32 (any buffer when absent), 1 y f32 [N, out_channels, out_height, out_width],
//           2 m f32 [36, cb, ntiles].
// Dispatch: (ceil(ntiles / WG), cb, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { wino_push p; };
layout(set = 0, binding = 0) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 1) buffer Y { float y[]; };
layout(set = 0, binding = 2) readonly buffer M { float m[]; };

// A^T times a column of 6
void amul(float d[6], out float r[4]) {
  float a = d[1] + d[2], b = d[1] - d[2], c = d[3] + d[4], e = d[3] - d[4];
  r[0] = d[0] + a + c;
  r[1] = b + 2.0 * e;
  r[2] = a + 4.0 * c;
  r[3] = b + 8.0 * e + d[5];
}

void main() {
  uint t = gl_GlobalInvocationID.x, o = gl_WorkGroupID.y;
  if (t >= p.ntiles) return;
  uint stride = p.cb * p.ntiles, at = o * p.ntiles + t;
  float s[6][4]; // s[j][a] = (A^T m)[a][j]
  [[unroll]] for (int j = 0; j < 6; j++) {
    float col[6];
    [[unroll]] for (int i = 0; i < 6; i++) col[i] = m[uint(6 * i + j) * stride + at];
    amul(col, s[j]);
  }
  uint T = p.tiles_w * ((p.out_height + 3u) / 4u);
  uint ch = p.c0 + o, g = p.tile0 + t, n = g / T, tile = g - n * T, ty = tile / p.tiles_w, tx = tile - ty * p.tiles_w;
  float b = p.bias_mode == BIAS_ROW ? bias[n * p.bias_batch + ch] : 0.0;
  uint plane = (n * p.out_channels + ch) * p.out_height * p.out_width;
  [[unroll]] for (int a = 0; a < 4; a++) {
    uint oy = ty * 4u + uint(a);
    if (oy >= p.out_height) break;
    float row[6], r[4];
    [[unroll]] for (int j = 0; j < 6; j++) row[j] = s[j][a];
    amul(row, r);
    [[unroll]] for (int q = 0; q < 4; q++) {
      uint ox = tx * 4u + uint(q);
      if (ox < p.out_width) {
        uint at_y = plane + oy * p.out_width + ox;
        float val = r[q] + b;
        y[at_y] = p.accumulate != 0u ? y[at_y] + val : val;
      }
    }
  }
}
