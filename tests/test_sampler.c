/* Samplers, schedule and the CPU RNG.
 * - rng: torch.manual_seed(S); torch.randn(...) values, obtained here on 2026-11-29 with Debian's
 *   python3-torch 1.13 (/usr/bin/python3 -c "import torch; torch.manual_seed(42);
 *   print(torch.randn(1,4,8,8).flatten()[:6])", likewise for the other seeds and shapes).
 * - ../shared/ref/goldens/sample_tiny.safetensors: the tiny U-Net and VAE (weight rule, seed 1),
 *   4 steps, guidance 7.5, each of ddim, euler, euler_a, dpmpp_2m (karras): sigmas/timesteps rtol
 *   2e-5; guided eps atol 5e-4 rtol 1e-4; latents atol 2e-3 rtol 1e-4; image_u8 within 1 level
 *   (fp32 path), and fp16 storage: latents atol 1 rtol 2e-2, image_u8 within 3 levels. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "guidance.h"
#include "rng.h"
#include "sampler.h"
#include "test.h"
#include "vae.h"

static void test_rng(void) {
  struct {
    uint64_t seed;
    float first[6], last[3];
  } cases[] = {
      {0, {-1.12583983f, -1.1523602f, -0.250578582f, -0.433878809f, 0.848710358f, 0.692009151f}, {0.144742891f, 1.90285647f, 0.39039579f}},
      {42, {1.92691529f, 1.48728406f, 0.900717199f, -2.10552096f, 0.678418458f, -1.23454487f}, {0.565505028f, 0.505791724f, 0.222453654f}},
      {1234567890, {0.669827878f, -0.00288426224f, 0.232805625f, -0.508514225f, -0.800363481f, 0.0579106696f},
       {-1.20540547f, 0.773219705f, 0.231551751f}},
  };
  float v[256];
  for (size_t c = 0; c < 3; c++) {
    struct rng r;
    rng_seed(&r, cases[c].seed);
    rng_randn(&r, v, 256);
    char what[64];
    snprintf(what, sizeof what, "randn(1,4,8,8) seed %llu first", (unsigned long long)cases[c].seed);
    CHECK_CLOSE(what, v, cases[c].first, 6, 1e-6, 1e-6);
    snprintf(what, sizeof what, "randn(1,4,8,8) seed %llu last", (unsigned long long)cases[c].seed);
    CHECK_CLOSE(what, v + 253, cases[c].last, 3, 1e-6, 1e-6);
  }
  /* the next draw continues the stream; a length that is not a multiple of 16 redraws the tail */
  struct rng r;
  rng_seed(&r, 42);
  rng_randn(&r, v, 256);
  rng_randn(&r, v, 256);
  CHECK_CLOSE("second randn(1,4,8,8) after seed 42", v, ((float[]){-0.685481608f, 0.563558996f, -1.50717509f, -1.61066604f}), 4, 1e-6, 1e-6);
  rng_seed(&r, 7);
  rng_randn(&r, v, 37);
  CHECK_CLOSE("randn(37) seed 7, last 4", v + 33, ((float[]){0.157711908f, 0.395740926f, -1.36773968f, -0.100734316f}), 4, 1e-6, 1e-6);
}


