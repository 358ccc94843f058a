#include "textenc.h"
#include "textenc_internal.h"

#include <stdlib.h>
#include <string.h>

#include "clip_text.h"
#include "clip_vision.h"
#include "lora.h"
#include "gpu.h"
#include "clip_config.h"
#include "prompt.h"
#include "push.h"
#include "safetensors.h"
#include "tokenizer.h"

_Static_assert(TEXTENC_NUMERIC == (int)STATUS_NUMERIC && TEXTENC_FORMAT == (int)STATUS_FORMAT &&
                   TEXTENC_NO_DEVICE == (int)STATUS_NO_DEVICE,
               "textenc_status and enum status must agree");

struct textenc {
  struct gpu *gpu;
  bool own_gpu;
  struct safetensors *st;
  struct clip_text *model;
  struct tokenizer *tok;
  char tok_error[1024]; /* why no tokenizer was found (reported when prompts are used) */
  int clip_skip, literal;
  bool final_ln; /* false: a skipped layer's hidden state without the final LayerNorm (SDXL) */
  int32_t pad, eot;
  char note[1024];
  struct weight_registry reg; /* what the tower loaded where (LoRA merging rewrites it) */
  struct lora_state *lora;    /* textenc_set_loras on this tower alone */
};

int textenc_version(void) { return TEXTENC_VERSION; }

struct textenc_options textenc_default_options(void) {
  return (struct textenc_options){.device_index = -1, .precision = TEXTENC_FP16, .pad_id = -1};
}

const char *textenc_last_error(void) { return status_message(); }

void textenc_destroy(struct textenc *te) {
  if (!te) return;
  lora_state_destroy(te->lora);
  clip_text_destroy(te->model);
  weight_registry_free(&te->reg);
  safetensors_close(te->st);
  tokenizer_destroy(te->tok);
  if (te->own_gpu) gpu_destroy(te->gpu);
  free(te);
}

int textenc_create(const struct textenc_options *opt, struct textenc **out) {
  return textenc_create_tower(opt, &(struct textenc_tower){.config_member = "text_encoder", .default_act = -1}, out);
}

enum status textenc_create_tower(const struct textenc_options *opt, const struct textenc_tower *tw, struct textenc **out) {
  *out = NULL;
  if (!opt || !opt->model_path) return status_set(STATUS_INVALID_ARGUMENT, "textenc_create: no model path");
  struct textenc *te = calloc(1, sizeof *te);
  if (!te) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  te->clip_skip = opt->clip_skip > 0 ? opt->clip_skip : 1;
  te->literal = opt->literal;
  te->final_ln = true;
  char weights[4096], beside[4200];
  enum status s = clip_find_text_encoder(opt->model_path, weights, sizeof weights, beside, sizeof beside);
  if (s) goto fail;
  struct clip_text_options co = {.fp16 = opt->precision == TEXTENC_FP16, .act = -1, .prefix = opt->prefix};
  if (opt->hidden_act) {
    co.act = clip_parse_act(opt->hidden_act);
    if (co.act < 0) {
      s = status_set(STATUS_INVALID_ARGUMENT, "hidden activation '%s': expected gelu or quick_gelu", opt->hidden_act);
      goto fail;
    }
  }
  if ((s = clip_config_text(opt->config_path, tw->config_member, beside, &co, te->note, sizeof te->note))) goto fail;
  if (co.act < 0 && tw->default_act >= 0) co.act = tw->default_act;
  if ((s = safetensors_open(weights, &te->st))) goto fail;
  if (opt->device) {
    te->gpu = opt->device;
  } else {
    struct gpu_options go = {.device_index = opt->device_index, .validation = -1, .profile = -1};
    if ((s = gpu_create(&go, &te->gpu))) goto fail;
    te->own_gpu = true;
  }
  weight_registry_capture(&te->reg);
  s = clip_text_load(te->gpu, te->st, &co, &te->model);
  weight_registry_capture(NULL);
  if (s) goto fail;
  const struct clip_text_config *c = clip_text_config(te->model);
  if (te->clip_skip > c->layers) {
    s = status_set(STATUS_INVALID_ARGUMENT, "clip skip %d is more than the model's %d layers", te->clip_skip, c->layers);
    goto fail;
  }
  /* the tokenizer: an explicit path must load; otherwise a missing one matters only for prompts */
  if (opt->tokenizer_path) {
    if ((s = tokenizer_load(opt->tokenizer_path, &te->tok))) goto fail;
  } else if (tokenizer_find(NULL, opt->model_path, &te->tok)) {
    snprintf(te->tok_error, sizeof te->tok_error, "%s", status_message());
  }
  bool openclip = c->layout == CLIP_LAYOUT_OPENCLIP;
  if (te->tok) {
    tokenizer_set_openclip_specials(te->tok, openclip);
    if (tokenizer_vocab_size(te->tok) > c->vocab) {
      s = status_set(STATUS_FORMAT, "tokenizer %s has %d entries but the model's vocabulary has %d",
                     tokenizer_source(te->tok), tokenizer_vocab_size(te->tok), c->vocab);
      goto fail;
    }
  }
  te->eot = te->tok ? tokenizer_eot(te->tok) : c->vocab - 1;
  te->pad = opt->pad_id >= 0 ? opt->pad_id : (openclip || c->act == ACT_GELU) ? 0 : te->eot;
  *out = te;
  status_clear();
  return STATUS_OK;
fail:
  textenc_destroy(te);
  return s;
}

