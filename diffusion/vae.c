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

bool vae_encoder_present(const struct safetensors *st, const char *prefix) {
  char key[256], q[256];
  snprintf(key, sizeof key, "%sencoder.conv_in.weight", prefix ? prefix : "first_stage_model.");
  snprintf(q, sizeof q, "%squant_conv.weight", prefix ? prefix : "first_stage_model.");
  return safetensors_find(st, key) != NULL && safetensors_find(st, q) != NULL;
}

/* --- loading --- */

static enum status conv(struct weight_loader *l, enum dtype dt, const char *base, int cin, int cout, int k,
                        struct gpu_tensor *w, struct gpu_tensor *b) {
  return weight_load_conv(l, base, cin, cout, k, dt, w, b);
}

static enum status load_res(struct weight_loader *l, enum dtype dt, const char *base, struct resnet *r) {
  return resnet_load(l, &resnet_vae_names, base, 0, dt, GN_EPS, r);
}

static enum status load_attn(struct weight_loader *l, enum dtype dt, const char *base, int C, struct vae_attn *a) {
  /* q, k, v, proj_out are 1x1 convolutions: loaded as [C, Cp] for the token-layout products */
  char n[5][160];
  const char *leaf[5] = {"norm", "q", "k", "v", "proj_out"};
  for (int i = 0; i < 5; i++) snprintf(n[i], sizeof n[i], "%s.%s", base, leaf[i]);
  enum status s;
  if ((s = weight_load_norm(l, n[0], C, &a->n_w, &a->n_b)) || (s = conv(l, dt, n[1], C, C, 1, &a->q_w, &a->q_b)) ||
      (s = conv(l, dt, n[2], C, C, 1, &a->k_w, &a->k_b)) || (s = conv(l, dt, n[3], C, C, 1, &a->v_w, &a->v_b)))
    return s;
  return conv(l, dt, n[4], C, C, 1, &a->o_w, &a->o_b);
}

/* how many of `pattern` (with one %d) exist from 0 */
static int count_of(struct weight_loader *l, const char *pattern, int max) {
  char name[256];
  int n = 0;
  for (; n < max; n++) {
    snprintf(name, sizeof name, pattern, n);
    if (!weight_exists(l, name)) break;
  }
  return n;
}

/* levels: the decoder's (an encoder may have no ResBlocks, as the demo model's: then only its
 * downsamples mark the levels) */
static enum status load_encoder(struct weight_loader *l, enum dtype dt, int z_channels, int levels, struct vae_encoder *e) {
  int64_t sh[8];
  char name[256];
  enum status s;
  if ((s = weight_dims(l, "encoder.conv_in.weight", 4, sh))) return s;
  e->top_channels = (int)sh[0];
  if ((s = conv(l, dt, "encoder.conv_in", (int)sh[1], (int)sh[0], 3, &e->in_w, &e->in_b))) return s;
  e->levels = levels;
  e->blocks = count_of(l, "encoder.down.0.block.%d.conv1.weight", MAX_BLOCKS);
  int c = e->top_channels;
  for (int i = 0; i < e->levels; i++) {
    for (int j = 0; j < e->blocks; j++) {
      snprintf(name, sizeof name, "encoder.down.%d.block.%d", i, j);
      if ((s = load_res(l, dt, name, &e->down[i][j]))) return s;
      c = e->down[i][j].cout;
    }
    if (i < e->levels - 1) {
      snprintf(name, sizeof name, "encoder.down.%d.downsample.conv", i);
      if ((s = conv(l, dt, name, c, c, 3, &e->downs_w[i], &e->downs_b[i]))) return s;
    }
  }
  if ((s = load_res(l, dt, "encoder.mid.block_1", &e->mid1)) || (s = load_res(l, dt, "encoder.mid.block_2", &e->mid2))) return s;
  int C = e->mid1.cout;
  if ((s = load_attn(l, dt, "encoder.mid.attn_1", C, &e->attn))) return s;
  if ((s = weight_load_norm(l, "encoder.norm_out", C, &e->no_w, &e->no_b))) return s;
  e->moments = 2 * z_channels;
  if ((s = conv(l, dt, "encoder.conv_out", C, e->moments, 3, &e->out_w, &e->out_b))) return s;
  return conv(l, dt, "quant_conv", e->moments, e->moments, 1, &e->quant_w, &e->quant_b);
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
  if ((s = load_attn(l, dt, "decoder.mid.attn_1", C, &v->attn))) return s;
  char name[256];
  v->levels = count_of(l, "decoder.up.%d.block.0.conv1.weight", MAX_LEVELS);
  v->blocks = count_of(l, "decoder.up.0.block.%d.conv1.weight", MAX_BLOCKS);
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
  if ((s = conv(l, dt, "decoder.conv_out", c0, v->out_channels, 3, &v->out_w, &v->out_b))) return s;
  if (!v->has_encoder || v->enc_pending) return STATUS_OK; /* on demand: checked by vae_load, loaded later */
  return load_encoder(l, dt, v->z_channels, v->levels, &v->enc);
}

