/* The latent-diffusion U-Net (CompVis ldm / sgm UNetModel: SD 1.x, SD 2.x, SDXL) on Vulkan.
 *
 *   struct unet *u;
 *   unet_load(g, st, &(struct unet_options){.fp16 = true}, &u);
 *   unet_forward(u, x, t, context, NULL, N, H, W, T, eps, NULL);   // eps [N, 4, H, W]
 *   unet_destroy(u);
 *
 * The architecture is read from the tensors under `model.diffusion_model.` (or a given prefix):
 * channels, levels, ResBlocks, SpatialTransformers (1x1-conv or linear proj_in/out, any depth),
 * Downsample / Upsample, the context width, SDXL's label_emb. What tensors cannot tell, the number of attention
 * heads per level, comes from the options (config files), else SD 1.x's 8 heads. */
#ifndef VKD_UNET_H
#define VKD_UNET_H

#include <stdbool.h>
#include <stdint.h>

#include "gpu.h"
#include "lora.h"
#include "safetensors.h"

#define UNET_MAX_LEVELS 8

struct unet_options {
  bool fp16;
  const char *prefix; /* NULL: "model.diffusion_model." */
  int heads[UNET_MAX_LEVELS]; /* attention heads per level; 0: use heads_all */
  int heads_all;              /* 0: 8 heads (SD 1.x's conv projections), channels / 64 (linear ones: SD 2.x, SDXL) */
  int head_dim;               /* > 0: heads = channels / head_dim (ldm num_head_channels) */
};

struct unet_info {
  int in_channels, out_channels, model_channels, context_dim, temb_dim, levels;
  int adm_in_channels; /* SDXL: the width of the vector y (label_emb); 0 when the model has none */
  int n_input, n_output, n_res, n_transformers;
  int64_t parameters;
  int heads[UNET_MAX_LEVELS];
};

/* Outputs of blocks, for comparing with a reference (each pointer that is set is filled). */
struct unet_trace {
  float *t_emb, *emb, *label_emb;
  float *input[32];
  float *middle;
  float *output[32];
};

struct unet;

bool unet_present(const struct safetensors *st, const char *prefix);
enum status unet_load(struct gpu *g, const struct safetensors *st, const struct unet_options *opt, struct unet **out);
void unet_destroy(struct unet *u);
/* Frees the activation memory the last forward kept (and its recorded command buffer); the next
 * forward allocates and records again. Pipelines call it between phases, so that the U-Net's and
 * the VAE's activations are never held at once. */
void unet_release_activations(struct unet *u);
void unet_get_info(const struct unet *u, struct unet_info *info);
/* The U-Net as a LoRA target (core/lora.h): its weights and the names they answer to. */
struct lora_target unet_lora_target(const struct unet *u);
/* eps [N, out, H, W] = U-Net(x [N, in, H, W], t [N] (fractional allowed), context [N, T, context_dim],
 * y [N, adm_in_channels] (SDXL; NULL for models without label_emb)). H and W must divide by
 * 2^(levels-1). One command buffer, one submit. */
enum status unet_forward(struct unet *u, const float *x, const float *t, const float *context, const float *y, int N,
                         int H, int W, int T, float *eps, struct unet_trace *trace);
/* Forward calls so far and the batch items they ran (a CFG step: 1 call, 2 items). */
void unet_counts(const struct unet *u, int64_t *evaluations, int64_t *images);
/* Device bytes of the weights and of the last forward's activations. */
uint64_t unet_weight_bytes(const struct unet *u);
uint64_t unet_activation_bytes(const struct unet *u);
/* GFLOP of one forward at this size (matrix products and attention). */
double unet_gflop(const struct unet *u, int N, int H, int W, int T);

#endif
