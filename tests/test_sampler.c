/* Samplers, schedule and the CPU RNG.
 * - rng: torch.manual_seed(S); torch.randn(...) bit for bit, with both of PyTorch's CPU kernels
 *   (test_rng says where the numbers come from).
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

/* torch.manual_seed(S); torch.randn(shape), bit for bit, for both of PyTorch's CPU kernels: the
 * values were produced on 2026-12-07 with Debian's python3-torch 1.13 on this (AVX2) machine,
 * `ATEN_CPU_CAPABILITY=default` selecting the scalar kernel:
 *   /usr/bin/python3 -c "import torch; torch.manual_seed(7); print(torch.randn(37).tolist())"
 * (and likewise for every case; the 2^20-value case is compared through an FNV-1a hash of its
 * float bits). Shapes below 16 values, of exactly 16, and not a multiple of 16; a sequence of
 * calls after one seed (the cached Box-Muller sample of the < 16 path carries over). */
struct randn_case {
  enum rng_kind kind;
  uint64_t seed;
  size_t n;
  float v[40]; /* every value (n <= 40), or the first four */
  uint64_t hash; /* n > 40: FNV-1a of all the values' bits */
};
/* generated from Debian's python3-torch 1.13 (see the comment above) */
static const struct randn_case randn_cases[] = {
    {RNG_CPU, 1234, 1536, {-0.111718565f, -0.496590108f, 0.163073704f, -0.88168776f}, 0xd0600f049bc9167eull},
    {RNG_CPU, 7, 37, {-0.820134521f, 0.395631164f, 0.898908496f, -1.38840389f, -0.166996017f, 0.285149962f, -0.641091526f, -0.893655419f, 0.926542997f, -0.535512209f, -1.1597203f, -0.460157156f, 0.708539069f, 1.01275539f, 0.230396867f, 1.09016514f, -1.58266461f, -0.324566633f, 1.92636812f, -0.330011725f, 0.198445052f, -0.661867559f, -0.828452051f, -0.605680287f, -0.135436893f, 0.747118235f, 0.611815751f, 1.86778355f, 2.51160288f, -0.25013262f, 0.501121461f, 0.2600362f, -1.6370213f, 0.157711908f, 0.395740926f, -1.36773968f, -0.100734316f}, 0},
    {RNG_CPU, 5, 1, {-0.486780763f}, 0},
    {RNG_CPU, 5, 3, {-0.486780763f, -0.603821576f, -0.55809623f}, 0},
    {RNG_CPU, 5, 15, {-0.486780763f, -0.603821576f, -0.55809623f, 0.667524278f, -0.197415099f, 1.94278347f, -1.40170205f, -0.762557149f, 0.631213427f, -0.899135172f, -0.557793438f, 0.69071877f, 0.222458586f, -0.666225255f, 0.684642196f}, 0},
    {RNG_CPU, 5, 16, {1.84232986f, 0.518887162f, -1.71192133f, -1.7013793f, 2.01941943f, -0.268614441f, -0.130717501f, -1.43741381f, 0.39076823f, -0.0189677607f, -1.35268736f, -0.730817795f, 0.987922251f, -0.419407934f, -0.584895849f, -0.782335103f}, 0},
    {RNG_CPU, 5, 17, {1.84232986f, 1.22202528f, -0.336449355f, -0.965060174f, -0.129662678f, -0.601765633f, 0.144998565f, -0.149827167f, 2.61457705f, 0.779233754f, -0.0583394617f, -2.03049517f, 1.48293233f, 0.494038075f, 0.249218777f, 1.74703145f, 0.744776964f}, 0},
    {RNG_CPU, 99, 256, {0.299461097f, -2.64285851f, 0.72331363f, 0.839092016f}, 0xe3772200aade5fc1ull},
    {RNG_CPU, 3, 10, {0.803276062f, 0.174833387f, 0.0889780968f, -0.613718033f, 0.0461824499f, -1.36825919f, 0.337495089f, 1.01111591f, -1.43517935f, 0.977431774f}, 0},
    {RNG_CPU, 987654321, 1 << 20, {0}, 0xcc2a78440a5a84f8ull},
    {RNG_CPU_SCALAR, 1234, 1536, {-0.111718565f, -0.496590108f, 0.163073704f, -0.88168782f}, 0xcff38987b4d463d1ull},
    {RNG_CPU_SCALAR, 7, 37, {-0.820134521f, 0.395630926f, 0.898907959f, -1.38840401f, -0.166996017f, 0.285149962f, -0.641091526f, -0.893655121f, 0.926543057f, -0.535512388f, -1.15972066f, -0.460156798f, 0.708539069f, 1.01275539f, 0.230396867f, 1.09016538f, -1.58266461f, -0.324566692f, 1.92636728f, -0.330011725f, 0.198444054f, -0.661867559f, -0.828451931f, -0.605680168f, -0.135436893f, 0.747118235f, 0.611815751f, 1.86778355f, 2.51160288f, -0.25013262f, 0.50112164f, 0.260036379f, -1.6370213f, 0.157711908f, 0.395740867f, -1.36773968f, -0.100734316f}, 0},
    {RNG_CPU_SCALAR, 5, 1, {-0.486780763f}, 0},
    {RNG_CPU_SCALAR, 5, 3, {-0.486780763f, -0.603821576f, -0.55809623f}, 0},
    {RNG_CPU_SCALAR, 5, 15, {-0.486780763f, -0.603821576f, -0.55809623f, 0.667524278f, -0.197415099f, 1.94278347f, -1.40170205f, -0.762557149f, 0.631213427f, -0.899135172f, -0.557793438f, 0.69071877f, 0.222458586f, -0.666225255f, 0.684642196f}, 0},
    {RNG_CPU_SCALAR, 5, 16, {1.84232986f, 0.518887162f, -1.71192169f, -1.70137942f, 2.01941943f, -0.268614411f, -0.130717501f, -1.43741381f, 0.39076823f, -0.0189677607f, -1.35268712f, -0.730817318f, 0.987922251f, -0.419407934f, -0.584895849f, -0.782334745f}, 0},
    {RNG_CPU_SCALAR, 5, 17, {1.84232986f, 1.22202528f, -0.336449385f, -0.965061128f, -0.129662678f, -0.601765692f, 0.144998565f, -0.149827167f, 2.61457705f, 0.779233634f, -0.0583393797f, -2.03049469f, 1.48293233f, 0.494038075f, 0.249218777f, 1.74703145f, 0.744776905f}, 0},
    {RNG_CPU_SCALAR, 99, 256, {0.299460918f, -2.64285851f, 0.723312557f, 0.839091897f}, 0x07b0c3b9e3a7b00aull},
    {RNG_CPU_SCALAR, 3, 10, {0.803276062f, 0.174833387f, 0.0889780968f, -0.613718033f, 0.0461824499f, -1.36825919f, 0.337495089f, 1.01111591f, -1.43517935f, 0.977431774f}, 0},
    {RNG_CPU_SCALAR, 987654321, 1 << 20, {0}, 0xa3e118ddae6b8d44ull},
};
static const float randn_seq_avx2[28] = {0.737629473f, 1.94592917f, -0.699541628f, -1.30229735f, -0.513262212f, -0.269619554f, 0.246184662f, 0.483925283f, 0.247880027f, 1.57270348f, -1.6394645f, -1.59253228f, 0.496174872f, -0.605279505f, -0.800693989f, 0.158651799f, -0.724457979f, 0.769076586f, -1.13963807f, -0.134665698f, 2.99505401f, -0.256943256f, -0.683797359f, 1.06211865f, -0.430130541f, 1.77983487f, 0.0572894178f, -0.641932011f};
static const float randn_seq_default[28] = {0.737629473f, 1.94592917f, -0.699541628f, -1.30229735f, -0.513262212f, -0.269619554f, 0.246184662f, 0.483925283f, 0.247880027f, 1.5727036f, -1.63946426f, -1.59253204f, 0.49617523f, -0.605279565f, -0.800693929f, 0.158651799f, -0.72445792f, 0.769076586f, -1.13963795f, -0.134665698f, 2.99505401f, -0.256943107f, -0.683797359f, 1.06211865f, -0.430130601f, 1.77983487f, 0.0572896861f, -0.641932011f};

