#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

static const char *const names[SAMPLER_COUNT] = {"euler", "euler_a", "ddim", "dpmpp_2m"};

const char *sampler_name(enum sampler_kind k) { return (unsigned)k < SAMPLER_COUNT ? names[k] : "?"; }

const char *sampler_a1111_name(enum sampler_kind k, enum schedule_kind s) {
  static const char *const plain[SAMPLER_COUNT] = {"Euler", "Euler a", "DDIM", "DPM++ 2M"};
  static const char *const karras[SAMPLER_COUNT] = {"Euler Karras", "Euler a Karras", "DDIM", "DPM++ 2M Karras"};
  if ((unsigned)k >= SAMPLER_COUNT) return "?";
  return s == SCHEDULE_KARRAS ? karras[k] : plain[k];
}

int sampler_parse(const char *name) {
  for (int i = 0; i < SAMPLER_COUNT; i++)
    if (!strcmp(name, names[i])) return i;
  return -1;
}

int schedule_parse(const char *name) {
  if (!strcmp(name, "discrete")) return SCHEDULE_DISCRETE;
  if (!strcmp(name, "karras")) return SCHEDULE_KARRAS;
  if (!strcmp(name, "trailing")) return SCHEDULE_TRAILING;
  return -1;
}

void schedule_timesteps(enum schedule_kind kind, int steps, double *out) {
  for (int i = 0; i < steps; i++)
    if (kind == SCHEDULE_TRAILING) /* diffusers: np.round(np.arange(1000, 0, -1000 / steps)) - 1 */
      out[i] = nearbyint(1000.0 - i * (1000.0 / steps)) - 1;
    else /* k-diffusion's discrete: linspace(999, 0, steps) */
      out[i] = steps > 1 ? 999.0 - 999.0 * i / (steps - 1) : 999.0;
}

void schedule_init(struct schedule *s) {
  double a = sqrt(0.00085), b = sqrt(0.012), cum = 1.0;
  for (int i = 0; i < 1000; i++) {
    double beta = a + (b - a) * i / 999.0;
    beta *= beta;
    cum *= 1.0 - beta;
    s->alphas_cumprod[i] = cum;
    s->sigmas[i] = sqrt((1.0 - cum) / cum);
    s->log_sigmas[i] = log(s->sigmas[i]);
  }
}

double schedule_sigma_to_t(const struct schedule *s, double sigma) {
  double ls = log(sigma);
  int low = 0; /* the last index whose log sigma is <= ls (k-diffusion: cumsum().argmax()) */
  for (int i = 0; i < 1000; i++)
    if (ls - s->log_sigmas[i] >= 0) low = i;
  if (low > 998) low = 998;
  double lo = s->log_sigmas[low], hi = s->log_sigmas[low + 1];
  double w = (lo - ls) / (lo - hi);
  if (w < 0) w = 0;
  if (w > 1) w = 1;
  return (1 - w) * low + w * (low + 1);
}

double schedule_t_to_sigma(const struct schedule *s, double t) {
  if (t < 0) t = 0;
  if (t > 999) t = 999;
  int lo = (int)floor(t), hi = (int)ceil(t);
  double w = t - lo;
  return exp((1 - w) * s->log_sigmas[lo] + w * s->log_sigmas[hi]);
}

void schedule_sigmas(const struct schedule *s, enum schedule_kind kind, int steps, double *out) {
  if (kind == SCHEDULE_KARRAS) {
    double rho = 7.0, lo = pow(s->sigmas[0], 1 / rho), hi = pow(s->sigmas[999], 1 / rho);
    for (int i = 0; i < steps; i++) {
      double ramp = steps > 1 ? (double)i / (steps - 1) : 0;
      out[i] = pow(hi + ramp * (lo - hi), rho);
    }
  } else {
    schedule_timesteps(kind, steps, out);
    for (int i = 0; i < steps; i++) out[i] = schedule_t_to_sigma(s, out[i]);
  }
  out[steps] = 0;
}

