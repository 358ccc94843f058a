#include "clip_vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_layer.h"
#include "ops.h"
#include "push.h"
#include "weight_loader.h"

struct clip_vision {
  struct gpu *g;
  struct clip_vision_config cfg;
  bool fp16;
  struct gpu_arena *weights, *acts;
  int acts_n;
  struct gpu_tensor patch_w, class_emb, pos_emb, pre_w, pre_b, post_w, post_b, proj;
  struct clip_layer *layers;
};

bool clip_vision_present(const struct safetensors *st) {
  return safetensors_find(st, "vision_model.embeddings.patch_embedding.weight") != NULL;
}

static enum status vec(struct weight_loader *l, const char *name, int64_t n, struct gpu_tensor *t) {
  return weight_load(l, name, 1, (int64_t[]){n}, 0, 0, WL_PLAIN, DT_F32, t);
}

static enum status load_all(struct clip_vision *m, struct weight_loader *l) {
  const struct clip_vision_config *c = &m->cfg;
  enum dtype mat = m->fp16 ? DT_F16 : DT_F32;
  int64_t D = c->width, M = c->mlp, P = c->patch;
  enum status s;
  /* patch embedding as a matrix over (channel, row, col) patches: the im2col layout */
  if ((s = weight_load(l, "vision_model.embeddings.patch_embedding.weight", 4, (int64_t[]){D, 3, P, P}, 0, 0, WL_CONV, mat,
                       &m->patch_w)) ||
      (s = vec(l, "vision_model.embeddings.class_embedding", D, &m->class_emb)) ||
      (s = weight_load(l, "vision_model.embeddings.position_embedding.weight", 2, (int64_t[]){c->tokens, D}, 0, 0, WL_PLAIN,
                       DT_F32, &m->pos_emb)) ||
      (s = vec(l, "vision_model.pre_layrnorm.weight", D, &m->pre_w)) || (s = vec(l, "vision_model.pre_layrnorm.bias", D, &m->pre_b)) ||
      (s = vec(l, "vision_model.post_layernorm.weight", D, &m->post_w)) ||
      (s = vec(l, "vision_model.post_layernorm.bias", D, &m->post_b)))
    return s;
  for (int i = 0; i < c->layers; i++) {
    char prefix[96];
    snprintf(prefix, sizeof prefix, "vision_model.encoder.layers.%d.", i);
    if ((s = clip_layer_load_hf(l, prefix, D, M, mat, &m->layers[i]))) return s;
  }
  if (c->proj) s = weight_load(l, "visual_projection.weight", 2, (int64_t[]){c->proj, D}, 0, 0, WL_PLAIN, mat, &m->proj);
  return s;
}

void clip_vision_destroy(struct clip_vision *m) {
  if (!m) return;
  gpu_arena_destroy(m->acts);
  gpu_arena_destroy(m->weights);
  free(m->layers);
  free(m);
}

const struct clip_vision_config *clip_vision_config(const struct clip_vision *m) { return &m->cfg; }

enum status clip_vision_load(struct gpu *g, const struct safetensors *st, bool fp16, int heads, int act,
                             struct clip_vision **out) {
  *out = NULL;
  struct clip_vision *m = calloc(1, sizeof *m);
  if (!m) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  m->g = g;
  struct clip_vision_config *c = &m->cfg;
  const struct st_tensor *pw = safetensors_find(st, "vision_model.embeddings.patch_embedding.weight");
  const struct st_tensor *pe = safetensors_find(st, "vision_model.embeddings.position_embedding.weight");
  const struct st_tensor *fc1 = safetensors_find(st, "vision_model.encoder.layers.0.mlp.fc1.weight");
  const struct st_tensor *pj = safetensors_find(st, "visual_projection.weight");
  enum status s = STATUS_OK;
  if (!pw || pw->ndim != 4 || pw->shape[1] != 3 || pw->shape[2] != pw->shape[3] || !pe || pe->ndim != 2 || !fc1 ||
      fc1->ndim != 2) {
    s = status_set(STATUS_FORMAT, "%s: no CLIP vision tower (vision_model.embeddings.patch_embedding.weight [width, 3, "
                   "P, P], position_embedding, encoder layers)", safetensors_path(st));
    goto fail;
  }
  c->width = (int)pw->shape[0];
  c->patch = (int)pw->shape[2];
  c->tokens = (int)pe->shape[0];
  int grid = (int)lround(sqrt((double)(c->tokens - 1)));
  if (grid * grid + 1 != c->tokens) {
    s = status_set(STATUS_FORMAT, "%s: %d position embeddings is not 1 + a square grid", safetensors_path(st), c->tokens);
    goto fail;
  }
  c->image = grid * c->patch;
  c->mlp = (int)fc1->shape[0];
  c->proj = pj && pj->ndim == 2 ? (int)pj->shape[0] : 0;
  for (c->layers = 0;; c->layers++) {
    char key[128];
    snprintf(key, sizeof key, "vision_model.encoder.layers.%d.self_attn.q_proj.weight", c->layers);
    if (!safetensors_find(st, key)) break;
  }
  c->heads = heads > 0 ? heads : c->width / 64 > 0 ? c->width / 64 : 1;
  c->act = act >= 0 ? act : ACT_QUICK_GELU;
  c->eps = 1e-5f;
  if (c->width % c->heads) {
    s = status_set(STATUS_FORMAT, "%s: vision width %d does not split into %d heads", safetensors_path(st), c->width, c->heads);
    goto fail;
  }
  m->fp16 = fp16 && gpu_has_fp16(g) && gpu_texel_format_ok(g, VK_FORMAT_R16G16B16A16_SFLOAT);
  if (!(m->layers = calloc((size_t)(c->layers ? c->layers : 1), sizeof *m->layers))) {
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto fail;
  }
  struct weight_loader l = {.g = g, .st = st};
  if (!(s = load_all(m, &l)) && !(s = gpu_arena_create(g, l.bytes, "CLIP vision weights", &m->weights))) {
    l.arena = m->weights;
    s = load_all(m, &l);
  }
  weight_loader_free(&l);
  if (s) goto fail;
  *out = m;
  return STATUS_OK;
fail:
  clip_vision_destroy(m);
  return s;
}

