/* txt2img driven directly through the library (vkdiffusion.h) against
 * ../shared/ref/goldens/sample_tiny.safetensors: the tiny SD checkpoint of the weight rule (U-Net,
 * VAE and tiny CLIP text, seed 1), the golden's prompt and empty negative prompt, its starting
 * noise (and euler_a's per-step noise), 4 steps, cfg 7.5, 32x32; for each of euler, euler_a, ddim
 * and dpmpp_2m (karras) the per-step latents and the 8-bit image. Tolerances are the reference's
 * (../shared/ref/README.md, "Recommended tolerances"): fp32 latents atol 2e-3 rtol 1e-4, image
 * within 1 level; fp16 storage latents atol 1 rtol 2e-2, image within 3 levels. The conditioning
 * on the way is checked against the golden's `cond`/`uncond` (fp32: 1e-4).
 * Also: the callbacks (progress order, one image a batch element, seeds), cancellation, and
 * parameters refused before any GPU work. And LoRA merging (lora_checks). */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include <math.h>
#include <stdlib.h>

#include "checkpoint.h"
#include "guidance.h"
#include "sd_model.h"
#include "unet.h"
#include "taesd.h"
#include "vae.h"
#include "test.h"
#include "vkdiffusion.h"

static const char *const PROMPT = "a photograph of an astronaut riding a horse";
enum { STEPS = 4, H = 16, W = 16, N_LAT = 4 * H * W, PX = 32 * 32 * 3 };

struct calls {
  int encode, sample, decode, images, last_step;
  uint32_t seeds[4];
  bool order_ok;
  int cancel_at; /* sample step that cancels (0: never) */
};

static int on_progress(enum sd_phase phase, int image, int step, int steps, void *user) {
  struct calls *c = user;
  if (phase == SD_PHASE_ENCODE) c->encode++;
  if (phase == SD_PHASE_DECODE) c->decode++;
  if (phase == SD_PHASE_SAMPLE) {
    c->sample++;
    if (step != 0 && step != c->last_step + 1) c->order_ok = false;
    c->last_step = step;
    if (steps != STEPS) c->order_ok = false;
    if (c->cancel_at && step == c->cancel_at) return 1;
  }
  (void)image;
  return 0;
}

static int on_image(int image, uint32_t seed, const unsigned char *rgb, const float *latent, void *user) {
  struct calls *c = user;
  if (image < 4) c->seeds[image] = seed;
  c->images++;
  (void)rgb, (void)latent;
  return 0;
}

/* the model the checks run on: a checkpoint with its config and vocabulary (taesd: NULL or a TAESD file) */
static enum status make_model(const char *ckpt, const char *cfg, const char *vocab, bool fp16, const char *taesd,
                              struct sd_model **m) {
  struct sd_model_options mo = sd_model_default_options();
  mo.model_path = ckpt;
  mo.config_path = cfg;
  mo.tokenizer_path = vocab;
  mo.precision = fp16 ? SD_FP16 : SD_FP32;
  mo.taesd_path = taesd;
  return sd_model_create(&mo, m);
}

static void golden(const char *ckpt, const char *cfg, const char *vocab, struct safetensors *gold, bool fp16) {
  struct sd_model *m = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, fp16, NULL, &m));
  if (!m) return;
  const char *p = fp16 ? "fp16" : "fp32";
  /* the conditioning txt2img samples with */
  struct sd_conditioning c = {0};
  CHECK_OK(sd_model_encode(m, PROMPT, "", 1, SD_EMPTY_NEGATIVE_AUTO, NULL, &c));
  float *cond = test_tensor(gold, "cond", NULL), *uncond = test_tensor(gold, "uncond", NULL);
  if (!fp16 && c.cond && c.tokens == 77) {
    CHECK_CLOSE("txt2img conditioning: cond", c.cond, cond, 77 * 64, 1e-4, 1e-4);
    CHECK_CLOSE("txt2img conditioning: uncond", c.uncond, uncond, 77 * 64, 1e-4, 1e-4);
  }
  sd_conditioning_free(&c);
  free(cond), free(uncond);

  float *noise = test_tensor(gold, "noise", NULL), *anoise = test_tensor(gold, "euler_a_noise", NULL);
  const char *names[] = {"euler", "euler_a", "ddim", "dpmpp_2m_karras"};
  enum sd_sampler samplers[] = {SD_SAMPLER_EULER, SD_SAMPLER_EULER_A, SD_SAMPLER_DDIM, SD_SAMPLER_DPMPP_2M};
  for (int k = 0; k < 4; k++) {
    struct calls calls = {.order_ok = true};
    struct txt2img_params tp = txt2img_default_params();
    tp.prompt = PROMPT;
    tp.noise = noise;
    tp.ancestral_noise = samplers[k] == SD_SAMPLER_EULER_A ? anoise : NULL;
    tp.steps = STEPS;
    tp.cfg_scale = 7.5;
    tp.width = tp.height = 32;
    tp.sampler = samplers[k];
    tp.schedule = k == 3 ? SD_SCHEDULE_KARRAS : SD_SCHEDULE_DISCRETE;
    tp.vae_tiling = SD_VAE_TILING_OFF;
    tp.progress = on_progress;
    tp.on_image = on_image;
    tp.user = &calls;
    unsigned char img[PX];
    float lat[STEPS * N_LAT];
    memset(img, 0, sizeof img);
    for (int i = 0; i < STEPS * N_LAT; i++) lat[i] = NAN;
    CHECK_OK(txt2img(m, &tp, img, lat));
    char name[96], what[128];
    snprintf(name, sizeof name, "%s.latents", names[k]);
    float *ref = test_tensor(gold, name, NULL);
    snprintf(what, sizeof what, "txt2img %s %s per-step latents", names[k], p);
    CHECK_CLOSE(what, lat, ref, STEPS * N_LAT, fp16 ? 1.0 : 2e-3, fp16 ? 2e-2 : 1e-4);
    free(ref);
    snprintf(name, sizeof name, "%s.image_u8", names[k]);
    ref = test_tensor(gold, name, NULL);
    float got[PX];
    for (int i = 0; i < PX; i++) got[i] = img[i];
    snprintf(what, sizeof what, "txt2img %s %s image_u8 (levels)", names[k], p);
    CHECK_CLOSE(what, got, ref, PX, fp16 ? 3 : 1, 0);
    free(ref);
    CHECK_MSG(calls.encode == 2 && calls.sample == STEPS + 1 && calls.decode == 2 && calls.images == 1 && calls.order_ok,
              "%s: callbacks encode %d sample %d decode %d images %d", names[k], calls.encode, calls.sample, calls.decode,
              calls.images);
  }
  free(noise), free(anoise);
  if (fp16) { /* the seed path, a batch, cancellation and refused parameters (once is enough) */
    struct calls calls = {.order_ok = true};
    struct txt2img_params tp = txt2img_default_params();
    tp.prompt = "a red circle";
    tp.seed = 4294967295LL; /* image 1 wraps to seed 0 */
    tp.steps = STEPS;
    tp.width = tp.height = 32;
    tp.batch_count = 2;
    tp.progress = on_progress;
    tp.on_image = on_image;
    tp.user = &calls;
    unsigned char two[2 * PX], one[PX];
    CHECK_OK(txt2img(m, &tp, two, NULL));
    CHECK(calls.images == 2 && calls.seeds[0] == 4294967295u && calls.seeds[1] == 0);
    tp.seed = 0;
    tp.batch_count = 1;
    calls = (struct calls){.order_ok = true};
    CHECK_OK(txt2img(m, &tp, one, NULL));
    CHECK_MSG(!memcmp(one, two + PX, PX), "image 1 of a batch from seed 2^32-1 differs from seed 0 alone");
    CHECK_MSG(memcmp(two, two + PX, PX) != 0, "the two images of a batch are the same");
    { /* skip: a worker's share of a batch is exactly those images of the whole batch */
      unsigned char share[2 * PX], flags[2] = {1, 0};
      memset(share, 7, sizeof share);
      tp.seed = 4294967295LL;
      tp.batch_count = 2;
      tp.skip = flags;
      calls = (struct calls){.order_ok = true};
      CHECK_OK(txt2img(m, &tp, share, NULL));
      CHECK_MSG(calls.images == 1 && calls.seeds[1] == 0, "skip {1,0}: %d images, seed %u", calls.images, calls.seeds[1]);
      CHECK_MSG(!memcmp(share + PX, two + PX, PX), "image 1 alone (image 0 skipped) differs from the whole batch's");
      CHECK_MSG(share[0] == 7 && share[PX - 1] == 7, "a skipped image's pixels were written");
      flags[1] = 1;
      calls = (struct calls){.order_ok = true};
      CHECK_OK(txt2img(m, &tp, share, NULL));
      CHECK(calls.images == 0);
      tp.skip = NULL;
      tp.seed = 0;
      tp.batch_count = 1;
    }
    calls = (struct calls){.order_ok = true, .cancel_at = 2};
    int st = txt2img(m, &tp, one, NULL);
    CHECK_MSG(st == SD_CANCELLED && calls.images == 0 && strstr(sd_last_error(), "cancelled"), "cancel: %d %s", st,
              sd_last_error());
    volatile int flag = 1;
    tp.cancel = &flag;
    tp.progress = NULL;
    CHECK(txt2img(m, &tp, one, NULL) == SD_CANCELLED);
    tp.cancel = NULL;
    tp.width = 36; /* not a multiple of the tiny model's 4 (VAE factor 2, 2 levels) */
    CHECK(txt2img(m, &tp, one, NULL) == SD_INVALID_ARGUMENT && strstr(sd_last_error(), "36x32"));
    tp.width = 32;
    tp.steps = 0;
    CHECK(txt2img(m, &tp, one, NULL) == SD_INVALID_ARGUMENT && strstr(sd_last_error(), "steps 0"));
    tp.steps = STEPS;
    tp.seed = -1;
    CHECK(txt2img(m, &tp, one, NULL) == SD_INVALID_ARGUMENT && strstr(sd_last_error(), "seed -1"));
  }
  struct sd_model_info info;
  CHECK_OK(sd_model_get_info(m, &info));
  CHECK(info.vae_factor == 2 && info.latent_channels == 4 && info.context_width == 64);
  const char *last = NULL;
  int n = gpu_validation_count(sd_model_gpu(m), &last);
  CHECK_MSG(n == 0, "%d validation messages; last: %s", n, last ? last : "");
  sd_model_destroy(m);
}

