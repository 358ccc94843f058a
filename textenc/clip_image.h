/* Images for CLIP (files are read by core/image_io.h): OpenAI's preprocessing exactly: short side
 * resized to n with Pillow's bicubic (fixed-point taps, antialiased when shrinking, uint8 between the passes), centre crop n x n,
 * [0, 1] scaling and CLIP mean/std normalisation (../shared/ref/README.md, "Preprocessing"). */
#ifndef VKD_CLIP_IMAGE_H
#define VKD_CLIP_IMAGE_H

#include <stdint.h>

#include "image_io.h"

/* rgb W x H -> pixels [3, n, n]; crop (n x n x 3 uint8) may be NULL. */
enum status clip_preprocess(const unsigned char *rgb, int w, int h, int n, float *pixels, unsigned char *crop);
/* AUTOMATIC1111's "Crop and resize" (img2img's init image): resized with Pillow's Lanczos so that it
 * covers W x H (the relatively shorter side becomes the target's, the other keeps the aspect, by
 * integer division), then the centre W x H kept (offsets floor(rw / 2) - floor(W / 2), likewise for
 * rows). rgb w x h x 3 bytes -> out W x H x 3 bytes. */
enum status image_cover_crop(const unsigned char *rgb, int w, int h, int W, int H, unsigned char *out);

enum resample_filter { RESAMPLE_BICUBIC, RESAMPLE_LANCZOS };
int resample_taps_range(enum resample_filter f, int in, int64_t out, int64_t first, int count, int32_t *bounds,
                        int32_t *coeffs);
/* Pillow's taps for resizing in -> out samples: lo/taps per output, ksize coefficients each (2^22). */
int bicubic_taps(int in, int out, int32_t *bounds, int32_t *coeffs);
/* The same for the outputs [first, first + count) of `out` only. */
int bicubic_taps_range(int in, int64_t out, int64_t first, int count, int32_t *bounds, int32_t *coeffs);

#endif
