#include "vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "vae_internal.h"

bool vae_present(const struct safetensors *st, const char *prefix) {
  char key[256];
  snprintf(key, sizeof key, "%sdecoder.conv_in.weight", prefix ? prefix : "first_stage_model.");
  return safetensors_find(st, key) != NULL;
}

/* --- loading --- */

static enum status conv(struct weight_loader *l, enum dtype dt, const char *base, int cin, int cout, int k,
                        struct gpu_tensor *w, struct gpu_tensor *b) {
  return weight_load_conv(l, base, cin, cout, k, dt, w, b);
}

static enum status load_res(struct weight_loader *l, enum dtype dt, const char *base, struct resnet *r) {
  return resnet_load(l, &resnet_vae_names, base, 0, dt, GN_EPS, r);
}

static enum status load_all(struct weight_loader *l, void *model) {
  struct vae *v = model;
  enum dtype dt = v->fp16 ? DT_F16 : DT_F32;
  int64_t sh[8];
  enum status s;
  if ((s = weight_dims(l, "post_quant_conv.weight", 4, sh))) return s;
  v->z_channels = (int)sh[1];
  if ((s = conv(l, dt, "post_quant_conv", (int)sh[1], (int)sh[0], 1, &v->pq_w, &v->pq_b))) return s;
  if ((s = weight_dims(l, "decoder.conv_in.weight", 4, sh))) return s;
  v->top_channels = (int)sh[0];
  if ((s = conv(l, dt, "decoder.conv_in", (int)sh[1], (int)sh[0], 3, &v->in_w, &v->in_b))) return s;
  if ((s = load_res(l, dt, "decoder.mid.block_1", &v->mid1)) || (s = load_res(l, dt, "decoder.mid.block_2", &v->mid2))) return s;
  int C = v->mid1.cout;
  if ((s = weight_load_norm(l, "decoder.mid.attn_1.norm", C, &v->an_w, &v->an_b))) return s;
  /* q, k, v, proj_out are 1x1 convolutions: loaded as [C, Cp] for the token-layout products */
  if ((s = conv(l, dt, "decoder.mid.attn_1.q", C, C, 1, &v->aq_w, &v->aq_b)) ||
      (s = conv(l, dt, "decoder.mid.attn_1.k", C, C, 1, &v->ak_w, &v->ak_b)) ||
      (s = conv(l, dt, "decoder.mid.attn_1.v", C, C, 1, &v->av_w, &v->av_b)) ||
      (s = conv(l, dt, "decoder.mid.attn_1.proj_out", C, C, 1, &v->ao_w, &v->ao_b)))
    return s;
  char name[256];
  for (v->levels = 0; v->levels < MAX_LEVELS; v->levels++) {
    snprintf(name, sizeof name, "decoder.up.%d.block.0.conv1.weight", v->levels);
    if (!weight_exists(l, name)) break;
  }
  for (v->blocks = 0; v->blocks < MAX_BLOCKS; v->blocks++) {
    snprintf(name, sizeof name, "decoder.up.0.block.%d.conv1.weight", v->blocks);
    if (!weight_exists(l, name)) break;
  }
  if (!v->levels || !v->blocks) return status_set(STATUS_FORMAT, "%s: no decoder.up levels", safetensors_path(l->st));
  for (int i = v->levels - 1; i >= 0; i--) {
    for (int j = 0; j < v->blocks; j++) {
      snprintf(name, sizeof name, "decoder.up.%d.block.%d", i, j);
      if ((s = load_res(l, dt, name, &v->up[i][j]))) return s;
    }
    if (i > 0) {
      int c = v->up[i][v->blocks - 1].cout;
      snprintf(name, sizeof name, "decoder.up.%d.upsample.conv", i);
      if ((s = conv(l, dt, name, c, c, 3, &v->ups_w[i], &v->ups_b[i]))) return s;
    }
  }
  int c0 = v->up[0][v->blocks - 1].cout;
  if ((s = weight_load_norm(l, "decoder.norm_out", c0, &v->no_w, &v->no_b))) return s;
  if ((s = weight_dims(l, "decoder.conv_out.weight", 4, sh))) return s;
  v->out_channels = (int)sh[0];
  return conv(l, dt, "decoder.conv_out", c0, v->out_channels, 3, &v->out_w, &v->out_b);
}