static uint64_t fnv_bits(const float *v, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    h = (h ^ u) * 0x100000001b3ull;
  }
  return h;
}

static void test_rng(void) {
  float *v = malloc(((size_t)1 << 20) * sizeof *v);
  for (size_t c = 0; c < sizeof randn_cases / sizeof *randn_cases; c++) {
    const struct randn_case *k = &randn_cases[c];
    struct rng r;
    rng_seed_kind(&r, k->seed, k->kind);
    rng_randn(&r, v, k->n);
    size_t shown = k->n <= 40 ? k->n : k->v[0] != 0 ? 4 : 0, differ = 0;
    for (size_t i = 0; i < shown; i++) differ += memcmp(&v[i], &k->v[i], 4) != 0;
    bool ok = !differ && (k->n <= 40 || fnv_bits(v, k->n) == k->hash);
    CHECK_MSG(ok, "randn(%zu) seed %llu, %s: %zu of the first %zu values differ in their bits%s", k->n,
              (unsigned long long)k->seed, rng_kind_name(k->kind), differ, shown,
              k->n > 40 && fnv_bits(v, k->n) != k->hash ? ", and the hash of all differs" : "");
    printf("  randn(%zu) seed %llu --rng %s: %s\n", k->n, (unsigned long long)k->seed, rng_kind_name(k->kind),
           ok ? "bit for bit" : "DIFFERENT");
  }
  /* the AVX2 and scalar kernels really differ (so the cases above tell them apart) */
  struct rng a, b;
  rng_seed_kind(&a, 1234, RNG_CPU);
  rng_seed_kind(&b, 1234, RNG_CPU_SCALAR);
  float x[1536], y[1536];
  rng_randn(&a, x, 1536);
  rng_randn(&b, y, 1536);
  int differ = 0;
  for (int i = 0; i < 1536; i++) differ += memcmp(&x[i], &y[i], 4) != 0;
  CHECK_MSG(differ > 300 && differ < 900, "seed 1234 [1,4,16,24]: the kernels differ in %d of 1536 values", differ);
  printf("  seed 1234 [1,4,16,24]: the AVX2 and scalar kernels differ in %d of 1536 values (torch: 594)\n", differ);
  /* a sequence: randn(5), randn(3), randn(20) after one seed */
  const float *seqs[2] = {randn_seq_avx2, randn_seq_default};
  for (int k = 0; k < 2; k++) {
    rng_seed_kind(&a, 11, k ? RNG_CPU_SCALAR : RNG_CPU);
    rng_randn(&a, v, 5);
    rng_randn(&a, v + 5, 3);
    rng_randn(&a, v + 8, 20);
    CHECK_MSG(!memcmp(v, seqs[k], 28 * sizeof *v), "randn(5), randn(3), randn(20) after seed 11, %s", k ? "cpu-scalar" : "cpu");
  }
  CHECK(rng_kind_parse("cpu") == RNG_CPU && rng_kind_parse("cpu-scalar") == RNG_CPU_SCALAR && rng_kind_parse("gpu") == -1);
  free(v);
}

