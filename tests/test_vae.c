/* The VAE decoder against ../shared/ref/goldens/vae_tiny.safetensors and vae_sd15_16x16 (and the
 * encoder against vae_enc_tiny_64 and vae_enc_sd15_64), with
 * checkpoints built from the weight rule. Tolerances (../shared/ref/README.md): image fp32 path
 * atol 1e-4 rtol 1e-4; fp16 storage atol 2e-2 rtol 2e-2 (sd15's golden comes from its F16 weights,
 * so the fp32 bounds hold there). Tiled decoding equals the whole decode (see tiling()). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "test.h"
#include "taesd.h"
#include "vae.h"

static struct gpu *gpu;


static struct vae *open_vae(const char *ckpt, bool fp16, int band_rows, struct safetensors **st) {
  CHECK_OK(safetensors_open(ckpt, st));
  if (!*st) return NULL;
  struct vae *v = NULL;
  struct vae_options o = {.fp16 = fp16, .band_rows = band_rows, .encoder = band_rows < 0};
  if (o.band_rows < 0) o.band_rows = 0;
  CHECK_OK(vae_load(gpu, *st, &o, &v));
  return v;
}

static void golden(const char *label, const char *ckpt, struct safetensors *gold, bool fp16, double atol, double rtol) {
  struct safetensors *st = NULL;
  struct vae *v = open_vae(ckpt, fp16, 0, &st);
  if (v) {
    const struct st_tensor *lt = safetensors_find(gold, "latent");
    size_t ni;
    float *lat = test_tensor(gold, "latent", NULL), *ref = test_tensor(gold, "image", &ni), *img = malloc(ni * 4);
    struct vae_trace tr = {0};
    size_t n_pq, n_mid, n_up[8] = {0};
    float *r_pq = test_tensor(gold, "trace.post_quant_conv", &n_pq), *r_mid = test_tensor(gold, "trace.mid", &n_mid), *r_up[8] = {0};
    tr.post_quant_conv = malloc(n_pq * 4);
    tr.mid = malloc(n_mid * 4);
    for (int i = 0; i < 8; i++) {
      char name[64];
      snprintf(name, sizeof name, "trace.up.%d", i);
      if ((r_up[i] = test_tensor(gold, name, &n_up[i]))) tr.up[i] = malloc(n_up[i] * 4);
    }
    CHECK_OK(vae_decode_traced(v, lat, (int)lt->shape[0], (int)lt->shape[2], (int)lt->shape[3], img, &tr));
    char what[128];
    snprintf(what, sizeof what, "%s trace.post_quant_conv", label);
    CHECK_CLOSE(what, tr.post_quant_conv, r_pq, n_pq, atol * 10, rtol);
    snprintf(what, sizeof what, "%s trace.mid", label);
    CHECK_CLOSE(what, tr.mid, r_mid, n_mid, atol * 10, rtol);
    for (int i = 7; i >= 0; i--)
      if (r_up[i]) {
        snprintf(what, sizeof what, "%s trace.up.%d", label, i);
        CHECK_CLOSE(what, tr.up[i], r_up[i], n_up[i], atol * 10, rtol);
      }
    free(tr.post_quant_conv), free(tr.mid), free(r_pq), free(r_mid);
    for (int i = 0; i < 8; i++) free(tr.up[i]), free(r_up[i]);
    snprintf(what, sizeof what, "%s image", label);
    CHECK_CLOSE(what, img, ref, ni, atol, rtol);
    printf("  %s: %lld parameters, weights %.1f MB, activations %.1f MB\n", label, (long long)vae_parameters(v),
           vae_weight_bytes(v) / 1e6, vae_activation_bytes(v) / 1e6);
    free(lat), free(ref), free(img);
  }
  vae_destroy(v);
  safetensors_close(st);
}

/* Tiled decoding gathers GroupNorm statistics over the whole image and convolves bands of rows
 * with a one-row halo, so it must equal the whole decode (fp32 bound 1e-4); 5-row bands make
 * several bands per level, the last one short. */
