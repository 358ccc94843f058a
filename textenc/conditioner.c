/* The conditioner: SD 1.x, SD 2.x and SDXL text conditioning from one or two CLIP towers.
 *
 *   SD 1.x  context = LN(hidden_states[-K])                           K = clip skip (default 1)
 *   SD 2.x  context = ln_final(hidden_states[-K])                     default K = 2 (penultimate)
 *   SDXL    context = CLIP-L hidden_states[-K] ++ bigG hidden_states[-K], no final LN  (K = 2)
 *           pooled  = ln_final(bigG last layer)[first EOT] @ text_projection (chunk 0)
 *           y       = pooled ++ emb(orig_h, orig_w, crop_top, crop_left, target_h, target_w)
 * emb(v) = [cos(v f_j)] ++ [sin(v f_j)], f_j = exp(-ln(10000) j / 128): the timestep-embedding
 * shader, in float32 as sgm and diffusers compute it. CLIP-L pads with the end token, bigG with 0
 * (the towers' tokenizer rules, textenc.c). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip_config.h"
#include "clip_text.h"
#include "gpu.h"
#include "lora.h"
#include "ops.h"
#include "prompt.h"
#include "push.h"
#include "safetensors.h"
#include "textenc_internal.h"

#define SIZE_EMB 256 /* per micro-conditioning value */

struct textenc_cond {
  enum textenc_family family;
  struct textenc *tower[2];
  int towers, clip_skip;
  struct textenc_info info[2];
  struct lora_state *lora;
};

const char *textenc_family_name(enum textenc_family f) {
  switch (f) {
  case TEXTENC_FAMILY_SD1: return "sd1";
  case TEXTENC_FAMILY_SD2: return "sd2";
  case TEXTENC_FAMILY_SDXL: return "sdxl";
  default: return "auto";
  }
}

enum textenc_family textenc_parse_family(const char *name) {
  for (int f = TEXTENC_FAMILY_SD1; f <= TEXTENC_FAMILY_SDXL; f++)
    if (!strcmp(name, textenc_family_name((enum textenc_family)f))) return (enum textenc_family)f;
  return TEXTENC_FAMILY_AUTO;
}

static bool is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool has_prefix(const struct safetensors *st, const char *prefix) {
  size_t n = strlen(prefix);
  for (int i = 0; i < safetensors_count(st); i++)
    if (!strncmp(safetensors_at(st, i)->name, prefix, n)) return true;
  return false;
}

enum status textenc_detect_family(const char *model_path, enum textenc_family *family, char *why, size_t n) {
  char weights[4096], beside[4200], sub[4200];
  *family = TEXTENC_FAMILY_SD1;
  if (is_dir(model_path)) {
    snprintf(sub, sizeof sub, "%s/text_encoder_2", model_path);
    if (is_dir(sub)) {
      *family = TEXTENC_FAMILY_SDXL;
      snprintf(why, n, "a text_encoder_2/ folder");
      return STATUS_OK;
    }
  }
  enum status s = clip_find_text_encoder(model_path, weights, sizeof weights, beside, sizeof beside);
  struct safetensors *st = NULL;
  if (!s) s = safetensors_open(weights, &st);
  if (s) return s;
  struct clip_text_config c;
  if (has_prefix(st, "conditioner.embedders.1.") || safetensors_find(st, "model.diffusion_model.label_emb.0.0.weight")) {
    *family = TEXTENC_FAMILY_SDXL;
    snprintf(why, n, "%s", has_prefix(st, "conditioner.embedders.1.") ? "conditioner.embedders.1.* tensors"
                                                                         : "model.diffusion_model.label_emb.*");
  } else if (safetensors_find(st, "cond_stage_model.model.token_embedding.weight")) {
    *family = TEXTENC_FAMILY_SD2;
    snprintf(why, n, "an OpenCLIP tower under cond_stage_model.model.");
  } else if (clip_text_detect(st, NULL, &c) == STATUS_OK && c.width == 1024) {
    *family = TEXTENC_FAMILY_SD2;
    snprintf(why, n, "a text tower 1024 wide (OpenCLIP ViT-H/14)");
  } else {
    snprintf(why, n, "neither a second tower nor an OpenCLIP ViT-H/14 tower");
  }
  safetensors_close(st);
  status_clear();
  return STATUS_OK;
}

