/* The op library: one host function per kernel (shaders/<op>.comp), recorded into the current
 * command buffer (between gpu_begin and gpu_submit). Each checks the shapes of its tensors and
 * returns STATUS_INVALID_ARGUMENT with both shapes on a mismatch. Activations are f32; weights
 * (W of linear, embedding tables) may be f32 or f16 and are read through texel buffers with
 * fp32 accumulation. Plain-C twins of every op live in tests/ref.c. */
#ifndef VKD_OPS_H
#define VKD_OPS_H

#include "gpu.h"
#include "push.h"

/* The matrix product's kernels: any K, one output an invocation (GENERIC); a register block an
 * invocation through texel fetches (TILED: CPU devices); shared-memory tiles of 64x64 with a 4x4
 * register tile an invocation (SHARED: GPUs). AUTO: SHARED on GPUs, TILED on CPU devices, when
 * K % 4 == 0; GENERIC otherwise. */
enum linear_variant { LINEAR_AUTO, LINEAR_GENERIC, LINEAR_TILED, LINEAR_SHARED };

/* y[M, N] = act(x[M, K] W[N, K]^T + b[N]); x and y may have any leading dims (M = numel / K). */
enum status op_linear(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                      const struct gpu_tensor *b, const struct gpu_tensor *y, int act);
enum status op_linear_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                              const struct gpu_tensor *b, const struct gpu_tensor *y, int act,
                              enum linear_variant variant);
/* y += x W^T + b (a residual connection fused into the product). */
enum status op_linear_residual(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                               const struct gpu_tensor *b, const struct gpu_tensor *y);

/* llvmpipe ends an invocation's run-time loops after 65535 iterations in all, silently (Mesa's
 * LP_MAX_TGSI_LOOP_ITERATIONS): the kernels' loops stay within this or the op refuses the shape. */
#define KERNEL_LOOP_LIMIT 65000

/* The kernel class the ops pick for this device: CPU devices' kernels (lavapipe) or GPUs' (the
 * device's type, unless VKDIFFUSION_KERNELS=gpu|cpu forces one). */
bool ops_cpu_kernels(const struct gpu *g);

/* Convolutions are matrix products (implicit GEMM, im2col, or Winograd's element-wise stage), with the weights
 * on the device as [Cout, Kp]:
 * Kp = C * k * k rounded up to 4, zero padded (conv_weight_cols). */
int64_t conv_weight_cols(int64_t channels, int kernel);
/* pad CONV_PAD_BOTTOM_RIGHT: one zero row below and one zero column right, none above or left (the
 * VAE encoder's Downsample: F.pad(x, (0, 1, 0, 1)) then a stride-2 3x3 convolution). */
#define CONV_PAD_BOTTOM_RIGHT (-1)
/* The output size of a convolution along one axis. */
int64_t conv_out_size(int64_t in, int kernel, int stride, int pad);
/* y [N, Cout, Ho, Wo] (+)= conv(x [N, C, H, W], w, stride, pad) + b, b [Cout] or [N, Cout] (per image).
 * scratch: an f32 tensor for the patches; the output pixels are processed in chunks that fit it
 * and the device's buffer limits, so no buffer beyond the limits is ever needed. */
enum status op_conv2d(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w, const struct gpu_tensor *b,
                      const struct gpu_tensor *y, int kernel, int stride, int pad, bool accumulate,
                      const struct gpu_tensor *scratch);
/* The same with a chosen algorithm:
 * - CONV_IM2COL: im2col into the scratch + the matrix product (any convolution);
 * - CONV_WINOGRAD: F(4x4, 3x3) (3x3, stride 1, padding 0 or 1, channels a multiple of 4: the
 *   filters, inputs and products in the scratch, 36 products of a quarter the multiplications);
 * - CONV_IMPLICIT: the matrix product reads x in place (no scratch): on GPUs any convolution, on
 *   CPU devices 1x1 stride-1 ones over channels and pixels that are multiples of 4.
 * STATUS_UNSUPPORTED where the chosen one does not apply. CONV_AUTO, what op_conv2d does: Winograd
 * where it applies and the batch has at least 64 tiles of 4x4 pixels (one 32x32 map, four of
 * 16x16), else implicit GEMM where it applies, else im2col. VKDIFFUSION_CONV=winograd|implicit|im2col prefers one. */
enum conv_variant { CONV_AUTO, CONV_IM2COL, CONV_WINOGRAD, CONV_IMPLICIT };
enum status op_conv2d_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                              const struct gpu_tensor *b, const struct gpu_tensor *y, int kernel, int stride, int pad,
                              bool accumulate, const struct gpu_tensor *scratch, enum conv_variant variant);
/* y [N, H * W, Cout] = a 1x1 convolution of x [N, C, H, W] + b, written as tokens (a transformer's
 * proj_in): CONV_AUTO, CONV_IMPLICIT or CONV_IM2COL (through the scratch) as above. */
enum status op_conv2d_tokens(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                             const struct gpu_tensor *b, const struct gpu_tensor *y, const struct gpu_tensor *scratch,
                             enum conv_variant variant);
/* col [pixels, Kp] = the patches of output pixels [pixel0, pixel0 + pixels) of x[image]. */
enum status op_im2col(struct gpu *g, const struct gpu_tensor *x, int64_t image, int kernel, int stride, int pad,
                      int64_t pixel0, const struct gpu_tensor *col);