static void tiling(const char *ckpt) {
  struct safetensors *st = NULL;
  struct vae *v = open_vae(ckpt, false, 5, &st);
  if (!v) return;
  int h = 20, w = 28, f = vae_factor(v);
  size_t nz = 2 * 4 * (size_t)h * w, ni = 2 * 3 * (size_t)f * h * f * w;
  float *lat = malloc(nz * 4), *a = malloc(ni * 4), *b = malloc(ni * 4);
  test_random(lat, nz, 40);
  for (size_t i = 0; i < nz; i++) lat[i] *= 0.18215f * 1.5f;
  CHECK_OK(vae_decode(v, lat, 2, h, w, VAE_TILING_OFF, a));
  CHECK(!vae_last_tiled(v));
  for (size_t i = 0; i < ni; i++) b[i] = NAN;
  CHECK_OK(vae_decode(v, lat, 2, h, w, VAE_TILING_ON, b));
  CHECK(vae_last_tiled(v));
  CHECK_CLOSE("tiled decode (5-row bands) vs whole, batch 2", b, a, ni, 1e-4, 1e-4);
  CHECK_OK(vae_decode(v, lat, 1, h, w, VAE_TILING_AUTO, b)); /* small: auto decodes whole */
  CHECK(!vae_last_tiled(v));
  /* a NaN latent is an error, not a grey image */
  lat[17] = NAN;
  CHECK(vae_decode(v, lat, 1, h, w, VAE_TILING_OFF, b) == STATUS_NUMERIC);
  CHECK(vae_decode(v, lat, 1, h, w, VAE_TILING_ON, b) == STATUS_NUMERIC);
  free(lat), free(a), free(b);
  vae_destroy(v);
  safetensors_close(st);
}

/* The encoder against vae_enc_*_64: mean and logvar (clamped), and the sampled latent for the
 * golden's noise, z * 0.18215 (SD) and z * 0.13025 (SDXL). Tolerances: ../shared/ref/README.md
 * ("VAE encoder mean / logvar": atol 1e-4 rtol 1e-4 fp32, 2e-2 fp16 storage; z: 3e-2 in fp16). */
