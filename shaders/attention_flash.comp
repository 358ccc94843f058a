// attention_flash: attention_vec4's result for GPUs, flash style: a work group of WG queries of
// one head walks the keys in tiles of BK, staging each tile's key and value rows in shared memory
// (one global fetch serves all WG queries), with an online softmax in fp32 per query (no score
// matrix). One query an invocation; every invocation takes part in the staging (no early exit
// before a barrier).
//   o[n, i, h*D + d] = sum_j softmax_j(scale * q_i . k_j (+ causal mask)) v[n, j, h*D + d]
// HD4 = D / 4 and BK are specialization constants (BK * HD4 * 32 bytes of shared memory).
// Bindings: 0 o f32 [N, Tq, NH*D]; 8 q, 9 k, 10 v RGBA32F texels of [N, T, NH*D].
// Dispatch: (ceil(Tq / WG), NH, N).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD4 = 16;
layout(constant_id = 2) const uint BK = 16;
layout(push_constant) uniform Push { attention_push p; };
layout(set = 0, binding = 0) writeonly buffer O { vec4 o[]; };
layout(set = 0, binding = 8) uniform samplerBuffer Q;
layout(set = 0, binding = 9) uniform samplerBuffer K;
layout(set = 0, binding = 10) uniform samplerBuffer V;

shared vec4 ks[BK * HD4];
shared vec4 vs[BK * HD4];

void main() {
  uint i = gl_GlobalInvocationID.x, h = gl_WorkGroupID.y, n = gl_WorkGroupID.z;
  uint lid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
  uint width4 = p.n_head * HD4;
  bool live = i < p.q_len;
  uint qi = min(i, p.q_len - 1);
  vec4 qv[HD4], acc[HD4];
  int qo = int((n * p.q_len + qi) * width4 + h * HD4);
  [[unroll]] for (uint d = 0; d < HD4; d++) {
    qv[d] = texelFetch(Q, qo + int(d)) * p.scale;
    acc[d] = vec4(0.0);
  }
  float mx = -3.0e38, l = 0.0; // finite: exp(mx - s) is 0 for the first key
  // keys this work group needs: all, or up to its last query under a causal mask
  uint last = min(gl_WorkGroupID.x * wg + wg, p.q_len) - 1;
  uint end = p.causal != 0 ? min(last + 1, p.kv_len) : p.kv_len;
  for (uint j0 = 0; j0 < end; j0 += BK) {
    uint nk = min(BK, end - j0);
    for (uint t = lid; t < BK * HD4; t += wg) {
      uint r = t / HD4, d = t - r * HD4;
      int at = int((n * p.kv_len + j0 + min(r, nk - 1)) * width4 + h * HD4 + d);
      ks[t] = texelFetch(K, at);
      vs[t] = texelFetch(V, at);
    }
    barrier();
    for (uint r = 0; r < nk; r++) {
      float s = 0.0;
      [[unroll]] for (uint d = 0; d < HD4; d++) s += dot(qv[d], ks[r * HD4 + d]);
      bool masked = p.causal != 0 && j0 + r > qi; // a later key of a causal mask: weight 0
      float m = masked ? mx : max(mx, s);
      float corr = exp(mx - m), e = masked ? 0.0 : exp(s - m);
      l = l * corr + e;
      mx = m;
      [[unroll]] for (uint d = 0; d < HD4; d++) acc[d] = acc[d] * corr + e * vs[r * HD4 + d];
    }
    barrier();
  }
  if (live) {
    uint oo = (n * p.q_len + i) * width4 + h * HD4;
    float inv = 1.0 / l;
    [[unroll]] for (uint d = 0; d < HD4; d++) o[oo + d] = acc[d] * inv;
  }
}
