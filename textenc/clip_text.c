#include "clip_text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "clip_layer.h"
#include "lora.h"
#include "weight_loader.h"

struct clip_text {
  struct gpu *g;
  struct clip_text_config cfg;
  bool fp16;
  struct gpu_arena *weights, *acts;
  int acts_seq; /* sequences the activation arena was sized for */
  struct gpu_tensor tok, pos, final_w, final_b, proj;
  struct clip_layer *layers;
};

/* --- names: the one rename map between checkpoint keys and the model's fields --- */

enum slot { S_LN1_W, S_LN1_B, S_Q_W, S_Q_B, S_K_W, S_K_B, S_V_W, S_V_B, S_O_W, S_O_B,
            S_LN2_W, S_LN2_B, S_FC1_W, S_FC1_B, S_FC2_W, S_FC2_B, S_LAYER_SLOTS };

const char *const clip_layer_hf_names[16] = {
    "layer_norm1.weight", "layer_norm1.bias", "self_attn.q_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.out_proj.weight", "self_attn.out_proj.bias", "layer_norm2.weight", "layer_norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};

void clip_layer_fields(struct clip_layer *L, struct gpu_tensor *f[16]) {
  struct gpu_tensor *all[16] = {&L->ln1_w, &L->ln1_b, &L->q_w,   &L->q_b,   &L->k_w,   &L->k_b,   &L->v_w,   &L->v_b,
                                &L->o_w,   &L->o_b,   &L->ln2_w, &L->ln2_b, &L->fc1_w, &L->fc1_b, &L->fc2_w, &L->fc2_b};
  memcpy(f, all, sizeof all);
}
/* OpenCLIP: q, k, v are row blocks 0, 1, 2 of in_proj */
static const char *const oc_layer[S_LAYER_SLOTS] = {
    "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.in_proj_weight",
    "attn.in_proj_bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
    "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};

static void layer_key(const struct clip_text_config *c, int layer, enum slot s, char *buf, size_t n) {
  if (c->layout == CLIP_LAYOUT_HF)
    snprintf(buf, n, "%stext_model.encoder.layers.%d.%s", c->prefix, layer, clip_layer_hf_names[s]);
  else
    snprintf(buf, n, "%stransformer.resblocks.%d.%s", c->prefix, layer, oc_layer[s]);
}

enum top { T_TOK, T_POS, T_FINAL_W, T_FINAL_B, T_PROJ };
static void top_key(const struct clip_text_config *c, enum top t, char *buf, size_t n) {
  static const char *const hf[] = {"text_model.embeddings.token_embedding.weight",
                                   "text_model.embeddings.position_embedding.weight",
                                   "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias",
                                   "text_projection.weight"};
  static const char *const oc[] = {"token_embedding.weight", "positional_embedding", "ln_final.weight",
                                   "ln_final.bias", "text_projection"};
  snprintf(buf, n, "%s%s", c->prefix, c->layout == CLIP_LAYOUT_HF ? hf[t] : oc[t]);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

static const struct st_tensor *find(const struct safetensors *st, const char *prefix, const char *name) {
  char key[512];
  snprintf(key, sizeof key, "%s%s", prefix, name);
  return safetensors_find(st, key);
}

enum status clip_text_detect(const struct safetensors *st, const char *prefix, struct clip_text_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  const char *hf_tok = "text_model.embeddings.token_embedding.weight";
  bool found = false;
  for (int i = 0; i < safetensors_count(st) && !found; i++) {
    const char *name = safetensors_at(st, i)->name;
    size_t plen = strlen(name);
    if (ends_with(name, hf_tok)) {
      plen -= strlen(hf_tok);
      cfg->layout = CLIP_LAYOUT_HF;
    } else if (ends_with(name, "token_embedding.weight") && !ends_with(name, "embeddings.token_embedding.weight")) {
      plen -= strlen("token_embedding.weight");
      cfg->layout = CLIP_LAYOUT_OPENCLIP;
    } else {
      continue;
    }
    if (plen >= sizeof cfg->prefix) continue;
    memcpy(cfg->prefix, name, plen);
    cfg->prefix[plen] = 0;
    if (prefix && strcmp(prefix, cfg->prefix)) continue;
    if (cfg->layout == CLIP_LAYOUT_OPENCLIP && (!find(st, cfg->prefix, "positional_embedding") ||
                                                !find(st, cfg->prefix, "transformer.resblocks.0.attn.in_proj_weight")))
      continue;
    found = true;
    if (cfg->layout == CLIP_LAYOUT_HF) break; /* HF names win over OpenCLIP ones */
  }
  if (!found)
    return status_set(STATUS_NOT_FOUND, "%s: no CLIP text encoder%s%s%s (expected '%s' or OpenCLIP's "
                      "'token_embedding.weight' under some prefix)", safetensors_path(st), prefix ? " with prefix '" : "",
                      prefix ? prefix : "", prefix ? "'" : "", hf_tok);
  char key[512];
  top_key(cfg, T_TOK, key, sizeof key);
  const struct st_tensor *tok = safetensors_find(st, key);
  top_key(cfg, T_POS, key, sizeof key);
  const struct st_tensor *pos = safetensors_find(st, key);
  if (!tok || tok->ndim != 2 || !pos || pos->ndim != 2 || pos->shape[1] != tok->shape[1])
    return status_set(STATUS_FORMAT, "%s: token/position embeddings missing or not [vocab, width] / [context, width]",
                      safetensors_path(st));
  cfg->vocab = (int)tok->shape[0];
  cfg->width = (int)tok->shape[1];
  cfg->ctx = (int)pos->shape[0];
  for (cfg->layers = 0;; cfg->layers++) {
    layer_key(cfg, cfg->layers, S_Q_W, key, sizeof key);
    if (!safetensors_find(st, key)) break;
  }
  if (cfg->layers == 0) return status_set(STATUS_FORMAT, "%s: no encoder layers found ('%s' is missing)", safetensors_path(st), key);
  layer_key(cfg, 0, S_FC1_W, key, sizeof key);
  const struct st_tensor *fc1 = safetensors_find(st, key);
  if (!fc1 || fc1->ndim != 2) return status_set(STATUS_FORMAT, "%s: tensor '%s' is missing or not 2-D", safetensors_path(st), key);
  cfg->mlp = (int)fc1->shape[0];
  top_key(cfg, T_PROJ, key, sizeof key);
  const struct st_tensor *proj = safetensors_find(st, key);
  if (proj && proj->ndim == 2) cfg->proj = (int)(cfg->layout == CLIP_LAYOUT_HF ? proj->shape[0] : proj->shape[1]);
  cfg->heads = cfg->width / 64 > 0 ? cfg->width / 64 : 1;
  cfg->act = cfg->layout == CLIP_LAYOUT_OPENCLIP ? ACT_GELU : ACT_QUICK_GELU;
  cfg->eps = 1e-5f;
  return STATUS_OK;
}

/* --- loading --- */

/* checkpoint key -> device tensor, rows [row0, row0 + rows) when rows > 0 */
static enum status load(struct weight_loader *l, const char *key, int ndim, const int64_t *shape, int64_t row0,
                        int64_t rows, bool transpose, enum dtype dt, struct gpu_tensor *out) {
  return weight_load(l, key, ndim, shape, row0, rows, transpose ? WL_TRANSPOSE : WL_PLAIN, dt, out);
}

static enum status load_all(struct clip_text *m, struct weight_loader *l) {
  const struct clip_text_config *c = &m->cfg;
  enum dtype mat = m->fp16 ? DT_F16 : DT_F32;
  int64_t D = c->width, M = c->mlp;
  char key[512];
  enum status s;
  top_key(c, T_TOK, key, sizeof key);
  if ((s = load(l, key, 2, (int64_t[]){c->vocab, D}, 0, c->vocab, false, mat, &m->tok))) return s;
  top_key(c, T_POS, key, sizeof key);
  if ((s = load(l, key, 2, (int64_t[]){c->ctx, D}, 0, c->ctx, false, mat, &m->pos))) return s;
  bool oc = c->layout == CLIP_LAYOUT_OPENCLIP;
  for (int i = 0; i < c->layers; i++) {
    struct clip_layer *L = &m->layers[i];
    struct gpu_tensor *field[S_LAYER_SLOTS];
    clip_layer_fields(L, field);
    for (int sl = 0; sl < S_LAYER_SLOTS; sl++) {
      layer_key(c, i, (enum slot)sl, key, sizeof key);
      bool is_w = sl % 2 == 0 && sl != S_LN1_W && sl != S_LN2_W, is_qkv = sl >= S_Q_W && sl <= S_V_B;
      int64_t out_dim = sl == S_FC1_W || sl == S_FC1_B ? M : D, in_dim = sl == S_FC2_W ? M : D;
      int64_t full_rows = oc && is_qkv ? 3 * D : out_dim, row0 = oc && is_qkv ? (sl - S_Q_W) / 2 * D : 0;
      if (is_w)
        s = load(l, key, 2, (int64_t[]){full_rows, in_dim}, row0, out_dim, false, mat, field[sl]);
      else
        s = load(l, key, 1, (int64_t[]){full_rows}, row0, out_dim, false, DT_F32, field[sl]);
      if (s) return s;
    }
  }
  top_key(c, T_FINAL_W, key, sizeof key);
  if ((s = load(l, key, 1, (int64_t[]){D}, 0, D, false, DT_F32, &m->final_w))) return s;
  top_key(c, T_FINAL_B, key, sizeof key);
  if ((s = load(l, key, 1, (int64_t[]){D}, 0, D, false, DT_F32, &m->final_b))) return s;
  if (c->proj) {
    top_key(c, T_PROJ, key, sizeof key);
    if (oc)
      s = load(l, key, 2, (int64_t[]){D, c->proj}, 0, D, true, mat, &m->proj);
    else
      s = load(l, key, 2, (int64_t[]){c->proj, D}, 0, c->proj, false, mat, &m->proj);
  }
  return s;
}

enum status clip_text_load(struct gpu *g, const struct safetensors *st, const struct clip_text_options *opt,
                           struct clip_text **out) {
  *out = NULL;
  struct clip_text *m = calloc(1, sizeof *m);
  if (!m) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  m->g = g;
  enum status s = clip_text_detect(st, opt->prefix, &m->cfg);
  if (s) goto fail;
  if (opt->heads > 0) m->cfg.heads = opt->heads;
  if (opt->act >= 0) m->cfg.act = opt->act;
  if (opt->eps > 0) m->cfg.eps = opt->eps;
  if (m->cfg.width % m->cfg.heads || m->cfg.width / m->cfg.heads > 256) {
    s = status_set(STATUS_FORMAT, "%s: width %d does not split into %d attention heads of at most 256",
                   safetensors_path(st), m->cfg.width, m->cfg.heads);
    goto fail;
  }
  m->fp16 = opt->fp16 && gpu_has_fp16(g) && gpu_texel_format_ok(g, VK_FORMAT_R16G16B16A16_SFLOAT) &&
            gpu_texel_format_ok(g, VK_FORMAT_R16_SFLOAT);
  m->layers = calloc((size_t)m->cfg.layers, sizeof *m->layers);
  if (!m->layers) {
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto fail;
  }
  struct weight_loader l = {.g = g, .st = st};
  if ((s = load_all(m, &l))) goto fail;
  if ((s = gpu_arena_create(g, l.bytes, "CLIP text weights", &m->weights))) goto fail;
  l.arena = m->weights;
  s = load_all(m, &l);
  weight_loader_free(&l);
  if (s) goto fail;
  *out = m;
  return STATUS_OK;
fail:
  clip_text_destroy(m);
  return s;
}

void clip_text_destroy(struct clip_text *m) {
  if (!m) return;
  gpu_arena_destroy(m->acts);
  gpu_arena_destroy(m->weights);
  free(m->layers);
  free(m);
}

const struct clip_text_config *clip_text_config(const struct clip_text *m) { return &m->cfg; }
bool clip_text_fp16(const struct clip_text *m) { return m->fp16; }
uint64_t clip_text_weight_bytes(const struct clip_text *m) { return gpu_arena_used(m->weights); }

/* --- forward --- */

struct acts {
  struct gpu_tensor ids, x, h, q, k, v, a, f, skip, cond, last, eot, pooled, projected;
};

static enum status acts_alloc(struct clip_text *m, int S, struct acts *A, bool measure, VkDeviceSize *bytes) {
  const struct clip_text_config *c = &m->cfg;
  int64_t T = c->ctx, D = c->width;
  struct {
    struct gpu_tensor *t;
    enum dtype dt;
    int ndim;
    int64_t shape[3];
  } list[] = {
      {&A->ids, DT_I32, 2, {S, T}},     {&A->x, DT_F32, 3, {S, T, D}},          {&A->h, DT_F32, 3, {S, T, D}},
      {&A->q, DT_F32, 3, {S, T, D}},    {&A->k, DT_F32, 3, {S, T, D}},          {&A->v, DT_F32, 3, {S, T, D}},
      {&A->a, DT_F32, 3, {S, T, D}},    {&A->f, DT_F32, 3, {S, T, c->mlp}},
      {&A->skip, DT_F32, 3, {S, T, D}}, {&A->cond, DT_F32, 3, {S, T, D}},       {&A->last, DT_F32, 3, {S, T, D}},
      {&A->eot, DT_I32, 1, {S}},        {&A->pooled, DT_F32, 2, {S, D}},        {&A->projected, DT_F32, 2, {S, c->proj ? c->proj : 1}},
  };
  *bytes = 0;
  for (size_t i = 0; i < sizeof list / sizeof *list; i++) {
    int64_t n = 1;
    for (int d = 0; d < list[i].ndim; d++) n *= list[i].shape[d];
    *bytes += gpu_aligned_size(m->g, (VkDeviceSize)n * dtype_size(list[i].dt));
    if (!measure) {
      enum status s = gpu_arena_alloc(m->acts, list[i].dt, list[i].ndim, list[i].shape, list[i].t);
      if (s) return s;
    }
  }
  return STATUS_OK;
}

static enum status record(struct clip_text *m, struct acts *A, int clip_skip, bool final_ln) {
  const struct clip_text_config *c = &m->cfg;
  struct gpu *g = m->g;
  enum status s;
#define TRY(x) \
  if ((s = (x))) return s
  TRY(op_embedding(g, &A->ids, &m->tok, &m->pos, &A->x));                  /* x [S, T, D] */
  struct clip_scratch sc = {.h = A->h, .q = A->q, .k = A->k, .v = A->v, .a = A->a, .f = A->f};
  for (int i = 0; i < c->layers; i++) {
    TRY(clip_layer_forward(g, &m->layers[i], &A->x, &sc, c->heads, true, c->act, c->eps)); /* x [S, T, D] */
    if (clip_skip > 1 && i == c->layers - clip_skip) TRY(gpu_copy(g, &A->x, &A->skip));
  }
  const struct gpu_tensor *pooled_src = &A->cond;
  if (clip_skip > 1 && !final_ln) {
    TRY(gpu_copy(g, &A->skip, &A->cond));                                     /* cond = layer L-K+1 as is */
    TRY(op_layernorm(g, &A->x, &m->final_w, &m->final_b, &A->last, c->eps));
    pooled_src = &A->last;
  } else if (clip_skip > 1) {
    TRY(op_layernorm(g, &A->skip, &m->final_w, &m->final_b, &A->cond, c->eps)); /* cond = LN(layer L-K+1) */
    TRY(op_layernorm(g, &A->x, &m->final_w, &m->final_b, &A->last, c->eps));    /* pooled source: last layer */
    pooled_src = &A->last;
  } else {
    TRY(op_layernorm(g, &A->x, &m->final_w, &m->final_b, &A->cond, c->eps));
  }
  TRY(op_gather_rows(g, &A->eot, pooled_src, &A->pooled));                  /* pooled [S, D] */
  if (c->proj) TRY(op_linear(g, &A->pooled, &m->proj, NULL, &A->projected, ACT_NONE)); /* [S, P] */
#undef TRY
  return STATUS_OK;
}

static enum status check_finite(const float *p, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(p[i]))
      return status_set(STATUS_NUMERIC, "the text encoder produced a NaN or infinite value in %s (element %zu)", what, i);
  return STATUS_OK;
}

enum status clip_text_forward(struct clip_text *m, const int32_t *ids, int n_seq, int clip_skip, bool final_ln,
                              int32_t eot_id, float *cond, float *pooled, float *projected) {
  const struct clip_text_config *c = &m->cfg;
  if (n_seq <= 0) return status_set(STATUS_INVALID_ARGUMENT, "no sequences to encode");
  if (clip_skip < 1 || clip_skip > c->layers)
    return status_set(STATUS_INVALID_ARGUMENT, "clip skip %d is outside 1..%d (the model's layers)", clip_skip, c->layers);
  int T = c->ctx;
  int32_t *eot = malloc((size_t)n_seq * sizeof *eot);
  if (!eot) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (int s = 0; s < n_seq; s++) {
    const int32_t *row = ids + (size_t)s * T;
    int at = -1, best = 0;
    for (int t = 0; t < T; t++) {
      if (row[t] < 0 || row[t] >= c->vocab) {
        free(eot);
        return status_set(STATUS_INVALID_ARGUMENT, "token id %d (sequence %d, position %d) is outside the vocabulary "
                          "of %d", row[t], s, t, c->vocab);
      }
      if (at < 0 && row[t] == eot_id) at = t;
      if (row[t] > row[best]) best = t;
    }
    eot[s] = s * T + (at >= 0 ? at : best);
  }
  enum status st = STATUS_OK;
  struct acts A;
  VkDeviceSize bytes;
  acts_alloc(m, n_seq, &A, true, &bytes);
  if (!m->acts || m->acts_seq < n_seq) {
    gpu_arena_destroy(m->acts);
    m->acts = NULL;
    if ((st = gpu_arena_create(m->g, bytes, "CLIP text activations", &m->acts))) goto done;
    m->acts_seq = n_seq;
  }
  gpu_arena_reset(m->acts, 0);
  if ((st = acts_alloc(m, n_seq, &A, false, &bytes))) goto done;
  if ((st = gpu_upload(m->g, &A.ids, ids, (size_t)n_seq * T * sizeof *ids))) goto done;
  if ((st = gpu_upload(m->g, &A.eot, eot, (size_t)n_seq * sizeof *eot))) goto done;
  if ((st = gpu_begin(m->g))) goto done;
  st = record(m, &A, clip_skip, final_ln);
  enum status s2 = gpu_submit(m->g); /* always close the command buffer */
  if (!st) st = s2;
  if (st) goto done;
  size_t D = (size_t)c->width;
  if (cond && !(st = gpu_download(m->g, &A.cond, cond, (size_t)n_seq * T * D * 4)))
    st = check_finite(cond, (size_t)n_seq * T * D, "the hidden states");
  if (!st && pooled && !(st = gpu_download(m->g, &A.pooled, pooled, (size_t)n_seq * D * 4)))
    st = check_finite(pooled, (size_t)n_seq * D, "the pooled output");
  if (!st && projected && c->proj &&
      !(st = gpu_download(m->g, &A.projected, projected, (size_t)n_seq * c->proj * 4)))
    st = check_finite(projected, (size_t)n_seq * c->proj, "the projection");
done:
  free(eot);
  return st;
}

enum status clip_layer_forward(struct gpu *g, const struct clip_layer *L, const struct gpu_tensor *x,
                               const struct clip_scratch *s, int heads, bool causal, int act, float eps) {
  float scale = 1.0f / sqrtf((float)(x->shape[x->ndim - 1] / heads));
  enum status st;
  if ((st = op_layernorm(g, x, &L->ln1_w, &L->ln1_b, &s->h, eps))) return st;                 /* h = LN1(x) */
  if ((st = op_linear(g, &s->h, &L->q_w, &L->q_b, &s->q, ACT_NONE))) return st;              /* q */
  if ((st = op_linear(g, &s->h, &L->k_w, &L->k_b, &s->k, ACT_NONE))) return st;              /* k */
  if ((st = op_linear(g, &s->h, &L->v_w, &L->v_b, &s->v, ACT_NONE))) return st;              /* v */
  if ((st = op_attention(g, &s->q, &s->k, &s->v, &s->a, heads, causal, scale))) return st;   /* [S, T, D] */
  if ((st = op_linear_residual(g, &s->a, &L->o_w, &L->o_b, x))) return st;                   /* x += out_proj */
  if ((st = op_layernorm(g, x, &L->ln2_w, &L->ln2_b, &s->h, eps))) return st;                /* h = LN2(x) */
  if ((st = op_linear(g, &s->h, &L->fc1_w, &L->fc1_b, &s->f, act))) return st;               /* f [S, T, MLP] */
  return op_linear_residual(g, &s->f, &L->fc2_w, &L->fc2_b, x);                              /* x += fc2(f) */
}

enum status clip_layer_load_hf(struct weight_loader *l, const char *prefix, int64_t D, int64_t M, enum dtype mat,
                               struct clip_layer *L) {
  struct gpu_tensor *f[16];
  clip_layer_fields(L, f);
  for (int k = 0; k < 16; k++) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", prefix, clip_layer_hf_names[k]);
    int64_t out = k == S_FC1_W || k == S_FC1_B ? M : D, in = k == S_FC2_W ? M : D;
    bool matrix = k % 2 == 0 && k != S_LN1_W && k != S_LN2_W;
    enum status s = matrix ? weight_load(l, key, 2, (int64_t[]){out, in}, 0, 0, WL_PLAIN, mat, f[k])
                           : weight_load(l, key, 1, (int64_t[]){out}, 0, 0, WL_PLAIN, DT_F32, f[k]);
    if (s) return s;
  }
  return STATUS_OK;
}

/* A text-tower weight answers to Hugging Face's module path from text_model. on, '.' as '_'
 * (kohya's lora_te_text_model_encoder_layers_0_self_attn_q_proj, PEFT's
 * text_encoder.text_model.encoder.layers.0.self_attn.q_proj); OpenCLIP's names are translated,
 * its packed in_proj rows by block (q, k, v). */
int clip_text_lora_alias(const struct weight_entry *e, char names[LORA_MAX_ALIASES][LORA_NAME], const void *ctx) {
  (void)ctx;
  char path[LORA_NAME];
  const char *hf = strstr(e->name, "text_model.encoder.layers."), *oc = strstr(e->name, "transformer.resblocks.");
  size_t len;
  if (hf) {
    len = strlen(hf);
    if (len < 8 || strcmp(hf + len - 7, ".weight") || len - 7 >= sizeof path) return 0;
    memcpy(path, hf, len - 7);
    path[len - 7] = 0;
  } else if (oc) {
    int layer = 0, used = 0;
    if (sscanf(oc, "transformer.resblocks.%d.%n", &layer, &used) != 1 || !used) return 0;
    const char *leaf = oc + used, *hf_leaf = NULL;
    if (!strcmp(leaf, "attn.in_proj_weight") && e->rows > 0 && e->shape[0] == 3 * e->rows)
      hf_leaf = e->row0 == 0 ? "self_attn.q_proj" : e->row0 == e->rows ? "self_attn.k_proj" : "self_attn.v_proj";
    else if (!strcmp(leaf, "attn.out_proj.weight")) hf_leaf = "self_attn.out_proj";
    else if (!strcmp(leaf, "mlp.c_fc.weight")) hf_leaf = "mlp.fc1";
    else if (!strcmp(leaf, "mlp.c_proj.weight")) hf_leaf = "mlp.fc2";
    if (!hf_leaf) return 0;
    snprintf(path, sizeof path, "text_model.encoder.layers.%d.%s", layer, hf_leaf);
  } else {
    return 0;
  }
  snprintf(names[0], LORA_NAME, "%s", path);
  for (char *c = names[0]; *c; c++)
    if (*c == '.') *c = '_';
  return 1;
}
