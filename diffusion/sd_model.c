#define _POSIX_C_SOURCE 200809L
#include "sd_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "prompt.h"
#include "safetensors.h"
#include "status.h"
#include "unet_config.h"

_Static_assert(SD_OK == (int)STATUS_OK && SD_NUMERIC == (int)STATUS_NUMERIC && SD_CANCELLED == (int)STATUS_CANCELLED &&
                   SD_NO_DEVICE == (int)STATUS_NO_DEVICE && SD_FORMAT == (int)STATUS_FORMAT,
               "sd_status mirrors enum status");
_Static_assert(SD_FP16 == (int)TEXTENC_FP16 && SD_FP32 == (int)TEXTENC_FP32, "sd_precision mirrors textenc_precision");

struct sd_model_options sd_model_default_options(void) {
  return (struct sd_model_options){.device_index = -1, .precision = SD_FP16};
}

const char *sd_last_error(void) { return status_message(); }

bool sd_checkpoint_native_size(const char *path, int *width, int *height) {
  struct stat sb;
  struct safetensors *st;
  if (stat(path, &sb) || !S_ISREG(sb.st_mode) || safetensors_open(path, &st)) {
    status_clear();
    return false;
  }
  const char *r = safetensors_metadata(st, "modelspec.resolution");
  int w, h;
  char tail;
  bool ok = r && sscanf(r, "%dx%d%c", &w, &h, &tail) == 2 && w >= 8 && h >= 8 && w <= 8192 && h <= 8192 &&
            w % 8 == 0 && h % 8 == 0;
  if (ok) *width = w, *height = h;
  safetensors_close(st);
  return ok;
}

int sd_model_create(const struct sd_model_options *o, struct sd_model **out) {
  *out = NULL;
  if (!o || !o->model_path) return status_set(STATUS_INVALID_ARGUMENT, "sd_model_create: no model path");
  struct sd_model *m = calloc(1, sizeof *m);
  if (!m) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  schedule_init(&m->sched);
  bool fp16 = o->precision == SD_FP16;
  enum status s = gpu_create(&(struct gpu_options){.device_index = o->device_index, .validation = -1, .profile = -1}, &m->g);
  if (!s) s = safetensors_open(o->model_path, &m->st);
  if (!s && !unet_present(m->st, NULL))
    s = status_set(STATUS_FORMAT, "%s: no U-Net (model.diffusion_model.*): not a Stable Diffusion checkpoint", o->model_path);
  if (!s && !vae_present(m->st, NULL))
    s = status_set(STATUS_FORMAT, "%s: no VAE decoder (first_stage_model.decoder.*)", o->model_path);
  struct unet_options uo = {.fp16 = fp16};
  if (!s) s = unet_config_heads(o->config_path, uo.heads, &uo.heads_all);
  if (!s) s = unet_load(m->g, m->st, &uo, &m->unet);
  if (!s) s = vae_load(m->g, m->st, &(struct vae_options){.fp16 = fp16}, &m->vae);
  if (!s) {
    struct textenc_options to = textenc_default_options();
    to.model_path = o->model_path;
    to.tokenizer_path = o->tokenizer_path;
    to.config_path = o->config_path;
    to.device = m->g;
    to.precision = fp16 ? TEXTENC_FP16 : TEXTENC_FP32;
    to.literal = o->literal;
    s = textenc_create(&to, &m->te);
  }
  if (s) {
    sd_model_destroy(m);
    return s;
  }
  struct unet_info ui;
  unet_get_info(m->unet, &ui);
  struct textenc_info ti;
  textenc_info(m->te, &ti);
  m->info = (struct sd_model_info){.vae_factor = vae_factor(m->vae), .latent_channels = ui.in_channels,
                                   .latent_align = 1 << (ui.levels - 1), .context_width = ui.context_dim,
                                   .fp16 = ti.fp16, .device_name = gpu_info(m->g)->name,
                                   .weight_bytes = unet_weight_bytes(m->unet) + vae_weight_bytes(m->vae) + ti.weight_bytes};
  sd_checkpoint_native_size(o->model_path, &m->info.native_width, &m->info.native_height);
  *out = m;
  return STATUS_OK;
}

void sd_model_destroy(struct sd_model *m) {
  if (!m) return;
  textenc_destroy(m->te);
  vae_destroy(m->vae);
  unet_destroy(m->unet);
  safetensors_close(m->st);
  gpu_destroy(m->g);
  free(m);
}

int sd_model_get_info(const struct sd_model *m, struct sd_model_info *info) {
  *info = m->info;
  return STATUS_OK;
}

struct gpu *sd_model_gpu(struct sd_model *m) { return m->g; }

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

enum status sd_load_noise(const char *path, int images, int steps, int channels, int h, int w, float **noise,
                          float **ancestral) {
  struct safetensors *st;
  *noise = *ancestral = NULL;
  enum status s = safetensors_open(path, &st);
  if (s) return s;
  /* checked against the job before use: [N >= images, C, h, w] and [steps' >= steps, N' >= images, C, h, w] */
  size_t n = (size_t)channels * h * w;
  int64_t got[5];
  char want[160];
  float *all = NULL, *an = NULL;
  snprintf(want, sizeof want, "[N, %d, %d, %d] with N >= %d (the job's images)", channels, h, w, images);
  if ((s = safetensors_read_input(st, "noise", 4, (int64_t[]){-1, channels, h, w}, want, got, &all))) goto done;
  if (got[0] < images) {
    s = status_set(STATUS_FORMAT, "%s: needs `noise` [N >= %d, %d, %d, %d]: it holds %lld image(s)", path, images, channels,
                   h, w, (long long)got[0]);
    goto done;
  }
  *noise = all;
  all = NULL;
  if (safetensors_find(st, "ancestral_noise")) {
    snprintf(want, sizeof want, "[steps >= %d, N >= %d, %d, %d, %d]", steps, images, channels, h, w);
    if ((s = safetensors_read_input(st, "ancestral_noise", 5, (int64_t[]){-1, -1, channels, h, w}, want, got, &an))) goto done;
    if (got[0] < steps || got[1] < images) {
      s = status_set(STATUS_FORMAT, "%s: `ancestral_noise` must be %s", path, want);
      goto done;
    }
    if (!(*ancestral = malloc((size_t)steps * images * n * sizeof **ancestral))) {
      s = status_set(STATUS_OUT_OF_MEMORY, "%s: out of host memory for the noise", path);
      goto done;
    }
    for (int k = 0; k < steps; k++) /* the first `images` of each step */
      memcpy(*ancestral + (size_t)k * images * n, an + (size_t)k * got[1] * n, (size_t)images * n * sizeof *an);
  }
done:
  free(all), free(an);
  safetensors_close(st);
  if (s) free(*noise), free(*ancestral), *noise = *ancestral = NULL;
  return s;
}
