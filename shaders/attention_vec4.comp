// attention_vec4: the same as attention.comp for head widths divisible by 4:
//   o[n, i, h*D + d] = sum_j softmax_j(scale * q_i . k_j (+ causal mask)) v[n, j, h*D + d]
// q, k, v are read 4 values at a time through texel buffers, and each invocation handles BQ
// queries (spec 3) so every key/value row fetched serves all of them (lavapipe turns storage-buffer
// loads into per-lane loops; texel fetches are gathers). Online softmax in fp32, no score matrix.
// HD4 = D / 4 and SLICE4 (<= 32) are specialization constants: loops over them are unrolled, as
// llvmpipe caps all runtime loop iterations of an invocation at 65535 (only the key loop is dynamic).
// Bindings: 0 o f32 [N, Tq, NH*D]; 8 q, 9 k, 10 v RGBA32F texels of [N, T, NH*D].
// Dispatch: (ceil(ceil(Tq / BQ) / WG), NH * ceil(HD4 / SLICE4), N).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD4 = 16;
layout(constant_id = 2) const uint SLICE4 = 16;
layout(constant_id = 3) const uint BQ = 4;
layout(push_constant) uniform Push { attention_push p; };
layout(set = 0, binding = 0) writeonly buffer O { vec4 o[]; };
layout(set = 0, binding = 8) uniform samplerBuffer Q;
layout(set = 0, binding = 9) uniform samplerBuffer K;
layout(set = 0, binding = 10) uniform samplerBuffer V;

void main() {
  const uint slices = (HD4 + SLICE4 - 1) / SLICE4;
  uint i0 = gl_GlobalInvocationID.x * BQ, h = gl_WorkGroupID.y / slices, d0 = gl_WorkGroupID.y % slices * SLICE4;
  uint n = gl_WorkGroupID.z;
  if (i0 >= p.q_len) return;
  uint width4 = p.n_head * HD4;
  vec4 qv[BQ][HD4], acc[BQ][SLICE4];
  float mx[BQ], l[BQ];
  [[unroll]] for (uint b = 0; b < BQ; b++) {
    uint i = min(i0 + b, p.q_len - 1);
    int qo = int((n * p.q_len + i) * width4 + h * HD4);
    [[unroll]] for (uint d = 0; d < HD4; d++) qv[b][d] = texelFetch(Q, qo + int(d)) * p.scale;
    [[unroll]] for (uint d = 0; d < SLICE4; d++) acc[b][d] = vec4(0.0);
    mx[b] = -3.0e38; // finite: exp(mx - s) is 0 for the first key
    l[b] = 0.0;
  }
  uint last = min(i0 + BQ, p.q_len) - 1;
  uint end = p.causal != 0 ? min(last + 1, p.kv_len) : p.kv_len;
  for (uint j = 0; j < end; j++) {
    int ko = int((n * p.kv_len + j) * width4 + h * HD4);
    vec4 kv[HD4];
    [[unroll]] for (uint d = 0; d < HD4; d++) kv[d] = texelFetch(K, ko + int(d));
    float e[BQ], corr[BQ];
    [[unroll]] for (uint b = 0; b < BQ; b++) {
      float s = 0.0;
      [[unroll]] for (uint d = 0; d < HD4; d++) s += dot(qv[b][d], kv[d]);
      bool masked = p.causal != 0 && j > i0 + b; // a later key of a causal mask: weight 0
      float m = masked ? mx[b] : max(mx[b], s);
      corr[b] = exp(mx[b] - m);
      e[b] = masked ? 0.0 : exp(s - m);
      l[b] = l[b] * corr[b] + e[b];
      mx[b] = m;
    }
    [[unroll]] for (uint d = 0; d < SLICE4; d++) {
      if (d0 + d < HD4) {
        vec4 vv = texelFetch(V, ko + int(d0 + d));
        [[unroll]] for (uint b = 0; b < BQ; b++) acc[b][d] = acc[b][d] * corr[b] + e[b] * vv;
      }
    }
  }
  [[unroll]] for (uint b = 0; b < BQ; b++) {
    uint i = i0 + b;
    if (i >= p.q_len) break;
    uint oo = (n * p.q_len + i) * width4 + h * HD4 + d0;
    float inv = 1.0 / l[b];
    [[unroll]] for (uint d = 0; d < SLICE4; d++)
      if (d0 + d < HD4) o[oo + d] = acc[b][d] * inv;
  }
}
