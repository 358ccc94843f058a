/* vkdiffusion unet / decode: the networks one at a time, for plugging into other pipelines. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "guidance.h"
#include "model_config.h"
#include "png.h"
#include "safetensors.h"
#include "unet.h"
#include "vae.h"

struct part_opts {
  const char *model, *in, *out, *config;
  bool fp16;
  int device;
  enum vae_tiling tiling;
};

static int parse(int argc, char **argv, struct part_opts *o, const char *usage) {
  *o = (struct part_opts){.fp16 = true, .device = -1, .tiling = VAE_TILING_AUTO};
  long v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val;
    if (cli_is_help(a)) {
      printf("%s", usage);
      return 0;
    }
    if (!(val = cli_value(argc, argv, &i))) return 2;
    if (!strcmp(a, "--model")) o->model = val;
    else if (!strcmp(a, "--in")) o->in = val;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = val;
    else if (!strcmp(a, "--config")) o->config = val;
    else if (!strcmp(a, "--precision") && (!strcmp(val, "fp16") || !strcmp(val, "fp32"))) o->fp16 = !strcmp(val, "fp16");
    else if (!strcmp(a, "--device") && cli_int(a, val, 0, 64, &v)) o->device = (int)v;
    else if (!strcmp(a, "--vae-tiling") && (!strcmp(val, "auto") || !strcmp(val, "on") || !strcmp(val, "off")))
      o->tiling = !strcmp(val, "on") ? VAE_TILING_ON : !strcmp(val, "off") ? VAE_TILING_OFF : VAE_TILING_AUTO;
    else {
      fprintf(stderr, "vkdiffusion %s: bad option '%s %s' (see --help)\n", argv[0], a, val);
      return 2;
    }
  }
  if (!o->model || !o->in || !o->out) {
    fprintf(stderr, "vkdiffusion %s: --model, --in and -o are required (see --help)\n", argv[0]);
    return 2;
  }
  return -1;
}

static float *read_input(struct safetensors *st, const char *name, int ndim, const struct st_tensor **t) {
  *t = safetensors_find(st, name);
  if (!*t || (ndim && (*t)->ndim != ndim)) {
    fprintf(stderr, "vkdiffusion: %s: needs a %d-D tensor '%s'\n", safetensors_path(st), ndim, name);
    return NULL;
  }
  float *v = malloc((size_t)(*t)->numel * sizeof *v + 4);
  if (v) safetensors_read_f32(st, *t, v);
  return v;
}

int cmd_unet(int argc, char **argv) {
  struct part_opts o;
  int rc = parse(argc, argv, &o,
                 "usage: vkdiffusion unet --model CKPT --in IN.safetensors -o OUT.safetensors [--config FILE]\n"
                 "                        [--precision fp16|fp32] [--device N]\n\n"
                 "IN holds x [N,4,h,w], t [N] (timesteps, fractional allowed) and context [N,T,width];\n"
                 "OUT gets eps [N,4,h,w]. --config: a JSON object whose `unet` member holds diffusers keys\n"
                 "(num_attention_heads or attention_head_dim, an int or one per level).\n");
  if (rc >= 0) return rc;
  struct safetensors *in = NULL, *ck = NULL;
  struct gpu *g = NULL;
  struct unet *u = NULL;
  float *x = NULL, *t = NULL, *ctx = NULL, *eps = NULL;
  const struct st_tensor *xt, *tt, *ct;
  rc = 1;
  if (safetensors_open(o.in, &in)) {
    cli_fail("unet", NULL);
    goto done;
  }
  if (!(x = read_input(in, "x", 4, &xt)) || !(t = read_input(in, "t", 1, &tt)) || !(ctx = read_input(in, "context", 3, &ct)))
    goto done;
  if (tt->shape[0] != xt->shape[0] || ct->shape[0] != xt->shape[0]) {
    fprintf(stderr, "vkdiffusion unet: %s: x, t and context must have the same batch size\n", o.in);
    goto done;
  }
  struct unet_options uo = {.fp16 = o.fp16};
  if (safetensors_open(o.model, &ck) || model_unet_heads(o.config, uo.heads, &uo.heads_all) || !(g = cli_gpu("unet", o.device)) ||
      unet_load(g, ck, &uo, &u)) {
    if (g || !ck) cli_fail("unet", NULL);
    goto done;
  }
  eps = malloc((size_t)xt->numel * sizeof *eps);
  if (!eps || unet_forward(u, x, t, ctx, (int)xt->shape[0], (int)xt->shape[2], (int)xt->shape[3], (int)ct->shape[1], eps, NULL)) {
    cli_fail("unet", NULL);
    goto done;
  }
  struct st_writer *w;
  if (!st_writer_create(&w)) {
    st_writer_add(w, "eps", ST_F32, 4, xt->shape, eps);
    rc = st_writer_finish(w, o.out) ? cli_fail("unet", NULL) : 0;
    st_writer_destroy(w);
  }
done:
  free(x), free(t), free(ctx), free(eps);
  unet_destroy(u);
  safetensors_close(ck);
  safetensors_close(in);
  return cli_finish_gpu(g, rc);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

int cmd_decode(int argc, char **argv) {
  struct part_opts o;
  int rc = parse(argc, argv, &o,
                 "usage: vkdiffusion decode --model CKPT --in LATENT.safetensors (-o OUT.png | -o OUT.safetensors)\n"
                 "                          [--precision fp16|fp32] [--vae-tiling auto|on|off] [--device N]\n\n"
                 "LATENT holds latent [N,4,h,w] as the sampler leaves it (scaled: divided by 0.18215 here).\n"
                 "A .png output writes one PNG per image (OUT-i.png when N > 1); a .safetensors output gets\n"
                 "image [N,3,H,W] in about [-1,1].\n");
  if (rc >= 0) return rc;
  struct safetensors *in = NULL, *ck = NULL;
  struct gpu *g = NULL;
  struct vae *v = NULL;
  float *lat = NULL, *img = NULL;
  unsigned char *u8 = NULL;
  const struct st_tensor *lt;
  rc = 1;
  if (safetensors_open(o.in, &in)) {
    cli_fail("decode", NULL);
    goto done;
  }
  if (!(lat = read_input(in, "latent", 4, &lt))) goto done;
  if (safetensors_open(o.model, &ck) || !(g = cli_gpu("decode", o.device)) ||
      vae_load(g, ck, &(struct vae_options){.fp16 = o.fp16}, &v)) {
    if (g || !ck) cli_fail("decode", NULL);
    goto done;
  }
  int N = (int)lt->shape[0], h = (int)lt->shape[2], w = (int)lt->shape[3], f = vae_factor(v), H = f * h, W = f * w;
  img = malloc((size_t)N * 3 * H * W * sizeof *img);
  if (!img || vae_decode(v, lat, N, h, w, o.tiling, img)) {
    cli_fail("decode", NULL);
    goto done;
  }
  if (ends_with(o.out, ".png")) {
    u8 = malloc((size_t)H * W * 3);
    rc = 0;
    for (int n = 0; n < N && !rc; n++) {
      char path[4096];
      if (N == 1) snprintf(path, sizeof path, "%s", o.out);
      else snprintf(path, sizeof path, "%.*s-%d.png", (int)(strlen(o.out) - 4), o.out, n);
      image_to_u8(img + (size_t)n * 3 * H * W, H, W, u8);
      if (png_write(path, u8, W, H, NULL)) rc = cli_fail("decode", NULL);
    }
  } else {
    struct st_writer *wr;
    if (!st_writer_create(&wr)) {
      st_writer_add(wr, "image", ST_F32, 4, (int64_t[]){N, 3, H, W}, img);
      rc = st_writer_finish(wr, o.out) ? cli_fail("decode", NULL) : 0;
      st_writer_destroy(wr);
    }
  }
done:
  free(lat), free(img), free(u8);
  vae_destroy(v);
  safetensors_close(ck);
  safetensors_close(in);
  return cli_finish_gpu(g, rc);
}