/* SD 2.x (v, modelspec.prediction_type from the file) and SDXL (y, sizes, zero uncond) through txt2img
 * against sample_sd21_tiny_v / sample_sdxl_tiny; then a 1-step trailing run at cfg 1 makes exactly one
 * U-Net evaluation of one image, and a NaN on the way never becomes an image. */
static void xl_golden(const char *family, const char *golden_name, const char *unet_digest, const char *vae_digest,
                      const char *vocab, const char *dir, bool fp16) {
  char gpath[1024], rel[160], ckpt[512], cfg[512], ud[1024];
  snprintf(rel, sizeof rel, "ref/goldens/%s.safetensors", golden_name);
  test_shared_path(gpath, sizeof gpath, rel);
  snprintf(rel, sizeof rel, "ref/goldens/%s", unet_digest);
  test_shared_path(ud, sizeof ud, rel);
  struct safetensors *gold = NULL;
  if (safetensors_open(gpath, &gold)) {
    CHECK_MSG(0, "cannot read %s", gpath);
    return;
  }
  bool xl = !strcmp(family, "sdxl");
  snprintf(ckpt, sizeof ckpt, "%s/%s.safetensors", dir, family);
  CHECK(write_family_checkpoint(ckpt, family, ud, vae_digest, ST_F32, 1, xl ? NULL : "modelspec.prediction_type",
                                xl ? NULL : "v") == 0);
  test_write_text(dir, "xl.json", xl ? "{\"text_encoder\": {\"num_attention_heads\": 4}, \"text_encoder_2\": "
                                       "{\"num_attention_heads\": 4}, \"unet\": {\"num_attention_heads\": [2, 4, 4]}}"
                                     : "{\"text_encoder\": {\"num_attention_heads\": 4}, \"unet\": {\"num_attention_heads\": [2, 4, 4]}}");
  snprintf(cfg, sizeof cfg, "%s/xl.json", dir);
  struct sd_model *m = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, fp16, NULL, &m));
  if (!m) {
    safetensors_close(gold);
    return;
  }
  struct sd_model_info info;
  sd_model_get_info(m, &info);
  CHECK(info.family == (xl ? SD_FAMILY_SDXL : SD_FAMILY_SD2));
  CHECK(info.prediction == (xl ? SD_PREDICTION_EPS : SD_PREDICTION_V));
  CHECK(xl ? !strcmp(info.prediction_source, "SDXL's default") : !strcmp(info.prediction_source, "modelspec.prediction_type"));
  CHECK(info.scale_factor == (xl ? 0.13025f : 0.18215f) && info.default_clip_skip == 2);
  CHECK(info.default_width == (xl ? 1024 : 768) && info.context_width == (xl ? 128 : 64));
  float *noise = test_tensor(gold, "noise", NULL), *anoise = test_tensor(gold, "euler_a_noise", NULL);
  const char *names[] = {"euler", "euler_a", "dpmpp_2m_karras", "ddim"};
  enum sd_sampler samplers[] = {SD_SAMPLER_EULER, SD_SAMPLER_EULER_A, SD_SAMPLER_DPMPP_2M, SD_SAMPLER_DDIM};
  for (int k = 0; k < (xl ? 2 : 4); k++) {
    struct txt2img_params tp = txt2img_default_params();
    tp.prompt = PROMPT;
    tp.noise = noise;
    tp.ancestral_noise = samplers[k] == SD_SAMPLER_EULER_A ? anoise : NULL;
    tp.steps = STEPS;
    tp.cfg_scale = xl ? 5.0 : 7.5;
    tp.width = tp.height = 32;
    tp.sampler = samplers[k];
    tp.schedule = k == 2 ? SD_SCHEDULE_KARRAS : SD_SCHEDULE_DISCRETE;
    tp.vae_tiling = SD_VAE_TILING_OFF;
    if (xl) { /* the golden's micro-conditioning */
      tp.original_height = 896, tp.original_width = 1152, tp.crop_top = 16, tp.crop_left = 32;
      tp.target_height = 1024, tp.target_width = 768;
    }
    unsigned char img[PX];
    float lat[STEPS * N_LAT];
    CHECK_OK(txt2img(m, &tp, img, lat));
    char name[96], what[160];
    snprintf(name, sizeof name, "%s.latents", names[k]);
    float *ref = test_tensor(gold, name, NULL);
    snprintf(what, sizeof what, "txt2img %s %s %s latents", family, names[k], fp16 ? "fp16" : "fp32");
    CHECK_CLOSE(what, lat, ref, STEPS * N_LAT, fp16 ? (xl ? 1.0 : 0.2) : (xl ? 2e-3 : 5e-4), fp16 ? 2e-2 : 1e-4);
    free(ref);
    snprintf(name, sizeof name, "%s.image_u8", names[k]);
    ref = test_tensor(gold, name, NULL);
    float got[PX];
    for (int i = 0; i < PX; i++) got[i] = img[i];
    snprintf(what, sizeof what, "txt2img %s %s %s image_u8 (levels)", family, names[k], fp16 ? "fp16" : "fp32");
    CHECK_CLOSE(what, got, ref, PX, fp16 ? 3 : 1, 0);
    free(ref);
  }
  if (!fp16) {
    /* Turbo: 1 trailing step at cfg 1 = one U-Net evaluation of one image (no unconditional pass) */
    int64_t e0, i0, e1, i1;
    unet_counts(m->unet, &e0, &i0);
    struct txt2img_params tp = txt2img_default_params();
    tp.prompt = PROMPT;
    tp.steps = 1;
    tp.cfg_scale = 1;
    tp.schedule = SD_SCHEDULE_TRAILING;
    tp.width = tp.height = 32;
    for (int smp = 0; smp < 2; smp++) {
      tp.sampler = smp ? SD_SAMPLER_EULER_A : SD_SAMPLER_EULER;
      unsigned char img[PX];
      CHECK_OK(txt2img(m, &tp, img, NULL));
    }
    unet_counts(m->unet, &e1, &i1);
    CHECK_MSG(e1 - e0 == 2 && i1 - i0 == 2, "%s: 2 one-step cfg-1 runs made %lld U-Net evaluations of %lld images",
              family, (long long)(e1 - e0), (long long)(i1 - i0));
    /* a latent that is not finite never reaches a PNG: the job fails naming the step */
    float *bad = malloc(N_LAT * sizeof *bad);
    for (int i = 0; i < N_LAT; i++) bad[i] = i == 7 ? NAN : 0.5f;
    struct calls calls = {.order_ok = true};
    tp.noise = bad;
    tp.on_image = on_image;
    tp.user = &calls;
    int st = txt2img(m, &tp, NULL, NULL);
    CHECK_MSG(st == SD_NUMERIC && calls.images == 0 && strstr(sd_last_error(), "step 1"), "NaN noise: %d %s", st,
              sd_last_error());
    free(bad);
  }
  free(noise), free(anoise);
  const char *last = NULL;
  int n = gpu_validation_count(sd_model_gpu(m), &last);
  CHECK_MSG(n == 0, "%d validation messages; last: %s", n, last ? last : "");
  sd_model_destroy(m);
  unlink(ckpt);
  safetensors_close(gold);
}

