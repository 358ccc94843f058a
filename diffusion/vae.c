#include "vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "act.h"
#include "ops.h"
#include "weight_loader.h"

#define GN_GROUPS 32
#define GN_EPS 1e-6f
#define MAX_LEVELS 8
#define MAX_BLOCKS 8

struct vae_res { /* ldm ResnetBlock without time embedding */
  int cin, cout;
  struct gpu_tensor n1_w, n1_b, c1_w, c1_b, n2_w, n2_b, c2_w, c2_b, sc_w, sc_b;
  bool has_shortcut;
};

struct vae {
  struct gpu *g;
  bool fp16, tiled;
  float scale;
  int band_rows, levels, blocks, z_channels, out_channels, top_channels;
  int64_t parameters;
  struct gpu_arena *weights, *persist, *temps;
  uint64_t act_bytes;
  struct gpu_tensor pq_w, pq_b, in_w, in_b;
  struct vae_res mid1, mid2;
  struct gpu_tensor an_w, an_b, aq_w, aq_b, ak_w, ak_b, av_w, av_b, ao_w, ao_b;
  struct vae_res up[MAX_LEVELS][MAX_BLOCKS];
  struct gpu_tensor ups_w[MAX_LEVELS], ups_b[MAX_LEVELS];
  struct gpu_tensor no_w, no_b, out_w, out_b;
};

bool vae_present(const struct safetensors *st, const char *prefix) {
  char key[256];
  snprintf(key, sizeof key, "%sdecoder.conv_in.weight", prefix ? prefix : "first_stage_model.");
  return safetensors_find(st, key) != NULL;
}

/* --- loading --- */

static enum status conv(struct weight_loader *l, enum dtype dt, const char *base, int cin, int cout, int k,
                        struct gpu_tensor *w, struct gpu_tensor *b) {
  char name[256];
  snprintf(name, sizeof name, "%s.weight", base);
  enum status s = weight_load(l, name, 4, (int64_t[]){cout, cin, k, k}, 0, 0, WL_CONV, dt, w);
  if (s) return s;
  snprintf(name, sizeof name, "%s.bias", base);
  return weight_load(l, name, 1, (int64_t[]){cout}, 0, 0, WL_PLAIN, DT_F32, b);
}

static enum status norm(struct weight_loader *l, const char *base, int c, struct gpu_tensor *w, struct gpu_tensor *b) {
  char name[256];
  snprintf(name, sizeof name, "%s.weight", base);
  enum status s = weight_load(l, name, 1, (int64_t[]){c}, 0, 0, WL_PLAIN, DT_F32, w);
  if (s) return s;
  snprintf(name, sizeof name, "%s.bias", base);
  return weight_load(l, name, 1, (int64_t[]){c}, 0, 0, WL_PLAIN, DT_F32, b);
}

static enum status dims(struct weight_loader *l, const char *name, int want, int64_t *shape) {
  int nd;
  if (!weight_shape(l, name, &nd, shape) || nd != want)
    return status_set(STATUS_FORMAT, "%s: tensor '%s%s' is missing or not %d-D", safetensors_path(l->st), l->prefix, name, want);
  return STATUS_OK;
}

static enum status load_res(struct weight_loader *l, enum dtype dt, const char *base, struct vae_res *r) {
  char name[256];
  int64_t sh[8];
  snprintf(name, sizeof name, "%s.conv1.weight", base);
  enum status s = dims(l, name, 4, sh);
  if (s) return s;
  r->cin = (int)sh[1];
  r->cout = (int)sh[0];
  char sub[256];
#define SUB(leaf) (snprintf(sub, sizeof sub, "%s.%s", base, leaf), sub)
  if ((s = norm(l, SUB("norm1"), r->cin, &r->n1_w, &r->n1_b)) || (s = conv(l, dt, SUB("conv1"), r->cin, r->cout, 3, &r->c1_w, &r->c1_b)) ||
      (s = norm(l, SUB("norm2"), r->cout, &r->n2_w, &r->n2_b)) || (s = conv(l, dt, SUB("conv2"), r->cout, r->cout, 3, &r->c2_w, &r->c2_b)))
    return s;
  snprintf(name, sizeof name, "%s.nin_shortcut.weight", base);
  r->has_shortcut = weight_exists(l, name);
  if (!r->has_shortcut && r->cin != r->cout)
    return status_set(STATUS_FORMAT, "%s: tensor '%s%s' is missing (channels change %d -> %d)", safetensors_path(l->st),
                      l->prefix, name, r->cin, r->cout);
  if (r->has_shortcut && (s = conv(l, dt, SUB("nin_shortcut"), r->cin, r->cout, 1, &r->sc_w, &r->sc_b))) return s;
#undef SUB
  return STATUS_OK;
}

