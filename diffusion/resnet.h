/* The residual block of the latent-diffusion networks, shared by the U-Net (ldm ResBlock, with a
 * time embedding) and the VAE (ldm ResnetBlock, without):
 *     h = conv1(silu(norm1(x))) [+ emb_proj(silu(emb))];  y = skip(x) + conv2(silu(norm2(h)))
 * (dropout is the identity at inference). The checkpoints name the same layers differently; each
 * network passes its names. */
#ifndef VKD_RESNET_H
#define VKD_RESNET_H

#include <stdbool.h>

#include "weight_loader.h"
#include "workspace.h"

struct resnet_names {
  const char *norm1, *conv1, *emb, *norm2, *conv2, *skip; /* emb NULL: no time embedding */
};
extern const struct resnet_names resnet_unet_names; /* in_layers.0, in_layers.2, emb_layers.1, out_layers.0, ... */
extern const struct resnet_names resnet_vae_names;  /* norm1, conv1, norm2, conv2, nin_shortcut */

struct resnet {
  int cin, cout;
  float eps; /* GroupNorm: 1e-5 in the U-Net, 1e-6 in the VAE */
  struct gpu_tensor norm1_w, norm1_b, conv1_w, conv1_b, emb_w, norm2_w, norm2_b, conv2_w, conv2_b, skip_w, skip_b;
  bool has_emb, has_skip; /* with emb, conv1_b holds conv1's bias + the embedding projection's bias */
};

/* Loads the block at `base` (channels from its conv1 shape); temb_dim is the time embedding's width
 * (ignored without names->emb); matrices in dt. */
enum status resnet_load(struct weight_loader *l, const struct resnet_names *names, const char *base, int temb_dim,
                        enum dtype dt, float eps, struct resnet *r);
/* y [N, cout, H, W] = block(x [N, cin, H, W], emb [N, temb_dim] or NULL); temporaries in T,
 * convolution patches in scratch. y may be x itself for a block without a skip convolution (in
 * place: x is read before y is written). While T measures, only the allocations happen. */
enum status resnet_forward(struct gpu *g, struct workspace *T, const struct resnet *r, const struct gpu_tensor *x,
                           const struct gpu_tensor *emb, const struct gpu_tensor *y, const struct gpu_tensor *scratch);
/* GFLOP-counting helper: multiply-adds of one block per output pixel. */
double resnet_macs_per_pixel(const struct resnet *r);

#endif
