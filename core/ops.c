#include "ops.h"

#include <stdlib.h>
#include <string.h>


#define WG 64u

/* A 1-D count of work groups spread over x and y (or z) so neither exceeds the device's
 * maxComputeWorkGroupCount (65535 on many devices: an SDXL activation at 1024² has 10 M values):
 * the shaders form the index as (y * gx + x) * WG + the local index. */
static void split_groups(struct gpu *g, uint64_t groups, uint32_t *gx, uint32_t *gy) {
  uint64_t max = gpu_limits(g)->maxComputeWorkGroupCount[0];
  if (max > 65535) max = 65535;
  if (groups == 0) groups = 1;
  *gx = (uint32_t)(groups < max ? groups : max);
  *gy = (uint32_t)((groups + *gx - 1) / *gx);
}

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

/* The kernel variants' device class (the GPU variants are tested on lavapipe by forcing them). */
bool ops_cpu_kernels(const struct gpu *g) {
  const char *k = getenv("VKDIFFUSION_KERNELS");
  if (k && !strcmp(k, "gpu")) return false;
  if (k && !strcmp(k, "cpu")) return true;
  return strcmp(gpu_info(g)->type, "cpu") == 0;
}

/* The matrix product behind linear layers and convolutions (see linear_tiled.comp). */
struct matmul {
  const struct gpu_tensor *a, *b, *bias, *y; /* a [M, K], b [N, K] */
  int64_t M, N, K;
  uint32_t bias_mode, bias_offset, ldy, y_offset, act, accumulate;
  uint32_t batch, a_batch, b_batch, y_batch; /* batch 0 or 1: one product; strides as in linear_push */
  uint32_t transpose_y;
};

/* linear_tiled's block on lavapipe: register blocks amortise its per-fetch cost. 16 rows x 8
 * columns: as fast as 16x16 warm (SD U-Net 256² step 10.8 vs 10.5 s, CLIP-L 0.42-0.45 s both, demo
 * sampling 2.0-2.2 vs 2.6 s; the VAE at 256² 10% slower) while LLVM compiles it in a quarter of
 * the time (a first-ever demo run 13 s instead of 39 s). One block for every use, so llvmpipe
 * compiles no variant per caller. */
#define TILED_BM 16u
#define TILED_BN 8u
#define TILED_WG 32u

static bool tiled_ok(struct gpu *g, const struct matmul *mm) {
  const VkPhysicalDeviceLimits *l = gpu_limits(g);
  uint64_t batch = mm->batch ? mm->batch : 1;
  return mm->K % 4 == 0 && gpu_texel_format_ok(g, vec4_format(mm->a->dtype)) &&
         gpu_texel_format_ok(g, vec4_format(mm->b->dtype)) &&
         batch * mm->M * mm->K / 4 <= l->maxTexelBufferElements && batch * mm->N * mm->K / 4 <= l->maxTexelBufferElements;
}

/* The padded work of an M x N product in linear_tiled's blocks: rows to whole blocks, columns to
 * whole work groups of blocks (llvmpipe pays for a work group's idle lanes). GPUs' linear_shared
 * computes either orientation; the choice is for lavapipe. */
static int64_t tiled_waste(int64_t M, int64_t N) {
  int64_t cols = TILED_BN * TILED_WG;
  return div_up(M, TILED_BM) * TILED_BM * (div_up(N, cols) * cols);
}

static enum status matmul(struct gpu *g, const struct matmul *mm, enum linear_variant variant) {
  if (mm->M == 0 || mm->N == 0) return STATUS_OK;
  struct linear_push p = {.rows = (u32)mm->M, .cols = (u32)mm->N, .inner = (u32)mm->K, .bias_mode = mm->bias_mode,
                          .act = mm->act, .ldy = mm->ldy, .accumulate = mm->accumulate, .y_offset = mm->y_offset,
                          .bias_offset = mm->bias_offset, .a_batch = mm->a_batch, .b_batch = mm->b_batch,
                          .y_batch = mm->y_batch, .transpose_y = mm->transpose_y};
  const struct gpu_tensor *bias = mm->bias ? mm->bias : mm->y;
  uint32_t batch = mm->batch ? mm->batch : 1;
  bool ok = tiled_ok(g, mm);
  if (variant == LINEAR_AUTO) variant = !ok ? LINEAR_GENERIC : ops_cpu_kernels(g) ? LINEAR_TILED : LINEAR_SHARED;
  if (variant == LINEAR_SHARED) {
    if (!ok) return status_set(STATUS_UNSUPPORTED, "linear: shared variant needs K %% 4 == 0 (K = %lld)", (long long)mm->K);
    struct gpu_arg args[] = {{bias, 0}, {mm->y, 0}, {mm->a, vec4_format(mm->a->dtype)}, {mm->b, vec4_format(mm->b->dtype)}};
    uint32_t none[] = {0};
    return gpu_dispatch(g, KERNEL_linear_shared, none, 0, args, 4, &p, sizeof p, div_up(mm->N, 64), div_up(mm->M, 64), batch);
  }
  if (batch > 1 && variant == LINEAR_GENERIC)
    return status_set(STATUS_UNSUPPORTED, "linear: a batch of products needs the tiled kernel (K = %lld)", (long long)mm->K);
  if (variant == LINEAR_TILED) {
    if (!ok) return status_set(STATUS_UNSUPPORTED, "linear: tiled variant needs K %% 4 == 0 (K = %lld)", (long long)mm->K);
    uint32_t spec[] = {TILED_WG, TILED_BM, TILED_BN};
    struct gpu_arg args[] = {{bias, 0}, {mm->y, 0}, {mm->a, vec4_format(mm->a->dtype)}, {mm->b, vec4_format(mm->b->dtype)}};
    return gpu_dispatch(g, KERNEL_linear_tiled, spec, 3, args, 4, &p, sizeof p, div_up(div_up(mm->N, TILED_BN), TILED_WG),
                        div_up(mm->M, TILED_BM), batch);
  }
  if (!is_f32(mm->a))
    return status_set(STATUS_UNSUPPORTED, "linear: the generic kernel needs an f32 left operand (K = %lld)", (long long)mm->K);
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{mm->a, 0}, {bias, 0}, {mm->y, 0}, {mm->b, scalar_format(mm->b->dtype)}};
  return gpu_dispatch(g, KERNEL_linear, spec, 1, args, 4, &p, sizeof p, div_up(mm->N, WG), (uint32_t)mm->M, 1);
}

