/* vkdiffusion classify / embed-image: CLIP's image side. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clip_vision.h"
#include "fileio.h"
#include "clip_image.h"
#include "clip_config.h"
#include "safetensors.h"
#include "textenc.h"
#include "zeroshot.h"

struct vopts {
  const char *model, *tokenizer, *config, *out, *labels, *labels_file, *pixels;
  const char **images, **templates;
  int n_images, n_templates, top, device;
  bool json, fp16;
};

static int parse(int argc, char **argv, struct vopts *o, const char *usage) {
  long v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val;
    if (cli_is_help(a)) {
      printf("%s", usage);
      return 0;
    }
    if (!strcmp(a, "--json")) {
      o->json = true;
      continue;
    }
    if (!(val = cli_value(argc, argv, &i))) return 2;
    if (!strcmp(a, "--model")) o->model = val;
    else if (!strcmp(a, "--tokenizer")) o->tokenizer = val;
    else if (!strcmp(a, "--config")) o->config = val;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = val;
    else if (!strcmp(a, "--image")) o->images[o->n_images++] = val;
    else if (!strcmp(a, "--template")) o->templates[o->n_templates++] = val;
    else if (!strcmp(a, "--labels")) o->labels = val;
    else if (!strcmp(a, "--labels-file")) o->labels_file = val;
    else if (!strcmp(a, "--pixels")) o->pixels = val;
    else if (!strcmp(a, "--top") && cli_int(a, val, 1, 100000, &v)) o->top = (int)v;
    else if (!strcmp(a, "--device") && cli_int(a, val, 0, 64, &v)) o->device = (int)v;
    else if (!strcmp(a, "--precision") && (!strcmp(val, "fp16") || !strcmp(val, "fp32"))) o->fp16 = !strcmp(val, "fp16");
    else {
      fprintf(stderr, "vkdiffusion %s: bad option '%s %s' (see --help)\n", argv[0], a, val);
      return 2;
    }
  }
  if (!o->model) {
    fprintf(stderr, "vkdiffusion %s: --model is required (see --help)\n", argv[0]);
    return 2;
  }
  return -1;
}

/* the images, preprocessed for the model: pixels [N, 3, S, S] */
static float *load_pixels(const struct vopts *o, int S, int *N) {
  float *px = NULL;
  if (o->pixels) {
    struct safetensors *st;
    if (safetensors_open(o->pixels, &st)) {
      cli_fail("embed-image", NULL);
      return NULL;
    }
    char want[96];
    int64_t got[4];
    snprintf(want, sizeof want, "[N, 3, %d, %d] (preprocessed pixels, N at most 4096)", S, S);
    if (safetensors_read_input(st, "pixels", 4, (int64_t[]){-1, 3, S, S}, want, got, &px)) cli_fail("embed-image", NULL);
    else if (got[0] > 4096) fprintf(stderr, "vkdiffusion: %s: %lld images; expected %s\n", o->pixels, (long long)got[0], want), free(px), px = NULL;
    else *N = (int)got[0];
    safetensors_close(st);
    return px;
  }
  *N = o->n_images;
  px = malloc((size_t)o->n_images * 3 * S * S * sizeof *px);
  for (int i = 0; px && i < o->n_images; i++) {
    unsigned char *rgb;
    int w, h;
    enum status st = image_load(o->images[i], &rgb, &w, &h);
    if (!st && (st = clip_preprocess(rgb, w, h, S, px + (size_t)i * 3 * S * S, NULL))) status_wrap(st, "%s", o->images[i]);
    if (st) {
      fprintf(stderr, "vkdiffusion: %s\n", status_message());
      free(px);
      free(rgb);
      return NULL;
    }
    free(rgb);
  }
  return px;
}

