/* The CLIP vision tower against ../shared/ref/goldens/vision_tiny and vision_vitb32 (checkpoints
 * from the weight rule, seed 1). Tolerances (../shared/ref/README.md): fp32 path 1e-4 x the
 * largest output value (pooled/embeds ~4e-4, last_hidden_state scaled likewise); fp16 weights
 * 1e-2 x the largest value. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "clip_vision.h"
#include "clip_image.h"
#include "textenc.h"
#include "zeroshot.h"
#include "test.h"

static double max_abs(const float *v, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

static void golden(struct gpu *gpu, const char *label, const char *ckpt, const char *gold_name, bool fp16, int heads) {
  char gpath[1024];
  test_shared_path(gpath, sizeof gpath, gold_name);
  struct safetensors *gold = NULL, *st = NULL;
  CHECK_OK(safetensors_open(gpath, &gold));
  CHECK_OK(safetensors_open(ckpt, &st));
  struct clip_vision *m = NULL;
  if (st) CHECK_OK(clip_vision_load(gpu, st, fp16, heads, -1, &m));
  if (m && gold) {
    const struct clip_vision_config *c = clip_vision_config(m);
    size_t np, ne, nl, npx;
    float *px = test_tensor(gold, "pixels", &npx), *rp = test_tensor(gold, "pooled", &np);
    float *re = test_tensor(gold, "image_embeds", &ne), *rl = test_tensor(gold, "last_hidden_state", &nl);
    int N = (int)(npx / (3 * (size_t)c->image * c->image));
    float *p = malloc(np * 4), *e = malloc(ne * 4), *l = malloc(nl * 4);
    CHECK_OK(clip_vision_forward(m, px, N, p, e, l));
    double k = fp16 ? 1e-2 : 1e-4;
    char what[128];
    snprintf(what, sizeof what, "%s pooled", label);
    CHECK_CLOSE(what, p, rp, np, k * max_abs(rp, np), 0);
    snprintf(what, sizeof what, "%s image_embeds", label);
    CHECK_CLOSE(what, e, re, ne, k * max_abs(re, ne), 0);
    snprintf(what, sizeof what, "%s last_hidden_state", label);
    CHECK_CLOSE(what, l, rl, nl, k * max_abs(rl, nl), 0);
    free(px), free(rp), free(re), free(rl), free(p), free(e), free(l);
  }
  clip_vision_destroy(m);
  safetensors_close(st);
  safetensors_close(gold);
}

/* OpenAI's preprocessing against ../shared/ref/goldens/preprocess.safetensors: the taps, the uint8
 * crop bit for bit, the pixels within 1e-6 */
/* Pillow's whole two-pass resize (every output pixel) then the centre crop: the plain reference
 * the crop-only preprocessing must equal byte for byte */