static enum status linear_checked(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                                  const struct gpu_tensor *b, const struct gpu_tensor *y, int act, bool accumulate,
                                  enum linear_variant variant) {
  if (w->ndim != 2 || w->dtype == DT_I32) return shape_error("linear", "W", w, "[N, K] f32/f16");
  int64_t N = w->shape[0], K = w->shape[1];
  if (!is_f32(x) || last_dim(x) != K) return shape_error("linear", "x", x, "[..., K] f32 with K = W's columns");
  int64_t M = gpu_tensor_numel(x) / (K ? K : 1);
  if (!is_f32(y) || last_dim(y) != N || gpu_tensor_numel(y) != M * N)
    return shape_error("linear", "y", y, "[..., N] f32 with x's rows and N = W's rows");
  if (b && (!is_f32(b) || gpu_tensor_numel(b) != N)) return shape_error("linear", "b", b, "[N] f32");
  struct matmul mm = {.a = x, .b = w, .bias = b, .y = y, .M = M, .N = N, .K = K,
                      .bias_mode = b ? BIAS_COL : BIAS_NONE, .ldy = (uint32_t)N, .act = (uint32_t)act,
                      .accumulate = accumulate};
  return matmul(g, &mm, variant);
}

enum status op_linear_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                              const struct gpu_tensor *b, const struct gpu_tensor *y, int act,
                              enum linear_variant variant) {
  return linear_checked(g, x, w, b, y, act, false, variant);
}

enum status op_linear(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                      const struct gpu_tensor *b, const struct gpu_tensor *y, int act) {
  return linear_checked(g, x, w, b, y, act, false, LINEAR_AUTO);
}

enum status op_linear_residual(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                               const struct gpu_tensor *b, const struct gpu_tensor *y) {
  return linear_checked(g, x, w, b, y, ACT_NONE, true, LINEAR_AUTO);
}

int64_t conv_weight_cols(int64_t channels, int kernel) { return (channels * kernel * kernel + 3) / 4 * 4; }

int64_t conv_out_size(int64_t in, int kernel, int stride, int pad) {
  return (in + (pad == CONV_PAD_BOTTOM_RIGHT ? 1 : 2 * pad) - kernel) / stride + 1;
}

/* The output of a convolution: y [N, Cout, Ho, Wo], or tokens [N, Ho * Wo, Cout] */
struct conv_out {
  const struct gpu_tensor *y;
  int64_t Ho, Wo;
  bool tokens;
};

static enum status conv_im2col(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                               const struct gpu_tensor *b, const struct conv_out *o, int kernel, int stride, int pad,
                               bool accumulate, const struct gpu_tensor *scratch, bool per_image) {
  const VkPhysicalDeviceLimits *l = gpu_limits(g);
  const struct gpu_tensor *y = o->y;
  int64_t N = x->shape[0], C = x->shape[1], Kp = conv_weight_cols(C, kernel), Co = w->shape[0];
  int64_t HW = o->Ho * o->Wo, room = gpu_tensor_numel(scratch);
  if ((uint64_t)room * 4 > l->maxStorageBufferRange) room = l->maxStorageBufferRange / 4;
  if ((uint64_t)room > (uint64_t)l->maxTexelBufferElements * 4) room = (int64_t)l->maxTexelBufferElements * 4;
  int64_t chunk = room / Kp;
  if (chunk < 1) return status_set(STATUS_OUT_OF_MEMORY, "conv2d: the scratch buffer holds no row of %lld values", (long long)Kp);
  if (chunk > HW) chunk = HW;
  if (chunk > 65535) chunk = 65535; /* within the guaranteed work-group count of an im2col dispatch */
  for (int64_t n = 0; n < N; n++)
    for (int64_t p0 = 0; p0 < HW; p0 += chunk) {
      int64_t np = HW - p0 < chunk ? HW - p0 : chunk;
      struct gpu_tensor col = gpu_tensor_reshape(scratch, 1, (int64_t[]){gpu_tensor_numel(scratch)});
      col = gpu_tensor_rows(&col, 0, np * Kp);
      col = gpu_tensor_reshape(&col, 2, (int64_t[]){np, Kp});
      enum status s = op_im2col(g, x, n, kernel, stride, pad, p0, &col);
      if (s) return s;
      /* pixels as rows and the weights as the second operand, stored transposed into NCHW: the
       * operand formats of a linear layer, so llvmpipe compiles one GEMM variant for both */
      struct matmul mm = {.a = &col, .b = w, .bias = b, .y = y, .M = np, .N = Co, .K = Kp,
                          .bias_mode = b ? BIAS_COL : BIAS_NONE, .bias_offset = per_image ? (uint32_t)(n * Co) : 0,
                          .ldy = (uint32_t)(o->tokens ? Co : HW),
                          .y_offset = (uint32_t)(o->tokens ? (n * HW + p0) * Co : n * Co * HW + p0),
                          .accumulate = accumulate, .transpose_y = !o->tokens};
      if ((s = matmul(g, &mm, LINEAR_AUTO))) return s;
    }
  return STATUS_OK;
}

/* Winograd F(4x4, 3x3): tiles of 4x4 output pixels, numbered across the batch's images; a chunk
 * of nt tiles and a block of cb output channels at a time, with the transformed filters
 * U [36, cb, C], inputs V [36, nt, C] and products M [36, cb, nt] side by side in the scratch
 * buffer. */
#define WINO_TILES 4u  /* tiles an invocation of wino_input: TILES there */
#define WINO_ALIGN 64  /* elements: each region starts on 256 bytes, the largest offset alignment Vulkan allows */
/* CONV_AUTO: Winograd from 32 tiles in the batch. The filters are transformed at each call, a cost
 * that the tiles amortise: `bench ops` on lavapipe (2 cores, one session), im2col -> Winograd:
 * 2x320x32x32 (128 tiles) 91 -> 43 ms, 2x1280x16x16 (32 tiles) 341 -> 126-134 ms,
 * 2x640x16x16 83 -> 47 ms, 2x64x16x16 (the demo) 2.1-2.5 ms both ways; 2x1280x8x8 (8 tiles)
 * 81-87 -> 110-136 ms, where transforming 1280x1280 filters outweighs a product of 8 tiles;
 * 1x1280x16x16 (16 tiles, no CFG) 166-179 -> 114-217 ms, no reliable gain. */
#define WINO_MIN_TILES 32

static int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

