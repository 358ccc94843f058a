/* Image files: PNG, JPEG, BMP, GIF, TGA, PNM, PSD through stb_image (grey and alpha converted to
 * RGB, 16-bit reduced to 8), with the size checked before any pixel is decoded. */
#define _POSIX_C_SOURCE 200809L
#include "image_io.h"

#include <stdint.h>

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wshadow"
#include <stb_image.h>
#pragma GCC diagnostic pop


enum status image_load(const char *path, unsigned char **rgb, int *w, int *h) {
  int c = 0;
  *rgb = NULL;
  if (!stbi_info(path, w, h, &c)) return status_set(STATUS_FORMAT, "%s: not a readable image (%s)", path, stbi_failure_reason());
  if (*w <= 0 || *h <= 0) return status_set(STATUS_FORMAT, "%s: empty image (%dx%d)", path, *w, *h);
  if ((uint64_t)*w * (uint64_t)*h > IMAGE_MAX_PIXELS)
    return status_set(STATUS_FORMAT, "%s: %dx%d is larger than %u pixels", path, *w, *h, IMAGE_MAX_PIXELS);
  *rgb = stbi_load(path, w, h, &c, 3); /* grey -> RGB, alpha dropped, 16-bit -> 8-bit */
  if (!*rgb) return status_set(STATUS_FORMAT, "%s: cannot decode (%s)", path, stbi_failure_reason());
  return STATUS_OK;
}

