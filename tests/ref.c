#include "ref.h"

#include <math.h>
#include <stdlib.h>

#include "push.h"

float ref_act(float x, int act) {
  double v = x;
  switch (act) {
  case ACT_GELU: return (float)(0.5 * v * (1.0 + erf(v / sqrt(2.0))));
  case ACT_QUICK_GELU: return (float)(v / (1.0 + exp(-1.702 * v)));
  case ACT_SILU: return (float)(v / (1.0 + exp(-v)));
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