static enum status load_all(struct vae *v, struct weight_loader *l) {
  enum dtype dt = v->fp16 ? DT_F16 : DT_F32;
  int64_t sh[8];
  enum status s;
  if ((s = dims(l, "post_quant_conv.weight", 4, sh))) return s;
  v->z_channels = (int)sh[1];
  if ((s = conv(l, dt, "post_quant_conv", (int)sh[1], (int)sh[0], 1, &v->pq_w, &v->pq_b))) return s;
  if ((s = dims(l, "decoder.conv_in.weight", 4, sh))) return s;
  v->top_channels = (int)sh[0];
  if ((s = conv(l, dt, "decoder.conv_in", (int)sh[1], (int)sh[0], 3, &v->in_w, &v->in_b))) return s;
  if ((s = load_res(l, dt, "decoder.mid.block_1", &v->mid1)) || (s = load_res(l, dt, "decoder.mid.block_2", &v->mid2))) return s;
  int C = v->mid1.cout;
  if ((s = norm(l, "decoder.mid.attn_1.norm", C, &v->an_w, &v->an_b))) return s;
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
  if ((s = norm(l, "decoder.norm_out", c0, &v->no_w, &v->no_b))) return s;
  if ((s = dims(l, "decoder.conv_out.weight", 4, sh))) return s;
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
  struct weight_loader l = {.g = g, .st = st, .prefix = opt->prefix ? opt->prefix : "first_stage_model."};
  enum status s = load_all(v, &l);
  if (!s) s = gpu_arena_create(g, l.bytes, "VAE weights", &v->weights);
  if (!s) {
    l.arena = v->weights;
    s = load_all(v, &l);
  }
  weight_loader_free(&l);
  if (s) {
    vae_destroy(v);
    return s;
  }
  size_t plen = strlen(l.prefix);
  for (int i = 0; i < safetensors_count(st); i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    if (!strncmp(t->name, l.prefix, plen) && (!strncmp(t->name + plen, "decoder.", 8) || !strncmp(t->name + plen, "post_quant", 10)))
      v->parameters += t->numel;
  }
  *out = v;
  return STATUS_OK;
}

int vae_factor(const struct vae *v) { return 1 << (v->levels - 1); }
int64_t vae_parameters(const struct vae *v) { return v->parameters; }
uint64_t vae_weight_bytes(const struct vae *v) { return gpu_arena_used(v->weights); }
uint64_t vae_activation_bytes(const struct vae *v) { return v->act_bytes; }
bool vae_last_tiled(const struct vae *v) { return v->tiled; }

/* --- forward --- */

struct traced {
  struct gpu_tensor t;
  float *dst;
};

struct run {
  struct vae *v;
  struct act P, T;
  struct gpu_tensor scratch;
  VkDeviceSize largest; /* the largest single activation, bytes */
  struct vae_trace *trace;
  struct traced traced[12];
  int n_traced;
  bool mid_only; /* stop after the mid block: `image` receives its output [N, C, h, w] */
};

#define RUN(call)                                \
  do {                                           \
    if (!r->T.measure && (s = (call))) return s; \
  } while (0)

static enum status alloc(struct run *r, struct act *a, int ndim, const int64_t *shape, struct gpu_tensor *t) {
  enum status s = act_alloc(a, DT_F32, ndim, shape, t);
  if (!s && t->bytes > r->largest) r->largest = t->bytes;
  return s;
}