static void golden(struct gpu *gpu, const char *ckpt, struct safetensors *gold, bool fp16) {
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(ckpt, &st));
  struct unet *u = NULL;
  struct vae *v = NULL;
  CHECK_OK(unet_load(gpu, st, &(struct unet_options){.fp16 = fp16, .heads_all = 2}, &u));
  CHECK_OK(vae_load(gpu, st, &(struct vae_options){.fp16 = fp16}, &v));
  struct schedule sched;
  schedule_init(&sched);
  float *cond = test_tensor(gold, "cond", NULL), *uncond = test_tensor(gold, "uncond", NULL), *noise = test_tensor(gold, "noise", NULL);
  float *anoise = test_tensor(gold, "euler_a_noise", NULL);
  const char *names[] = {"ddim", "euler", "euler_a", "dpmpp_2m_karras"};
  enum sampler_kind kinds[] = {SAMPLER_DDIM, SAMPLER_EULER, SAMPLER_EULER_A, SAMPLER_DPMPP_2M};
  for (int k = 0; u && v && k < 4; k++) {
    const int steps = 4, n = 4 * 16 * 16;
    struct guidance g;
    CHECK_OK(guidance_init(&g, u, cond, uncond, 77, 4, 16, 16, 7.5f));
    float *lat = malloc(steps * n * 4), *eps = malloc(steps * n * 4), x[4 * 16 * 16];
    double ts[4], sig[5];
    struct sampler_run run = {.sampler = kinds[k], .schedule = k == 3 ? SCHEDULE_KARRAS : SCHEDULE_DISCRETE,
                              .steps = steps, .n = n, .noise = noise, .ancestral_noise = anoise,
                              .denoise = guidance_denoise, .user = &g, .latents = lat, .eps_out = eps,
                              .timesteps = ts, .sigmas_out = sig};
    CHECK_OK(sampler_run(&sched, &run, x));
    char name[96], what[128];
    const char *p = fp16 ? "fp16" : "fp32";
    snprintf(name, sizeof name, "%s.timesteps", names[k]);
    float *ref = test_tensor(gold, name, NULL), tsf[4] = {(float)ts[0], (float)ts[1], (float)ts[2], (float)ts[3]};
    snprintf(what, sizeof what, "%s %s", names[k], "timesteps");
    if (!fp16) CHECK_CLOSE(what, tsf, ref, 4, 0, 2e-5);
    free(ref);
    if (k > 0) {
      snprintf(name, sizeof name, "%s.sigmas", names[k]);
      ref = test_tensor(gold, name, NULL);
      float sf[5];
      for (int i = 0; i < 5; i++) sf[i] = (float)sig[i];
      snprintf(what, sizeof what, "%s sigmas", names[k]);
      if (!fp16) CHECK_CLOSE(what, sf, ref, 5, 0, 2e-5);
      free(ref);
    }
    snprintf(name, sizeof name, "%s.eps", names[k]);
    ref = test_tensor(gold, name, NULL);
    snprintf(what, sizeof what, "%s %s guided eps", names[k], p);
    CHECK_CLOSE(what, eps, ref, steps * n, fp16 ? 0.1 : 5e-4, fp16 ? 2e-2 : 1e-4);
    free(ref);
    snprintf(name, sizeof name, "%s.latents", names[k]);
    ref = test_tensor(gold, name, NULL);
    snprintf(what, sizeof what, "%s %s latents", names[k], p);
    CHECK_CLOSE(what, lat, ref, steps * n, fp16 ? 1.0 : 2e-3, fp16 ? 2e-2 : 1e-4);
    free(ref);
    float img[3 * 32 * 32];
    unsigned char u8[32 * 32 * 3];
    CHECK_OK(vae_decode(v, x, 1, 16, 16, VAE_TILING_OFF, img));
    image_to_u8(img, 32, 32, u8);
    snprintf(name, sizeof name, "%s.image_u8", names[k]);
    ref = test_tensor(gold, name, NULL);
    float got[32 * 32 * 3];
    for (int i = 0; i < 32 * 32 * 3; i++) got[i] = u8[i];
    snprintf(what, sizeof what, "%s %s image_u8 (levels)", names[k], p);
    CHECK_CLOSE(what, got, ref, 32 * 32 * 3, fp16 ? 3 : 1, 0);
    free(ref), free(lat), free(eps);
    guidance_free(&g);
  }
  free(cond), free(uncond), free(noise), free(anoise);
  vae_destroy(v);
  unet_destroy(u);
  safetensors_close(st);
}

int main(void) {
  test_rng();
  struct schedule s;
  schedule_init(&s);
  CHECK(fabs(s.sigmas[0] - 0.0291672) < 1e-6 && fabs(s.sigmas[999] - 14.614641) < 1e-5);
  CHECK(fabs(schedule_sigma_to_t(&s, schedule_t_to_sigma(&s, 261.5)) - 261.5) < 1e-9);
  char gpath[1024], dpath[1024], dir[256], ckpt[512];
  test_shared_path(gpath, sizeof gpath, "ref/goldens/sample_tiny.safetensors");
  struct safetensors *gold = NULL;
  if (safetensors_open(gpath, &gold)) return test_skip("cannot read ../shared/ref/goldens/sample_tiny.safetensors");
  int rc = 0;
  struct gpu *gpu = test_gpu(&rc);
  if (!gpu) {
    safetensors_close(gold);
    return rc;
  }
  snprintf(dir, sizeof dir, "/tmp/vkd_test_sampler_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny.safetensors", dir);
  test_shared_path(dpath, sizeof dpath, "ref/goldens/weights_digest_unet_vae_tiny_seed1.json");
  CHECK(write_sd_checkpoint(ckpt, dpath, ST_F32, 1, NULL) == 0);
  golden(gpu, ckpt, gold, false);
  golden(gpu, ckpt, gold, true);
  unlink(ckpt);
  rmdir(dir);
  safetensors_close(gold);
  test_gpu_done(gpu);
  return test_result("test_sampler");
}
