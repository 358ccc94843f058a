/* vkdiffusion: latent-diffusion text to image on any Vulkan device, as one library call.
 *
 * Usage (link with `pkg-config --cflags --libs vkdiffusion`):
 *
 *   #include <vkdiffusion.h>
 *
 *   struct sd_model_options mo = sd_model_default_options();
 *   mo.model_path = "v1-5.safetensors";             // SD 1.x / 2.x / SDXL single file (U-Net, VAE, text towers)
 *   struct sd_model *m;
 *   if (sd_model_create(&mo, &m) != SD_OK) {
 *     fprintf(stderr, "%s\n", sd_last_error());
 *     return 1;
 *   }
 *   struct txt2img_params p = txt2img_default_params();
 *   p.prompt = "a red circle on a blue background";
 *   p.seed = 42;                                      // torch.manual_seed(42); torch.randn(...)
 *   p.width = p.height = 512;
 *   unsigned char *rgb = malloc((size_t)p.batch_count * p.height * p.width * 3);
 *   if (txt2img(m, &p, rgb, NULL) != SD_OK) fprintf(stderr, "%s\n", sd_last_error());
 *   // rgb: batch_count images, each height x width x 3 bytes
 *   sd_model_destroy(m);
 *
 * Every function returns a status (SD_OK = 0); on failure sd_last_error() holds a one-line message
 * for the calling thread. Nothing prints, nothing exits, no file is written. A struct sd_model is
 * not thread-safe: use one per thread. */
#ifndef VKDIFFUSION_H
#define VKDIFFUSION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(VKDIFFUSION_BUILDING)
#define VKDIFFUSION_API __attribute__((visibility("default")))
#else
#define VKDIFFUSION_API
#endif

/* The same values as the library's internal status codes (and textenc's). */
enum sd_status {
  SD_OK = 0,
  SD_INVALID_ARGUMENT,
  SD_IO,
  SD_FORMAT,
  SD_NOT_FOUND,
  SD_UNSUPPORTED,
  SD_OUT_OF_MEMORY,
  SD_NO_DEVICE,
  SD_VULKAN,
  SD_NUMERIC,
  SD_CANCELLED,
};

enum sd_precision {
  SD_FP16 = 0, /* fp16 weights on the device where supported (fp32 accumulation) */
  SD_FP32 = 1, /* fp32 everywhere, for exact comparison */
};

/* Samplers as k-diffusion / AUTOMATIC1111 name them. */
enum sd_sampler { SD_SAMPLER_EULER, SD_SAMPLER_EULER_A, SD_SAMPLER_DDIM, SD_SAMPLER_DPMPP_2M };
/* discrete (k-diffusion), Karras, trailing (diffusers' timestep_spacing "trailing": what SD-Turbo and
 * SDXL-Turbo need) */
enum sd_schedule { SD_SCHEDULE_DISCRETE, SD_SCHEDULE_KARRAS, SD_SCHEDULE_TRAILING };
/* The checkpoint's family (AUTO: detected from the tensors) and what its U-Net predicts (AUTO:
 * --prediction, else the checkpoint's modelspec.prediction_type, else stable-diffusion.cpp's rule:
 * SD 2.x probed with one U-Net evaluation, SDXL v only with a `v_pred` key, SD 1.x eps). */
enum sd_family { SD_FAMILY_AUTO, SD_FAMILY_SD1, SD_FAMILY_SD2, SD_FAMILY_SDXL };
enum sd_prediction { SD_PREDICTION_AUTO, SD_PREDICTION_EPS, SD_PREDICTION_V };
/* An empty negative prompt as zeros (AUTOMATIC1111 / diffusers / sgm for SDXL) or encoded (every
 * tool for SD 1.x / 2.x, ComfyUI); AUTO: zeros for SDXL, encoded otherwise. */
enum sd_empty_negative { SD_EMPTY_NEGATIVE_AUTO, SD_EMPTY_NEGATIVE_ZEROS, SD_EMPTY_NEGATIVE_ENCODE };
/* VAE decode in bands of rows: when the whole image would not fit the device (AUTO), always, never.
 * The tiled decode equals the whole one up to summation order. */
enum sd_vae_tiling { SD_VAE_TILING_AUTO, SD_VAE_TILING_ON, SD_VAE_TILING_OFF };
/* The starting noise: torch.manual_seed(seed); torch.randn(...) bit for bit as PyTorch computes it
 * on x86-64 CPUs with AVX2 (SD_RNG_CPU, what ComfyUI and other PyTorch tools give there) or on
 * CPUs without AVX2 such as Arm (SD_RNG_CPU_SCALAR), on any machine. */
enum sd_rng { SD_RNG_CPU, SD_RNG_CPU_SCALAR };
/* img2img's latent from the VAE posterior: sampled with the image's generator (AUTOMATIC1111), or its mean */
enum sd_vae_encode { SD_VAE_ENCODE_SAMPLE, SD_VAE_ENCODE_MEAN };

