#define _POSIX_C_SOURCE 200809L
#include "sd_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "model_config.h"
#include "prompt.h"
#include "safetensors.h"

struct sd_model {
  struct gpu *g;
  struct safetensors *st;
  struct textenc *te;
  struct unet *unet;
  struct vae *vae;
  struct schedule sched;
  char name[256];
  int align, factor;
};

enum status sd_model_load(const struct sd_model_options *o, struct sd_model **out) {
  *out = NULL;
  struct sd_model *m = calloc(1, sizeof *m);
  if (!m) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  schedule_init(&m->sched);
  const char *base = strrchr(o->model_path, '/');
  snprintf(m->name, sizeof m->name, "%s", base ? base + 1 : o->model_path);
  char *dot = strrchr(m->name, '.');
  if (dot && dot != m->name) *dot = 0;
  bool fp16 = o->precision == TEXTENC_FP16;
  enum status s = gpu_create(&(struct gpu_options){.device_index = o->device, .validation = -1, .profile = -1}, &m->g);
  if (!s) s = safetensors_open(o->model_path, &m->st);
  if (!s && !unet_present(m->st, NULL))
    s = status_set(STATUS_FORMAT, "%s: no U-Net (model.diffusion_model.*): not a Stable Diffusion checkpoint", o->model_path);
  if (!s && !vae_present(m->st, NULL))
    s = status_set(STATUS_FORMAT, "%s: no VAE decoder (first_stage_model.decoder.*)", o->model_path);
  struct unet_options uo = {.fp16 = fp16};
  if (!s) s = model_unet_heads(o->config_path, uo.heads, &uo.heads_all);
  if (!s) s = unet_load(m->g, m->st, &uo, &m->unet);
  if (!s) s = vae_load(m->g, m->st, &(struct vae_options){.fp16 = fp16}, &m->vae);
  if (!s) {
    struct textenc_options to = textenc_default_options();
    to.model_path = o->model_path;
    to.tokenizer_path = o->tokenizer_path;
    to.config_path = o->config_path;
    to.device = m->g;
    to.precision = o->precision;
    to.literal = o->literal;
    s = textenc_create(&to, &m->te);
  }
  if (s) {
    sd_model_close(m, 0);
    return s;
  }
  struct unet_info ui;
  unet_get_info(m->unet, &ui);
  m->align = 1 << (ui.levels - 1);
  m->factor = vae_factor(m->vae);
  *out = m;
  return STATUS_OK;
}

int sd_model_close(struct sd_model *m, int rc) {
  if (!m) return rc;
  textenc_destroy(m->te);
  vae_destroy(m->vae);
  unet_destroy(m->unet);
  safetensors_close(m->st);
  if (m->g) {
    const char *last;
    int n = gpu_validation_count(m->g, &last);
    if (gpu_profiling(m->g)) gpu_profile_print(m->g, stderr);
    gpu_destroy(m->g);
    if (n) {
      fprintf(stderr, "vkdiffusion: %d Vulkan validation message(s); last: %s\n", n, last ? last : "?");
      rc = rc ? rc : 1;
    }
  }
  free(m);
  return rc;
}

struct unet *sd_model_unet(struct sd_model *m) { return m->unet; }
struct gpu *sd_model_gpu(struct sd_model *m) { return m->g; }
int sd_model_vae_factor(const struct sd_model *m) { return m->factor; }
int sd_model_latent_align(const struct sd_model *m) { return m->align; }

void sd_conditioning_free(struct sd_conditioning *c) {
  free(c->cond);
  free(c->uncond);
  c->cond = c->uncond = NULL;
}

enum status sd_model_encode(struct sd_model *m, const char *prompt, const char *negative, int clip_skip,
                            struct sd_conditioning *c) {
  memset(c, 0, sizeof *c);
  struct textenc_info info;
  textenc_info(m->te, &info);
  enum status s = textenc_set_clip_skip(m->te, clip_skip);
  int kp = 1, kn = 1;
  if (!s) s = textenc_count_chunks(m->te, &prompt, 1, &kp);
  if (!s) s = textenc_count_chunks(m->te, &negative, 1, &kn);
  if (s) return s;
  int k = kp > kn ? kp : kn;
  c->tokens = CLIP_CONTEXT * k;
  c->cond = malloc((size_t)c->tokens * info.width * sizeof *c->cond);
  c->uncond = malloc((size_t)c->tokens * info.width * sizeof *c->uncond);
  if (!c->cond || !c->uncond) s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) s = textenc_encode(m->te, &prompt, 1, k, c->cond, NULL, NULL);
  if (!s) s = textenc_encode(m->te, &negative, 1, k, c->uncond, NULL, NULL);
  if (s) sd_conditioning_free(c);
  return s;
}

