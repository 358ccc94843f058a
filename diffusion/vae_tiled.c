/* The VAE decode, tiled and exact (vae_decode with tiling on, or when a whole decode would not fit).
 * The mid block (attention over every pixel) runs whole at latent resolution. The up path then
 * runs on tensors held in host memory: GroupNorm statistics are taken over the whole image on the
 * host (double sums), the element-wise steps (normalise + SiLU, nearest upsample, residual add)
 * run on the host, and every convolution runs on the GPU over bands of rows with a one-row halo.
 * Each band sees exactly the inputs the whole decode would, so the result is the whole decode's
 * (up to summation order), with no seams and no blending, while the GPU holds one band at a time. */

#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "vae_internal.h"

struct host_t {
  float *d;
  int N, C, H, W;
};

static enum status ht_alloc(struct host_t *t, int N, int C, int H, int W) {
  *t = (struct host_t){.N = N, .C = C, .H = H, .W = W};
  t->d = malloc((size_t)N * C * H * W * sizeof *t->d);
  return t->d ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "VAE tiled decode: out of host memory (%dx%dx%d)", C, H, W);
}

struct bands {
  struct vae *v;
  struct workspace P;
  struct gpu_tensor in, out, scratch;
  size_t cap;     /* floats in each of in and out */
  int rows;       /* rows per band; 0: as many as fit */
  float *pad, *got; /* host band buffers, cap floats each */
};

/* y = silu(groupnorm(x)) with the statistics of the whole image; y may be x */
static enum status host_group_norm_silu(struct vae *v, const struct host_t *x, const struct gpu_tensor *gw,
                                        const struct gpu_tensor *gb, struct host_t *y) {
  int C = x->C, cpg = C / GN_GROUPS;
  size_t HW = (size_t)x->H * x->W;
  float *wb = malloc(2 * (size_t)C * sizeof *wb);
  if (!wb) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = gpu_download(v->g, gw, wb, (size_t)C * sizeof *wb);
  if (!s) s = gpu_download(v->g, gb, wb + C, (size_t)C * sizeof *wb);
  for (int n = 0; n < x->N && !s; n++)
    for (int grp = 0; grp < GN_GROUPS; grp++) {
      const float *src = x->d + ((size_t)n * C + (size_t)grp * cpg) * HW;
      float *dst = y->d + ((size_t)n * C + (size_t)grp * cpg) * HW;
      size_t cnt = (size_t)cpg * HW;
      double sum = 0, sq = 0;
      for (size_t i = 0; i < cnt; i++) sum += src[i];
      double mean = sum / (double)cnt;
      for (size_t i = 0; i < cnt; i++) sq += (src[i] - mean) * (src[i] - mean);
      double rstd = 1.0 / sqrt(sq / (double)cnt + GN_EPS);
      for (int c = 0; c < cpg; c++) {
        float a = (float)(wb[grp * cpg + c] * rstd), b = (float)(wb[C + grp * cpg + c] - mean * wb[grp * cpg + c] * rstd);
        for (size_t i = 0; i < HW; i++) {
          float t = src[c * HW + i] * a + b;
          dst[c * HW + i] = t / (1.0f + expf(-t));
        }
      }
    }
  free(wb);
  return s;
}

/* A shape view of the first elements of a band buffer. */
static struct gpu_tensor band_view(const struct gpu_tensor *buf, int64_t C, int64_t H, int64_t W) {
  struct gpu_tensor t = *buf;
  t.ndim = 4;
  t.shape[0] = 1, t.shape[1] = C, t.shape[2] = H, t.shape[3] = W;
  t.bytes = (VkDeviceSize)(C * H * W) * sizeof(float);
  VKD_ASSERT(t.bytes <= buf->bytes);
  return t;
}

/* y (+)= conv k x k of x, on the GPU in bands of output rows: stride 1 with zero padding k/2, or
 * (stride 2) the encoder's Downsample, one zero row and column after (CONV_PAD_BOTTOM_RIGHT) */