/* One sampling golden: which tensors hold the conditioning, what the model predicts, tolerances. */
struct sample_spec {
  const char *label, *cond, *uncond, *y, *y_uncond, *out; /* out: "eps" or "v" (the guided output per step) */
  int n_samplers;
  const char *const *names;
  const enum sampler_kind *kinds;
  enum prediction prediction;
  float cfg, scale_factor;
  int head_dim, ctx_dim;
  double lat_atol, out_atol, lat16_atol, out16_atol;
};

static void golden(struct gpu *gpu, const char *unet_ckpt, const char *vae_ckpt, struct safetensors *gold, bool fp16,
                   const struct sample_spec *sp) {
  struct safetensors *st = NULL, *vst = NULL;
  CHECK_OK(safetensors_open(unet_ckpt, &st));
  CHECK_OK(safetensors_open(vae_ckpt, &vst));
  struct unet *u = NULL;
  struct vae *v = NULL;
  CHECK_OK(unet_load(gpu, st, &(struct unet_options){.fp16 = fp16, .heads_all = 2, .head_dim = sp->head_dim}, &u));
  CHECK_OK(vae_load(gpu, vst, &(struct vae_options){.fp16 = fp16, .scale_factor = sp->scale_factor}, &v));
  struct schedule sched;
  schedule_init(&sched);
  float *cond = test_tensor(gold, sp->cond, NULL), *uncond = test_tensor(gold, sp->uncond, NULL), *noise = test_tensor(gold, "noise", NULL);
  float *anoise = test_tensor(gold, "euler_a_noise", NULL);
  float *y = sp->y ? test_tensor(gold, sp->y, NULL) : NULL, *yu = sp->y ? test_tensor(gold, sp->y_uncond, NULL) : NULL;
  for (int k = 0; u && v && k < sp->n_samplers; k++) {
    const int steps = 4, n = 4 * 16 * 16;
    struct guidance g;
    CHECK_OK(guidance_init(&g, u, cond, uncond, y, yu, 77, 4, 16, 16, sp->cfg));
    float *lat = malloc(steps * n * 4), *eps = malloc(steps * n * 4), x[4 * 16 * 16];
    double ts[4], sig[5];
    const char *const *names = sp->names;
    struct sampler_run run = {.sampler = sp->kinds[k], .schedule = strstr(names[k], "karras") ? SCHEDULE_KARRAS : SCHEDULE_DISCRETE,
                              .prediction = sp->prediction, .steps = steps, .n = n, .noise = noise,
                              .ancestral_noise = anoise, .denoise = guidance_denoise, .user = &g, .latents = lat,
                              .eps_out = eps, .timesteps = ts, .sigmas_out = sig};
    CHECK_OK(sampler_run(&sched, &run, x));
    char name[96], what[160];
    const char *p = fp16 ? "fp16" : "fp32";
    snprintf(name, sizeof name, "%s.timesteps", names[k]);
    float *ref = test_tensor(gold, name, NULL), tsf[4] = {(float)ts[0], (float)ts[1], (float)ts[2], (float)ts[3]};
    snprintf(what, sizeof what, "%s %s timesteps", sp->label, names[k]);
    if (!fp16) CHECK_CLOSE(what, tsf, ref, 4, 0, 2e-5);
    free(ref);
    if (sp->kinds[k] != SAMPLER_DDIM) {
      snprintf(name, sizeof name, "%s.sigmas", names[k]);
      ref = test_tensor(gold, name, NULL);
      float sf[5];
      for (int i = 0; i < 5; i++) sf[i] = (float)sig[i];
      snprintf(what, sizeof what, "%s %s sigmas", sp->label, names[k]);
      if (!fp16) CHECK_CLOSE(what, sf, ref, 5, 0, 2e-5);
      free(ref);
    }
    snprintf(name, sizeof name, "%s.%s", names[k], sp->out);
    ref = test_tensor(gold, name, NULL);
    snprintf(what, sizeof what, "%s %s %s guided %s", sp->label, names[k], p, sp->out);
    CHECK_CLOSE(what, eps, ref, steps * n, fp16 ? sp->out16_atol : sp->out_atol, fp16 ? 2e-2 : 1e-4);
    free(ref);
    snprintf(name, sizeof name, "%s.latents", names[k]);
    ref = test_tensor(gold, name, NULL);
    snprintf(what, sizeof what, "%s %s %s latents", sp->label, names[k], p);
    CHECK_CLOSE(what, lat, ref, steps * n, fp16 ? sp->lat16_atol : sp->lat_atol, fp16 ? 2e-2 : 1e-4);
    free(ref);
    float img[3 * 32 * 32];
    unsigned char u8[32 * 32 * 3];
    CHECK_OK(vae_decode(v, x, 1, 16, 16, VAE_TILING_OFF, img));
    image_to_u8(img, 32, 32, u8);
    snprintf(name, sizeof name, "%s.image_u8", names[k]);
    ref = test_tensor(gold, name, NULL);
    float got[32 * 32 * 3];
    for (int i = 0; i < 32 * 32 * 3; i++) got[i] = u8[i];
    snprintf(what, sizeof what, "%s %s %s image_u8 (levels)", sp->label, names[k], p);
    CHECK_CLOSE(what, got, ref, 32 * 32 * 3, fp16 ? 3 : 1, 0);
    free(ref), free(lat), free(eps);
    guidance_free(&g);
  }
  free(cond), free(uncond), free(noise), free(anoise), free(y), free(yu);
  vae_destroy(v);
  unet_destroy(u);
  safetensors_close(st);
  safetensors_close(vst);
}