/* The largest chunk of tiles (halving from all of them) for which a block of at least 32 output
 * channels (or all) fits the scratch and the device's buffer limits; then chunks and blocks of
 * even sizes. False when none fits. */
static bool wino_plan(struct gpu *g, int64_t C, int64_t Co, int64_t T, int64_t room, int64_t *nt_out, int64_t *cb_out) {
  const VkPhysicalDeviceLimits *l = gpu_limits(g);
  int64_t region = l->maxStorageBufferRange / 4; /* elements of one bound region */
  if ((int64_t)l->maxTexelBufferElements * 4 < region) region = (int64_t)l->maxTexelBufferElements * 4;
  int64_t avail = room - 3 * WINO_ALIGN, want = Co < 32 ? Co : 32;
  int64_t nt = T < 65535 * (int64_t)WINO_TILES ? T : 65535 * (int64_t)WINO_TILES;
  for (;;) {
    int64_t cb = avail / 36 - nt * C > 0 ? (avail / 36 - nt * C) / (C + nt) : 0;
    if (cb > Co) cb = Co;
    while (cb > 0 && (36 * cb * C > region || 36 * cb * nt > region)) cb /= 2;
    if (cb >= want && 36 * nt * C <= region) {
      int64_t chunks = (T + nt - 1) / nt, blocks = (Co + cb - 1) / cb;
      *nt_out = (T + chunks - 1) / chunks;
      *cb_out = (Co + blocks - 1) / blocks;
      return true;
    }
    if (nt == 1) return false;
    nt = (nt + 1) / 2;
  }
}

static bool wino_eligible(struct gpu *g, const struct gpu_tensor *w, int64_t C, int kernel, int stride, int pad) {
  return kernel == 3 && stride == 1 && (pad == 0 || pad == 1) && C % 4 == 0 && gpu_texel_format_ok(g, vec4_format(w->dtype)) &&
         gpu_texel_format_ok(g, vec4_format(DT_F32));
}

struct wino {
  struct gpu *g;
  const struct gpu_tensor *x, *w, *bias, *y;
  struct gpu_tensor flat;
  int64_t C, H, W, Ho, Wo, Co, nt, cb, v_at, m_at; /* U starts the scratch, V and M follow */
  int pad;
  bool per_image, has_bias, accumulate;
};

/* V = the input transform of tiles [t0, t0 + nts) of the batch */
static enum status wino_in(const struct wino *k, int64_t t0, int64_t nts) {
  struct gpu_tensor v = gpu_tensor_rows(&k->flat, k->v_at, 36 * nts * k->C);
  struct wino_push wp = {.channels = (u32)k->C, .height = (u32)k->H, .width = (u32)k->W, .out_height = (u32)k->Ho,
                         .out_width = (u32)k->Wo, .pad = (u32)k->pad, .tiles_w = (u32)((k->Wo + 3) / 4),
                         .tile0 = (u32)t0, .ntiles = (u32)nts};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{k->x, 0}, {&v, 0}};
  return gpu_dispatch(k->g, KERNEL_wino_input, spec, 1, args, 2, &wp, sizeof wp, div_up(k->C, WG), div_up(nts, WINO_TILES), 1);
}

/* U = the filter transform of output channels [c0, c0 + cbs) */
static enum status wino_filter(const struct wino *k, int64_t c0, int64_t cbs) {
  struct gpu_tensor u = gpu_tensor_rows(&k->flat, 0, 36 * cbs * k->C);
  struct wino_push wp = {.channels = (u32)k->C, .c0 = (u32)c0, .cb = (u32)cbs, .kp = (u32)k->w->shape[1]};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{&u, 0}, {k->w, vec4_format(k->w->dtype)}};
  return gpu_dispatch(k->g, KERNEL_wino_filter, spec, 1, args, 2, &wp, sizeof wp, div_up(k->C / 4, WG), (uint32_t)cbs, 1);
}

/* the element-wise stage, M[xi] [cbs, nts] = U[xi] [cbs, C] V[xi] [nts, C]^T for the 36 xi, then
 * the output transform into y. Few tiles (small maps) leave most of a work group's column blocks
 * idle, so the product is then taken the other way round, V U^T stored transposed: 2x1280x16x16
 * on lavapipe 425 -> 168 ms (`bench ops`, one session). */
static enum status wino_out(const struct wino *k, int64_t t0, int64_t nts, int64_t c0, int64_t cbs) {
  struct gpu_tensor u = gpu_tensor_rows(&k->flat, 0, 36 * cbs * k->C);
  struct gpu_tensor v = gpu_tensor_rows(&k->flat, k->v_at, 36 * nts * k->C);
  struct gpu_tensor m = gpu_tensor_rows(&k->flat, k->m_at, 36 * cbs * nts);
  struct matmul mm = {.a = &u, .b = &v, .y = &m, .M = cbs, .N = nts, .K = k->C, .bias_mode = BIAS_NONE,
                      .ldy = (uint32_t)nts, .batch = 36, .a_batch = (uint32_t)(cbs * k->C / 4),
                      .b_batch = (uint32_t)(nts * k->C / 4), .y_batch = (uint32_t)(cbs * nts)};
  if (tiled_waste(nts, cbs) < tiled_waste(cbs, nts)) { /* tiles as rows, channels as columns */
    mm.a = &v, mm.b = &u, mm.M = nts, mm.N = cbs, mm.a_batch = (uint32_t)(nts * k->C / 4);
    mm.b_batch = (uint32_t)(cbs * k->C / 4), mm.transpose_y = 1;
  }
  enum status s = matmul(k->g, &mm, LINEAR_AUTO);
  if (s) return s;
  struct wino_push wp = {.channels = (u32)k->C, .height = (u32)k->H, .width = (u32)k->W, .out_height = (u32)k->Ho,
                         .out_width = (u32)k->Wo, .pad = (u32)k->pad, .tiles_w = (u32)((k->Wo + 3) / 4),
                         .tile0 = (u32)t0, .ntiles = (u32)nts, .c0 = (u32)c0, .cb = (u32)cbs,
                         .out_channels = (u32)k->Co, .bias_mode = k->has_bias ? BIAS_ROW : BIAS_NONE,
                         .bias_batch = k->per_image ? (u32)k->Co : 0, .accumulate = k->accumulate};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{k->bias, 0}, {k->y, 0}, {&m, 0}};
  return gpu_dispatch(k->g, KERNEL_wino_output, spec, 1, args, 3, &wp, sizeof wp, div_up(nts, WG), (uint32_t)cbs, 1);
}