void vae_destroy(struct vae *v) {
  if (!v) return;
  gpu_arena_destroy(v->temps);
  gpu_arena_destroy(v->persist);
  gpu_arena_destroy(v->weights);
  free(v);
}

enum status vae_load(struct gpu *g, const struct safetensors *st, const struct vae_options *opt, struct vae **out) {
  *out = NULL;
  struct vae *v = calloc(1, sizeof *v);
  if (!v) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  v->g = g;
  v->fp16 = opt->fp16 && gpu_has_fp16(g) && gpu_texel_format_ok(g, VK_FORMAT_R16G16B16A16_SFLOAT);
  v->scale = opt->scale_factor > 0 ? opt->scale_factor : 0.18215f;
  v->band_rows = opt->band_rows > 0 ? opt->band_rows : 0;
  const char *prefix = opt->prefix ? opt->prefix : "first_stage_model.";
  enum status s = weight_load_model(g, st, prefix, "VAE weights", load_all, NULL, v, &v->weights);
  if (s) {
    vae_destroy(v);
    return s;
  }
  size_t plen = strlen(prefix);
  for (int i = 0; i < safetensors_count(st); i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    if (!strncmp(t->name, prefix, plen) && (!strncmp(t->name + plen, "decoder.", 8) || !strncmp(t->name + plen, "post_quant", 10)))
      v->parameters += t->numel;
  }
  *out = v;
  return STATUS_OK;
}

int vae_factor(const struct vae *v) { return 1 << (v->levels - 1); }
int vae_latent_channels(const struct vae *v) { return v->z_channels; }
int64_t vae_parameters(const struct vae *v) { return v->parameters; }
uint64_t vae_weight_bytes(const struct vae *v) { return gpu_arena_used(v->weights); }
uint64_t vae_activation_bytes(const struct vae *v) { return v->act_bytes; }
bool vae_last_tiled(const struct vae *v) { return v->tiled; }

/* --- forward --- */

struct run {
  struct vae *v;
  struct workspace P, T;
  struct gpu_tensor scratch;
  struct vae_trace *trace;
  struct workspace_trace traced[12];
  int n_traced;
  bool mid_only; /* stop after the mid block: `image` receives its output [N, C, h, w] */
};

#define RUN(call) WORKSPACE_RECORD(&r->T, call)

static enum status alloc(struct workspace *a, int ndim, const int64_t *shape, struct gpu_tensor *t) {
  return workspace_alloc(a, DT_F32, ndim, shape, t);
}

/* *h = block(*h), a new persistent tensor */
static enum status res(struct run *r, const struct resnet *b, struct gpu_tensor *h) {
  struct gpu_tensor y;
  enum status s = alloc(&r->P, 4, (int64_t[]){h->shape[0], b->cout, h->shape[2], h->shape[3]}, &y);
  if (!s) s = resnet_forward(r->v->g, &r->T, b, h, NULL, &y, &r->scratch);
  if (!s) *h = y;
  return s;
}

