/* A Stable Diffusion checkpoint on the device: CLIP text encoder, U-Net and VAE decoder, loaded
 * from one single-file checkpoint by the same loaders as everywhere, plus the noise schedule.
 * The public half (create, destroy, info) is in vkdiffusion.h; this header adds the parts that
 * txt2img, the CLI and the tests use. */
#ifndef VKD_SD_MODEL_H
#define VKD_SD_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "gpu.h"
#include "sampler.h"
#include "textenc.h"
#include "unet.h"
#include "vae.h"
#include "vkdiffusion.h"

struct sd_model {
  struct gpu *g;
  struct safetensors *st;
  struct textenc_cond *cond; /* one text tower, or SDXL's two */
  struct unet *unet;
  struct vae *vae;
  struct taesd *taesd; /* sd_model_options.taesd_path, or NULL */
  struct schedule sched;
  struct sd_model_info info;
  struct lora_state *lora; /* created at the first sd_model_set_loras */
};

/* sd_model_set_loras with core's report (what matched, what was rewritten). */
enum status sd_model_apply_loras(struct sd_model *m, const struct lora_spec *specs, int n, bool strict,
                                 struct lora_report *rep);

/* The device the model lives on (borrowed: for a CLIP scorer beside it, validation counts, profiles). */
struct gpu *sd_model_gpu(struct sd_model *m);

/* The prompt and negative prompt as conditioning, padded to the same number of 77-token chunks
 * (AUTOMATIC1111): cond and uncond [tokens, width] each; SDXL also y_cond and y_uncond [2816]
 * (NULL otherwise). An empty negative is zeros or encoded as `empty` says (AUTO: the family's rule). */
struct sd_conditioning {
  float *cond, *uncond, *y_cond, *y_uncond;
  int tokens; /* 77 * chunks */
};
enum status sd_model_encode(struct sd_model *m, const char *prompt, const char *negative, int clip_skip,
                            enum sd_empty_negative empty, const struct textenc_sizes *sizes, struct sd_conditioning *c);
/* Whether an empty negative prompt becomes zeros for this model under `empty`. */
bool sd_model_zero_negative(const struct sd_model *m, enum sd_empty_negative empty);
void sd_conditioning_free(struct sd_conditioning *c);

/* A checkpoint's native size from its ModelSpec metadata ("modelspec.resolution": "512x512"), read
 * without loading it; false when the file has none (or cannot be read: the loader reports that). */
bool sd_checkpoint_native_size(const char *path, int *width, int *height);

/* --noise FILE for a job of `images` images of [channels, h, w] latents, checked before use:
 * `noise` [N >= images, channels, h, w] (*noise: the first `images`) and, when the file has it,
 * `ancestral_noise` [steps' >= steps, N >= images, channels, h, w] as [steps][images][...] (else NULL). */
enum status sd_load_noise(const char *path, int images, int steps, int channels, int h, int w, float **noise,
                          float **ancestral);

#endif
