/* TAESD (taesd.h): the two networks as lists of layers over three ping-pong buffers. */
#define _POSIX_C_SOURCE 200809L
#include "taesd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "safetensors.h"
#include "weight_loader.h"
#include "workspace.h"

enum layer_op { L_CONV_BIAS, L_CONV, L_CONV_S2, L_RELU, L_BLOCK, L_UP };

/* S scale stages (TAESD: 3, 8x; the demo model's: 2, 4x):
 *   decoder: conv, ReLU, S x [3 Blocks, up, conv], Block, conv      (4 + 5 S layers)
 *   encoder: conv, Block, S x [conv stride 2, 3 Blocks], conv        (3 + 4 S layers) */
#define MAX_STAGES 3
#define MAX_LAYERS (4 + 5 * MAX_STAGES)

static int build_ops(bool decoder, int stages, enum layer_op *ops) {
  int n = 0;
  ops[n++] = L_CONV_BIAS;
  ops[n++] = decoder ? L_RELU : L_BLOCK;
  for (int st = 0; st < stages; st++) {
    if (!decoder) ops[n++] = L_CONV_S2;
    for (int b = 0; b < 3; b++) ops[n++] = L_BLOCK;
    if (decoder) ops[n++] = L_UP, ops[n++] = L_CONV;
  }
  if (decoder) ops[n++] = L_BLOCK;
  ops[n++] = L_CONV_BIAS;
  return n;
}
#define SCRATCH_ELEMS (4 << 20)

struct layer {
  int cin, cout;
  struct gpu_tensor w[3], b[3]; /* a conv: w[0] (b[0]); a Block: conv.0, conv.2, conv.4 */
};

struct net {
  bool present;
  enum layer_op ops[MAX_LAYERS];
  int n, stages, width; /* width: the channels between the first and last convolutions (TAESD: 64) */
  char fmt[32]; /* the checkpoint name of layer i: printf(fmt, i + offset) */
  int offset;
  struct layer l[MAX_LAYERS];
};

struct taesd {
  struct gpu *g;
  bool fp16;
  int latent_channels, factor;
  char path[1024];
  struct net dec, enc;
  struct gpu_arena *weights, *acts;
};

bool taesd_has_decoder(const struct taesd *t) { return t->dec.present; }
bool taesd_has_encoder(const struct taesd *t) { return t->enc.present; }
int taesd_latent_channels(const struct taesd *t) { return t->latent_channels; }
int taesd_factor(const struct taesd *t) { return t->factor; }

/* the layer count from the index of the last convolution ("FMT.weight"), then the stages */
static enum status size_net(const struct safetensors *st, const char *path, bool decoder, struct net *nt) {
  int last = -1;
  char key[96];
  for (int i = 0; i < MAX_LAYERS + 1; i++) {
    snprintf(key, sizeof key, nt->fmt, i + nt->offset);
    strncat(key, ".weight", sizeof key - strlen(key) - 1);
    if (safetensors_find(st, key)) last = i;
  }
  int n = last + 1, per = decoder ? 5 : 4, fixed = decoder ? 4 : 3;
  nt->stages = (n - fixed) / per;
  if (n < fixed + per || (n - fixed) % per || nt->stages > MAX_STAGES)
    return status_set(STATUS_FORMAT, "%s: a TAESD %s of %d layers (expected %d + %d per stage, 1 to %d stages)", path,
                      decoder ? "decoder" : "encoder", n, fixed, per, MAX_STAGES);
  nt->n = build_ops(decoder, nt->stages, nt->ops);
  return STATUS_OK;
}

static enum status load_net(struct weight_loader *l, enum dtype dt, struct net *nt) {
  char base[96];
  enum status s;
  for (int i = 0; i < nt->n; i++) {
    struct layer *L = &nt->l[i];
    snprintf(base, sizeof base, nt->fmt, i + nt->offset);
    enum layer_op op = nt->ops[i];
    if (op == L_RELU || op == L_UP) continue;
    if (op == L_BLOCK) {
      L->cin = L->cout = nt->width;
      for (int k = 0; k < 3; k++) {
        char name[128];
        snprintf(name, sizeof name, "%s.conv.%d", base, 2 * k);
        if ((s = weight_load_conv(l, name, nt->width, nt->width, 3, dt, &L->w[k], &L->b[k]))) return s;
      }
      continue;
    }
    int64_t sh[8];
    char wname[128];
    snprintf(wname, sizeof wname, "%s.weight", base);
    if ((s = weight_dims(l, wname, 4, sh))) return s;
    L->cin = (int)sh[1], L->cout = (int)sh[0];
    if (i == 0) nt->width = L->cout; /* the first convolution sets the width */
    if (i == 0 && (nt->width < 1 || nt->width > 256))
      return status_set(STATUS_FORMAT, "%s: a TAESD %d channels wide (1 to 256)", safetensors_path(l->st), nt->width);
    if ((s = weight_load_conv(l, base, sh[1], sh[0], 3, dt, &L->w[0], op == L_CONV_BIAS ? &L->b[0] : NULL))) return s;
  }
  return STATUS_OK;
}