int textenc_info(const struct textenc *te, struct textenc_info *info) {
  const struct clip_text_config *c = clip_text_config(te->model);
  *info = (struct textenc_info){.width = c->width,
                                .layers = c->layers,
                                .heads = c->heads,
                                .context = c->ctx,
                                .vocab = c->vocab,
                                .mlp = c->mlp,
                                .projection_dim = c->proj,
                                .fp16 = clip_text_fp16(te->model),
                                .activation = c->act == ACT_GELU ? "gelu" : "quick_gelu",
                                .layout = c->layout == CLIP_LAYOUT_HF ? "hf" : "openclip",
                                .prefix = c->prefix,
                                .device_name = gpu_info(te->gpu)->name,
                                .weight_bytes = clip_text_weight_bytes(te->model)};
  return STATUS_OK;
}

int textenc_set_clip_skip(struct textenc *te, int clip_skip) {
  int layers = clip_text_config(te->model)->layers;
  if (clip_skip < 1 || clip_skip > layers)
    return status_set(STATUS_INVALID_ARGUMENT, "clip skip %d is outside 1..%d (the model's layers)", clip_skip, layers);
  te->clip_skip = clip_skip;
  return STATUS_OK;
}

/* Internal: where heads/activation came from (for --verbose). */

const char *textenc_config_note(const struct textenc *te) { return te->note; }

void textenc_set_final_ln(struct textenc *te, bool on) { te->final_ln = on; }
struct gpu *textenc_device(const struct textenc *te) { return te->gpu; }

struct lora_target textenc_lora_target(const struct textenc *te, enum lora_net net) {
  return (struct lora_target){.reg = &te->reg, .net = net, .alias = clip_text_lora_alias};
}

enum status textenc_apply_loras(struct textenc *te, const struct lora_spec *specs, int n, bool strict,
                                struct lora_report *rep) {
  struct lora_target t = textenc_lora_target(te, LORA_NET_TE1);
  enum status s = te->lora ? STATUS_OK : lora_state_create(te->gpu, &t, 1, &te->lora);
  return s ? s : lora_state_apply(te->lora, specs, n, strict, rep);
}

