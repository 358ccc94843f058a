/* Images for CLIP (files are read by core/image_io.h): OpenAI's preprocessing exactly: short side
 * resized to n with Pillow's bicubic (fixed-point taps, antialiased when shrinking, uint8 between the passes), centre crop n x n,
 * [0, 1] scaling and CLIP mean/std normalisation (../shared/ref/README.md, "Preprocessing"). */
#ifndef VKD_CLIP_IMAGE_H
#define VKD_CLIP_IMAGE_H

#include <stdint.h>

#include "image_io.h"

/* rgb W x H -> pixels [3, n, n]; crop (n x n x 3 uint8) may be NULL. */
enum status clip_preprocess(const unsigned char *rgb, int w, int h, int n, float *pixels, unsigned char *crop);
/* Pillow's taps for resizing in -> out samples: lo/taps per output, ksize coefficients each (2^22). */
int bicubic_taps(int in, int out, int32_t *bounds, int32_t *coeffs);
/* The same for the outputs [first, first + count) of `out` only. */
int bicubic_taps_range(int in, int64_t out, int64_t first, int count, int32_t *bounds, int32_t *coeffs);

#endif