static int split_labels(const struct vopts *o, char ***labels, int *C) {
  char *text = NULL;
  size_t len;
  if (o->labels_file) {
    if (file_read(o->labels_file, 16u << 20, &text, &len)) {
      fprintf(stderr, "vkdiffusion classify: %s\n", status_message());
      return 1;
    }
  } else if (o->labels) {
    text = strdup(o->labels);
  } else {
    fprintf(stderr, "vkdiffusion classify: give --labels \"a,b,c\" or --labels-file FILE\n");
    return 2;
  }
  const char *sep = o->labels_file ? "\n" : ",";
  *labels = calloc(strlen(text) + 1, sizeof **labels);
  *C = 0;
  for (char *save = NULL, *tok = strtok_r(text, sep, &save); tok; tok = strtok_r(NULL, sep, &save)) {
    while (*tok == ' ' || *tok == '\t') tok++;
    size_t l = strlen(tok);
    while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\r' || tok[l - 1] == '\t')) l--;
    if (l) (*labels)[(*C)++] = strndup(tok, l);
  }
  free(text);
  if (*C == 0) {
    fprintf(stderr, "vkdiffusion classify: no labels\n");
    return 2;
  }
  return 0;
}

static struct clip_vision *open_vision(const struct vopts *o, struct gpu *g, struct safetensors **st) {
  int heads = 0;
  struct clip_vision *v = NULL;
  if (safetensors_open(o->model, st) || clip_vision_heads(o->config, &heads) || clip_vision_load(g, *st, o->fp16, heads, -1, &v))
    cli_fail("classify", NULL);
  return v;
}

int cmd_classify(int argc, char **argv) {
  struct vopts o = {.top = 5, .device = -1, .fp16 = true};
  o.images = calloc((size_t)argc, sizeof *o.images);
  o.templates = calloc((size_t)argc, sizeof *o.templates);
  int rc = parse(argc, argv, &o,
                 "usage: vkdiffusion classify --model CLIP [--tokenizer PATH] [--config FILE] --image A.png [--image B.jpg ...]\n"
                 "                            (--labels \"dog,cat,car\" | --labels-file FILE) [--template \"a photo of a {}.\" ...]\n"
                 "                            [--top K] [--json] [--precision fp16|fp32] [--device N]\n\n"
                 "Zero-shot classification: per image the top-K labels with probabilities (softmax of\n"
                 "exp(logit_scale) x cosine similarity). Several templates are averaged per label (OpenAI's\n"
                 "prompt ensembling); without --template, OpenAI's 7 templates are used. The model is an HF\n"
                 "CLIPModel safetensors (text_model.*, vision_model.*, projections, logit_scale: ln 100 when\n"
                 "absent). --config: a JSON object with text_encoder / vision_model members holding\n"
                 "num_attention_heads.\n");
  struct gpu *g = NULL;
  struct zeroshot *z = NULL;
  char **labels = NULL;
  int C = 0, N = 0;
  float *px = NULL, *probs = NULL;
  if (rc >= 0) goto done;
  rc = 2;
  if (!o.n_images) {
    fprintf(stderr, "vkdiffusion classify: give at least one --image\n");
    goto done;
  }
  if ((rc = split_labels(&o, &labels, &C))) goto done;
  rc = 1;
  if (!(g = cli_gpu("classify", o.device))) goto done;
  struct textenc_options to = textenc_default_options();
  to.model_path = o.model;
  to.tokenizer_path = o.tokenizer;
  to.config_path = o.config;
  to.device = g;
  to.precision = o.fp16 ? TEXTENC_FP16 : TEXTENC_FP32;
  if (zeroshot_create(&to, &z) ||
      zeroshot_set_labels(z, (const char *const *)labels, C, o.n_templates ? o.templates : NULL, o.n_templates)) {
    cli_fail("classify", NULL);
    goto done;
  }
  if (!(px = load_pixels(&o, zeroshot_image_size(z), &N))) goto done;
  if (!(probs = malloc((size_t)N * C * sizeof *probs)) || zeroshot_classify(z, px, N, probs, NULL)) {
    cli_fail("classify", NULL);
    goto done;
  }
  int K = o.top < C ? o.top : C;
  if (o.json) printf("[");
  for (int n = 0; n < N; n++) {
    int *order = malloc((size_t)C * sizeof *order);
    for (int c = 0; c < C; c++) order[c] = c;
    for (int a = 0; a < K; a++) /* partial selection sort: the top K */
      for (int b = a + 1; b < C; b++)
        if (probs[(size_t)n * C + order[b]] > probs[(size_t)n * C + order[a]]) {
          int t = order[a];
          order[a] = order[b];
          order[b] = t;
        }
    const char *name = o.pixels ? "pixels" : o.images[n];
    if (o.json) {
      printf("%s{\"image\": \"%s\", \"top\": [", n ? ", " : "", name);
      for (int k = 0; k < K; k++) printf("%s{\"label\": \"%s\", \"prob\": %.6f}", k ? ", " : "", labels[order[k]], probs[(size_t)n * C + order[k]]);
      printf("]}");
    } else {
      printf("%s\n", name);
      for (int k = 0; k < K; k++) printf("  %6.2f%%  %s\n", 100 * probs[(size_t)n * C + order[k]], labels[order[k]]);
    }
    free(order);
  }
  if (o.json) printf("]\n");
  rc = 0;
done:
  for (int c = 0; labels && c < C; c++) free(labels[c]);
  free(labels), free(px), free(probs), free(o.images), free(o.templates);
  zeroshot_destroy(z);
  return cli_finish_gpu(g, rc);
}

