/* The VAE decoder's private parts, shared by the whole decode (vae.c) and the tiled one
 * (vae_tiled.c). */
#ifndef VKD_VAE_INTERNAL_H
#define VKD_VAE_INTERNAL_H

#include "resnet.h"
#include "vae.h"

#define GN_GROUPS 32
#define GN_EPS 1e-6f
#define MAX_LEVELS 8
#define MAX_BLOCKS 8

struct vae {
  struct gpu *g;
  bool fp16, tiled;
  float scale;
  int band_rows, levels, blocks, z_channels, out_channels, top_channels;
  int64_t parameters;
  struct gpu_arena *weights, *persist, *temps;
  uint64_t act_bytes;
  struct gpu_tensor pq_w, pq_b, in_w, in_b;
  struct resnet mid1, mid2;
  struct gpu_tensor an_w, an_b, aq_w, aq_b, ak_w, ak_b, av_w, av_b, ao_w, ao_b;
  struct resnet up[MAX_LEVELS][MAX_BLOCKS];
  struct gpu_tensor ups_w[MAX_LEVELS], ups_b[MAX_LEVELS];
  struct gpu_tensor no_w, no_b, out_w, out_b;
};

#define SCRATCH_ELEMS (4 << 20) /* 16 MiB of patches; convolutions chunk through it */

/* Activation bytes of a whole decode (persistent, temporaries, the largest single tensor). */
enum status vae_plan(struct vae *v, int N, int h, int w, bool mid_only, VkDeviceSize *pbytes, VkDeviceSize *tbytes,
                     VkDeviceSize *largest, struct vae_trace *tr);
/* One decode on the GPU of z [N, zc, h, w] (scaled by 1/scale here) into image (or, mid_only, into
 * the mid block's output [N, C, h, w]). */
enum status vae_decode_whole(struct vae *v, const float *latent, int N, int h, int w, bool mid_only, float *image,
                             struct vae_trace *tr);
/* The same in bands of rows (mid block whole), exact up to summation order. */
enum status vae_decode_tiled(struct vae *v, const float *latent, int N, int h, int w, float *image);

#endif
