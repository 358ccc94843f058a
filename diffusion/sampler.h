/* Schedules and samplers, plain C on the CPU (the latent is small). They call a denoise callback
 * (the U-Net with classifier-free guidance) and know nothing about Vulkan.
 *
 * Formulas as k-diffusion / stable-diffusion.cpp (../shared/ref/README.md, "Schedule and
 * samplers"): SD 1.x scaled-linear betas 0.00085 -> 0.012 over 1000 steps, sigma(t) =
 * sqrt((1 - a_t) / a_t), t <-> sigma by linear interpolation of log sigma. */
#ifndef VKD_SAMPLER_H
#define VKD_SAMPLER_H

#include <stddef.h>

#include "status.h"

struct rng;

enum sampler_kind { SAMPLER_EULER, SAMPLER_EULER_A, SAMPLER_DDIM, SAMPLER_DPMPP_2M, SAMPLER_COUNT };
/* discrete: k-diffusion's evenly spaced t from 999 to 0; karras: Karras et al. (rho 7); trailing:
 * diffusers' timestep_spacing "trailing", t = round(1000 - i 1000 / steps) - 1 (999, 749, 499, 249
 * for 4 steps; 999 for 1), which SD-Turbo and SDXL-Turbo need. */
enum schedule_kind { SCHEDULE_DISCRETE, SCHEDULE_KARRAS, SCHEDULE_TRAILING, SCHEDULE_COUNT };
/* What the U-Net predicts: the noise (eps) or v = sqrt(a) eps - sqrt(1 - a) x0 (SD 2.x 768-v, SD-Turbo). */
enum prediction { PREDICTION_EPS, PREDICTION_V };

const char *sampler_name(enum sampler_kind k);      /* "euler_a" */
const char *sampler_a1111_name(enum sampler_kind k, enum schedule_kind s); /* "Euler a", "DPM++ 2M Karras" */
int sampler_parse(const char *name);                 /* -1 when unknown */
int schedule_parse(const char *name);

struct schedule {
  double sigmas[1000];         /* sigma(t), t = 0..999 */
  double alphas_cumprod[1000];
  double log_sigmas[1000];
};
void schedule_init(struct schedule *s);
double schedule_sigma_to_t(const struct schedule *s, double sigma);
double schedule_t_to_sigma(const struct schedule *s, double t);
/* The U-Net timesteps of a discrete / trailing schedule (steps values, from high to low). */
void schedule_timesteps(enum schedule_kind kind, int steps, double *out);
/* steps + 1 sigmas, the last 0 */
void schedule_sigmas(const struct schedule *s, enum schedule_kind kind, int steps, double *out);

/* out = denoise(x_in, t, user): the guided model output (eps or v) for the U-Net input x_in at
 * timestep t (x_in already scaled by c_in = 1 / sqrt(sigma^2 + 1) for k-samplers). n values each. */
typedef enum status (*denoise_fn)(const float *x_in, double t, float *eps, void *user);
/* Called after each step with the latent (may stop the run by returning non-zero). */
typedef enum status (*step_fn)(int step, int steps, const float *x, void *user);

struct sampler_run {
  enum sampler_kind sampler;
  enum schedule_kind schedule;
  enum prediction prediction; /* v: k-diffusion's CompVisVDenoiser scalings; ldm's v-DDIM */
  int steps;
  size_t n;              /* latent values */
  const float *noise;    /* [n] standard normal starting noise */
  /* img2img: init [n] (NULL: text to image) is noised to the schedule's step `start` (0 <= start <=
   * steps): x = init + noise sigma[start] (DDIM: sqrt(a) init + sqrt(1 - a) noise), then steps - start
   * steps run. Step numbers in callbacks and outputs count the steps run. */
  const float *init;
  int start;
  /* inpainting with an ordinary U-Net (needs init): keep [n] in [0, 1]; after every step
   * x = keep (init noised to the new sigma with `noise`) + (1 - keep) x, so the kept part ends as init */
  const float *keep;
  const float *ancestral_noise; /* [steps][n] for euler_a (NULL: draw from rng below) */
  struct rng *rng;       /* euler_a noise when ancestral_noise is NULL */
  denoise_fn denoise;
  void *user;       /* for denoise */
  step_fn on_step;  /* may be NULL */
  void *step_user;
  /* outputs (optional): per step the latent, the guided eps, the U-Net timestep; the sigmas */
  float *latents, *eps_out;
  double *timesteps, *sigmas_out;
};

/* Runs the sampler; x receives the final latent [n]. */
enum status sampler_run(const struct schedule *s, const struct sampler_run *run, float *x);

#endif
