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
#define ACT_RELU 4       /* max(x, 0) (TAESD) */

/* bias modes of the matrix product */
#define BIAS_NONE 0
#define BIAS_COL 1 /* b[n]: a linear layer */
#define BIAS_ROW 2 /* b[output channel]: wino_output (the matrix products take NONE or COL) */

/* y[m * ldy + n] = act(sum_k a[m, k] b[n, k] + bias) (+ y when accumulate) */
struct linear_push {
  u32 rows, cols, inner; /* M, N, K */
  u32 bias_mode, act;
  u32 ldy;        /* row stride of y, >= N */
  u32 accumulate; /* 1: add the result to y (residual connections) */
  u32 y_offset;   /* elements: y starts here in its binding (a batch element of a convolution) */
  u32 bias_offset;
  /* batched products (the Winograd element-wise stage): work group z is batch element z, whose
   * a, b and y start a_batch and b_batch texels and y_batch elements after element 0's */
  u32 a_batch, b_batch, y_batch;
  u32 transpose_y; /* 1: the result goes to y[y_offset + n * ldy + m] (a convolution: pixel rows of a,
                    * output channels of b, stored NCHW) */
  u32 bias_batch;  /* bias elements between batch elements (a bias per image) */
  /* implicit-GEMM convolutions (A_MODE 1 of linear_tiled and linear_shared): a is batch element z's
   * NCHW image, read in place: its channels and size, the output's width, the stride and padding */
  u32 conv_channels, conv_height, conv_width, conv_out_width, conv_stride, conv_pad;
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

struct im2col_push {
  u32 channels, height, width;    /* input image (one batch element) */
  u32 out_height, out_width;
  u32 kernel, stride, pad;        /* square kernels */
  u32 pixel0, pixels;             /* output pixels [pixel0, pixel0 + pixels) */
  u32 cols;                       /* row length of col: channels * kernel^2 rounded up to 4 */
  u32 x_offset;                   /* elements: the image's start in x */
};

/* Winograd F(4x4, 3x3) convolution, stride 1, padding 0 or 1 (wino_filter, wino_input, wino_output):
 * output tiles of 4x4 pixels, row-major, tiles_w = ceil(out_width / 4) a row; a chunk of ntiles tiles
 * from tile0 and a block of cb output channels from c0. The transformed filters U [36, cb, channels],
 * inputs V [36, ntiles, channels] and products M [36, cb, ntiles] each start their binding. */
struct wino_push {
  u32 channels, height, width; /* one input image */
  u32 out_height, out_width;   /* its output: the same size (pad 1) or 2 less (pad 0) */
  u32 pad;
  u32 tiles_w, tile0, ntiles;  /* tiles numbered across the batch: tile g is in image g / (tiles an image) */
  u32 c0, cb;                  /* output channels [c0, c0 + cb) */
  u32 kp;                      /* row length of the convolution's device weights */
  u32 bias_mode;               /* BIAS_NONE or BIAS_ROW (image n: b[n * bias_batch + channel]) */
  u32 accumulate;              /* 1: add to y */
  u32 out_channels;            /* Cout: image n's output starts at n * Cout * out_height * out_width */
  u32 bias_batch;              /* bias elements between images (0: one bias for all) */
};

struct groupnorm_push {
  u32 channels, groups, pixels; /* per batch element: [channels, pixels] */
  f32 eps;
  u32 silu; /* 1: y = silu(norm(x)) */
};

struct upsample_push {
  u32 planes, height, width; /* planes = N * C; output is 2H x 2W */
};

struct concat_push {
  u32 batch, inner_a, inner_b; /* per batch element: a then b */
};

struct timestep_push {
  u32 batch, dim;
  f32 max_period;
};

struct geglu_push {
  u32 rows, cols; /* x [rows, 2 * cols] -> y [rows, cols] = a * gelu(gate) */
};

struct gather_push {
  u32 n, rows, cols;
};

struct peak_push {
  u32 iters;
};

#endif
