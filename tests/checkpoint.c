#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "half.h"
#include "test.h"
#include "weights.h"

static const struct clip_spec specs[] = {
    {"tiny", 64, 2, 4, 256, 49408, 77, 64, false},
    {"tiny_gelu", 64, 2, 4, 256, 49408, 77, 64, true},
    {"vitl14", 768, 12, 12, 3072, 49408, 77, 768, false},
    {"vith14", 1024, 24, 16, 4096, 49408, 77, 1024, true},
    {"vitbigg14", 1280, 32, 20, 5120, 49408, 77, 1280, true},
};

const struct clip_spec *clip_spec(const char *name) {
  for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
    if (!strcmp(specs[i].name, name)) return &specs[i];
  return NULL;
}

struct pool {
  void **bufs;
  int n;
};

static void *keep(struct pool *p, void *b) {
  p->bufs = realloc(p->bufs, (size_t)(p->n + 1) * sizeof *p->bufs);
  p->bufs[p->n++] = b;
  return b;
}

static float *rule(const char *name, int ndim, const int64_t *shape, uint64_t seed) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  float *v = malloc((size_t)n * sizeof *v + 4);
  weights_fill(name, ndim, shape, seed, v);
  return v;
}

/* converts v (n floats) into the checkpoint dtype and adds it */
static void add(struct st_writer *w, struct pool *p, const struct ckpt_options *o, const char *canon, const char *key,
                int ndim, int64_t *shape, float *v) {
  if (o->drop && !strcmp(canon, o->drop)) {
    free(v);
    return;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  if (o->poison && !strcmp(canon, o->poison)) v[3] = NAN;
  if (o->reshape && !strcmp(canon, o->reshape)) { /* one column more: a shape mismatch */
    int64_t rows = n / shape[ndim - 1], cols = shape[ndim - 1];
    float *b = calloc((size_t)(rows * (cols + 1)), sizeof *b);
    for (int64_t r = 0; r < rows; r++) memcpy(b + r * (cols + 1), v + r * cols, (size_t)cols * sizeof *v);
    free(v);
    v = b;
    shape[ndim - 1]++;
    n = rows * (cols + 1);
  }
  keep(p, v);
  if (o->dtype == ST_F32) {
    st_writer_add(w, key, ST_F32, ndim, shape, v);
    return;
  }
  uint16_t *h = keep(p, malloc((size_t)n * 2 + 2));
  for (int64_t i = 0; i < n; i++) h[i] = o->dtype == ST_F16 ? half_from_float(v[i]) : bf16_from_float(v[i]);
  st_writer_add(w, key, o->dtype, ndim, shape, h);
}

static float *concat3(const float *a, const float *b, const float *c, int64_t n) {
  float *v = malloc((size_t)(3 * n) * sizeof *v);
  memcpy(v, a, (size_t)n * 4);
  memcpy(v + n, b, (size_t)n * 4);
  memcpy(v + 2 * n, c, (size_t)n * 4);
  return v;
}

static void add_clip_tensors(struct st_writer *w, struct pool *pp, const struct clip_spec *s, const struct ckpt_options *o) {
  struct pool p = *pp;
  char key[512], canon[256];
  int64_t D = s->width, M = s->mlp;
  const char *pre = o->prefix ? o->prefix : "";
  bool oc = o->openclip_names;
#define SHAPE(...) ((int64_t[]){__VA_ARGS__})
  {
    int64_t sh[] = {s->vocab, D};
    snprintf(canon, sizeof canon, "text_model.embeddings.token_embedding.weight");
    snprintf(key, sizeof key, "%s%s", pre, oc ? "token_embedding.weight" : canon);
    add(w, &p, o, canon, key, 2, sh, rule(canon, 2, sh, o->seed));
    int64_t ps[] = {s->ctx, D};
    snprintf(canon, sizeof canon, "text_model.embeddings.position_embedding.weight");
    snprintf(key, sizeof key, "%s%s", pre, oc ? "positional_embedding" : canon);
    add(w, &p, o, canon, key, 2, ps, rule(canon, 2, ps, o->seed));
  }
  static const char *const hf[] = {"layer_norm1.weight", "layer_norm1.bias", "self_attn.out_proj.weight",
                                   "self_attn.out_proj.bias", "layer_norm2.weight", "layer_norm2.bias",
                                   "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
  static const char *const ocn[] = {"ln_1.weight", "ln_1.bias", "attn.out_proj.weight", "attn.out_proj.bias",
                                    "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                                    "mlp.c_proj.weight", "mlp.c_proj.bias"};
  for (int l = 0; l < s->layers; l++) {
    for (int k = 0; k < 10; k++) {
      int64_t sh[2];
      int nd = strstr(hf[k], "weight") && !strstr(hf[k], "norm") ? 2 : 1;
      sh[0] = k == 6 || k == 7 ? M : D;
      sh[1] = k == 8 ? M : D;
      snprintf(canon, sizeof canon, "text_model.encoder.layers.%d.%s", l, hf[k]);
      if (oc)
        snprintf(key, sizeof key, "%stransformer.resblocks.%d.%s", pre, l, ocn[k]);
      else
        snprintf(key, sizeof key, "%s%s", pre, canon);
      add(w, &p, o, canon, key, nd, sh, rule(canon, nd, sh, o->seed));
    }
    const char *qkv[] = {"q_proj", "k_proj", "v_proj"};
    float *wt[3], *bs[3];
    for (int k = 0; k < 3; k++) {
      snprintf(canon, sizeof canon, "text_model.encoder.layers.%d.self_attn.%s.weight", l, qkv[k]);
      wt[k] = rule(canon, 2, SHAPE(D, D), o->seed);
      if (!oc) {
        snprintf(key, sizeof key, "%s%s", pre, canon);
        add(w, &p, o, canon, key, 2, SHAPE(D, D), wt[k]);
      }
      snprintf(canon, sizeof canon, "text_model.encoder.layers.%d.self_attn.%s.bias", l, qkv[k]);
      bs[k] = rule(canon, 1, SHAPE(D), o->seed);
      if (!oc) {
        snprintf(key, sizeof key, "%s%s", pre, canon);
        add(w, &p, o, canon, key, 1, SHAPE(D), bs[k]);
      }
    }
    if (oc) {
      snprintf(key, sizeof key, "%stransformer.resblocks.%d.attn.in_proj_weight", pre, l);
      add(w, &p, o, "in_proj_weight", key, 2, SHAPE(3 * D, D), concat3(wt[0], wt[1], wt[2], D * D));
      snprintf(key, sizeof key, "%stransformer.resblocks.%d.attn.in_proj_bias", pre, l);
      add(w, &p, o, "in_proj_bias", key, 1, SHAPE(3 * D), concat3(bs[0], bs[1], bs[2], D));
      for (int k = 0; k < 3; k++) free(wt[k]), free(bs[k]);
    }
  }
  const char *fin[] = {"text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"};
  const char *fin_oc[] = {"ln_final.weight", "ln_final.bias"};
  for (int k = 0; k < 2; k++) {
    snprintf(key, sizeof key, "%s%s", pre, oc ? fin_oc[k] : fin[k]);
    add(w, &p, o, fin[k], key, 1, SHAPE(D), rule(fin[k], 1, SHAPE(D), o->seed));
  }
  if (o->projection) {
    float *pw = rule("text_projection.weight", 2, SHAPE(s->proj, D), o->seed);
    if (oc) { /* OpenCLIP stores [width, proj] */
      float *t = malloc((size_t)(s->proj * D) * sizeof *t);
      for (int64_t r = 0; r < s->proj; r++)
        for (int64_t c = 0; c < D; c++) t[c * s->proj + r] = pw[r * D + c];
      free(pw);
      snprintf(key, sizeof key, "%stext_projection", pre);
      add(w, &p, o, "text_projection.weight", key, 2, SHAPE(D, s->proj), t);
    } else {
      snprintf(key, sizeof key, "%stext_projection.weight", pre);
      add(w, &p, o, "text_projection.weight", key, 2, SHAPE(s->proj, D), pw);
    }
  }
  int64_t *pos_ids = keep(&p, malloc(77 * sizeof(int64_t)));
  for (int i = 0; i < 77; i++) pos_ids[i] = i;
  if (!oc) {
    snprintf(key, sizeof key, "%stext_model.embeddings.position_ids", pre);
    st_writer_add(w, key, ST_I64, 2, SHAPE(1, 77), pos_ids);
  }
#undef SHAPE
  *pp = p;
}

static int finish(struct st_writer *w, struct pool *p, const char *path) {
  int rc = st_writer_finish(w, path) != STATUS_OK;
  st_writer_destroy(w);
  for (int i = 0; i < p->n; i++) free(p->bufs[i]);
  free(p->bufs);
  return rc;
}

int write_clip_checkpoint(const char *path, const struct clip_spec *s, const struct ckpt_options *o) {
  struct st_writer *w;
  if (st_writer_create(&w)) return 1;
  struct pool p = {0};
  add_clip_tensors(w, &p, s, o);
  return finish(w, &p, path);
}

/* The tensor list of a ../shared/ref weight digest (names and shapes in checkpoint order); NULL when
 * unreadable. Free *root with cJSON_Delete. */
static const cJSON *digest_tensors(const char *path, cJSON **root) {
  char *text = test_read_file(path, NULL);
  *root = text ? cJSON_Parse(text) : NULL;
  free(text);
  return *root ? cJSON_GetObjectItem(*root, "tensors") : NULL;
}

/* One digest entry's shape into dims; its rank. */
static int digest_dims(const cJSON *t, int64_t dims[8]) {
  const cJSON *shape = cJSON_GetObjectItem(t, "shape");
  int nd = cJSON_GetArraySize(shape);
  for (int i = 0; i < nd && i < 8; i++) dims[i] = (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
  return nd < 8 ? nd : 8;
}

int write_sdxl_text_checkpoint(const char *path, const struct clip_spec *l, const struct clip_spec *g,
                               enum st_dtype dtype, uint64_t seed, const struct ckpt_options *faults) {
  struct st_writer *w;
  if (st_writer_create(&w)) return 1;
  struct pool p = {0};
  struct ckpt_options o0 = {.dtype = dtype, .prefix = "conditioner.embedders.0.transformer.", .seed = seed};
  add_clip_tensors(w, &p, l, &o0);
  struct ckpt_options o1 = faults ? *faults : (struct ckpt_options){0};
  o1.dtype = dtype;
  o1.prefix = "conditioner.embedders.1.model.";
  o1.openclip_names = o1.projection = true;
  o1.seed = seed + 1;
  add_clip_tensors(w, &p, g, &o1);
  float *ls = keep(&p, malloc(sizeof(float)));
  *ls = (float)log(100.0);
  st_writer_add(w, "conditioner.embedders.1.model.logit_scale", ST_F32, 0, NULL, ls);
  return finish(w, &p, path);
}

int checkpoint_unet_in_channels;

static bool is_vae_name(const char *name) {
  return !strncmp(name, "encoder.", 8) || !strncmp(name, "decoder.", 8) || !strncmp(name, "quant_conv", 10) ||
         !strncmp(name, "post_quant_conv", 15);
}

int write_sd_checkpoint_mixed(const char *path, const char *unet_digest, const char *vae_digest, enum st_dtype dtype,
                              uint64_t seed, const struct clip_spec *clip) {
  cJSON *roots[2] = {NULL, NULL};
  const cJSON *lists[2] = {digest_tensors(unet_digest, &roots[0]), digest_tensors(vae_digest, &roots[1])};
  struct st_writer *w = NULL;
  if (!lists[0] || !lists[1] || st_writer_create(&w)) {
    cJSON_Delete(roots[0]), cJSON_Delete(roots[1]);
    return 1;
  }
  struct pool p = {0};
  struct ckpt_options o = {.dtype = dtype, .seed = seed, .prefix = "cond_stage_model.transformer."};
  for (int k = 0; k < 2; k++) /* the U-Net from the first digest, the VAE from the second */
    for (const cJSON *t = lists[k]->child; t; t = t->next) {
      const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
      bool vae = is_vae_name(name);
      if (vae != (k == 1)) continue;
      int64_t dims[8];
      int nd = digest_dims(t, dims);
      if (checkpoint_unet_in_channels && !strcmp(name, "input_blocks.0.0.weight")) dims[1] = checkpoint_unet_in_channels;
      char key[512];
      snprintf(key, sizeof key, "%s%s", vae ? "first_stage_model." : "model.diffusion_model.", name);
      add(w, &p, &o, name, key, nd, dims, rule(name, nd, dims, seed));
    }
  cJSON_Delete(roots[0]), cJSON_Delete(roots[1]);
  if (clip) add_clip_tensors(w, &p, clip, &o);
  return finish(w, &p, path);
}

int write_sd_checkpoint(const char *path, const char *digest_path, enum st_dtype dtype, uint64_t seed,
                        const struct clip_spec *clip) {
  return write_sd_checkpoint_mixed(path, digest_path, digest_path, dtype, seed, clip);
}

/* ldm U-Net name -> diffusers UNet2DConditionModel name, token by token (the test's own reading of
 * diffusers' convert_ldm_unet_checkpoint layout, 2 ResBlocks a level) */
static void diffusers_key(const char *ldm, char *out, size_t n) {
  char tok[16][64];
  int nt = 0;
  const char *p = ldm;
  while (*p && nt < 16) {
    const char *d = strchr(p, '.');
    size_t len = d ? (size_t)(d - p) : strlen(p);
    snprintf(tok[nt++], sizeof tok[0], "%.*s", (int)len, p);
    p += len + (d != NULL);
  }
  char rest[256] = "";
  static const char *const res_from[] = {"in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3"};
  static const char *const res_to[] = {"norm1", "conv1", "time_emb_proj", "norm2", "conv2"};
  int first = 0; /* the token where the block's own part starts */
  char head[128] = "";
  if (!strcmp(tok[0], "time_embed")) snprintf(head, sizeof head, "time_embedding.linear_%d", atoi(tok[1]) / 2 + 1), first = 2;
  else if (!strcmp(tok[0], "label_emb")) snprintf(head, sizeof head, "add_embedding.linear_%d", atoi(tok[2]) / 2 + 1), first = 3;
  else if (!strcmp(tok[0], "out")) snprintf(head, sizeof head, "%s", atoi(tok[1]) ? "conv_out" : "conv_norm_out"), first = 2;
  else if (!strcmp(tok[0], "input_blocks") && atoi(tok[1]) == 0) snprintf(head, sizeof head, "conv_in"), first = 3;
  if (head[0]) {
    for (int i = first; i < nt; i++) strcat(rest, "."), strcat(rest, tok[i]);
    snprintf(out, n, "%s%s", head, rest);
    return;
  }
  int b = 0, j = 0;
  const char *kind;
  if (!strcmp(tok[0], "middle_block")) j = atoi(tok[1]), first = 2;
  else b = atoi(tok[1]), j = atoi(tok[2]), first = 3;
  char sub[64];
  snprintf(sub, sizeof sub, "%s.%s", tok[first], nt > first + 1 ? tok[first + 1] : "");
  int res = -1;
  for (int i = 0; i < 5; i++)
    if (!strcmp(sub, res_from[i])) res = i;
  bool skip = !strcmp(tok[first], "skip_connection");
  kind = res >= 0 || skip ? "resnets" : !strcmp(tok[first], "op") || (!strcmp(tok[first], "conv") && nt == first + 2) ? "sampler" : "attentions";
  int after = res >= 0 ? first + 2 : first + 1;
  if (res >= 0) snprintf(rest, sizeof rest, ".%s", res_to[res]);
  else if (skip) snprintf(rest, sizeof rest, ".conv_shortcut");
  else if (!strcmp(kind, "sampler")) snprintf(rest, sizeof rest, ".conv");
  else after = first;
  for (int i = after; i < nt; i++) strcat(rest, "."), strcat(rest, tok[i]);
  if (!strcmp(tok[0], "middle_block")) {
    snprintf(out, n, "mid_block.%s.%d%s", kind, !strcmp(kind, "resnets") ? (j ? 1 : 0) : 0, rest);
  } else if (!strcmp(tok[0], "input_blocks")) {
    int level = (b - 1) / 3, slot = (b - 1) % 3;
    if (!strcmp(kind, "sampler")) snprintf(out, n, "down_blocks.%d.downsamplers.0%s", level, rest);
    else snprintf(out, n, "down_blocks.%d.%s.%d%s", level, kind, slot, rest);
  } else {
    int level = b / 3, slot = b % 3;
    if (!strcmp(kind, "sampler")) snprintf(out, n, "up_blocks.%d.upsamplers.0%s", level, rest);
    else snprintf(out, n, "up_blocks.%d.%s.%d%s", level, kind, slot, rest);
  }
}

int write_unet_checkpoint_diffusers(const char *path, const char *digest_path, uint64_t seed) {
  cJSON *root;
  const cJSON *tensors = digest_tensors(digest_path, &root);
  struct st_writer *w = NULL;
  if (!tensors || st_writer_create(&w)) {
    cJSON_Delete(root);
    return 1;
  }
  struct pool p = {0};
  struct ckpt_options o = {.dtype = ST_F32, .seed = seed};
  for (const cJSON *t = tensors->child; t; t = t->next) {
    const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
    int64_t dims[8];
    int nd = digest_dims(t, dims);
    char key[512];
    diffusers_key(name, key, sizeof key);
    add(w, &p, &o, name, key, nd, dims, rule(name, nd, dims, seed));
  }
  cJSON_Delete(root);
  return finish(w, &p, path);
}

int write_unet_checkpoint(const char *path, const char *digest_path, enum st_dtype dtype, uint64_t seed) {
  cJSON *root;
  const cJSON *tensors = digest_tensors(digest_path, &root);
  if (!tensors) {
    cJSON_Delete(root);
    return 1;
  }
  /* the header first (offsets from the shapes), then each tensor generated, converted and written */
  size_t esize = dtype == ST_F32 ? 4 : 2;
  cJSON *hdr = cJSON_CreateObject();
  uint64_t off = 0;
  for (const cJSON *t = tensors->child; t; t = t->next) {
    const cJSON *shape = cJSON_GetObjectItem(t, "shape");
    uint64_t n = 1;
    cJSON *e = cJSON_CreateObject(), *sh = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    for (const cJSON *d = shape->child; d; d = d->next) {
      n *= (uint64_t)d->valuedouble;
      cJSON_AddItemToArray(sh, cJSON_CreateNumber(d->valuedouble));
    }
    cJSON_AddStringToObject(e, "dtype", st_dtype_name(dtype));
    cJSON_AddItemToObject(e, "shape", sh);
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + n * esize)));
    cJSON_AddItemToObject(e, "data_offsets", offs);
    char key[512];
    snprintf(key, sizeof key, "model.diffusion_model.%s", cJSON_GetObjectItem(t, "name")->valuestring);
    cJSON_AddItemToObject(hdr, key, e);
    off += n * esize;
  }
  char *json = cJSON_PrintUnformatted(hdr);
  cJSON_Delete(hdr);
  FILE *f = fopen(path, "wb");
  int rc = !f || !json;
  uint64_t hlen = json ? (strlen(json) + 7) / 8 * 8 : 0;
  if (!rc) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(hlen >> (8 * i));
    rc = fwrite(le, 8, 1, f) != 1 || fputs(json, f) < 0;
    for (size_t i = strlen(json); !rc && i < hlen; i++) rc = fputc(' ', f) == EOF;
  }
  free(json);
  for (const cJSON *t = tensors->child; t && !rc; t = t->next) {
    int64_t dims[8], n = 1;
    int nd = digest_dims(t, dims);
    for (int i = 0; i < nd; i++) n *= dims[i];
    float *v = rule(cJSON_GetObjectItem(t, "name")->valuestring, nd, dims, seed);
    if (dtype == ST_F32) {
      rc = fwrite(v, 4, (size_t)n, f) != (size_t)n;
    } else {
      uint16_t *h = malloc((size_t)n * 2 + 2);
      for (int64_t i = 0; i < n; i++) h[i] = dtype == ST_F16 ? half_from_float(v[i]) : bf16_from_float(v[i]);
      rc = fwrite(h, 2, (size_t)n, f) != (size_t)n;
      free(h);
    }
    free(v);
  }
  if (f && fclose(f)) rc = 1;
  cJSON_Delete(root);
  return rc;
}