static enum status attention(struct run *r, struct gpu_tensor *x) {
  struct vae *v = r->v;
  struct gpu *g = v->g;
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], P = H * W, Cp = conv_weight_cols(C, 1);
  struct gpu_tensor hn, col, q, k, vv, a;
  enum status s;
  VkDeviceSize mark = workspace_mark(&r->T);
  if ((s = alloc(&r->T, 4, x->shape, &hn)) || (s = alloc(&r->T, 2, (int64_t[]){P, Cp}, &col)) ||
      (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &q)) || (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &k)) ||
      (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &vv)) || (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &a)))
    return s;
  RUN(op_group_norm(g, x, &v->an_w, &v->an_b, &hn, GN_GROUPS, GN_EPS, false));
  for (int64_t n = 0; n < N; n++) { /* q, k, v: 1x1 convolutions, written as tokens [P, C] */
    struct gpu_tensor qn = gpu_tensor_rows(&q, n, 1), kn = gpu_tensor_rows(&k, n, 1), vn = gpu_tensor_rows(&vv, n, 1);
    qn = gpu_tensor_reshape(&qn, 2, (int64_t[]){P, C});
    kn = gpu_tensor_reshape(&kn, 2, (int64_t[]){P, C});
    vn = gpu_tensor_reshape(&vn, 2, (int64_t[]){P, C});
    RUN(op_im2col(g, &hn, n, 1, 1, 0, 0, &col));
    RUN(op_linear(g, &col, &v->aq_w, &v->aq_b, &qn, ACT_NONE));
    RUN(op_linear(g, &col, &v->ak_w, &v->ak_b, &kn, ACT_NONE));
    RUN(op_linear(g, &col, &v->av_w, &v->av_b, &vn, ACT_NONE));
  }
  RUN(op_attention(g, &q, &k, &vv, &a, 1, false, 1.0f / sqrtf((float)C))); /* one head over all pixels */
  RUN(op_matmul_nchw(g, &v->ao_w, &a, &v->ao_b, x, true));                   /* x += proj_out(a) */
  workspace_reset(&r->T, mark);
  return STATUS_OK;
}

static enum status trace(struct run *r, const struct gpu_tensor *src, float *dst) {
  return workspace_trace_copy(&r->P, src, dst, r->traced, &r->n_traced);
}

/* latent z [N, zc, h, w] (already divided by the scale factor) -> image [N, 3, f h, f w] */
static enum status walk(struct run *r, const struct gpu_tensor *z, struct gpu_tensor *image) {
  struct vae *v = r->v;
  struct gpu *g = v->g;
  int64_t N = z->shape[0], h = z->shape[2], w = z->shape[3];
  struct gpu_tensor x, y;
  enum status s;
  if ((s = alloc(&r->P, 4, (int64_t[]){N, v->z_channels, h, w}, &x))) return s;
  RUN(op_conv2d(g, z, &v->pq_w, &v->pq_b, &x, 1, 1, 0, false, &r->scratch));            /* post_quant_conv */
  if (r->trace && (s = trace(r, &x, r->trace->post_quant_conv))) return s;
  if ((s = alloc(&r->P, 4, (int64_t[]){N, v->top_channels, h, w}, &y))) return s;
  RUN(op_conv2d(g, &x, &v->in_w, &v->in_b, &y, 3, 1, 1, false, &r->scratch));           /* conv_in */
  if ((s = res(r, &v->mid1, &y)) || (s = attention(r, &y)) || (s = res(r, &v->mid2, &y))) return s;
  if (r->trace && (s = trace(r, &y, r->trace->mid))) return s;
  if (r->mid_only) {
    RUN(gpu_copy(g, &y, image));
    return STATUS_OK;
  }
  for (int i = v->levels - 1; i >= 0; i--) {
    for (int j = 0; j < v->blocks; j++)
      if ((s = res(r, &v->up[i][j], &y))) return s;
    if (i > 0) { /* nearest x2, conv */
      struct gpu_tensor up, c;
      int64_t C = y.shape[1], H2 = 2 * y.shape[2], W2 = 2 * y.shape[3];
      VkDeviceSize mark = workspace_mark(&r->T);
      if ((s = alloc(&r->T, 4, (int64_t[]){N, C, H2, W2}, &up)) || (s = alloc(&r->P, 4, (int64_t[]){N, C, H2, W2}, &c)))
        return s;
      RUN(op_upsample2x(g, &y, &up));
      RUN(op_conv2d(g, &up, &v->ups_w[i], &v->ups_b[i], &c, 3, 1, 1, false, &r->scratch));
      workspace_reset(&r->T, mark);
      y = c;
    }
    if (r->trace && (s = trace(r, &y, r->trace->up[i]))) return s;
  }
  struct gpu_tensor hn;
  VkDeviceSize mark = workspace_mark(&r->T);
  if ((s = alloc(&r->T, 4, y.shape, &hn))) return s;
  RUN(op_group_norm(g, &y, &v->no_w, &v->no_b, &hn, GN_GROUPS, GN_EPS, true));          /* silu(norm_out) */
  RUN(op_conv2d(g, &hn, &v->out_w, &v->out_b, image, 3, 1, 1, false, &r->scratch));     /* conv_out */
  workspace_reset(&r->T, mark);
  return STATUS_OK;
}


