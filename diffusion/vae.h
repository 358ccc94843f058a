/* The SD VAE decoder (CompVis AutoencoderKL's post_quant_conv + Decoder) on Vulkan.
 *
 *   struct vae *v;
 *   vae_load(g, st, &(struct vae_options){.fp16 = true}, &v);
 *   vae_decode(v, latent, N, h, w, VAE_TILING_AUTO, image);   // image [N, 3, 8h, 8w] in about [-1, 1]
 *   vae_destroy(v);
 *
 * The input latent is the sampler's (scaled): it is divided by the scale factor (0.18215) first.
 * Levels, channels and blocks come from the tensors under `first_stage_model.`. When the
 * activations of a whole image would exceed the device's buffer limits (or 1 GiB), the decode is
 * tiled (VAE_TILING_AUTO; or always/never): the mid block runs whole at latent resolution, the up
 * path's convolutions run on the GPU over bands of rows (one-row halo) while GroupNorm statistics
 * and the element-wise steps are taken over the whole image on the host. The result equals the
 * untiled decode up to summation order: no seams, no blending. */
#ifndef VKD_VAE_H
#define VKD_VAE_H

#include <stdbool.h>

#include "gpu.h"
#include "safetensors.h"

enum vae_tiling { VAE_TILING_AUTO, VAE_TILING_ON, VAE_TILING_OFF };

struct vae_options {
  bool fp16;
  const char *prefix;   /* NULL: "first_stage_model." */
  float scale_factor;   /* 0: 0.18215 */
  int band_rows;        /* tiled decode: image rows per GPU band (0: as many as fit 64 MiB) */
  bool encoder;         /* also load the encoder and quant_conv (img2img) */
  bool encoder_on_demand; /* with encoder: its tensors are checked now (names, shapes, dtypes) and
                           * loaded at the first encode, so a txt2img-only run never holds them;
                           * the safetensors must then stay open until vae_destroy */
};

struct vae;

bool vae_present(const struct safetensors *st, const char *prefix);
bool vae_encoder_present(const struct safetensors *st, const char *prefix); /* encoder.conv_in and quant_conv */
enum status vae_load(struct gpu *g, const struct safetensors *st, const struct vae_options *opt, struct vae **out);
void vae_destroy(struct vae *v);
/* Frees the activation memory the last decode or encode kept; the next one allocates it again
 * (see unet_release_activations). */
void vae_release_activations(struct vae *v);
int vae_factor(const struct vae *v); /* image pixels per latent pixel (8 for SD) */
int vae_latent_channels(const struct vae *v); /* 4 for SD */
int64_t vae_parameters(const struct vae *v);
uint64_t vae_weight_bytes(const struct vae *v);
uint64_t vae_activation_bytes(const struct vae *v);
/* Whether the last decode was tiled. */
bool vae_last_tiled(const struct vae *v);
enum status vae_decode(struct vae *v, const float *latent, int N, int h, int w, enum vae_tiling tiling, float *image);
/* Block outputs of an untiled decode, for comparing with a reference (pointers left NULL are skipped). */
struct vae_trace {
  float *post_quant_conv, *mid, *up[8];
};
enum status vae_decode_traced(struct vae *v, const float *latent, int N, int h, int w, float *image,
                              struct vae_trace *trace);
/* The encoder (loaded with vae_options.encoder; tiled like the decode, exact up to summation
 * order, when AUTO finds the whole encode too large, or ON): image [N, 3, H, W] in [-1, 1] (H, W multiples of
 * vae_factor) -> the posterior's mean and log-variance [N, zc, H / f, W / f] each, logvar clamped to
 * [-30, 20] as ldm's DiagonalGaussianDistribution does. Unscaled: a sampler latent is
 * (mean + exp(logvar / 2) * noise) * scale factor. */
bool vae_has_encoder(const struct vae *v);
enum status vae_encode(struct vae *v, const float *image, int N, int H, int W, enum vae_tiling tiling, float *mean,
                       float *logvar);
/* ldm's DiagonalGaussianDistribution.sample with the given noise, times the scale factor:
 * latent = (mean + exp(logvar / 2) * noise) * scale (noise NULL: the mean, scaled). */
void vae_sample_latent(const float *mean, const float *logvar, const float *noise, size_t n, float scale, float *latent);
double vae_gflop(const struct vae *v, int N, int h, int w);
/* image [3, H, W] in [-1, 1] -> 8-bit H x W x 3: clamp(floor((v + 1) * 127.5 + 0.5), 0, 255) */
void image_to_u8(const float *image, int H, int W, unsigned char *out);

#endif