static void encoder_golden(const char *label, const char *ckpt, const char *golden_name, bool fp16, double atol, double rtol) {
  char gpath[1024];
  test_shared_path(gpath, sizeof gpath, golden_name);
  struct safetensors *gold = NULL, *st = NULL;
  CHECK_OK(safetensors_open(gpath, &gold));
  struct vae *v = gold ? open_vae(ckpt, fp16, -1, &st) : NULL; /* band_rows -1: with the encoder */
  if (v) {
    size_t ni, nz;
    const struct st_tensor *it = safetensors_find(gold, "image");
    float *image = test_tensor(gold, "image", &ni), *mean_ref = test_tensor(gold, "mean", &nz);
    float *logvar_ref = test_tensor(gold, "logvar", NULL), *noise = test_tensor(gold, "noise", NULL);
    float *z_ref = test_tensor(gold, "latent_sd", NULL), *zxl_ref = test_tensor(gold, "latent_sdxl", NULL);
    float *mean = malloc(nz * 4), *logvar = malloc(nz * 4), *z = malloc(nz * 4);
    int H = (int)it->shape[2], W = (int)it->shape[3];
    CHECK(vae_has_encoder(v) && nz == ni / 3 / (size_t)(vae_factor(v) * vae_factor(v)) * 4);
    CHECK_OK(vae_encode(v, image, 1, H, W, VAE_TILING_OFF, mean, logvar));
    char what[160];
    snprintf(what, sizeof what, "VAE encoder %s: mean", label);
    CHECK_CLOSE(what, mean, mean_ref, nz, atol, rtol);
    snprintf(what, sizeof what, "VAE encoder %s: logvar", label);
    CHECK_CLOSE(what, logvar, logvar_ref, nz, atol, rtol);
    vae_sample_latent(mean, logvar, noise, nz, 0.18215f, z);
    snprintf(what, sizeof what, "VAE encoder %s: latent (z * 0.18215)", label);
    CHECK_CLOSE(what, z, z_ref, nz, atol, atol >= 1e-2 ? 3e-2 : rtol);
    vae_sample_latent(mean, logvar, noise, nz, 0.13025f, z);
    snprintf(what, sizeof what, "VAE encoder %s: latent (z * 0.13025)", label);
    CHECK_CLOSE(what, z, zxl_ref, nz, atol, atol >= 1e-2 ? 3e-2 : rtol);
    { /* tiled (bands of 3 rows, whole-image GroupNorm statistics): the whole encode's, up to summation order */
      struct vae *vt = NULL;
      CHECK_OK(vae_load(gpu, st, &(struct vae_options){.fp16 = fp16, .encoder = true, .band_rows = 3}, &vt));
      float *mt = malloc(nz * 4), *lt = malloc(nz * 4);
      if (vt) CHECK_OK(vae_encode(vt, image, 1, H, W, VAE_TILING_ON, mt, lt));
      /* where Winograd's transforms round the bands or the whole image and not the other the same
       * way: every convolution through Winograd (VKDIFFUSION_CONV=winograd, test_vae_winograd:
       * measured 1.07e-5) or the GPU kernels (test_vae_gpu_kernels: Winograd on the whole image,
       * implicit GEMM on the narrower bands, measured 1.53e-5; 5.3e-6 with Winograd off) */
      const char *conv = getenv("VKDIFFUSION_CONV"), *kern = getenv("VKDIFFUSION_KERNELS");
      bool mixed = (conv && !strcmp(conv, "winograd")) || (kern && !strcmp(kern, "gpu"));
      double tol = fp16 ? 1e-3 : mixed ? 5e-5 : 1e-5;
      snprintf(what, sizeof what, "VAE encoder %s: tiled mean vs whole", label);
      CHECK_CLOSE(what, mt, mean, nz, tol, 1e-5);
      snprintf(what, sizeof what, "VAE encoder %s: tiled logvar vs whole", label);
      CHECK_CLOSE(what, lt, logvar, nz, tol, 1e-5);
      CHECK(vt && vae_last_tiled(vt));
      free(mt), free(lt);
      vae_destroy(vt);
    }
    /* refused: a size that is no multiple of the factor, a NaN in the image */
    CHECK(vae_encode(v, image, 1, H - 1, W, VAE_TILING_OFF, mean, logvar) == STATUS_INVALID_ARGUMENT);
    image[7] = NAN;
    CHECK(vae_encode(v, image, 1, H, W, VAE_TILING_OFF, mean, logvar) == STATUS_NUMERIC);
    free(image), free(mean_ref), free(logvar_ref), free(noise), free(z_ref), free(zxl_ref), free(mean), free(logvar), free(z);
  }
  vae_destroy(v);
  safetensors_close(st);
  safetensors_close(gold);
}

/* TAESD against taesd_seed1: the decoder under diffusers' names and the original file's, the
 * encoder; fp32 atol 1e-4 rtol 1e-4 (../shared/ref/README.md, TAESD), image_u8 within 1 level;
 * fp16 storage atol 2e-2. */