struct sd_model_options {
  const char *model_path;     /* a single-file checkpoint: model.diffusion_model.*, first_stage_model.*, text towers */
  const char *tokenizer_path; /* NULL: vocab.json + merges.txt beside the model, $VKDIFFUSION_TOKENIZER, installed */
  const char *config_path;    /* NULL, or a JSON object with `text_encoder` / `unet` members (attention heads) */
  int device_index;           /* -1: $VKDIFFUSION_DEVICE or the best device */
  enum sd_precision precision;
  int literal;                /* 1: prompts are plain text; 0: AUTOMATIC1111 syntax (emphasis, BREAK) */
  enum sd_family family;      /* AUTO: detected */
  enum sd_prediction prediction; /* AUTO: see enum sd_prediction */
  const char *taesd_path;     /* NULL, or a TAESD / TAESDXL file (either key layout): txt2img's taesd_decode
                                 and previews use it */
};

struct sd_model_info {
  int vae_factor;        /* image pixels per latent pixel (8 for SD) */
  int latent_channels;   /* 4 */
  int latent_align;      /* latent height and width must divide by this */
  int context_width;     /* 768 for SD 1.x, 1024 SD 2.x, 2048 SDXL */
  int fp16;              /* weights stored as fp16 on the device */
  int native_width, native_height; /* the checkpoint's modelspec.resolution, or 0 */
  const char *device_name;
  uint64_t weight_bytes; /* U-Net + VAE + text encoder on the device */
  enum sd_family family;
  enum sd_prediction prediction;
  const char *prediction_source; /* "--prediction", "modelspec", "the SD 2.x probe", ... */
  float scale_factor;    /* latent scale: 0.18215 (SD 1.x / 2.x), 0.13025 (SDXL) */
  int default_width, default_height; /* native size, else the family's: 1024 SDXL, 768 SD 2.x v, 512 */
  int default_clip_skip; /* 1 SD 1.x, 2 SD 2.x and SDXL */
  int inpainting;        /* 1: an inpainting U-Net (in_channels = latent + 1 mask + latent of the masked image) */
};

enum sd_phase { SD_PHASE_ENCODE, SD_PHASE_SAMPLE, SD_PHASE_DECODE };

/* Progress: `step` of `steps` of `phase` is done for image `image` (0-based) of the batch (encode:
 * image 0, step 0 of 1 before, 1 of 1 after; sample: after each step; decode: 0 before, 1 after).
 * Return non-zero to cancel (txt2img then returns SD_CANCELLED). */
typedef int (*sd_progress_fn)(enum sd_phase phase, int image, int step, int steps, void *user);
/* An image is ready: rgb [height, width, 3], latent [4, h, w] (the sampler's final latent). Return
 * non-zero to stop (txt2img returns SD_CANCELLED). */
typedef int (*sd_image_fn)(int image, uint32_t seed, const unsigned char *rgb, const float *latent, void *user);
/* A preview of image `image` after `step` of `steps`: the current latent through TAESD, rgb [height,
 * width, 3]. Return non-zero to stop. */
typedef int (*sd_preview_fn)(int image, int step, int steps, const unsigned char *rgb, int width, int height, void *user);

