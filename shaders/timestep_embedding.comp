// timestep_embedding: emb[n, j] = cos(t[n] f_j), emb[n, half + j] = sin(t[n] f_j),
// f_j = exp(-ln(max_period) j / half), half = dim / 2 (ldm's timestep_embedding with
// flip_sin_to_cos: cos first; t may be fractional). Angles are formed in fp32 as ldm does.
// Bindings: 0 t f32 [N], 1 emb f32 [N, dim]. Dispatch: (ceil(dim / WG), N, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { timestep_push p; };
layout(set = 0, binding = 0) readonly buffer T { float t[]; };
layout(set = 0, binding = 1) writeonly buffer E { float emb[]; };

void main() {
  uint j = gl_GlobalInvocationID.x, n = gl_WorkGroupID.y, half_dim = p.dim / 2;
  if (j >= p.dim || n >= p.batch) return;
  uint k = j < half_dim ? j : j - half_dim;
  float f = exp(-log(p.max_period) * float(k) / float(half_dim));
  float a = t[n] * f;
  // Cody-Waite reduction to [-pi, pi]: GPU sin/cos lose accuracy for arguments near 1000
  float turns = round(a * 0.15915494309189535);
  float r = (a - turns * 6.28125) - turns * 0.0019353071795864769;
  emb[n * p.dim + j] = j >= 2 * half_dim ? 0.0 : (j < half_dim ? cos(r) : sin(r));
}