/* y [N, Cout, P] (+)= w [Cout, C] tokens [N, P, C]^T + b: a 1x1 convolution reading token layout. */
enum status op_matmul_nchw(struct gpu *g, const struct gpu_tensor *w, const struct gpu_tensor *tokens,
                           const struct gpu_tensor *b, const struct gpu_tensor *y, bool accumulate);
/* Group norm over [N, C, ...] (biased variance), optionally followed by SiLU. y may alias x. */
enum status op_group_norm(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                          const struct gpu_tensor *beta, const struct gpu_tensor *y, int groups, float eps, bool silu);
/* The same with a chosen kernel: the work group's cooperative reductions (GN_COOPERATIVE), one
 * invocation a group without barriers (GN_SMALL: groups whose 3 * values + channels stay within
 * KERNEL_LOOP_LIMIT, STATUS_UNSUPPORTED beyond), or by device and size (GN_AUTO, what
 * op_group_norm does: small on CPU devices wherever it applies, faster there at every size
 * measured). On llvmpipe the cooperative kernel refuses groups whose share an invocation would
 * exceed KERNEL_LOOP_LIMIT (about 5.5 M values a group). */
enum group_norm_variant { GN_AUTO, GN_COOPERATIVE, GN_SMALL, GN_SUBGROUP };
enum status op_group_norm_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                                  const struct gpu_tensor *beta, const struct gpu_tensor *y, int groups, float eps, bool silu,
                                  enum group_norm_variant variant);
/* Nearest-neighbour x2: [N, C, H, W] -> [N, C, 2H, 2W]. */
enum status op_upsample2x(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y);
/* y [N, Ca + Cb, ...] = cat(a, b) along the axis after the batch. */
enum status op_concat(struct gpu *g, const struct gpu_tensor *a, const struct gpu_tensor *b, const struct gpu_tensor *y);
/* Sinusoidal embedding of timesteps t [N] (fractional allowed): emb [N, dim] = [cos | sin]. */
enum status op_timestep_embedding(struct gpu *g, const struct gpu_tensor *t, const struct gpu_tensor *emb,
                                  float max_period);
/* y [.., F] = a * gelu(gate) for x [.., 2F] = [a | gate] (erf GELU). */
enum status op_geglu(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y);

/* Layer norm over the last dimension (biased variance). */
enum status op_layernorm(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                         const struct gpu_tensor *beta, const struct gpu_tensor *y, float eps);
/* The same with a chosen kernel: a work group a row with cooperative reductions (GPUs) or a row an
 * invocation without barriers (CPU devices); LN_AUTO picks by the device's type. */
enum layernorm_variant { LN_AUTO, LN_COOPERATIVE, LN_ROWS, LN_SUBGROUP };
enum status op_layernorm_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                                 const struct gpu_tensor *beta, const struct gpu_tensor *y, float eps,
                                 enum layernorm_variant variant);
/* y[i] = tok[ids[i]] + pos[i mod ctx]; ids i32 [N, T] (values checked by the caller), y [N, T, D]. */
enum status op_embedding(struct gpu *g, const struct gpu_tensor *ids, const struct gpu_tensor *tok,
                         const struct gpu_tensor *pos, const struct gpu_tensor *y);
/* Multi-head attention, q [N, Tq, NH*D], k/v [N, Tk, NH*D], o [N, Tq, NH*D]. */
enum status op_attention(struct gpu *g, const struct gpu_tensor *q, const struct gpu_tensor *k,
                         const struct gpu_tensor *v, const struct gpu_tensor *o, int n_head, bool causal,
                         float scale);
/* The same with a chosen kernel: scalar loads, any width (GENERIC); 4 values a fetch, several
 * queries an invocation on CPU devices (VEC4); key/value tiles in shared memory, one query an
 * invocation (FLASH: heads of up to 128). ATTN_AUTO: FLASH on GPUs where it applies, else VEC4
 * for widths divisible by 4, else GENERIC. */
enum attention_variant { ATTN_AUTO, ATTN_GENERIC, ATTN_VEC4, ATTN_FLASH };
enum status op_attention_variant(struct gpu *g, const struct gpu_tensor *q, const struct gpu_tensor *k,
                                 const struct gpu_tensor *v, const struct gpu_tensor *o, int n_head, bool causal,
                                 float scale, enum attention_variant variant);
enum status op_add(struct gpu *g, const struct gpu_tensor *a, const struct gpu_tensor *b,
                   const struct gpu_tensor *y);
enum status op_activation(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y, int act);
enum status op_gelu(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y);
enum status op_quick_gelu(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y);
/* y[i] = x[index[i]]: index i32 [n] (checked by the caller), x [rows, cols], y [n, cols]. */
enum status op_gather_rows(struct gpu *g, const struct gpu_tensor *index, const struct gpu_tensor *x,
                           const struct gpu_tensor *y);
/* FMA throughput probe: `groups` work groups of 256 invocations, 64 flops per iteration each. */
enum status op_peak(struct gpu *g, const struct gpu_tensor *y, uint32_t groups, uint32_t iters);
/* The same in fp16 arithmetic (UNSUPPORTED without gpu_info()->shader_float16). */
enum status op_peak16(struct gpu *g, const struct gpu_tensor *y, uint32_t groups, uint32_t iters);

/* Shape as text, "[77, 768]", for error messages. */
const char *shape_str(const struct gpu_tensor *t, char *buf, size_t n);

#endif
