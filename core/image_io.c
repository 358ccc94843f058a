/* Image files: PNG, JPEG, BMP, GIF, TGA, PNM, PSD through stb_image (grey and alpha converted to
 * RGB, 16-bit reduced to 8), with the size checked before any pixel is decoded. */
#define _POSIX_C_SOURCE 200809L
#include "image_io.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

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


/* The size a PNG says it has (IHDR), read directly: stb_image refuses a very large PNG with only
 * "unknown image type", and the user should learn its size instead. */
static bool png_size(const unsigned char *b, size_t n, uint32_t *w, uint32_t *h) {
  if (n < 24 || memcmp(b, "\x89PNG\r\n\x1a\n", 8) || memcmp(b + 12, "IHDR", 4)) return false;
  *w = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
  *h = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
  return true;
}

enum status image_load(const char *path, unsigned char **rgb, int *w, int *h) {
  *rgb = NULL;
  char *buf;
  size_t n;
  enum status s = file_read(path, IMAGE_MAX_FILE_BYTES, &buf, &n); /* a regular file, never a FIFO */
  if (s) return s;
  const unsigned char *b = (const unsigned char *)buf;
  uint32_t pw, ph;
  int c = 0;
  if (png_size(b, n, &pw, &ph) && (!pw || !ph || (uint64_t)pw * ph > IMAGE_MAX_PIXELS)) {
    s = status_set(STATUS_FORMAT, "%s: a %ux%u PNG: %s", path, pw, ph,
                   !pw || !ph ? "an empty image" : "larger than the " IMAGE_MAX_PIXELS_TEXT " pixels allowed");
  } else if (n > INT32_MAX || !stbi_info_from_memory(b, (int)n, w, h, &c)) {
    s = status_set(STATUS_FORMAT, "%s: not a readable image (%s)", path, n > INT32_MAX ? "too large" : stbi_failure_reason());
  } else if (*w <= 0 || *h <= 0) {
    s = status_set(STATUS_FORMAT, "%s: empty image (%dx%d)", path, *w, *h);
  } else if ((uint64_t)*w * (uint64_t)*h > IMAGE_MAX_PIXELS) {
    s = status_set(STATUS_FORMAT, "%s: %dx%d is larger than the " IMAGE_MAX_PIXELS_TEXT " pixels allowed", path, *w, *h);
  } else if (!(*rgb = stbi_load_from_memory(b, (int)n, w, h, &c, 3))) { /* grey -> RGB, alpha dropped, 16 -> 8 bits */
    s = status_set(STATUS_FORMAT, "%s: cannot decode (%s)", path, stbi_failure_reason());
  }
  free(buf);
  return s;
}
