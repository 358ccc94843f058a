// attention: o[n, i, h*D + d] = sum_j softmax_j(scale * q_i . k_j (+ causal mask)) v[n, j, h*D + d]
// (torch: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale) per head, with
// q/k/v [N, T, NH*D] split as [N, T, NH, D]). Online softmax in fp32 (running max and sum), so no
// score matrix is stored: memory O(T*D). Causal: key j > query i is masked.
// Each invocation produces SLICE (spec 2, <= 128) output dims of one query; wider heads (the VAE's
// single 512-wide head) are split into slices along the dispatch's y axis, each recomputing the
// scores. HD (spec 1) is the head width: every loop over it is unrolled, because llvmpipe caps the
// iterations of all runtime loops of an invocation together at 65535; only the key loop is dynamic
// (the host checks the key count).
// Bindings: 0 q f32 [N, Tq, NH*D], 1 k f32 [N, Tk, NH*D], 2 v f32 [N, Tk, NH*D], 3 o f32 [N, Tq, NH*D].
// Dispatch: (ceil(Tq / WG), NH * ceil(D / SLICE), N).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint SLICE = 64;
layout(push_constant) uniform Push { attention_push p; };
layout(set = 0, binding = 0) readonly buffer Q { float q[]; };
layout(set = 0, binding = 1) readonly buffer K { float k[]; };
layout(set = 0, binding = 2) readonly buffer V { float v[]; };
layout(set = 0, binding = 3) writeonly buffer O { float o[]; };

void main() {
  const uint slices = (HD + SLICE - 1) / SLICE;
  uint i = gl_GlobalInvocationID.x, h = gl_WorkGroupID.y / slices, d0 = gl_WorkGroupID.y % slices * SLICE;
  uint n = gl_WorkGroupID.z;
  if (i >= p.q_len) return;
  uint width = p.n_head * HD;
  uint qo = (n * p.q_len + i) * width + h * HD;
  float qv[HD], acc[SLICE];
  [[unroll]] for (uint d = 0; d < HD; d++) qv[d] = q[qo + d];
  [[unroll]] for (uint d = 0; d < SLICE; d++) acc[d] = 0.0;
  uint end = p.causal != 0 ? min(i + 1, p.kv_len) : p.kv_len;
  float mx = -3.0e38, l = 0.0; // finite: exp(mx - s) is 0 for the first key
  for (uint j = 0; j < end; j++) {
    uint ko = (n * p.kv_len + j) * width + h * HD;
    float s = 0.0;
    [[unroll]] for (uint d = 0; d < HD; d++) s += qv[d] * k[ko + d];
    s *= p.scale;
    float m = max(mx, s), corr = exp(mx - m), e = exp(s - m);
    l = l * corr + e;
    [[unroll]] for (uint d = 0; d < SLICE; d++)
      if (d0 + d < HD) acc[d] = acc[d] * corr + e * v[ko + d0 + d];
    mx = m;
  }
  float inv = 1.0 / l;
  [[unroll]] for (uint d = 0; d < SLICE; d++)
    if (d0 + d < HD) o[qo + d0 + d] = acc[d] * inv;
}