static enum status res(struct run *r, const struct vae_res *b, struct gpu_tensor *h) {
  struct gpu *g = r->v->g;
  int64_t N = h->shape[0], H = h->shape[2], W = h->shape[3];
  struct gpu_tensor h1, h2, y;
  enum status s;
  VkDeviceSize mark = act_mark(&r->T);
  if ((s = alloc(r, &r->T, 4, (int64_t[]){N, b->cin, H, W}, &h1)) || (s = alloc(r, &r->T, 4, (int64_t[]){N, b->cout, H, W}, &h2)) ||
      (s = alloc(r, &r->P, 4, (int64_t[]){N, b->cout, H, W}, &y)))
    return s;
  RUN(op_group_norm(g, h, &b->n1_w, &b->n1_b, &h1, GN_GROUPS, GN_EPS, true));           /* silu(norm1(x)) */
  RUN(op_conv2d(g, &h1, &b->c1_w, &b->c1_b, &h2, 3, 1, 1, false, &r->scratch));         /* conv1 */
  RUN(op_group_norm(g, &h2, &b->n2_w, &b->n2_b, &h2, GN_GROUPS, GN_EPS, true));          /* silu(norm2(h)) */
  if (b->has_shortcut)
    RUN(op_conv2d(g, h, &b->sc_w, &b->sc_b, &y, 1, 1, 0, false, &r->scratch));          /* nin_shortcut */
  else
    RUN(gpu_copy(g, h, &y));
  RUN(op_conv2d(g, &h2, &b->c2_w, &b->c2_b, &y, 3, 1, 1, true, &r->scratch));           /* y += conv2(h) */
  act_reset(&r->T, mark);
  *h = y;
  return STATUS_OK;
}

static enum status attention(struct run *r, struct gpu_tensor *x) {
  struct vae *v = r->v;
  struct gpu *g = v->g;
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], P = H * W, Cp = conv_weight_cols(C, 1);
  struct gpu_tensor hn, col, q, k, vv, a;
  enum status s;
  VkDeviceSize mark = act_mark(&r->T);
  if ((s = alloc(r, &r->T, 4, x->shape, &hn)) || (s = alloc(r, &r->T, 2, (int64_t[]){P, Cp}, &col)) ||
      (s = alloc(r, &r->T, 3, (int64_t[]){N, P, C}, &q)) || (s = alloc(r, &r->T, 3, (int64_t[]){N, P, C}, &k)) ||
      (s = alloc(r, &r->T, 3, (int64_t[]){N, P, C}, &vv)) || (s = alloc(r, &r->T, 3, (int64_t[]){N, P, C}, &a)))
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
  act_reset(&r->T, mark);
  return STATUS_OK;
}

static enum status trace(struct run *r, const struct gpu_tensor *src, float *dst) {
  if (!dst) return STATUS_OK;
  struct traced *t = &r->traced[r->n_traced++];
  enum status s = act_alloc(&r->P, DT_F32, src->ndim, src->shape, &t->t);
  t->dst = dst;
  if (!s && !r->P.measure) s = gpu_copy(r->v->g, src, &t->t);
  return s;
}

/* latent z [N, zc, h, w] (already divided by the scale factor) -> image [N, 3, f h, f w] */
static enum status walk(struct run *r, const struct gpu_tensor *z, struct gpu_tensor *image) {
  struct vae *v = r->v;
  struct gpu *g = v->g;
  int64_t N = z->shape[0], h = z->shape[2], w = z->shape[3];
  struct gpu_tensor x, y;
  enum status s;
  if ((s = alloc(r, &r->P, 4, (int64_t[]){N, v->z_channels, h, w}, &x))) return s;
  RUN(op_conv2d(g, z, &v->pq_w, &v->pq_b, &x, 1, 1, 0, false, &r->scratch));            /* post_quant_conv */
  if (r->trace && (s = trace(r, &x, r->trace->post_quant_conv))) return s;
  if ((s = alloc(r, &r->P, 4, (int64_t[]){N, v->top_channels, h, w}, &y))) return s;
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
      VkDeviceSize mark = act_mark(&r->T);
      if ((s = alloc(r, &r->T, 4, (int64_t[]){N, C, H2, W2}, &up)) || (s = alloc(r, &r->P, 4, (int64_t[]){N, C, H2, W2}, &c)))
        return s;
      RUN(op_upsample2x(g, &y, &up));
      RUN(op_conv2d(g, &up, &v->ups_w[i], &v->ups_b[i], &c, 3, 1, 1, false, &r->scratch));
      act_reset(&r->T, mark);
      y = c;
    }
    if (r->trace && (s = trace(r, &y, r->trace->up[i]))) return s;
  }
  struct gpu_tensor hn;
  VkDeviceSize mark = act_mark(&r->T);
  if ((s = alloc(r, &r->T, 4, y.shape, &hn))) return s;
  RUN(op_group_norm(g, &y, &v->no_w, &v->no_b, &hn, GN_GROUPS, GN_EPS, true));          /* silu(norm_out) */
  RUN(op_conv2d(g, &hn, &v->out_w, &v->out_b, image, 3, 1, 1, false, &r->scratch));     /* conv_out */
  act_reset(&r->T, mark);
  return STATUS_OK;
}

