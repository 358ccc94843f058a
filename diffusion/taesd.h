/* madebyollin's Tiny AutoEncoder for Stable Diffusion (TAESD, and TAESDXL: the same network) on
 * Vulkan: a decoder 10-50x cheaper than the KL VAE's (previews, fast drafts) and an encoder.
 *
 *   decoder: tanh(z / 3) 3 -> conv 4->64 -> ReLU -> 3 x [3 Blocks -> nearest x2 -> conv (no bias)]
 *            -> Block -> conv 64->3             (latents as the U-Net makes them: no scale factor)
 *   encoder: conv 3->64 -> Block -> 3 x [conv stride 2 (no bias) -> 3 Blocks] -> conv 64->4
 *   Block(x) = ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x)
 * Networks with fewer scale stages (1 or 2: 2x, 4x, as distilled for the demo model's 4x VAE) or
 * another width than 64 load too; the layer count and the first convolution tell.
 *
 * Images are RGB in [0, 1] (the decoder's output before clamping). Both key layouts load: diffusers'
 * AutoencoderTiny (`decoder.layers.{i}`, `encoder.layers.{i}`) and the original files
 * (taesd_decoder: `{i + 1}`, its Sequential starting with the clamp; taesd_encoder: `{i}`). */
#ifndef VKD_TAESD_H
#define VKD_TAESD_H

#include <stdbool.h>

#include "gpu.h"

struct taesd;

/* Loads whatever the file holds (a decoder, an encoder or both; neither is an error naming the file). */
enum status taesd_load(struct gpu *g, const char *path, bool fp16, struct taesd **out);
void taesd_destroy(struct taesd *t);
bool taesd_has_decoder(const struct taesd *t);
bool taesd_has_encoder(const struct taesd *t);
int taesd_latent_channels(const struct taesd *t);
/* Pixels a latent pixel: 8 (TAESD, TAESDXL), or 2^S for a network of S stages (the demo model's: 4). */
int taesd_factor(const struct taesd *t);
/* latent [N, C, h, w] -> image [N, 3, f h, f w] (f: taesd_factor; about [0, 1], not clamped) */
enum status taesd_decode(struct taesd *t, const float *latent, int N, int h, int w, float *image);
/* image [N, 3, H, W] in [0, 1], H and W multiples of f -> latent [N, C, H/f, W/f] */
enum status taesd_encode(struct taesd *t, const float *image, int N, int H, int W, float *latent);
/* image [3, H, W] -> 8-bit H x W x 3: round(clamp(v, 0, 1) 255) */
void taesd_image_to_u8(const float *image, int H, int W, unsigned char *out);

#endif
