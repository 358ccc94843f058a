/* Push-constant structs shared by C (ops.c) and GLSL (the shaders): one definition each.
 * Only 32-bit scalars, so C and std430 layouts agree; sizes are checked in ops.c. */
#ifndef VKD_PUSH_H
#define VKD_PUSH_H

#ifdef VULKAN
#define u32 uint
#define i32 int
#define f32 float
#else
#include <stdint.h>
typedef uint32_t u32;
typedef int32_t i32;
typedef float f32;
#endif

/* activation fused into an op's output */
#define ACT_NONE 0
#define ACT_GELU 1       /* x * 0.5 * (1 + erf(x / sqrt 2)) */
#define ACT_QUICK_GELU 2 /* x * sigmoid(1.702 x) */
#define ACT_SILU 3       /* x * sigmoid(x) */

struct linear_push {
  u32 rows, cols, inner; /* M, N, K: y[M, N] = x[M, K] W[N, K]^T + b[N] */
  u32 has_bias, act;
};

struct layernorm_push {
  u32 rows, cols;
  f32 eps;
};

struct embedding_push {
  u32 n_tokens, ctx, width, vocab; /* n_tokens = N * T; position = token index mod ctx */
};

struct attention_push {
  u32 batch, q_len, kv_len, n_head, head_dim;
  u32 causal;
  f32 scale;
};

struct eltwise_push {
  u32 n;
  u32 act;
};

struct gather_push {
  u32 n, rows, cols;
};

struct peak_push {
  u32 iters;
};

#endif