void textenc_cond_destroy(struct textenc_cond *c) {
  if (!c) return;
  lora_state_destroy(c->lora);
  textenc_destroy(c->tower[1]); /* borrows tower 0's device: goes first */
  textenc_destroy(c->tower[0]);
  free(c);
}

/* the second tower of SDXL: text_encoder_2/ of a diffusers folder, or the OpenCLIP tower of a single file */
static enum status create_bigg(const struct textenc_options *opt, struct gpu *g, int clip_skip, struct textenc **out) {
  struct textenc_options o = *opt;
  char path[4200], tok[4200];
  o.device = g;
  o.clip_skip = clip_skip;
  o.prefix = NULL;
  if (is_dir(opt->model_path)) {
    snprintf(path, sizeof path, "%s/text_encoder_2", opt->model_path);
    o.model_path = path;
    if (opt->tokenizer_2_path) {
      o.tokenizer_path = opt->tokenizer_2_path;
    } else {
      snprintf(tok, sizeof tok, "%s/tokenizer_2", opt->model_path);
      if (!is_dir(tok))
        return status_set(STATUS_NOT_FOUND, "%s: a diffusers SDXL folder with text_encoder_2/ but no tokenizer_2/ "
                          "(vocab.json and merges.txt of the second tower); give --tokenizer-2 PATH", opt->model_path);
      o.tokenizer_path = tok;
    }
  } else {
    o.prefix = "conditioner.embedders.1.model.";
    if (opt->tokenizer_2_path) o.tokenizer_path = opt->tokenizer_2_path;
  }
  /* bigG is an OpenCLIP model: GELU, even in HF names without a config.json */
  return textenc_create_tower(&o, &(struct textenc_tower){.config_member = "text_encoder_2", .default_act = ACT_GELU},
                              out);
}

int textenc_cond_create(const struct textenc_options *opt, struct textenc_cond **out) {
  *out = NULL;
  if (!opt || !opt->model_path) return status_set(STATUS_INVALID_ARGUMENT, "textenc_cond_create: no model path");
  struct textenc_cond *c = calloc(1, sizeof *c);
  if (!c) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  char why[256];
  enum status s = STATUS_OK;
  c->family = opt->family;
  if (c->family == TEXTENC_FAMILY_AUTO && (s = textenc_detect_family(opt->model_path, &c->family, why, sizeof why)))
    goto fail;
  c->clip_skip = opt->clip_skip > 0 ? opt->clip_skip : c->family == TEXTENC_FAMILY_SD1 ? 1 : 2;
  c->towers = c->family == TEXTENC_FAMILY_SDXL ? 2 : 1;
  struct textenc_options o0 = *opt;
  o0.clip_skip = c->clip_skip;
  if (c->family == TEXTENC_FAMILY_SDXL && !is_dir(opt->model_path) && !opt->prefix)
    o0.prefix = "conditioner.embedders.0.transformer.";
  if ((s = textenc_create_tower(&o0, &(struct textenc_tower){.config_member = "text_encoder", .default_act = -1},
                                &c->tower[0])))
    goto fail;
  if (c->family == TEXTENC_FAMILY_SDXL) {
    if ((s = create_bigg(opt, textenc_device(c->tower[0]), c->clip_skip, &c->tower[1]))) goto fail;
    /* hidden_states[-K] as is: no final LayerNorm on either tower (K = 1 is the last layer, normed) */
    for (int i = 0; i < 2; i++) textenc_set_final_ln(c->tower[i], c->clip_skip == 1);
  }
  for (int i = 0; i < c->towers; i++) textenc_info(c->tower[i], &c->info[i]);
  if (c->family == TEXTENC_FAMILY_SDXL) {
    const struct textenc_info *g = &c->info[1];
    if (g->projection_dim != g->width) {
      char found[32] = "none";
      if (g->projection_dim) snprintf(found, sizeof found, "%d outputs", g->projection_dim);
      s = status_set(STATUS_FORMAT, "%s: SDXL's second text tower needs '%s%s' [%d, %d] for the pooled vector, found %s",
                     opt->model_path, g->prefix, strcmp(g->layout, "hf") ? "text_projection" : "text_projection.weight",
                     g->width, g->width, found);
      goto fail;
    }
    if (c->info[0].context != c->info[1].context) {
      s = status_set(STATUS_FORMAT, "%s: the two text towers have contexts of %d and %d tokens", opt->model_path,
                     c->info[0].context, c->info[1].context);
      goto fail;
    }
  }
  *out = c;
  status_clear();
  return STATUS_OK;
fail:
  textenc_cond_destroy(c);
  return s;
}