/* img2img (#29) through txt2img's init_image, fp32, against a reference computed here from the
 * sampler's formulas (k-diffusion Euler) around the same guided U-Net, from the init image's VAE
 * posterior mean (the encoder itself is checked against vae_enc_* in test_vae): the golden's image
 * (vae_enc_tiny_64, 64x64: the crop-and-resize is the identity), 8 steps at strength 0.5 start at
 * step 4 from x = mean 0.18215 + noise sigma_4 and run 4 Euler steps. Also: strength 0.5 of 20
 * steps runs 10; strength 0 returns the init image's VAE round trip; the posterior sample differs
 * from the mean and repeats with the seed; bad strengths are refused. */
static void img2img_checks(const char *ckpt, const char *cfg, const char *vocab) {
  char gpath[1024];
  test_shared_path(gpath, sizeof gpath, "ref/goldens/vae_enc_tiny_64.safetensors");
  struct safetensors *gold = NULL;
  CHECK_OK(safetensors_open(gpath, &gold));
  struct sd_model *m = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, false, NULL, &m));
  if (!m || !gold) {
    sd_model_destroy(m);
    safetensors_close(gold);
    return;
  }
  enum { S = 64, h = 32, n = 4 * h * h, RUNS = 4, ISTEPS = 8 };
  float *image = test_tensor(gold, "image", NULL), *noise = malloc(n * 4), *mean = malloc(n * 4), *logvar = malloc(n * 4);
  unsigned char *init = malloc(S * S * 3), *out = malloc(S * S * 3), *out2 = malloc(S * S * 3);
  float *lat = malloc(20 * n * 4), *x = malloc(n * 4), *xin = malloc(n * 4), *eps = malloc(n * 4), *ref = malloc(RUNS * n * 4);
  image_to_u8(image, S, S, init);
  test_random(noise, n, 77);
  struct calls calls = {0};
  struct txt2img_params tp = txt2img_default_params();
  tp.prompt = PROMPT;
  tp.negative_prompt = "";
  tp.noise = noise;
  tp.steps = ISTEPS;
  tp.cfg_scale = 7.5;
  tp.width = tp.height = S;
  tp.sampler = SD_SAMPLER_EULER;
  tp.vae_tiling = SD_VAE_TILING_OFF;
  tp.init_image = init;
  tp.init_width = tp.init_height = S;
  tp.strength = 0.5;
  tp.vae_encode = SD_VAE_ENCODE_MEAN;
  tp.progress = on_progress;
  tp.user = &calls;
  for (int i = 0; i < 20 * n; i++) lat[i] = NAN;
  CHECK_OK(txt2img(m, &tp, out, lat));
  CHECK_MSG(calls.last_step == RUNS, "strength 0.5 of %d steps ran %d", ISTEPS, calls.last_step);
  /* the reference: the init image (u8 -> [-1, 1]) through the encoder, the schedule's tail by hand */
  for (int i = 0; i < 3 * S * S; i++) image[i] = init[(i % (S * S)) * 3 + i / (S * S)] / 127.5f - 1.0f;
  CHECK_OK(vae_encode(m->vae, image, 1, S, S, VAE_TILING_OFF, mean, logvar));
  double sig[ISTEPS + 1];
  schedule_sigmas(&m->sched, SCHEDULE_DISCRETE, ISTEPS, sig);
  for (int i = 0; i < n; i++) x[i] = (float)(mean[i] * 0.18215f + noise[i] * sig[ISTEPS - RUNS]);
  struct sd_conditioning c = {0};
  CHECK_OK(sd_model_encode(m, PROMPT, "", 0, SD_EMPTY_NEGATIVE_AUTO, NULL, &c));
  struct guidance g = {0};
  CHECK_OK(guidance_init(&g, m->unet, c.cond, c.uncond, NULL, NULL, c.tokens, 4, h, h, 7.5f));
  for (int k = ISTEPS - RUNS; k < ISTEPS; k++) {
    double sigma = sig[k], next = sig[k + 1], c_in = 1 / sqrt(sigma * sigma + 1);
    for (int i = 0; i < n; i++) xin[i] = (float)(x[i] * c_in);
    CHECK_OK(guidance_denoise(xin, schedule_sigma_to_t(&m->sched, sigma), eps, &g));
    for (int i = 0; i < n; i++) { /* Euler: d = (x - denoised) / sigma = eps */
      double den = x[i] - sigma * eps[i];
      x[i] = (float)(x[i] + (x[i] - den) / sigma * (next - sigma));
    }
    memcpy(ref + (size_t)(k - (ISTEPS - RUNS)) * n, x, n * 4);
  }
  guidance_free(&g);
  sd_conditioning_free(&c);
  CHECK_CLOSE("img2img strength 0.5, 8 steps: the 4 latents run", lat, ref, RUNS * n, 1e-4, 1e-4);
  /* 20 steps at 0.5: 10 U-Net steps */
  tp.steps = 20;
  calls = (struct calls){0};
  CHECK_OK(txt2img(m, &tp, out, NULL));
  CHECK_MSG(calls.last_step == 10, "strength 0.5 of 20 steps ran %d", calls.last_step);
  /* strength 0: the init image through the VAE (mean, scaled, decoded) */
  tp.strength = 0;
  calls = (struct calls){0};
  CHECK_OK(txt2img(m, &tp, out, NULL));
  for (int i = 0; i < n; i++) x[i] = mean[i] * 0.18215f;
  CHECK_OK(vae_decode(m->vae, x, 1, h, h, VAE_TILING_OFF, image));
  image_to_u8(image, S, S, out2);
  int differ = 0;
  for (int i = 0; i < S * S * 3; i++) differ += out[i] != out2[i];
  CHECK_MSG(differ == 0 && calls.last_step == 0, "strength 0: %d bytes differ from the VAE round trip, %d steps", differ,
            calls.last_step);
  /* the posterior sample: the seed's, repeatable, not the mean */
  tp.strength = 0;
  tp.noise = NULL;
  tp.seed = 5;
  tp.vae_encode = SD_VAE_ENCODE_SAMPLE;
  CHECK_OK(txt2img(m, &tp, out, NULL));
  CHECK_OK(txt2img(m, &tp, out2, NULL));
  CHECK_MSG(!memcmp(out, out2, S * S * 3), "the seeded posterior sample does not repeat");
  tp.vae_encode = SD_VAE_ENCODE_MEAN;
  CHECK_OK(txt2img(m, &tp, out2, NULL));
  CHECK_MSG(memcmp(out, out2, S * S * 3) != 0, "the posterior sample equals the mean");
  printf("  img2img: the latents of strength 0.5 equal the hand-run Euler tail; 20 steps at 0.5 run 10; strength 0 is the "
         "VAE round trip\n");
  tp.strength = 1.5;
  CHECK(txt2img(m, &tp, out, NULL) == SD_INVALID_ARGUMENT && strstr(sd_last_error(), "strength"));
  tp.strength = NAN;
  CHECK(txt2img(m, &tp, out, NULL) == SD_INVALID_ARGUMENT);
  free(image), free(noise), free(mean), free(logvar), free(init), free(out), free(out2), free(lat), free(x), free(xin);
  free(eps), free(ref);
  sd_model_destroy(m);
  safetensors_close(gold);
}