static enum status conv_winograd(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                                 const struct gpu_tensor *b, const struct gpu_tensor *y, bool accumulate,
                                 const struct gpu_tensor *scratch, bool per_image, int pad, int64_t nt, int64_t cb) {
  struct wino k = {.g = g, .x = x, .w = w, .bias = b ? b : y, .y = y, .C = x->shape[1], .H = x->shape[2],
                   .W = x->shape[3], .Ho = y->shape[2], .Wo = y->shape[3], .Co = w->shape[0], .nt = nt, .cb = cb,
                   .pad = pad, .per_image = per_image, .has_bias = b != NULL, .accumulate = accumulate};
  k.flat = gpu_tensor_reshape(scratch, 1, (int64_t[]){gpu_tensor_numel(scratch)});
  k.v_at = align_up(36 * cb * k.C, WINO_ALIGN), k.m_at = k.v_at + align_up(36 * nt * k.C, WINO_ALIGN);
  int64_t T = x->shape[0] * ((k.Wo + 3) / 4) * ((k.Ho + 3) / 4), chunks = (T + nt - 1) / nt, blocks = (k.Co + cb - 1) / cb;
  enum status s;
  /* Blocks of output channels outermost transform each filter once but every input once a block;
   * chunks of tiles outermost, the reverse: the loop order that writes less. */
  bool blocks_outer = blocks > 1 && chunks > 1 && k.Co * k.C + blocks * T * k.C < chunks * k.Co * k.C + T * k.C;
  if (blocks_outer) {
    for (int64_t c0 = 0; c0 < k.Co; c0 += cb) {
      int64_t cbs = k.Co - c0 < cb ? k.Co - c0 : cb;
      if ((s = wino_filter(&k, c0, cbs))) return s;
      for (int64_t t0 = 0; t0 < T; t0 += nt) {
        int64_t nts = T - t0 < nt ? T - t0 : nt;
        if ((s = wino_in(&k, t0, nts)) || (s = wino_out(&k, t0, nts, c0, cbs))) return s;
      }
    }
    return STATUS_OK;
  }
  for (int64_t t0 = 0; t0 < T; t0 += nt) {
    int64_t nts = T - t0 < nt ? T - t0 : nt;
    if ((s = wino_in(&k, t0, nts))) return s;
    for (int64_t c0 = 0; c0 < k.Co; c0 += cb) {
      int64_t cbs = k.Co - c0 < cb ? k.Co - c0 : cb;
      /* one block of every output channel: its filters are transformed once */
      if ((blocks > 1 || t0 == 0) && (s = wino_filter(&k, c0, cbs))) return s;
      if ((s = wino_out(&k, t0, nts, c0, cbs))) return s;
    }
  }
  return STATUS_OK;
}

/* Implicit-GEMM convolutions: the matrix product reads x in place, no patches in the scratch.
 * CPU devices: 1x1 stride-1 convolutions through linear_tiled's channel-major mode (as many texel
 * fetches as with im2col's rows, and no im2col pass); other kernels keep im2col there, whose vec4
 * rows cost the register-blocked product a quarter of the fetches of gathering single values.
 * GPUs: any convolution through linear_shared's patch gather, where the gather is part of staging
 * a tile in shared memory. */
static bool implicit_ok(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w, int64_t M, int kernel,
                        int stride, int pad) {
  const VkPhysicalDeviceLimits *l = gpu_limits(g);
  int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3], Co = w->shape[0];
  if (!gpu_texel_format_ok(g, vec4_format(w->dtype)) || N > l->maxComputeWorkGroupCount[2] ||
      Co * w->shape[1] / 4 > l->maxTexelBufferElements || N * C * HW > INT32_MAX) /* the shaders' int texel index */
    return false;
  if (ops_cpu_kernels(g))
    return kernel == 1 && stride == 1 && pad == 0 && C % 4 == 0 && HW % 4 == 0 && gpu_texel_format_ok(g, vec4_format(DT_F32)) &&
           N * C * HW / 4 <= l->maxTexelBufferElements && div_up(M, TILED_BM) <= l->maxComputeWorkGroupCount[1];
  return gpu_texel_format_ok(g, VK_FORMAT_R32_SFLOAT) && N * C * HW <= l->maxTexelBufferElements &&
         div_up(M, 64) <= l->maxComputeWorkGroupCount[1];
}

static enum status conv_implicit(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                                 const struct gpu_tensor *b, const struct conv_out *o, int kernel, int stride, int pad,
                                 bool accumulate, bool per_image) {
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], Co = w->shape[0], M = o->Ho * o->Wo;
  struct linear_push p = {.rows = (u32)M, .cols = (u32)Co, .inner = (u32)w->shape[1], .bias_mode = b ? BIAS_COL : BIAS_NONE,
                          .ldy = (u32)(o->tokens ? Co : M), .accumulate = accumulate, .y_batch = (u32)(M * Co),
                          .bias_batch = per_image ? (u32)Co : 0, .transpose_y = !o->tokens,
                          .conv_channels = (u32)C, .conv_height = (u32)H, .conv_width = (u32)W,
                          .conv_out_width = (u32)o->Wo, .conv_stride = (u32)stride,
                          .conv_pad = (u32)(pad == CONV_PAD_BOTTOM_RIGHT ? 0 : pad)}; /* bottom/right: out of bounds */
  const struct gpu_tensor *bias = b ? b : o->y;
  if (ops_cpu_kernels(g)) {
    p.a_batch = (u32)(C * H * W / 4); /* texels */
    uint32_t spec[] = {TILED_WG, TILED_BM, TILED_BN, 1};
    struct gpu_arg args[] = {{bias, 0}, {o->y, 0}, {x, vec4_format(DT_F32)}, {w, vec4_format(w->dtype)}};
    return gpu_dispatch(g, KERNEL_linear_tiled, spec, 4, args, 4, &p, sizeof p, div_up(div_up(Co, TILED_BN), TILED_WG),
                        div_up(M, TILED_BM), (uint32_t)N);
  }
  p.a_batch = (u32)(C * H * W);
  uint32_t spec[] = {1, (uint32_t)kernel};
  struct gpu_arg args[] = {{bias, 0}, {o->y, 0}, {x, VK_FORMAT_R32_SFLOAT}, {w, vec4_format(w->dtype)}};
  return gpu_dispatch(g, KERNEL_linear_shared, spec, 2, args, 4, &p, sizeof p, div_up(Co, 64), div_up(M, 64), (uint32_t)N);
}

