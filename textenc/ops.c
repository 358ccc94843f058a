#include "ops.h"

#include <string.h>

_Static_assert(sizeof(struct linear_push) <= GPU_PUSH_SIZE, "push constants too large");
_Static_assert(sizeof(struct layernorm_push) <= GPU_PUSH_SIZE, "push constants too large");
_Static_assert(sizeof(struct embedding_push) <= GPU_PUSH_SIZE, "push constants too large");
_Static_assert(sizeof(struct attention_push) <= GPU_PUSH_SIZE, "push constants too large");
_Static_assert(sizeof(struct eltwise_push) <= GPU_PUSH_SIZE, "push constants too large");
_Static_assert(sizeof(struct gather_push) <= GPU_PUSH_SIZE, "push constants too large");

#define WG 64u

static uint32_t div_up(uint64_t a, uint64_t b) { return (uint32_t)((a + b - 1) / b); }

const char *shape_str(const struct gpu_tensor *t, char *buf, size_t n) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, n - o, "[");
  for (int i = 0; i < t->ndim && o < n; i++)
    o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (o < n) snprintf(buf + o, n - o, "]");
  return buf;
}

static enum status shape_error(const char *op, const char *what, const struct gpu_tensor *t, const char *expected) {
  char b[96];
  return status_set(STATUS_INVALID_ARGUMENT, "%s: %s has shape %s %s, expected %s", op, what, shape_str(t, b, sizeof b),
                    dtype_name(t->dtype), expected);
}

static int64_t last_dim(const struct gpu_tensor *t) { return t->shape[t->ndim - 1]; }

static bool is_f32(const struct gpu_tensor *t) { return t->dtype == DT_F32; }

static VkFormat scalar_format(enum dtype dt) {
  return dt == DT_F16 ? VK_FORMAT_R16_SFLOAT : VK_FORMAT_R32_SFLOAT;
}
static VkFormat vec4_format(enum dtype dt) {
  return dt == DT_F16 ? VK_FORMAT_R16G16B16A16_SFLOAT : VK_FORMAT_R32G32B32A32_SFLOAT;
}

static bool is_cpu(const struct gpu *g) { return strcmp(gpu_info(g)->type, "cpu") == 0; }

enum status op_linear_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                              const struct gpu_tensor *b, const struct gpu_tensor *y, int act,
                              enum linear_variant variant) {
  if (w->ndim != 2 || w->dtype == DT_I32) return shape_error("linear", "W", w, "[N, K] f32/f16");
  int64_t N = w->shape[0], K = w->shape[1];
  if (!is_f32(x) || last_dim(x) != K) return shape_error("linear", "x", x, "[..., K] f32 with K = W's columns");
  int64_t M = gpu_tensor_numel(x) / (K ? K : 1);
  if (!is_f32(y) || last_dim(y) != N || gpu_tensor_numel(y) != M * N)
    return shape_error("linear", "y", y, "[..., N] f32 with x's rows and N = W's rows");
  if (b && (!is_f32(b) || gpu_tensor_numel(b) != N)) return shape_error("linear", "b", b, "[N] f32");
  if (M == 0 || N == 0) return STATUS_OK;
  struct linear_push p = {.rows = (u32)M, .cols = (u32)N, .inner = (u32)K, .has_bias = b != NULL, .act = (u32)act};
  const struct gpu_tensor *bias = b ? b : y;
  bool tiled_ok = K % 4 == 0 && gpu_texel_format_ok(g, vec4_format(w->dtype)) &&
                  gpu_texel_format_ok(g, vec4_format(DT_F32)) &&
                  (uint64_t)M * K / 4 <= gpu_limits(g)->maxTexelBufferElements;
  if (variant == LINEAR_AUTO) variant = tiled_ok ? LINEAR_TILED : LINEAR_GENERIC;
  if (variant == LINEAR_TILED) {
    if (!tiled_ok) return status_set(STATUS_UNSUPPORTED, "linear: tiled variant needs K %% 4 == 0 (K = %lld)", (long long)K);
    /* lavapipe: large register blocks amortise its per-fetch cost (16x16 measured best of 8x8 .. 32x16
     * with `bench ops`); GPUs: smaller blocks, more threads in flight */
    uint32_t bm = is_cpu(g) ? 16 : 4, bn = is_cpu(g) ? 16 : 4, wg = is_cpu(g) ? 32 : 64;
    uint32_t spec[] = {wg, bm, bn};
    struct gpu_arg args[] = {{bias, 0}, {y, 0}, {x, vec4_format(DT_F32)}, {w, vec4_format(w->dtype)}};
    return gpu_dispatch(g, KERNEL_linear_tiled, spec, 3, args, 4, &p, sizeof p, div_up(div_up(N, bn), wg),
                        div_up(M, bm), 1);
  }
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{x, 0}, {bias, 0}, {y, 0}, {w, scalar_format(w->dtype)}};
  return gpu_dispatch(g, KERNEL_linear, spec, 1, args, 4, &p, sizeof p, div_up(N, WG), (uint32_t)M, 1);
}