/* TAESD in txt2img (#29): a tiny U-Net with SD's 8x VAE (the mixed checkpoint), 4 Euler steps at
 * 64x64: the final image through TAESD equals taesd_decode of the last latent; previews every 2
 * steps come once (after step 2, none after the last) and show the step-2 latent through TAESD. */
struct preview_calls {
  int n, step;
  unsigned char rgb[64 * 64 * 3];
};
static int on_preview(int image, int step, int steps, const unsigned char *rgb, int width, int height, void *user) {
  struct preview_calls *c = user;
  c->n++;
  c->step = step;
  if (width == 64 && height == 64 && steps == 4 && image == 0) memcpy(c->rgb, rgb, sizeof c->rgb);
  return 0;
}

static void taesd_checks(const char *dir, const char *digest, const char *cfg, const char *vocab) {
  char ckpt[600], sd15[1024], taesd_path[1024];
  test_shared_path(sd15, sizeof sd15, "ref/goldens/weights_digest_unet_vae_sd15_seed1.json");
  test_shared_path(taesd_path, sizeof taesd_path, "ref/goldens/taesd_weights_seed1.safetensors");
  snprintf(ckpt, sizeof ckpt, "%s/tiny_unet_sd15_vae.safetensors", dir);
  CHECK(write_sd_checkpoint_mixed(ckpt, digest, sd15, ST_F16, 1, clip_spec("tiny")) == 0);
  struct sd_model *m = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, false, taesd_path, &m));
  if (m) {
    enum { n = 4 * 8 * 8 };
    struct preview_calls pc = {0};
    struct txt2img_params tp = txt2img_default_params();
    tp.prompt = PROMPT;
    tp.seed = 9;
    tp.steps = 4;
    tp.sampler = SD_SAMPLER_EULER;
    tp.width = tp.height = 64;
    tp.taesd_decode = 1;
    tp.preview_every = 2;
    tp.preview = on_preview;
    tp.user = &pc;
    unsigned char img[64 * 64 * 3], ref[64 * 64 * 3];
    float lat[4 * n], image[3 * 64 * 64];
    CHECK_OK(txt2img(m, &tp, img, lat));
    CHECK_MSG(pc.n == 1 && pc.step == 2, "previews: %d, the last after step %d", pc.n, pc.step);
    CHECK_OK(taesd_decode(m->taesd, lat + 3 * n, 1, 8, 8, image));
    taesd_image_to_u8(image, 64, 64, ref);
    CHECK_MSG(!memcmp(img, ref, sizeof img), "the TAESD-decoded image is not taesd_decode of the last latent");
    CHECK_OK(taesd_decode(m->taesd, lat + 1 * n, 1, 8, 8, image));
    taesd_image_to_u8(image, 64, 64, ref);
    CHECK_MSG(!memcmp(pc.rgb, ref, sizeof ref), "the preview is not the step-2 latent through TAESD");
    tp.taesd_decode = 0; /* the KL decoder: another picture */
    CHECK_OK(txt2img(m, &tp, ref, NULL));
    CHECK(memcmp(img, ref, sizeof img) != 0);
    printf("  TAESD in txt2img: final decode = taesd_decode(last latent); 1 preview (step 2 of 4) = its latent\n");
    sd_model_destroy(m);
  }
  /* a TAESD on a VAE that is not 8x (the tiny one is 2x): refused at create */
  char tiny[600];
  snprintf(tiny, sizeof tiny, "%s/tiny_sd.safetensors", dir);
  CHECK(make_model(tiny, cfg, vocab, false, taesd_path, &m) == STATUS_UNSUPPORTED && strstr(sd_last_error(), "TAESD decodes 8x"));
  unlink(ckpt);
}

