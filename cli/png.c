#define _POSIX_C_SOURCE 200809L
#include "png.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "fileio.h"
#include "text.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
/* stb's own code: its unused static prototypes and sign comparisons are not ours to fix */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

static void be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

enum status png_write(const char *path, const unsigned char *rgb, int W, int H, const char *parameters, bool overwrite) {
  int len = 0;
  unsigned char *png = stbi_write_png_to_mem(rgb, W * 3, W, H, 3, &len);
  if (!png) return status_set(STATUS_OUT_OF_MEMORY, "%s: PNG encoding failed", path);
  unsigned char *chunk = NULL;
  size_t clen = 0;
  size_t bad;
  if (parameters && !text_utf8_valid(parameters, strlen(parameters), &bad)) {
    STBIW_FREE(png);
    return status_set(STATUS_INVALID_ARGUMENT, "%s: the parameters text is not valid UTF-8 (byte %zu)", path, bad);
  }
  if (parameters) {
    bool ascii = true;
    for (const char *p = parameters; *p; p++) ascii = ascii && (unsigned char)*p < 0x80;
    size_t tl = strlen(parameters), head = ascii ? 11 : 15; /* "parameters\0" (+ iTXt flags) */
    clen = 12 + head + tl;
    chunk = malloc(clen);
    if (!chunk) {
      STBIW_FREE(png);
      return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    }
    be32(chunk, (uint32_t)(head + tl));
    memcpy(chunk + 4, ascii ? "tEXt" : "iTXt", 4);
    memcpy(chunk + 8, "parameters", 11);
    if (!ascii) memset(chunk + 19, 0, 4); /* no compression, method 0, empty language, empty keyword */
    memcpy(chunk + 8 + head, parameters, tl);
    be32(chunk + 8 + head + tl, (uint32_t)crc32(crc32(0, NULL, 0), chunk + 4, (uInt)(4 + head + tl)));
  }
  /* a temporary created exclusively beside it, then committed under its name (core/fileio.h) */
  struct file_out o;
  enum status s = file_out_begin(&o, path);
  if (!s) {
    const size_t ihdr_end = 8 + 25; /* signature, IHDR (always first) */
    s = file_out_write(&o, png, ihdr_end);
    if (!s && chunk) s = file_out_write(&o, chunk, clen);
    if (!s) s = file_out_write(&o, png + ihdr_end, (size_t)len - ihdr_end);
    if (s) file_out_abort(&o);
    else s = file_out_commit(&o, overwrite);
  }
  free(chunk);
  STBIW_FREE(png);
  return s;
}

/* the text of a tEXt / iTXt chunk's data if its keyword is "parameters" (else NULL) */
static char *parameters_of(const unsigned char *d, uint32_t n, bool itxt) {
  size_t kl = strnlen((const char *)d, n);
  if (kl >= n || strcmp((const char *)d, "parameters")) return NULL;
  size_t at = kl + 1;
  if (itxt) { /* compression flag, method, language\0, translated keyword\0 */
    at += 2;
    while (at < n && d[at]) at++;
    at++;
    while (at < n && d[at]) at++;
    at++;
  }
  return strndup(at <= n ? (const char *)d + at : "", at <= n ? n - at : 0);
}

enum status png_read_parameters(const char *path, char **out) {
  *out = NULL;
  int fd;
  enum status os = file_open_regular(path, &fd, NULL);
  if (os) return os;
  FILE *f = fdopen(fd, "rb");
  if (!f) {
    close(fd);
    return status_set(STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
  }
  unsigned char sig[8], hdr[8];
  enum status s = STATUS_OK;
  if (fread(sig, 1, 8, f) != 8 || memcmp(sig, "\x89PNG\r\n\x1a\n", 8)) {
    fclose(f);
    return status_set(STATUS_FORMAT, "%s: not a PNG file", path);
  }
  while (fread(hdr, 1, 8, f) == 8) {
    uint32_t n = rd32(hdr);
    if (n > (64u << 20)) {
      s = status_set(STATUS_FORMAT, "%s: chunk of %u bytes: damaged PNG", path, n);
      break;
    }
    bool text = !memcmp(hdr + 4, "tEXt", 4), itxt = !memcmp(hdr + 4, "iTXt", 4);
    if (!text && !itxt) {
      if (!memcmp(hdr + 4, "IEND", 4) || fseek(f, (long)n + 4, SEEK_CUR) != 0) break;
      continue;
    }
    unsigned char *d = malloc((size_t)n + 1);
    if (!d || fread(d, 1, n, f) != n || fseek(f, 4, SEEK_CUR) != 0) {
      free(d);
      s = status_set(STATUS_FORMAT, "%s: truncated PNG", path);
      break;
    }
    d[n] = 0;
    if ((*out = parameters_of(d, n, itxt))) {
      free(d);
      break;
    }
    free(d);
  }
  fclose(f);
  return s;
}

enum status png_check_complete(const char *path, char **parameters) {
  *parameters = NULL;
  char *buf = NULL;
  size_t len = 0;
  enum status s = file_read(path, (size_t)1 << 30, &buf, &len);
  if (s) return s;
  const unsigned char *p = (const unsigned char *)buf;
  if (len < 8 || memcmp(p, "\x89PNG\r\n\x1a\n", 8)) {
    free(buf);
    return status_set(STATUS_FORMAT, "%s: not a PNG file", path);
  }
  size_t at = 8;
  bool first = true, end = false;
  while (!s && !end) {
    if (len - at < 12) {
      s = status_set(STATUS_FORMAT, "%s: truncated PNG (no IEND chunk)", path);
      break;
    }
    uint32_t n = rd32(p + at);
    if (n > len - at - 12) {
      s = status_set(STATUS_FORMAT, "%s: truncated PNG (a chunk of %u bytes at byte %zu runs past the end)", path, n, at);
      break;
    }
    const unsigned char *type = p + at + 4, *data = p + at + 8;
    if (rd32(data + n) != (uint32_t)crc32(crc32(0, NULL, 0), type, (uInt)(n + 4))) {
      s = status_set(STATUS_FORMAT, "%s: damaged PNG (bad CRC in the chunk at byte %zu)", path, at);
      break;
    }
    if (first && memcmp(type, "IHDR", 4)) s = status_set(STATUS_FORMAT, "%s: damaged PNG (IHDR is not first)", path);
    first = false;
    if (!*parameters && (!memcmp(type, "tEXt", 4) || !memcmp(type, "iTXt", 4)))
      *parameters = parameters_of(data, n, type[0] == 'i');
    end = !memcmp(type, "IEND", 4);
    at += 12 + (size_t)n;
  }
  if (!s && at != len) s = status_set(STATUS_FORMAT, "%s: %zu bytes after the IEND chunk", path, len - at);
  if (s) free(*parameters), *parameters = NULL;
  free(buf);
  return s;
}
