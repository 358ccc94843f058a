/* The op library: one host function per kernel (shaders/<op>.comp), recorded into the current
 * command buffer (between gpu_begin and gpu_submit). Each checks the shapes of its tensors and
 * returns STATUS_INVALID_ARGUMENT with both shapes on a mismatch. Activations are f32; weights
 * (W of linear, embedding tables) may be f32 or f16 and are read through texel buffers with
 * fp32 accumulation. Plain-C twins of every op live in tests/ref.c. */
#ifndef VKD_OPS_H
#define VKD_OPS_H

#include "gpu.h"
#include "push.h"

enum linear_variant { LINEAR_AUTO, LINEAR_GENERIC, LINEAR_TILED };

/* y[M, N] = act(x[M, K] W[N, K]^T + b[N]); x and y may have any leading dims (M = numel / K). */
enum status op_linear(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                      const struct gpu_tensor *b, const struct gpu_tensor *y, int act);
enum status op_linear_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                              const struct gpu_tensor *b, const struct gpu_tensor *y, int act,
                              enum linear_variant variant);
/* Layer norm over the last dimension (biased variance). */
enum status op_layernorm(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                         const struct gpu_tensor *beta, const struct gpu_tensor *y, float eps);
/* y[i] = tok[ids[i]] + pos[i mod ctx]; ids i32 [N, T] (values checked by the caller), y [N, T, D]. */
enum status op_embedding(struct gpu *g, const struct gpu_tensor *ids, const struct gpu_tensor *tok,
                         const struct gpu_tensor *pos, const struct gpu_tensor *y);
/* Multi-head attention, q [N, Tq, NH*D], k/v [N, Tk, NH*D], o [N, Tq, NH*D]. */
enum status op_attention(struct gpu *g, const struct gpu_tensor *q, const struct gpu_tensor *k,
                         const struct gpu_tensor *v, const struct gpu_tensor *o, int n_head, bool causal,
                         float scale);
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

/* Shape as text, "[77, 768]", for error messages. */
const char *shape_str(const struct gpu_tensor *t, char *buf, size_t n);

#endif