/* Inpainting (#29), fp32, the tiny model (VAE 2x: 64x64 images, 32x32 latents), strength 1, init
 * = the golden's image, posterior mean: with the left half kept (black) and the right repainted
 * (white), the final latent's kept columns are the init latent exactly and the kept pixels away
 * from the edge stay within 2 levels of the VAE round trip while the repainted half changes; an
 * all-black mask returns the round trip, an all-white one plain img2img. A 9-channel (inpainting)
 * tiny U-Net runs end to end, with and without a mask and an init image. */
static void inpaint_checks(const char *ckpt, const char *cfg, const char *vocab, const char *dir, const char *digest) {
  char gpath[1024];
  test_shared_path(gpath, sizeof gpath, "ref/goldens/vae_enc_tiny_64.safetensors");
  struct safetensors *gold = NULL;
  CHECK_OK(safetensors_open(gpath, &gold));
  struct sd_model *m = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, false, NULL, &m));
  if (!m || !gold) {
    sd_model_destroy(m);
    safetensors_close(gold);
    return;
  }
  enum { S = 64, h = 32, n = 4 * h * h, STEPS4 = 4 };
  float *image = test_tensor(gold, "image", NULL), *noise = malloc(n * 4), *lat = malloc(STEPS4 * n * 4);
  float *mean = malloc(n * 4), *logvar = malloc(n * 4);
  unsigned char *init = malloc(S * S * 3), *mask = malloc(S * S * 3), *out = malloc(S * S * 3), *trip = malloc(S * S * 3);
  unsigned char *plain = malloc(S * S * 3);
  image_to_u8(image, S, S, init);
  test_random(noise, n, 91);
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++) memset(mask + (y * S + x) * 3, x < S / 2 ? 0 : 255, 3);
  struct txt2img_params tp = txt2img_default_params();
  tp.prompt = PROMPT;
  tp.noise = noise;
  tp.steps = STEPS4;
  tp.cfg_scale = 7.5;
  tp.width = tp.height = S;
  tp.sampler = SD_SAMPLER_EULER;
  tp.vae_tiling = SD_VAE_TILING_OFF;
  tp.init_image = init;
  tp.init_width = tp.init_height = S;
  tp.vae_encode = SD_VAE_ENCODE_MEAN;
  tp.strength = 0; /* the round trip */
  CHECK_OK(txt2img(m, &tp, trip, NULL));
  tp.strength = 1;
  CHECK_OK(txt2img(m, &tp, plain, NULL));
  tp.mask = mask;
  tp.mask_width = tp.mask_height = S;
  CHECK_OK(txt2img(m, &tp, out, lat));
  for (int i = 0; i < 3 * S * S; i++) image[i] = init[(i % (S * S)) * 3 + i / (S * S)] / 127.5f - 1.0f;
  CHECK_OK(vae_encode(m->vae, image, 1, S, S, VAE_TILING_OFF, mean, logvar));
  double worst_latent = 0;
  for (int c = 0; c < 4; c++)
    for (int y = 0; y < h; y++)
      for (int x = 0; x < h / 2; x++) {
        size_t i = ((size_t)c * h + y) * h + x;
        worst_latent = fmax(worst_latent, fabs(lat[(STEPS4 - 1) * n + i] - mean[i] * 0.18215f));
      }
  int worst_kept = 0, changed = 0;
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++)
      for (int c = 0; c < 3; c++) {
        int d = abs((int)out[(y * S + x) * 3 + c] - (int)trip[(y * S + x) * 3 + c]);
        if (x < S / 2 - 8) worst_kept = d > worst_kept ? d : worst_kept;
        if (x >= S / 2 + 8) changed += d > 2;
      }
  printf("  inpainting: kept latent within %.2g of the init latent; kept pixels within %d levels of the round trip; "
         "%d repainted values changed\n", worst_latent, worst_kept, changed);
  CHECK(worst_latent <= 1e-6);
  CHECK_MSG(worst_kept <= 2, "kept pixels differ by %d levels from the VAE round trip", worst_kept);
  CHECK(changed > S * S / 4);
  { /* a batch of 2 (posterior mean: the kept part's decode is made once, for image 0, and reused): image 1 keeps it too */
    unsigned char *two = malloc(2 * S * S * 3);
    tp.batch_count = 2;
    tp.noise = NULL;
    tp.seed = 12;
    CHECK_OK(txt2img(m, &tp, two, NULL));
    int worst1 = 0;
    for (int y = 0; y < S; y++)
      for (int x = 0; x < S / 2; x++)
        for (int c = 0; c < 3; c++) {
          int d = abs((int)two[S * S * 3 + (y * S + x) * 3 + c] - (int)trip[(y * S + x) * 3 + c]);
          worst1 = d > worst1 ? d : worst1;
        }
    CHECK_MSG(worst1 == 0 && memcmp(two, two + S * S * 3, S * S * 3) != 0,
              "batch of 2: image 1's kept half is %d levels off the round trip (or the images are equal)", worst1);
    free(two);
    tp.batch_count = 1;
    tp.noise = noise;
  }
  memset(mask, 0, S * S * 3); /* all kept: the round trip */
  CHECK_OK(txt2img(m, &tp, out, NULL));
  CHECK_MSG(!memcmp(out, trip, S * S * 3), "an all-black mask is not the VAE round trip");
  memset(mask, 255, S * S * 3); /* all repainted: plain img2img */
  CHECK_OK(txt2img(m, &tp, out, NULL));
  CHECK_MSG(!memcmp(out, plain, S * S * 3), "an all-white mask is not plain img2img");
  tp.mask_blur = 4; /* a blurred half mask runs; without an init image a mask is refused */
  for (int y = 0; y < S; y++)
    for (int x = 0; x < S; x++) memset(mask + (y * S + x) * 3, x < S / 2 ? 0 : 255, 3);
  CHECK_OK(txt2img(m, &tp, out, NULL));
  tp.init_image = NULL;
  CHECK(txt2img(m, &tp, out, NULL) == SD_INVALID_ARGUMENT && strstr(sd_last_error(), "no init image"));
  sd_model_destroy(m);
  /* a 9-channel U-Net: the inpainting layout, detected */
  char ck9[600];
  snprintf(ck9, sizeof ck9, "%s/tiny_inpaint.safetensors", dir);
  checkpoint_unet_in_channels = 9;
  CHECK(write_sd_checkpoint(ck9, digest, ST_F32, 1, clip_spec("tiny")) == 0);
  checkpoint_unet_in_channels = 0;
  m = NULL;
  CHECK_OK(make_model(ck9, cfg, vocab, false, NULL, &m));
  if (m) {
    struct sd_model_info info;
    sd_model_get_info(m, &info);
    CHECK(info.inpainting == 1 && info.latent_channels == 4);
    tp.init_image = init;
    tp.mask_blur = 0;
    CHECK_OK(txt2img(m, &tp, out, NULL));
    tp.mask = NULL;
    CHECK_OK(txt2img(m, &tp, plain, NULL));
    CHECK(memcmp(out, plain, S * S * 3) != 0); /* the mask reaches the U-Net */
    tp.init_image = NULL; /* text to image with an inpainting U-Net: all repainted */
    CHECK_OK(txt2img(m, &tp, out, NULL));
    printf("  inpainting U-Net (9 channels): detected; runs with a mask, without one, and without an init image\n");
    sd_model_destroy(m);
  }
  unlink(ck9);
  free(image), free(noise), free(lat), free(mean), free(logvar), free(init), free(mask), free(out), free(trip), free(plain);
  safetensors_close(gold);
}

