/* Reading image files into 8-bit RGB. */
#ifndef VKD_IMAGE_IO_H
#define VKD_IMAGE_IO_H

#include "status.h"

#define IMAGE_MAX_PIXELS (100u << 20) /* a decoded image (and a resize on the way to a crop) at most */

/* *rgb: malloc'd H x W x 3 bytes. Errors name the file (unreadable, truncated, 0x0, too large). */
enum status image_load(const char *path, unsigned char **rgb, int *w, int *h);

#endif
