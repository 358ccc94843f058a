/* Every kernel against its plain-C twin (tests/ref.c) on random inputs, at CLIP ViT-L/14 shapes
 * (T=77, D=768, NH=12, MLP 3072) and awkward ones (1, 7, 77, 769). Outputs are poisoned with NaN
 * before each run, so an element the kernel fails to write fails the comparison.
 * Tolerances: fp32 paths atol 1e-4 + rtol 1e-4 (values are O(1): weights scaled by 1/sqrt(K));
 * fp16 weights are compared against a reference on the same fp16-rounded weights (fp32
 * accumulation), so the same bound holds. Also the weight loader's registry and reload. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "half.h"
#include "ops.h"
#include "ref.h"
#include "safetensors.h"
#include "test.h"
#include "weight_loader.h"

#define NAN_BITS 0x7fc00000u

static struct gpu *g;
static struct gpu_arena *arena;

static struct gpu_tensor upload(enum dtype dt, int ndim, const int64_t *shape, const void *host) {
  struct gpu_tensor t;
  CHECK_OK(gpu_arena_alloc(arena, dt, ndim, shape, &t));
  size_t n = (size_t)gpu_tensor_numel(&t);
  if (dt == DT_F16) {
    uint16_t *h = malloc(n * 2 + 2);
    for (size_t i = 0; i < n; i++) h[i] = half_from_float(((const float *)host)[i]);
    CHECK_OK(gpu_upload(g, &t, h, n * 2));
    free(h);
  } else {
    CHECK_OK(gpu_upload(g, &t, host, n * 4));
  }
  return t;
}

static struct gpu_tensor output(int ndim, const int64_t *shape) {
  struct gpu_tensor t;
  CHECK_OK(gpu_arena_alloc(arena, DT_F32, ndim, shape, &t));
  return t;
}

static float *download(const struct gpu_tensor *t) {
  size_t n = (size_t)gpu_tensor_numel(t);
  float *h = malloc(n * 4 + 4);
  CHECK_OK(gpu_download(g, t, h, n * 4));
  return h;
}

static float *random_array(size_t n, unsigned seed, float scale) {
  float *p = malloc(n * sizeof *p + 4);
  test_random(p, n, seed);
  for (size_t i = 0; i < n; i++) p[i] *= scale;
  return p;
}

static void round_f16(float *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = half_to_float(half_from_float(p[i]));
}

static void test_linear(int64_t M, int64_t N, int64_t K, enum dtype wdt, bool bias, int act,
                        enum linear_variant variant) {
  gpu_arena_reset(arena, 0);
  float *x = random_array(M * K, 1, 1.0f), *w = random_array(N * K, 2, 1.0f / sqrtf((float)K));
  float *b = random_array(N, 3, 0.5f), *ref = malloc(M * N * 4 + 4);
  if (wdt == DT_F16) round_f16(w, N * K);
  struct gpu_tensor tx = upload(DT_F32, 2, (int64_t[]){M, K}, x), tw = upload(wdt, 2, (int64_t[]){N, K}, w);
  struct gpu_tensor tb = upload(DT_F32, 1, (int64_t[]){N}, b), ty = output(2, (int64_t[]){M, N});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  CHECK_OK(op_linear_variant(g, &tx, &tw, bias ? &tb : NULL, &ty, act, variant));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_linear(x, w, bias ? b : NULL, ref, M, N, K, act);
  char what[128];
  snprintf(what, sizeof what, "linear %s %lldx%lldx%lld %s%s act%d", variant == LINEAR_TILED ? "tiled" : variant == LINEAR_SHARED ? "shared" : "generic",
           (long long)M, (long long)N, (long long)K, dtype_name(wdt), bias ? " +b" : "", act);
  CHECK_CLOSE(what, got, ref, M * N, 1e-4, 1e-4);
  free(x), free(w), free(b), free(ref), free(got);
}

static void test_layernorm_v(int64_t rows, int64_t cols, enum layernorm_variant v);
/* both kernels on each shape, whichever the device would pick */
static void test_layernorm(int64_t rows, int64_t cols) {
  test_layernorm_v(rows, cols, LN_COOPERATIVE);
  test_layernorm_v(rows, cols, LN_ROWS);
  if (gpu_info(g)->subgroup_arithmetic) test_layernorm_v(rows, cols, LN_SUBGROUP);
}

static void test_layernorm_v(int64_t rows, int64_t cols, enum layernorm_variant v) {
  gpu_arena_reset(arena, 0);
  float *x = random_array(rows * cols, 4, 3.0f), *gm = random_array(cols, 5, 1.0f), *bt = random_array(cols, 6, 1.0f);
  for (int64_t i = 0; i < rows * cols; i++) x[i] += 0.5f; /* non-zero mean */
  float *ref = malloc(rows * cols * 4);
  struct gpu_tensor tx = upload(DT_F32, 2, (int64_t[]){rows, cols}, x);
  struct gpu_tensor tg = upload(DT_F32, 1, (int64_t[]){cols}, gm), tb = upload(DT_F32, 1, (int64_t[]){cols}, bt);
  struct gpu_tensor ty = output(2, (int64_t[]){rows, cols});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  CHECK_OK(op_layernorm_variant(g, &tx, &tg, &tb, &ty, 1e-5f, v));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_layernorm(x, gm, bt, ref, rows, cols, 1e-5f);
  char what[64];
  snprintf(what, sizeof what, "layernorm %s %lldx%lld", v == LN_ROWS ? "rows" : v == LN_SUBGROUP ? "subgroup" : "coop", (long long)rows, (long long)cols);
  CHECK_CLOSE(what, got, ref, rows * cols, 1e-4, 1e-4);
  free(x), free(gm), free(bt), free(ref), free(got);
}

static void test_embedding(int64_t N, int64_t T, int64_t D, int64_t vocab, enum dtype dt) {
  gpu_arena_reset(arena, 0);
  float *tok = random_array(vocab * D, 7, 0.05f), *pos = random_array(T * D, 8, 0.05f);
  if (dt == DT_F16) round_f16(tok, vocab * D), round_f16(pos, T * D);
  int32_t *ids = malloc(N * T * 4);
  for (int64_t i = 0; i < N * T; i++) ids[i] = (int32_t)((i * 7919 + 13) % vocab);
  ids[0] = (int32_t)vocab - 1;
  float *ref = malloc(N * T * D * 4);
  struct gpu_tensor ti;
  CHECK_OK(gpu_arena_alloc(arena, DT_I32, 2, (int64_t[]){N, T}, &ti));
  CHECK_OK(gpu_upload(g, &ti, ids, N * T * 4));
  struct gpu_tensor tt = upload(dt, 2, (int64_t[]){vocab, D}, tok), tp = upload(dt, 2, (int64_t[]){T, D}, pos);
  struct gpu_tensor ty = output(3, (int64_t[]){N, T, D});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  CHECK_OK(op_embedding(g, &ti, &tt, &tp, &ty));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_embedding(ids, tok, pos, ref, N, T, D);
  char what[64];
  snprintf(what, sizeof what, "embedding %lldx%lldx%lld %s", (long long)N, (long long)T, (long long)D, dtype_name(dt));
  CHECK_CLOSE(what, got, ref, N * T * D, 1e-6, 1e-6);
  free(tok), free(pos), free(ids), free(ref), free(got);
}

static void test_attention_v(int64_t N, int64_t Tq, int64_t Tk, int heads, int64_t D, bool causal, enum attention_variant av) {
  gpu_arena_reset(arena, 0);
  int64_t W = heads * D;
  float *q = random_array(N * Tq * W, 9, 2.0f), *k = random_array(N * Tk * W, 10, 2.0f);
  float *v = random_array(N * Tk * W, 11, 1.0f), *ref = malloc(N * Tq * W * 4);
  struct gpu_tensor tq = upload(DT_F32, 3, (int64_t[]){N, Tq, W}, q), tk = upload(DT_F32, 3, (int64_t[]){N, Tk, W}, k);
  struct gpu_tensor tv = upload(DT_F32, 3, (int64_t[]){N, Tk, W}, v), to = output(3, (int64_t[]){N, Tq, W});
  float scale = 1.0f / sqrtf((float)D);
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &to, NAN_BITS));
  CHECK_OK(op_attention_variant(g, &tq, &tk, &tv, &to, heads, causal, scale, av));
  CHECK_OK(gpu_submit(g));
  float *got = download(&to);
  ref_attention(q, k, v, ref, N, Tq, Tk, heads, D, causal, scale);
  char what[96];
  snprintf(what, sizeof what, "attention%s N%lld Tq%lld Tk%lld %dx%lld%s",
           av == ATTN_FLASH ? " flash" : av == ATTN_VEC4 ? " vec4" : av == ATTN_GENERIC ? " generic" : "", (long long)N,
           (long long)Tq, (long long)Tk, heads, (long long)D, causal ? " causal" : "");
  CHECK_CLOSE(what, got, ref, N * Tq * W, 1e-4, 1e-4);
  free(q), free(k), free(v), free(ref), free(got);
}