#define SCRATCH_ELEMS (4 << 20) /* 16 MiB of patches; convolutions chunk through it */

/* the output of a walk: the image, or the mid block's output */
static void out_shape(const struct vae *v, int N, int h, int w, bool mid_only, int64_t shape[4]) {
  int f = mid_only ? 1 : vae_factor(v);
  shape[0] = N, shape[1] = mid_only ? v->mid2.cout : v->out_channels, shape[2] = (int64_t)f * h, shape[3] = (int64_t)f * w;
}

static enum status plan(struct vae *v, int N, int h, int w, bool mid_only, VkDeviceSize *pbytes, VkDeviceSize *tbytes,
                        VkDeviceSize *largest, struct vae_trace *tr) {
  struct run r = {.v = v, .trace = tr, .mid_only = mid_only};
  r.P = (struct act){.g = v->g, .measure = true};
  r.T = (struct act){.g = v->g, .measure = true};
  int64_t osh[4];
  out_shape(v, N, h, w, mid_only, osh);
  struct gpu_tensor z, image;
  enum status s = act_alloc(&r.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &r.scratch);
  if (!s) s = alloc(&r, &r.P, 4, (int64_t[]){N, v->z_channels, h, w}, &z);
  if (!s) s = alloc(&r, &r.P, 4, osh, &image);
  if (!s) s = walk(&r, &z, &image);
  *pbytes = r.P.peak;
  *tbytes = r.T.peak;
  *largest = r.largest;
  return s;
}

/* One decode on the GPU of z [N, zc, h, w] (scaled by 1/scale here) into image (or, mid_only, into
 * the mid block's output [N, C, h, w]). */
static enum status decode_whole(struct vae *v, const float *latent, int N, int h, int w, bool mid_only, float *image,
                                struct vae_trace *tr) {
  VkDeviceSize pbytes, tbytes, largest;
  enum status s = plan(v, N, h, w, mid_only, &pbytes, &tbytes, &largest, tr);
  if (s) return s;
  struct run r = {.v = v, .trace = tr, .mid_only = mid_only};
  r.P = (struct act){.g = v->g};
  r.T = (struct act){.g = v->g};
  if ((s = act_prepare(&r.P, &v->persist, pbytes, "VAE activations")) ||
      (s = act_prepare(&r.T, &v->temps, tbytes, "VAE temporaries")))
    return s;
  if (pbytes + tbytes > v->act_bytes) v->act_bytes = pbytes + tbytes;
  int64_t osh[4];
  out_shape(v, N, h, w, mid_only, osh);
  struct gpu_tensor z, img;
  if ((s = act_alloc(&r.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &r.scratch)) ||
      (s = act_alloc(&r.P, DT_F32, 4, (int64_t[]){N, v->z_channels, h, w}, &z)) || (s = act_alloc(&r.P, DT_F32, 4, osh, &img)))
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
  for (int i = 0; i < r.n_traced && !s; i++) s = gpu_download(v->g, &r.traced[i].t, r.traced[i].dst, r.traced[i].t.bytes);
  if (!s) s = gpu_download(v->g, &img, image, img.bytes);
  return s;
}