/* the trailing schedule as diffusers spaces it (np.round(np.arange(1000, 0, -1000 / steps)) - 1) and
 * its sigmas; one trailing step of Euler from pure noise with a v model lands on c_skip x + c_out v */
static void test_trailing(void) {
  struct schedule s;
  schedule_init(&s);
  double t[8], sig[9];
  schedule_timesteps(SCHEDULE_TRAILING, 4, t);
  CHECK(t[0] == 999 && t[1] == 749 && t[2] == 499 && t[3] == 249);
  schedule_timesteps(SCHEDULE_TRAILING, 1, t);
  CHECK(t[0] == 999);
  schedule_timesteps(SCHEDULE_TRAILING, 3, t);
  CHECK(t[0] == 999 && t[1] == 666 && t[2] == 332); /* 1000 - 333.33 = 666.67 -> 667 - 1 */
  schedule_timesteps(SCHEDULE_TRAILING, 8, t);
  CHECK(t[7] == 124);
  schedule_sigmas(&s, SCHEDULE_TRAILING, 4, sig);
  CHECK(fabs(sig[0] - s.sigmas[999]) < 1e-12 && fabs(sig[1] - s.sigmas[749]) < 1e-9 && sig[4] == 0);
  CHECK(schedule_parse("trailing") == SCHEDULE_TRAILING);
}