enum status op_linear(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                      const struct gpu_tensor *b, const struct gpu_tensor *y, int act) {
  return op_linear_variant(g, x, w, b, y, act, LINEAR_AUTO);
}

enum status op_layernorm(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                         const struct gpu_tensor *beta, const struct gpu_tensor *y, float eps) {
  int64_t D = last_dim(x);
  if (!is_f32(x)) return shape_error("layernorm", "x", x, "f32");
  if (!is_f32(gamma) || gpu_tensor_numel(gamma) != D) return shape_error("layernorm", "weight", gamma, "[D] f32");
  if (!is_f32(beta) || gpu_tensor_numel(beta) != D) return shape_error("layernorm", "bias", beta, "[D] f32");
  if (!is_f32(y) || gpu_tensor_numel(y) != gpu_tensor_numel(x)) return shape_error("layernorm", "y", y, "x's shape");
  int64_t rows = gpu_tensor_numel(x) / (D ? D : 1);
  struct layernorm_push p = {.rows = (u32)rows, .cols = (u32)D, .eps = eps};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{x, 0}, {gamma, 0}, {beta, 0}, {y, 0}};
  return gpu_dispatch(g, KERNEL_layernorm, spec, 1, args, 4, &p, sizeof p, (uint32_t)rows, 1, 1);
}

enum status op_embedding(struct gpu *g, const struct gpu_tensor *ids, const struct gpu_tensor *tok,
                         const struct gpu_tensor *pos, const struct gpu_tensor *y) {
  if (ids->dtype != DT_I32 || ids->ndim != 2) return shape_error("embedding", "ids", ids, "[N, T] i32");
  if (tok->ndim != 2 || tok->dtype == DT_I32) return shape_error("embedding", "token table", tok, "[vocab, D]");
  int64_t D = tok->shape[1], T = ids->shape[1], NT = gpu_tensor_numel(ids);
  if (pos->ndim != 2 || pos->shape[1] != D || pos->shape[0] < T || pos->dtype == DT_I32)
    return shape_error("embedding", "position table", pos, "[ctx >= T, D]");
  if (!is_f32(y) || gpu_tensor_numel(y) != NT * D) return shape_error("embedding", "y", y, "[N, T, D] f32");
  struct embedding_push p = {.n_tokens = (u32)NT, .ctx = (u32)T, .width = (u32)D, .vocab = (u32)tok->shape[0]};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{ids, 0}, {y, 0}, {tok, scalar_format(tok->dtype)}, {pos, scalar_format(pos->dtype)}};
  return gpu_dispatch(g, KERNEL_embedding, spec, 1, args, 4, &p, sizeof p, div_up(D, WG), (uint32_t)NT, 1);
}