/* The checks and the choice of algorithm behind op_conv2d_variant and op_conv2d_tokens. */
static enum status conv_run(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w, const struct gpu_tensor *b,
                            const struct gpu_tensor *y, int kernel, int stride, int pad, bool accumulate,
                            const struct gpu_tensor *scratch, enum conv_variant variant, bool tokens) {
  const char *op = tokens ? "conv2d_tokens" : "conv2d";
  if (!is_f32(x) || x->ndim != 4) return shape_error(op, "x", x, "[N, C, H, W] f32");
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], Kp = conv_weight_cols(C, kernel);
  if (w->ndim != 2 || w->shape[1] != Kp || w->dtype == DT_I32)
    return shape_error(op, "W", w, "[Cout, C*k*k rounded up to 4] (the device layout of a convolution)");
  if (pad < CONV_PAD_BOTTOM_RIGHT || kernel < 1 || stride < 1)
    return status_set(STATUS_INVALID_ARGUMENT, "%s: kernel %d, stride %d, padding %d", op, kernel, stride, pad);
  int64_t Co = w->shape[0], Ho = conv_out_size(H, kernel, stride, pad), Wo = conv_out_size(W, kernel, stride, pad);
  if (tokens ? !is_f32(y) || y->ndim != 3 || y->shape[0] != N || y->shape[1] != Ho * Wo || y->shape[2] != Co
             : !is_f32(y) || y->ndim != 4 || y->shape[0] != N || y->shape[1] != Co || y->shape[2] != Ho || y->shape[3] != Wo)
    return shape_error(op, "y", y, tokens ? "[N, Ho * Wo, Cout] f32" : "[N, Cout, Ho, Wo] f32");
  /* bias: [Cout] shared, or [N, Cout] per image (a ResBlock's conv bias plus its time embedding) */
  bool per_image = b && gpu_tensor_numel(b) == N * Co && N > 1;
  if (b && (!is_f32(b) || (gpu_tensor_numel(b) != Co && gpu_tensor_numel(b) != N * Co)))
    return shape_error(op, "bias", b, "[Cout] or [N, Cout] f32");
  if (!is_f32(scratch)) return shape_error(op, "scratch", scratch, "f32");
  struct conv_out o = {.y = y, .Ho = Ho, .Wo = Wo, .tokens = tokens};
  int64_t T = N * ((Ho + 3) / 4) * ((Wo + 3) / 4), nt = 0, cb = 0; /* tiles in the batch */
  bool wino = !tokens && wino_eligible(g, w, C, kernel, stride, pad) &&
              wino_plan(g, C, Co, T, gpu_tensor_numel(scratch), &nt, &cb);
  bool implicit = implicit_ok(g, x, w, Ho * Wo, kernel, stride, pad);
  if (variant == CONV_WINOGRAD && !wino)
    return status_set(STATUS_UNSUPPORTED, "%s: Winograd needs a 3x3 stride-1 convolution, padding 0 or 1, over a multiple "
                      "of 4 channels and scratch for 32 output channels (k%d s%d C %lld)", op, kernel, stride, (long long)C);
  if (variant == CONV_IMPLICIT && !implicit)
    return status_set(STATUS_UNSUPPORTED, "%s: no implicit-GEMM kernel for k%d s%d over %lld channels of %lldx%lld on this "
                      "device class (CPU devices: 1x1 stride 1, channels and pixels multiples of 4)", op, kernel, stride,
                      (long long)C, (long long)H, (long long)W);
  /* VKDIFFUSION_CONV=winograd|implicit|im2col makes CONV_AUTO pick that algorithm wherever it
   * applies (the golden-model tests run each way) */
  const char *force = variant == CONV_AUTO ? getenv("VKDIFFUSION_CONV") : NULL;
  if (force && !strcmp(force, "im2col")) wino = implicit = false;
  if (force && !strcmp(force, "implicit")) wino = false;
  int64_t min_tiles = force && !strcmp(force, "winograd") ? 0 : WINO_MIN_TILES;
  if (variant == CONV_AUTO) variant = wino && T >= min_tiles ? CONV_WINOGRAD : implicit ? CONV_IMPLICIT : CONV_IM2COL;
  if (variant == CONV_IMPLICIT) return conv_implicit(g, x, w, b, &o, kernel, stride, pad, accumulate, per_image);
  if (variant == CONV_IM2COL) return conv_im2col(g, x, w, b, &o, kernel, stride, pad, accumulate, scratch, per_image);
  return conv_winograd(g, x, w, b, y, accumulate, scratch, per_image, pad, nt, cb);
}

enum status op_conv2d(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w, const struct gpu_tensor *b,
                      const struct gpu_tensor *y, int kernel, int stride, int pad, bool accumulate,
                      const struct gpu_tensor *scratch) {
  return conv_run(g, x, w, b, y, kernel, stride, pad, accumulate, scratch, CONV_AUTO, false);
}

enum status op_conv2d_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                              const struct gpu_tensor *b, const struct gpu_tensor *y, int kernel, int stride, int pad,
                              bool accumulate, const struct gpu_tensor *scratch, enum conv_variant variant) {
  return conv_run(g, x, w, b, y, kernel, stride, pad, accumulate, scratch, variant, false);
}

enum status op_conv2d_tokens(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *w,
                             const struct gpu_tensor *b, const struct gpu_tensor *y, const struct gpu_tensor *scratch,
                             enum conv_variant variant) {
  return conv_run(g, x, w, b, y, 1, 1, 0, false, scratch, variant, true);
}

#define IM2COL_PIXELS 16u /* pixels per work group: PIXELS in im2col.comp */

