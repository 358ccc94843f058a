// linear_shared: the matrix product of linear_tiled (same bindings, push constants and batches)
// for GPUs: a work group of 16x16 invocations computes a 64x64 block of y, staging 64x16 tiles of
// a and b in shared memory (each invocation loads one vec4 texel of each, 16-bit weights converted
// by the texel fetch) and accumulating a 4x4 register tile in fp32 from them, so every value
// fetched from memory is used 64 times. Requires K % 4 == 0; rows past the end are clamped on
// load and not stored; k past the end loads zeros.
// A_MODE 1, an implicit-GEMM convolution: a [M, K] is the patch matrix of batch element z's NCHW
// image, a[m, (c * KERNEL + ky) * KERNEL + kx] = x[c, oy * stride - pad + ky, ox * stride - pad + kx]
// for output pixel m = oy * out_width + ox (0 outside the image and for c >= channels), gathered
// as the tile is staged: no im2col buffer. Consecutive invocations stage consecutive pixels.
// Bindings: 0 bias f32 [N] (any buffer when absent), 1 y f32;
//           8 a RGBA32F or RGBA16F texels [M, K/4] (A_MODE 1: the images, R32F texels),
//           9 b RGBA32F or RGBA16F texels [N, K/4].
// Dispatch: (ceil(N / 64), ceil(M / 64), batch).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"
#include "common.glsl"

layout(local_size_x = 16, local_size_y = 16) in;
layout(constant_id = 0) const int A_MODE = 0; // 0: a [M, K/4] texels; 1: patches gathered from NCHW images
layout(constant_id = 1) const int KERNEL = 1;  // A_MODE 1: the convolution's kernel size
const int TILE = 64, BK = 16, PAD = 4; // BK values of k a step; PAD keeps the columns on distinct banks
layout(push_constant) uniform Push { linear_push p; };
layout(set = 0, binding = 0) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 1) buffer Y { float y[]; };
layout(set = 0, binding = 8) uniform samplerBuffer A;
layout(set = 0, binding = 9) uniform samplerBuffer B;

shared float as[BK][TILE + PAD];
shared float bs[BK][TILE + PAD];

void main() {
  int tx = int(gl_LocalInvocationID.x), ty = int(gl_LocalInvocationID.y), tid = ty * 16 + tx;
  int n0 = int(gl_WorkGroupID.x) * TILE, m0 = int(gl_WorkGroupID.y) * TILE;
  int M = int(p.rows), N = int(p.cols), K4 = int(p.inner) / 4;
  uint z = gl_WorkGroupID.z;
  // the texel this invocation stages: row lr of the tile, texel lk of the step's 4
  int lr = tid >> 2, lk = tid & 3;
  int arow = int(z * p.a_batch) + min(m0 + lr, M - 1) * K4;
  // A_MODE 1: this invocation gathers pixel m0 + cr (clamped) at the step's values 4 ck .. 4 ck + 3
  int cr = tid & (TILE - 1), ck = tid >> 6, iy0 = 0, ix0 = 0, cplane = 0;
  if (A_MODE == 1) {
    int m = min(m0 + cr, M - 1), oy = m / int(p.conv_out_width), ox = m - oy * int(p.conv_out_width);
    iy0 = oy * int(p.conv_stride) - int(p.conv_pad);
    ix0 = ox * int(p.conv_stride) - int(p.conv_pad);
    cplane = int(p.conv_height * p.conv_width);
  }
  int brow = int(z * p.b_batch) + min(n0 + lr, N - 1) * K4;
  float acc[4][4];
  [[unroll]] for (int i = 0; i < 4; i++)
    [[unroll]] for (int j = 0; j < 4; j++) acc[i][j] = 0.0;
  for (int k0 = 0; k0 < K4; k0 += BK / 4) {
    int k = k0 + lk;
    vec4 bv = k < K4 ? texelFetch(B, brow + k) : vec4(0.0);
    if (A_MODE == 1) {
      const int KK = KERNEL * KERNEL;
      [[unroll]] for (int c = 0; c < 4; c++) {
        int j = 4 * (k0 + ck) + c, ch = j / KK, r = j - ch * KK, ky = r / KERNEL, kx = r - ky * KERNEL;
        int iy = iy0 + ky, ix = ix0 + kx;
        bool inside = ch < int(p.conv_channels) && iy >= 0 && ix >= 0 && iy < int(p.conv_height) && ix < int(p.conv_width);
        // the padding fetches the image's first value (always in bounds, without robust access) and drops it
        int at = int(z * p.a_batch) + (inside ? ch * cplane + iy * int(p.conv_width) + ix : 0);
        float v = texelFetch(A, at).x;
        as[ck * 4 + c][cr] = inside ? v : 0.0;
      }
    } else {
      vec4 av = k < K4 ? texelFetch(A, arow + k) : vec4(0.0);
      [[unroll]] for (int c = 0; c < 4; c++) as[lk * 4 + c][lr] = av[c];
    }
    [[unroll]] for (int c = 0; c < 4; c++) bs[lk * 4 + c][lr] = bv[c];
    barrier();
    [[unroll]] for (int kk = 0; kk < BK; kk++) {
      float a[4], b[4];
      // rows ty + 16 i and columns tx + 16 j: neighbours read neighbouring words
      [[unroll]] for (int i = 0; i < 4; i++) a[i] = as[kk][ty + 16 * i];
      [[unroll]] for (int j = 0; j < 4; j++) b[j] = bs[kk][tx + 16 * j];
      [[unroll]] for (int i = 0; i < 4; i++)
        [[unroll]] for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  [[unroll]] for (int i = 0; i < 4; i++) {
    int m = m0 + ty + 16 * i;
    if (m >= M) continue;
    [[unroll]] for (int j = 0; j < 4; j++) {
      int n = n0 + tx + 16 * j;
      if (n >= N) continue;
      float v = acc[i][j];
      if (p.bias_mode == BIAS_COL) v += bias[p.bias_offset + z * p.bias_batch + n];
      v = vkd_act(v, p.act);
      uint o = p.y_offset + z * p.y_batch + (p.transpose_y != 0 ? uint(n) * p.ldy + uint(m) : uint(m) * p.ldy + uint(n));
      y[o] = p.accumulate != 0 ? y[o] + v : v;
    }
  }
}