static void taesd_golden(bool fp16) {
  char wpath[1024], opath[1024], gpath[1024];
  test_shared_path(wpath, sizeof wpath, "ref/goldens/taesd_weights_seed1.safetensors");
  test_shared_path(opath, sizeof opath, "ref/goldens/taesd_decoder_original_seed1.safetensors");
  test_shared_path(gpath, sizeof gpath, "ref/goldens/taesd_seed1.safetensors");
  struct safetensors *gold = NULL;
  CHECK_OK(safetensors_open(gpath, &gold));
  if (!gold) return;
  double atol = fp16 ? 2e-2 : 1e-4, rtol = fp16 ? 2e-2 : 1e-4;
  size_t nl, ni, nin, nenc;
  float *latent = test_tensor(gold, "latent", &nl), *image_ref = test_tensor(gold, "image", &ni);
  float *input = test_tensor(gold, "input_image", &nin), *enc_ref = test_tensor(gold, "encoded", &nenc);
  float *u8_ref = test_tensor(gold, "image_u8", NULL), *image = malloc(ni * 4), *enc = malloc(nenc * 4);
  unsigned char *u8 = malloc(ni);
  const char *paths[2] = {wpath, opath}, *names[2] = {"diffusers names", "original keys"};
  for (int k = 0; k < 2; k++) {
    struct taesd *t = NULL;
    CHECK_OK(taesd_load(gpu, paths[k], fp16, &t));
    if (!t) continue;
    CHECK(taesd_has_decoder(t) && taesd_has_encoder(t) == (k == 0) && taesd_latent_channels(t) == 4);
    CHECK_OK(taesd_decode(t, latent, 1, 8, 12, image));
    char what[96];
    snprintf(what, sizeof what, "TAESD decoder %s %s: image", fp16 ? "fp16" : "fp32", names[k]);
    CHECK_CLOSE(what, image, image_ref, ni, atol, rtol);
    taesd_image_to_u8(image, 64, 96, u8);
    int worst = 0;
    for (size_t i = 0; i < ni; i++) worst = abs((int)u8[i] - (int)u8_ref[i]) > worst ? abs((int)u8[i] - (int)u8_ref[i]) : worst;
    CHECK_MSG(worst <= (fp16 ? 3 : 1), "TAESD image_u8 off by %d levels", worst);
    if (k == 0) {
      CHECK_OK(taesd_encode(t, input, 1, 64, 64, enc));
      snprintf(what, sizeof what, "TAESD encoder %s: latent", fp16 ? "fp16" : "fp32");
      CHECK_CLOSE(what, enc, enc_ref, nenc, atol, rtol);
      CHECK(taesd_encode(t, input, 1, 60, 64, enc) == STATUS_INVALID_ARGUMENT);
    } else {
      CHECK(taesd_encode(t, input, 1, 64, 64, enc) == STATUS_INVALID_ARGUMENT && strstr(status_message(), "no TAESD encoder"));
    }
    taesd_destroy(t);
  }
  /* not a TAESD file: the SD checkpoint's VAE golden */
  struct taesd *t = NULL;
  CHECK(taesd_load(gpu, gpath, fp16, &t) == STATUS_FORMAT && strstr(status_message(), "not a TAESD file"));
  free(latent), free(image_ref), free(input), free(enc_ref), free(u8_ref), free(image), free(enc), free(u8);
  safetensors_close(gold);
}

/* The checkpoint at `from` without tensor `drop` (all F32), written to `to`. */
static void copy_without(const char *from, const char *to, const char *drop) {
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(from, &st));
  if (!st) return;
  int n = safetensors_count(st), k = 0;
  float **data = calloc((size_t)n, sizeof *data);
  struct st_writer *w = NULL;
  CHECK_OK(st_writer_create(&w));
  for (int i = 0; i < n && w; i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    if (!strcmp(t->name, drop)) continue;
    data[k] = malloc((size_t)(t->numel ? t->numel : 1) * 4);
    CHECK_OK(safetensors_read_f32(st, t, data[k]));
    CHECK_OK(st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, data[k]));
    k++;
  }
  if (w) CHECK_OK(st_writer_finish(w, to));
  st_writer_destroy(w);
  for (int i = 0; i < k; i++) free(data[i]);
  free(data);
  safetensors_close(st);
}

/* The encoder on demand (as sd_model loads it): not in the weights until the first encode, then
 * the same bits as an encoder loaded with the decoder; its tensors still checked at load (a missing
 * one is an error there, not at the first encode). */