static void test_attention(int64_t N, int64_t Tq, int64_t Tk, int heads, int64_t D, bool causal) {
  test_attention_v(N, Tq, Tk, heads, D, causal, ATTN_AUTO);
}

static void test_eltwise(int64_t n) {
  gpu_arena_reset(arena, 0);
  float *a = random_array(n, 12, 4.0f), *b = random_array(n, 13, 4.0f), *ref = malloc(n * 4);
  struct gpu_tensor ta = upload(DT_F32, 1, (int64_t[]){n}, a), tb = upload(DT_F32, 1, (int64_t[]){n}, b);
  struct gpu_tensor ty = output(1, (int64_t[]){n});
  const int acts[] = {ACT_GELU, ACT_QUICK_GELU, ACT_SILU, ACT_NONE, ACT_RELU}; /* 3: add */
  const char *names[] = {"gelu", "quick_gelu", "silu", "add", "relu"};
  for (int i = 0; i < 5; i++) {
    CHECK_OK(gpu_begin(g));
    CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
    if (i == 3)
      CHECK_OK(op_add(g, &ta, &tb, &ty));
    else if (i == 0)
      CHECK_OK(op_gelu(g, &ta, &ty));
    else if (i == 1)
      CHECK_OK(op_quick_gelu(g, &ta, &ty));
    else
      CHECK_OK(op_activation(g, &ta, &ty, acts[i]));
    CHECK_OK(gpu_submit(g));
    float *got = download(&ty);
    if (i == 3)
      ref_add(a, b, ref, n);
    else
      ref_activation(a, ref, n, acts[i]);
    char what[64];
    snprintf(what, sizeof what, "%s n=%lld", names[i], (long long)n);
    CHECK_CLOSE(what, got, ref, n, 1e-6, 1e-5);
    free(got);
  }
  free(a), free(b), free(ref);
}

static void test_gather(int64_t n, int64_t rows, int64_t cols) {
  gpu_arena_reset(arena, 0);
  float *x = random_array(rows * cols, 14, 1.0f), *ref = malloc(n * cols * 4);
  int32_t *idx = malloc(n * 4);
  for (int64_t i = 0; i < n; i++) idx[i] = (int32_t)((i * 31 + 5) % rows);
  struct gpu_tensor ti, tx = upload(DT_F32, 2, (int64_t[]){rows, cols}, x), ty = output(2, (int64_t[]){n, cols});
  CHECK_OK(gpu_arena_alloc(arena, DT_I32, 1, (int64_t[]){n}, &ti));
  CHECK_OK(gpu_upload(g, &ti, idx, n * 4));
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  CHECK_OK(op_gather_rows(g, &ti, &tx, &ty));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_gather_rows(idx, x, ref, n, cols);
  char what[64];
  snprintf(what, sizeof what, "gather_rows %lld of %lldx%lld", (long long)n, (long long)rows, (long long)cols);
  CHECK_CLOSE(what, got, ref, n * cols, 0, 0);
  free(x), free(ref), free(idx), free(got);
}

/* weights [Co, C, k, k] -> the device layout [Co, Kp] (zero padded) */
static float *conv_layout(const float *w, int64_t Co, int64_t C, int k) {
  int64_t K = C * k * k, Kp = conv_weight_cols(C, k);
  float *d = calloc((size_t)(Co * Kp), sizeof *d);
  for (int64_t o = 0; o < Co; o++) memcpy(d + o * Kp, w + o * K, (size_t)K * sizeof *w);
  return d;
}

/* tokens: y [N, Ho * Wo, Co] through op_conv2d_tokens (1x1, no accumulation) */
static void test_conv_vt(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Co, int k, int stride, int pad, enum dtype wdt,
                         int64_t scratch_elems, bool per_image_bias, bool accumulate, enum conv_variant v, bool tokens) {
  gpu_arena_reset(arena, 0);
  int64_t Ho = conv_out_size(H, k, stride, pad), Wo = conv_out_size(W, k, stride, pad), out = N * Co * Ho * Wo;
  float *x = random_array(N * C * H * W, 15, 1.0f), *w = random_array(Co * C * k * k, 16, 1.0f / sqrtf((float)(C * k * k)));
  float *b = random_array(per_image_bias ? N * Co : Co, 17, 0.5f), *ref = malloc(out * 4 + 4), *y0 = random_array(out, 18, 1.0f);
  if (wdt == DT_F16) round_f16(w, Co * C * k * k);
  float *wd = conv_layout(w, Co, C, k);
  struct gpu_tensor tx = upload(DT_F32, 4, (int64_t[]){N, C, H, W}, x);
  struct gpu_tensor tw = upload(wdt, 2, (int64_t[]){Co, conv_weight_cols(C, k)}, wd);
  struct gpu_tensor tb = upload(DT_F32, 1, (int64_t[]){per_image_bias ? N * Co : Co}, b);
  struct gpu_tensor ty = tokens ? upload(DT_F32, 3, (int64_t[]){N, Ho * Wo, Co}, y0) : upload(DT_F32, 4, (int64_t[]){N, Co, Ho, Wo}, y0);
  struct gpu_tensor scratch = output(1, (int64_t[]){scratch_elems});
  CHECK_OK(gpu_begin(g));
  if (!accumulate) CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  if (tokens)
    CHECK_OK(op_conv2d_tokens(g, &tx, &tw, &tb, &ty, &scratch, v));
  else
    CHECK_OK(op_conv2d_variant(g, &tx, &tw, &tb, &ty, k, stride, pad, accumulate, &scratch, v));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  for (int64_t n = 0; n < N; n++)
    ref_conv2d(x + n * C * H * W, w, b + (per_image_bias ? n * Co : 0), ref + n * Co * Ho * Wo, 1, C, H, W, Co, k, stride, pad);
  if (accumulate)
    for (int64_t i = 0; i < out; i++) ref[i] += y0[i];
  if (tokens) { /* [N, Co, P] -> [N, P, Co] */
    int64_t P = Ho * Wo;
    float *t = malloc(out * 4 + 4);
    for (int64_t n = 0; n < N; n++)
      for (int64_t c = 0; c < Co; c++)
        for (int64_t q = 0; q < P; q++) t[(n * P + q) * Co + c] = ref[(n * Co + c) * P + q];
    free(ref), ref = t;
  }
  char what[128];
  snprintf(what, sizeof what, "conv2d%s%s %lldx%lldx%lldx%lld->%lld k%d s%d%s %s%s%s", tokens ? "_tokens" : "",
           v == CONV_WINOGRAD ? " winograd" : v == CONV_IM2COL ? " im2col" : v == CONV_IMPLICIT ? " implicit" : "",
           (long long)N, (long long)C, (long long)H,
           (long long)W, (long long)Co, k, stride, pad == CONV_PAD_BOTTOM_RIGHT ? " pad(0,1)" : "", dtype_name(wdt),
           per_image_bias ? " bias/img" : "", accumulate ? " +=" : "");
  /* Winograd F(4x4, 3x3) adds fp32 rounding in its transforms (entries up to 8 and 1/24): the
   * same 1e-4 bound still holds on these O(1) values; the measured worst is printed */
  CHECK_CLOSE(what, got, ref, out, 1e-4, 1e-4);
  free(x), free(w), free(wd), free(b), free(ref), free(y0), free(got);
}

static void test_conv_v(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Co, int k, int stride, int pad, enum dtype wdt,
                        int64_t scratch_elems, bool per_image_bias, bool accumulate, enum conv_variant v) {
  test_conv_vt(N, C, H, W, Co, k, stride, pad, wdt, scratch_elems, per_image_bias, accumulate, v, false);
}

static void test_conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Co, int k, int stride, int pad, enum dtype wdt,
                      int64_t scratch_elems, bool per_image_bias, bool accumulate) {
  test_conv_v(N, C, H, W, Co, k, stride, pad, wdt, scratch_elems, per_image_bias, accumulate, CONV_AUTO);
}