enum status op_im2col(struct gpu *g, const struct gpu_tensor *x, int64_t image, int kernel, int stride, int pad,
                      int64_t pixel0, const struct gpu_tensor *col) {
  if (!is_f32(x) || x->ndim != 4) return shape_error("im2col", "x", x, "[N, C, H, W] f32");
  int64_t C = x->shape[1], H = x->shape[2], W = x->shape[3], Kp = conv_weight_cols(C, kernel);
  int64_t Ho = conv_out_size(H, kernel, stride, pad), Wo = conv_out_size(W, kernel, stride, pad);
  if (pad < CONV_PAD_BOTTOM_RIGHT) return status_set(STATUS_INVALID_ARGUMENT, "im2col: padding %d", pad);
  if (!is_f32(col) || col->ndim != 2 || col->shape[1] != Kp || pixel0 + col->shape[0] > Ho * Wo || image >= x->shape[0])
    return shape_error("im2col", "col", col, "[pixels, C*k*k rounded up to 4] within the output");
  struct im2col_push ip = {.channels = (u32)C, .height = (u32)H, .width = (u32)W, .out_height = (u32)Ho,
                           .out_width = (u32)Wo, .kernel = (u32)kernel, .stride = (u32)stride,
                           .pad = (u32)(pad == CONV_PAD_BOTTOM_RIGHT ? 0 : pad), /* the bottom/right: out of bounds */
                           .pixel0 = (u32)pixel0, .pixels = (u32)col->shape[0], .cols = (u32)Kp,
                           .x_offset = (u32)(image * C * H * W)};
  uint32_t spec[] = {WG, (uint32_t)kernel};
  struct gpu_arg args[] = {{x, 0}, {col, 0}};
  return gpu_dispatch(g, KERNEL_im2col, spec, 2, args, 2, &ip, sizeof ip, div_up(Kp, WG),
                      div_up((uint32_t)col->shape[0], IM2COL_PIXELS), 1);
}

enum status op_matmul_nchw(struct gpu *g, const struct gpu_tensor *w, const struct gpu_tensor *tokens,
                           const struct gpu_tensor *b, const struct gpu_tensor *y, bool accumulate) {
  /* y[n, co, p] = sum_c w[co, c] tokens[n, p, c] + b[co]: a 1x1 convolution from token layout */
  if (w->ndim != 2 || w->dtype == DT_I32) return shape_error("matmul_nchw", "W", w, "[Cout, C]");
  if (!is_f32(tokens) || tokens->ndim != 3 || tokens->shape[2] != w->shape[1])
    return shape_error("matmul_nchw", "tokens", tokens, "[N, P, C] f32");
  int64_t N = tokens->shape[0], P = tokens->shape[1], Co = w->shape[0], C = w->shape[1];
  if (!is_f32(y) || gpu_tensor_numel(y) != N * Co * P) return shape_error("matmul_nchw", "y", y, "[N, Cout, P] f32");
  if (b && (!is_f32(b) || gpu_tensor_numel(b) != Co)) return shape_error("matmul_nchw", "bias", b, "[Cout] f32");
  for (int64_t n = 0; n < N; n++) {
    struct gpu_tensor t = gpu_tensor_rows(tokens, n, 1);
    t = gpu_tensor_reshape(&t, 2, (int64_t[]){P, C});
    struct matmul mm = {.a = &t, .b = w, .bias = b, .y = y, .M = P, .N = Co, .K = C, /* as in conv_im2col */
                        .bias_mode = b ? BIAS_COL : BIAS_NONE, .ldy = (uint32_t)P, .y_offset = (uint32_t)(n * Co * P),
                        .accumulate = accumulate, .transpose_y = 1};
    enum status s = matmul(g, &mm, LINEAR_AUTO);
    if (s) return s;
  }
  return STATUS_OK;
}

enum status op_group_norm(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                          const struct gpu_tensor *beta, const struct gpu_tensor *y, int groups, float eps, bool silu) {
  return op_group_norm_variant(g, x, gamma, beta, y, groups, eps, silu, GN_AUTO);
}

#define GN_WG 256u /* the cooperative kernels' work group size */

enum status op_group_norm_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                                  const struct gpu_tensor *beta, const struct gpu_tensor *y, int groups, float eps, bool silu,
                                  enum group_norm_variant variant) {
  if (!is_f32(x) || x->ndim < 2) return shape_error("group_norm", "x", x, "[N, C, ...] f32");
  int64_t N = x->shape[0], C = x->shape[1], NC = N * C, P = gpu_tensor_numel(x) / (NC > 0 ? NC : 1);
  if (groups <= 0 || C % groups) return status_set(STATUS_INVALID_ARGUMENT, "group_norm: %lld channels in %d groups",
                                                   (long long)C, groups);
  if (!is_f32(gamma) || gpu_tensor_numel(gamma) != C) return shape_error("group_norm", "weight", gamma, "[C] f32");
  if (!is_f32(beta) || gpu_tensor_numel(beta) != C) return shape_error("group_norm", "bias", beta, "[C] f32");
  if (!is_f32(y) || gpu_tensor_numel(y) != gpu_tensor_numel(x)) return shape_error("group_norm", "y", y, "x's shape");
  struct groupnorm_push p = {.channels = (u32)C, .groups = (u32)groups, .pixels = (u32)P, .eps = eps, .silu = silu};
  struct gpu_arg args[] = {{x, 0}, {gamma, 0}, {beta, 0}, {y, 0}};
  /* CPU devices: an invocation a group wherever its loops fit (a work group's barriers cost more
   * there). lavapipe: the SD U-Net 256² CFG step's group norm 219 -> 158 ms with groups of up to
   * 20480 values this way. (The VAE decode 256²'s groups of up to 262144 values seemed 10x faster
   * this way, 190 against 1977 ms: a false figure, llvmpipe's loop limit below had cut the loops
   * short and the outputs were NaN. The cooperative kernel keeps them.) */
  int64_t count = C / groups * P, small_loops = 3 * count + C / groups;
  bool small = variant == GN_SMALL || (variant == GN_AUTO && ops_cpu_kernels(g) && small_loops <= KERNEL_LOOP_LIMIT);
  if (small && small_loops > KERNEL_LOOP_LIMIT)
    return status_set(STATUS_UNSUPPORTED, "group_norm: the one-invocation kernel takes groups of up to about %d values, "
                      "not %lld", KERNEL_LOOP_LIMIT / 3, (long long)count);
  /* the cooperative kernels: 3 passes of count / GN_WG values, and the reductions' loops */
  if (!small && strstr(gpu_info(g)->name, "llvmpipe") && 3 * div_up(count, GN_WG) + 80 > KERNEL_LOOP_LIMIT)
    return status_set(STATUS_UNSUPPORTED, "group_norm: groups of %lld values exceed llvmpipe's loop limit (65535 iterations "
                      "an invocation; at most about 5.5 M values a group)", (long long)count);
  if (small) {
    uint32_t spec[] = {8};
    return gpu_dispatch(g, KERNEL_group_norm_small, spec, 1, args, 4, &p, sizeof p, div_up(groups, 8), (uint32_t)N, 1);
  }
  bool sub = gpu_info(g)->subgroup_arithmetic;
  if (variant == GN_SUBGROUP && !sub)
    return status_set(STATUS_UNSUPPORTED, "group_norm: the device has no subgroup arithmetic in compute shaders");
  uint32_t spec[] = {GN_WG};
  /* GPUs only: CPU devices keep the kernels measured there */
  bool use_sub = variant == GN_SUBGROUP || (variant == GN_AUTO && sub && !ops_cpu_kernels(g));
  return gpu_dispatch(g, use_sub ? KERNEL_group_norm_subgroup : KERNEL_group_norm, spec, 1, args, 4, &p, sizeof p,
                      (uint32_t)groups, (uint32_t)N, 1);
}