enum status clip_vision_forward(struct clip_vision *m, const float *pixels, int N, float *pooled, float *embeds,
                                float *last_hidden) {
  const struct clip_vision_config *c = &m->cfg;
  struct gpu *g = m->g;
  int64_t S = c->image, T = c->tokens, D = c->width, G2 = T - 1, Kp = conv_weight_cols(3, c->patch);
  if (N <= 0) return status_set(STATUS_INVALID_ARGUMENT, "no images to embed");
  struct {
    struct gpu_tensor px, x, col, cls_idx, cls, pooled, embeds;
    struct clip_scratch sc;
  } A;
  int64_t shapes[][3] = {{N, 3 * S, S}, {N, T, D}, {G2, Kp, 0}, {N, 0, 0}, {N, D, 0}, {N, D, 0}, {N, c->proj ? c->proj : 1, 0},
                         {N, T, D},     {N, T, D}, {N, T, D}, {N, T, D}, {N, T, D}, {N, T, c->mlp}};
  struct gpu_tensor *list[] = {&A.px, &A.x, &A.col, &A.cls_idx, &A.cls, &A.pooled, &A.embeds,
                               &A.sc.h, &A.sc.q, &A.sc.k, &A.sc.v, &A.sc.a, &A.sc.f};
  int ndims[] = {3, 3, 2, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3};
  VkDeviceSize bytes = 0;
  for (size_t i = 0; i < sizeof list / sizeof *list; i++) {
    int64_t n = 1;
    for (int d = 0; d < ndims[i]; d++) n *= shapes[i][d];
    bytes += gpu_aligned_size(g, (VkDeviceSize)n * 4);
  }
  enum status s = STATUS_OK;
  if (!m->acts || m->acts_n < N) {
    gpu_arena_destroy(m->acts);
    m->acts = NULL;
    if ((s = gpu_arena_create(g, bytes, "CLIP vision activations", &m->acts))) return s;
    m->acts_n = N;
  }
  gpu_arena_reset(m->acts, 0);
  for (size_t i = 0; i < sizeof list / sizeof *list && !s; i++)
    s = gpu_arena_alloc(m->acts, i == 3 ? DT_I32 : DT_F32, ndims[i], shapes[i], list[i]);
  if (s) return s;
  A.px = gpu_tensor_reshape(&A.px, 4, (int64_t[]){N, 3, S, S});
  int32_t *idx = malloc((size_t)N * sizeof *idx);
  if (!idx) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (int n = 0; n < N; n++) idx[n] = (int32_t)(n * T);
  if ((s = gpu_upload(g, &A.px, pixels, (size_t)N * 3 * S * S * 4)) || (s = gpu_upload(g, &A.cls_idx, idx, (size_t)N * 4))) {
    free(idx);
    return s;
  }
  free(idx);
  if ((s = gpu_begin(g))) return s;
  struct gpu_tensor x2 = gpu_tensor_reshape(&A.x, 2, (int64_t[]){N * T, D});
  for (int64_t n = 0; n < N && !s; n++) {
    struct gpu_tensor cls_row = gpu_tensor_rows(&x2, n * T, 1), patches = gpu_tensor_rows(&x2, n * T + 1, G2);
    struct gpu_tensor pos_all = gpu_tensor_rows(&x2, n * T, T), cls_src = gpu_tensor_reshape(&m->class_emb, 2, (int64_t[]){1, D});
    s = gpu_copy(g, &cls_src, &cls_row);                                                       /* class token */
    if (!s) s = op_im2col(g, &A.px, n, c->patch, c->patch, 0, 0, &A.col);                      /* [G^2, 3 P P] */
    if (!s) s = op_linear(g, &A.col, &m->patch_w, NULL, &patches, ACT_NONE);                  /* patch embedding */
    if (!s) s = op_add(g, &pos_all, &m->pos_emb, &pos_all);                                    /* + position */
  }
  if (!s) s = op_layernorm(g, &A.x, &m->pre_w, &m->pre_b, &A.x, c->eps);                       /* pre_layrnorm */
  for (int i = 0; i < c->layers && !s; i++) s = clip_layer_forward(g, &m->layers[i], &A.x, &A.sc, c->heads, false, c->act, c->eps);
  if (!s) s = op_gather_rows(g, &A.cls_idx, &x2, &A.cls);                                      /* class tokens */
  if (!s) s = op_layernorm(g, &A.cls, &m->post_w, &m->post_b, &A.pooled, c->eps);              /* post_layernorm */
  if (!s && c->proj) s = op_linear(g, &A.pooled, &m->proj, NULL, &A.embeds, ACT_NONE);         /* visual_projection */
  enum status s2 = gpu_submit(g);
  if (s || s2) return s ? s : s2;
  if (pooled && (s = gpu_download(g, &A.pooled, pooled, (size_t)N * D * 4))) return s;
  if (embeds && c->proj && (s = gpu_download(g, &A.embeds, embeds, (size_t)N * c->proj * 4))) return s;
  if (last_hidden && (s = gpu_download(g, &A.x, last_hidden, (size_t)N * T * D * 4))) return s;
  return STATUS_OK;
}
