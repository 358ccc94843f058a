/* Image files: PNG, JPEG, BMP and GIF through stb_image (grey and alpha converted to RGB, 16-bit
 * reduced to 8), with the size checked before any pixel is decoded. Only these four formats are
 * compiled in: Debian's stb_image reads past its buffer on a 16-bit PNM (found by fuzz/fuzz_image),
 * and TGA, PSD, PIC and HDR are no formats users bring to CLIP. */
#define _POSIX_C_SOURCE 200809L
#include "image_io.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
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

/* The tables of a DHT segment whose length field is at b[p]: at most 256 codes each. stb_image
 * builds each table from its counts before it reads the symbols, and reads bytes past the end of
 * the file as 0, so counts are summed the same way. */
static bool dht_ok(const unsigned char *b, size_t n, size_t p) {
  size_t len = p + 1 < n ? (size_t)b[p] << 8 | b[p + 1] : 0, end = p + len;
  for (size_t q = p + 2; q < end;) {
    size_t codes = 0;
    for (size_t i = q + 1; i < q + 17; i++) codes += i < n ? b[i] : 0;
    if (codes > 256) return false;
    q += 17 + codes;
  }
  return true;
}

/* Every Huffman table of a JPEG holds at most 256 codes. Debian's stb_image does not check it and
 * writes past its 257-entry size table on a DHT whose counts add up to more (found by
 * fuzz/fuzz_image). Before the first scan the segments are walked as stb_image walks them (fill
 * bytes, junk between segments, lengths); from the first scan on, where stb_image's idea of the
 * next marker depends on how its entropy decoder stops, every 0xff 0xc4 of the rest of the file
 * is checked as a DHT. */
static bool jpeg_tables_ok(const unsigned char *b, size_t n) {
  size_t p = 0;
  while (p < n && b[p] == 0xff) p++; /* SOI after any number of fill bytes, as stb_image reads it */
  if (p == 0 || p >= n || b[p] != 0xd8) return true; /* not a JPEG */
  p++;
  while (p + 4 <= n) {
    while (p < n && b[p] != 0xff) p++; /* junk between segments */
    while (p < n && b[p] == 0xff) p++; /* fill bytes */
    if (p >= n) return true;
    unsigned m = b[p++];
    if (m == 0xd9) return true;                          /* EOI */
    if ((m >= 0xd0 && m <= 0xd7) || m == 0x01) continue; /* no length */
    if (p + 2 > n) return true;
    size_t len = (size_t)b[p] << 8 | b[p + 1];
    if (m == 0xc4 && !dht_ok(b, n, p)) return false;
    if (len < 2) return true;
    p += len;
    if (m == 0xda) break; /* the first scan: from here on, check every DHT marker */
  }
  for (; p + 1 < n; p++)
    if (b[p] == 0xff && b[p + 1] == 0xc4 && !dht_ok(b, n, p + 2)) return false;
  return true;
}

/* Every PNG chunk lies within the file. stb_image grows its IDAT buffer to a chunk's declared
 * length before reading it, so an 85-byte PNG declaring a 1 GB chunk had it allocate 2 GiB (found
 * by fuzz/fuzz_image); checked here first. Not a PNG: true. */
static bool png_chunks_ok(const unsigned char *b, size_t n) {
  if (n < 8 || memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return true;
  for (size_t p = 8; p < n;) {
    if (n - p < 12) return false; /* length, type, CRC */
    size_t len = (size_t)b[p] << 24 | (size_t)b[p + 1] << 16 | (size_t)b[p + 2] << 8 | b[p + 3];
    if (len > n - p - 12) return false;
    if (!memcmp(b + p + 4, "IEND", 4)) return true;
    p += 12 + len;
  }
  return false; /* no IEND */
}

enum status image_load(const char *path, unsigned char **rgb, int *w, int *h) {
  return image_load_limited(path, IMAGE_MAX_PIXELS, rgb, w, h);
}

enum status image_load_limited(const char *path, uint64_t max_pixels, unsigned char **rgb, int *w, int *h) {
  *rgb = NULL;
  char *buf;
  size_t n;
  enum status s = file_read(path, IMAGE_MAX_FILE_BYTES, &buf, &n); /* a regular file, never a FIFO */
  if (s) return s;
  const unsigned char *b = (const unsigned char *)buf;
  uint32_t pw, ph;
  int c = 0;
  if (!jpeg_tables_ok(b, n)) {
    s = status_set(STATUS_FORMAT, "%s: a damaged JPEG (a Huffman table of more than 256 codes)", path);
  } else if (png_size(b, n, &pw, &ph) && (!pw || !ph)) {
    s = status_set(STATUS_FORMAT, "%s: a %ux%u PNG: an empty image", path, pw, ph);
  } else if (png_size(b, n, &pw, &ph) && (uint64_t)pw * ph > max_pixels) {
    s = status_set(STATUS_FORMAT, "%s: a %ux%u PNG: larger than the %llu pixels allowed", path, pw, ph,
                   (unsigned long long)max_pixels);
  } else if (!png_chunks_ok(b, n)) {
    s = status_set(STATUS_FORMAT, "%s: a damaged or truncated PNG (a chunk runs past the end of the file)", path);
  } else if (n > INT32_MAX || !stbi_info_from_memory(b, (int)n, w, h, &c)) {
    s = status_set(STATUS_FORMAT, "%s: not a readable image (%s)", path, n > INT32_MAX ? "too large" : stbi_failure_reason());
  } else if (*w <= 0 || *h <= 0) {
    s = status_set(STATUS_FORMAT, "%s: empty image (%dx%d)", path, *w, *h);
  } else if ((uint64_t)*w * (uint64_t)*h > max_pixels) {
    s = status_set(STATUS_FORMAT, "%s: %dx%d is larger than the %llu pixels allowed", path, *w, *h,
                   (unsigned long long)max_pixels);
  } else if (!(*rgb = stbi_load_from_memory(b, (int)n, w, h, &c, 3))) { /* grey -> RGB, alpha dropped, 16 -> 8 bits */
    s = status_set(STATUS_FORMAT, "%s: cannot decode (%s)", path, stbi_failure_reason());
  }
  free(buf);
  return s;
}