enum status op_upsample2x(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y) {
  if (!is_f32(x) || x->ndim != 4) return shape_error("upsample", "x", x, "[N, C, H, W] f32");
  int64_t H = x->shape[2], W = x->shape[3], planes = x->shape[0] * x->shape[1];
  if (!is_f32(y) || y->ndim != 4 || y->shape[0] != x->shape[0] || y->shape[1] != x->shape[1] || y->shape[2] != 2 * H ||
      y->shape[3] != 2 * W)
    return shape_error("upsample", "y", y, "[N, C, 2H, 2W] f32");
  struct upsample_push p = {.planes = (u32)planes, .height = (u32)H, .width = (u32)W};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{x, 0}, {y, 0}};
  return gpu_dispatch(g, KERNEL_upsample, spec, 1, args, 2, &p, sizeof p, div_up(4 * H * W, WG), (uint32_t)planes, 1);
}

enum status op_concat(struct gpu *g, const struct gpu_tensor *a, const struct gpu_tensor *b, const struct gpu_tensor *y) {
  int64_t N = a->shape[0], ia = gpu_tensor_numel(a) / (N ? N : 1), ib = gpu_tensor_numel(b) / (N ? N : 1);
  if (!is_f32(a) || !is_f32(b) || b->shape[0] != N) return shape_error("concat", "b", b, "[N, ...] f32 like a");
  if (!is_f32(y) || y->shape[0] != N || gpu_tensor_numel(y) != N * (ia + ib))
    return shape_error("concat", "y", y, "[N, a's + b's channels, ...] f32");
  struct concat_push p = {.batch = (u32)N, .inner_a = (u32)ia, .inner_b = (u32)ib};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{a, 0}, {b, 0}, {y, 0}};
  uint32_t gx, gz;
  split_groups(g, div_up(ia + ib, WG), &gx, &gz);
  return gpu_dispatch(g, KERNEL_concat, spec, 1, args, 3, &p, sizeof p, gx, (uint32_t)N, gz);
}

enum status op_timestep_embedding(struct gpu *g, const struct gpu_tensor *t, const struct gpu_tensor *emb,
                                  float max_period) {
  int64_t N = gpu_tensor_numel(t);
  if (!is_f32(t)) return shape_error("timestep_embedding", "t", t, "[N] f32");
  if (!is_f32(emb) || emb->ndim != 2 || emb->shape[0] != N) return shape_error("timestep_embedding", "emb", emb, "[N, dim] f32");
  struct timestep_push p = {.batch = (u32)N, .dim = (u32)emb->shape[1], .max_period = max_period};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{t, 0}, {emb, 0}};
  return gpu_dispatch(g, KERNEL_timestep_embedding, spec, 1, args, 2, &p, sizeof p, div_up(emb->shape[1], WG),
                      (uint32_t)N, 1);
}

enum status op_geglu(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y) {
  int64_t F2 = last_dim(x), rows = gpu_tensor_numel(x) / (F2 ? F2 : 1);
  if (!is_f32(x) || F2 % 2) return shape_error("geglu", "x", x, "[..., 2F] f32");
  if (!is_f32(y) || last_dim(y) != F2 / 2 || gpu_tensor_numel(y) != rows * F2 / 2)
    return shape_error("geglu", "y", y, "[..., F] f32");
  struct geglu_push p = {.rows = (u32)rows, .cols = (u32)(F2 / 2)};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{x, 0}, {y, 0}};
  uint32_t gy, gz;
  split_groups(g, (uint64_t)rows, &gy, &gz);
  return gpu_dispatch(g, KERNEL_geglu, spec, 1, args, 2, &p, sizeof p, div_up(F2 / 2, WG), gy, gz);
}

enum status op_layernorm(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                         const struct gpu_tensor *beta, const struct gpu_tensor *y, float eps) {
  return op_layernorm_variant(g, x, gamma, beta, y, eps, LN_AUTO);
}

enum status op_layernorm_variant(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *gamma,
                                 const struct gpu_tensor *beta, const struct gpu_tensor *y, float eps,
                                 enum layernorm_variant variant) {
  int64_t D = last_dim(x);
  if (!is_f32(x)) return shape_error("layernorm", "x", x, "f32");
  if (!is_f32(gamma) || gpu_tensor_numel(gamma) != D) return shape_error("layernorm", "weight", gamma, "[D] f32");
  if (!is_f32(beta) || gpu_tensor_numel(beta) != D) return shape_error("layernorm", "bias", beta, "[D] f32");
  if (!is_f32(y) || gpu_tensor_numel(y) != gpu_tensor_numel(x)) return shape_error("layernorm", "y", y, "x's shape");
  int64_t rows = gpu_tensor_numel(x) / (D ? D : 1);
  struct layernorm_push p = {.rows = (u32)rows, .cols = (u32)D, .eps = eps};
  struct gpu_arg args[] = {{x, 0}, {gamma, 0}, {beta, 0}, {y, 0}};
  uint32_t gx, gy;
  if (variant == LN_ROWS || (variant == LN_AUTO && ops_cpu_kernels(g))) { /* CPU devices: a row an invocation */
    uint32_t spec[] = {8};
    split_groups(g, div_up((uint64_t)rows, 8), &gx, &gy);
    return gpu_dispatch(g, KERNEL_layernorm_rows, spec, 1, args, 4, &p, sizeof p, gx, gy, 1);
  }
  bool sub = gpu_info(g)->subgroup_arithmetic;
  if (variant == LN_SUBGROUP && !sub)
    return status_set(STATUS_UNSUPPORTED, "layernorm: the device has no subgroup arithmetic in compute shaders");
  uint32_t spec[] = {WG};
  split_groups(g, (uint64_t)rows, &gx, &gy);
  bool use_sub = variant == LN_SUBGROUP || (variant == LN_AUTO && sub && !ops_cpu_kernels(g));
  return gpu_dispatch(g, use_sub ? KERNEL_layernorm_subgroup : KERNEL_layernorm, spec, 1, args, 4, &p, sizeof p, gx, gy, 1);
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
  return op_attention_variant(g, q, k, v, o, n_head, causal, scale, ATTN_AUTO);
}