/* The status of a 3x3 convolution, padding 1, of 8 channels out over 1 x C x 8 x 8 forced through v. */
static enum status conv_forced(int64_t C, int stride, int64_t scratch_elems, enum conv_variant v) {
  gpu_arena_reset(arena, 0);
  struct gpu_tensor x, w, y, sc;
  int64_t Ho = conv_out_size(8, 3, stride, 1);
  CHECK_OK(gpu_arena_alloc(arena, DT_F32, 4, (int64_t[]){1, C, 8, 8}, &x));
  CHECK_OK(gpu_arena_alloc(arena, DT_F32, 2, (int64_t[]){8, conv_weight_cols(C, 3)}, &w));
  CHECK_OK(gpu_arena_alloc(arena, DT_F32, 4, (int64_t[]){1, 8, Ho, Ho}, &y));
  CHECK_OK(gpu_arena_alloc(arena, DT_F32, 1, (int64_t[]){scratch_elems}, &sc));
  CHECK_OK(gpu_begin(g));
  enum status s = op_conv2d_variant(g, &x, &w, NULL, &y, 3, stride, 1, false, &sc, v);
  CHECK_OK(gpu_submit(g));
  return s;
}

/* Winograd forced on shapes that exercise its edges, and refused where it does not apply. */
static void test_winograd(void) {
  test_conv_v(2, 32, 16, 24, 64, 3, 1, 1, DT_F16, 1 << 20, true, false, CONV_WINOGRAD);  /* bias per image */
  test_conv_v(1, 320, 8, 8, 320, 3, 1, 1, DT_F16, 4 << 20, false, true, CONV_WINOGRAD);  /* SD widths, += */
  test_conv_v(2, 4, 16, 16, 320, 3, 1, 1, DT_F32, 1 << 20, false, false, CONV_WINOGRAD); /* conv_in */
  test_conv_v(1, 8, 15, 9, 37, 3, 1, 1, DT_F32, 1 << 20, false, false, CONV_WINOGRAD);   /* partial tiles, odd Cout */
  test_conv_v(1, 12, 1, 1, 5, 3, 1, 1, DT_F32, 1 << 20, false, false, CONV_WINOGRAD);    /* one pixel */
  test_conv_v(2, 16, 13, 10, 24, 3, 1, 0, DT_F16, 1 << 20, true, true, CONV_WINOGRAD);   /* padding 0 (VAE bands) */
  test_conv_v(1, 8, 3, 3, 8, 3, 1, 0, DT_F32, 1 << 20, false, false, CONV_WINOGRAD);     /* padding 0, one pixel */
  test_conv_v(1, 16, 7, 5, 3, 3, 1, 1, DT_F16, 1 << 20, false, true, CONV_WINOGRAD);     /* Cout < 4 */
  /* scratch for 36 x (12 tiles x 32 + 32 x 32 + 32 x 12): chunks of tiles and blocks of channels */
  test_conv_v(2, 32, 30, 17, 96, 3, 1, 1, DT_F16, 36 * (12 * 32 + 32 * 32 + 32 * 12) + 3 * 64, true, true, CONV_WINOGRAD);
  /* The element-wise product both ways round (ops.c: whichever pads linear_tiled's blocks less),
   * each with chunks of tiles that cross from one image into the next: above, 80 tiles in chunks
   * of 12 as the product's rows; here 162 tiles in chunks of 41 as its columns */
  test_conv_v(2, 8, 36, 36, 12, 3, 1, 1, DT_F16, 36 * (12 * 8 + 48 * 8 + 12 * 48) + 3 * 64, true, true, CONV_WINOGRAD);
  test_conv_v(1, 512, 16, 16, 512, 3, 1, 1, DT_F16, 8 << 20, false, false, CONV_WINOGRAD); /* the VAE mid block */
  test_conv_v(1, 128, 64, 64, 128, 3, 1, 1, DT_F16, 8 << 20, false, false, CONV_AUTO);     /* the VAE at 256², auto */
  test_conv_v(1, 32, 16, 16, 32, 3, 1, 1, DT_F32, 1 << 20, false, false, CONV_IM2COL);
  CHECK_MSG(conv_forced(6, 1, 1 << 16, CONV_WINOGRAD) == STATUS_UNSUPPORTED, "Winograd refuses 6 channels");
  CHECK_MSG(conv_forced(8, 2, 1 << 16, CONV_WINOGRAD) == STATUS_UNSUPPORTED, "Winograd refuses stride 2");
  CHECK_MSG(conv_forced(8, 1, 1000, CONV_WINOGRAD) == STATUS_UNSUPPORTED, "Winograd refuses a scratch too small for one block");
}

/* Implicit GEMM forced: 1x1 (both device classes), every other kernel on GPU kernels (on CPU
 * kernels refused); the token output of a 1x1 convolution every way. */
static void test_implicit(void) {
  bool cpu = ops_cpu_kernels(g);
  test_conv_v(2, 96, 8, 12, 64, 1, 1, 0, DT_F16, 1 << 20, true, true, CONV_IMPLICIT); /* skip: bias per image, += */
  test_conv_v(1, 8, 5, 4, 13, 1, 1, 0, DT_F32, 1 << 20, false, false, CONV_IMPLICIT); /* odd Cout, 20 pixels */
  test_conv_v(3, 36, 20, 20, 20, 1, 1, 0, DT_F16, 1 << 20, false, false, CONV_IMPLICIT); /* 400 pixels: partial blocks */
  if (!cpu) {
    test_conv_v(2, 32, 16, 24, 64, 3, 1, 1, DT_F16, 1 << 20, true, false, CONV_IMPLICIT);
    test_conv_v(1, 320, 8, 8, 320, 3, 1, 1, DT_F16, 1 << 20, false, true, CONV_IMPLICIT);
    test_conv_v(2, 4, 16, 16, 320, 3, 1, 1, DT_F32, 1 << 20, false, false, CONV_IMPLICIT);   /* conv_in: K = 36 */
    test_conv_v(1, 3, 7, 7, 7, 3, 1, 1, DT_F32, 1 << 20, false, false, CONV_IMPLICIT);       /* K = 27: padded to 28 */
    test_conv_v(1, 64, 15, 9, 64, 3, 2, 1, DT_F32, 1 << 20, false, false, CONV_IMPLICIT);    /* downsample, odd sizes */
    test_conv_v(1, 8, 15, 9, 16, 3, 2, CONV_PAD_BOTTOM_RIGHT, DT_F32, 1 << 20, false, false, CONV_IMPLICIT);
    test_conv_v(2, 16, 13, 10, 24, 3, 1, 0, DT_F16, 1 << 20, true, true, CONV_IMPLICIT);     /* padding 0 */
    test_conv_v(1, 6, 9, 11, 5, 5, 2, 2, DT_F32, 1 << 20, false, false, CONV_IMPLICIT);      /* 5x5, C % 4 != 0 */
  } else {
    CHECK_MSG(conv_forced(8, 1, 1 << 16, CONV_IMPLICIT) == STATUS_UNSUPPORTED, "CPU kernels: implicit GEMM refuses a 3x3 convolution");
  }
  const enum conv_variant vs[] = {CONV_AUTO, CONV_IMPLICIT, CONV_IM2COL};
  for (int i = 0; i < 3; i++) {
    test_conv_vt(2, 32, 8, 6, 48, 1, 1, 0, DT_F16, 1 << 20, false, false, vs[i], true);    /* proj_in */
    test_conv_vt(1, 12, 3, 4, 7, 1, 1, 0, DT_F32, 1 << 20, false, false, vs[i], true);
  }
  test_conv_vt(2, 16, 9, 7, 16, 1, 1, 0, DT_F32, 16 * 10, true, false, CONV_IM2COL, true); /* chunked, bias per image */
}

static void test_group_norm_v(int64_t N, int64_t C, int64_t P, int groups, bool silu, enum group_norm_variant v) {
  gpu_arena_reset(arena, 0);
  float *x = random_array(N * C * P, 19, 2.0f), *gm = random_array(C, 20, 1.0f), *bt = random_array(C, 21, 1.0f);
  for (int64_t i = 0; i < N * C * P; i++) x[i] += 0.3f;
  float *ref = malloc(N * C * P * 4);
  struct gpu_tensor tx = upload(DT_F32, 3, (int64_t[]){N, C, P}, x), tg = upload(DT_F32, 1, (int64_t[]){C}, gm);
  struct gpu_tensor tb = upload(DT_F32, 1, (int64_t[]){C}, bt), ty = output(3, (int64_t[]){N, C, P});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  CHECK_OK(op_group_norm_variant(g, &tx, &tg, &tb, &ty, groups, 1e-6f, silu, v));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_group_norm(x, gm, bt, ref, N, C, P, groups, 1e-6f, silu);
  char what[96];
  snprintf(what, sizeof what, "group_norm%s %lldx%lldx%lld g%d%s", v == GN_SMALL ? " small" : v == GN_COOPERATIVE ? " coop" : v == GN_SUBGROUP ? " subgroup" : " auto",
           (long long)N, (long long)C, (long long)P, groups, silu ? " +silu" : "");
  CHECK_CLOSE(what, got, ref, N * C * P, 1e-4, 1e-4);
  free(x), free(gm), free(bt), free(ref), free(got);
}