int write_family_checkpoint(const char *path, const char *family, const char *unet_digest, const char *vae_digest,
                            enum st_dtype dtype, uint64_t seed, const char *meta_key, const char *meta_value) {
  struct st_writer *w;
  if (st_writer_create(&w)) return 1;
  struct pool p = {0};
  struct ckpt_options o = {.dtype = dtype, .seed = seed};
  const char *digests[2] = {unet_digest, vae_digest};
  int rc = 0;
  for (int d = 0; d < 2 && !rc; d++) {
    cJSON *root;
    const cJSON *tensors = digest_tensors(digests[d], &root);
    if (!tensors) rc = 1;
    for (const cJSON *t = tensors ? tensors->child : NULL; t; t = t->next) {
      const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
      bool vae = !strncmp(name, "encoder.", 8) || !strncmp(name, "decoder.", 8) || !strncmp(name, "quant_conv", 10) ||
                 !strncmp(name, "post_quant_conv", 15);
      if (vae != (d == 1)) continue; /* the U-Net from the first digest, the VAE from the second */
      int64_t dims[8];
      int nd = digest_dims(t, dims);
      char key[512];
      snprintf(key, sizeof key, "%s%s", vae ? "first_stage_model." : "model.diffusion_model.", name);
      add(w, &p, &o, name, key, nd, dims, rule(name, nd, dims, seed));
    }
    cJSON_Delete(root);
  }
  bool xl = !strcmp(family, "sdxl");
  if (!rc && xl) {
    struct ckpt_options o0 = {.dtype = dtype, .prefix = "conditioner.embedders.0.transformer.", .seed = seed};
    add_clip_tensors(w, &p, clip_spec("tiny"), &o0);
  }
  if (!rc) { /* SD 2.x: the OpenCLIP tower (seed); SDXL: bigG's place (seed + 1) */
    struct ckpt_options o1 = {.dtype = dtype, .prefix = xl ? "conditioner.embedders.1.model." : "cond_stage_model.model.",
                              .openclip_names = true, .projection = true, .seed = xl ? seed + 1 : seed};
    add_clip_tensors(w, &p, clip_spec("tiny_gelu"), &o1);
    float *ls = keep(&p, malloc(sizeof(float)));
    *ls = (float)log(100.0);
    st_writer_add(w, xl ? "conditioner.embedders.1.model.logit_scale" : "cond_stage_model.model.logit_scale", ST_F32, 0,
                  NULL, ls);
  }
  if (!rc && meta_key) st_writer_metadata(w, meta_key, meta_value);
  if (rc) {
    st_writer_destroy(w);
    for (int i = 0; i < p.n; i++) free(p.bufs[i]);
    free(p.bufs);
    return rc;
  }
  return finish(w, &p, path);
}

