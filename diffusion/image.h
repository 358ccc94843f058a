/* Images for CLIP: loading (PNG, JPEG, ... via stb_image; grey and alpha converted to RGB, 16-bit
 * reduced to 8) and OpenAI's preprocessing exactly: short side resized to n with Pillow's bicubic
 * (fixed-point taps, antialiased when shrinking, uint8 between the passes), centre crop n x n,
 * [0, 1] scaling and CLIP mean/std normalisation (../shared/ref/README.md, "Preprocessing"). */
#ifndef VKD_IMAGE_H
#define VKD_IMAGE_H

#include <stdint.h>

#include "status.h"

/* *rgb: malloc'd H x W x 3 bytes. Errors name the file (unreadable, truncated, 0x0, too large). */
enum status image_load(const char *path, unsigned char **rgb, int *w, int *h);
/* rgb W x H -> pixels [3, n, n]; crop (n x n x 3 uint8) may be NULL. */
enum status clip_preprocess(const unsigned char *rgb, int w, int h, int n, float *pixels, unsigned char *crop);
/* Pillow's taps for resizing in -> out samples: lo/taps per output, ksize coefficients each (2^22). */
int bicubic_taps(int in, int out, int32_t *bounds, int32_t *coeffs);

#endif