/* ldm's DDIM (eta 0): "uniform" timesteps 1 + k * (1000 / steps), or the trailing ones */
static enum status ddim(const struct schedule *s, const struct sampler_run *r, float *x, float *eps) {
  int n = r->steps, stride = 1000 / n;
  double trailing[1000];
  if (r->schedule == SCHEDULE_TRAILING) schedule_timesteps(SCHEDULE_TRAILING, n, trailing);
  int k0 = r->init ? r->start : 0, runs = n - k0;
  for (size_t i = 0; i < r->n; i++) x[i] = r->noise[i];
  if (r->init && k0 == n) memcpy(x, r->init, r->n * sizeof *x);
  for (int k = k0; k < n; k++) {
    int t = 1 + (n - 1 - k) * stride, t_prev = k + 1 < n ? t - stride : -1;
    if (r->schedule == SCHEDULE_TRAILING) t = (int)trailing[k], t_prev = k + 1 < n ? (int)trailing[k + 1] : -1;
    if (r->init && k == k0) { /* ldm's stochastic_encode: q(x_t | x_0) */
      double a0 = s->alphas_cumprod[t];
      for (size_t i = 0; i < r->n; i++) x[i] = (float)(sqrt(a0) * r->init[i] + sqrt(1 - a0) * r->noise[i]);
    }
    double at = s->alphas_cumprod[t], ap = t_prev >= 0 ? s->alphas_cumprod[t_prev] : s->alphas_cumprod[0];
    enum status st = r->denoise(x, (double)t, eps, r->user);
    if (st) return st == STATUS_NUMERIC ? status_wrap(st, "step %d of %d", k - k0 + 1, runs) : st;
    for (size_t i = 0; i < r->n; i++) {
      double m = eps[i], x0, e;
      if (r->prediction == PREDICTION_V) { /* v = sqrt(a) eps - sqrt(1 - a) x0 */
        x0 = sqrt(at) * x[i] - sqrt(1 - at) * m;
        e = sqrt(at) * m + sqrt(1 - at) * x[i];
      } else {
        x0 = (x[i] - sqrt(1 - at) * m) / sqrt(at);
        e = m;
      }
      x[i] = (float)(sqrt(ap) * x0 + sqrt(1 - ap) * e);
      if (r->keep && r->init) /* the kept part: init at the new noise level */
        x[i] = (float)(r->keep[i] * (sqrt(ap) * r->init[i] + sqrt(1 - ap) * r->noise[i]) + (1 - r->keep[i]) * x[i]);
    }
    for (size_t i = 0; i < r->n; i++)
      if (!isfinite(x[i]))
        return status_set(STATUS_NUMERIC, "the latent became NaN or infinite at step %d of %d", k - k0 + 1, runs);
    int o = k - k0;
    if (r->timesteps) r->timesteps[o] = t;
    if (r->eps_out) memcpy(r->eps_out + (size_t)o * r->n, eps, r->n * sizeof *eps);
    if (r->latents) memcpy(r->latents + (size_t)o * r->n, x, r->n * sizeof *x);
    if (r->on_step && (st = r->on_step(o, runs, x, r->step_user))) return st;
  }
  return STATUS_OK;
}

