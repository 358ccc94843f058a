// linear_tiled: the matrix product behind linear layers and convolutions:
//   y[y_offset + m * ldy + n] = act(sum_k a[m, k] * b[n, k] + bias[n]) (+ y when accumulate),
//   or at y[y_offset + n * ldy + m] with transpose_y
// linear: a = x [M, K], b = W [N, K] (torch: act(F.linear(x, W, bias)));
// convolution: a = im2col patches [pixels, K], b = W [Cout, K], transpose_y: y = NCHW rows;
// Winograd: a = U [cb, C], b = V [tiles, C], a batch of 36.
// Register-blocked: each invocation computes a BM x BN block of y, reading 4 values of K at a
// time through texel buffers (fast on lavapipe, where storage-buffer loads are scalar loops, and
// cached on GPUs). Requires K % 4 == 0. Rows/cols past the end are clamped on load, not stored.
// A_MODE 1, a 1x1 convolution without im2col: a is read channel-major, [K, M/4] texels (an NCHW
// image's [C, H*W], M % 4 == 0): each step fetches 4 rows of K x BM/4 texels, as many fetches
// as mode 0, and transposes them in registers.
// Bindings: 0 bias f32 [N] (any buffer when absent), 1 y f32;
//           8 a RGBA32F or RGBA16F texels [M, K/4] ([K, M/4] in A_MODE 1), 9 b RGBA32F or RGBA16F texels [N, K/4].
// Dispatch: (ceil(ceil(N / BN) / WG), ceil(M / BM), batch): a batch of products, element z's
// a, b, y and bias at z * a_batch, z * b_batch texels, z * y_batch and z * bias_batch elements.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const int BM = 16;
layout(constant_id = 2) const int BN = 16;
layout(constant_id = 3) const int A_MODE = 0; // 0: a [M, K/4]; 1: a channel-major [K, M/4] (BM % 4 == 0)
layout(push_constant) uniform Push { linear_push p; };
layout(set = 0, binding = 0) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 1) buffer Y { float y[]; };
layout(set = 0, binding = 8) uniform samplerBuffer A;
layout(set = 0, binding = 9) uniform samplerBuffer B;

void main() {
  int n0 = int(gl_GlobalInvocationID.x) * BN, m0 = int(gl_GlobalInvocationID.y) * BM;
  int M = int(p.rows), N = int(p.cols), K4 = int(p.inner) / 4;
  if (n0 >= N || m0 >= M) return;
  uint z = gl_WorkGroupID.z;
  int ab = int(z * p.a_batch), bb = int(z * p.b_batch);
  int ar[BM], br[BN];
  if (A_MODE == 1) { // texel q of row k: pixels m0 + 4 q .. + 3, at ar[q] + k * M / 4
    [[unroll]] for (int q = 0; q < BM / 4; q++) ar[q] = ab + min(m0 / 4 + q, M / 4 - 1);
  } else {
    [[unroll]] for (int i = 0; i < BM; i++) ar[i] = ab + min(m0 + i, M - 1) * K4;
  }
  [[unroll]] for (int j = 0; j < BN; j++) br[j] = bb + min(n0 + j, N - 1) * K4;
  float acc[BM][BN];
  [[unroll]] for (int i = 0; i < BM; i++)
    [[unroll]] for (int j = 0; j < BN; j++) acc[i][j] = 0.0;
  for (int k = 0; k < K4; k++) {
    vec4 av[BM];
    if (A_MODE == 1) {
      int M4 = M / 4, r0 = 4 * k * M4;
      [[unroll]] for (int q = 0; q < BM / 4; q++) {
        vec4 t0 = texelFetch(A, ar[q] + r0), t1 = texelFetch(A, ar[q] + r0 + M4);
        vec4 t2 = texelFetch(A, ar[q] + r0 + 2 * M4), t3 = texelFetch(A, ar[q] + r0 + 3 * M4);
        av[4 * q] = vec4(t0.x, t1.x, t2.x, t3.x);
        av[4 * q + 1] = vec4(t0.y, t1.y, t2.y, t3.y);
        av[4 * q + 2] = vec4(t0.z, t1.z, t2.z, t3.z);
        av[4 * q + 3] = vec4(t0.w, t1.w, t2.w, t3.w);
      }
    } else {
      [[unroll]] for (int i = 0; i < BM; i++) av[i] = texelFetch(A, ar[i] + k);
    }
    [[unroll]] for (int j = 0; j < BN; j++) {
      vec4 bv = texelFetch(B, br[j] + k);
      [[unroll]] for (int i = 0; i < BM; i++) acc[i][j] += dot(av[i], bv);
    }
  }
  for (int i = 0; i < BM; i++) {
    int m = m0 + i;
    if (m >= M) break;
    for (int j = 0; j < BN; j++) {
      int n = n0 + j;
      if (n >= N) break;
      float v = acc[i][j];
      if (p.bias_mode == BIAS_COL) v += bias[p.bias_offset + z * p.bias_batch + n];
      v = vkd_act(v, p.act);
      uint o = p.y_offset + z * p.y_batch + (p.transpose_y != 0 ? uint(n) * p.ldy + uint(m) : uint(m) * p.ldy + uint(n));
      y[o] = p.accumulate != 0 ? y[o] + v : v;
    }
  }
}