static const struct vision_spec vspecs[] = {{"tiny", 64, 8, 64, 2, 256, 64}, {"vitb32", 224, 32, 768, 12, 3072, 512}, {"vitl14", 224, 14, 1024, 24, 4096, 768}};

const struct vision_spec *vision_spec(const char *name) {
  for (size_t i = 0; i < sizeof vspecs / sizeof *vspecs; i++)
    if (!strcmp(vspecs[i].name, name)) return &vspecs[i];
  return NULL;
}

int write_vision_checkpoint(const char *path, const struct vision_spec *v, const struct clip_spec *text,
                            enum st_dtype dtype, uint64_t seed) {
  struct st_writer *w;
  if (st_writer_create(&w)) return 1;
  struct pool p = {0};
  struct ckpt_options o = {.dtype = dtype, .seed = seed, .prefix = "", .projection = true};
  int64_t D = v->width, M = v->mlp, P = v->patch, G = v->image / v->patch, T = G * G + 1;
  struct {
    const char *name;
    int nd;
    int64_t shape[4];
  } top[] = {
      {"vision_model.embeddings.class_embedding", 1, {D}},
      {"vision_model.embeddings.patch_embedding.weight", 4, {D, 3, P, P}},
      {"vision_model.embeddings.position_embedding.weight", 2, {T, D}},
      {"vision_model.pre_layrnorm.weight", 1, {D}},
      {"vision_model.pre_layrnorm.bias", 1, {D}},
      {"vision_model.post_layernorm.weight", 1, {D}},
      {"vision_model.post_layernorm.bias", 1, {D}},
      {"visual_projection.weight", 2, {v->proj, D}},
  };
  for (size_t i = 0; i < sizeof top / sizeof *top; i++)
    add(w, &p, &o, top[i].name, top[i].name, top[i].nd, top[i].shape, rule(top[i].name, top[i].nd, top[i].shape, seed));
  static const char *const leaf[16] = {
      "layer_norm1.weight", "layer_norm1.bias", "self_attn.q_proj.weight", "self_attn.q_proj.bias",
      "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
      "self_attn.out_proj.weight", "self_attn.out_proj.bias", "layer_norm2.weight", "layer_norm2.bias",
      "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
  for (int l = 0; l < v->layers; l++)
    for (int k = 0; k < 16; k++) {
      char name[256];
      snprintf(name, sizeof name, "vision_model.encoder.layers.%d.%s", l, leaf[k]);
      int64_t out = k == 12 || k == 13 ? M : D, in = k == 14 ? M : D, sh[2] = {out, in};
      int nd = k % 2 == 0 && k != 0 && k != 10 ? 2 : 1;
      add(w, &p, &o, name, name, nd, sh, rule(name, nd, sh, seed));
    }
  if (text) {
    add_clip_tensors(w, &p, text, &o);
    float *ls = keep(&p, malloc(sizeof(float)));
    *ls = (float)log(100.0);
    st_writer_add(w, "logit_scale", ST_F32, 0, NULL, ls);
  }
  return finish(w, &p, path);
}

/* --- LoRA files for the tiny SD 1.x checkpoint, and merging one offline ---
 * The table pairs each module's diffusers path with the checkpoint key it changes, written out by
 * hand from diffusers' conventions (R = 2 ResBlocks a level, 3 levels), independently of the
 * library's rename map, so that merging offline checks the library's matching. */
static const struct lora_row {
  const char *diffusers, *ldm; /* ldm: the key without model.diffusion_model. (or the text key) */
  bool text;
} lora_rows[] = {
    {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.1.1.transformer_blocks.0.attn1.to_q", false},
    {"down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k", "input_blocks.2.1.transformer_blocks.0.attn2.to_k", false},
    {"down_blocks.1.attentions.0.proj_in", "input_blocks.4.1.proj_in", false},           /* a 1x1 convolution */
    {"down_blocks.1.resnets.0.conv1", "input_blocks.4.0.in_layers.2", false},            /* LoCon: 3x3 */
    {"mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", "middle_block.1.transformer_blocks.0.ff.net.0.proj", false},
    {"up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0", "output_blocks.3.1.transformer_blocks.0.attn1.to_out.0", false},
    {"up_blocks.2.resnets.1.time_emb_proj", "output_blocks.7.0.emb_layers.1", false},
    {"up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv", false},                  /* LoCon: 3x3 */
    {"text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.0.self_attn.q_proj", true},
    {"text_model.encoder.layers.1.mlp.fc1", "text_model.encoder.layers.1.mlp.fc1", true},
};
#define LORA_ROWS (int)(sizeof lora_rows / sizeof *lora_rows)

static void underscores(char *s) {
  for (; *s; s++)
    if (*s == '.') *s = '_';
}

/* the file's module base for row r in format f */
static void lora_base(const struct lora_row *r, enum test_lora_format f, char *out, size_t n) {
  if (f == TEST_LORA_PEFT) {
    snprintf(out, n, "%s%s", r->text ? "text_encoder." : "unet.", r->diffusers);
    return;
  }
  char path[256];
  snprintf(path, sizeof path, "%s", f == TEST_LORA_KOHYA_LDM && !r->text ? r->ldm : r->diffusers);
  underscores(path);
  snprintf(out, n, "%s%s", r->text ? "lora_te_" : "lora_unet_", path);
}

static void lora_ckpt_key(const struct lora_row *r, char *out, size_t n) {
  snprintf(out, n, "%s%s.weight", r->text ? "cond_stage_model.transformer." : "model.diffusion_model.", r->ldm);
}

static uint64_t lora_mix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int write_test_lora(const char *path, const char *ckpt, enum test_lora_format f, int rank, double alpha, uint64_t seed,
                    unsigned parts) {
  struct safetensors *st = NULL;
  if (safetensors_open(ckpt, &st)) return 1;
  struct st_writer *w = NULL;
  struct pool p = {0};
  int rc = st_writer_create(&w) ? 1 : 0;
  for (int i = 0; !rc && i < LORA_ROWS; i++) {
    const struct lora_row *r = &lora_rows[i];
    if (!(parts & (r->text ? TEST_LORA_TEXT : TEST_LORA_UNET))) continue;
    char key[300], base[300], name[400];
    lora_ckpt_key(r, key, sizeof key);
    const struct st_tensor *t = safetensors_find(st, key);
    if (!t) {
      fprintf(stderr, "write_test_lora: %s has no %s\n", ckpt, key);
      rc = 1;
      break;
    }
    lora_base(r, f, base, sizeof base);
    int64_t out = t->shape[0], in = t->numel / out;
    float *down = keep(&p, malloc((size_t)(rank * in) * sizeof *down)), *up = keep(&p, malloc((size_t)(out * rank) * sizeof *up));
    uint64_t s = seed * 1000003u + (uint64_t)i;
    /* the same values in every format: PEFT has no alpha, so its up carries alpha / rank (exact: a power of 2) */
    double scale_up = f == TEST_LORA_PEFT ? alpha / rank : 1.0;
    for (int64_t k = 0; k < rank * in; k++) down[k] = (float)(((double)(lora_mix(&s) >> 11) / 9007199254740992.0 * 2 - 1) / sqrt((double)in));
    for (int64_t k = 0; k < out * rank; k++) up[k] = (float)(((double)(lora_mix(&s) >> 11) / 9007199254740992.0 * 2 - 1) * 0.5 * scale_up);
    int64_t dshape[4] = {rank, t->ndim == 4 ? t->shape[1] : in, t->ndim == 4 ? t->shape[2] : 0, t->ndim == 4 ? t->shape[3] : 0};
    int64_t ushape[4] = {out, rank, 1, 1};
    snprintf(name, sizeof name, "%s.%s", base, f == TEST_LORA_PEFT ? "lora_A.weight" : "lora_down.weight");
    st_writer_add(w, keep(&p, strdup(name)), ST_F32, t->ndim, dshape, down);
    snprintf(name, sizeof name, "%s.%s", base, f == TEST_LORA_PEFT ? "lora_B.weight" : "lora_up.weight");
    st_writer_add(w, keep(&p, strdup(name)), ST_F32, t->ndim, ushape, up);
    if (f != TEST_LORA_PEFT) {
      float *a = keep(&p, malloc(sizeof *a));
      *a = (float)alpha;
      snprintf(name, sizeof name, "%s.alpha", base);
      st_writer_add(w, keep(&p, strdup(name)), ST_F32, 0, (int64_t[]){0}, a);
    }
  }
  if (!rc && st_writer_finish(w, path)) rc = 1;
  st_writer_destroy(w);
  for (int i = 0; i < p.n; i++) free(p.bufs[i]);
  free(p.bufs);
  safetensors_close(st);
  return rc;
}

int merge_test_lora(const char *ckpt, const char *lora, double strength, const char *out_path) {
  struct safetensors *st = NULL, *lf = NULL;
  if (safetensors_open(ckpt, &st) || safetensors_open(lora, &lf)) {
    fprintf(stderr, "merge_test_lora: %s\n", status_message());
    safetensors_close(st);
    return 1;
  }
  int n = safetensors_count(st), rc = 0, merged = 0;
  float **v = calloc((size_t)n, sizeof *v);
  for (int i = 0; i < n; i++) {
    v[i] = malloc((size_t)safetensors_at(st, i)->numel * sizeof **v + 4);
    if (safetensors_read_f32(st, safetensors_at(st, i), v[i])) rc = 1;
  }
  /* every module of the file, found by its base in any of the three spellings */
  for (int j = 0; !rc && j < safetensors_count(lf); j++) {
    const struct st_tensor *d = safetensors_at(lf, j);
    const char *sfx = strstr(d->name, ".lora_down.weight") ? ".lora_down.weight" : strstr(d->name, ".lora_A.weight") ? ".lora_A.weight" : NULL;
    if (!sfx) continue;
    char base[300], name[400], key[300];
    snprintf(base, sizeof base, "%.*s", (int)(strlen(d->name) - strlen(sfx)), d->name);
    int row = -1;
    for (int i = 0; i < LORA_ROWS && row < 0; i++)
      for (int f = 0; f < 3; f++) {
        lora_base(&lora_rows[i], (enum test_lora_format)f, name, sizeof name);
        if (!strcmp(name, base)) row = i;
      }
    if (row < 0) {
      fprintf(stderr, "merge_test_lora: %s: module '%s' is not in the test table\n", lora, base);
      rc = 1;
      break;
    }
    bool peft = !strcmp(sfx, ".lora_A.weight");
    snprintf(name, sizeof name, "%s%s", base, peft ? ".lora_B.weight" : ".lora_up.weight");
    const struct st_tensor *u = safetensors_find(lf, name);
    snprintf(name, sizeof name, "%s.alpha", base);
    const struct st_tensor *at = peft ? NULL : safetensors_find(lf, name);
    lora_ckpt_key(&lora_rows[row], key, sizeof key);
    const struct st_tensor *t = safetensors_find(st, key);
    int ti = 0;
    while (ti < n && safetensors_at(st, ti) != t) ti++;
    int64_t rank = d->shape[0], in = d->numel / rank, out = u ? u->shape[0] : 0;
    if (!u || !t || out * in != t->numel) {
      fprintf(stderr, "merge_test_lora: %s: module '%s' does not fit %s\n", lora, base, key);
      rc = 1;
      break;
    }
    float *dv = malloc((size_t)d->numel * sizeof *dv), *uv = malloc((size_t)u->numel * sizeof *uv), alpha = (float)rank;
    safetensors_read_f32(lf, d, dv);
    safetensors_read_f32(lf, u, uv);
    if (at) safetensors_read_f32(lf, at, &alpha);
    double scale = strength * alpha / (double)rank;
    for (int64_t o = 0; o < out; o++)
      for (int64_t i = 0; i < in; i++) {
        double acc = 0;
        for (int64_t k = 0; k < rank; k++) acc += (double)uv[o * rank + k] * dv[k * in + i];
        v[ti][o * in + i] = (float)(v[ti][o * in + i] + scale * acc);
      }
    free(dv), free(uv);
    merged++;
  }
  struct st_writer *w = NULL;
  if (!rc && !st_writer_create(&w)) {
    for (int i = 0; i < n; i++) {
      const struct st_tensor *t = safetensors_at(st, i);
      st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, v[i]);
    }
    if (st_writer_finish(w, out_path)) rc = 1;
    st_writer_destroy(w);
  }
  if (!rc && !merged) {
    fprintf(stderr, "merge_test_lora: %s has no LoRA modules\n", lora);
    rc = 1;
  }
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
  safetensors_close(st);
  safetensors_close(lf);
  return rc;
}