enum status sd_model_sample(struct sd_model *m, const struct sampler_run *run, float *x) {
  return sampler_run(&m->sched, run, x);
}

enum status sd_model_decode(struct sd_model *m, const float *latent, int h, int w, enum vae_tiling tiling, float *image) {
  return vae_decode(m->vae, latent, 1, h, w, tiling, image);
}

char *sd_parameters_text(const struct sd_model *m, const struct job *j, uint64_t seed) {
  size_t n = strlen(j->prompt) + (j->negative_prompt ? strlen(j->negative_prompt) : 0) + 512;
  char *t = malloc(n);
  if (!t) return NULL;
  size_t o = (size_t)snprintf(t, n, "%s\n", j->prompt);
  if (j->negative_prompt && j->negative_prompt[0]) o += (size_t)snprintf(t + o, n - o, "Negative prompt: %s\n", j->negative_prompt);
  o += (size_t)snprintf(t + o, n - o, "Steps: %d, Sampler: %s, ", j->steps, sampler_a1111_name(j->sampler, SCHEDULE_DISCRETE));
  if (j->schedule == SCHEDULE_KARRAS) o += (size_t)snprintf(t + o, n - o, "Schedule type: Karras, ");
  o += (size_t)snprintf(t + o, n - o, "CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s", j->cfg_scale,
                        (unsigned long long)seed, j->width, j->height, m->name);
  if (j->clip_skip > 1) snprintf(t + o, n - o, ", Clip skip: %d", j->clip_skip);
  return t;
}

enum status sd_load_noise(const char *path, int images, int steps, size_t n, float **noise, float **ancestral) {
  struct safetensors *st;
  enum status s = safetensors_open(path, &st);
  if (s) return s;
  const struct st_tensor *t = safetensors_find(st, "noise"), *a = safetensors_find(st, "ancestral_noise");
  float *all = NULL, *an = NULL;
  *noise = *ancestral = NULL;
  if (!t || t->numel < (int64_t)((size_t)images * n)) {
    s = status_set(STATUS_FORMAT, "%s: needs `noise` [N >= %d, 4, h, w] with %zu values an image", path, images, n);
    goto done;
  }
  int64_t per = a && a->ndim > 1 && a->shape[0] > 0 ? a->numel / a->shape[0] : 0;
  if (a && (a->shape[0] < steps || per < (int64_t)((size_t)images * n))) { /* [steps, N, 4, h, w] */
    s = status_set(STATUS_FORMAT, "%s: `ancestral_noise` must be [steps >= %d, N >= %d, 4, h, w]", path, steps, images);
    goto done;
  }
  *noise = malloc((size_t)images * n * sizeof **noise);
  *ancestral = a ? malloc((size_t)images * steps * n * sizeof **ancestral) : NULL;
  all = malloc((size_t)t->numel * sizeof *all);
  an = a ? malloc((size_t)a->numel * sizeof *an) : NULL;
  if (!*noise || !all || (a && (!*ancestral || !an))) {
    s = status_set(STATUS_OUT_OF_MEMORY, "%s: out of host memory for the noise", path);
    goto done;
  }
  if ((s = safetensors_read_f32(st, t, all))) goto done;
  memcpy(*noise, all, (size_t)images * n * sizeof *all);
  if (a) {
    if ((s = safetensors_read_f32(st, a, an))) goto done;
    for (int b = 0; b < images; b++)
      for (int k = 0; k < steps; k++)
        memcpy(*ancestral + ((size_t)b * steps + k) * n, an + (size_t)k * per + (size_t)b * n, n * sizeof *an);
  }
done:
  free(all), free(an);
  safetensors_close(st);
  if (s) free(*noise), free(*ancestral), *noise = *ancestral = NULL;
  return s;
}