static void full_resize_crop(const unsigned char *src, int w, int h, int n, unsigned char *crop) {
  int rw = w <= h ? n : (int)floor((double)n * w / h), rh = w <= h ? (int)floor((double)n * h / w) : n;
  if (rw < n) rw = n;
  if (rh < n) rh = n;
  unsigned char *a = malloc((size_t)rw * h * 3), *b = malloc((size_t)rw * rh * 3);
  for (int pass = 0; pass < 2; pass++) { /* horizontal (w -> rw over h rows), then vertical (h -> rh over rw columns) */
    int in = pass ? h : w, out = pass ? rh : rw, lines = pass ? rw : h;
    const unsigned char *s = pass ? a : src;
    unsigned char *d = pass ? b : a;
    if (in == out) {
      memcpy(d, s, (size_t)rw * (pass ? h : h) * 3);
      continue;
    }
    int ks = 2 * (int)ceil(2.0 * (in > out ? (double)in / out : 1.0)) + 1;
    int32_t *bd = malloc((size_t)out * 2 * sizeof *bd), *cf = malloc((size_t)out * ks * sizeof *cf);
    bicubic_taps(in, out, bd, cf);
    for (int l = 0; l < lines; l++)
      for (int i = 0; i < out; i++)
        for (int c = 0; c < 3; c++) {
          int64_t ss = 1 << 21;
          for (int j = 0; j < bd[2 * i + 1]; j++) {
            int at = bd[2 * i] + j;
            ss += (int64_t)s[pass ? ((size_t)at * rw + l) * 3 + c : ((size_t)l * w + at) * 3 + c] * cf[(size_t)i * ks + j];
          }
          int64_t v = ss >> 22;
          d[pass ? ((size_t)i * rw + l) * 3 + c : ((size_t)l * rw + i) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    free(bd), free(cf);
  }
  int left = (int)rint((rw - n) / 2.0), top = (int)rint((rh - n) / 2.0); /* Python round(): half to even */
  for (int y = 0; y < n; y++) memcpy(crop + (size_t)y * n * 3, b + ((size_t)(top + y) * rw + left) * 3, (size_t)n * 3);
  free(a), free(b);
}

/* Elongated images: the crop computes only what it keeps, bit for bit the whole resize's crop, and
 * an extreme aspect ratio costs no more than a square image; a PNG too large is named with its size. */
static void test_elongated(void) {
  int sizes[][2] = {{2001, 7}, {9, 1500}, {640, 224}};
  for (int k = 0; k < 3; k++) {
    int w = sizes[k][0], h = sizes[k][1], n = 224;
    unsigned char *img = malloc((size_t)w * h * 3), crop[224 * 224 * 3], ref[224 * 224 * 3];
    for (size_t i = 0; i < (size_t)w * h * 3; i++) img[i] = (unsigned char)((i * 2654435761u) >> 13);
    float *px = malloc(3 * 224 * 224 * sizeof *px);
    CHECK_OK(clip_preprocess(img, w, h, n, px, crop));
    full_resize_crop(img, w, h, n, ref);
    size_t diff = 0;
    for (size_t i = 0; i < sizeof crop; i++) diff += crop[i] != ref[i];
    CHECK_MSG(diff == 0, "preprocess %dx%d: %zu bytes differ from the whole resize's crop", w, h, diff);
    printf("  preprocess %dx%d: crop-only resize equals the whole resize's crop (%zu bytes differ)\n", w, h, diff);
    free(img), free(px);
  }
  int w = 1000000, h = 2;
  unsigned char *img = malloc((size_t)w * h * 3);
  memset(img, 77, (size_t)w * h * 3);
  float *px = malloc(3 * 224 * 224 * sizeof *px);
  double t0 = test_now();
  CHECK_OK(clip_preprocess(img, w, h, 224, px, NULL));
  double dt = test_now() - t0;
  CHECK_MSG(dt < 1.0, "a %dx%d image took %.2f s to preprocess", w, h, dt);
  printf("  preprocess %dx%d (resized to %lldx224 before the crop): %.1f ms\n", w, h, (long long)224 * w / h, dt * 1e3);
  free(img), free(px);
  /* a 65535 x 65535 PNG (its header is enough): too large, and said so with its size */
  char path[256];
  snprintf(path, sizeof path, "/tmp/vkd_test_vision_huge_%ld.png", (long)getpid());
  FILE *f = fopen(path, "wb");
  static const unsigned char hdr[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                      0, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 8, 2, 0, 0, 0, 0, 0, 0, 0};
  if (f) fwrite(hdr, 1, sizeof hdr, f), fclose(f);
  unsigned char *rgb = NULL;
  int iw, ih;
  CHECK(image_load(path, &rgb, &iw, &ih) == STATUS_FORMAT && strstr(status_message(), "a 65535x65535 PNG: larger than"));
  printf("  %s\n", status_message());
  /* a 4x4 PNG whose second IDAT declares about 1.2 GB: refused before stb_image grows a buffer for it */
  static const unsigned char big_chunk[] = {
      0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 0, 4, 0, 0, 0, 4, 8, 0, 0, 0, 0,
      0x8c, 0x9a, 0xc1, 0xa2, 0x49, 0x44, 0x41, 0x54, 'I', 'D', 'A', 'T', 0x78, 0x9c, 0x63, 0x60, 0, 0, 0, 0, 0, 0};
  f = fopen(path, "wb");
  if (f) fwrite(big_chunk, 1, sizeof big_chunk, f), fclose(f);
  CHECK(image_load(path, &rgb, &iw, &ih) == STATUS_FORMAT && strstr(status_message(), "runs past the end"));
  printf("  %s\n", status_message());
  free(rgb);
  unlink(path);
}

static void test_preprocess(void) {
  char gpath[1024];
  test_shared_path(gpath, sizeof gpath, "ref/goldens/preprocess.safetensors");
  struct safetensors *g = NULL;
  CHECK_OK(safetensors_open(gpath, &g));
  if (!g) return;
  for (int k = 0; k < 4; k++) {
    char name[64];
    snprintf(name, sizeof name, "image_%d", k);
    const struct st_tensor *it = safetensors_find(g, name);
    int H = (int)it->shape[0], W = (int)it->shape[1], n = 224;
    const unsigned char *img = safetensors_data(g, it);
    float *px = malloc(3 * 224 * 224 * 4);
    unsigned char *crop = malloc(224 * 224 * 3);
    CHECK_OK(clip_preprocess(img, W, H, n, px, crop));
    snprintf(name, sizeof name, "crop_%d", k);
    const unsigned char *ref = safetensors_data(g, safetensors_find(g, name));
    int diff = 0;
    for (int i = 0; i < 224 * 224 * 3; i++) diff += crop[i] != ref[i];
    CHECK_MSG(diff == 0, "image %d (%dx%d): %d crop values differ from Pillow", k, W, H, diff);
    snprintf(name, sizeof name, "pixels_%d", k);
    float *rp = test_tensor(g, name, NULL);
    char what[96];
    snprintf(what, sizeof what, "preprocess %dx%d -> 224 pixels (crop differs in %d)", W, H, diff);
    CHECK_CLOSE(what, px, rp, 3 * 224 * 224, 1e-6, 0);
    /* the taps of each resized axis */
    for (int ax = 0; ax < 2; ax++) {
      char bn[32], cn[32];
      snprintf(bn, sizeof bn, "bounds_%c_%d", ax ? 'y' : 'x', k);
      snprintf(cn, sizeof cn, "coeffs_%c_%d", ax ? 'y' : 'x', k);
      const struct st_tensor *bt = safetensors_find(g, bn), *ct = safetensors_find(g, cn);
      if (!bt || !ct) continue;
      int out = (int)bt->shape[0], ks = (int)ct->shape[1], in = ax ? H : W;
      int32_t *b = malloc((size_t)out * 2 * 4), *c = malloc((size_t)out * ks * 4);
      CHECK(bicubic_taps(in, out, b, c) == ks);
      CHECK_MSG(!memcmp(b, safetensors_data(g, bt), (size_t)out * 8) && !memcmp(c, safetensors_data(g, ct), (size_t)out * ks * 4),
                "%s/%s differ", bn, cn);
      free(b), free(c);
    }
    free(px), free(crop), free(rp);
  }
  safetensors_close(g);
}

/* zero-shot on the tiny CLIPModel against zeroshot_tiny: probabilities within 1e-3 (fp32) */
static void test_zeroshot(struct gpu *gpu, const char *dir) {
  char ckpt[512], cfg[512], vocab[1024], gpath[1024];
  snprintf(ckpt, sizeof ckpt, "%s/clip_tiny_full.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  test_shared_path(vocab, sizeof vocab, "clip");
  test_shared_path(gpath, sizeof gpath, "ref/goldens/zeroshot_tiny.safetensors");
  CHECK(write_vision_checkpoint(ckpt, vision_spec("tiny"), clip_spec("tiny"), ST_F32, 1) == 0);
  FILE *f = fopen(cfg, "w");
  fputs("{\"text_encoder\": {\"num_attention_heads\": 4}, \"vision_model\": {\"num_attention_heads\": 4}}", f);
  fclose(f);
  struct safetensors *g = NULL, *st = NULL;
  CHECK_OK(safetensors_open(gpath, &g));
  CHECK_OK(safetensors_open(ckpt, &st));
  struct textenc_options o = textenc_default_options();
  o.model_path = ckpt;
  o.tokenizer_path = vocab;
  o.config_path = cfg;
  o.device = gpu;
  o.precision = TEXTENC_FP32;
  struct textenc *te = NULL;
  struct clip_vision *vm = NULL;
  CHECK_OK(textenc_create(&o, &te));
  if (st) CHECK_OK(clip_vision_load(gpu, st, false, 4, -1, &vm));
  if (te && vm && g) {
    size_t n;
    float *px = test_tensor(g, "pixels", &n), emb[3 * 64], cls[5 * 64], probs[15], logits[15];
    CHECK_OK(clip_vision_forward(vm, px, 3, NULL, emb, NULL));
    float *ref = test_tensor(g, "image_embeds", NULL);
    CHECK_CLOSE("zero-shot image_embeds", emb, ref, 3 * 64, 4e-4, 0);
    free(ref);
    const char *labels[] = {"dog", "cat", "car", "tree", "boat"}, *one[] = {"a photo of a {}."};
    const char *three[] = {"itap of a {}.", "a bad photo of the {}.", "a origami {}."};
    float ls = (float)log(100.0);
    CHECK_OK(zeroshot_class_embeds(te, labels, 5, one, 1, cls));
    zeroshot_probs(emb, 3, cls, 5, 64, ls, logits, probs);
    ref = test_tensor(g, "logits", NULL);
    CHECK_CLOSE("zero-shot logits", logits, ref, 15, 1e-3, 0);
    free(ref);
    ref = test_tensor(g, "probs", NULL);
    CHECK_CLOSE("zero-shot probs", probs, ref, 15, 1e-3, 0);
    free(ref);
    CHECK_OK(zeroshot_class_embeds(te, labels, 5, three, 3, cls));
    zeroshot_probs(emb, 3, cls, 5, 64, ls, NULL, probs);
    ref = test_tensor(g, "ens_probs", NULL);
    CHECK_CLOSE("zero-shot ensemble probs (3 templates)", probs, ref, 15, 1e-3, 0);
    free(ref);
    /* the same through the one classifier every command uses (logit_scale from the checkpoint) */
    struct zeroshot *z = NULL;
    CHECK_OK(zeroshot_create(&o, &z));
    if (z) {
      CHECK(zeroshot_image_size(z) == 64 && zeroshot_dim(z) == 64 && fabsf(zeroshot_logit_scale(z) - ls) < 1e-6f);
      CHECK_OK(zeroshot_set_labels(z, labels, 5, three, 3));
      float zp[15];
      CHECK_OK(zeroshot_classify(z, px, 3, zp, NULL));
      ref = test_tensor(g, "ens_probs", NULL);
      CHECK_CLOSE("zeroshot_classify ensemble probs", zp, ref, 15, 1e-3, 0);
      free(ref);
    }
    zeroshot_destroy(z);
    free(px);
  }
  clip_vision_destroy(vm);
  textenc_destroy(te);
  safetensors_close(st);
  safetensors_close(g);
  unlink(ckpt);
  unlink(cfg);
}

/* zeroshot_probs has no cap on the number of labels: 5000 classes against a plain double reference */
static void test_many_labels(void) {
  enum { NI = 2, C = 5000, P = 16 };
  float *img = malloc(NI * P * sizeof *img), *cls = malloc((size_t)C * P * sizeof *cls), *probs = malloc(NI * C * sizeof *probs);
  double *ref = malloc(NI * C * sizeof *ref);
  test_random(img, NI * P, 11);
  test_random(cls, (size_t)C * P, 12);
  for (int i = 0; i < NI * C; i++) probs[i] = NAN;
  CHECK_OK(zeroshot_probs(img, NI, cls, C, P, 2.0f, NULL, probs));
  double worst = 0;
  for (int n = 0; n < NI; n++) {
    double norm = 0, mx = -INFINITY, sum = 0;
    for (int i = 0; i < P; i++) norm += (double)img[n * P + i] * img[n * P + i];
    for (int c = 0; c < C; c++) {
      double d = 0;
      for (int i = 0; i < P; i++) d += (double)img[n * P + i] * cls[(size_t)c * P + i];
      ref[n * C + c] = exp(2.0) * d / sqrt(norm);
      if (ref[n * C + c] > mx) mx = ref[n * C + c];
    }
    for (int c = 0; c < C; c++) sum += exp(ref[n * C + c] - mx);
    for (int c = 0; c < C; c++) {
      double e = fabs(probs[n * C + c] - exp(ref[n * C + c] - mx) / sum);
      if (!(e <= worst)) worst = e; /* NaN: worst becomes NaN */
    }
  }
  CHECK_MSG(worst < 1e-7, "zero-shot with %d labels: max error %g (every probability written)", C, worst);
  free(img), free(cls), free(probs), free(ref);
}

int main(void) {
  test_preprocess();
  test_elongated();
  test_many_labels();
  char probe[1024], dir[256], ckpt[512];
  test_shared_path(probe, sizeof probe, "ref/goldens/vision_tiny.safetensors");
  if (access(probe, R_OK)) return test_skip("cannot read ../shared/ref/goldens/vision_tiny.safetensors");
  int rc = 0;
  struct gpu *gpu = test_gpu(&rc);
  if (!gpu) return rc;
  snprintf(dir, sizeof dir, "/tmp/vkd_test_vision_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny.safetensors", dir);
  CHECK(write_vision_checkpoint(ckpt, vision_spec("tiny"), NULL, ST_F32, 1) == 0);
  golden(gpu, "tiny fp32", ckpt, "ref/goldens/vision_tiny.safetensors", false, 4); /* tiny: 4 heads of 16 */
  golden(gpu, "tiny fp16", ckpt, "ref/goldens/vision_tiny.safetensors", true, 4);
  unlink(ckpt);
  snprintf(ckpt, sizeof ckpt, "%s/vitb32.safetensors", dir);
  CHECK(write_vision_checkpoint(ckpt, vision_spec("vitb32"), NULL, ST_F32, 1) == 0);
  golden(gpu, "vitb32 fp32", ckpt, "ref/goldens/vision_vitb32.safetensors", false, 0); /* 12 heads of 64 */
  golden(gpu, "vitb32 fp16", ckpt, "ref/goldens/vision_vitb32.safetensors", true, 0);
  unlink(ckpt);
  test_zeroshot(gpu, dir);
  rmdir(dir);
  test_gpu_done(gpu);
  return test_result("test_vision");
}
