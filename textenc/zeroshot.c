#define _POSIX_C_SOURCE 200809L
#include "zeroshot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip_image.h"
#include "safetensors.h"
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

enum status zeroshot_probs(const float *image_embeds, int N, const float *class_embeds, int C, int P, float logit_scale,
                           float *logits, float *probs) {
  double scale = exp((double)logit_scale), *lg = malloc((size_t)(C > 0 ? C : 1) * sizeof *lg);
  if (!lg) return status_set(STATUS_OUT_OF_MEMORY, "zero-shot: out of host memory for %d labels", C);
  for (int n = 0; n < N; n++) {
    const float *im = image_embeds + (size_t)n * P;
    double norm = 0, mx = -INFINITY, sum = 0;
    for (int i = 0; i < P; i++) norm += (double)im[i] * im[i];
    norm = norm > 0 ? 1.0 / sqrt(norm) : 0;
    for (int c = 0; c < C; c++) {
      double d = 0;
      for (int i = 0; i < P; i++) d += (double)im[i] * class_embeds[(size_t)c * P + i];
      lg[c] = scale * d * norm;
      if (lg[c] > mx) mx = lg[c];
      if (logits) logits[(size_t)n * C + c] = (float)lg[c];
    }
    for (int c = 0; c < C; c++) sum += exp(lg[c] - mx);
    for (int c = 0; c < C && probs; c++) probs[(size_t)n * C + c] = (float)(exp(lg[c] - mx) / sum);
  }
  free(lg);
  return STATUS_OK;
}

/* --- the classifier --- */

struct zeroshot {
  struct textenc *te;
  struct textenc_vision *tv;
  float logit_scale;
  int size, proj, C;
  float *classes; /* [C, P] */
};

enum status zeroshot_create(const struct textenc_options *opt, struct zeroshot **out) {
  *out = NULL;
  struct zeroshot *z = calloc(1, sizeof *z);
  if (!z) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  struct textenc_options o = *opt;
  o.literal = 1; /* captions are plain text */
  z->logit_scale = (float)ZEROSHOT_DEFAULT_LOGIT_SCALE;
  struct safetensors *st = NULL;
  enum status s = safetensors_open(o.model_path, &st);
  if (!s) {
    const struct st_tensor *ls = safetensors_find(st, "logit_scale");
    if (ls && ls->numel == 1) s = safetensors_read_f32(st, ls, &z->logit_scale);
    if (!s && !(z->logit_scale >= 0 && z->logit_scale <= 10)) /* exp(10) = 22026: far beyond any CLIP's 100 */
      s = status_set(STATUS_FORMAT, "%s: logit_scale %g is not a temperature (expected ln 100 = 4.6 or so)", o.model_path,
                     (double)z->logit_scale);
    safetensors_close(st);
  }
  if (!s) s = textenc_create(&o, &z->te);
  if (!s) s = textenc_vision_create(&o, &z->tv);
  if (!s) {
    struct textenc_info ti;
    textenc_info(z->te, &ti);
    int width;
    textenc_vision_info(z->tv, &z->size, &width, &z->proj);
    if (!z->proj || ti.projection_dim != z->proj)
      s = status_set(STATUS_FORMAT, "%s: text projection %d and visual projection %d differ: no shared embedding space",
                     o.model_path, ti.projection_dim, z->proj);
  }
  if (s) {
    zeroshot_destroy(z);
    return s;
  }
  *out = z;
  return STATUS_OK;
}

void zeroshot_destroy(struct zeroshot *z) {
  if (!z) return;
  textenc_destroy(z->te);
  textenc_vision_destroy(z->tv);
  free(z->classes);
  free(z);
}

int zeroshot_image_size(const struct zeroshot *z) { return z->size; }
int zeroshot_dim(const struct zeroshot *z) { return z->proj; }
float zeroshot_logit_scale(const struct zeroshot *z) { return z->logit_scale; }
int zeroshot_labels(const struct zeroshot *z) { return z->C; }

enum status zeroshot_set_labels(struct zeroshot *z, const char *const *labels, int C, const char *const *templates,
                                int T) {
  if (C < 1) return status_set(STATUS_INVALID_ARGUMENT, "zero-shot: no labels");
  if (!templates) templates = zeroshot_default_templates, T = 7;
  float *cls = malloc((size_t)C * z->proj * sizeof *cls);
  if (!cls) return status_set(STATUS_OUT_OF_MEMORY, "zero-shot: out of host memory for %d labels", C);
  enum status s = zeroshot_class_embeds(z->te, labels, C, templates, T, cls);
  if (s) {
    free(cls);
    return s;
  }
  free(z->classes);
  z->classes = cls;
  z->C = C;
  return STATUS_OK;
}

enum status zeroshot_embed_images(struct zeroshot *z, const float *pixels, int N, float *embeds) {
  return textenc_vision_embed(z->tv, pixels, N, embeds, NULL);
}

enum status zeroshot_classify(struct zeroshot *z, const float *pixels, int N, float *probs, float *logits) {
  if (!z->classes) return status_set(STATUS_INVALID_ARGUMENT, "zero-shot: no labels set");
  float *emb = malloc((size_t)N * z->proj * sizeof *emb);
  if (!emb) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = zeroshot_embed_images(z, pixels, N, emb);
  if (!s) s = zeroshot_probs(emb, N, z->classes, z->C, z->proj, z->logit_scale, logits, probs);
  free(emb);
  return s;
}

enum status zeroshot_score(struct zeroshot *z, const unsigned char *rgb, int w, int h, const char *text, double *score) {
  size_t np = 3 * (size_t)z->size * z->size;
  float *px = malloc(np * sizeof *px), *ie = malloc((size_t)z->proj * sizeof *ie), *te = malloc((size_t)z->proj * sizeof *te);
  enum status s = px && ie && te ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) s = clip_preprocess(rgb, w, h, z->size, px, NULL);
  if (!s) s = zeroshot_embed_images(z, px, 1, ie);
  if (!s) s = textenc_encode(z->te, &text, 1, 1, NULL, NULL, te);
  if (!s) {
    double d = 0, a = 0, b = 0;
    for (int i = 0; i < z->proj; i++) d += (double)ie[i] * te[i], a += (double)ie[i] * ie[i], b += (double)te[i] * te[i];
    *score = a > 0 && b > 0 ? 100.0 * d / sqrt(a * b) : 0;
  }
  free(px), free(ie), free(te);
  return s;
}
