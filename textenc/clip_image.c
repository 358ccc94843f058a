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

static double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= 3.14159265358979323846; /* Pillow's M_PI */
  return sin(x) / x;
}

static double lanczos(double x) { /* Pillow's: sinc(x) sinc(x / 3) on [-3, 3] */
  if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3.0);
  return 0.0;
}

static double filter_support(enum resample_filter f) { return f == RESAMPLE_LANCZOS ? 3.0 : 2.0; }

static int ksize_of(enum resample_filter f, int in, int64_t out) {
  return 2 * (int)ceil(filter_support(f) * (in > out ? (double)in / (double)out : 1.0)) + 1;
}

int bicubic_taps(int in, int out, int32_t *bounds, int32_t *coeffs) {
  return resample_taps_range(RESAMPLE_BICUBIC, in, out, 0, out, bounds, coeffs);
}

int bicubic_taps_range(int in, int64_t out, int64_t first, int count, int32_t *bounds, int32_t *coeffs) {
  return resample_taps_range(RESAMPLE_BICUBIC, in, out, first, count, bounds, coeffs);
}

int resample_taps_range(enum resample_filter f, int in, int64_t out, int64_t first, int count, int32_t *bounds,
                        int32_t *coeffs) {
  double scale = (double)in / (double)out, fs = scale > 1.0 ? scale : 1.0, support = filter_support(f) * fs, inv = 1.0 / fs;
  int ksize = 2 * (int)ceil(support) + 1;
  double *w = malloc((size_t)ksize * sizeof *w);
  if (!w) return -1;
  for (int i = 0; i < count; i++) {
    double center = ((double)(first + i) + 0.5) * scale;
    int lo = (int)((center - support) + 0.5);
    if (lo < 0) lo = 0;
    int hi = (int)((center + support) + 0.5);
    if (hi > in) hi = in;
    int taps = hi - lo;
    double sum = 0;
    for (int j = 0; j < taps; j++) {
      double at = (((double)(lo + j) - center) + 0.5) * inv;
      sum += w[j] = f == RESAMPLE_LANCZOS ? lanczos(at) : cubic(at);
    }
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

/* One axis of the resize, Pillow's 8-bit pass, for the outputs [first, first + count) of `out`
 * only (each output depends on its own taps alone, so a window is exact): src holds `lines` lines
 * of `in` pixels (3 channels; stride src_w pixels), dst gets `lines` lines of `count` pixels
 * (stride dst_w); src's first line along the axis is input pixel src_first. */
static enum status pass(enum resample_filter f, const unsigned char *src, int in, int64_t out, int64_t first, int count,
                        int lines, bool horizontal, int src_w, int src_first, unsigned char *dst, int dst_w) {
  int ksize = ksize_of(f, in, out);
  int32_t *bounds = malloc((size_t)count * 2 * sizeof *bounds), *coeffs = malloc((size_t)count * ksize * sizeof *coeffs);
  if (!bounds || !coeffs || resample_taps_range(f, in, out, first, count, bounds, coeffs) != ksize) {
    free(bounds), free(coeffs);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  for (int l = 0; l < lines; l++)
    for (int i = 0; i < count; i++) {
      int lo = bounds[2 * i] - src_first, taps = bounds[2 * i + 1];
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

static int64_t round_half_even(double v) {
  double f = floor(v), d = v - f;
  if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0)) f += 1;
  return (int64_t)f;
}

/* Resizes the whole image to rw x rh with Pillow's filter (horizontal pass first, uint8 between the
 * passes) and keeps the n_w x n_h window at (left, top), computing only the pixels the window
 * keeps: the horizontal pass over the rows the kept rows' vertical taps read, for the kept columns;
 * then the vertical pass. Bit for bit the whole resize's crop. */
static enum status resize_window(enum resample_filter f, const unsigned char *rgb, int w, int h, int64_t rw, int64_t rh,
                                 int64_t left, int64_t top, int nw, int nh, unsigned char *out) {
  int row0 = (int)top, rows = nh; /* the source rows the kept output rows read (all rows when there is no vertical pass) */
  if (rh != h) {
    int ks = ksize_of(f, h, rh);
    int32_t *vb = malloc((size_t)nh * 2 * sizeof *vb), *vc = malloc((size_t)nh * ks * sizeof *vc);
    if (!vb || !vc || resample_taps_range(f, h, rh, top, nh, vb, vc) != ks) {
      free(vb), free(vc);
      return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    }
    row0 = vb[0];
    rows = vb[2 * (nh - 1)] + vb[2 * (nh - 1) + 1] - row0;
    free(vb), free(vc);
  }
  unsigned char *band = malloc((size_t)rows * nw * 3);
  enum status s = band ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s && rw != w) { /* horizontal: rows [row0, row0 + rows), output columns [left, left + nw) */
    s = pass(f, rgb + (size_t)row0 * w * 3, w, rw, left, nw, rows, true, w, 0, band, nw);
  } else if (!s) {
    for (int y = 0; y < rows; y++)
      memcpy(band + (size_t)y * nw * 3, rgb + ((size_t)(row0 + y) * w + (size_t)left) * 3, (size_t)nw * 3);
  }
  if (!s && rh != h) { /* vertical: output rows [top, top + nh) from the band, whose first row is row0 */
    s = pass(f, band, h, rh, top, nh, nw, false, nw, row0, out, nw);
  } else if (!s) {
    memcpy(out, band, (size_t)nw * nh * 3);
  }
  free(band);
  return s;
}

enum status image_cover_crop(const unsigned char *rgb, int w, int h, int W, int H, unsigned char *out) {
  if (w <= 0 || h <= 0 || W <= 0 || H <= 0) return status_set(STATUS_INVALID_ARGUMENT, "resize: a %dx%d image to %dx%d", w, h, W, H);
  /* AUTOMATIC1111's "Crop and resize": the side that is relatively shorter becomes the target's */
  double ratio = (double)W / H, src_ratio = (double)w / h;
  int64_t rw = ratio > src_ratio ? W : (int64_t)w * H / h, rh = ratio <= src_ratio ? H : (int64_t)h * W / w;
  if (rw < W) rw = W;
  if (rh < H) rh = H;
  return resize_window(RESAMPLE_LANCZOS, rgb, w, h, rw, rh, rw / 2 - W / 2, rh / 2 - H / 2, W, H, out);
}

/* Pillow's resize of the short side to n followed by torchvision's centre crop. */
enum status clip_preprocess(const unsigned char *rgb, int w, int h, int n, float *pixels, unsigned char *crop) {
  if (w <= 0 || h <= 0 || n <= 0) return status_set(STATUS_INVALID_ARGUMENT, "preprocess: a %dx%d image", w, h);
  int64_t rw = w <= h ? n : (int64_t)floor((double)n * w / h), rh = w <= h ? (int64_t)floor((double)n * h / w) : n;
  if (rw < n) rw = n;
  if (rh < n) rh = n;
  int64_t left = round_half_even((double)(rw - n) / 2.0), top = round_half_even((double)(rh - n) / 2.0);
  unsigned char *out = malloc((size_t)n * n * 3);
  enum status s = out ? resize_window(RESAMPLE_BICUBIC, rgb, w, h, rw, rh, left, top, n, n, out)
                      : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  for (int y = 0; y < n && !s; y++)
    for (int x = 0; x < n; x++)
      for (int c = 0; c < 3; c++) {
        unsigned char u = out[((size_t)y * n + x) * 3 + c];
        if (crop) crop[((size_t)y * n + x) * 3 + c] = u;
        float v = (float)u / 255.0f;
        pixels[((size_t)c * n + y) * n + x] = (v - mean[c]) / stdv[c];
      }
  free(out);
  return s;
}