/* One generation's final latent (4 euler steps, 32x32, fixed noise) and image. */
static void lora_run(struct sd_model *m, const float *noise, float *latent, unsigned char *rgb) {
  enum { n = 4 * 4 * 4 };
  struct txt2img_params tp = txt2img_default_params();
  tp.prompt = PROMPT;
  tp.negative_prompt = "";
  tp.noise = noise;
  tp.steps = STEPS;
  tp.cfg_scale = 7.5;
  tp.width = tp.height = 32;
  tp.sampler = SD_SAMPLER_EULER;
  tp.vae_tiling = SD_VAE_TILING_OFF;
  float *lat = malloc((size_t)STEPS * N_LAT * sizeof *lat);
  CHECK_OK(txt2img(m, &tp, rgb, lat));
  memcpy(latent, lat + (STEPS - 1) * N_LAT, N_LAT * sizeof *lat);
  free(lat);
  (void)n;
}

static int set_one(struct sd_model *m, const char *path, double strength, int strict, struct sd_lora_report *rep) {
  struct sd_lora l = {path, strength};
  return sd_model_set_loras(m, &l, 1, strict, rep);
}

/* LoRA: merging on the device against make_checkpoint's offline merge (the library's name matching
 * against a table written by hand; fp32 within atol 1e-5 rtol 1e-4 on the final latent, images
 * within 1 level); strength 0 and unloading bit-identical to no LoRA; kohya (diffusers names),
 * kohya (ldm names) and PEFT files of one difference bit-identical; only what changed is rewritten;
 * unmatched keys counted or (strict) refused; a file matching nothing refused. */