/* --- tiled decoding, exact ---
 * The mid block (attention over every pixel) runs whole at latent resolution. The up path then
 * runs on tensors held in host memory: GroupNorm statistics are taken over the whole image on the
 * host (double sums), the element-wise steps (normalise + SiLU, nearest upsample, residual add)
 * run on the host, and every convolution runs on the GPU over bands of rows with a one-row halo.
 * Each band sees exactly the inputs the whole decode would, so the result is the whole decode's
 * (up to summation order), with no seams and no blending, while the GPU holds one band at a time. */

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
  struct act P;
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

/* y (+)= conv k x k (stride 1, zero padding k/2) of x, on the GPU in bands of rows */
static enum status conv_bands(struct bands *B, const struct host_t *x, const struct gpu_tensor *w, const struct gpu_tensor *b,
                              int k, int cout, struct host_t *y, bool accumulate) {
  int p = k / 2, C = x->C, H = x->H, W = x->W, Wp = W + 2 * p;
  long fit_in = (long)(B->cap / ((size_t)C * Wp)) - 2 * p, fit_out = (long)(B->cap / ((size_t)cout * W));
  long R = fit_in < fit_out ? fit_in : fit_out;
  if (B->rows > 0 && B->rows < R) R = B->rows;
  if (R > H) R = H;
  if (R < 1) return status_set(STATUS_UNSUPPORTED, "VAE tiled decode: one row of %d x %d channels does not fit a band", W, C);
  enum status s = STATUS_OK;
  for (int n = 0; n < x->N && !s; n++)
    for (int r0 = 0; r0 < H && !s; r0 += (int)R) {
      int rr = H - r0 < R ? H - r0 : (int)R, hp = rr + 2 * p;
      memset(B->pad, 0, (size_t)C * hp * Wp * sizeof *B->pad);
      for (int c = 0; c < C; c++)
        for (int yy = 0; yy < hp; yy++) {
          int sy = r0 - p + yy;
          if (sy >= 0 && sy < H)
            memcpy(B->pad + ((size_t)c * hp + yy) * Wp + p, x->d + (((size_t)n * C + c) * H + sy) * W, (size_t)W * sizeof(float));
        }
      struct gpu_tensor in = band_view(&B->in, C, hp, Wp), out = band_view(&B->out, cout, rr, W);
      if ((s = gpu_upload(B->v->g, &in, B->pad, in.bytes)) || (s = gpu_begin(B->v->g))) break;
      s = op_conv2d(B->v->g, &in, w, b, &out, k, 1, 0, false, &B->scratch);
      enum status s2 = gpu_submit(B->v->g);
      if (s || (s = s2) || (s = gpu_download(B->v->g, &out, B->got, out.bytes))) break;
      for (int c = 0; c < cout; c++) {
        float *dst = y->d + (((size_t)n * cout + c) * H + r0) * W;
        const float *src = B->got + (size_t)c * rr * W;
        if (accumulate)
          for (size_t i = 0; i < (size_t)rr * W; i++) dst[i] += src[i];
        else
          memcpy(dst, src, (size_t)rr * W * sizeof *dst);
      }
    }
  return s;
}

