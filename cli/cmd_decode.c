/* vkdiffusion decode: the VAE decoder alone, latent file in, PNGs or an image tensor out. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "png.h"
#include "taesd.h"
#include "vae.h"

#define DECODE_MAX_SIDE 1024 /* latent pixels: 8192-pixel images */
#define DECODE_MAX_BATCH 64

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

int cmd_decode(int argc, char **argv) {
  struct part_opts o;
  int rc = cli_parse_part(argc, argv, &o,
                 "usage: vkdiffusion decode (--model CKPT | --vae-decoder TAESD.safetensors) --in LATENT.safetensors\n"
                 "                          (-o OUT.png | -o OUT.safetensors) [--precision fp16|fp32]\n"
                 "                          [--vae-tiling auto|on|off] [--device N]\n\n"
                 "LATENT holds latent [N,4,h,w] as the sampler leaves it (scaled: divided by 0.18215 here; TAESD\n"
                 "takes it as it is). A .png output writes one PNG per image (OUT-i.png when N > 1); a .safetensors\n"
                 "output gets image [N,3,H,W] in about [-1,1] (TAESD: [0,1]). --vae-decoder: madebyollin's tiny\n"
                 "autoencoder (TAESD / TAESDXL, diffusers or original keys) instead of the checkpoint's KL decoder.\n");
  if (rc >= 0) return rc;
  struct safetensors *in = NULL, *ck = NULL;
  struct gpu *g = NULL;
  struct vae *v = NULL;
  struct taesd *t = NULL;
  bool tiny = o.taesd_decoder != NULL;
  float *lat = NULL, *img = NULL;
  unsigned char *u8 = NULL;
  rc = 1;
  if (safetensors_open(o.in, &in) || (!tiny && safetensors_open(o.model, &ck))) {
    cli_fail("decode", NULL);
    goto done;
  }
  if (!(g = cli_gpu("decode", o.device))) goto done;
  if (tiny ? taesd_load(g, o.taesd_decoder, o.fp16, &t) : vae_load(g, ck, &(struct vae_options){.fp16 = o.fp16}, &v)) {
    cli_fail("decode", NULL);
    goto done;
  }
  int zc = tiny ? taesd_latent_channels(t) : vae_latent_channels(v);
  /* the latent checked against the decoder before anything reads it */
  int64_t ls[4];
  char want[160];
  snprintf(want, sizeof want, "[N, %d, h, w] (h and w at most %d, N at most %d)", zc, DECODE_MAX_SIDE, DECODE_MAX_BATCH);
  if (safetensors_read_input(in, "latent", 4, (int64_t[]){-1, zc, -1, -1}, want, ls, &lat)) {
    cli_fail("decode", NULL);
    goto done;
  }
  if (ls[0] > DECODE_MAX_BATCH || ls[2] > DECODE_MAX_SIDE || ls[3] > DECODE_MAX_SIDE) {
    fprintf(stderr, "vkdiffusion decode: %s: tensor 'latent' is [%lld, %lld, %lld, %lld]; expected %s\n", o.in,
            (long long)ls[0], (long long)ls[1], (long long)ls[2], (long long)ls[3], want);
    goto done;
  }
  int N = (int)ls[0], h = (int)ls[2], w = (int)ls[3], f = tiny ? taesd_factor(t) : vae_factor(v), H = f * h, W = f * w;
  img = malloc((size_t)N * 3 * H * W * sizeof *img);
  if (!img || (tiny ? taesd_decode(t, lat, N, h, w, img) : vae_decode(v, lat, N, h, w, o.tiling, img))) {
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
      (tiny ? taesd_image_to_u8 : image_to_u8)(img + (size_t)n * 3 * H * W, H, W, u8);
      if (png_write(path, u8, W, H, NULL, true)) rc = cli_fail("decode", NULL);
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
  taesd_destroy(t);
  safetensors_close(ck);
  safetensors_close(in);
  return cli_finish_gpu(g, rc);
}