static void lora_checks(const char *dir, const char *ckpt, const char *cfg, const char *vocab) {
  char kohya[512], ldm[512], peft[512], unet_only[512], text_only[512], merged[512], bad[512], none[512];
  snprintf(kohya, sizeof kohya, "%s/lora_kohya.safetensors", dir);
  snprintf(ldm, sizeof ldm, "%s/lora_ldm.safetensors", dir);
  snprintf(peft, sizeof peft, "%s/lora_peft.safetensors", dir);
  snprintf(unet_only, sizeof unet_only, "%s/lora_unet.safetensors", dir);
  snprintf(text_only, sizeof text_only, "%s/lora_text.safetensors", dir);
  snprintf(merged, sizeof merged, "%s/merged.safetensors", dir);
  snprintf(bad, sizeof bad, "%s/lora_bad.safetensors", dir);
  snprintf(none, sizeof none, "%s/lora_none.safetensors", dir);
  CHECK(write_test_lora(kohya, ckpt, TEST_LORA_KOHYA, 4, 2, 5, TEST_LORA_UNET | TEST_LORA_TEXT) == 0);
  CHECK(write_test_lora(ldm, ckpt, TEST_LORA_KOHYA_LDM, 4, 2, 5, TEST_LORA_UNET | TEST_LORA_TEXT) == 0);
  CHECK(write_test_lora(peft, ckpt, TEST_LORA_PEFT, 4, 2, 5, TEST_LORA_UNET | TEST_LORA_TEXT) == 0);
  CHECK(write_test_lora(unet_only, ckpt, TEST_LORA_KOHYA, 4, 4, 6, TEST_LORA_UNET) == 0);
  CHECK(write_test_lora(text_only, ckpt, TEST_LORA_KOHYA, 2, 1, 7, TEST_LORA_TEXT) == 0);
  CHECK(merge_test_lora(ckpt, kohya, 0.8, merged) == 0);
  { /* kohya plus one module the model lacks and one of another shape; and a file matching nothing */
    struct safetensors *k = NULL;
    CHECK_OK(safetensors_open(kohya, &k));
    struct st_writer *w = NULL;
    CHECK_OK(st_writer_create(&w));
    float **keepv = calloc((size_t)safetensors_count(k) + 4, sizeof *keepv);
    for (int i = 0; k && i < safetensors_count(k); i++) {
      const struct st_tensor *t = safetensors_at(k, i);
      keepv[i] = malloc((size_t)t->numel * 4 + 4);
      safetensors_read_f32(k, t, keepv[i]);
      st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, keepv[i]);
    }
    static float d[4 * 32], u[32 * 4], d2[4 * 33], u2[64 * 4];
    test_random(d, 4 * 32, 3), test_random(u, 32 * 4, 4), test_random(d2, 4 * 33, 5), test_random(u2, 64 * 4, 6);
    st_writer_add(w, "lora_unet_down_blocks_7_attentions_0_to_q.lora_down.weight", ST_F32, 2, (int64_t[]){4, 32}, d);
    st_writer_add(w, "lora_unet_down_blocks_7_attentions_0_to_q.lora_up.weight", ST_F32, 2, (int64_t[]){32, 4}, u);
    st_writer_add(w, "lora_te_text_model_encoder_layers_1_self_attn_k_proj.lora_down.weight", ST_F32, 2, (int64_t[]){4, 33}, d2);
    st_writer_add(w, "lora_te_text_model_encoder_layers_1_self_attn_k_proj.lora_up.weight", ST_F32, 2, (int64_t[]){64, 4}, u2);
    CHECK_OK(st_writer_finish(w, bad));
    st_writer_destroy(w);
    CHECK_OK(st_writer_create(&w));
    st_writer_add(w, "lora_unet_nowhere.lora_down.weight", ST_F32, 2, (int64_t[]){4, 32}, d);
    st_writer_add(w, "lora_unet_nowhere.lora_up.weight", ST_F32, 2, (int64_t[]){32, 4}, u);
    CHECK_OK(st_writer_finish(w, none));
    st_writer_destroy(w);
    for (int i = 0; k && i < safetensors_count(k); i++) free(keepv[i]);
    free(keepv);
    safetensors_close(k);
  }
  struct sd_model *m = NULL, *mm = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, false, NULL, &m));
  CHECK_OK(make_model(merged, cfg, vocab, false, NULL, &mm));
  if (!m || !mm) {
    sd_model_destroy(m), sd_model_destroy(mm);
    return;
  }
  float noise[N_LAT], base[N_LAT], got[N_LAT], ref[N_LAT], other[N_LAT];
  unsigned char img_base[PX], img[PX], img_ref[PX];
  test_random(noise, N_LAT, 91);
  lora_run(m, noise, base, img_base);
  lora_run(mm, noise, ref, img_ref);
  struct sd_lora_report rep;
  CHECK_OK(set_one(m, kohya, 0.8, 1, &rep));
  CHECK_MSG(rep.modules == 10 && rep.applied == 10 && rep.unmatched == 0 && rep.rewritten == 10,
            "kohya LoRA: %d modules, %d applied, %d unmatched, %d rewritten (expected 10, 10, 0, 10)", rep.modules,
            rep.applied, rep.unmatched, rep.rewritten);
  /* one conditioning and one U-Net evaluation, then the whole trajectory (the golden tolerances) */
  struct sd_conditioning c1 = {0}, c2 = {0};
  CHECK_OK(sd_model_encode(m, PROMPT, "", 1, SD_EMPTY_NEGATIVE_AUTO, NULL, &c1));
  CHECK_OK(sd_model_encode(mm, PROMPT, "", 1, SD_EMPTY_NEGATIVE_AUTO, NULL, &c2));
  if (c1.cond && c2.cond && c1.tokens == 77 && c2.tokens == 77) {
    CHECK_CLOSE("LoRA merged on the device vs offline: text conditioning", c1.cond, c2.cond, 77 * 64, 1e-5, 1e-4);
    float t = 500, e1[N_LAT], e2[N_LAT];
    CHECK_OK(unet_forward(m->unet, noise, &t, c2.cond, NULL, 1, 8, 8, 77, e1, NULL));
    CHECK_OK(unet_forward(mm->unet, noise, &t, c2.cond, NULL, 1, 8, 8, 77, e2, NULL));
    CHECK_CLOSE("LoRA merged on the device vs offline: one U-Net evaluation", e1, e2, 4 * 8 * 8, 1e-5, 1e-4);
  }
  sd_conditioning_free(&c1), sd_conditioning_free(&c2);
  lora_run(m, noise, got, img);
  CHECK_CLOSE("LoRA merged on the device vs offline (final latent after 4 steps)", got, ref, N_LAT, 2e-3, 1e-4);
  int worst = 0;
  for (int i = 0; i < PX; i++) worst = abs((int)img[i] - img_ref[i]) > worst ? abs((int)img[i] - img_ref[i]) : worst;
  CHECK_MSG(worst <= 1, "LoRA image vs offline merge: %d levels apart", worst);
  double diff = 0;
  for (int i = 0; i < N_LAT; i++) diff = fmax(diff, fabs(got[i] - base[i]));
  CHECK_MSG(diff > 0.1, "the LoRA changes the latent by only %g", diff);
  printf("  LoRA at 0.8 moves the final latent by up to %.3f\n", diff);
  /* the same difference in the other spellings: bit-identical */
  const char *same[] = {ldm, peft};
  for (int k = 0; k < 2; k++) {
    CHECK_OK(set_one(m, same[k], 0.8, 1, &rep));
    lora_run(m, noise, other, img);
    CHECK_MSG(!memcmp(other, got, sizeof got), "%s LoRA differs from the kohya one", k ? "PEFT" : "kohya (ldm names)");
  }
  /* strength 0: nothing merged, and everything merged before restored exactly */
  CHECK_OK(set_one(m, kohya, 0, 1, &rep));
  CHECK_MSG(rep.applied == 10 && rep.rewritten == 10, "strength 0: %d applied, %d rewritten", rep.applied, rep.rewritten);
  lora_run(m, noise, other, img);
  CHECK_MSG(!memcmp(other, base, sizeof base) && !memcmp(img, img_base, PX), "strength 0 is not bit-identical to no LoRA");
  /* re-merging only what changed */
  struct sd_lora two[2] = {{unet_only, 1.0}, {text_only, 1.5}};
  CHECK_OK(sd_model_set_loras(m, two, 1, 1, &rep));
  CHECK_MSG(rep.rewritten == 8, "U-Net LoRA: %d tensors rewritten (8)", rep.rewritten);
  CHECK_OK(sd_model_set_loras(m, two, 2, 1, &rep));
  CHECK_MSG(rep.rewritten == 2, "adding a text LoRA: %d tensors rewritten (2)", rep.rewritten);
  CHECK_OK(sd_model_set_loras(m, two, 2, 1, &rep));
  CHECK_MSG(rep.rewritten == 0, "the same set again: %d tensors rewritten (0)", rep.rewritten);
  two[1].strength = 1.25;
  CHECK_OK(sd_model_set_loras(m, two, 2, 1, &rep));
  CHECK_MSG(rep.rewritten == 2, "another text strength: %d tensors rewritten (2)", rep.rewritten);
  CHECK_OK(sd_model_set_loras(m, two + 1, 1, 1, &rep));
  CHECK_MSG(rep.rewritten == 8, "dropping the U-Net LoRA: %d tensors rewritten (8)", rep.rewritten);
  CHECK_OK(sd_model_set_loras(m, NULL, 0, 1, &rep));
  CHECK_MSG(rep.rewritten == 2, "unloading: %d tensors rewritten (2)", rep.rewritten);
  lora_run(m, noise, other, img);
  CHECK_MSG(!memcmp(other, base, sizeof base) && !memcmp(img, img_base, PX), "unloading does not restore the exact weights");
  /* unmatched keys: counted (the rest merged), or refused when strict; a file matching nothing refused */
  CHECK_OK(set_one(m, bad, 0.8, 0, &rep));
  CHECK_MSG(rep.applied == 10 && rep.unmatched == 2 && strstr(rep.first_unmatched, "is a 64 x 33 difference but the model's"),
            "unmatched keys: %d applied, %d unmatched, first: %s", rep.applied, rep.unmatched, rep.first_unmatched);
  lora_run(m, noise, other, img);
  CHECK_MSG(!memcmp(other, got, sizeof got), "the matched part of a LoRA with unmatched keys differs");
  CHECK(set_one(m, bad, 0.8, 1, &rep) == SD_FORMAT && strstr(sd_last_error(), "lora_te_text_model_encoder_layers_1_self_attn_k_proj") &&
        strstr(sd_last_error(), "lora_bad.safetensors"));
  CHECK(set_one(m, none, 1, 1, &rep) == SD_FORMAT && strstr(sd_last_error(), "'lora_unet_nowhere' matches no tensor"));
  CHECK(set_one(m, none, 1, 0, &rep) == SD_FORMAT && strstr(sd_last_error(), "none of its 1 LoRA keys"));
  CHECK(set_one(m, ckpt, 1, 0, &rep) == SD_FORMAT && strstr(sd_last_error(), "no LoRA tensors"));
  CHECK_OK(sd_model_set_loras(m, NULL, 0, 0, &rep));
  lora_run(m, noise, other, img);
  CHECK_MSG(!memcmp(other, base, sizeof base), "unloading after refused files does not restore the exact weights");
  sd_model_destroy(m), sd_model_destroy(mm);
  const char *files[] = {kohya, ldm, peft, unet_only, text_only, merged, bad, none};
  for (int i = 0; i < 8; i++) unlink(files[i]);
}

/* SDXL's towers: kohya lora_te1_* to CLIP-L, lora_te2_* (Hugging Face names) to bigG's OpenCLIP
 * names, k_proj as rows [D, 2D) of the packed in_proj_weight; against the same differences added to
 * those rows by hand (the conditioning and the pooled vector, fp32 atol 1e-5 rtol 1e-4). */