/* the output of a walk: the image, or the mid block's output */
static void out_shape(const struct vae *v, int N, int h, int w, bool mid_only, int64_t shape[4]) {
  int f = mid_only ? 1 : vae_factor(v);
  shape[0] = N, shape[1] = mid_only ? v->mid2.cout : v->out_channels, shape[2] = (int64_t)f * h, shape[3] = (int64_t)f * w;
}

enum status vae_plan(struct vae *v, int N, int h, int w, bool mid_only, VkDeviceSize *pbytes, VkDeviceSize *tbytes,
                        VkDeviceSize *largest, struct vae_trace *tr) {
  struct run r = {.v = v, .trace = tr, .mid_only = mid_only};
  r.P = (struct workspace){.g = v->g, .measure = true};
  r.T = (struct workspace){.g = v->g, .measure = true};
  int64_t osh[4];
  out_shape(v, N, h, w, mid_only, osh);
  struct gpu_tensor z, image;
  enum status s = workspace_alloc(&r.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &r.scratch);
  if (!s) s = alloc(&r.P, 4, (int64_t[]){N, v->z_channels, h, w}, &z);
  if (!s) s = alloc(&r.P, 4, osh, &image);
  if (!s) s = walk(&r, &z, &image);
  *pbytes = r.P.peak;
  *tbytes = r.T.peak;
  *largest = r.P.largest > r.T.largest ? r.P.largest : r.T.largest;
  return s;
}

/* One decode on the GPU of z [N, zc, h, w] (scaled by 1/scale here) into image (or, mid_only, into
 * the mid block's output [N, C, h, w]). */
enum status vae_decode_whole(struct vae *v, const float *latent, int N, int h, int w, bool mid_only, float *image,
                                struct vae_trace *tr) {
  VkDeviceSize pbytes, tbytes, largest;
  enum status s = vae_plan(v, N, h, w, mid_only, &pbytes, &tbytes, &largest, tr);
  if (s) return s;
  struct run r = {.v = v, .trace = tr, .mid_only = mid_only};
  r.P = (struct workspace){.g = v->g};
  r.T = (struct workspace){.g = v->g};
  if ((s = workspace_prepare(&r.P, &v->persist, pbytes, "VAE activations")) ||
      (s = workspace_prepare(&r.T, &v->temps, tbytes, "VAE temporaries")))
    return s;
  if (pbytes + tbytes > v->act_bytes) v->act_bytes = pbytes + tbytes;
  int64_t osh[4];
  out_shape(v, N, h, w, mid_only, osh);
  struct gpu_tensor z, img;
  if ((s = workspace_alloc(&r.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &r.scratch)) ||
      (s = workspace_alloc(&r.P, DT_F32, 4, (int64_t[]){N, v->z_channels, h, w}, &z)) || (s = workspace_alloc(&r.P, DT_F32, 4, osh, &img)))
    return s;
  size_t nz = (size_t)N * v->z_channels * h * w;
  float *zs = malloc(nz * sizeof *zs);
  if (!zs) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (size_t i = 0; i < nz; i++) zs[i] = latent[i] / v->scale;
  s = gpu_upload(v->g, &z, zs, nz * sizeof *zs);
  free(zs);
  if (s || (s = gpu_begin(v->g))) return s;
  s = walk(&r, &z, &img);
  enum status s2 = gpu_submit(v->g);
  if (s || s2) return s ? s : s2;
  s = workspace_trace_download(v->g, r.traced, r.n_traced);
  if (!s) s = gpu_download(v->g, &img, image, img.bytes);
  return s;
}

