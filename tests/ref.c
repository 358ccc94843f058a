#include "ref.h"

#include <math.h>
#include <stdlib.h>

#include "ops.h"
#include "push.h"

float ref_act(float x, int act) {
  double v = x;
  switch (act) {
  case ACT_GELU: return (float)(0.5 * v * (1.0 + erf(v / sqrt(2.0))));
  case ACT_QUICK_GELU: return (float)(v / (1.0 + exp(-1.702 * v)));
  case ACT_SILU: return (float)(v / (1.0 + exp(-v)));
  case ACT_RELU: return x > 0 ? x : 0.0f;
  default: return x;
  }
}

void ref_linear(const float *x, const float *w, const float *b, float *y, int64_t M, int64_t N, int64_t K, int act) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < N; n++) {
      double s = b ? b[n] : 0.0;
      for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
      y[m * N + n] = ref_act((float)s, act);
    }
}

void ref_layernorm(const float *x, const float *g, const float *b, float *y, int64_t rows, int64_t cols, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    double mean = 0, var = 0;
    for (int64_t c = 0; c < cols; c++) mean += xr[c];
    mean /= cols;
    for (int64_t c = 0; c < cols; c++) var += (xr[c] - mean) * (xr[c] - mean);
    var /= cols;
    double inv = 1.0 / sqrt(var + eps);
    for (int64_t c = 0; c < cols; c++) y[r * cols + c] = (float)((xr[c] - mean) * inv * g[c] + b[c]);
  }
}

void ref_embedding(const int32_t *ids, const float *tok, const float *pos, float *y, int64_t N, int64_t T, int64_t D) {
  for (int64_t i = 0; i < N * T; i++)
    for (int64_t c = 0; c < D; c++) y[i * D + c] = tok[(int64_t)ids[i] * D + c] + pos[(i % T) * D + c];
}

void ref_attention(const float *q, const float *k, const float *v, float *o, int64_t N, int64_t Tq, int64_t Tk,
                   int n_head, int64_t D, bool causal, float scale) {
  int64_t W = n_head * D;
  double *s = malloc((size_t)Tk * sizeof *s);
  for (int64_t n = 0; n < N; n++)
    for (int h = 0; h < n_head; h++)
      for (int64_t i = 0; i < Tq; i++) {
        const float *qi = q + (n * Tq + i) * W + h * D;
        int64_t end = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < end; j++) {
          const float *kj = k + (n * Tk + j) * W + h * D;
          double d = 0;
          for (int64_t c = 0; c < D; c++) d += (double)qi[c] * kj[c];
          s[j] = d * scale;
          if (s[j] > mx) mx = s[j];
        }
        for (int64_t j = 0; j < end; j++) sum += (s[j] = exp(s[j] - mx));
        for (int64_t c = 0; c < D; c++) {
          double acc = 0;
          for (int64_t j = 0; j < end; j++) acc += s[j] * v[(n * Tk + j) * W + h * D + c];
          o[(n * Tq + i) * W + h * D + c] = (float)(acc / sum);
        }
      }
  free(s);
}

void ref_add(const float *a, const float *b, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void ref_activation(const float *x, float *y, int64_t n, int act) {
  for (int64_t i = 0; i < n; i++) y[i] = ref_act(x[i], act);
}

void ref_gather_rows(const int32_t *index, const float *x, float *y, int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t c = 0; c < cols; c++) y[i * cols + c] = x[(int64_t)index[i] * cols + c];
}

void ref_conv2d(const float *x, const float *w, const float *b, float *y, int64_t N, int64_t C, int64_t H, int64_t W,
                int64_t Co, int k, int stride, int pad) {
  int64_t Ho = conv_out_size(H, k, stride, pad), Wo = conv_out_size(W, k, stride, pad);
  if (pad == CONV_PAD_BOTTOM_RIGHT) pad = 0; /* rows H and columns W are zeros */
  for (int64_t n = 0; n < N; n++)
    for (int64_t co = 0; co < Co; co++)
      for (int64_t oy = 0; oy < Ho; oy++)
        for (int64_t ox = 0; ox < Wo; ox++) {
          double s = b ? b[co] : 0;
          for (int64_t c = 0; c < C; c++)
            for (int ky = 0; ky < k; ky++)
              for (int kx = 0; kx < k; kx++) {
                int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || ix < 0 || iy >= H || ix >= W) continue;
                s += (double)w[((co * C + c) * k + ky) * k + kx] * x[((n * C + c) * H + iy) * W + ix];
              }
          y[((n * Co + co) * Ho + oy) * Wo + ox] = (float)s;
        }
}

void ref_group_norm(const float *x, const float *g, const float *b, float *y, int64_t N, int64_t C, int64_t P,
                    int groups, float eps, bool silu) {
  int64_t cpg = C / groups;
  for (int64_t n = 0; n < N; n++)
    for (int gr = 0; gr < groups; gr++) {
      const float *xs = x + (n * C + gr * cpg) * P;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < cpg * P; i++) mean += xs[i];
      mean /= cpg * P;
      for (int64_t i = 0; i < cpg * P; i++) var += (xs[i] - mean) * (xs[i] - mean);
      var /= cpg * P;
      for (int64_t i = 0; i < cpg * P; i++) {
        int64_t c = gr * cpg + i / P;
        double v = (xs[i] - mean) / sqrt(var + eps) * g[c] + b[c];
        if (silu) v = v / (1 + exp(-v));
        y[(n * C + gr * cpg) * P + i] = (float)v;
      }
    }
}

void ref_upsample2x(const float *x, float *y, int64_t planes, int64_t H, int64_t W) {
  for (int64_t q = 0; q < planes; q++)
    for (int64_t oy = 0; oy < 2 * H; oy++)
      for (int64_t ox = 0; ox < 2 * W; ox++) y[(q * 2 * H + oy) * 2 * W + ox] = x[(q * H + oy / 2) * W + ox / 2];
}

void ref_timestep_embedding(const float *t, float *emb, int64_t N, int64_t dim, double max_period) {
  int64_t half = dim / 2;
  for (int64_t n = 0; n < N; n++)
    for (int64_t j = 0; j < dim; j++) {
      int64_t k = j < half ? j : j - half;
      double a = t[n] * exp(-log(max_period) * (double)k / (double)half);
      emb[n * dim + j] = j >= 2 * half ? 0.0f : (float)(j < half ? cos(a) : sin(a));
    }
}

void ref_geglu(const float *x, float *y, int64_t rows, int64_t F) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < F; c++) y[r * F + c] = (float)((double)x[r * 2 * F + c] * ref_act(x[r * 2 * F + F + c], ACT_GELU));
}