static void lora_sdxl_check(const char *dir, const char *digest, const char *vocab) {
  char ud[1024], ckpt[512], merged[512], lora[512], cfg[512];
  test_shared_path(ud, sizeof ud, "ref/goldens/weights_digest_unet_sdxl_tiny_seed1.json");
  snprintf(ckpt, sizeof ckpt, "%s/xl_lora_base.safetensors", dir);
  snprintf(merged, sizeof merged, "%s/xl_lora_merged.safetensors", dir);
  snprintf(lora, sizeof lora, "%s/xl_lora.safetensors", dir);
  CHECK(write_family_checkpoint(ckpt, "sdxl", ud, digest, ST_F32, 1, NULL, NULL) == 0);
  test_write_text(dir, "xl_lora.json", "{\"text_encoder\": {\"num_attention_heads\": 4}, \"text_encoder_2\": "
                                       "{\"num_attention_heads\": 4}, \"unet\": {\"num_attention_heads\": [2, 4, 4]}}");
  snprintf(cfg, sizeof cfg, "%s/xl_lora.json", dir);
  enum { D = 64, M = 256, R = 2 };
  static float d1[R * M], u1[D * R], d2[R * D], u2[D * R];
  test_random(d1, R * M, 21), test_random(u1, D * R, 22), test_random(d2, R * D, 23), test_random(u2, D * R, 24);
  struct st_writer *w = NULL;
  CHECK_OK(st_writer_create(&w));
  st_writer_add(w, "lora_te1_text_model_encoder_layers_1_mlp_fc2.lora_down.weight", ST_F32, 2, (int64_t[]){R, M}, d1);
  st_writer_add(w, "lora_te1_text_model_encoder_layers_1_mlp_fc2.lora_up.weight", ST_F32, 2, (int64_t[]){D, R}, u1);
  st_writer_add(w, "lora_te2_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight", ST_F32, 2, (int64_t[]){R, D}, d2);
  st_writer_add(w, "lora_te2_text_model_encoder_layers_0_self_attn_k_proj.lora_up.weight", ST_F32, 2, (int64_t[]){D, R}, u2);
  CHECK_OK(st_writer_finish(w, lora));
  st_writer_destroy(w);
  /* by hand: fc2 [D, M] += u1 d1; in_proj_weight [3D, D] rows D..2D += u2 d2 (alpha absent: scale 1) */
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(ckpt, &st));
  int n = st ? safetensors_count(st) : 0;
  float **v = calloc((size_t)n + 1, sizeof *v);
  CHECK_OK(st_writer_create(&w));
  for (int i = 0; i < n; i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    v[i] = malloc((size_t)t->numel * 4 + 4);
    safetensors_read_f32(st, t, v[i]);
    const float *up = NULL, *down = NULL;
    int64_t in = 0, row0 = 0;
    if (!strcmp(t->name, "conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc2.weight")) up = u1, down = d1, in = M;
    if (!strcmp(t->name, "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight")) up = u2, down = d2, in = D, row0 = D;
    for (int64_t o = 0; up && o < D; o++)
      for (int64_t k = 0; k < in; k++) {
        double acc = 0;
        for (int r = 0; r < R; r++) acc += (double)up[o * R + r] * down[r * in + k];
        v[i][(row0 + o) * in + k] = (float)(v[i][(row0 + o) * in + k] + acc);
      }
    st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, v[i]);
  }
  CHECK_OK(st_writer_finish(w, merged));
  st_writer_destroy(w);
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
  safetensors_close(st);
  struct sd_model *m = NULL, *mm = NULL;
  CHECK_OK(make_model(ckpt, cfg, vocab, false, NULL, &m));
  CHECK_OK(make_model(merged, cfg, vocab, false, NULL, &mm));
  struct sd_lora_report rep = {0};
  if (m) CHECK_OK(set_one(m, lora, 1.0, 1, &rep));
  CHECK_MSG(rep.applied == 2 && rep.rewritten == 2, "SDXL text LoRA: %d applied, %d rewritten (2, 2)", rep.applied, rep.rewritten);
  struct sd_conditioning c1 = {0}, c2 = {0};
  if (m && mm) {
    CHECK_OK(sd_model_encode(m, PROMPT, "", 0, SD_EMPTY_NEGATIVE_AUTO, NULL, &c1));
    CHECK_OK(sd_model_encode(mm, PROMPT, "", 0, SD_EMPTY_NEGATIVE_AUTO, NULL, &c2));
  }
  if (c1.cond && c2.cond && c1.tokens == c2.tokens && c1.y_cond && c2.y_cond) {
    CHECK_CLOSE("SDXL LoRA (te1 fc2, te2 in_proj k rows) vs by hand: context", c1.cond, c2.cond, (size_t)c1.tokens * 2 * D, 1e-5, 1e-4);
    struct textenc_cond_info ci;
    textenc_cond_info(m->cond, &ci);
    CHECK_CLOSE("SDXL LoRA vs by hand: y (pooled ++ sizes)", c1.y_cond, c2.y_cond, (size_t)ci.y_dim, 1e-5, 1e-4);
  } else {
    CHECK_MSG(false, "SDXL LoRA: no conditioning to compare");
  }
  sd_conditioning_free(&c1), sd_conditioning_free(&c2);
  sd_model_destroy(m), sd_model_destroy(mm);
  unlink(ckpt), unlink(merged), unlink(lora);
}

int main(void) {
  char gpath[1024], digest[1024], vocab[1024], dir[256], ckpt[512], cfg[512];
  test_shared_path(gpath, sizeof gpath, "ref/goldens/sample_tiny.safetensors");
  test_shared_path(digest, sizeof digest, "ref/goldens/weights_digest_unet_vae_tiny_seed1.json");
  test_shared_path(vocab, sizeof vocab, "clip");
  struct safetensors *gold = NULL;
  if (access(digest, R_OK) || access(vocab, R_OK) || safetensors_open(gpath, &gold))
    return test_skip("../shared/ref/goldens (sample_tiny, the tiny weight digest) or ../shared/clip missing");
  int rc = 0;
  struct gpu *probe = test_gpu(&rc); /* is there a device at all (skip, or fail under CI) */
  if (!probe) {
    safetensors_close(gold);
    return rc;
  }
  test_gpu_done(probe);
  snprintf(dir, sizeof dir, "/tmp/vkd_test_txt2img_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny_sd.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  CHECK(write_sd_checkpoint(ckpt, digest, ST_F32, 1, clip_spec("tiny")) == 0);
  FILE *f = fopen(cfg, "w");
  CHECK(f != NULL);
  if (f) {
    fputs("{\"text_encoder\": {\"num_attention_heads\": 4}, \"unet\": {\"num_attention_heads\": 2}}", f);
    fclose(f);
  }
  golden(ckpt, cfg, vocab, gold, false);
  golden(ckpt, cfg, vocab, gold, true);
  img2img_checks(ckpt, cfg, vocab);
  taesd_checks(dir, digest, cfg, vocab);
  inpaint_checks(ckpt, cfg, vocab, dir, digest);
  lora_checks(dir, ckpt, cfg, vocab);
  lora_sdxl_check(dir, digest, vocab);
  for (int fp16 = 0; fp16 < 2; fp16++) {
    xl_golden("sd2", "sample_sd21_tiny_v", "weights_digest_unet_sd21_tiny_seed1.json", digest, vocab, dir, fp16);
    xl_golden("sdxl", "sample_sdxl_tiny", "weights_digest_unet_sdxl_tiny_seed1.json", digest, vocab, dir, fp16);
  }
  unlink(ckpt);
  unlink(cfg);
  rmdir(dir);
  safetensors_close(gold);
  return test_result("test_txt2img");
}