int main(void) {
  test_rng();
  test_trailing();
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
  static const char *const sd1_names[] = {"ddim", "euler", "euler_a", "dpmpp_2m_karras"};
  static const enum sampler_kind all4[] = {SAMPLER_DDIM, SAMPLER_EULER, SAMPLER_EULER_A, SAMPLER_DPMPP_2M};
  const struct sample_spec sd1 = {"sd1 tiny", "cond", "uncond", NULL, NULL, "eps", 4, sd1_names, all4, PREDICTION_EPS,
                                  7.5f, 0, 0, 64, 2e-3, 5e-4, 1.0, 0.1};
  golden(gpu, ckpt, ckpt, gold, false, &sd1);
  golden(gpu, ckpt, ckpt, gold, true, &sd1);
  safetensors_close(gold);
  /* SD 2.x v-prediction and SDXL (vector y, zero uncond, scale factor 0.13025): the tiny U-Nets with
   * the tiny VAE (the same rule values); tolerances from ../shared/ref/README.md */
  static const char *const sd2_names[] = {"euler", "euler_a", "dpmpp_2m_karras", "ddim"};
  static const enum sampler_kind sd2_kinds[] = {SAMPLER_EULER, SAMPLER_EULER_A, SAMPLER_DPMPP_2M, SAMPLER_DDIM};
  const struct sample_spec xl[2] = {
      {"sd21 tiny v", "cond", "uncond", NULL, NULL, "v", 4, sd2_names, sd2_kinds, PREDICTION_V, 7.5f, 0.18215f, 16, 64,
       5e-4, 5e-4, 0.2, 0.1},
      {"sdxl tiny", "context", "uncond_context", "y", "uncond_y", "eps", 2, sd2_names, sd2_kinds, PREDICTION_EPS, 5.0f,
       0.13025f, 16, 128, 2e-3, 5e-4, 1.0, 0.1},
  };
  const char *files[2] = {"sample_sd21_tiny_v", "sample_sdxl_tiny"};
  const char *digests[2] = {"weights_digest_unet_sd21_tiny_seed1.json", "weights_digest_unet_sdxl_tiny_seed1.json"};
  for (int k = 0; k < 2; k++) {
    char g2[1024], rel[160], unet_ckpt[512];
    snprintf(rel, sizeof rel, "ref/goldens/%s.safetensors", files[k]);
    test_shared_path(g2, sizeof g2, rel);
    snprintf(rel, sizeof rel, "ref/goldens/%s", digests[k]);
    test_shared_path(dpath, sizeof dpath, rel);
    snprintf(unet_ckpt, sizeof unet_ckpt, "%s/unet_%d.safetensors", dir, k);
    if (safetensors_open(g2, &gold)) {
      CHECK_MSG(0, "cannot read %s", g2);
      continue;
    }
    CHECK(write_unet_checkpoint(unet_ckpt, dpath, ST_F32, 1) == 0);
    golden(gpu, unet_ckpt, ckpt, gold, false, &xl[k]);
    golden(gpu, unet_ckpt, ckpt, gold, true, &xl[k]);
    unlink(unet_ckpt);
    safetensors_close(gold);
  }
  unlink(ckpt);
  rmdir(dir);
  test_gpu_done(gpu);
  return test_result("test_sampler");
}