static enum status host_res(struct bands *B, const struct vae_res *blk, struct host_t *x) {
  struct host_t a = {0}, h = {0}, y = {0};
  enum status s = ht_alloc(&a, x->N, x->C, x->H, x->W);
  if (!s) s = host_group_norm_silu(B->v, x, &blk->n1_w, &blk->n1_b, &a);                        /* silu(norm1(x)) */
  if (!s) s = ht_alloc(&h, x->N, blk->cout, x->H, x->W);
  if (!s) s = conv_bands(B, &a, &blk->c1_w, &blk->c1_b, 3, blk->cout, &h, false);              /* conv1 */
  free(a.d);
  if (!s) s = host_group_norm_silu(B->v, &h, &blk->n2_w, &blk->n2_b, &h);                      /* silu(norm2(h)) */
  if (!s && blk->has_shortcut) {
    if (!(s = ht_alloc(&y, x->N, blk->cout, x->H, x->W)))
      s = conv_bands(B, x, &blk->sc_w, &blk->sc_b, 1, blk->cout, &y, false);                   /* nin_shortcut */
    free(x->d);
    x->d = NULL;
  } else if (!s) {
    y = *x;
    x->d = NULL;
  }
  if (!s) s = conv_bands(B, &h, &blk->c2_w, &blk->c2_b, 3, blk->cout, &y, true);               /* y += conv2(h) */
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

static enum status decode_tiled(struct vae *v, const float *latent, int N, int h, int w, float *image) {
  struct host_t x = {0};
  struct bands B = {.v = v, .rows = v->band_rows};
  const struct gpu_device_info *di = gpu_info(v->g);
  VkDeviceSize band = BAND_BYTES;
  if (band > di->max_storage_buffer_range) band = di->max_storage_buffer_range;
  if (band > di->max_allocation / 4) band = di->max_allocation / 4;
  B.cap = (size_t)(band / sizeof(float));
  enum status s = ht_alloc(&x, N, v->mid2.cout, h, w);
  if (!s) s = decode_whole(v, latent, N, h, w, true, x.d, NULL); /* post_quant_conv, conv_in, mid: whole */
  B.P = (struct act){.g = v->g};
  VkDeviceSize bytes = 2 * gpu_aligned_size(v->g, B.cap * sizeof(float)) + gpu_aligned_size(v->g, SCRATCH_ELEMS * sizeof(float));
  if (!s) s = act_prepare(&B.P, &v->persist, bytes, "VAE bands");
  if (!s && bytes > v->act_bytes) v->act_bytes = bytes;
  if (!s) s = act_alloc(&B.P, DT_F32, 1, (int64_t[]){(int64_t)B.cap}, &B.in);
  if (!s) s = act_alloc(&B.P, DT_F32, 1, (int64_t[]){(int64_t)B.cap}, &B.out);
  if (!s) s = act_alloc(&B.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &B.scratch);
  if (!s && (!(B.pad = malloc(B.cap * sizeof(float))) || !(B.got = malloc(B.cap * sizeof(float)))))
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
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

enum status vae_decode(struct vae *v, const float *latent, int N, int h, int w, enum vae_tiling tiling, float *image) {
  if (N <= 0 || h <= 0 || w <= 0) return status_set(STATUS_INVALID_ARGUMENT, "VAE decode: empty latent %dx%d", h, w);
  size_t nz = (size_t)N * v->z_channels * h * w;
  for (size_t i = 0; i < nz; i++)
    if (!isfinite(latent[i])) return status_set(STATUS_NUMERIC, "VAE decode: the latent holds a NaN or infinite value");
  bool tile = tiling == VAE_TILING_ON;
  if (tiling == VAE_TILING_AUTO) {
    VkDeviceSize pbytes, tbytes, largest;
    enum status s = plan(v, N, h, w, false, &pbytes, &tbytes, &largest, NULL);
    if (s) return s;
    const struct gpu_device_info *di = gpu_info(v->g);
    tile = largest > di->max_storage_buffer_range || pbytes > di->max_allocation || tbytes > di->max_allocation ||
           pbytes + tbytes > (1ull << 30);
  }
  v->tiled = tile;
  enum status s = tile ? decode_tiled(v, latent, N, h, w, image) : decode_whole(v, latent, N, h, w, false, image, NULL);
  if (s) return s;
  size_t ni = (size_t)N * v->out_channels * vae_factor(v) * h * vae_factor(v) * w;
  for (size_t i = 0; i < ni; i++)
    if (!isfinite(image[i])) return status_set(STATUS_NUMERIC, "the VAE produced a NaN or infinite value (element %zu)", i);
  return STATUS_OK;
}

double vae_gflop(const struct vae *v, int N, int h, int w) {
  double f = 0, P = (double)h * w;
  f += 2 * P * v->top_channels * v->z_channels * 9;
  const struct vae_res *mids[2] = {&v->mid1, &v->mid2};
  for (int i = 0; i < 2; i++) f += 2 * P * mids[i]->cout * (mids[i]->cin * 9 + mids[i]->cout * 9);
  double C = v->mid1.cout;
  f += 2 * P * C * C * 4 + 4 * P * P * C;
  for (int i = v->levels - 1; i >= 0; i--) {
    for (int j = 0; j < v->blocks; j++) {
      const struct vae_res *b = &v->up[i][j];
      f += 2 * P * b->cout * (b->cin * 9 + b->cout * 9 + (b->has_shortcut ? b->cin : 0));
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
  return decode_whole(v, latent, N, h, w, false, image, trace);
}