enum status op_attention(struct gpu *g, const struct gpu_tensor *q, const struct gpu_tensor *k,
                         const struct gpu_tensor *v, const struct gpu_tensor *o, int n_head, bool causal,
                         float scale) {
  if (!is_f32(q) || q->ndim != 3) return shape_error("attention", "q", q, "[N, Tq, NH*D] f32");
  int64_t N = q->shape[0], Tq = q->shape[1], W = q->shape[2];
  if (n_head <= 0 || W % n_head) return status_set(STATUS_INVALID_ARGUMENT, "attention: width %lld is not a multiple of %d heads",
                                                  (long long)W, n_head);
  if (!is_f32(k) || k->ndim != 3 || k->shape[0] != N || k->shape[2] != W)
    return shape_error("attention", "k", k, "[N, Tk, NH*D] f32");
  int64_t Tk = k->shape[1];
  if (!is_f32(v) || v->ndim != 3 || v->shape[0] != N || v->shape[1] != Tk || v->shape[2] != W)
    return shape_error("attention", "v", v, "k's shape");
  if (!is_f32(o) || gpu_tensor_numel(o) != N * Tq * W) return shape_error("attention", "o", o, "q's shape");
  int64_t D = W / n_head;
  if (D > 256) return status_set(STATUS_UNSUPPORTED, "attention: head width %lld > 256", (long long)D);
  if (Tk == 0) return status_set(STATUS_INVALID_ARGUMENT, "attention: no keys");
  struct attention_push p = {.batch = (u32)N, .q_len = (u32)Tq, .kv_len = (u32)Tk, .n_head = (u32)n_head,
                             .head_dim = (u32)D, .causal = causal, .scale = scale};
  uint32_t wg = 32;
  uint32_t spec[] = {wg, (uint32_t)D};
  struct gpu_arg args[] = {{q, 0}, {k, 0}, {v, 0}, {o, 0}};
  return gpu_dispatch(g, KERNEL_attention, spec, 2, args, 4, &p, sizeof p, div_up(Tq, wg), (uint32_t)n_head,
                      (uint32_t)N);
}

enum status op_add(struct gpu *g, const struct gpu_tensor *a, const struct gpu_tensor *b,
                   const struct gpu_tensor *y) {
  int64_t n = gpu_tensor_numel(a);
  if (!is_f32(a) || !is_f32(b) || !is_f32(y) || gpu_tensor_numel(b) != n || gpu_tensor_numel(y) != n)
    return shape_error("add", "b or y", b, "a's shape, f32");
  struct eltwise_push p = {.n = (u32)n};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{a, 0}, {b, 0}, {y, 0}};
  return gpu_dispatch(g, KERNEL_add, spec, 1, args, 3, &p, sizeof p, div_up(n, WG), 1, 1);
}

enum status op_activation(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y, int act) {
  int64_t n = gpu_tensor_numel(x);
  if (!is_f32(x) || !is_f32(y) || gpu_tensor_numel(y) != n) return shape_error("activation", "y", y, "x's shape, f32");
  struct eltwise_push p = {.n = (u32)n, .act = (u32)act};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{x, 0}, {y, 0}};
  return gpu_dispatch(g, KERNEL_activation, spec, 1, args, 2, &p, sizeof p, div_up(n, WG), 1, 1);
}

enum status op_gelu(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y) {
  return op_activation(g, x, y, ACT_GELU);
}

enum status op_quick_gelu(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y) {
  return op_activation(g, x, y, ACT_QUICK_GELU);
}

enum status op_gather_rows(struct gpu *g, const struct gpu_tensor *index, const struct gpu_tensor *x,
                           const struct gpu_tensor *y) {
  int64_t cols = last_dim(x), rows = gpu_tensor_numel(x) / (cols ? cols : 1), n = gpu_tensor_numel(index);
  if (index->dtype != DT_I32) return shape_error("gather_rows", "index", index, "[n] i32");
  if (!is_f32(x)) return shape_error("gather_rows", "x", x, "[rows, cols] f32");
  if (!is_f32(y) || gpu_tensor_numel(y) != n * cols) return shape_error("gather_rows", "y", y, "[n, cols] f32");
  struct gather_push p = {.n = (u32)n, .rows = (u32)rows, .cols = (u32)cols};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{index, 0}, {x, 0}, {y, 0}};
  return gpu_dispatch(g, KERNEL_gather_rows, spec, 1, args, 3, &p, sizeof p, div_up(cols, WG), (uint32_t)n, 1);
}

enum status op_peak(struct gpu *g, const struct gpu_tensor *y, uint32_t groups, uint32_t iters) {
  if (!is_f32(y) || gpu_tensor_numel(y) < (int64_t)groups * 256) return shape_error("peak", "y", y, "[groups * 256] f32");
  struct peak_push p = {.iters = iters};
  uint32_t spec[] = {256};
  struct gpu_arg args[] = {{y, 0}};
  return gpu_dispatch(g, KERNEL_peak, spec, 1, args, 1, &p, sizeof p, groups, 1, 1);
}
