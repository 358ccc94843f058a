#include "guidance.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum status guidance_init(struct guidance *g, struct unet *u, const float *cond, const float *uncond,
                          const float *y_cond, const float *y_uncond, int T, int C, int H, int W, float scale) {
  struct unet_info info;
  unet_get_info(u, &info);
  *g = (struct guidance){.unet = u, .cond = cond, .uncond = uncond, .y_cond = y_cond, .T = T,
                         .context_dim = info.context_dim, .adm = info.adm_in_channels, .C = C, .H = H, .W = W,
                         .scale = scale};
  size_t n = (size_t)C * H * W, ctx = (size_t)T * info.context_dim, adm = (size_t)info.adm_in_channels;
  if (adm && (!y_cond || !y_uncond))
    return status_set(STATUS_INVALID_ARGUMENT, "guidance: this U-Net needs the vector y of both branches");
  g->x2 = malloc(2 * n * sizeof *g->x2);
  g->eps2 = malloc(2 * n * sizeof *g->eps2);
  g->ctx2 = malloc(2 * ctx * sizeof *g->ctx2);
  g->y2 = malloc(2 * (adm ? adm : 1) * sizeof *g->y2);
  if (!g->x2 || !g->eps2 || !g->ctx2 || !g->y2) {
    guidance_free(g);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  memcpy(g->ctx2, uncond, ctx * sizeof *g->ctx2); /* batch element 0: uncond, 1: cond */
  memcpy(g->ctx2 + ctx, cond, ctx * sizeof *g->ctx2);
  if (adm) {
    memcpy(g->y2, y_uncond, adm * sizeof *g->y2);
    memcpy(g->y2 + adm, y_cond, adm * sizeof *g->y2);
  }
  return STATUS_OK;
}

void guidance_free(struct guidance *g) {
  free(g->x2), free(g->eps2), free(g->ctx2), free(g->y2);
  g->x2 = g->eps2 = g->ctx2 = g->y2 = NULL;
}

enum status guidance_set_concat(struct guidance *g, const float *concat, int channels) {
  size_t n = (size_t)(g->C + channels) * g->H * g->W;
  float *x2 = realloc(g->x2, 2 * n * sizeof *x2);
  if (!x2) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  g->x2 = x2;
  g->concat = concat;
  g->cc = channels;
  return STATUS_OK;
}

enum status guidance_denoise(const float *x_in, double t, float *eps, void *user) {
  struct guidance *g = user;
  size_t n = (size_t)g->C * g->H * g->W, nc = (size_t)g->cc * g->H * g->W, ni = n + nc;
  float tt[2] = {(float)t, (float)t};
  g->evals++;
  if (g->cc) { /* each branch's input: the latent, then the extra channels */
    memcpy(g->x2, x_in, n * sizeof *x_in);
    memcpy(g->x2 + n, g->concat, nc * sizeof *x_in);
    x_in = g->x2;
  }
  if (g->scale == 1.0f) /* no unconditional pass */
    return unet_forward(g->unet, x_in, tt, g->cond, g->adm ? g->y_cond : NULL, 1, g->H, g->W, g->T, eps, NULL);
  if (x_in != g->x2) memcpy(g->x2, x_in, ni * sizeof *x_in);
  memcpy(g->x2 + ni, g->x2, ni * sizeof *x_in);
  enum status s = unet_forward(g->unet, g->x2, tt, g->ctx2, g->adm ? g->y2 : NULL, 2, g->H, g->W, g->T, g->eps2, NULL);
  if (s) return s;
  for (size_t i = 0; i < n; i++) eps[i] = g->eps2[i] + g->scale * (g->eps2[n + i] - g->eps2[i]);
  return STATUS_OK;
}