static void encoder_on_demand(const char *ckpt, const char *dir) {
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(ckpt, &st));
  if (!st) return;
  struct vae *eager = NULL, *lazy = NULL;
  CHECK_OK(vae_load(gpu, st, &(struct vae_options){.encoder = true}, &eager));
  CHECK_OK(vae_load(gpu, st, &(struct vae_options){.encoder = true, .encoder_on_demand = true}, &lazy));
  if (eager && lazy) {
    uint64_t before = vae_weight_bytes(lazy);
    CHECK_MSG(before < vae_weight_bytes(eager), "on demand: %llu weight bytes before the first encode, eager %llu",
              (unsigned long long)before, (unsigned long long)vae_weight_bytes(eager));
    int H = 64, W = 64, f = vae_factor(eager);
    size_t ni = 3 * (size_t)H * W, nz = (size_t)vae_latent_channels(eager) * (H / f) * (W / f);
    float *image = malloc(ni * 4), *m[2], *l[2];
    test_random(image, ni, 71);
    for (int k = 0; k < 2; k++) {
      m[k] = malloc(nz * 4), l[k] = malloc(nz * 4);
      CHECK_OK(vae_encode(k ? lazy : eager, image, 1, H, W, VAE_TILING_OFF, m[k], l[k]));
    }
    CHECK_MSG(!memcmp(m[0], m[1], nz * 4) && !memcmp(l[0], l[1], nz * 4), "the encoder on demand encodes differently");
    CHECK_MSG(vae_weight_bytes(lazy) == vae_weight_bytes(eager), "on demand: %llu weight bytes after the first encode, eager %llu",
              (unsigned long long)vae_weight_bytes(lazy), (unsigned long long)vae_weight_bytes(eager));
    for (int k = 0; k < 2; k++) free(m[k]), free(l[k]);
    free(image);
  }
  vae_destroy(eager), vae_destroy(lazy);
  safetensors_close(st);
  char bad[600];
  snprintf(bad, sizeof bad, "%s/no_conv_out.safetensors", dir);
  copy_without(ckpt, bad, "first_stage_model.encoder.conv_out.weight");
  CHECK_OK(safetensors_open(bad, &st));
  struct vae *v = NULL;
  enum status s = st ? vae_load(gpu, st, &(struct vae_options){.encoder = true, .encoder_on_demand = true}, &v) : STATUS_OK;
  CHECK_MSG(s == STATUS_FORMAT && !v && strstr(status_message(), "encoder.conv_out.weight"),
            "an encoder tensor missing, on demand: %s", status_message());
  vae_destroy(v);
  safetensors_close(st);
  unlink(bad);
  printf("  VAE encoder on demand: loaded at the first encode, same bits, checked at load\n");
}

int main(void) {
  int rc = 0;
  char gpath[1024], dpath[1024], dir[256], ckpt[512];
  struct safetensors *gold = NULL;
  test_shared_path(gpath, sizeof gpath, "ref/goldens/vae_tiny.safetensors");
  if (safetensors_open(gpath, &gold)) return test_skip("cannot read ../shared/ref/goldens/vae_tiny.safetensors");
  gpu = test_gpu(&rc);
  if (!gpu) {
    safetensors_close(gold);
    return rc;
  }
  snprintf(dir, sizeof dir, "/tmp/vkd_test_vae_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny.safetensors", dir);
  test_shared_path(dpath, sizeof dpath, "ref/goldens/weights_digest_unet_vae_tiny_seed1.json");
  CHECK(write_sd_checkpoint(ckpt, dpath, ST_F32, 1, NULL) == 0);
  golden("tiny fp32", ckpt, gold, false, 1e-4, 1e-4);
  golden("tiny fp16", ckpt, gold, true, 2e-2, 2e-2);
  encoder_golden("tiny fp32", ckpt, "ref/goldens/vae_enc_tiny_64.safetensors", false, 1e-4, 1e-4);
  encoder_golden("tiny fp16", ckpt, "ref/goldens/vae_enc_tiny_64.safetensors", true, 2e-2, 2e-2);
  encoder_on_demand(ckpt, dir);
  tiling(ckpt);
  taesd_golden(false);
  taesd_golden(true);
  unlink(ckpt);
  safetensors_close(gold);
  test_shared_path(gpath, sizeof gpath, "ref/goldens/vae_sd15_16x16.safetensors");
  test_shared_path(dpath, sizeof dpath, "ref/goldens/weights_digest_unet_vae_sd15_seed1.json");
  if (!safetensors_open(gpath, &gold)) {
    snprintf(ckpt, sizeof ckpt, "%s/sd15.safetensors", dir);
    CHECK(write_sd_checkpoint(ckpt, dpath, ST_F16, 1, NULL) == 0);
    golden("sd15 16x16 fp16 storage", ckpt, gold, true, 1e-4, 1e-4);
    encoder_golden("sd15 64x64 fp16 storage", ckpt, "ref/goldens/vae_enc_sd15_64.safetensors", true, 1e-4, 1e-4);
    unlink(ckpt);
    safetensors_close(gold);
  } else {
    CHECK_MSG(0, "cannot read %s", gpath);
  }
  rmdir(dir);
  test_gpu_done(gpu);
  return test_result("test_vae");
}
