// group_norm: y = (x - mean_g) / sqrt(var_g + eps) * gamma[c] + beta[c], optionally SiLU after;
// statistics over the channels of group g and all pixels, biased variance, two passes
// (torch: F.group_norm(x, groups, gamma, beta, eps), then F.silu when silu = 1).
// Bindings: 0 x f32 [N, C, P], 1 gamma f32 [C], 2 beta f32 [C], 3 y f32 [N, C, P] (may alias x).
// Dispatch: (groups, N, 1); one work group of WG invocations per (image, group).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "group_norm.glsl"
