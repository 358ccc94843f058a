/* Reading image files into 8-bit RGB. */
#ifndef VKD_IMAGE_IO_H
#define VKD_IMAGE_IO_H

#include <stdint.h>

#include "status.h"

#define IMAGE_MAX_PIXELS (100u << 20) /* a decoded image at most (10240 x 10240) */
#define IMAGE_MAX_FILE_BYTES (512u << 20)

/* *rgb: malloc'd H x W x 3 bytes. The file must be a regular file (a FIFO is an error, not a
 * hang); errors name the file (unreadable, truncated, 0x0, too large with its size). */
enum status image_load(const char *path, unsigned char **rgb, int *w, int *h);
/* The same with another pixel limit (the fuzz harness keeps each input fast with a small one). */
enum status image_load_limited(const char *path, uint64_t max_pixels, unsigned char **rgb, int *w, int *h);

#endif
