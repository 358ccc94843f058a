// wino_input: the input transform of a Winograd F(4x4, 3x3) convolution with padding 0 or 1:
//   v[(xi * ntiles + t) * channels + c] = (B^T d B)[xi], xi = 6 * i + j,
// d the 6x6 patch of channel c under tile tile0 + t (rows 4 ty - pad .. 4 ty - pad + 5, zero outside).
// Tiles are numbered across the batch: tile g is tile g % T of image g / T, T the tiles of an image.
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
// Bindings: 0 x f32 [N, channels, height, width], 1 v f32 [36, ntiles, channels].
// Dispatch: (ceil(channels / WG), ceil(ntiles / TILES), 1): TILES tiles an invocation, as llvmpipe
// pays a fixed cost per work group.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
const uint TILES = 4; // WINO_TILES in ops.c
layout(push_constant) uniform Push { wino_push p; };
layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) writeonly buffer V { float v[]; };

// B^T times a column of 6
void bmul(float d[6], out float r[6]) {
  r[0] = 4.0 * d[0] - 5.0 * d[2] + d[4];
  r[1] = -4.0 * (d[1] + d[2]) + d[3] + d[4];
  r[2] = 4.0 * (d[1] - d[2]) - d[3] + d[4];
  r[3] = 2.0 * (d[3] - d[1]) - d[2] + d[4];
  r[4] = 2.0 * (d[1] - d[3]) - d[2] + d[4];
  r[5] = 4.0 * d[1] - 5.0 * d[3] + d[5];
}

void main() {
  uint c = gl_GlobalInvocationID.x;
  if (c >= p.channels) return;
  uint plane = p.height * p.width, stride = p.ntiles * p.channels;
  uint T = p.tiles_w * ((p.out_height + 3u) / 4u);
  for (uint k = 0; k < TILES; k++) {
    uint t = gl_WorkGroupID.y * TILES + k;
    if (t >= p.ntiles) break;
    uint g = p.tile0 + t, n = g / T, tile = g - n * T, ty = tile / p.tiles_w, tx = tile - ty * p.tiles_w;
    uint base = (n * p.channels + c) * plane;
    int y0 = int(ty * 4u) - int(p.pad), x0 = int(tx * 4u) - int(p.pad);
    float s[6][6]; // s[col][i] = (B^T d)[i][col]
    [[unroll]] for (int col = 0; col < 6; col++) {
      float d[6];
      int ix = x0 + col;
      bool inx = ix >= 0 && ix < int(p.width);
      [[unroll]] for (int r = 0; r < 6; r++) {
        int iy = y0 + r;
        d[r] = inx && iy >= 0 && iy < int(p.height) ? x[base + uint(iy) * p.width + uint(ix)] : 0.0;
      }
      bmul(d, s[col]);
    }
    uint at = t * p.channels + c;
    [[unroll]] for (int i = 0; i < 6; i++) {
      float row[6], r[6];
      [[unroll]] for (int col = 0; col < 6; col++) row[col] = s[col][i];
      bmul(row, r);
      [[unroll]] for (int j = 0; j < 6; j++) v[uint(6 * i + j) * stride + at] = r[j];
    }
  }
}