int textenc_cond_lora_targets(const struct textenc_cond *c, struct lora_target t[2]) {
  for (int i = 0; i < c->towers; i++) t[i] = textenc_lora_target(c->tower[i], i ? LORA_NET_TE2 : LORA_NET_TE1);
  return c->towers;
}

enum status textenc_cond_apply_loras(struct textenc_cond *c, const struct lora_spec *specs, int n, bool strict,
                                     struct lora_report *rep) {
  struct lora_target t[2];
  int nt = textenc_cond_lora_targets(c, t);
  enum status s = c->lora ? STATUS_OK : lora_state_create(textenc_device(c->tower[0]), t, nt, &c->lora);
  return s ? s : lora_state_apply(c->lora, specs, n, strict, rep);
}

int textenc_cond_set_loras(struct textenc_cond *c, const char *const *paths, const double *strengths, int n, int strict) {
  struct lora_spec *sp;
  enum status s = textenc_lora_specs(paths, strengths, n, &sp);
  if (!s) s = textenc_cond_apply_loras(c, sp, n, strict != 0, NULL);
  free(sp);
  return s;
}

int textenc_cond_set_clip_skip(struct textenc_cond *c, int clip_skip) {
  int k = clip_skip > 0 ? clip_skip : c->family == TEXTENC_FAMILY_SD1 ? 1 : 2;
  enum status s = STATUS_OK;
  for (int i = 0; i < c->towers && !s; i++) s = textenc_set_clip_skip(c->tower[i], k);
  if (s) { /* leave every tower as it was */
    for (int i = 0; i < c->towers; i++) textenc_set_clip_skip(c->tower[i], c->clip_skip);
    return s;
  }
  c->clip_skip = k;
  if (c->family == TEXTENC_FAMILY_SDXL)
    for (int i = 0; i < 2; i++) textenc_set_final_ln(c->tower[i], k == 1);
  return STATUS_OK;
}

int textenc_cond_info(const struct textenc_cond *c, struct textenc_cond_info *info) {
  memset(info, 0, sizeof *info);
  info->family = c->family;
  info->towers = c->towers;
  info->clip_skip = c->clip_skip;
  for (int i = 0; i < c->towers; i++) info->tower[i] = c->info[i];
  const struct textenc_info *last = &c->info[c->towers - 1];
  info->context_dim = c->info[0].width + (c->towers == 2 ? c->info[1].width : 0);
  info->pooled_dim = last->projection_dim ? last->projection_dim : last->width;
  info->y_dim = c->family == TEXTENC_FAMILY_SDXL ? info->pooled_dim + 6 * SIZE_EMB : 0;
  info->default_size = c->family == TEXTENC_FAMILY_SDXL ? 1024 : c->family == TEXTENC_FAMILY_SD2 ? 768 : 512;
  return STATUS_OK;
}

/* prompts with NULL read as "" (their outputs are zeroed afterwards) */
static const char **nonnull(const char *const *prompts, int n) {
  const char **p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  if (p)
    for (int i = 0; i < n; i++) p[i] = prompts[i] ? prompts[i] : "";
  return p;
}

int textenc_cond_count_chunks(struct textenc_cond *c, const char *const *prompts, int n, int *chunks) {
  const char **p = nonnull(prompts, n);
  if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  *chunks = 1;
  enum status s = STATUS_OK;
  for (int i = 0; i < c->towers && !s; i++) {
    int k;
    if (!(s = textenc_count_chunks(c->tower[i], p, n, &k)) && k > *chunks) *chunks = k;
  }
  free(p);
  return s;
}