static enum status load_all(struct weight_loader *l, void *model) {
  struct taesd *t = model;
  enum dtype dt = t->fp16 ? DT_F16 : DT_F32;
  enum status s = STATUS_OK;
  if (t->dec.present && (s = load_net(l, dt, &t->dec))) return s;
  if (t->enc.present && (s = load_net(l, dt, &t->enc))) return s;
  /* the shapes that must agree: one width throughout, the latent's channels at both ends */
  const struct net *d = &t->dec, *e = &t->enc;
  int zc = d->present ? d->l[0].cin : e->l[e->n - 1].cout, dw = d->width, ew = e->width;
  if ((d->present && (d->l[d->n - 1].cout != 3 || d->l[d->n - 1].cin != dw)) ||
      (e->present && (e->l[0].cin != 3 || e->l[e->n - 1].cout != zc || e->l[e->n - 1].cin != ew)))
    return status_set(STATUS_FORMAT, "%s: not a TAESD network (its first and last convolutions have unexpected shapes)",
                      t->path);
  for (int i = 0; i < d->n && d->present; i++)
    if (d->ops[i] == L_CONV && (d->l[i].cin != dw || d->l[i].cout != dw))
      return status_set(STATUS_FORMAT, "%s: decoder layer %d is %dx%d, not %dx%d", t->path, i, d->l[i].cout, d->l[i].cin, dw, dw);
  for (int i = 0; i < e->n && e->present; i++)
    if (e->ops[i] == L_CONV_S2 && (e->l[i].cin != ew || e->l[i].cout != ew))
      return status_set(STATUS_FORMAT, "%s: encoder layer %d is %dx%d, not %dx%d", t->path, i, e->l[i].cout, e->l[i].cin, ew, ew);
  t->latent_channels = zc;
  return STATUS_OK;
}

void taesd_destroy(struct taesd *t) {
  if (!t) return;
  gpu_arena_destroy(t->acts);
  gpu_arena_destroy(t->weights);
  free(t);
}