static enum status conv_bands_strided(struct bands *B, const struct host_t *x, const struct gpu_tensor *w,
                                      const struct gpu_tensor *b, int k, int stride, int cout, struct host_t *y,
                                      bool accumulate) {
  int p = stride == 1 ? k / 2 : 0, pr = stride == 1 ? k / 2 : 1, C = x->C, H = x->H, W = x->W, Wp = W + p + pr;
  int Ho = (int)conv_out_size(H, k, stride, stride == 1 ? k / 2 : CONV_PAD_BOTTOM_RIGHT), Wo = y->W;
  long fit_in = ((long)(B->cap / ((size_t)C * Wp)) - k) / stride + 1, fit_out = (long)(B->cap / ((size_t)cout * Wo));
  long R = fit_in < fit_out ? fit_in : fit_out;
  if (B->rows > 0 && B->rows < R) R = B->rows;
  if (R > Ho) R = Ho;
  if (R < 1) return status_set(STATUS_UNSUPPORTED, "VAE tiled: one row of %d x %d channels does not fit a band", W, C);
  enum status s = STATUS_OK;
  for (int n = 0; n < x->N && !s; n++)
    for (int r0 = 0; r0 < Ho && !s; r0 += (int)R) {
      int rr = Ho - r0 < R ? Ho - r0 : (int)R, hp = (rr - 1) * stride + k, first = r0 * stride - p;
      memset(B->pad, 0, (size_t)C * hp * Wp * sizeof *B->pad);
      for (int c = 0; c < C; c++)
        for (int yy = 0; yy < hp; yy++) {
          int sy = first + yy;
          if (sy >= 0 && sy < H)
            memcpy(B->pad + ((size_t)c * hp + yy) * Wp + p, x->d + (((size_t)n * C + c) * H + sy) * W, (size_t)W * sizeof(float));
        }
      struct gpu_tensor in = band_view(&B->in, C, hp, Wp), out = band_view(&B->out, cout, rr, Wo);
      if ((s = gpu_upload(B->v->g, &in, B->pad, in.bytes)) || (s = gpu_begin(B->v->g))) break;
      s = op_conv2d(B->v->g, &in, w, b, &out, k, stride, 0, false, &B->scratch);
      enum status s2 = gpu_submit(B->v->g);
      if (s || (s = s2) || (s = gpu_download(B->v->g, &out, B->got, out.bytes))) break;
      for (int c = 0; c < cout; c++) {
        float *dst = y->d + (((size_t)n * cout + c) * Ho + r0) * Wo;
        const float *src = B->got + (size_t)c * rr * Wo;
        if (accumulate)
          for (size_t i = 0; i < (size_t)rr * Wo; i++) dst[i] += src[i];
        else
          memcpy(dst, src, (size_t)rr * Wo * sizeof *dst);
      }
    }
  return s;
}

static enum status conv_bands(struct bands *B, const struct host_t *x, const struct gpu_tensor *w, const struct gpu_tensor *b,
                              int k, int cout, struct host_t *y, bool accumulate) {
  return conv_bands_strided(B, x, w, b, k, 1, cout, y, accumulate);
}

static enum status host_res(struct bands *B, const struct resnet *blk, struct host_t *x) {
  struct host_t a = {0}, h = {0}, y = {0};
  enum status s = ht_alloc(&a, x->N, x->C, x->H, x->W);
  if (!s) s = host_group_norm_silu(B->v, x, &blk->norm1_w, &blk->norm1_b, &a);                        /* silu(norm1(x)) */
  if (!s) s = ht_alloc(&h, x->N, blk->cout, x->H, x->W);
  if (!s) s = conv_bands(B, &a, &blk->conv1_w, &blk->conv1_b, 3, blk->cout, &h, false);              /* conv1 */
  free(a.d);
  if (!s) s = host_group_norm_silu(B->v, &h, &blk->norm2_w, &blk->norm2_b, &h);                      /* silu(norm2(h)) */
  if (!s && blk->has_skip) {
    if (!(s = ht_alloc(&y, x->N, blk->cout, x->H, x->W)))
      s = conv_bands(B, x, &blk->skip_w, &blk->skip_b, 1, blk->cout, &y, false);                   /* nin_shortcut */
    free(x->d);
    x->d = NULL;
  } else if (!s) {
    y = *x;
    x->d = NULL;
  }
  if (!s) s = conv_bands(B, &h, &blk->conv2_w, &blk->conv2_b, 3, blk->cout, &y, true);               /* y += conv2(h) */
  free(h.d);
  if (s) {
    free(y.d);
    return s;
  }
  *x = y;
  return STATUS_OK;
}

static enum status upsample_host(struct host_t *x) {
  struct host_t u;
  enum status s = ht_alloc(&u, x->N, x->C, 2 * x->H, 2 * x->W);
  if (s) return s;
  for (size_t nc = 0; nc < (size_t)x->N * x->C; nc++)
    for (int yy = 0; yy < u.H; yy++)
      for (int xx = 0; xx < u.W; xx++)
        u.d[(nc * u.H + yy) * u.W + xx] = x->d[(nc * x->H + yy / 2) * x->W + xx / 2];
  free(x->d);
  *x = u;
  return STATUS_OK;
}

#define BAND_BYTES (64u << 20) /* each of the input and output band buffers */

