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

/* a mid block's self-attention: GroupNorm, then q, k, v, proj_out as 1x1 convolutions */
struct vae_attn {
  struct gpu_tensor n_w, n_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
};

/* The encoder (vae_options.encoder): conv_in, the down levels (ResBlocks, then a stride-2
 * Downsample on all but the last), the mid block, norm_out, conv_out, quant_conv. */
struct vae_encoder {
  int levels, blocks, top_channels, moments; /* moments: 2 * z_channels (mean, logvar) */
  struct gpu_tensor in_w, in_b;
  struct resnet down[MAX_LEVELS][MAX_BLOCKS];
  struct gpu_tensor downs_w[MAX_LEVELS], downs_b[MAX_LEVELS];
  struct resnet mid1, mid2;
  struct vae_attn attn;
  struct gpu_tensor no_w, no_b, out_w, out_b, quant_w, quant_b;
};

struct vae {
  struct gpu *g;
  bool fp16, tiled, has_encoder;
  float scale;
  int band_rows, levels, blocks, z_channels, out_channels, top_channels;
  int64_t parameters;
  struct gpu_arena *weights, *persist, *temps;
  uint64_t act_bytes;
  struct gpu_tensor pq_w, pq_b, in_w, in_b;
  struct resnet mid1, mid2;
  struct vae_attn attn;
  struct resnet up[MAX_LEVELS][MAX_BLOCKS];
  struct gpu_tensor ups_w[MAX_LEVELS], ups_b[MAX_LEVELS];
  struct gpu_tensor no_w, no_b, out_w, out_b;
  struct vae_encoder enc;
  const struct safetensors *st; /* the checkpoint, for an encoder loaded on demand */
  char prefix[128];
  struct gpu_arena *enc_weights; /* that encoder's weights, once loaded */
  bool enc_pending;              /* checked, not loaded yet */
};

#define SCRATCH_ELEMS (4 << 20) /* 16 MiB of patches; convolutions chunk through it */

/* What one walk over the network does: decode a latent, decode up to the mid block's output, or
 * encode an image into moments. */
enum vae_mode { VAE_DECODE, VAE_MID, VAE_ENCODE, VAE_ENC_TAIL /* the encoder from its mid block on */ };
/* Activation bytes of a whole walk (persistent, temporaries, the largest single tensor); h, w: the
 * latent's size, or the image's for VAE_ENCODE. */
enum status vae_plan(struct vae *v, enum vae_mode mode, int N, int h, int w, VkDeviceSize *pbytes, VkDeviceSize *tbytes,
                     VkDeviceSize *largest, struct vae_trace *tr);
/* One walk on the GPU: a latent [N, zc, h, w] (divided by the scale factor here) into the image (or
 * the mid block's output [N, C, h, w]), or an image [N, 3, h, w] into moments [N, 2 zc, h/f, w/f]. */
enum status vae_run_whole(struct vae *v, enum vae_mode mode, const float *input, int N, int h, int w, float *output,
                          struct vae_trace *tr);
/* The encoder in bands of rows (mid block on whole): moments [N, 2 zc, H/f, W/f]. */
enum status vae_encode_tiled(struct vae *v, const float *image, int N, int H, int W, float *moments);
/* The same in bands of rows (mid block whole), exact up to summation order. */
enum status vae_decode_tiled(struct vae *v, const float *latent, int N, int h, int w, float *image);

#endif
