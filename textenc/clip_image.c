/* Built with -ffp-contract=off: the taps are IEEE double operations in Pillow's exact order. */
#define _POSIX_C_SOURCE 200809L
#include "clip_image.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static double cubic(double x) { /* a = -0.5 */
  x = fabs(x);
  if (x < 1.0) return ((1.5 * x - 2.5) * x) * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5;
  return 0.0;
}

int bicubic_taps(int in, int out, int32_t *bounds, int32_t *coeffs) {
  double scale = (double)in / out, fs = scale > 1.0 ? scale : 1.0, support = 2.0 * fs, inv = 1.0 / fs;
  int ksize = 2 * (int)ceil(support) + 1;
  double *w = malloc((size_t)ksize * sizeof *w);
  if (!w) return -1;
  for (int i = 0; i < out; i++) {
    double center = (i + 0.5) * scale;
    int lo = (int)((center - support) + 0.5);
    if (lo < 0) lo = 0;
    int hi = (int)((center + support) + 0.5);
    if (hi > in) hi = in;
    int taps = hi - lo;
    double sum = 0;
    for (int j = 0; j < taps; j++) sum += w[j] = cubic((((double)(lo + j) - center) + 0.5) * inv);
    for (int j = 0; j < ksize; j++) {
      double k = j < taps ? (sum != 0 ? w[j] / sum : w[j]) : 0;
      coeffs[(size_t)i * ksize + j] = j < taps ? (int32_t)(k * 4194304.0 + (k < 0 ? -0.5 : 0.5)) : 0;
    }
    bounds[2 * i] = lo;
    bounds[2 * i + 1] = taps;
  }
  free(w);
  return ksize;
}

/* One axis of the resize: src (rows x in, stride, 3 channels) -> dst, Pillow's 8-bit pass */
static enum status pass(const unsigned char *src, int in, int out, int lines, bool horizontal, int src_w,
                        unsigned char *dst, int dst_w) {
  int ksize = 2 * (int)ceil(2.0 * (in > out ? (double)in / out : 1.0)) + 1;
  int32_t *bounds = malloc((size_t)out * 2 * sizeof *bounds), *coeffs = malloc((size_t)out * ksize * sizeof *coeffs);
  if (!bounds || !coeffs || bicubic_taps(in, out, bounds, coeffs) != ksize) {
    free(bounds), free(coeffs);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  for (int l = 0; l < lines; l++)
    for (int i = 0; i < out; i++) {
      int lo = bounds[2 * i], taps = bounds[2 * i + 1];
      const int32_t *k = coeffs + (size_t)i * ksize;
      for (int c = 0; c < 3; c++) {
        int64_t ss = 1 << 21;
        for (int j = 0; j < taps; j++) {
          size_t at = horizontal ? ((size_t)l * src_w + lo + j) * 3 + c : ((size_t)(lo + j) * src_w + l) * 3 + c;
          ss += (int64_t)src[at] * k[j];
        }
        int64_t v = ss >> 22; /* arithmetic shift: floor */
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        size_t o = horizontal ? ((size_t)l * dst_w + i) * 3 + c : ((size_t)i * dst_w + l) * 3 + c;
        dst[o] = (unsigned char)v;
      }
    }
  free(bounds), free(coeffs);
  return STATUS_OK;
}

static int round_half_even(double v) {
  double f = floor(v), d = v - f;
  if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0)) f += 1;
  return (int)f;
}

enum status clip_preprocess(const unsigned char *rgb, int w, int h, int n, float *pixels, unsigned char *crop) {
  int rw = w <= h ? n : (int)floor((double)n * w / h), rh = w <= h ? (int)floor((double)n * h / w) : n;
  if (rw < n) rw = n;
  if (rh < n) rh = n;
  if ((uint64_t)rw * rh > IMAGE_MAX_PIXELS) return status_set(STATUS_FORMAT, "a %dx%d image is too elongated to resize", w, h);
  unsigned char *t = NULL, *r = NULL;
  enum status s = STATUS_OK;
  const unsigned char *cur = rgb;
  int cw = w;
  if (rw != w) { /* horizontal pass first, as Pillow */
    t = malloc((size_t)rw * h * 3);
    if (!t) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    if ((s = pass(rgb, w, rw, h, true, w, t, rw))) goto done;
    cur = t;
    cw = rw;
  }
  if (rh != h) {
    r = malloc((size_t)rw * rh * 3);
    if (!r) {
      s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      goto done;
    }
    if ((s = pass(cur, h, rh, cw, false, cw, r, cw))) goto done;
    cur = r;
  }
  int left = round_half_even((rw - n) / 2.0), top = round_half_even((rh - n) / 2.0);
  static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  for (int y = 0; y < n; y++)
    for (int x = 0; x < n; x++)
      for (int c = 0; c < 3; c++) {
        unsigned char u = cur[((size_t)(top + y) * cw + left + x) * 3 + c];
        if (crop) crop[((size_t)y * n + x) * 3 + c] = u;
        float v = (float)u / 255.0f;
        pixels[((size_t)c * n + y) * n + x] = (v - mean[c]) / stdv[c];
      }
done:
  free(t), free(r);
  return s;
}