int cmd_embed_image(int argc, char **argv) {
  struct vopts o = {.top = 5, .device = -1, .fp16 = true};
  o.images = calloc((size_t)argc, sizeof *o.images);
  o.templates = calloc((size_t)argc, sizeof *o.templates);
  int rc = parse(argc, argv, &o,
                 "usage: vkdiffusion embed-image --model CLIP (--image FILE ... | --pixels IN.safetensors) -o OUT.safetensors\n"
                 "                               [--config FILE] [--precision fp16|fp32] [--device N]\n\n"
                 "Writes image_embeds [N, P], pooled [N, width] and the preprocessed pixels [N, 3, S, S] it used.\n"
                 "--pixels takes already-preprocessed `pixels` [N, 3, S, S].\n");
  struct gpu *g = NULL;
  struct safetensors *st = NULL;
  struct clip_vision *v = NULL;
  float *px = NULL, *emb = NULL, *pooled = NULL;
  int N = 0;
  if (rc >= 0) goto done;
  rc = 2;
  if (!o.out || (!o.n_images == !o.pixels)) {
    fprintf(stderr, "vkdiffusion embed-image: give -o and either --image or --pixels\n");
    goto done;
  }
  rc = 1;
  if (!(g = cli_gpu("embed-image", o.device)) || !(v = open_vision(&o, g, &st))) goto done;
  const struct clip_vision_config *vc = clip_vision_config(v);
  if (!(px = load_pixels(&o, vc->image, &N))) goto done;
  emb = malloc((size_t)N * (vc->proj ? vc->proj : 1) * sizeof *emb);
  pooled = malloc((size_t)N * vc->width * sizeof *pooled);
  if (!emb || !pooled || clip_vision_forward(v, px, N, pooled, emb, NULL)) {
    cli_fail("embed-image", NULL);
    goto done;
  }
  struct st_writer *w;
  if (!st_writer_create(&w)) {
    if (vc->proj) st_writer_add(w, "image_embeds", ST_F32, 2, (int64_t[]){N, vc->proj}, emb);
    st_writer_add(w, "pooled", ST_F32, 2, (int64_t[]){N, vc->width}, pooled);
    st_writer_add(w, "pixels", ST_F32, 4, (int64_t[]){N, 3, vc->image, vc->image}, px);
    rc = st_writer_finish(w, o.out) ? cli_fail("embed-image", NULL) : 0;
    st_writer_destroy(w);
  }
done:
  free(px), free(emb), free(pooled), free(o.images), free(o.templates);
  clip_vision_destroy(v);
  safetensors_close(st);
  return cli_finish_gpu(g, rc);
}