int textenc_cond_tokenize(struct textenc_cond *c, const char *const *prompts, int n, int chunks, int32_t *ids,
                          float *weights, int32_t *ids_2, float *weights_2) {
  const char **p = nonnull(prompts, n);
  if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  size_t per = (size_t)n * chunks * CLIP_CONTEXT;
  enum status s = STATUS_OK;
  for (int i = 0; i < c->towers && !s; i++) {
    int32_t *id = i ? ids_2 : ids, *tmp_id = NULL;
    float *w = i ? weights_2 : weights;
    if (!id && !(id = tmp_id = malloc(per * sizeof *id))) s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    if (!s) s = textenc_tokenize(c->tower[i], p, n, chunks, id, w);
    free(tmp_id);
  }
  free(p);
  return s;
}

/* y's size part: [6 * 256] embeddings of the six sizes, on the device */
static enum status size_embedding(struct gpu *g, const struct textenc_sizes *sz, float *out) {
  float v[6] = {(float)sz->original_h, (float)sz->original_w, (float)sz->crop_top,
                (float)sz->crop_left,  (float)sz->target_h,   (float)sz->target_w};
  struct gpu_arena *a = NULL;
  struct gpu_tensor t, e;
  enum status s = gpu_arena_create(g, 64 << 10, "SDXL size embedding", &a);
  if (!s) s = gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){6}, &t);
  if (!s) s = gpu_arena_alloc(a, DT_F32, 2, (int64_t[]){6, SIZE_EMB}, &e);
  if (!s) s = gpu_upload(g, &t, v, sizeof v);
  if (!s && !(s = gpu_begin(g))) {
    s = op_timestep_embedding(g, &t, &e, 10000.0f);
    enum status s2 = gpu_submit(g);
    if (!s) s = s2;
  }
  if (!s) s = gpu_download(g, &e, out, 6 * SIZE_EMB * sizeof *out);
  gpu_arena_destroy(a);
  return s;
}

static enum status check_sizes(const struct textenc_sizes *sz) {
  const int *v = &sz->original_h;
  static const char *const name[6] = {"original height", "original width", "crop top", "crop left", "target height",
                                      "target width"};
  for (int i = 0; i < 6; i++)
    if (v[i] < 0 || v[i] > 1 << 20)
      return status_set(STATUS_INVALID_ARGUMENT, "SDXL %s %d is outside 0..1048576 pixels", name[i], v[i]);
  return STATUS_OK;
}

int textenc_cond_encode_ids(struct textenc_cond *c, const int32_t *ids, const float *weights, const int32_t *ids_2,
                            const float *weights_2, int n, int chunks, const struct textenc_sizes *sizes,
                            float *context, float *pooled, float *y) {
  if (n <= 0 || chunks <= 0) return status_set(STATUS_INVALID_ARGUMENT, "nothing to encode (%d prompts, %d chunks)", n, chunks);
  if (c->towers == 2 && !ids_2) return status_set(STATUS_INVALID_ARGUMENT, "SDXL needs the second tower's token ids");
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  struct textenc_sizes def = {ci.default_size, ci.default_size, 0, 0, ci.default_size, ci.default_size};
  if (!sizes) sizes = &def;
  enum status s = check_sizes(sizes);
  if (s) return s;
  size_t T = (size_t)chunks * CLIP_CONTEXT, P = (size_t)ci.pooled_dim;
  float *part[2] = {NULL, NULL}, *proj = malloc((size_t)n * P * sizeof *proj);
  if (!proj) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (int i = 0; i < c->towers && !s; i++) {
    const struct textenc_info *ti = &c->info[i];
    if (context && !(part[i] = malloc((size_t)n * T * ti->width * sizeof *part[i]))) {
      s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      break;
    }
    bool last = i == c->towers - 1;
    float *want_proj = last && ti->projection_dim ? proj : NULL, *want_pool = last && !ti->projection_dim ? proj : NULL;
    s = textenc_encode_ids(c->tower[i], i ? ids_2 : ids, i ? weights_2 : weights, n, chunks, part[i], want_pool,
                           want_proj);
  }
  if (!s && context) { /* the towers side by side on the channel axis */
    size_t D0 = (size_t)c->info[0].width, D1 = c->towers == 2 ? (size_t)c->info[1].width : 0;
    for (size_t r = 0; r < (size_t)n * T; r++) {
      memcpy(context + r * (D0 + D1), part[0] + r * D0, D0 * sizeof *context);
      if (D1) memcpy(context + r * (D0 + D1) + D0, part[1] + r * D1, D1 * sizeof *context);
    }
  }
  if (!s && pooled) memcpy(pooled, proj, (size_t)n * P * sizeof *pooled);
  if (!s && y && ci.y_dim) {
    float emb[6 * SIZE_EMB];
    if (!(s = size_embedding(textenc_device(c->tower[0]), sizes, emb)))
      for (int i = 0; i < n; i++) {
        memcpy(y + (size_t)i * ci.y_dim, proj + (size_t)i * P, P * sizeof *y);
        memcpy(y + (size_t)i * ci.y_dim + P, emb, sizeof emb);
      }
  }
  free(part[0]);
  free(part[1]);
  free(proj);
  return s;
}

