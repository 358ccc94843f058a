// embedding: y[i, c] = tok[ids[i], c] + pos[i mod ctx, c] for token i of N*T
// (torch: tok[ids] + pos[:T]). Out-of-range ids are checked on the host before upload.
// Bindings: 0 ids i32 [N*T], 1 y f32 [N*T, width]; 8 tok texels R32F/R16F [vocab, width],
//           9 pos texels R32F/R16F [ctx, width].
// Dispatch: (ceil(width / WG), N*T, 1).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "push.h"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform Push { embedding_push p; };
layout(set = 0, binding = 0) readonly buffer Ids { int ids[]; };
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };
layout(set = 0, binding = 8) uniform samplerBuffer tok;
layout(set = 0, binding = 9) uniform samplerBuffer pos;

void main() {
  uint c = gl_GlobalInvocationID.x, i = gl_WorkGroupID.y;
  if (c >= p.width || i >= p.n_tokens) return;
  int id = clamp(ids[i], 0, int(p.vocab) - 1);
  uint t = i % p.ctx;
  y[i * p.width + c] = texelFetch(tok, id * int(p.width) + int(c)).x + texelFetch(pos, int(t * p.width + c)).x;
}