/* every variant on each shape (forced, whatever op_group_norm would pick); the small kernel
 * refuses groups beyond its loop limit (llvmpipe would end its loops early: NaN outputs) */
static void test_group_norm(int64_t N, int64_t C, int64_t P, int groups, bool silu) {
  test_group_norm_v(N, C, P, groups, silu, GN_AUTO);
  test_group_norm_v(N, C, P, groups, silu, GN_COOPERATIVE);
  if (3 * (C / groups * P) + C / groups <= KERNEL_LOOP_LIMIT) {
    test_group_norm_v(N, C, P, groups, silu, GN_SMALL);
  } else {
    gpu_arena_reset(arena, 0);
    struct gpu_tensor x = output(3, (int64_t[]){N, C, P}), gb = output(1, (int64_t[]){C});
    CHECK_OK(gpu_begin(g));
    CHECK_MSG(op_group_norm_variant(g, &x, &gb, &gb, &x, groups, 1e-6f, silu, GN_SMALL) == STATUS_UNSUPPORTED,
              "group_norm: the small kernel refuses %lld values a group", (long long)(C / groups * P));
    CHECK_OK(gpu_submit(g));
  }
  if (gpu_info(g)->subgroup_arithmetic) test_group_norm_v(N, C, P, groups, silu, GN_SUBGROUP);
}

/* The peak-FLOPs probes against the same chains in C: fp32 (fmaf, bound 1e-5) and, where the
 * device has fp16 arithmetic, fp16 (each step rounded to half; x 0.5 + 0.25, so an exact product
 * rounds the same fused or not; bound 1e-3); 2 groups, 37 and 5 iterations. */
static float half_round(float x) { return half_to_float(half_from_float(x)); }

static void test_peak(void) {
  const uint32_t groups = 2, iters = 37, iters16 = 5, n = groups * 256; /* 5: the start still shows */
  float ref[512], ref16[512];
  for (uint32_t i = 0; i < n; i++) {
    float s = (float)i * 1e-9f, a[8];
    for (int c = 0; c < 8; c++) a[c] = c ? s + 0.1f * (float)c : s;
    /* the shader's vec4 chains hold the same value in each component */
    for (uint32_t k = 0; k < iters; k++)
      for (int c = 0; c < 8; c++) a[c] = fmaf(a[c], 0.999999f, 1e-7f);
    float t = a[0];
    for (int c = 1; c < 8; c++) t += a[c];
    ref[i] = t + t + t + t; /* t.x + t.y + t.z + t.w, in that order */
    float h = half_round((float)(i % 64u) * 1e-3f), m = 0.5f, cc = 0.25f, b[8];
    for (int c = 0; c < 8; c++) b[c] = c ? half_round(h + half_round(0.1f * (float)c)) : h;
    for (uint32_t k = 0; k < iters16; k++)
      for (int c = 0; c < 8; c++) b[c] = half_round(fmaf(b[c], m, cc));
    float t16 = 0;
    for (int c = 0; c < 8; c++) t16 += b[c];
    ref16[i] = 4 * t16;
  }
  struct gpu_tensor y = output(1, (int64_t[]){n});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(op_peak(g, &y, groups, iters));
  CHECK_OK(gpu_submit(g));
  float *got = download(&y);
  CHECK_CLOSE("peak (fp32 FMA chains)", got, ref, n, 1e-5, 1e-5);
  free(got);
  if (gpu_info(g)->shader_float16) {
    CHECK_OK(gpu_begin(g));
    CHECK_OK(op_peak16(g, &y, groups, iters16));
    CHECK_OK(gpu_submit(g));
    got = download(&y);
    CHECK_CLOSE("peak16 (fp16 FMA chains)", got, ref16, n, 1e-3, 1e-3);
    free(got);
  } else {
    CHECK_OK(gpu_begin(g));
    CHECK_MSG(op_peak16(g, &y, groups, iters) == STATUS_UNSUPPORTED, "peak16 without shaderFloat16 is not refused");
    CHECK_OK(gpu_submit(g));
    printf("  peak16: no fp16 arithmetic on this device (refused)\n");
  }
}

static void test_small_ops(void) {
  gpu_arena_reset(arena, 0);
  /* upsample */
  int64_t planes = 7, H = 3, W = 5;
  float *x = random_array(planes * H * W, 22, 1.0f), *ref = malloc(planes * 4 * H * W * 4);
  struct gpu_tensor tx = upload(DT_F32, 4, (int64_t[]){1, planes, H, W}, x), ty = output(4, (int64_t[]){1, planes, 2 * H, 2 * W});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &ty, NAN_BITS));
  CHECK_OK(op_upsample2x(g, &tx, &ty));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_upsample2x(x, ref, planes, H, W);
  CHECK_CLOSE("upsample2x 7x3x5", got, ref, planes * 4 * H * W, 0, 0);
  free(x), free(ref), free(got);
  /* concat */
  float *a = random_array(2 * 3 * 7, 23, 1.0f), *b = random_array(2 * 5 * 7, 24, 1.0f), *cref = malloc(2 * 8 * 7 * 4);
  struct gpu_tensor ta = upload(DT_F32, 4, (int64_t[]){2, 3, 7, 1}, a), tb = upload(DT_F32, 4, (int64_t[]){2, 5, 7, 1}, b);
  struct gpu_tensor tc = output(4, (int64_t[]){2, 8, 7, 1});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &tc, NAN_BITS));
  CHECK_OK(op_concat(g, &ta, &tb, &tc));
  CHECK_OK(gpu_submit(g));
  got = download(&tc);
  for (int n = 0; n < 2; n++) {
    memcpy(cref + n * 56, a + n * 21, 21 * 4);
    memcpy(cref + n * 56 + 21, b + n * 35, 35 * 4);
  }
  CHECK_CLOSE("concat [2,3,7]+[2,5,7]", got, cref, 2 * 56, 0, 0);
  { /* an SDXL-at-1024² concat: more than 65535 work groups an image */
    gpu_arena_reset(arena, 0);
    const int64_t N = 2, A = 40, B = 24, P = 128 * 128;
    float *xa = random_array(N * A * P, 21, 1.0f), *xb = random_array(N * B * P, 22, 1.0f), *r = malloc(N * (A + B) * P * 4);
    struct gpu_tensor la = upload(DT_F32, 3, (int64_t[]){N, A, P}, xa), lb = upload(DT_F32, 3, (int64_t[]){N, B, P}, xb);
    struct gpu_tensor lc = output(3, (int64_t[]){N, A + B, P});
    CHECK_OK(gpu_begin(g));
    CHECK_OK(op_concat(g, &la, &lb, &lc));
    CHECK_OK(gpu_submit(g));
    float *lg = download(&lc);
    for (int64_t n = 0; n < N; n++) {
      memcpy(r + n * (A + B) * P, xa + n * A * P, A * P * 4);
      memcpy(r + n * (A + B) * P + A * P, xb + n * B * P, B * P * 4);
    }
    CHECK_CLOSE("concat [2,40,16384]+[2,24,16384]", lg, r, N * (A + B) * P, 0, 0);
    free(xa), free(xb), free(r), free(lg);
  }
  free(a), free(b), free(cref), free(got);
  /* timestep embedding, fractional and large t */
  float t[3] = {999.0f, 261.5f, 1.0f};
  float *eref = malloc(3 * 320 * 4);
  struct gpu_tensor tt = upload(DT_F32, 1, (int64_t[]){3}, t), te = output(2, (int64_t[]){3, 320});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &te, NAN_BITS));
  CHECK_OK(op_timestep_embedding(g, &tt, &te, 10000.0f));
  CHECK_OK(gpu_submit(g));
  got = download(&te);
  ref_timestep_embedding(t, eref, 3, 320, 10000.0);
  /* the angle t*f is formed in fp32 (as ldm does): |t f| <= 1000 loses up to 6e-5 to rounding */
  CHECK_CLOSE("timestep_embedding 3x320", got, eref, 3 * 320, 2e-4, 0);
  free(eref), free(got);
  /* geglu */
  float *gx = random_array(7 * 2 * 769, 25, 3.0f), *gref = malloc(7 * 769 * 4);
  struct gpu_tensor tgx = upload(DT_F32, 2, (int64_t[]){7, 2 * 769}, gx), tgy = output(2, (int64_t[]){7, 769});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &tgy, NAN_BITS));
  CHECK_OK(op_geglu(g, &tgx, &tgy));
  CHECK_OK(gpu_submit(g));
  got = download(&tgy);
  ref_geglu(gx, gref, 7, 769);
  CHECK_CLOSE("geglu 7x769", got, gref, 7 * 769, 1e-5, 1e-5);
  free(gx), free(gref), free(got);
  /* more rows than 65535 work groups */
  gpu_arena_reset(arena, 0);
  const int64_t GR = 70001, GF = 5;
  gx = random_array(GR * 2 * GF, 26, 3.0f), gref = malloc(GR * GF * 4);
  tgx = upload(DT_F32, 2, (int64_t[]){GR, 2 * GF}, gx), tgy = output(2, (int64_t[]){GR, GF});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &tgy, NAN_BITS));
  CHECK_OK(op_geglu(g, &tgx, &tgy));
  CHECK_OK(gpu_submit(g));
  got = download(&tgy);
  ref_geglu(gx, gref, GR, GF);
  CHECK_CLOSE("geglu 70001x5", got, gref, GR * GF, 1e-5, 1e-5);
  free(gx), free(gref), free(got);
}

