#define _POSIX_C_SOURCE 200809L
#include "zeroshot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "status.h"

const char *const zeroshot_default_templates[7] = {"itap of a {}.", "a bad photo of the {}.", "a origami {}.",
                                                   "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
                                                   "a photo of the small {}."};

static void l2n(float *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += (double)v[i] * v[i];
  double k = s > 0 ? 1.0 / sqrt(s) : 0;
  for (int i = 0; i < n; i++) v[i] = (float)(v[i] * k);
}

/* template with every "{}" replaced by the label */
static char *fill(const char *tpl, const char *label) {
  size_t n = strlen(tpl) + 1, ll = strlen(label);
  for (const char *p = strstr(tpl, "{}"); p; p = strstr(p + 2, "{}")) n += ll;
  char *out = malloc(n), *o = out;
  if (!out) return NULL;
  for (const char *p = tpl; *p;) {
    if (p[0] == '{' && p[1] == '}') {
      memcpy(o, label, ll);
      o += ll;
      p += 2;
    } else {
      *o++ = *p++;
    }
  }
  *o = 0;
  return out;
}

enum status zeroshot_class_embeds(struct textenc *te, const char *const *labels, int C, const char *const *templates,
                                  int T, float *out) {
  struct textenc_info info;
  textenc_info(te, &info);
  int P = info.projection_dim;
  if (!P) return status_set(STATUS_UNSUPPORTED, "the text encoder has no text_projection: cannot classify");
  int n = C * T;
  char **caps = calloc((size_t)n, sizeof *caps);
  float *emb = malloc((size_t)n * P * sizeof *emb);
  enum status s = caps && emb ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (int c = 0; c < C && !s; c++)
    for (int t = 0; t < T && !s; t++)
      if (!(caps[c * T + t] = fill(templates[t], labels[c]))) s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) s = textenc_encode(te, (const char *const *)caps, n, 1, NULL, NULL, emb); /* class-major, one batch */
  for (int c = 0; c < C && !s; c++) {
    float *o = out + (size_t)c * P;
    memset(o, 0, (size_t)P * sizeof *o);
    for (int t = 0; t < T; t++) {
      float *e = emb + ((size_t)c * T + t) * P;
      l2n(e, P);
      for (int i = 0; i < P; i++) o[i] += e[i] / T;
    }
    l2n(o, P);
  }
  for (int i = 0; caps && i < n; i++) free(caps[i]);
  free(caps), free(emb);
  return s;
}

void zeroshot_probs(const float *image_embeds, int N, const float *class_embeds, int C, int P, float logit_scale,
                    float *logits, float *probs) {
  double scale = exp((double)logit_scale);
  for (int n = 0; n < N; n++) {
    const float *im = image_embeds + (size_t)n * P;
    double norm = 0, mx = -INFINITY, sum = 0, lg[4096];
    for (int i = 0; i < P; i++) norm += (double)im[i] * im[i];
    norm = norm > 0 ? 1.0 / sqrt(norm) : 0;
    for (int c = 0; c < C && c < 4096; c++) {
      double d = 0;
      for (int i = 0; i < P; i++) d += (double)im[i] * class_embeds[(size_t)c * P + i];
      lg[c] = scale * d * norm;
      if (lg[c] > mx) mx = lg[c];
      if (logits) logits[(size_t)n * C + c] = (float)lg[c];
    }
    for (int c = 0; c < C && c < 4096; c++) sum += exp(lg[c] - mx);
    for (int c = 0; c < C && c < 4096 && probs; c++) probs[(size_t)n * C + c] = (float)(exp(lg[c] - mx) / sum);
  }
}