static enum status load_encoder_only(struct weight_loader *l, void *model) {
  struct vae *v = model;
  return load_encoder(l, v->fp16 ? DT_F16 : DT_F32, v->z_channels, v->levels, &v->enc);
}

/* An encoder on demand: loaded into its own arena at the first encode. */
static enum status encoder_ready(struct vae *v) {
  if (!v->enc_pending) return STATUS_OK;
  enum status s = weight_load_model(v->g, v->st, v->prefix, "VAE encoder weights", load_encoder_only, NULL, v,
                                    &v->enc_weights);
  if (!s) v->enc_pending = false;
  return s;
}

void vae_release_activations(struct vae *v) {
  if (!v) return;
  gpu_arena_destroy(v->temps);
  gpu_arena_destroy(v->persist);
  v->temps = v->persist = NULL;
}

void vae_destroy(struct vae *v) {
  if (!v) return;
  vae_release_activations(v);
  gpu_arena_destroy(v->enc_weights);
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
  v->has_encoder = opt->encoder;
  const char *prefix = opt->prefix ? opt->prefix : "first_stage_model.";
  enum status s = STATUS_OK;
  if (strlen(prefix) >= sizeof v->prefix) s = status_set(STATUS_INVALID_ARGUMENT, "VAE: prefix '%s' too long", prefix);
  snprintf(v->prefix, sizeof v->prefix, "%s", prefix);
  v->st = st;
  v->enc_pending = opt->encoder && opt->encoder_on_demand;
  if (!s) s = weight_load_model(g, st, prefix, "VAE weights", load_all, NULL, v, &v->weights);
  if (!s && v->enc_pending) { /* the encoder's tensors only checked now */
    struct weight_loader check = {.g = g, .st = st, .prefix = prefix}; /* no arena: a measuring pass */
    s = load_encoder_only(&check, v);
    weight_loader_free(&check);
  }
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
uint64_t vae_weight_bytes(const struct vae *v) {
  return gpu_arena_used(v->weights) + (v->enc_weights ? gpu_arena_used(v->enc_weights) : 0);
}
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
  enum vae_mode mode;
};

#define RUN(call) WORKSPACE_RECORD(&r->T, call)

static enum status alloc(struct workspace *a, int ndim, const int64_t *shape, struct gpu_tensor *t) {
  return workspace_alloc(a, DT_F32, ndim, shape, t);
}

/* *h = block(*h): in place where the channels stay (y = x + conv2(...) needs x only before), else
 * a new persistent tensor (the persistent stack then holds one tensor a level, not one a block) */
static enum status res(struct run *r, const struct resnet *b, struct gpu_tensor *h) {
  if (!b->has_skip) return resnet_forward(r->v->g, &r->T, b, h, NULL, h, &r->scratch);
  struct gpu_tensor y;
  enum status s = alloc(&r->P, 4, (int64_t[]){h->shape[0], b->cout, h->shape[2], h->shape[3]}, &y);
  if (!s) s = resnet_forward(r->v->g, &r->T, b, h, NULL, &y, &r->scratch);
  if (!s) *h = y;
  return s;
}