static void test_residual_and_nchw(void) {
  gpu_arena_reset(arena, 0);
  int64_t M = 77, K = 64, N = 40;
  float *x = random_array(M * K, 26, 1.0f), *w = random_array(N * K, 27, 0.125f), *b = random_array(N, 28, 0.5f);
  float *y0 = random_array(M * N, 29, 1.0f), *ref = malloc(M * N * 4);
  struct gpu_tensor tx = upload(DT_F32, 2, (int64_t[]){M, K}, x), tw = upload(DT_F16, 2, (int64_t[]){N, K}, w);
  struct gpu_tensor tb = upload(DT_F32, 1, (int64_t[]){N}, b), ty = upload(DT_F32, 2, (int64_t[]){M, N}, y0);
  round_f16(w, N * K);
  CHECK_OK(gpu_begin(g));
  CHECK_OK(op_linear_residual(g, &tx, &tw, &tb, &ty));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_linear(x, w, b, ref, M, N, K, ACT_NONE);
  for (int64_t i = 0; i < M * N; i++) ref[i] += y0[i];
  CHECK_CLOSE("linear residual 77x40x64 f16", got, ref, M * N, 1e-4, 1e-4);
  free(got);
  /* tokens [2, P, C] -> NCHW [2, Co, P] with w [Co, C] */
  int64_t P = 77, C = 64, Co = 40;
  float *tok = random_array(2 * P * C, 30, 1.0f), *nref = malloc(2 * Co * P * 4), *lin = malloc(P * Co * 4);
  struct gpu_tensor tt = upload(DT_F32, 3, (int64_t[]){2, P, C}, tok), tn = output(3, (int64_t[]){2, Co, P});
  CHECK_OK(gpu_begin(g));
  CHECK_OK(gpu_fill(g, &tn, NAN_BITS));
  CHECK_OK(op_matmul_nchw(g, &tw, &tt, &tb, &tn, false));
  CHECK_OK(gpu_submit(g));
  got = download(&tn);
  for (int n = 0; n < 2; n++) {
    ref_linear(tok + n * P * C, w, b, lin, P, Co, C, ACT_NONE);
    for (int64_t p = 0; p < P; p++)
      for (int64_t c = 0; c < Co; c++) nref[(n * Co + c) * P + p] = lin[p * Co + c];
  }
  CHECK_CLOSE("matmul_nchw 2x77x64 -> 2x40x77", got, nref, 2 * Co * P, 1e-4, 1e-4);
  free(x), free(w), free(b), free(y0), free(ref), free(got), free(tok), free(nref), free(lin);
}

/* an arena beyond the device's largest buffer is a row of blocks (bigG's fp32 weights on lavapipe):
 * forced here with a 1 MiB limit; a linear op reads tensors of three different blocks */
static void test_multiblock_arena(void) {
  struct gpu_arena *saved = arena;
  gpu_set_block_limit(g, 1 << 20);
  CHECK_OK(gpu_arena_create(g, 3u << 20, "multi-block test", &arena));
  const int64_t M = 77, N = 448, K = 512;
  float *x = random_array(M * K, 11, 1.0f), *w = random_array(N * K, 12, 1.0f / sqrtf((float)K));
  float *b = random_array(N, 13, 0.5f), *ref = malloc(M * N * 4);
  struct gpu_tensor tx = upload(DT_F32, 2, (int64_t[]){M, K}, x);     /* 154 KiB: block 0 */
  struct gpu_tensor tw = upload(DT_F32, 2, (int64_t[]){N, K}, w);     /* 896 KiB: does not fit, block 1 */
  struct gpu_tensor tb = upload(DT_F32, 1, (int64_t[]){N}, b), ty = output(2, (int64_t[]){M, N});
  struct gpu_tensor big[4];
  for (int i = 0; i < 4; i++) CHECK_OK(gpu_arena_alloc(arena, DT_F32, 1, (int64_t[]){200000}, &big[i])); /* grows past 3 MiB */
  CHECK(tx.buf != tw.buf && big[0].buf != big[3].buf);
  CHECK(gpu_arena_used(arena) > (3u << 20));
  CHECK_OK(gpu_begin(g));
  CHECK_OK(op_linear(g, &tx, &tw, &tb, &ty, ACT_NONE));
  CHECK_OK(gpu_submit(g));
  float *got = download(&ty);
  ref_linear(x, w, b, ref, M, N, K, ACT_NONE);
  CHECK_CLOSE("linear across arena blocks", got, ref, M * N, 1e-4, 1e-4);
  struct gpu_tensor huge;
  CHECK(gpu_arena_alloc(arena, DT_F32, 1, (int64_t[]){300000}, &huge) == STATUS_OUT_OF_MEMORY); /* > one block */
  gpu_arena_reset(arena, 0); /* reuse from the start: the same first block */
  struct gpu_tensor again;
  CHECK_OK(gpu_arena_alloc(arena, DT_F32, 2, (int64_t[]){M, K}, &again));
  CHECK(again.buf == tx.buf && again.offset == 0);
  gpu_arena_destroy(arena);
  gpu_set_block_limit(g, 0);
  arena = saved;
  free(x), free(w), free(b), free(ref), free(got);
}

static void test_errors(void) {
  gpu_arena_reset(arena, 0);
  struct gpu_tensor x = output(2, (int64_t[]){7, 8}), w = output(2, (int64_t[]){5, 9}), y = output(2, (int64_t[]){7, 5});
  CHECK_OK(gpu_begin(g));
  CHECK(op_linear(g, &x, &w, NULL, &y, ACT_NONE) == STATUS_INVALID_ARGUMENT);
  CHECK(strstr(status_message(), "[7, 8]") != NULL);
  CHECK_OK(gpu_submit(g));
  /* dispatch outside a command buffer */
  struct gpu_tensor w2 = output(2, (int64_t[]){5, 8});
  CHECK(op_linear(g, &x, &w2, NULL, &y, ACT_NONE) == STATUS_INVALID_ARGUMENT);
  /* buffers beyond the device limits are errors, not undefined behaviour */
  struct gpu_buffer *b = NULL;
  VkDeviceSize too_big = gpu_info(g)->max_allocation + 1;
  CHECK(gpu_buffer_create(g, too_big, "test buffer", &b) == STATUS_OUT_OF_MEMORY);
  CHECK(strstr(status_message(), "maxMemoryAllocationSize") != NULL);
  CHECK(b == NULL);
  /* the dispatch contract (core/kernels.c): every kernel's argument count and push struct */
  for (int k = 0; k < KERNEL_COUNT; k++) {
    const struct kernel_code *kc = kernel_code((enum kernel_id)k);
    CHECK_MSG(kc && kc->code && kc->bindings > 0 && kc->push_size > 0 && kc->push_size <= GPU_PUSH_SIZE,
              "kernel %d has no contract", k);
  }
  struct eltwise_push p = {.n = 7, .act = ACT_NONE};
  struct gpu_arg args[3] = {{&x, 0}, {&x, 0}, {&y, 0}};
  CHECK_OK(gpu_begin(g));
  CHECK(gpu_dispatch(g, KERNEL_add, (uint32_t[]){64}, 1, args, 2, &p, sizeof p, 1, 1, 1) == STATUS_INVALID_ARGUMENT);
  CHECK_MSG(strstr(status_message(), "add: dispatched with 2 arguments") != NULL, "%s", status_message());
  struct linear_push lp = {0};
  CHECK(gpu_dispatch(g, KERNEL_add, (uint32_t[]){64}, 1, args, 3, &lp, sizeof lp, 1, 1, 1) == STATUS_INVALID_ARGUMENT);
  CHECK_OK(gpu_submit(g));
}

