/* Classifier-free guidance around the U-Net: eps = eps_uncond + g (eps_cond - eps_uncond), with
 * cond and uncond in one U-Net batch of 2 (g == 1: one cond-only pass). The denoise callback of
 * the samplers. */
#ifndef VKD_GUIDANCE_H
#define VKD_GUIDANCE_H

#include "unet.h"

struct guidance {
  struct unet *unet;
  const float *cond, *uncond; /* [T, context_dim] each */
  int T, context_dim;
  int C, H, W;                /* the latent of one image */
  float scale;
  /* work buffers, owned */
  float *x2, *ctx2, *eps2;
  int evals;
};

enum status guidance_init(struct guidance *g, struct unet *u, const float *cond, const float *uncond, int T,
                          int C, int H, int W, float scale);
void guidance_free(struct guidance *g);
/* denoise_fn */
enum status guidance_denoise(const float *x_in, double t, float *eps, void *user);

#endif