struct txt2img_params {
  const char *prompt;          /* AUTOMATIC1111 syntax unless the model was created literal */
  const char *negative_prompt; /* NULL: "" */
  int64_t seed;                /* image b starts from torch.manual_seed((seed + b) mod 2^32); 0 .. 2^32-1 */
  const float *noise;          /* NULL, or the starting noise [batch_count, 4, h, w] (replaces the seed's) */
  const float *ancestral_noise; /* NULL, or euler_a's per-step noise [steps, batch_count, 4, h, w] */
  int steps;                   /* 1 .. 1000 */
  double cfg_scale;            /* classifier-free guidance; 1: no unconditional pass */
  int width, height;           /* pixels, multiples of vae_factor * latent_align; 0: the model's default size */
  enum sd_sampler sampler;
  enum sd_schedule schedule;
  int clip_skip;               /* 1: the last layer (AUTOMATIC1111 numbering); 0: the family's default */
  int batch_count;             /* images, each with its own seed */
  enum sd_vae_tiling vae_tiling;
  enum sd_rng rng;             /* the starting noise's (and euler_a's per-step noise's) generator */
  sd_progress_fn progress;     /* may be NULL */
  sd_image_fn on_image;        /* may be NULL */
  void *user;                  /* for progress and on_image */
  const volatile int *cancel;  /* may be NULL; checked between steps: non-zero stops with SD_CANCELLED */
  enum sd_empty_negative empty_negative;
  /* SDXL micro-conditioning in pixels; 0: the job's size (original, target), no crop */
  int original_width, original_height, crop_top, crop_left, target_width, target_height;
  /* NULL, or batch_count flags: image b with skip[b] != 0 is not generated (no on_image call); the
   * others are exactly what the whole batch gives them (a worker renders its share of a batch) */
  const unsigned char *skip;
  /* img2img: init_image (init_width x init_height x 3 bytes, RGB; NULL: text to image) is resized
   * and centre-cropped to width x height (AUTOMATIC1111's "Crop and resize" with Pillow's Lanczos),
   * VAE-encoded and noised with the image's seeded noise to the sigma of step steps - int(strength *
   * steps) of the schedule; the int(strength * steps) steps after it run (diffusers' count; strength 0
   * returns the init image through the VAE, 1 noises it to the first sigma). Image b's generator
   * (seed + b) gives the starting noise, then the posterior sample, then euler_a's noise. */
  const unsigned char *init_image;
  int init_width, init_height;
  double strength;             /* 0 .. 1; 0.75 by default */
  enum sd_vae_encode vae_encode;
  int taesd_decode;            /* 1: the final decode through the model's TAESD (sd_model_options.taesd_path) */
  int preview_every;           /* > 0: preview (the model's TAESD) every this many steps, not after the last */
  sd_preview_fn preview;
  /* inpainting (with init_image): mask (mask_width x mask_height x 3 bytes, its luma used: white
   * repaints, black keeps, grey blends) cropped and resized like the init image, blurred by a
   * Gaussian of mask_blur pixels (standard deviation). An ordinary U-Net: after every step the kept
   * part of the latent is replaced by the init latent noised to that step's sigma (the mask averaged
   * over each latent pixel). An inpainting U-Net (sd_model_info.inpainting) reads the mask (rounded,
   * nearest per latent pixel) and the VAE latent (mean) of the image with the repainted part zeroed
   * as extra input channels; without a mask (or without an init image) the whole image is repainted.
   * The output keeps the init latent's own decode where the mask is black (blended by the blurred
   * mask: one more VAE decode an image), as AUTOMATIC1111 overlays the kept part. */
  const unsigned char *mask;
  int mask_width, mask_height;
  double mask_blur;
};

struct sd_model; /* a checkpoint on the device: text encoder, U-Net, VAE (opaque) */

VKDIFFUSION_API struct sd_model_options sd_model_default_options(void);
/* Loads the checkpoint onto a new device. On failure *out is NULL and nothing is left allocated. */
VKDIFFUSION_API int sd_model_create(const struct sd_model_options *opt, struct sd_model **out);
VKDIFFUSION_API void sd_model_destroy(struct sd_model *m); /* accepts NULL */
VKDIFFUSION_API int sd_model_get_info(const struct sd_model *m, struct sd_model_info *info);
VKDIFFUSION_API const char *sd_last_error(void);

/* LoRA: a file (kohya/sd-scripts lora_unet_* / lora_te_* / lora_te1_* / lora_te2_*, LoCon, or
 * diffusers/PEFT unet.* / text_encoder.* / text_encoder_2.*) and its strength. */
struct sd_lora {
  const char *path;
  double strength;
};
struct sd_lora_report {
  int modules;       /* LoRA modules in the files */
  int applied;       /* matched a tensor of the model (and were merged, unless their strength is 0) */
  int unmatched;     /* matched no tensor, or one of another shape (skipped; an error when strict) */
  int other_network; /* for a network the model does not have */
  int unsupported;   /* keys of network kinds not merged (LoHa, LoKr, DoRA, ...) */
  int rewritten;     /* device tensors rewritten by this call */
  char first_unmatched[512];
};
/* Merges LoRAs into the model's weights, W' = W + strength * (alpha / rank) * up . down (fp32
 * arithmetic, stored in the model's precision), replacing the set merged before: only the tensors
 * whose contributions changed are rewritten, and those left with none get the checkpoint's exact
 * values back (n = 0 restores the checkpoint). strict: an unmatched key or a shape mismatch is an
 * error naming the key; otherwise they are counted in report (may be NULL). A file none of whose
 * keys matches is an error. */
VKDIFFUSION_API int sd_model_set_loras(struct sd_model *m, const struct sd_lora *loras, int n, int strict,
                                       struct sd_lora_report *report);

/* Defaults: 20 steps, cfg 7, the model's size, euler_a, discrete schedule, the family's clip skip,
 * seed 0, 1 image. */
VKDIFFUSION_API struct txt2img_params txt2img_default_params(void);
/* Text to image: prompt -> tokens -> conditioning -> sampling loop -> VAE -> pixels, for every image
 * of the batch. images: NULL, or batch_count x height x width x 3 bytes; latents: NULL, or every
 * step's latent [steps, batch_count, 4, h, w]. Every parameter is checked before any GPU work. A
 * failing image stops the batch; the images before it have been delivered to on_image. */
VKDIFFUSION_API int txt2img(struct sd_model *m, const struct txt2img_params *p, unsigned char *images, float *latents);

#ifdef __cplusplus
}
#endif
#endif