enum status vae_decode(struct vae *v, const float *latent, int N, int h, int w, enum vae_tiling tiling, float *image) {
  if (N <= 0 || h <= 0 || w <= 0) return status_set(STATUS_INVALID_ARGUMENT, "VAE decode: empty latent %dx%d", h, w);
  size_t nz = (size_t)N * v->z_channels * h * w;
  for (size_t i = 0; i < nz; i++)
    if (!isfinite(latent[i])) return status_set(STATUS_NUMERIC, "VAE decode: the latent holds a NaN or infinite value");
  bool tile = tiling == VAE_TILING_ON;
  if (tiling == VAE_TILING_AUTO) {
    VkDeviceSize pbytes, tbytes, largest;
    enum status s = vae_plan(v, N, h, w, false, &pbytes, &tbytes, &largest, NULL);
    if (s) return s;
    const struct gpu_device_info *di = gpu_info(v->g);
    tile = largest > di->max_storage_buffer_range || pbytes > di->max_allocation || tbytes > di->max_allocation ||
           pbytes + tbytes > (1ull << 30);
  }
  v->tiled = tile;
  enum status s = tile ? vae_decode_tiled(v, latent, N, h, w, image) : vae_decode_whole(v, latent, N, h, w, false, image, NULL);
  if (s) return s;
  size_t ni = (size_t)N * v->out_channels * vae_factor(v) * h * vae_factor(v) * w;
  for (size_t i = 0; i < ni; i++)
    if (!isfinite(image[i])) return status_set(STATUS_NUMERIC, "the VAE produced a NaN or infinite value (element %zu)", i);
  return STATUS_OK;
}

double vae_gflop(const struct vae *v, int N, int h, int w) {
  double f = 0, P = (double)h * w;
  f += 2 * P * v->top_channels * v->z_channels * 9;
  const struct resnet *mids[2] = {&v->mid1, &v->mid2};
  for (int i = 0; i < 2; i++) f += 2 * P * resnet_macs_per_pixel(mids[i]);
  double C = v->mid1.cout;
  f += 2 * P * C * C * 4 + 4 * P * P * C;
  for (int i = v->levels - 1; i >= 0; i--) {
    for (int j = 0; j < v->blocks; j++) {
      const struct resnet *b = &v->up[i][j];
      f += 2 * P * resnet_macs_per_pixel(b);
    }
    if (i > 0) {
      P *= 4;
      double c = v->up[i][v->blocks - 1].cout;
      f += 2 * P * c * c * 9;
    }
  }
  f += 2 * P * v->out_channels * v->up[0][v->blocks - 1].cout * 9;
  return f * N * 1e-9;
}

enum status vae_decode_traced(struct vae *v, const float *latent, int N, int h, int w, float *image,
                              struct vae_trace *trace) {
  v->tiled = false;
  return vae_decode_whole(v, latent, N, h, w, false, image, trace);
}

void image_to_u8(const float *image, int H, int W, unsigned char *out) {
  size_t P = (size_t)H * W;
  for (size_t p = 0; p < P; p++)
    for (int c = 0; c < 3; c++) {
      double v = floor(((double)image[c * P + p] + 1.0) * 127.5 + 0.5);
      out[p * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}
