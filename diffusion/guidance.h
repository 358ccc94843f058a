/* Classifier-free guidance around the U-Net: out = out_uncond + g (out_cond - out_uncond), with
 * cond and uncond in one U-Net batch of 2 (g == 1: one cond-only evaluation of batch 1). The
 * output is eps or v as the model predicts. The denoise callback of the samplers. */
#ifndef VKD_GUIDANCE_H
#define VKD_GUIDANCE_H

#include "unet.h"

struct guidance {
  struct unet *unet;
  const float *cond, *uncond; /* [T, context_dim] each */
  const float *y_cond;        /* SDXL: [adm] */
  int T, context_dim, adm;
  int C, H, W;                /* the latent of one image */
  const float *concat;        /* NULL, or [cc, H, W] after the latent (inpainting U-Nets) */
  int cc;
  float scale;
  /* work buffers, owned */
  float *x2, *ctx2, *eps2, *y2;
  int evals;
};

/* y_cond / y_uncond: SDXL's vector y of each branch (NULL for models without label_emb). */
enum status guidance_init(struct guidance *g, struct unet *u, const float *cond, const float *uncond,
                          const float *y_cond, const float *y_uncond, int T, int C, int H, int W, float scale);
void guidance_free(struct guidance *g);
/* An inpainting U-Net's extra input: concat [channels, H, W] follows each branch's latent. */
enum status guidance_set_concat(struct guidance *g, const float *concat, int channels);
/* denoise_fn */
enum status guidance_denoise(const float *x_in, double t, float *eps, void *user);

#endif
