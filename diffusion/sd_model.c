#define _POSIX_C_SOURCE 200809L
#include "sd_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "prompt.h"
#include "lora.h"
#include "textenc_internal.h"
#include "safetensors.h"
#include "status.h"
#include "taesd.h"
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

/* stable-diffusion.cpp's (and AUTOMATIC1111's) SD 2.x rule: one evaluation at x = 0.5, t = 999,
 * context 0.5 (2 tokens); a v model's output lies far below its input: mean(out - x) < -1 */
static enum status probe_v(struct sd_model *m, bool *v) {
  struct unet_info ui;
  unet_get_info(m->unet, &ui);
  int side = 8 < ui.levels ? 1 << ui.levels : 8, n = ui.in_channels * side * side;
  float *x = malloc((size_t)n * sizeof *x), *out = malloc((size_t)ui.out_channels * side * side * sizeof *out);
  float *ctx = malloc(2 * (size_t)ui.context_dim * sizeof *ctx), t = 999;
  enum status s = x && out && ctx ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) {
    for (int i = 0; i < n; i++) x[i] = 0.5f;
    for (int i = 0; i < 2 * ui.context_dim; i++) ctx[i] = 0.5f;
    s = unet_forward(m->unet, x, &t, ctx, NULL, 1, side, side, 2, out, NULL);
  }
  if (!s) {
    double d = 0;
    for (int i = 0; i < n && i < ui.out_channels * side * side; i++) d += out[i] - x[i];
    *v = d / n < -1;
  }
  free(x), free(out), free(ctx);
  return s;
}

/* eps or v: --prediction, modelspec.prediction_type, the family's rule */
static enum status choose_prediction(struct sd_model *m, enum sd_prediction asked) {
  struct sd_model_info *in = &m->info;
  const char *ms = safetensors_metadata(m->st, "modelspec.prediction_type");
  if (asked != SD_PREDICTION_AUTO) {
    in->prediction = asked;
    in->prediction_source = "--prediction";
  } else if (ms && (!strcmp(ms, "v") || !strcmp(ms, "v_prediction") || !strcmp(ms, "v-prediction"))) {
    in->prediction = SD_PREDICTION_V;
    in->prediction_source = "modelspec.prediction_type";
  } else if (ms && (!strcmp(ms, "epsilon") || !strcmp(ms, "eps"))) {
    in->prediction = SD_PREDICTION_EPS;
    in->prediction_source = "modelspec.prediction_type";
  } else if (in->family == SD_FAMILY_SD2) {
    bool v = false;
    enum status s = probe_v(m, &v);
    if (s) return s;
    in->prediction = v ? SD_PREDICTION_V : SD_PREDICTION_EPS;
    in->prediction_source = "the SD 2.x probe (stable-diffusion.cpp's rule: mean(U-Net(0.5, t 999) - 0.5) < -1)";
  } else if (in->family == SD_FAMILY_SDXL && safetensors_find(m->st, "v_pred")) {
    in->prediction = SD_PREDICTION_V;
    in->prediction_source = "the checkpoint's v_pred key";
  } else {
    in->prediction = SD_PREDICTION_EPS;
    in->prediction_source = in->family == SD_FAMILY_SDXL ? "SDXL's default" : "SD 1.x's default";
  }
  return STATUS_OK;
}

