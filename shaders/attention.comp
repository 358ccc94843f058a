// attention: o[n, i, h*D + d] = sum_j softmax_j(scale * q_i . k_j (+ causal mask)) v[n, j, h*D + d]
// (torch: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale) per head, with
// q/k/v [N, T, NH*D] split as [N, T, NH, D]). Online softmax in fp32 (running max and sum), so no
// score matrix is stored: memory O(T*D). Causal: key j > query i is masked.
// Bindings: 0 q f32 [N, Tq, NH*D], 1 k f32 [N, Tk, NH*D], 2 v f32 [N, Tk, NH*D], 3 o f32 [N, Tq, NH*D].
// Dispatch: (ceil(Tq / WG), NH, N); one query row per invocation; HD (spec 1) = D.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(push_constant) uniform Push { attention_push p; };
layout(set = 0, binding = 0) readonly buffer Q { float q[]; };
layout(set = 0, binding = 1) readonly buffer K { float k[]; };
layout(set = 0, binding = 2) readonly buffer V { float v[]; };
layout(set = 0, binding = 3) writeonly buffer O { float o[]; };

void main() {
  uint i = gl_GlobalInvocationID.x, h = gl_WorkGroupID.y, n = gl_WorkGroupID.z;
  if (i >= p.q_len) return;
  uint width = p.n_head * HD;
  uint qo = (n * p.q_len + i) * width + h * HD;
  float qv[HD], acc[HD];
  for (uint d = 0; d < HD; d++) {
    qv[d] = q[qo + d];
    acc[d] = 0.0;
  }
  float mx = -1.0 / 0.0, l = 0.0;
  uint end = p.causal != 0 ? min(i + 1, p.kv_len) : p.kv_len;
  for (uint j = 0; j < end; j++) {
    uint ko = (n * p.kv_len + j) * width + h * HD;
    float s = 0.0;
    for (uint d = 0; d < HD; d++) s += qv[d] * k[ko + d];
    s *= p.scale;
    if (s > mx) {
      float corr = exp(mx - s);
      l *= corr;
      for (uint d = 0; d < HD; d++) acc[d] *= corr;
      mx = s;
    }
    float e = exp(s - mx);
    l += e;
    for (uint d = 0; d < HD; d++) acc[d] += e * v[ko + d];
  }
  float inv = 1.0 / l;
  for (uint d = 0; d < HD; d++) o[qo + d] = acc[d] * inv;
}