enum status textenc_lora_specs(const char *const *paths, const double *strengths, int n, struct lora_spec **out) {
  *out = NULL;
  if (n < 0 || (n > 0 && (!paths || !strengths))) return status_set(STATUS_INVALID_ARGUMENT, "set_loras: no paths or strengths");
  struct lora_spec *sp = calloc((size_t)(n > 0 ? n : 1), sizeof *sp);
  if (!sp) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (int i = 0; i < n; i++) sp[i] = (struct lora_spec){.path = paths[i], .strength = strengths[i]};
  *out = sp;
  return STATUS_OK;
}

int textenc_set_loras(struct textenc *te, const char *const *paths, const double *strengths, int n, int strict) {
  struct lora_spec *sp;
  enum status s = textenc_lora_specs(paths, strengths, n, &sp);
  if (!s) s = textenc_apply_loras(te, sp, n, strict != 0, NULL);
  free(sp);
  return s;
}
bool textenc_has_tokenizer(const struct textenc *te) { return te->tok != NULL; }

static enum status tokenize_all(struct textenc *te, const char *const *prompts, int n, struct prompt_tokens *p) {
  if (!te->tok) return status_set(STATUS_NOT_FOUND, "%s", te->tok_error);
  for (int i = 0; i < n; i++) {
    enum status s = prompt_tokenize(te->tok, prompts[i] ? prompts[i] : "", te->literal ? PROMPT_LITERAL : PROMPT_SYNTAX,
                                    te->pad, &p[i]);
    if (s) return s;
  }
  return STATUS_OK;
}

int textenc_count_chunks(struct textenc *te, const char *const *prompts, int n, int *chunks) {
  struct prompt_tokens *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
  if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = tokenize_all(te, prompts, n, p);
  *chunks = 1;
  for (int i = 0; i < n; i++)
    if (p[i].n_chunks > *chunks) *chunks = p[i].n_chunks;
  for (int i = 0; i < n; i++) prompt_tokens_free(&p[i]);
  free(p);
  return s;
}

int textenc_tokenize(struct textenc *te, const char *const *prompts, int n, int chunks, int32_t *ids, float *weights) {
  struct prompt_tokens *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
  if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = tokenize_all(te, prompts, n, p);
  size_t per = (size_t)chunks * CLIP_CONTEXT;
  for (int i = 0; i < n && !s; i++) {
    if (p[i].n_chunks > chunks) {
      s = status_set(STATUS_INVALID_ARGUMENT, "prompt %d needs %d chunks of 77 tokens, more than the %d given", i,
                     p[i].n_chunks, chunks);
      break;
    }
    if ((s = prompt_tokens_extend(&p[i], chunks, tokenizer_sot(te->tok), te->eot, te->pad))) break;
    memcpy(ids + i * per, p[i].ids, per * sizeof *ids);
    if (weights) memcpy(weights + i * per, p[i].weights, per * sizeof *weights);
  }
  for (int i = 0; i < n; i++) prompt_tokens_free(&p[i]);
  free(p);
  return s;
}

/* A1111's emphasis: z *= w per token, then z *= mean(z before) / mean(z after), per chunk. */
static void apply_weights(float *cond, const float *w, int n_seq, int T, int D) {
  for (int s = 0; s < n_seq; s++) {
    float *z = cond + (size_t)s * T * D;
    const float *ws = w + (size_t)s * T;
    bool all_one = true;
    for (int t = 0; t < T && all_one; t++) all_one = ws[t] == 1.0f;
    if (all_one) continue;
    double before = 0, after = 0;
    for (int t = 0; t < T; t++)
      for (int d = 0; d < D; d++) {
        before += z[t * D + d];
        z[t * D + d] *= ws[t];
        after += z[t * D + d];
      }
    if (after != 0) {
      float k = (float)(before / after);
      for (size_t i = 0; i < (size_t)T * D; i++) z[i] *= k;
    }
  }
}