int sd_model_create(const struct sd_model_options *o, struct sd_model **out) {
  *out = NULL;
  if (!o || !o->model_path) return status_set(STATUS_INVALID_ARGUMENT, "sd_model_create: no model path");
  if ((unsigned)o->family > SD_FAMILY_SDXL || (unsigned)o->prediction > SD_PREDICTION_V)
    return status_set(STATUS_INVALID_ARGUMENT, "sd_model_create: unknown family or prediction");
  struct sd_model *m = calloc(1, sizeof *m);
  if (!m) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  schedule_init(&m->sched);
  bool fp16 = o->precision == SD_FP16;
  enum textenc_family fam = (enum textenc_family)o->family;
  char why[256];
  enum status s = gpu_create(&(struct gpu_options){.device_index = o->device_index, .validation = -1, .profile = -1}, &m->g);
  if (!s) s = safetensors_open(o->model_path, &m->st);
  if (!s && !unet_present(m->st, NULL))
    s = status_set(STATUS_FORMAT, "%s: no U-Net (model.diffusion_model.*): not a Stable Diffusion checkpoint", o->model_path);
  if (!s && !vae_present(m->st, NULL))
    s = status_set(STATUS_FORMAT, "%s: no VAE decoder (first_stage_model.decoder.*)", o->model_path);
  if (!s && fam == TEXTENC_FAMILY_AUTO) s = textenc_detect_family(o->model_path, &fam, why, sizeof why);
  m->info.family = (enum sd_family)fam;
  m->info.scale_factor = fam == TEXTENC_FAMILY_SDXL ? 0.13025f : 0.18215f;
  struct unet_options uo = {.fp16 = fp16};
  if (!s) s = unet_config_heads(o->config_path, uo.heads, &uo.heads_all);
  if (!s) s = unet_load(m->g, m->st, &uo, &m->unet);
  if (!s) s = vae_load(m->g, m->st, &(struct vae_options){.fp16 = fp16, .scale_factor = m->info.scale_factor,
                                                     .encoder = vae_encoder_present(m->st, NULL),
                                                     .encoder_on_demand = true}, &m->vae);
  if (!s) {
    struct textenc_options to = textenc_default_options();
    to.model_path = o->model_path;
    to.tokenizer_path = o->tokenizer_path;
    to.config_path = o->config_path;
    to.device = m->g;
    to.precision = fp16 ? TEXTENC_FP16 : TEXTENC_FP32;
    to.literal = o->literal;
    to.family = fam;
    s = textenc_cond_create(&to, &m->cond);
  }
  struct unet_info ui;
  struct textenc_cond_info ci;
  if (!s) {
    unet_get_info(m->unet, &ui);
    textenc_cond_info(m->cond, &ci);
    if (ui.context_dim != ci.context_dim)
      s = status_set(STATUS_FORMAT, "%s: the U-Net reads a context %d wide but the text towers give %d (family %s)",
                     o->model_path, ui.context_dim, ci.context_dim, textenc_family_name(fam));
    else if (ui.adm_in_channels != ci.y_dim)
      s = status_set(STATUS_FORMAT, "%s: the U-Net's label_emb reads a vector y of %d but the conditioner gives %d "
                     "(family %s)", o->model_path, ui.adm_in_channels, ci.y_dim, textenc_family_name(fam));
  }
  if (!s) s = choose_prediction(m, o->prediction);
  if (!s && o->taesd_path && !(s = taesd_load(m->g, o->taesd_path, fp16, &m->taesd)) && !taesd_has_decoder(m->taesd))
    s = status_set(STATUS_FORMAT, "%s: holds no TAESD decoder", o->taesd_path);
  if (!s && m->taesd && vae_factor(m->vae) != taesd_factor(m->taesd))
    s = status_set(STATUS_UNSUPPORTED, "%s: this TAESD decodes %dx; the checkpoint's VAE is %dx", o->taesd_path,
                   taesd_factor(m->taesd), vae_factor(m->vae));
  if (!s && m->taesd && taesd_latent_channels(m->taesd) != ui.out_channels)
    s = status_set(STATUS_FORMAT, "%s: a TAESD for %d latent channels; the U-Net makes %d", o->taesd_path,
                   taesd_latent_channels(m->taesd), ui.out_channels);
  if (!s && ui.in_channels != ui.out_channels && ui.in_channels != ui.out_channels + 5)
    s = status_set(STATUS_FORMAT, "%s: a U-Net reading %d channels and making %d is neither a text-to-image nor an "
                   "inpainting model (%d + 5)", o->model_path, ui.in_channels, ui.out_channels, ui.out_channels);
  if (s) {
    sd_model_destroy(m);
    return s;
  }
  struct sd_model_info *in = &m->info;
  in->vae_factor = vae_factor(m->vae);
  in->latent_channels = ui.out_channels;
  in->inpainting = ui.in_channels == ui.out_channels + 5;
  in->latent_align = 1 << (ui.levels - 1);
  in->context_width = ui.context_dim;
  in->fp16 = ci.tower[0].fp16;
  in->device_name = gpu_info(m->g)->name;
  in->weight_bytes = unet_weight_bytes(m->unet) + vae_weight_bytes(m->vae) + ci.tower[0].weight_bytes +
                     (ci.towers > 1 ? ci.tower[1].weight_bytes : 0);
  in->default_clip_skip = fam == TEXTENC_FAMILY_SD1 ? 1 : 2;
  int def = fam == TEXTENC_FAMILY_SDXL ? 1024 : fam == TEXTENC_FAMILY_SD2 && in->prediction == SD_PREDICTION_V ? 768 : 512;
  in->default_width = in->default_height = def;
  if (sd_checkpoint_native_size(o->model_path, &in->native_width, &in->native_height))
    in->default_width = in->native_width, in->default_height = in->native_height;
  *out = m;
  return STATUS_OK;
}

