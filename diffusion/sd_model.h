/* A Stable Diffusion checkpoint on the device: CLIP text encoder, U-Net and VAE decoder, loaded
 * from one single-file checkpoint by the same loaders as everywhere, plus the schedule. */
#ifndef VKD_SD_MODEL_H
#define VKD_SD_MODEL_H

#include <stdint.h>

#include "prompt_file.h"
#include "sampler.h"
#include "textenc.h"
#include "unet.h"
#include "vae.h"

struct sd_model_options {
  const char *model_path, *tokenizer_path, *config_path;
  enum textenc_precision precision;
  int device; /* -1: default */
  int literal; /* prompts as plain text, no A1111 syntax */
};

struct sd_model;

enum status sd_model_load(const struct sd_model_options *o, struct sd_model **out);
/* Destroys the model and its device; a Vulkan validation message turns rc into a failure. */
int sd_model_close(struct sd_model *m, int rc);
struct unet *sd_model_unet(struct sd_model *m);
struct gpu *sd_model_gpu(struct sd_model *m);
int sd_model_vae_factor(const struct sd_model *m);
int sd_model_latent_align(const struct sd_model *m); /* latent sizes must divide by this */

struct sd_conditioning {
  float *cond, *uncond; /* [tokens, width] each */
  int tokens;           /* 77 * chunks */
};
/* prompt and negative prompt, padded to the same number of chunks (A1111) */
enum status sd_model_encode(struct sd_model *m, const char *prompt, const char *negative, int clip_skip,
                            struct sd_conditioning *c);
void sd_conditioning_free(struct sd_conditioning *c);
enum status sd_model_sample(struct sd_model *m, const struct sampler_run *run, float *x);
enum status sd_model_decode(struct sd_model *m, const float *latent, int h, int w, enum vae_tiling tiling, float *image);
/* AUTOMATIC1111's parameters text for a generated image (malloc'd). */
char *sd_parameters_text(const struct sd_model *m, const struct job *j, uint64_t seed);
/* --noise FILE, read once for a job of `images` images of n latent values: `noise` [images][n] and,
 * when the file has `ancestral_noise` [steps, N, 4, h, w], that as [images][steps][n] (else NULL). */
enum status sd_load_noise(const char *path, int images, int steps, size_t n, float **noise, float **ancestral);

#endif