/* The weight registry and weight_reload (the ground LoRA merging stands on): a conv in fp16, a
 * transposed linear and packed rows of a tensor, loaded through weight_load_model with a registry
 * capturing; a reload with a difference gives checkpoint + difference in the device layout and
 * precision; a reload without one restores the first load's bits exactly. */
struct reload_model {
  struct gpu_tensor conv, lin, rows;
};
static enum status reload_load(struct weight_loader *l, void *model) {
  struct reload_model *m = model;
  enum status s = weight_load(l, "a.weight", 4, (int64_t[]){6, 3, 3, 3}, 0, 0, WL_CONV, DT_F16, &m->conv);
  if (!s) s = weight_load(l, "b.weight", 2, (int64_t[]){5, 7}, 0, 0, WL_TRANSPOSE, DT_F32, &m->lin);
  if (!s) s = weight_load(l, "c.in_proj_weight", 2, (int64_t[]){9, 4}, 3, 3, WL_PLAIN, DT_F32, &m->rows);
  return s;
}

static float *download_any(const struct gpu_tensor *t) {
  size_t n = (size_t)gpu_tensor_numel(t);
  float *out = malloc(n * 4);
  if (t->dtype == DT_F16) {
    uint16_t *h = malloc(n * 2);
    CHECK_OK(gpu_download(g, t, h, n * 2));
    for (size_t i = 0; i < n; i++) out[i] = half_to_float(h[i]);
    free(h);
  } else {
    CHECK_OK(gpu_download(g, t, out, n * 4));
  }
  return out;
}

static void test_weight_reload(void) {
  char path[128];
  snprintf(path, sizeof path, "/tmp/vkd_test_reload_%ld.safetensors", (long)getpid());
  float *a = random_array(6 * 27, 31, 1.0f), *b = random_array(35, 32, 1.0f), *c = random_array(36, 33, 1.0f);
  struct st_writer *w = NULL;
  CHECK_OK(st_writer_create(&w));
  CHECK_OK(st_writer_add(w, "a.weight", ST_F32, 4, (int64_t[]){6, 3, 3, 3}, a));
  CHECK_OK(st_writer_add(w, "b.weight", ST_F32, 2, (int64_t[]){5, 7}, b));
  CHECK_OK(st_writer_add(w, "c.in_proj_weight", ST_F32, 2, (int64_t[]){9, 4}, c));
  CHECK_OK(st_writer_finish(w, path));
  st_writer_destroy(w);
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(path, &st));
  struct reload_model m = {0};
  struct weight_registry reg = {0};
  struct gpu_arena *wa = NULL;
  weight_registry_capture(&reg);
  CHECK_OK(weight_load_model(g, st, "", "reload test", reload_load, NULL, &m, &wa));
  weight_registry_capture(NULL);
  CHECK_MSG(reg.n == 3 && !strcmp(reg.e[0].key, "a.weight") && !strcmp(reg.e[2].key, "c.in_proj_weight") &&
                reg.e[2].row0 == 3 && reg.e[2].rows == 3 && reg.e[1].layout == WL_TRANSPOSE && reg.e[0].dt == DT_F16,
            "registry: %d entries", reg.n);
  float *before[3] = {download_any(&m.conv), download_any(&m.lin), download_any(&m.rows)};
  float *da = random_array(6 * 27, 34, 0.1f), *db = random_array(35, 35, 0.1f), *dc = random_array(12, 36, 0.1f);
  const float *deltas[3] = {da, db, dc};
  struct weight_loader rl = {.g = g, .st = st};
  for (int i = 0; i < 3 && reg.n == 3; i++) CHECK_OK(weight_reload(&rl, &reg.e[i], deltas[i]));
  float *after[3] = {download_any(&m.conv), download_any(&m.lin), download_any(&m.rows)};
  /* expected, in the device layouts: conv [6, 28] padded with a zero column; linear transposed; rows 3..5 */
  float ea[6 * 28], eb[35], ec[12];
  for (int o = 0; o < 6; o++)
    for (int k = 0; k < 28; k++) ea[o * 28 + k] = k < 27 ? a[o * 27 + k] + da[o * 27 + k] : 0;
  for (int r = 0; r < 5; r++)
    for (int k = 0; k < 7; k++) eb[k * 5 + r] = b[r * 7 + k] + db[r * 7 + k];
  for (int i = 0; i < 12; i++) ec[i] = c[12 + i] + dc[i];
  CHECK_CLOSE("weight_reload: fp16 conv + delta", after[0], ea, 6 * 28, 2e-3, 2e-3);
  CHECK_CLOSE("weight_reload: transposed linear + delta", after[1], eb, 35, 0, 0);
  CHECK_CLOSE("weight_reload: packed rows + delta", after[2], ec, 12, 0, 0);
  for (int i = 0; i < 3 && reg.n == 3; i++) CHECK_OK(weight_reload(&rl, &reg.e[i], NULL));
  weight_loader_free(&rl);
  safetensors_close(st);
  size_t ns[3] = {6 * 28, 35, 12};
  for (int i = 0; i < 3; i++) {
    float *again = download_any(i == 0 ? &m.conv : i == 1 ? &m.lin : &m.rows);
    CHECK_MSG(!memcmp(again, before[i], ns[i] * 4), "weight_reload(NULL) of entry %d does not restore the first load", i);
    free(again), free(before[i]), free(after[i]);
  }
  weight_registry_free(&reg);
  gpu_arena_destroy(wa);
  unlink(path);
  free(a), free(b), free(c), free(da), free(db), free(dc);
}

/* The on-disk pipeline cache (core/gpu_cache.c): a device that creates pipelines writes its file,
 * named by the device, starting with a Vulkan cache header for it; a damaged file is ignored and
 * replaced; VKDIFFUSION_PIPELINE_CACHE=0 writes nothing. */
static int cache_files(const char *dir, char *name, size_t n) {
  DIR *d = opendir(dir);
  int k = 0;
  for (struct dirent *e; d && (e = readdir(d));)
    if (!strncmp(e->d_name, "pipelines-", 10)) k++, snprintf(name, n, "%s/%s", dir, e->d_name);
  if (d) closedir(d);
  return k;
}

static void cache_round(const char *dir) {
  struct gpu *c = NULL;
  CHECK_OK(gpu_create(&(struct gpu_options){.device_index = -1, .validation = 1, .profile = 0}, &c));
  if (!c) return;
  struct gpu_arena *a = NULL;
  CHECK_OK(gpu_arena_create(c, 1 << 16, "cache test", &a));
  struct gpu_tensor x, y;
  CHECK_OK(gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){64}, &x));
  CHECK_OK(gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){64}, &y));
  float v[64];
  test_random(v, 64, 5);
  CHECK_OK(gpu_upload(c, &x, v, sizeof v));
  CHECK_OK(gpu_begin(c));
  CHECK_OK(op_add(c, &x, &x, &y));
  CHECK_OK(gpu_submit(c));
  int made = 0;
  gpu_pipeline_stats(c, &made, NULL, NULL);
  CHECK_MSG(made >= 1, "no pipeline created (%d)", made);
  gpu_arena_destroy(a);
  const char *last;
  CHECK_MSG(gpu_validation_count(c, &last) == 0, "validation: %s", last ? last : "");
  gpu_destroy(c);
  (void)dir;
}

static void test_pipeline_cache(void) {
  char dir[] = "/tmp/vkd-cache-XXXXXX", file[600];
  CHECK(mkdtemp(dir) != NULL);
  setenv("VKDIFFUSION_CACHE_DIR", dir, 1);
  cache_round(dir);
  CHECK_MSG(cache_files(dir, file, sizeof file) == 1, "no pipeline cache file in %s", dir);
  size_t len = 0;
  unsigned char *b = (unsigned char *)test_read_file(file, &len);
  CHECK_MSG(b && len >= 32 && b[4] == 1 && b[5] == 0 && b[0] >= 32, "%s: not a Vulkan pipeline cache (%zu bytes)", file, len);
  free(b);
  test_write_text(dir, strrchr(file, '/') + 1, "damaged: not a pipeline cache at all, and too short for one........");
  cache_round(dir); /* ignored, then replaced */
  b = (unsigned char *)test_read_file(file, &len);
  CHECK_MSG(b && len >= 32 && b[4] == 1 && b[0] >= 32, "the damaged cache was not replaced (%zu bytes)", len);
  free(b);
  unlink(file);
  setenv("VKDIFFUSION_PIPELINE_CACHE", "0", 1);
  cache_round(dir);
  CHECK_MSG(cache_files(dir, file, sizeof file) == 0, "VKDIFFUSION_PIPELINE_CACHE=0 wrote %s", file);
  unsetenv("VKDIFFUSION_PIPELINE_CACHE");
  unsetenv("VKDIFFUSION_CACHE_DIR");
  rmdir(dir);
  printf("  pipeline cache: written, damaged one replaced, off with VKDIFFUSION_PIPELINE_CACHE=0\n");
}