/* the two band buffers and the patch scratch on the device, the host band buffers */
static enum status bands_prepare(struct vae *v, struct bands *B) {
  *B = (struct bands){.v = v, .rows = v->band_rows};
  const struct gpu_device_info *di = gpu_info(v->g);
  VkDeviceSize band = BAND_BYTES;
  if (band > di->max_storage_buffer_range) band = di->max_storage_buffer_range;
  if (band > di->max_allocation / 4) band = di->max_allocation / 4;
  B->cap = (size_t)(band / sizeof(float));
  B->P = (struct workspace){.g = v->g};
  VkDeviceSize bytes = 2 * gpu_aligned_size(v->g, B->cap * sizeof(float)) + gpu_aligned_size(v->g, SCRATCH_ELEMS * sizeof(float));
  enum status s = workspace_prepare(&B->P, &v->persist, bytes, "VAE bands");
  if (!s && bytes > v->act_bytes) v->act_bytes = bytes;
  if (!s) s = workspace_alloc(&B->P, DT_F32, 1, (int64_t[]){(int64_t)B->cap}, &B->in);
  if (!s) s = workspace_alloc(&B->P, DT_F32, 1, (int64_t[]){(int64_t)B->cap}, &B->out);
  if (!s) s = workspace_alloc(&B->P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &B->scratch);
  if (!s && (!(B->pad = malloc(B->cap * sizeof(float))) || !(B->got = malloc(B->cap * sizeof(float)))))
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  return s;
}

enum status vae_decode_tiled(struct vae *v, const float *latent, int N, int h, int w, float *image) {
  struct host_t x = {0};
  struct bands B = {0};
  enum status s = ht_alloc(&x, N, v->mid2.cout, h, w);
  if (!s) s = vae_run_whole(v, VAE_MID, latent, N, h, w, x.d, NULL); /* post_quant_conv, conv_in, mid: whole */
  if (!s) s = bands_prepare(v, &B);
  for (int i = v->levels - 1; i >= 0 && !s; i--) {
    for (int j = 0; j < v->blocks && !s; j++) s = host_res(&B, &v->up[i][j], &x);
    if (i > 0 && !s && !(s = upsample_host(&x))) { /* nearest x2, conv */
      struct host_t c;
      if (!(s = ht_alloc(&c, x.N, x.C, x.H, x.W))) s = conv_bands(&B, &x, &v->ups_w[i], &v->ups_b[i], 3, x.C, &c, false);
      free(x.d);
      x = c;
    }
  }
  if (!s) s = host_group_norm_silu(v, &x, &v->no_w, &v->no_b, &x);                             /* silu(norm_out) */
  if (!s) {
    struct host_t img = {.d = image, .N = N, .C = v->out_channels, .H = x.H, .W = x.W};
    s = conv_bands(&B, &x, &v->out_w, &v->out_b, 3, v->out_channels, &img, false);              /* conv_out */
  }
  free(x.d), free(B.pad), free(B.got);
  return s;
}


/* The encoder the same way: conv_in and the down path (ResBlocks, stride-2 Downsamples) in bands
 * of rows with whole-image GroupNorm statistics on the host; the mid block (attention), norm_out,
 * conv_out and quant_conv whole on the GPU at latent resolution (VAE_ENC_TAIL). */
enum status vae_encode_tiled(struct vae *v, const float *image, int N, int H, int W, float *moments) {
  const struct vae_encoder *e = &v->enc;
  struct host_t x = {0}, in = {.d = (float *)image, .N = N, .C = 3, .H = H, .W = W};
  struct bands B = {0};
  enum status s = bands_prepare(v, &B);
  if (!s && !(s = ht_alloc(&x, N, e->top_channels, H, W))) s = conv_bands(&B, &in, &e->in_w, &e->in_b, 3, x.C, &x, false);
  for (int i = 0; i < e->levels && !s; i++) {
    for (int j = 0; j < e->blocks && !s; j++) s = host_res(&B, &e->down[i][j], &x);
    if (i < e->levels - 1 && !s) {
      struct host_t c;
      int Ho = (int)conv_out_size(x.H, 3, 2, CONV_PAD_BOTTOM_RIGHT), Wo = (int)conv_out_size(x.W, 3, 2, CONV_PAD_BOTTOM_RIGHT);
      if (!(s = ht_alloc(&c, x.N, x.C, Ho, Wo))) s = conv_bands_strided(&B, &x, &e->downs_w[i], &e->downs_b[i], 3, 2, x.C, &c, false);
      free(x.d);
      x = c;
    }
  }
  if (!s) s = vae_run_whole(v, VAE_ENC_TAIL, x.d, N, x.H, x.W, moments, NULL);
  free(x.d), free(B.pad), free(B.got);
  return s;
}