enum status sampler_run(const struct schedule *s, const struct sampler_run *r, float *x) {
  if (r->steps <= 0) return status_set(STATUS_INVALID_ARGUMENT, "steps must be positive");
  if (r->init && (r->start < 0 || r->start > r->steps))
    return status_set(STATUS_INVALID_ARGUMENT, "img2img start step %d is outside 0..%d", r->start, r->steps);
  size_t n = r->n;
  float *eps = malloc(n * sizeof *eps), *xin = malloc(n * sizeof *xin), *noise = malloc(n * sizeof *noise);
  double *den = malloc(n * sizeof *den), *den_prev = malloc(n * sizeof *den_prev);
  double *sig = malloc((size_t)(r->steps + 1) * sizeof *sig);
  enum status st = STATUS_OK;
  if (!eps || !xin || !noise || !den || !den_prev || !sig) {
    st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  if (r->sampler == SAMPLER_DDIM) {
    st = ddim(s, r, x, eps);
    goto done;
  }
  schedule_sigmas(s, r->schedule, r->steps, sig);
  if (r->sigmas_out) memcpy(r->sigmas_out, sig, (size_t)(r->steps + 1) * sizeof *sig);
  int k0 = r->init ? r->start : 0, runs = r->steps - k0;
  for (size_t i = 0; i < n; i++) x[i] = (float)((r->init ? r->init[i] : 0.0f) + r->noise[i] * sig[k0]);
  for (int k = k0; k < r->steps; k++) {
    double sigma = sig[k], next = sig[k + 1], c_in = 1.0 / sqrt(sigma * sigma + 1), t = schedule_sigma_to_t(s, sigma);
    for (size_t i = 0; i < n; i++) xin[i] = (float)(x[i] * c_in);
    if ((st = r->denoise(xin, t, eps, r->user))) {
      if (st == STATUS_NUMERIC) status_wrap(st, "step %d of %d", k - k0 + 1, runs);
      goto done;
    }
    if (r->prediction == PREDICTION_V) { /* k-diffusion CompVisVDenoiser: c_skip x + c_out v */
      double c_skip = 1.0 / (sigma * sigma + 1), c_out = -sigma / sqrt(sigma * sigma + 1);
      for (size_t i = 0; i < n; i++) den[i] = c_skip * x[i] + c_out * eps[i];
    } else {
      for (size_t i = 0; i < n; i++) den[i] = x[i] - sigma * eps[i];
    }
    switch (r->sampler) {
    case SAMPLER_EULER:
      for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] + (x[i] - den[i]) / sigma * (next - sigma));
      break;
    case SAMPLER_EULER_A: {
      double up = sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma));
      if (up > next) up = next;
      double down = sqrt(next * next - up * up);
      if (next > 0) {
        if (r->ancestral_noise) memcpy(noise, r->ancestral_noise + (size_t)(k - k0) * n, n * sizeof *noise);
        else rng_randn(r->rng, noise, n);
      }
      for (size_t i = 0; i < n; i++) {
        double v = x[i] + (x[i] - den[i]) / sigma * (down - sigma);
        if (next > 0) v += noise[i] * up;
        x[i] = (float)v;
      }
      break;
    }
    case SAMPLER_DPMPP_2M: {
      double h = log(sigma) - (next > 0 ? log(next) : 0);
      bool first = k == k0, last = next == 0;
      if (last) {
        for (size_t i = 0; i < n; i++) x[i] = (float)den[i];
      } else if (first) {
        for (size_t i = 0; i < n; i++) x[i] = (float)(next / sigma * x[i] - expm1(-h) * den[i]);
      } else {
        double r_ = (log(sig[k - 1]) - log(sigma)) / h, a = 1 + 1 / (2 * r_), b = 1 / (2 * r_);
        for (size_t i = 0; i < n; i++) x[i] = (float)(next / sigma * x[i] - expm1(-h) * (a * den[i] - b * den_prev[i]));
      }
      memcpy(den_prev, den, n * sizeof *den);
      break;
    }
    default:
      st = status_set(STATUS_INVALID_ARGUMENT, "unknown sampler");
      goto done;
    }
    for (size_t i = 0; r->keep && r->init && i < n; i++) /* the kept part: init at the new sigma */
      x[i] = (float)(r->keep[i] * (r->init[i] + r->noise[i] * next) + (1 - r->keep[i]) * x[i]);
    for (size_t i = 0; i < n; i++)
      if (!isfinite(x[i])) {
        st = status_set(STATUS_NUMERIC, "the latent became NaN or infinite at step %d of %d", k - k0 + 1, runs);
        goto done;
      }
    int o = k - k0;
    if (r->timesteps) r->timesteps[o] = t;
    if (r->eps_out) memcpy(r->eps_out + (size_t)o * n, eps, n * sizeof *eps);
    if (r->latents) memcpy(r->latents + (size_t)o * n, x, n * sizeof *x);
    if (r->on_step && (st = r->on_step(o, runs, x, r->step_user))) goto done;
  }
done:
  free(eps), free(xin), free(noise), free(den), free(den_prev), free(sig);
  return st;
}