/* F16 file -> F16 device: the bits as stored (no round trip through f32), in each layout, read in
 * place from the file's mapping or, when the data starts at an odd byte, through a copy; the same as
 * converting would give; a NaN or an infinity in the rows used is an error naming the tensor and the
 * element (one past the first 4096-value block of the finiteness scan too). */
struct raw_model {
  struct gpu_tensor conv, lin, rows, big;
};
static enum status raw_load(struct weight_loader *l, void *model) {
  struct raw_model *m = model;
  enum status s = weight_load(l, "a.weight", 4, (int64_t[]){6, 3, 3, 3}, 0, 0, WL_CONV, DT_F16, &m->conv);
  if (!s) s = weight_load(l, "b.weight", 2, (int64_t[]){5, 7}, 0, 0, WL_TRANSPOSE, DT_F16, &m->lin);
  if (!s) s = weight_load(l, "c.in_proj_weight", 2, (int64_t[]){9, 4}, 3, 3, WL_PLAIN, DT_F16, &m->rows);
  if (!s) s = weight_load(l, "d.weight", 4, (int64_t[]){20, 100, 3, 3}, 0, 0, WL_CONV, DT_F16, &m->big);
  return s;
}

/* the safetensors file at `from` written to `to` with one more byte of header (a space in the JSON),
 * so that its data starts at an odd offset */
static void shift_header(const char *from, const char *to) {
  size_t len = 0;
  unsigned char *b = (unsigned char *)test_read_file(from, &len);
  CHECK(b && len > 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
  FILE *f = fopen(to, "wb");
  CHECK(f != NULL);
  if (!b || !f) return;
  unsigned char h[8];
  for (int i = 0; i < 8; i++) h[i] = (unsigned char)((n + 1) >> (8 * i));
  fwrite(h, 1, 8, f);
  fwrite(b + 8, 1, (size_t)n, f);
  fputc(' ', f);
  fwrite(b + 8 + n, 1, len - 8 - (size_t)n, f);
  fclose(f);
  free(b);
}

static void test_raw16(void) {
  char path[128], odd[140];
  snprintf(path, sizeof path, "/tmp/vkd_test_raw16_%ld.safetensors", (long)getpid());
  snprintf(odd, sizeof odd, "%s.odd", path);
  enum { NBIG = 20 * 900 };
  float *f[4] = {random_array(6 * 27, 41, 1.0f), random_array(35, 42, 1.0f), random_array(36, 43, 1.0f),
                 random_array(NBIG, 44, 1.0f)};
  uint16_t *h[4];
  int ns[4] = {162, 35, 36, NBIG};
  for (int k = 0; k < 4; k++) {
    h[k] = malloc((size_t)ns[k] * 2);
    for (int i = 0; i < ns[k]; i++) h[k][i] = half_from_float(f[k][i]);
  }
  for (int pass = 0; pass < 3; pass++) {
    if (pass == 1) h[2][3 * 4 + 5] = 0x7e00; /* a NaN in row 4, which the model reads */
    if (pass == 2) h[2][3 * 4 + 5] = half_from_float(0.5f), h[3][9001] = 0xfc00; /* -inf in the third block */
    struct st_writer *w = NULL;
    CHECK_OK(st_writer_create(&w));
    st_writer_add(w, "a.weight", ST_F16, 4, (int64_t[]){6, 3, 3, 3}, h[0]);
    st_writer_add(w, "b.weight", ST_F16, 2, (int64_t[]){5, 7}, h[1]);
    st_writer_add(w, "c.in_proj_weight", ST_F16, 2, (int64_t[]){9, 4}, h[2]);
    st_writer_add(w, "d.weight", ST_F16, 4, (int64_t[]){20, 100, 3, 3}, h[3]);
    CHECK_OK(st_writer_finish(w, path));
    st_writer_destroy(w);
    shift_header(path, odd);
    for (int o = 0; o < 2; o++) {
      struct safetensors *st = NULL;
      CHECK_OK(safetensors_open(o ? odd : path, &st));
      if (!st) continue;
      const struct st_tensor *ta = safetensors_find(st, "a.weight");
      CHECK_MSG(ta && (uintptr_t)safetensors_data(st, ta) % 2 == (uintptr_t)o, "file %d: data alignment", o);
      struct raw_model m = {0};
      struct gpu_arena *wa = NULL;
      enum status ls = weight_load_model(g, st, "", "raw16 test", raw_load, NULL, &m, &wa);
      if (pass == 1) {
        CHECK_MSG(ls == STATUS_NUMERIC && strstr(status_message(), "c.in_proj_weight") && strstr(status_message(), "element 17"),
                  "a NaN in an F16 tensor: %s", status_message());
      } else if (pass == 2) {
        CHECK_MSG(ls == STATUS_NUMERIC && strstr(status_message(), "d.weight") && strstr(status_message(), "element 9001"),
                  "an infinity in an F16 tensor: %s", status_message());
      } else {
        CHECK_OK(ls);
        static uint16_t got[NBIG], want[NBIG];
        const struct gpu_tensor *t[4] = {&m.conv, &m.lin, &m.rows, &m.big};
        size_t n[4] = {168, 35, 12, NBIG};
        for (int k = 0; k < 4; k++) {
          if (k == 0)
            for (int r = 0; r < 6; r++)
              for (int c = 0; c < 28; c++) want[r * 28 + c] = c < 27 ? h[0][r * 27 + c] : 0;
          if (k == 1)
            for (int r = 0; r < 5; r++)
              for (int c = 0; c < 7; c++) want[c * 5 + r] = h[1][r * 7 + c];
          if (k == 2) memcpy(want, h[2] + 12, 12 * 2);
          if (k == 3) memcpy(want, h[3], NBIG * 2);
          CHECK_OK(gpu_download(g, t[k], got, n[k] * 2));
          CHECK_MSG(t[k]->dtype == DT_F16 && !memcmp(got, want, n[k] * 2), "F16 -> F16 load of tensor %d (file %d): other bits",
                    k, o);
        }
      }
      gpu_arena_destroy(wa);
      safetensors_close(st);
    }
  }
  unlink(path), unlink(odd);
  for (int k = 0; k < 4; k++) free(f[k]), free(h[k]);
}

/* Transfers: a memcpy where the device memory is mapped, the staging buffer otherwise (forced with
 * VKDIFFUSION_TRANSFER=staged, as on a discrete GPU): the weight-loading tests on a device that
 * stages, uploads and downloads beyond one staging buffer (32 MiB) at an offset, and a bad value of
 * the variable refused. */
static void test_transfers(void) {
  struct gpu *direct = g, *staged = NULL;
  setenv("VKDIFFUSION_TRANSFER", "sideways", 1);
  CHECK_MSG(gpu_create(&(struct gpu_options){.device_index = -1, .validation = 1, .profile = 0}, &staged) ==
                    STATUS_INVALID_ARGUMENT &&
                strstr(status_message(), "VKDIFFUSION_TRANSFER"),
            "VKDIFFUSION_TRANSFER=sideways: %s", status_message());
  setenv("VKDIFFUSION_TRANSFER", "staged", 1);
  CHECK_OK(gpu_create(&(struct gpu_options){.device_index = -1, .validation = 1, .profile = 0}, &staged));
  unsetenv("VKDIFFUSION_TRANSFER");
  if (!staged) return;
  bool cpu = !strcmp(gpu_info(direct)->type, "cpu"), mapped = false;
  for (int k = 0; k < 2; k++) {
    g = k ? staged : direct;
    struct gpu_arena *a = NULL;
    size_t n = (40u << 20) / 4; /* 40 MiB of f32: two staging chunks */
    CHECK_OK(gpu_arena_create(g, (n + 64) * 4 + 4096, "transfer test", &a));
    struct gpu_tensor pad, x;
    CHECK_OK(gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){3}, &pad));
    CHECK_OK(gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){(int64_t)n}, &x));
    float *v = random_array(n, 51 + (unsigned)k, 1.0f), *back = malloc(n * 4);
    CHECK_OK(gpu_upload(g, &x, v, n * 4));
    CHECK_OK(gpu_begin(g));
    CHECK_OK(op_add(g, &x, &x, &x)); /* the device sees the upload, the host sees the device's result */
    CHECK_OK(gpu_submit(g));
    CHECK_OK(gpu_download(g, &x, back, n * 4));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += back[i] != 2 * v[i];
    CHECK_MSG(bad == 0, "transfer (%s): %zu of %zu values differ", k ? "staged" : "default", bad, n);
    void *host = gpu_tensor_host(g, &x);
    if (k) CHECK_MSG(host == NULL, "VKDIFFUSION_TRANSFER=staged still maps device memory");
    else if (cpu) CHECK_MSG(host != NULL, "a CPU device's memory is not mapped");
    if (!k) mapped = host != NULL;
    if (host) { /* written in place, read by the device */
      memcpy(host, v, n * 4);
      CHECK_OK(gpu_begin(g));
      CHECK_OK(op_add(g, &x, &x, &x));
      CHECK_OK(gpu_submit(g));
      CHECK_OK(gpu_download(g, &x, back, 16));
      CHECK_MSG(back[0] == 2 * v[0] && back[3] == 2 * v[3], "a write through gpu_tensor_host is not seen by the device");
    }
    free(v), free(back);
    gpu_arena_destroy(a);
    if (k) {
      test_raw16();
      test_weight_reload();
    }
  }
  g = direct;
  const char *last;
  CHECK_MSG(gpu_validation_count(staged, &last) == 0, "validation (staged device): %s", last ? last : "");
  gpu_destroy(staged);
  printf("  transfers: %s by default, staged on request; weight loads through both\n", mapped ? "mapped" : "staged");
}