enum status op_attention_variant(struct gpu *g, const struct gpu_tensor *q, const struct gpu_tensor *k,
                                 const struct gpu_tensor *v, const struct gpu_tensor *o, int n_head, bool causal,
                                 float scale, enum attention_variant variant) {
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
  if (D > 512) return status_set(STATUS_UNSUPPORTED, "attention: head width %lld > 512", (long long)D);
  if (Tk == 0) return status_set(STATUS_INVALID_ARGUMENT, "attention: no keys");
  struct attention_push p = {.batch = (u32)N, .q_len = (u32)Tq, .kv_len = (u32)Tk, .n_head = (u32)n_head,
                             .head_dim = (u32)D, .causal = causal, .scale = scale};
  /* the key loop is the only run-time loop of these kernels */
  if (Tk > KERNEL_LOOP_LIMIT)
    return status_set(STATUS_UNSUPPORTED, "attention over %lld keys: at most %d in one pass", (long long)Tk, KERNEL_LOOP_LIMIT);
  bool vec4_ok = D % 4 == 0 && gpu_texel_format_ok(g, VK_FORMAT_R32G32B32A32_SFLOAT) &&
                 (uint64_t)N * (Tq > Tk ? Tq : Tk) * W / 4 <= gpu_limits(g)->maxTexelBufferElements;
  struct gpu_arg targs[] = {{o, 0}, {q, VK_FORMAT_R32G32B32A32_SFLOAT}, {k, VK_FORMAT_R32G32B32A32_SFLOAT},
                            {v, VK_FORMAT_R32G32B32A32_SFLOAT}};
  if (variant == ATTN_AUTO) variant = !vec4_ok ? ATTN_GENERIC : !ops_cpu_kernels(g) && D <= 128 ? ATTN_FLASH : ATTN_VEC4;
  if (variant != ATTN_GENERIC && !vec4_ok)
    return status_set(STATUS_UNSUPPORTED, "attention: head width %lld is not a multiple of 4 (or too many texels)", (long long)D);
  if (variant == ATTN_FLASH) {
    if (D > 128) return status_set(STATUS_UNSUPPORTED, "attention: the flash kernel takes heads of up to 128, not %lld", (long long)D);
    /* key tiles: 2 x BK x D floats of shared memory, within 8 KiB of the 16 KiB every device has */
    uint32_t hd4 = (uint32_t)(D / 4), bk = 8192 / (32 * hd4), wg = 64;
    if (bk > 64) bk = 64;
    uint32_t spec[] = {wg, hd4, bk};
    return gpu_dispatch(g, KERNEL_attention_flash, spec, 3, targs, 4, &p, sizeof p, div_up(Tq, wg), (uint32_t)n_head,
                        (uint32_t)N);
  }
  if (variant == ATTN_VEC4) {
    /* lavapipe: several queries per invocation share each fetched key row; GPUs: one query per thread */
    uint32_t hd4 = (uint32_t)(D / 4), slice4 = hd4 <= 32 ? hd4 : 32, bq = ops_cpu_kernels(g) && D <= 128 ? 4 : 1, wg = 32;
    uint32_t spec[] = {wg, hd4, slice4, bq};
    return gpu_dispatch(g, KERNEL_attention_vec4, spec, 4, targs, 4, &p, sizeof p, div_up(div_up(Tq, bq), wg),
                        (uint32_t)n_head * div_up(hd4, slice4), (uint32_t)N);
  }
  uint32_t wg = 32, slice = D <= 128 ? (uint32_t)D : 128;
  uint32_t spec[] = {wg, (uint32_t)D, slice};
  struct gpu_arg args[] = {{q, 0}, {k, 0}, {v, 0}, {o, 0}};
  return gpu_dispatch(g, KERNEL_attention, spec, 3, args, 4, &p, sizeof p, div_up(Tq, wg),
                      (uint32_t)n_head * div_up(D, slice), (uint32_t)N);
}

enum status op_add(struct gpu *g, const struct gpu_tensor *a, const struct gpu_tensor *b,
                   const struct gpu_tensor *y) {
  int64_t n = gpu_tensor_numel(a);
  if (!is_f32(a) || !is_f32(b) || !is_f32(y) || gpu_tensor_numel(b) != n || gpu_tensor_numel(y) != n)
    return shape_error("add", "b or y", b, "a's shape, f32");
  struct eltwise_push p = {.n = (u32)n};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{a, 0}, {b, 0}, {y, 0}};
  uint32_t gx, gy;
  split_groups(g, div_up(n, WG), &gx, &gy);
  return gpu_dispatch(g, KERNEL_add, spec, 1, args, 3, &p, sizeof p, gx, gy, 1);
}

enum status op_activation(struct gpu *g, const struct gpu_tensor *x, const struct gpu_tensor *y, int act) {
  int64_t n = gpu_tensor_numel(x);
  if (!is_f32(x) || !is_f32(y) || gpu_tensor_numel(y) != n) return shape_error("activation", "y", y, "x's shape, f32");
  struct eltwise_push p = {.n = (u32)n, .act = (u32)act};
  uint32_t spec[] = {WG};
  struct gpu_arg args[] = {{x, 0}, {y, 0}};
  uint32_t gx, gy;
  split_groups(g, div_up(n, WG), &gx, &gy);
  return gpu_dispatch(g, KERNEL_activation, spec, 1, args, 2, &p, sizeof p, gx, gy, 1);
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

enum status op_peak16(struct gpu *g, const struct gpu_tensor *y, uint32_t groups, uint32_t iters) {
  if (!gpu_info(g)->shader_float16) return status_set(STATUS_UNSUPPORTED, "peak16: the device has no fp16 arithmetic");
  if (!is_f32(y) || gpu_tensor_numel(y) < (int64_t)groups * 256)
    return shape_error("peak16", "y", y, "[groups * 256] f32");
  struct peak_push p = {.iters = iters};
  uint32_t spec[] = {256};
  struct gpu_arg args[] = {{y, 0}};
  return gpu_dispatch(g, KERNEL_peak16, spec, 1, args, 1, &p, sizeof p, groups, 1, 1);
}