enum status taesd_load(struct gpu *g, const char *path, bool fp16, struct taesd **out) {
  *out = NULL;
  struct safetensors *st = NULL;
  enum status s = safetensors_open(path, &st);
  if (s) return s;
  struct taesd *t = calloc(1, sizeof *t);
  if (!t) {
    safetensors_close(st);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  t->g = g;
  t->fp16 = fp16 && gpu_has_fp16(g) && gpu_texel_format_ok(g, VK_FORMAT_R16G16B16A16_SFLOAT);
  snprintf(t->path, sizeof t->path, "%s", path);
  t->dec = (struct net){0};
  t->enc = (struct net){0};
  /* the layouts: diffusers' names, else the original files' indices */
  const struct st_tensor *d0 = safetensors_find(st, "1.weight"), *e0 = safetensors_find(st, "0.weight");
  if (safetensors_find(st, "decoder.layers.0.weight")) {
    t->dec.present = true;
    snprintf(t->dec.fmt, sizeof t->dec.fmt, "decoder.layers.%%d");
  } else if (!e0 && d0 && d0->ndim == 4 && d0->shape[1] != 3) {
    t->dec.present = true; /* taesd_decoder: index 0 is the clamp */
    snprintf(t->dec.fmt, sizeof t->dec.fmt, "%%d");
    t->dec.offset = 1;
  }
  if (safetensors_find(st, "encoder.layers.0.weight")) {
    t->enc.present = true;
    snprintf(t->enc.fmt, sizeof t->enc.fmt, "encoder.layers.%%d");
  } else if (e0 && e0->ndim == 4 && e0->shape[1] == 3) {
    t->enc.present = true;
    snprintf(t->enc.fmt, sizeof t->enc.fmt, "%%d");
  }
  if (!t->dec.present && !t->enc.present)
    s = status_set(STATUS_FORMAT, "%s: not a TAESD file (neither decoder.layers.0.weight nor encoder.layers.0.weight, "
                   "nor the original taesd_decoder / taesd_encoder keys)", path);
  if (!s && t->dec.present) s = size_net(st, path, true, &t->dec);
  if (!s && t->enc.present) s = size_net(st, path, false, &t->enc);
  if (!s && t->dec.present && t->enc.present && t->dec.stages != t->enc.stages)
    s = status_set(STATUS_FORMAT, "%s: a %dx TAESD decoder with a %dx encoder", path, 1 << t->dec.stages, 1 << t->enc.stages);
  t->factor = 1 << (t->dec.present ? t->dec.stages : t->enc.stages);
  if (!s) s = weight_load_model(g, st, "", "TAESD weights", load_all, NULL, t, &t->weights);
  safetensors_close(st);
  if (s) {
    taesd_destroy(t);
    return s;
  }
  *out = t;
  return STATUS_OK;
}

/* the largest activation of a walk, in values, for N images of H x W at the input */
static int64_t largest(const struct net *nt, int64_t N, int64_t H, int64_t W, int cin) {
  int64_t most = N * cin * H * W;
  for (int i = 0; i < nt->n; i++) {
    if (nt->ops[i] == L_UP) H *= 2, W *= 2;
    if (nt->ops[i] == L_CONV_S2) H = conv_out_size(H, 3, 2, 1), W = conv_out_size(W, 3, 2, 1);
    int c = nt->ops[i] == L_RELU || nt->ops[i] == L_UP ? nt->width : nt->l[i].cout;
    if (N * c * H * W > most) most = N * c * H * W;
  }
  return most;
}

#define RUN(call)                 \
  do {                            \
    if ((s = (call))) return s;   \
  } while (0)

static struct gpu_tensor view(const struct gpu_tensor *flat, int64_t N, int64_t C, int64_t H, int64_t W) {
  struct gpu_tensor t = gpu_tensor_rows(flat, 0, N * C * H * W);
  return gpu_tensor_reshape(&t, 4, (int64_t[]){N, C, H, W});
}

/* in (buf[0], [N, cin, H, W]) through the layers; *out: the buffer index and shape holding the result */
static enum status walk(struct taesd *t, const struct net *nt, struct gpu_tensor buf[3], const struct gpu_tensor *scratch,
                        int64_t shape[4], int *cur) {
  struct gpu *g = t->g;
  enum status s;
  int64_t N = shape[0], C = shape[1], H = shape[2], W = shape[3];
  int a = 0;
  for (int i = 0; i < nt->n; i++) {
    const struct layer *L = &nt->l[i];
    int b = (a + 1) % 3, c = (a + 2) % 3;
    struct gpu_tensor x = view(&buf[a], N, C, H, W);
    switch (nt->ops[i]) {
    case L_RELU:
      RUN(op_activation(g, &x, &x, ACT_RELU));
      continue;
    case L_UP: {
      struct gpu_tensor y = view(&buf[b], N, C, 2 * H, 2 * W);
      RUN(op_upsample2x(g, &x, &y));
      H *= 2, W *= 2, a = b;
      continue;
    }
    case L_BLOCK: { /* y = x; y += conv4(relu(conv2(relu(conv0(x))))); relu(y) */
      struct gpu_tensor t1 = view(&buf[b], N, C, H, W), t2 = view(&buf[c], N, C, H, W);
      RUN(op_conv2d(g, &x, &L->w[0], &L->b[0], &t1, 3, 1, 1, false, scratch));
      RUN(op_activation(g, &t1, &t1, ACT_RELU));
      RUN(op_conv2d(g, &t1, &L->w[1], &L->b[1], &t2, 3, 1, 1, false, scratch));
      RUN(op_activation(g, &t2, &t2, ACT_RELU));
      RUN(gpu_copy(g, &x, &t1));
      RUN(op_conv2d(g, &t2, &L->w[2], &L->b[2], &t1, 3, 1, 1, true, scratch));
      RUN(op_activation(g, &t1, &t1, ACT_RELU));
      a = b;
      continue;
    }
    default: {
      bool s2 = nt->ops[i] == L_CONV_S2;
      int64_t Ho = s2 ? conv_out_size(H, 3, 2, 1) : H, Wo = s2 ? conv_out_size(W, 3, 2, 1) : W;
      struct gpu_tensor y = view(&buf[b], N, L->cout, Ho, Wo);
      RUN(op_conv2d(g, &x, &L->w[0], nt->ops[i] == L_CONV_BIAS ? &L->b[0] : NULL, &y, 3, s2 ? 2 : 1, 1, false, scratch));
      C = L->cout, H = Ho, W = Wo, a = b;
    }
    }
  }
  shape[1] = C, shape[2] = H, shape[3] = W;
  *cur = a;
  return STATUS_OK;
}

/* one network over N images: input [N, cin, H, W] (host) -> output (host) */
static enum status run_net(struct taesd *t, const struct net *nt, const float *input, int N, int cin, int H, int W,
                           float *output, size_t out_n) {
  int64_t most = largest(nt, N, H, W, cin);
  struct workspace ws = {.g = t->g};
  VkDeviceSize bytes = (VkDeviceSize)(3 * most + SCRATCH_ELEMS) * 4 + 4096;
  enum status s = workspace_prepare(&ws, &t->acts, bytes, "TAESD activations");
  struct gpu_tensor buf[3], scratch;
  for (int k = 0; k < 3 && !s; k++) s = workspace_alloc(&ws, DT_F32, 1, (int64_t[]){most}, &buf[k]);
  if (!s) s = workspace_alloc(&ws, DT_F32, 1, (int64_t[]){SCRATCH_ELEMS}, &scratch);
  size_t n_in = (size_t)N * cin * H * W;
  struct gpu_tensor in = view(&buf[0], N, cin, H, W);
  if (!s) s = gpu_upload(t->g, &in, input, n_in * sizeof *input);
  if (s || (s = gpu_begin(t->g))) return s;
  int64_t shape[4] = {N, cin, H, W};
  int cur = 0;
  s = walk(t, nt, buf, &scratch, shape, &cur);
  enum status s2 = gpu_submit(t->g);
  if (s || s2) return s ? s : s2;
  if ((size_t)(shape[0] * shape[1] * shape[2] * shape[3]) != out_n)
    return status_set(STATUS_INVALID_ARGUMENT, "TAESD: output of %zu values, expected %zu", (size_t)(shape[0] * shape[1] * shape[2] * shape[3]), out_n);
  struct gpu_tensor o = view(&buf[cur], shape[0], shape[1], shape[2], shape[3]);
  s = gpu_download(t->g, &o, output, out_n * sizeof *output);
  for (size_t i = 0; !s && i < out_n; i++)
    if (!isfinite(output[i])) s = status_set(STATUS_NUMERIC, "TAESD produced a NaN or infinite value (element %zu)", i);
  return s;
}

enum status taesd_decode(struct taesd *t, const float *latent, int N, int h, int w, float *image) {
  if (!t->dec.present) return status_set(STATUS_INVALID_ARGUMENT, "%s: holds no TAESD decoder", t->path);
  if (N < 1 || h < 1 || w < 1 || h > 2048 || w > 2048)
    return status_set(STATUS_INVALID_ARGUMENT, "TAESD decode: a %dx%d latent", w, h);
  size_t n = (size_t)N * t->latent_channels * h * w;
  float *z = malloc(n * sizeof *z);
  if (!z) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = STATUS_OK;
  for (size_t i = 0; i < n && !s; i++) { /* the original's first layer: tanh(z / 3) 3 */
    if (!isfinite(latent[i])) s = status_set(STATUS_NUMERIC, "TAESD decode: the latent holds a NaN or infinite value");
    z[i] = (float)(tanh(latent[i] / 3.0) * 3.0);
  }
  if (!s) s = run_net(t, &t->dec, z, N, t->latent_channels, h, w, image, (size_t)N * 3 * (t->factor * h) * (t->factor * w));
  free(z);
  return s;
}

enum status taesd_encode(struct taesd *t, const float *image, int N, int H, int W, float *latent) {
  if (!t->enc.present) return status_set(STATUS_INVALID_ARGUMENT, "%s: holds no TAESD encoder", t->path);
  int f = t->factor;
  if (N < 1 || H < f || W < f || H % f || W % f || H > 16384 || W > 16384)
    return status_set(STATUS_INVALID_ARGUMENT, "TAESD encode: a %dx%d image is not a multiple of %d", W, H, f);
  size_t n = (size_t)N * 3 * H * W;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(image[i])) return status_set(STATUS_NUMERIC, "TAESD encode: the image holds a NaN or infinite value");
  return run_net(t, &t->enc, image, N, 3, H, W, latent, (size_t)N * t->latent_channels * (H / f) * (W / f));
}

void taesd_image_to_u8(const float *image, int H, int W, unsigned char *out) {
  size_t P = (size_t)H * W;
  for (size_t p = 0; p < P; p++)
    for (int c = 0; c < 3; c++) {
      double v = image[c * P + p];
      v = v < 0 ? 0 : v > 1 ? 1 : v;
      out[p * 3 + c] = (unsigned char)lround(v * 255.0);
    }
}