int main(void) {
  int rc = 0;
  g = test_gpu(&rc);
  if (!g) return rc;
  CHECK_OK(gpu_arena_create(g, 256u << 20, "test", &arena));
  test_weight_reload();
  test_raw16();
  test_transfers();
  test_pipeline_cache();
  const enum linear_variant variants[] = {LINEAR_GENERIC, LINEAR_TILED, LINEAR_SHARED};
  for (int v = 0; v < 3; v++) {
    test_linear(77, 768, 768, DT_F16, true, ACT_NONE, variants[v]);
    test_linear(77, 3072, 768, DT_F16, true, ACT_QUICK_GELU, variants[v]);
    test_linear(77, 768, 3072, DT_F32, true, ACT_NONE, variants[v]);
    test_linear(7, 769, 76, DT_F32, false, ACT_GELU, variants[v]);
    test_linear(769, 7, 12, DT_F16, true, ACT_SILU, variants[v]);
    test_linear(1, 1, 4, DT_F32, true, ACT_NONE, variants[v]);
    test_linear(9, 33, 20, DT_F32, true, ACT_NONE, variants[v]);
  }
  test_linear(7, 77, 769, DT_F32, true, ACT_NONE, LINEAR_GENERIC);
  test_linear(1, 7, 1, DT_F16, true, ACT_GELU, LINEAR_GENERIC);
  test_linear(77, 769, 7, DT_F32, true, ACT_NONE, LINEAR_AUTO);
  test_linear(130, 67, 36, DT_F16, true, ACT_NONE, LINEAR_SHARED); /* K not a multiple of the 16 a step */
  test_linear(1024, 1024, 1024, DT_F16, false, ACT_NONE, LINEAR_SHARED);
  test_layernorm(77, 768);
  test_layernorm(7, 769);
  test_layernorm(1, 7);
  test_layernorm(3, 1);
  test_layernorm(70001, 8); /* more rows than 65535 work groups (SD 1.x at 2048²: 131072 tokens) */
  test_embedding(2, 77, 768, 1000, DT_F16);
  test_embedding(1, 7, 769, 50, DT_F32);
  test_embedding(3, 1, 7, 3, DT_F32);
  test_attention(2, 77, 77, 12, 64, true);
  test_attention(1, 77, 77, 12, 64, false);
  test_attention(2, 7, 77, 3, 7, false);
  test_attention(1, 1, 1, 1, 1, true);
  test_attention(1, 769, 7, 2, 16, false);
  test_attention(1, 64, 64, 1, 512, false); /* the VAE's single head over 512 channels */
  /* long key lists (the VAE at 512² and 1024², the U-Net at 512²): within llvmpipe's loop limit */
  test_attention(1, 8, 4096, 1, 512, false);
  test_attention(1, 8, 16384, 1, 512, false);
  test_attention(1, 8, 4096, 8, 40, false);
  test_attention(1, 96, 96, 1, 128, false);
  test_attention(1, 256, 256, 1, 512, false);
  test_attention(1, 128, 128, 1, 512, false);
  test_attention(1, 256, 256, 1, 128, false);
  test_attention(1, 256, 256, 1, 256, false);
  test_attention(1, 65, 65, 1, 512, false);
  test_attention(2, 250, 77, 8, 40, false); /* SD 1.x cross-attention shapes */
  /* every kernel forced, on odd shapes: partial key tiles and query groups, causal masks */
  const enum attention_variant avs[] = {ATTN_GENERIC, ATTN_VEC4, ATTN_FLASH};
  for (int v = 0; v < 3; v++) {
    test_attention_v(2, 77, 77, 12, 64, true, avs[v]);
    test_attention_v(1, 769, 7, 2, 16, false, avs[v]);
    test_attention_v(2, 250, 77, 8, 40, false, avs[v]);
    test_attention_v(1, 65, 65, 1, 128, false, avs[v]);
    test_attention_v(1, 1, 1, 1, 4, true, avs[v]);
    test_attention_v(1, 130, 200, 3, 12, true, avs[v]);
  }
  test_eltwise(77 * 768);
  test_eltwise(1);
  test_eltwise(7);
  test_eltwise(769);
  test_eltwise(65535 * 64 + 4099); /* more than 65535 work groups: spread over x and y */
  test_conv(2, 32, 16, 24, 64, 3, 1, 1, DT_F16, 1 << 20, true, false);  /* tiny U-Net ResBlock */
  test_conv(1, 320, 8, 8, 320, 3, 1, 1, DT_F16, 1 << 20, false, true);  /* SD 1.x widths, residual */
  test_conv(2, 4, 16, 16, 320, 3, 1, 1, DT_F32, 1 << 20, false, false); /* conv_in */
  test_conv(1, 64, 15, 9, 64, 3, 2, 1, DT_F32, 1 << 20, false, false);  /* downsample, odd sizes */
  test_conv(2, 32, 16, 12, 32, 3, 2, CONV_PAD_BOTTOM_RIGHT, DT_F16, 1 << 20, false, false); /* VAE encoder downsample */
  test_conv(1, 8, 15, 9, 16, 3, 2, CONV_PAD_BOTTOM_RIGHT, DT_F32, 1 << 20, false, false);  /* the same, odd sizes */
  test_conv(2, 96, 8, 12, 64, 1, 1, 0, DT_F16, 1 << 20, false, false);  /* 1x1 skip */
  test_conv(1, 3, 7, 7, 7, 3, 1, 1, DT_F32, 1 << 20, false, false);     /* K = 27: padded to 28 */
  test_conv(2, 32, 16, 16, 32, 3, 1, 1, DT_F16, 288 * 37, true, false); /* scratch for 37 pixels: chunked */
  test_conv(1, 512, 16, 16, 512, 3, 1, 1, DT_F16, 4 << 20, false, false); /* the VAE mid block */
  test_conv(1, 4, 260, 260, 4, 1, 1, 0, DT_F32, 1 << 20, false, false); /* 67600 pixels > 65535 work group rows: chunked */
  test_winograd();
  test_implicit();
  if (!gpu_info(g)->subgroup_arithmetic)
    fprintf(stderr, "  the device has no subgroup arithmetic: the _subgroup kernels are not run (nor picked)\n");
  test_group_norm(2, 64, 16 * 24, 32, true);
  test_group_norm(1, 320, 64, 32, false);
  test_group_norm(1, 96, 7, 32, true);
  test_group_norm(2, 7, 1, 7, false);
  test_group_norm(3, 96, 9 * 11, 32, true); /* 297 values a group, 3 images: an odd shape */
  test_group_norm(1, 8, 5120, 2, false);     /* 20480 values a group: within the small kernel's loop limit */
  test_group_norm(1, 8, 512 * 512, 2, false); /* 1 M values a group (the VAE at 512²): cooperative only */
  test_small_ops();
  test_peak();
  test_residual_and_nchw();
  test_gather(8, 616, 768);
  test_gather(1, 7, 769);
  test_errors();
  test_multiblock_arena();
  gpu_arena_destroy(arena);
  test_gpu_done(g);
  return test_result("test_ops");
}