int textenc_encode_ids(struct textenc *te, const int32_t *ids, const float *weights, int n, int chunks, float *cond,
                       float *pooled, float *projected) {
  const struct clip_text_config *c = clip_text_config(te->model);
  if (n <= 0 || chunks <= 0) return status_set(STATUS_INVALID_ARGUMENT, "nothing to encode (%d prompts, %d chunks)", n, chunks);
  int S = n * chunks, D = c->width, T = c->ctx, P = c->proj;
  float *all_pooled = NULL, *all_proj = NULL;
  if (pooled && !(all_pooled = malloc((size_t)S * D * sizeof *all_pooled)))
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (projected && P && !(all_proj = malloc((size_t)S * P * sizeof *all_proj))) {
    free(all_pooled);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  enum status s = clip_text_forward(te->model, ids, S, te->clip_skip, te->final_ln, te->eot, cond, all_pooled, all_proj);
  if (!s && cond && weights) apply_weights(cond, weights, S, T, D);
  for (int i = 0; !s && i < n; i++) { /* pooled and projected of each prompt's first chunk */
    if (pooled) memcpy(pooled + (size_t)i * D, all_pooled + (size_t)i * chunks * D, (size_t)D * sizeof *pooled);
    if (projected && P) memcpy(projected + (size_t)i * P, all_proj + (size_t)i * chunks * P, (size_t)P * sizeof *projected);
  }
  free(all_pooled);
  free(all_proj);
  return s;
}

int textenc_encode(struct textenc *te, const char *const *prompts, int n, int chunks, float *cond, float *pooled,
                   float *projected) {
  size_t per = (size_t)chunks * CLIP_CONTEXT;
  int32_t *ids = malloc((size_t)n * per * sizeof *ids);
  float *w = malloc((size_t)n * per * sizeof *w);
  enum status s = ids && w ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) s = textenc_tokenize(te, prompts, n, chunks, ids, w);
  if (!s) s = textenc_encode_ids(te, ids, w, n, chunks, cond, pooled, projected);
  free(ids);
  free(w);
  return s;
}

struct textenc_vision {
  struct gpu *gpu;
  bool own_gpu;
  struct safetensors *st;
  struct clip_vision *model;
};

void textenc_vision_destroy(struct textenc_vision *tv) {
  if (!tv) return;
  clip_vision_destroy(tv->model);
  safetensors_close(tv->st);
  if (tv->own_gpu) gpu_destroy(tv->gpu);
  free(tv);
}

int textenc_vision_create(const struct textenc_options *opt, struct textenc_vision **out) {
  *out = NULL;
  if (!opt || !opt->model_path) return status_set(STATUS_INVALID_ARGUMENT, "textenc_vision_create: no model path");
  struct textenc_vision *tv = calloc(1, sizeof *tv);
  if (!tv) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  int heads = 0;
  enum status s = clip_vision_heads(opt->config_path, &heads);
  if (!s) s = safetensors_open(opt->model_path, &tv->st);
  if (!s) {
    if (opt->device) {
      tv->gpu = opt->device;
    } else {
      struct gpu_options go = {.device_index = opt->device_index, .validation = -1, .profile = -1};
      if (!(s = gpu_create(&go, &tv->gpu))) tv->own_gpu = true;
    }
  }
  if (!s) s = clip_vision_load(tv->gpu, tv->st, opt->precision == TEXTENC_FP16, heads, -1, &tv->model);
  if (s) {
    textenc_vision_destroy(tv);
    return s;
  }
  *out = tv;
  return STATUS_OK;
}

int textenc_vision_info(const struct textenc_vision *tv, int *image_size, int *width, int *projection_dim) {
  const struct clip_vision_config *c = clip_vision_config(tv->model);
  if (image_size) *image_size = c->image;
  if (width) *width = c->width;
  if (projection_dim) *projection_dim = c->proj;
  return STATUS_OK;
}

int textenc_vision_embed(struct textenc_vision *tv, const float *pixels, int n, float *image_embeds, float *pooled) {
  return clip_vision_forward(tv->model, pixels, n, pooled, image_embeds, NULL);
}