void sd_model_destroy(struct sd_model *m) {
  if (!m) return;
  lora_state_destroy(m->lora);
  textenc_cond_destroy(m->cond);
  vae_destroy(m->vae);
  taesd_destroy(m->taesd);
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

enum status sd_model_apply_loras(struct sd_model *m, const struct lora_spec *specs, int n, bool strict,
                                 struct lora_report *rep) {
  if (!m->lora && n == 0) { /* nothing merged, nothing to merge */
    if (rep) *rep = (struct lora_report){0};
    return STATUS_OK;
  }
  if (!m->lora) {
    struct lora_target t[3];
    int nt = textenc_cond_lora_targets(m->cond, t);
    t[nt++] = unet_lora_target(m->unet);
    enum status s = lora_state_create(m->g, t, nt, &m->lora);
    if (s) return s;
  }
  return lora_state_apply(m->lora, specs, n, strict, rep);
}

int sd_model_set_loras(struct sd_model *m, const struct sd_lora *loras, int n, int strict, struct sd_lora_report *report) {
  if (n < 0 || (n > 0 && !loras)) return status_set(STATUS_INVALID_ARGUMENT, "sd_model_set_loras: no LoRAs given");
  struct lora_spec *sp = calloc((size_t)(n > 0 ? n : 1), sizeof *sp);
  if (!sp) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (int i = 0; i < n; i++) sp[i] = (struct lora_spec){.path = loras[i].path, .strength = loras[i].strength};
  struct lora_report rep;
  enum status s = sd_model_apply_loras(m, sp, n, strict != 0, &rep);
  free(sp);
  if (report)
    *report = (struct sd_lora_report){.modules = rep.modules, .applied = rep.applied, .unmatched = rep.unmatched,
                                      .other_network = rep.other, .unsupported = rep.unsupported, .rewritten = rep.rewritten};
  if (report) snprintf(report->first_unmatched, sizeof report->first_unmatched, "%s", rep.first_unmatched);
  return s;
}

void sd_conditioning_free(struct sd_conditioning *c) {
  free(c->cond), free(c->uncond), free(c->y_cond), free(c->y_uncond);
  c->cond = c->uncond = c->y_cond = c->y_uncond = NULL;
}

bool sd_model_zero_negative(const struct sd_model *m, enum sd_empty_negative empty) {
  return empty == SD_EMPTY_NEGATIVE_ZEROS || (empty == SD_EMPTY_NEGATIVE_AUTO && m->info.family == SD_FAMILY_SDXL);
}

enum status sd_model_encode(struct sd_model *m, const char *prompt, const char *negative, int clip_skip,
                            enum sd_empty_negative empty, const struct textenc_sizes *sizes, struct sd_conditioning *c) {
  memset(c, 0, sizeof *c);
  if (!negative) negative = "";
  struct textenc_cond_info ci;
  textenc_cond_info(m->cond, &ci);
  /* an empty negative as the zero conditioning (a NULL prompt to the conditioner) */
  const char *pair[2] = {prompt, !negative[0] && sd_model_zero_negative(m, empty) ? NULL : negative};
  int k = 1;
  enum status s = textenc_cond_set_clip_skip(m->cond, clip_skip);
  if (!s) s = textenc_cond_count_chunks(m->cond, pair, 2, &k);
  if (s) return s;
  c->tokens = CLIP_CONTEXT * k;
  size_t ctx = (size_t)c->tokens * ci.context_dim;
  float *both = malloc(2 * ctx * sizeof *both), *y = ci.y_dim ? malloc(2 * (size_t)ci.y_dim * sizeof *y) : NULL;
  c->cond = malloc(ctx * sizeof *c->cond);
  c->uncond = malloc(ctx * sizeof *c->uncond);
  if (ci.y_dim) c->y_cond = malloc((size_t)ci.y_dim * sizeof *c->y_cond), c->y_uncond = malloc((size_t)ci.y_dim * sizeof *c->y_uncond);
  if (!both || !c->cond || !c->uncond || (ci.y_dim && (!y || !c->y_cond || !c->y_uncond)))
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) s = textenc_cond_encode(m->cond, pair, 2, k, sizes, both, NULL, y);
  if (!s) {
    memcpy(c->cond, both, ctx * sizeof *both);
    memcpy(c->uncond, both + ctx, ctx * sizeof *both);
    if (ci.y_dim) {
      memcpy(c->y_cond, y, (size_t)ci.y_dim * sizeof *y);
      memcpy(c->y_uncond, y + ci.y_dim, (size_t)ci.y_dim * sizeof *y);
    }
  }
  free(both), free(y);
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
