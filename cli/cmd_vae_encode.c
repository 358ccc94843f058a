/* vkdiffusion vae-encode: the VAE encoder alone (img2img's first half), an image in, the posterior
 * and a sampler latent out. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image_io.h"
#include "rng.h"
#include "textenc_internal.h"
#include "taesd.h"
#include "vae.h"

#define ENCODE_MAX_SIDE 8192
#define ENCODE_MAX_BATCH 64

static const char *const usage_text =
    "usage: vkdiffusion vae-encode (--model CKPT | --vae-encoder TAESD.safetensors)\n"
    "                              --in (IMAGE.png | IMAGE.jpg | image.safetensors) -o OUT.safetensors\n"
    "                              [--noise FILE | --seed S | --sample mean] [--precision fp16|fp32] [--device N]\n"
    "                              [--vae-tiling auto|on|off]\n\n"
    "The KL autoencoder's encoder and quant_conv: an image (a PNG, JPEG, ... decoded to RGB in [-1, 1], or a\n"
    "safetensors file holding `image` [N,3,H,W] in [-1, 1]; H and W multiples of the VAE's factor, 8 for SD)\n"
    "in; out `mean` and `logvar` [N,4,h,w] (logvar clamped to [-30, 20]) and `latent` = (mean +\n"
    "exp(logvar/2) * noise) * the scale factor (0.13025 for SDXL, else 0.18215): the sampler's latent.\n"
    "The noise: --noise FILE (`noise` [N,4,h,w]), else torch.manual_seed(S); torch.randn([N,4,h,w]) (--seed,\n"
    "default 0; --rng cpu|cpu-scalar as in generate); --sample mean: latent = mean * scale.\n"
    "--vae-encoder: madebyollin's tiny autoencoder's encoder instead (TAESD / TAESDXL): `latent` only, unscaled\n"
    "(as the U-Net takes it), deterministic.\n";

int cmd_vae_encode(int argc, char **argv) {
  /* this command's own options first; the rest are the part commands' common ones */
  const char *noise_file = NULL;
  long seed = 0;
  bool mean_only = false;
  enum rng_kind rk = RNG_CPU;
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  int nrest = 0;
  if (!rest) return 1;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    bool own = i > 0 && (!strcmp(a, "--noise") || !strcmp(a, "--seed") || !strcmp(a, "--sample") || !strcmp(a, "--rng"));
    if (!own) {
      rest[nrest++] = argv[i];
      continue;
    }
    if (!(val = cli_value(argc, argv, &i))) goto usage_error;
    if (!strcmp(a, "--noise")) noise_file = val;
    else if (!strcmp(a, "--seed") && !cli_int(a, val, 0, 4294967295L, &seed)) goto usage_error;
    else if (!strcmp(a, "--sample")) {
      if (strcmp(val, "mean") && strcmp(val, "random")) {
        fprintf(stderr, "vkdiffusion vae-encode: --sample expects mean or random, got '%s'\n", val);
        goto usage_error;
      }
      mean_only = !strcmp(val, "mean");
    } else if (!strcmp(a, "--rng")) {
      int k = rng_kind_parse(val);
      if (k < 0) {
        fprintf(stderr, "vkdiffusion vae-encode: --rng expects cpu or cpu-scalar, got '%s'\n", val);
        goto usage_error;
      }
      rk = (enum rng_kind)k;
    }
  }
  struct part_opts o;
  int rc = cli_parse_part(nrest, rest, &o, usage_text);
  free(rest);
  if (rc >= 0) return rc;
  bool tiny = o.taesd_encoder != NULL;
  if (tiny && (noise_file || mean_only)) {
    fprintf(stderr, "vkdiffusion vae-encode: --vae-encoder (TAESD) has no posterior: --noise and --sample do not apply\n");
    return 2;
  }
  if (noise_file && mean_only) {
    fprintf(stderr, "vkdiffusion vae-encode: --noise and --sample mean contradict each other\n");
    return 2;
  }
  enum textenc_family fam = TEXTENC_FAMILY_AUTO;
  char why[256];
  if (!tiny && textenc_detect_family(o.model, &fam, why, sizeof why)) return cli_fail("vae-encode", NULL);
  float scale = fam == TEXTENC_FAMILY_SDXL ? 0.13025f : 0.18215f;
  struct safetensors *ck = NULL, *in = NULL, *nf = NULL;
  struct gpu *g = NULL;
  struct vae *v = NULL;
  struct taesd *t = NULL;
  float *img = NULL, *mean = NULL, *logvar = NULL, *noise = NULL, *latent = NULL;
  unsigned char *rgb = NULL;
  int64_t is[4] = {1, 3, 0, 0};
  rc = 1;
  size_t len = strlen(o.in);
  bool tensor_in = len > 12 && !strcmp(o.in + len - 12, ".safetensors");
  char want[160];
  snprintf(want, sizeof want, "[N, 3, H, W] in [-1, 1] (H and W at most %d, N at most %d)", ENCODE_MAX_SIDE, ENCODE_MAX_BATCH);
  if (tensor_in) { /* the image tensor, checked before the model loads */
    if (safetensors_open(o.in, &in) || safetensors_read_input(in, "image", 4, (int64_t[]){-1, 3, -1, -1}, want, is, &img)) {
      cli_fail("vae-encode", NULL);
      goto done;
    }
    if (is[0] > ENCODE_MAX_BATCH || is[2] > ENCODE_MAX_SIDE || is[3] > ENCODE_MAX_SIDE) {
      fprintf(stderr, "vkdiffusion vae-encode: %s: tensor 'image' is [%lld, 3, %lld, %lld]; expected %s\n", o.in,
              (long long)is[0], (long long)is[2], (long long)is[3], want);
      goto done;
    }
  } else {
    int w, h;
    if (image_load_limited(o.in, (uint64_t)ENCODE_MAX_SIDE * ENCODE_MAX_SIDE, &rgb, &w, &h)) {
      cli_fail("vae-encode", NULL);
      goto done;
    }
    is[2] = h, is[3] = w;
    size_t P = (size_t)w * h;
    if (!(img = malloc(3 * P * sizeof *img))) goto oom;
    for (size_t p = 0; p < P; p++) /* HWC bytes -> CHW in [-1, 1], as AUTOMATIC1111 and diffusers */
      for (int c = 0; c < 3; c++) img[c * P + p] = rgb[p * 3 + c] / 127.5f - 1.0f;
  }
  if (!tiny && safetensors_open(o.model, &ck)) {
    cli_fail("vae-encode", NULL);
    goto done;
  }
  if (!(g = cli_gpu("vae-encode", o.device))) goto done;
  if (tiny ? taesd_load(g, o.taesd_encoder, o.fp16, &t)
           : vae_load(g, ck, &(struct vae_options){.fp16 = o.fp16, .encoder = true, .scale_factor = scale}, &v)) {
    cli_fail("vae-encode", NULL);
    goto done;
  }
  int N = (int)is[0], H = (int)is[2], W = (int)is[3], f = tiny ? taesd_factor(t) : vae_factor(v),
      C = tiny ? taesd_latent_channels(t) : vae_latent_channels(v);
  if (H % f || W % f) {
    fprintf(stderr, "vkdiffusion vae-encode: %s: a %dx%d image; the VAE needs multiples of %d (crop or resize it)\n", o.in,
            W, H, f);
    goto done;
  }
  int h = H / f, w = W / f;
  size_t nz = (size_t)N * C * h * w;
  if (!(mean = malloc(nz * sizeof *mean)) || !(logvar = malloc(nz * sizeof *logvar)) || !(latent = malloc(nz * sizeof *latent)))
    goto oom;
  if (tiny) { /* [-1, 1] -> TAESD's [0, 1]; the latent as the U-Net takes it */
    for (size_t i = 0; i < (size_t)N * 3 * H * W; i++) img[i] = (img[i] + 1.0f) * 0.5f;
    if (taesd_encode(t, img, N, H, W, latent)) {
      cli_fail("vae-encode", NULL);
      goto done;
    }
    struct st_writer *wr;
    if (!st_writer_create(&wr)) {
      st_writer_add(wr, "latent", ST_F32, 4, (int64_t[]){N, C, h, w}, latent);
      rc = st_writer_finish(wr, o.out) ? cli_fail("vae-encode", NULL) : 0;
      st_writer_destroy(wr);
    }
    goto done;
  }
  if (noise_file) {
    int64_t ns[4];
    char nwant[96];
    snprintf(nwant, sizeof nwant, "[%d, %d, %d, %d] (the latent's shape)", N, C, h, w);
    if (safetensors_open(noise_file, &nf) || safetensors_read_input(nf, "noise", 4, (int64_t[]){N, C, h, w}, nwant, ns, &noise)) {
      cli_fail("vae-encode", NULL);
      goto done;
    }
  } else if (!mean_only) {
    struct rng r;
    if (!(noise = malloc(nz * sizeof *noise))) goto oom;
    rng_seed_kind(&r, (uint64_t)seed, rk);
    rng_randn(&r, noise, nz);
  }
  if (vae_encode(v, img, N, H, W, o.tiling, mean, logvar)) {
    cli_fail("vae-encode", NULL);
    goto done;
  }
  vae_sample_latent(mean, logvar, noise, nz, scale, latent);
  struct st_writer *wr;
  if (!st_writer_create(&wr)) {
    int64_t shape[4] = {N, C, h, w};
    st_writer_add(wr, "mean", ST_F32, 4, shape, mean);
    st_writer_add(wr, "logvar", ST_F32, 4, shape, logvar);
    st_writer_add(wr, "latent", ST_F32, 4, shape, latent);
    rc = st_writer_finish(wr, o.out) ? cli_fail("vae-encode", NULL) : 0;
    st_writer_destroy(wr);
  }
  goto done;
oom:
  fprintf(stderr, "vkdiffusion vae-encode: out of host memory\n");
done:
  free(img), free(mean), free(logvar), free(noise), free(latent), free(rgb);
  vae_destroy(v);
  taesd_destroy(t);
  safetensors_close(ck);
  safetensors_close(in);
  safetensors_close(nf);
  return cli_finish_gpu(g, rc);
usage_error:
  free(rest);
  return 2;
}
