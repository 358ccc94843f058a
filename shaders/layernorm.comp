// layernorm: y = (x - mean) / sqrt(var + eps) * g + b over the last dimension, biased variance
// (torch: F.layer_norm(x, (cols,), g, b, eps)). Two passes (mean, then squared deviations).
// Bindings: 0 x f32 [rows, cols], 1 g f32 [cols], 2 b f32 [cols], 3 y f32 [rows, cols].
// Dispatch: rows work groups as (gx, gy, 1), at most 65535 each; one work group of WG invocations per row.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "layernorm.glsl"