int textenc_cond_encode(struct textenc_cond *c, const char *const *prompts, int n, int chunks,
                        const struct textenc_sizes *sizes, float *context, float *pooled, float *y) {
  if (n <= 0 || chunks <= 0) return status_set(STATUS_INVALID_ARGUMENT, "nothing to encode (%d prompts, %d chunks)", n, chunks);
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  size_t per = (size_t)n * chunks * CLIP_CONTEXT, ctx = (size_t)chunks * CLIP_CONTEXT * ci.context_dim;
  size_t P = (size_t)ci.pooled_dim, Y = (size_t)ci.y_dim;
  /* the prompts given are encoded as one batch; NULL ones are the zero conditioning (not encoded) */
  const char **live = malloc((size_t)n * sizeof *live);
  int32_t *ids[2] = {NULL, NULL};
  float *w[2] = {NULL, NULL}, *c1 = NULL, *p1 = NULL, *y1 = NULL;
  enum status s = live ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  int m = 0;
  for (int i = 0; !s && i < n; i++)
    if (prompts[i]) live[m++] = prompts[i];
  for (int i = 0; !s && m && i < c->towers; i++)
    if (!(ids[i] = malloc(per * sizeof *ids[i])) || !(w[i] = malloc(per * sizeof *w[i])))
      s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s && m && ((context && !(c1 = malloc(m * ctx * sizeof *c1))) || (pooled && !(p1 = malloc(m * P * sizeof *p1))) ||
                  (y && Y && !(y1 = malloc(m * Y * sizeof *y1)))))
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s && m) s = textenc_cond_tokenize(c, live, m, chunks, ids[0], w[0], ids[1], w[1]);
  if (!s && m) s = textenc_cond_encode_ids(c, ids[0], w[0], ids[1], w[1], m, chunks, sizes, c1, p1, y1);
  float emb[6 * SIZE_EMB];
  if (!s && y && Y && m < n) { /* y of a NULL prompt: zeros ++ the size embeddings (the encoded prompts' when there are any) */
    struct textenc_sizes def = {ci.default_size, ci.default_size, 0, 0, ci.default_size, ci.default_size};
    if (m) memcpy(emb, y1 + P, sizeof emb);
    else if (!(s = check_sizes(sizes ? sizes : &def))) s = size_embedding(textenc_device(c->tower[0]), sizes ? sizes : &def, emb);
  }
  for (int i = 0, k = 0; !s && i < n; i++) {
    bool on = prompts[i] != NULL;
    if (context) {
      if (on) memcpy(context + i * ctx, c1 + k * ctx, ctx * sizeof *context);
      else memset(context + i * ctx, 0, ctx * sizeof *context);
    }
    if (pooled) {
      if (on) memcpy(pooled + i * P, p1 + k * P, P * sizeof *pooled);
      else memset(pooled + i * P, 0, P * sizeof *pooled);
    }
    if (y && Y) {
      if (on) {
        memcpy(y + i * Y, y1 + k * Y, Y * sizeof *y);
      } else {
        memset(y + i * Y, 0, P * sizeof *y);
        memcpy(y + i * Y + P, emb, sizeof emb);
      }
    }
    k += on;
  }
  for (int i = 0; i < 2; i++) free(ids[i]), free(w[i]);
  free(live), free(c1), free(p1), free(y1);
  return s;
}