static enum status attention(struct run *r, const struct vae_attn *at, struct gpu_tensor *x) {
  struct vae *v = r->v;
  struct gpu *g = v->g;
  int64_t N = x->shape[0], C = x->shape[1], P = x->shape[2] * x->shape[3];
  struct gpu_tensor hn, q, k, vv, a;
  enum status s;
  VkDeviceSize mark = workspace_mark(&r->T);
  if ((s = alloc(&r->T, 4, x->shape, &hn)) || (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &q)) ||
      (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &k)) || (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &vv)) ||
      (s = alloc(&r->T, 3, (int64_t[]){N, P, C}, &a)))
    return s;
  RUN(op_group_norm(g, x, &at->n_w, &at->n_b, &hn, GN_GROUPS, GN_EPS, false));
  /* q, k, v: 1x1 convolutions, written as tokens [N, P, C] */
  RUN(op_conv2d_tokens(g, &hn, &at->q_w, &at->q_b, &q, &r->scratch, CONV_AUTO));
  RUN(op_conv2d_tokens(g, &hn, &at->k_w, &at->k_b, &k, &r->scratch, CONV_AUTO));
  RUN(op_conv2d_tokens(g, &hn, &at->v_w, &at->v_b, &vv, &r->scratch, CONV_AUTO));
  RUN(op_attention(g, &q, &k, &vv, &a, 1, false, 1.0f / sqrtf((float)C))); /* one head over all pixels */
  RUN(op_matmul_nchw(g, &at->o_w, &a, &at->o_b, x, true));                  /* x += proj_out(a) */
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
  if ((s = res(r, &v->mid1, &y)) || (s = attention(r, &v->attn, &y)) || (s = res(r, &v->mid2, &y))) return s;
  if (r->trace && (s = trace(r, &y, r->trace->mid))) return s;
  if (r->mode == VAE_MID) {
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


/* image [N, 3, H, W] -> moments [N, 2 z, H / f, W / f] (mean, then logvar; quant_conv applied) */
static enum status walk_encode(struct run *r, const struct gpu_tensor *image, struct gpu_tensor *moments) {
  struct vae *v = r->v;
  const struct vae_encoder *e = &v->enc;
  struct gpu *g = v->g;
  int64_t N = image->shape[0];
  struct gpu_tensor y, hn, o;
  enum status s;
  if (r->mode == VAE_ENC_TAIL) { /* the down path ran in bands (vae_tiled.c): from the mid block */
    y = *image;
  } else {
    if ((s = alloc(&r->P, 4, (int64_t[]){N, e->top_channels, image->shape[2], image->shape[3]}, &y))) return s;
    RUN(op_conv2d(g, image, &e->in_w, &e->in_b, &y, 3, 1, 1, false, &r->scratch));     /* conv_in */
  }
  for (int i = 0; i < e->levels && r->mode != VAE_ENC_TAIL; i++) {
    for (int j = 0; j < e->blocks; j++)
      if ((s = res(r, &e->down[i][j], &y))) return s;
    if (i < e->levels - 1) { /* F.pad(x, (0, 1, 0, 1)), conv 3x3 stride 2 */
      struct gpu_tensor c;
      int64_t Ho = conv_out_size(y.shape[2], 3, 2, CONV_PAD_BOTTOM_RIGHT), Wo = conv_out_size(y.shape[3], 3, 2, CONV_PAD_BOTTOM_RIGHT);
      if ((s = alloc(&r->P, 4, (int64_t[]){N, y.shape[1], Ho, Wo}, &c))) return s;
      RUN(op_conv2d(g, &y, &e->downs_w[i], &e->downs_b[i], &c, 3, 2, CONV_PAD_BOTTOM_RIGHT, false, &r->scratch));
      y = c;
    }
  }
  if ((s = res(r, &e->mid1, &y)) || (s = attention(r, &e->attn, &y)) || (s = res(r, &e->mid2, &y))) return s;
  VkDeviceSize mark = workspace_mark(&r->T);
  if ((s = alloc(&r->T, 4, y.shape, &hn)) || (s = alloc(&r->T, 4, moments->shape, &o))) return s;
  RUN(op_group_norm(g, &y, &e->no_w, &e->no_b, &hn, GN_GROUPS, GN_EPS, true));          /* silu(norm_out) */
  RUN(op_conv2d(g, &hn, &e->out_w, &e->out_b, &o, 3, 1, 1, false, &r->scratch));        /* conv_out */
  RUN(op_conv2d(g, &o, &e->quant_w, &e->quant_b, moments, 1, 1, 0, false, &r->scratch)); /* quant_conv */
  workspace_reset(&r->T, mark);
  return STATUS_OK;
}

/* a walk's input and output: latent -> image (or the mid block's output), or image -> moments;
 * h, w: the latent's size (the image's for VAE_ENCODE) */
static void io_shapes(const struct vae *v, enum vae_mode mode, int N, int h, int w, int64_t in[4], int64_t out[4]) {
  int f = vae_factor(v);
  if (mode == VAE_ENCODE || mode == VAE_ENC_TAIL) {
    int g = mode == VAE_ENC_TAIL ? 1 : f;
    in[0] = N, in[1] = mode == VAE_ENC_TAIL ? v->enc.mid1.cin : 3, in[2] = h, in[3] = w;
    out[0] = N, out[1] = v->enc.moments, out[2] = h / g, out[3] = w / g;
    return;
  }
  in[0] = N, in[1] = v->z_channels, in[2] = h, in[3] = w;
  out[0] = N, out[1] = mode == VAE_MID ? v->mid2.cout : v->out_channels;
  out[2] = (int64_t)(mode == VAE_MID ? 1 : f) * h, out[3] = (int64_t)(mode == VAE_MID ? 1 : f) * w;
}

static enum status walk_mode(struct run *r, const struct gpu_tensor *in, struct gpu_tensor *out) {
  return r->mode == VAE_ENCODE || r->mode == VAE_ENC_TAIL ? walk_encode(r, in, out) : walk(r, in, out);
}

enum status vae_plan(struct vae *v, enum vae_mode mode, int N, int h, int w, VkDeviceSize *pbytes, VkDeviceSize *tbytes,
                     VkDeviceSize *largest, struct vae_trace *tr) {
  struct run r = {.v = v, .trace = tr, .mode = mode};
  r.P = (struct workspace){.g = v->g, .measure = true};
  r.T = (struct workspace){.g = v->g, .measure = true};
  int64_t ish[4], osh[4];
  io_shapes(v, mode, N, h, w, ish, osh);
  struct gpu_tensor in, out;
  enum status s = workspace_alloc(&r.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &r.scratch);
  if (!s) s = alloc(&r.P, 4, ish, &in);
  if (!s) s = alloc(&r.P, 4, osh, &out);
  if (!s) s = walk_mode(&r, &in, &out);
  *pbytes = r.P.peak;
  *tbytes = r.T.peak;
  *largest = r.P.largest > r.T.largest ? r.P.largest : r.T.largest;
  return s;
}

enum status vae_run_whole(struct vae *v, enum vae_mode mode, const float *input, int N, int h, int w, float *output,
                          struct vae_trace *tr) {
  VkDeviceSize pbytes, tbytes, largest;
  enum status s = vae_plan(v, mode, N, h, w, &pbytes, &tbytes, &largest, tr);
  if (s) return s;
  struct run r = {.v = v, .trace = tr, .mode = mode};
  r.P = (struct workspace){.g = v->g};
  r.T = (struct workspace){.g = v->g};
  if ((s = workspace_prepare(&r.P, &v->persist, pbytes, "VAE activations")) ||
      (s = workspace_prepare(&r.T, &v->temps, tbytes, "VAE temporaries")))
    return s;
  if (pbytes + tbytes > v->act_bytes) v->act_bytes = pbytes + tbytes;
  int64_t ish[4], osh[4];
  io_shapes(v, mode, N, h, w, ish, osh);
  struct gpu_tensor in, out;
  if ((s = workspace_alloc(&r.P, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &r.scratch)) ||
      (s = workspace_alloc(&r.P, DT_F32, 4, ish, &in)) || (s = workspace_alloc(&r.P, DT_F32, 4, osh, &out)))
    return s;
  size_t n = (size_t)gpu_tensor_numel(&in);
  float *x = malloc(n * sizeof *x);
  if (!x) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  bool latent = mode == VAE_DECODE || mode == VAE_MID;
  for (size_t i = 0; i < n; i++) x[i] = latent ? input[i] / v->scale : input[i]; /* a latent: unscaled */
  s = gpu_upload(v->g, &in, x, n * sizeof *x);
  free(x);
  if (s || (s = gpu_begin(v->g))) return s;
  s = walk_mode(&r, &in, &out);
  enum status s2 = gpu_submit(v->g);
  if (s || s2) return s ? s : s2;
  s = workspace_trace_download(v->g, r.traced, r.n_traced);
  if (!s) s = gpu_download(v->g, &out, output, out.bytes);
  return s;
}

bool vae_has_encoder(const struct vae *v) { return v->has_encoder; }

void vae_sample_latent(const float *mean, const float *logvar, const float *noise, size_t n, float scale, float *latent) {
  for (size_t i = 0; i < n; i++)
    latent[i] = (float)(((double)mean[i] + (noise ? exp(0.5 * (double)logvar[i]) * noise[i] : 0.0)) * scale);
}

enum status vae_encode(struct vae *v, const float *image, int N, int H, int W, enum vae_tiling tiling, float *mean,
                       float *logvar) {
  int f = vae_factor(v);
  if (!v->has_encoder) return status_set(STATUS_INVALID_ARGUMENT, "VAE encode: the encoder was not loaded");
  enum status es = encoder_ready(v);
  if (es) return es;
  if (N <= 0 || H < f || W < f || H % f || W % f)
    return status_set(STATUS_INVALID_ARGUMENT, "VAE encode: a %dx%d image is not a multiple of %d", W, H, f);
  size_t ni = (size_t)N * 3 * H * W, nz = (size_t)N * v->z_channels * (H / f) * (W / f), plane = nz / N;
  for (size_t i = 0; i < ni; i++)
    if (!isfinite(image[i])) return status_set(STATUS_NUMERIC, "VAE encode: the image holds a NaN or infinite value");
  float *moments = malloc(2 * nz * sizeof *moments);
  if (!moments) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  bool tile = tiling == VAE_TILING_ON;
  enum status s = STATUS_OK;
  if (tiling == VAE_TILING_AUTO) { /* as the decode: when the whole encode would not fit */
    VkDeviceSize pbytes, tbytes, largest;
    s = vae_plan(v, VAE_ENCODE, N, H, W, &pbytes, &tbytes, &largest, NULL);
    const struct gpu_device_info *di = gpu_info(v->g);
    tile = largest > di->max_storage_buffer_range || pbytes > di->max_allocation || tbytes > di->max_allocation ||
           pbytes + tbytes > (1ull << 30);
  }
  v->tiled = tile;
  if (!s) s = tile ? vae_encode_tiled(v, image, N, H, W, moments) : vae_run_whole(v, VAE_ENCODE, image, N, H, W, moments, NULL);
  for (size_t n = 0; !s && n < (size_t)N; n++) { /* [mean | logvar] per image; logvar clamped as ldm does */
    memcpy(mean + n * plane, moments + 2 * n * plane, plane * sizeof *mean);
    for (size_t i = 0; i < plane; i++) {
      float lv = moments[(2 * n + 1) * plane + i];
      logvar[n * plane + i] = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
    }
  }
  free(moments);
  for (size_t i = 0; !s && i < nz; i++)
    if (!isfinite(mean[i]) || !isfinite(logvar[i]))
      s = status_set(STATUS_NUMERIC, "the VAE encoder produced a NaN or infinite value (element %zu)", i);
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
    enum status s = vae_plan(v, VAE_DECODE, N, h, w, &pbytes, &tbytes, &largest, NULL);
    if (s) return s;
    const struct gpu_device_info *di = gpu_info(v->g);
    tile = largest > di->max_storage_buffer_range || pbytes > di->max_allocation || tbytes > di->max_allocation ||
           pbytes + tbytes > (1ull << 30);
  }
  v->tiled = tile;
  enum status s = tile ? vae_decode_tiled(v, latent, N, h, w, image) : vae_run_whole(v, VAE_DECODE, latent, N, h, w, image, NULL);
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
  return vae_run_whole(v, VAE_DECODE, latent, N, h, w, image, trace);
}

void image_to_u8(const float *image, int H, int W, unsigned char *out) {
  size_t P = (size_t)H * W;
  for (size_t p = 0; p < P; p++)
    for (int c = 0; c < 3; c++) {
      double v = floor(((double)image[c * P + p] + 1.0) * 127.5 + 0.5);
      out[p * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}
