#include "unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "resnet.h"
#include "lora.h"
#include "weight_loader.h"
#include "workspace.h"

#define GN_GROUPS 32
#define MAX_DEPTH 16

enum layer_kind { L_CONV, L_RES, L_ST, L_DOWN, L_UP };

struct transformer_block { /* BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward */
  struct gpu_tensor norm1_w, norm1_b, q1, k1, v1, out1_w, out1_b;
  struct gpu_tensor norm2_w, norm2_b, q2, k2, v2, out2_w, out2_b;
  struct gpu_tensor norm3_w, norm3_b, ff1_w, ff1_b, ff2_w, ff2_b;
};

struct spatial_transformer {
  struct gpu_tensor norm_w, norm_b, proj_in_w, proj_in_b, proj_out_w, proj_out_b;
  struct transformer_block blocks[MAX_DEPTH];
  int depth, ff_inner;
};

struct layer {
  enum layer_kind kind;
  int cin, cout, heads;
  struct gpu_tensor w, b;       /* L_CONV, L_DOWN, L_UP */
  struct resnet *res;           /* L_RES */
  struct spatial_transformer *st; /* L_ST */
};

struct seq {
  struct layer l[3];
  int n;
};

/* ldm -> diffusers names: see diffusers_name */
struct diffusers_map {
  int res; /* num_res_blocks */
  const struct safetensors *st;
};

struct unet {
  struct gpu *g;
  bool fp16;
  struct unet_info info;
  struct gpu_arena *weights, *persist, *temps;
  struct seq input[32], middle, output[32];
  struct gpu_tensor te0_w, te0_b, te2_w, te2_b, out_norm_w, out_norm_b, out_conv_w, out_conv_b;
  struct gpu_tensor le0_w, le0_b, le2_w, le2_b; /* SDXL label_emb: Linear(adm, temb), SiLU, Linear(temb, temb) */
  uint64_t act_bytes;
  int64_t evaluations, images; /* unet_forward calls and batch items run */
  struct weight_registry reg;  /* what was loaded where (LoRA merging rewrites it) */
  struct diffusers_map lora_map;
  /* the last forward, recorded once and replayed while the shape stays the same */
  struct gpu_recording *rec;
  int rec_N, rec_H, rec_W, rec_T;
  struct gpu_tensor rec_x, rec_t, rec_ctx, rec_y, rec_eps;
};

/* --- diffusers' UNet2DConditionModel names (a unet/ folder), through one rename map ---
 * ldm input_blocks.i (i >= 1) is level L = (i - 1) / (R + 1), slot r = (i - 1) % (R + 1): resnets.r and
 * attentions.r, or the level's downsampler when r == R; output_blocks.i is up level i / (R + 1), slot
 * i % (R + 1) (R + 1 resnets a level), its upsampler at conv; R = num_res_blocks. */

static bool is_diffusers(const struct safetensors *st) {
  return safetensors_find(st, "conv_in.weight") && safetensors_find(st, "time_embedding.linear_1.weight");
}

static int diffusers_res_blocks(const struct safetensors *st) {
  int r = 0;
  char key[96];
  for (;; r++) {
    snprintf(key, sizeof key, "down_blocks.0.resnets.%d.conv1.weight", r);
    if (!safetensors_find(st, key)) break;
  }
  return r;
}

/* ResBlock leaves: ldm -> diffusers; *tail: what follows the ldm leaf ("weight") */
static const char *res_leaf(const char *rest, const char **tail) {
  static const char *const map[][2] = {{"in_layers.0.", "norm1."}, {"in_layers.2.", "conv1."},
                                       {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
                                       {"out_layers.3.", "conv2."}, {"skip_connection.", "conv_shortcut."}};
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (!strncmp(rest, map[i][0], strlen(map[i][0]))) {
      *tail = rest + strlen(map[i][0]);
      return map[i][1];
    }
  return NULL;
}

static bool diffusers_name(const char *name, char *key, size_t n, const void *ctx) {
  const struct diffusers_map *m = ctx;
  static const char *const top[][2] = {{"time_embed.0.", "time_embedding.linear_1."},
                                       {"time_embed.2.", "time_embedding.linear_2."},
                                       {"label_emb.0.0.", "add_embedding.linear_1."},
                                       {"label_emb.0.2.", "add_embedding.linear_2."},
                                       {"input_blocks.0.0.", "conv_in."},
                                       {"out.0.", "conv_norm_out."},
                                       {"out.2.", "conv_out."}};
  for (size_t i = 0; i < sizeof top / sizeof *top; i++)
    if (!strncmp(name, top[i][0], strlen(top[i][0]))) {
      snprintf(key, n, "%s%s", top[i][1], name + strlen(top[i][0]));
      return true;
    }
  int I = 0, J = 0, used = 0, R = m->res;
  const char *tail = "";
  if (sscanf(name, "input_blocks.%d.%d.%n", &I, &J, &used) == 2 && used > 0 && I >= 1) {
    const char *rest = name + used, *leaf = res_leaf(rest, &tail);
    int L = (I - 1) / (R + 1), r = (I - 1) % (R + 1);
    /* layer J of the block: 0 the ResBlock (or the downsampler), 1 the transformer */
    if (!strncmp(rest, "op.", 3)) snprintf(key, n, "down_blocks.%d.downsamplers.0.conv.%s", L, rest + 3);
    else if (leaf) snprintf(key, n, "down_blocks.%d.resnets.%d.%s%s", L, r, leaf, tail);
    else snprintf(key, n, "down_blocks.%d.attentions.%d.%s", L, r, rest);
    return leaf ? J == 0 && r < R : strncmp(rest, "op.", 3) ? J == 1 && r < R : J == 0 && r == R;
  }
  used = 0;
  if (sscanf(name, "output_blocks.%d.%d.%n", &I, &J, &used) == 2 && used > 0) {
    const char *rest = name + used, *leaf = res_leaf(rest, &tail);
    int L = I / (R + 1), r = I % (R + 1);
    /* layer J: 0 the ResBlock, 1 the transformer or the upsampler, 2 the upsampler after a transformer */
    if (!strncmp(rest, "conv.", 5)) snprintf(key, n, "up_blocks.%d.upsamplers.0.conv.%s", L, rest + 5);
    else if (leaf) snprintf(key, n, "up_blocks.%d.resnets.%d.%s%s", L, r, leaf, tail);
    else snprintf(key, n, "up_blocks.%d.attentions.%d.%s", L, r, rest);
    if (!strncmp(rest, "conv.", 5)) { /* the level's last slot upsamples, after its transformer when it has one */
      char probe[96];
      snprintf(probe, sizeof probe, "up_blocks.%d.attentions.%d.norm.weight", L, r);
      if (!m->st) return r == R; /* naming only (LoRA): no file to ask */
      return r == R && J == (safetensors_find(m->st, probe) ? 2 : 1);
    }
    return leaf ? J == 0 : J == 1;
  }
  used = 0;
  if (sscanf(name, "middle_block.%d.%n", &J, &used) == 1 && used > 0) {
    const char *rest = name + used, *leaf = res_leaf(rest, &tail);
    if (leaf) snprintf(key, n, "mid_block.resnets.%d.%s%s", J ? 1 : 0, leaf, tail);
    else snprintf(key, n, "mid_block.attentions.0.%s", rest);
    return leaf ? J != 1 : J == 1;
  }
  return false;
}

bool unet_present(const struct safetensors *st, const char *prefix) {
  char key[256];
  snprintf(key, sizeof key, "%sinput_blocks.0.0.weight", prefix ? prefix : "model.diffusion_model.");
  return safetensors_find(st, key) != NULL || (!prefix && is_diffusers(st));
}

/* --- loading --- */

struct loading {
  struct unet *u;
  struct weight_loader *l;
  const struct unet_options *opt;
  enum dtype mat;
};

static enum status load_conv(struct loading *ld, const char *base, int cin, int cout, int k, struct gpu_tensor *w,
                             struct gpu_tensor *b) {
  return weight_load_conv(ld->l, base, cin, cout, k, ld->mat, w, b);
}

static enum status load_linear(struct loading *ld, const char *base, int in, int out, struct gpu_tensor *w,
                               struct gpu_tensor *b) {
  return weight_load_linear(ld->l, base, in, out, ld->mat, w, b);
}

static enum status load_res(struct loading *ld, const char *base, struct layer *L) {
  if (!(L->res = calloc(1, sizeof *L->res))) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = resnet_load(ld->l, &resnet_unet_names, base, ld->u->info.temb_dim, ld->mat, 1e-5f, L->res);
  L->kind = L_RES;
  L->cin = L->res->cin;
  L->cout = L->res->cout;
  return s;
}

static enum status load_attn(struct loading *ld, const char *base, int C, int ctx, struct gpu_tensor *q,
                             struct gpu_tensor *k, struct gpu_tensor *v, struct gpu_tensor *ow, struct gpu_tensor *ob) {
  char sub[700];
  enum status s;
  snprintf(sub, sizeof sub, "%s.to_q", base);
  if ((s = load_linear(ld, sub, C, C, q, NULL))) return s;
  snprintf(sub, sizeof sub, "%s.to_k", base);
  if ((s = load_linear(ld, sub, ctx, C, k, NULL))) return s;
  snprintf(sub, sizeof sub, "%s.to_v", base);
  if ((s = load_linear(ld, sub, ctx, C, v, NULL))) return s;
  snprintf(sub, sizeof sub, "%s.to_out.0", base);
  return load_linear(ld, sub, C, C, ow, ob);
}

static enum status load_st(struct loading *ld, const char *base, int level, struct layer *L) {
  int64_t sh[8];
  char name[512], sub[600];
  snprintf(name, sizeof name, "%s.norm.weight", base);
  enum status s = weight_dims(ld->l, name, 1, sh);
  if (s) return s;
  int C = (int)sh[0];
  L->kind = L_ST;
  L->cin = L->cout = C;
  const struct unet_options *o = ld->opt;
  if (level < 0 || level >= UNET_MAX_LEVELS) /* a checkpoint with more upsamplers than downsamplers */
    return status_set(STATUS_FORMAT, "%s: '%s' lies outside the U-Net's levels (0..%d): its up and down samplers do not pair",
                      safetensors_path(ld->l->st), base, UNET_MAX_LEVELS - 1);
  int nd;
  int64_t pin[8];
  snprintf(name, sizeof name, "%s.proj_in.weight", base);
  weight_shape(ld->l, name, &nd, pin);
  bool linear_proj = nd == 2; /* SD 2.x / SDXL use_linear_in_transformer */
  /* what the tensors cannot tell: heads from the config, else the family's rule (ldm num_heads 8
   * for SD 1.x's 1x1-conv projections; num_head_channels 64 for the linear ones of SD 2.x / SDXL) */
  int head_dim = o->head_dim > 0 ? o->head_dim : 0;
  L->heads = head_dim ? C / head_dim : o->heads[level] > 0 ? o->heads[level] : o->heads_all > 0 ? o->heads_all
             : linear_proj ? C / 64 : 8;
  if (L->heads <= 0 || C % L->heads)
    return status_set(STATUS_FORMAT, "%s: %d channels at '%s' do not split into %d attention heads (set the heads with "
                      "--config)", safetensors_path(ld->l->st), C, base, L->heads);
  ld->u->info.heads[level] = L->heads;
  if (!(L->st = calloc(1, sizeof *L->st))) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  struct spatial_transformer *st = L->st;
  if ((s = weight_load_vector(ld->l, base, "norm.weight", C, &st->norm_w)) || (s = weight_load_vector(ld->l, base, "norm.bias", C, &st->norm_b))) return s;
  snprintf(sub, sizeof sub, "%s.proj_in", base);
  if ((s = linear_proj ? load_linear(ld, sub, C, C, &st->proj_in_w, &st->proj_in_b)
                       : load_conv(ld, sub, C, C, 1, &st->proj_in_w, &st->proj_in_b))) return s;
  snprintf(sub, sizeof sub, "%s.proj_out", base);
  if ((s = linear_proj ? load_linear(ld, sub, C, C, &st->proj_out_w, &st->proj_out_b)
                       : load_conv(ld, sub, C, C, 1, &st->proj_out_w, &st->proj_out_b))) return s;
  for (st->depth = 0; st->depth < MAX_DEPTH; st->depth++) {
    snprintf(name, sizeof name, "%s.transformer_blocks.%d.norm1.weight", base, st->depth);
    if (!weight_exists(ld->l, name)) break;
  }
  if (st->depth == 0) return status_set(STATUS_FORMAT, "%s: '%s' has no transformer_blocks", safetensors_path(ld->l->st), base);
  snprintf(name, sizeof name, "%s.transformer_blocks.0.attn2.to_k.weight", base);
  if ((s = weight_dims(ld->l, name, 2, sh))) return s;
  int ctx = (int)sh[1];
  if (ld->u->info.context_dim && ctx != ld->u->info.context_dim)
    return status_set(STATUS_FORMAT, "%s: '%s' expects context width %d, other blocks %d", safetensors_path(ld->l->st),
                      name, ctx, ld->u->info.context_dim);
  ld->u->info.context_dim = ctx;
  snprintf(name, sizeof name, "%s.transformer_blocks.0.ff.net.2.weight", base);
  if ((s = weight_dims(ld->l, name, 2, sh))) return s;
  st->ff_inner = (int)sh[1];
  for (int d = 0; d < st->depth; d++) {
    struct transformer_block *b = &st->blocks[d];
    char tb[560];
    snprintf(tb, sizeof tb, "%s.transformer_blocks.%d", base, d);
    if ((s = weight_load_vector(ld->l, tb, "norm1.weight", C, &b->norm1_w)) || (s = weight_load_vector(ld->l, tb, "norm1.bias", C, &b->norm1_b)) ||
        (s = weight_load_vector(ld->l, tb, "norm2.weight", C, &b->norm2_w)) || (s = weight_load_vector(ld->l, tb, "norm2.bias", C, &b->norm2_b)) ||
        (s = weight_load_vector(ld->l, tb, "norm3.weight", C, &b->norm3_w)) || (s = weight_load_vector(ld->l, tb, "norm3.bias", C, &b->norm3_b)))
      return s;
    snprintf(sub, sizeof sub, "%s.attn1", tb);
    if ((s = load_attn(ld, sub, C, C, &b->q1, &b->k1, &b->v1, &b->out1_w, &b->out1_b))) return s;
    snprintf(sub, sizeof sub, "%s.attn2", tb);
    if ((s = load_attn(ld, sub, C, ctx, &b->q2, &b->k2, &b->v2, &b->out2_w, &b->out2_b))) return s;
    snprintf(sub, sizeof sub, "%s.ff.net.0.proj", tb);
    if ((s = load_linear(ld, sub, C, 2 * st->ff_inner, &b->ff1_w, &b->ff1_b))) return s;
    snprintf(sub, sizeof sub, "%s.ff.net.2", tb);
    if ((s = load_linear(ld, sub, st->ff_inner, C, &b->ff2_w, &b->ff2_b))) return s;
  }
  ld->u->info.n_transformers++;
  return STATUS_OK;
}

/* One TimestepEmbedSequential: up to 3 layers, each recognised by its keys. */
static enum status load_seq(struct loading *ld, const char *base, int *level, bool output, struct seq *q) {
  q->n = 0;
  for (int j = 0; j < 3; j++) {
    char lb[128], name[256];
    snprintf(lb, sizeof lb, "%s.%d", base, j);
    struct layer *L = &q->l[q->n];
    enum status s = STATUS_OK;
    int64_t sh[8];
    snprintf(name, sizeof name, "%s.in_layers.2.weight", lb);
    if (weight_exists(ld->l, name)) {
      s = load_res(ld, lb, L);
      ld->u->info.n_res++;
    } else if (snprintf(name, sizeof name, "%s.proj_in.weight", lb), weight_exists(ld->l, name)) {
      s = load_st(ld, lb, *level, L);
    } else if (snprintf(name, sizeof name, "%s.op.weight", lb), weight_exists(ld->l, name)) {
      if (!(s = weight_dims(ld->l, name, 4, sh))) {
        L->kind = L_DOWN;
        L->cin = (int)sh[1];
        L->cout = (int)sh[0];
        snprintf(name, sizeof name, "%s.op", lb);
        s = load_conv(ld, name, L->cin, L->cout, 3, &L->w, &L->b);
        (*level)++;
      }
    } else if (snprintf(name, sizeof name, "%s.conv.weight", lb), output && weight_exists(ld->l, name)) {
      if (!(s = weight_dims(ld->l, name, 4, sh))) {
        L->kind = L_UP;
        L->cin = (int)sh[1];
        L->cout = (int)sh[0];
        snprintf(name, sizeof name, "%s.conv", lb);
        s = load_conv(ld, name, L->cin, L->cout, 3, &L->w, &L->b);
        (*level)--;
      }
    } else {
      break;
    }
    if (s) return s;
    q->n++;
  }
  return STATUS_OK;
}

static enum status load_all(struct weight_loader *l, void *model) {
  struct loading *ld = model;
  struct unet *u = ld->u;
  ld->l = l;
  struct unet_info *in = &u->info;
  int64_t sh[8];
  enum status s;
  memset(in, 0, sizeof *in);
  if ((s = weight_dims(ld->l, "input_blocks.0.0.weight", 4, sh))) return s;
  in->model_channels = (int)sh[0];
  in->in_channels = (int)sh[1];
  if ((s = weight_dims(ld->l, "time_embed.0.weight", 2, sh))) return s;
  in->temb_dim = (int)sh[0];
  if (sh[1] != in->model_channels)
    return status_set(STATUS_FORMAT, "%s: time_embed.0.weight is [%lld, %lld], expected [*, %d] (model channels)",
                      safetensors_path(ld->l->st), (long long)sh[0], (long long)sh[1], in->model_channels);
  if ((s = load_linear(ld, "time_embed.0", in->model_channels, in->temb_dim, &u->te0_w, &u->te0_b)) ||
      (s = load_linear(ld, "time_embed.2", in->temb_dim, in->temb_dim, &u->te2_w, &u->te2_b)))
    return s;
  if (weight_exists(ld->l, "label_emb.0.0.weight")) { /* SDXL: the vector y joins the time embedding */
    if ((s = weight_dims(ld->l, "label_emb.0.0.weight", 2, sh))) return s;
    in->adm_in_channels = (int)sh[1];
    if ((s = load_linear(ld, "label_emb.0.0", in->adm_in_channels, in->temb_dim, &u->le0_w, &u->le0_b)) ||
        (s = load_linear(ld, "label_emb.0.2", in->temb_dim, in->temb_dim, &u->le2_w, &u->le2_b)))
      return s;
  }
  struct layer *first = &u->input[0].l[0];
  first->kind = L_CONV;
  first->cin = in->in_channels;
  first->cout = in->model_channels;
  u->input[0].n = 1;
  if ((s = load_conv(ld, "input_blocks.0.0", in->in_channels, in->model_channels, 3, &first->w, &first->b))) return s;
  int level = 0;
  char base[64];
  for (in->n_input = 1; in->n_input < 32; in->n_input++) {
    snprintf(base, sizeof base, "input_blocks.%d", in->n_input);
    struct seq *q = &u->input[in->n_input];
    if ((s = load_seq(ld, base, &level, false, q))) return s;
    if (q->n == 0) break;
  }
  in->levels = level + 1;
  if ((s = load_seq(ld, "middle_block", &level, false, &u->middle))) return s;
  if (u->middle.n == 0) return status_set(STATUS_FORMAT, "%s: no middle_block", safetensors_path(ld->l->st));
  for (in->n_output = 0; in->n_output < 32; in->n_output++) {
    snprintf(base, sizeof base, "output_blocks.%d", in->n_output);
    struct seq *q = &u->output[in->n_output];
    if ((s = load_seq(ld, base, &level, true, q))) return s;
    if (q->n == 0) break;
  }
  if (in->n_output != in->n_input)
    return status_set(STATUS_FORMAT, "%s: %d input blocks but %d output blocks", safetensors_path(ld->l->st), in->n_input,
                      in->n_output);
  if ((s = weight_dims(ld->l, "out.2.weight", 4, sh))) return s;
  in->out_channels = (int)sh[0];
  if ((s = weight_load_vector(ld->l, "out.0", "weight", in->model_channels, &u->out_norm_w)) ||
      (s = weight_load_vector(ld->l, "out.0", "bias", in->model_channels, &u->out_norm_b)) ||
      (s = load_conv(ld, "out.2", in->model_channels, in->out_channels, 3, &u->out_conv_w, &u->out_conv_b)))
    return s;
  if (in->context_dim == 0) return status_set(STATUS_FORMAT, "%s: no cross-attention layers", safetensors_path(ld->l->st));
  return STATUS_OK;
}

static void free_layers(struct seq *q) {
  for (int i = 0; i < q->n; i++) {
    free(q->l[i].res);
    free(q->l[i].st);
  }
  q->n = 0;
}

/* between the measuring and the loading pass (weight_load_model), and at the end */
static void free_all_layers(void *model) {
  struct unet *u = ((struct loading *)model)->u;
  for (int i = 0; i < 32; i++) free_layers(&u->input[i]), free_layers(&u->output[i]);
  free_layers(&u->middle);
}

void unet_release_activations(struct unet *u) {
  if (!u) return;
  gpu_recording_destroy(u->rec); /* it names the activation buffers */
  u->rec = NULL;
  u->rec_N = 0;
  gpu_arena_destroy(u->temps);
  gpu_arena_destroy(u->persist);
  u->temps = u->persist = NULL;
}

void unet_destroy(struct unet *u) {
  if (!u) return;
  free_all_layers(&(struct loading){.u = u});
  unet_release_activations(u);
  gpu_arena_destroy(u->weights);
  weight_registry_free(&u->reg);
  free(u);
}

enum status unet_load(struct gpu *g, const struct safetensors *st, const struct unet_options *opt, struct unet **out) {
  *out = NULL;
  struct unet *u = calloc(1, sizeof *u);
  if (!u) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  u->g = g;
  u->fp16 = opt->fp16 && gpu_has_fp16(g) && gpu_texel_format_ok(g, VK_FORMAT_R16G16B16A16_SFLOAT) &&
            gpu_texel_format_ok(g, VK_FORMAT_R16_SFLOAT);
  const char *prefix = opt->prefix ? opt->prefix : "model.diffusion_model.";
  struct loading ld = {.u = u, .opt = opt, .mat = u->fp16 ? DT_F16 : DT_F32};
  /* a diffusers unet/ file: its names through the rename map (no prefix) */
  struct diffusers_map dm = {0};
  bool diffusers = !opt->prefix && !unet_present(st, prefix) && is_diffusers(st);
  if (diffusers) {
    prefix = "";
    dm.res = diffusers_res_blocks(st);
    dm.st = st;
  }
  weight_registry_capture(&u->reg);
  enum status s = diffusers && dm.res < 1
                      ? status_set(STATUS_FORMAT, "%s: a diffusers U-Net without down_blocks.0.resnets.0", safetensors_path(st))
                      : weight_load_model_renamed(g, st, prefix, diffusers ? diffusers_name : NULL, &dm, "U-Net weights",
                                                  load_all, free_all_layers, &ld, &u->weights);
  weight_registry_capture(NULL);
  u->lora_map.res = (u->info.n_input - u->info.levels) / (u->info.levels > 0 ? u->info.levels : 1);
  if (s) {
    unet_destroy(u);
    return s;
  }
  for (int i = 0; i < safetensors_count(st); i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    if (!strncmp(t->name, prefix, strlen(prefix))) u->info.parameters += t->numel;
  }
  *out = u;
  return STATUS_OK;
}

void unet_get_info(const struct unet *u, struct unet_info *info) { *info = u->info; }

/* a U-Net weight answers to its ldm name and its diffusers name, both without ".weight", '.' as '_'
 * (kohya writes SD 1.x LoRAs with diffusers' names and SDXL ones with ldm's; PEFT uses diffusers') */
static int lora_alias(const struct weight_entry *e, char names[LORA_MAX_ALIASES][LORA_NAME], const void *ctx) {
  const struct unet *u = ctx;
  size_t len = strlen(e->name);
  if (len < 8 || strcmp(e->name + len - 7, ".weight")) return 0;
  char key[LORA_NAME] = "";
  diffusers_name(e->name, key, sizeof key, &u->lora_map);
  const char *src[2] = {e->name, key};
  int n = 0;
  for (int i = 0; i < 2; i++) {
    size_t l = strlen(src[i]);
    if (l < 8 || l - 7 >= LORA_NAME) continue;
    memcpy(names[n], src[i], l - 7);
    names[n][l - 7] = 0;
    for (char *c = names[n]; *c; c++)
      if (*c == '.') *c = '_';
    n++;
  }
  return n;
}

struct lora_target unet_lora_target(const struct unet *u) {
  return (struct lora_target){.reg = &u->reg, .net = LORA_NET_UNET, .alias = lora_alias, .ctx = u};
}
void unet_counts(const struct unet *u, int64_t *evaluations, int64_t *images) {
  *evaluations = u->evaluations;
  *images = u->images;
}
uint64_t unet_weight_bytes(const struct unet *u) { return gpu_arena_used(u->weights); }
uint64_t unet_activation_bytes(const struct unet *u) { return u->act_bytes; }

/* --- forward --- */

struct run {
  struct unet *u;
  struct workspace P, T; /* persistent tensors, per-layer temporaries */
  int N, ctx_len;
  struct gpu_tensor context, semb, scratch;
};

#define RUN(call) WORKSPACE_RECORD(&r->T, call)

static enum status attention_block(struct run *r, const struct gpu_tensor *h, const struct gpu_tensor *kv_src,
                                   const struct gpu_tensor *wq, const struct gpu_tensor *wk, const struct gpu_tensor *wv,
                                   const struct gpu_tensor *wo, const struct gpu_tensor *bo, int heads,
                                   const struct gpu_tensor *t) {
  struct gpu *g = r->u->g;
  int64_t N = h->shape[0], P = h->shape[1], C = h->shape[2], Tk = kv_src->shape[1];
  enum status s;
  VkDeviceSize mark = workspace_mark(&r->T);
  struct gpu_tensor q, k, v, a;
  if ((s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, P, C}, &q)) || (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, Tk, C}, &k)) ||
      (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, Tk, C}, &v)) || (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, P, C}, &a)))
    return s;
  RUN(op_linear(g, h, wq, NULL, &q, ACT_NONE));
  RUN(op_linear(g, kv_src, wk, NULL, &k, ACT_NONE));
  RUN(op_linear(g, kv_src, wv, NULL, &v, ACT_NONE));
  RUN(op_attention(g, &q, &k, &v, &a, heads, false, 1.0f / sqrtf((float)(C / heads))));
  RUN(op_linear_residual(g, &a, wo, bo, t)); /* t += to_out(attention) */
  workspace_reset(&r->T, mark);
  return STATUS_OK;
}

static enum status st_forward(struct run *r, const struct layer *L, struct gpu_tensor *x) {
  struct gpu *g = r->u->g;
  const struct spatial_transformer *st = L->st;
  int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], P = H * W;
  enum status s;
  VkDeviceSize mark = workspace_mark(&r->T);
  struct gpu_tensor hn, t, h, f, gg;
  if ((s = workspace_alloc(&r->T, DT_F32, 4, (int64_t[]){N, C, H, W}, &hn)) ||
      (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, P, C}, &t)) || (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, P, C}, &h)) ||
      (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, P, 2 * st->ff_inner}, &f)) ||
      (s = workspace_alloc(&r->T, DT_F32, 3, (int64_t[]){N, P, st->ff_inner}, &gg)))
    return s;
  RUN(op_group_norm(g, x, &st->norm_w, &st->norm_b, &hn, GN_GROUPS, 1e-6f, false)); /* norm */
  /* proj_in: the 1x1 convolution (a linear layer in SD 2.x: the same product), written as tokens */
  RUN(op_conv2d_tokens(g, &hn, &st->proj_in_w, &st->proj_in_b, &t, &r->scratch, CONV_AUTO));
  for (int d = 0; d < st->depth; d++) {
    const struct transformer_block *b = &st->blocks[d];
    RUN(op_layernorm(g, &t, &b->norm1_w, &b->norm1_b, &h, 1e-5f));
    if ((s = attention_block(r, &h, &h, &b->q1, &b->k1, &b->v1, &b->out1_w, &b->out1_b, L->heads, &t))) return s;
    RUN(op_layernorm(g, &t, &b->norm2_w, &b->norm2_b, &h, 1e-5f));
    if ((s = attention_block(r, &h, &r->context, &b->q2, &b->k2, &b->v2, &b->out2_w, &b->out2_b, L->heads, &t))) return s;
    RUN(op_layernorm(g, &t, &b->norm3_w, &b->norm3_b, &h, 1e-5f));
    RUN(op_linear(g, &h, &b->ff1_w, &b->ff1_b, &f, ACT_NONE)); /* ff.net.0.proj [N, P, 2F] */
    RUN(op_geglu(g, &f, &gg));                                  /* a * gelu(gate) [N, P, F] */
    RUN(op_linear_residual(g, &gg, &b->ff2_w, &b->ff2_b, &t));  /* t += ff.net.2 */
  }
  RUN(op_matmul_nchw(g, &st->proj_out_w, &t, &st->proj_out_b, x, true)); /* x += proj_out(t) */
  workspace_reset(&r->T, mark);
  return STATUS_OK;
}

/* Runs one layer from *h, leaving its output in *h (a new persistent tensor where the shape changes). */
static enum status layer_forward(struct run *r, const struct layer *L, struct gpu_tensor *h) {
  struct gpu *g = r->u->g;
  int64_t N = h->shape[0], H = h->shape[2], W = h->shape[3];
  struct gpu_tensor y, up;
  enum status s;
  switch (L->kind) {
  case L_ST:
    return st_forward(r, L, h);
  case L_RES:
    if ((s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, L->cout, H, W}, &y))) return s;
    if ((s = resnet_forward(g, &r->T, L->res, h, &r->semb, &y, &r->scratch))) return s;
    break;
  case L_CONV:
    if ((s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, L->cout, H, W}, &y))) return s;
    RUN(op_conv2d(g, h, &L->w, &L->b, &y, 3, 1, 1, false, &r->scratch));
    break;
  case L_DOWN:
    if ((s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, L->cout, (H + 1) / 2, (W + 1) / 2}, &y))) return s;
    RUN(op_conv2d(g, h, &L->w, &L->b, &y, 3, 2, 1, false, &r->scratch));
    break;
  case L_UP: {
    VkDeviceSize mark = workspace_mark(&r->T);
    if ((s = workspace_alloc(&r->T, DT_F32, 4, (int64_t[]){N, L->cin, 2 * H, 2 * W}, &up)) ||
        (s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, L->cout, 2 * H, 2 * W}, &y)))
      return s;
    RUN(op_upsample2x(g, h, &up));
    RUN(op_conv2d(g, &up, &L->w, &L->b, &y, 3, 1, 1, false, &r->scratch));
    workspace_reset(&r->T, mark);
    break;
  }
  }
  *h = y;
  return STATUS_OK;
}

struct io {
  struct gpu_tensor x, t, y, eps;
};

/* The inputs, output and scratch: allocated first so they can be uploaded before recording. */
static enum status alloc_io(struct run *r, int H, int W, int64_t scratch, struct io *io) {
  const struct unet_info *in = &r->u->info;
  int64_t N = r->N;
  enum status s;
  if ((s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, in->in_channels, H, W}, &io->x)) ||
      (s = workspace_alloc(&r->P, DT_F32, 1, (int64_t[]){N}, &io->t)) ||
      (s = workspace_alloc(&r->P, DT_F32, 3, (int64_t[]){N, r->ctx_len, in->context_dim}, &r->context)) ||
      (s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->adm_in_channels ? in->adm_in_channels : 1}, &io->y)) ||
      (s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, in->out_channels, H, W}, &io->eps)) ||
      (s = workspace_alloc(&r->P, DT_F32, 1, (int64_t[]){scratch}, &r->scratch)))
    return s;
  return STATUS_OK;
}

/* The whole network; while measuring, only the allocations happen. */
static enum status walk(struct run *r, struct io *io, struct unet_trace *tr, struct workspace_trace *traced, int *n_traced) {
  struct unet *u = r->u;
  struct gpu *g = u->g;
  const struct unet_info *in = &u->info;
  int64_t N = r->N;
  enum status s;
  struct gpu_tensor temb, e1, emb, hs[32], h, hn;
  if ((s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->model_channels}, &temb)) ||
      (s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->temb_dim}, &e1)) ||
      (s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->temb_dim}, &emb)) ||
      (s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->temb_dim}, &r->semb)))
    return s;
  RUN(op_timestep_embedding(g, &io->t, &temb, 10000.0f));            /* [N, model_channels] */
  RUN(op_linear(g, &temb, &u->te0_w, &u->te0_b, &e1, ACT_SILU));     /* time_embed.0 + SiLU */
  RUN(op_linear(g, &e1, &u->te2_w, &u->te2_b, &emb, ACT_NONE));      /* time_embed.2 */
  if (in->adm_in_channels) {                                         /* emb += label_emb(y) */
    struct gpu_tensor l1, l2;
    if ((s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->temb_dim}, &l1)) ||
        (s = workspace_alloc(&r->P, DT_F32, 2, (int64_t[]){N, in->temb_dim}, &l2)))
      return s;
    RUN(op_linear(g, &io->y, &u->le0_w, &u->le0_b, &l1, ACT_SILU));  /* label_emb.0.0 + SiLU */
    RUN(op_linear(g, &l1, &u->le2_w, &u->le2_b, &l2, ACT_NONE));     /* label_emb.0.2 */
    RUN(op_add(g, &emb, &l2, &emb));
    if ((s = workspace_trace_copy(&r->P, &l2, tr ? tr->label_emb : NULL, traced, n_traced))) return s;
  }
  RUN(op_activation(g, &emb, &r->semb, ACT_SILU));                   /* every emb_layers starts with SiLU */
  if ((s = workspace_trace_copy(&r->P, &temb, tr ? tr->t_emb : NULL, traced, n_traced))) return s;
  if ((s = workspace_trace_copy(&r->P, &emb, tr ? tr->emb : NULL, traced, n_traced))) return s;
  h = io->x;
  for (int i = 0; i < in->n_input; i++) {
    for (int j = 0; j < u->input[i].n; j++)
      if ((s = layer_forward(r, &u->input[i].l[j], &h))) return s;
    hs[i] = h;
    if ((s = workspace_trace_copy(&r->P, &h, tr ? tr->input[i] : NULL, traced, n_traced))) return s;
  }
  for (int j = 0; j < u->middle.n; j++)
    if ((s = layer_forward(r, &u->middle.l[j], &h))) return s;
  if ((s = workspace_trace_copy(&r->P, &h, tr ? tr->middle : NULL, traced, n_traced))) return s;
  for (int i = 0; i < in->n_output; i++) {
    const struct gpu_tensor *skip = &hs[in->n_input - 1 - i];
    struct gpu_tensor cat;
    if ((s = workspace_alloc(&r->P, DT_F32, 4, (int64_t[]){N, h.shape[1] + skip->shape[1], h.shape[2], h.shape[3]}, &cat)))
      return s;
    RUN(op_concat(g, &h, skip, &cat)); /* cat([h, skip], dim=1) */
    h = cat;
    for (int j = 0; j < u->output[i].n; j++)
      if ((s = layer_forward(r, &u->output[i].l[j], &h))) return s;
    if ((s = workspace_trace_copy(&r->P, &h, tr ? tr->output[i] : NULL, traced, n_traced))) return s;
  }
  VkDeviceSize mark = workspace_mark(&r->T);
  if ((s = workspace_alloc(&r->T, DT_F32, 4, h.shape, &hn))) return s;
  RUN(op_group_norm(g, &h, &u->out_norm_w, &u->out_norm_b, &hn, GN_GROUPS, 1e-5f, true)); /* out.0-1 */
  RUN(op_conv2d(g, &hn, &u->out_conv_w, &u->out_conv_b, &io->eps, 3, 1, 1, false, &r->scratch)); /* out.2 */
  workspace_reset(&r->T, mark);
  return STATUS_OK;
}

static enum status check_finite(const float *p, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(p[i])) return status_set(STATUS_NUMERIC, "the U-Net produced a NaN or infinite value in %s (element %zu)", what, i);
  return STATUS_OK;
}

enum status unet_forward(struct unet *u, const float *x, const float *t, const float *context, const float *y, int N,
                         int H, int W, int T, float *eps, struct unet_trace *trace) {
  const struct unet_info *in = &u->info;
  if (in->adm_in_channels && !y)
    return status_set(STATUS_INVALID_ARGUMENT, "U-Net: this model needs the vector y [N, %d] (SDXL's label_emb)",
                      in->adm_in_channels);
  u->evaluations++;
  u->images += N;
  int align = 1 << (in->levels - 1);
  if (N <= 0 || H <= 0 || W <= 0 || H % align || W % align)
    return status_set(STATUS_INVALID_ARGUMENT, "U-Net input %dx%d: latent height and width must be positive multiples of %d",
                      H, W, align);
  if (T <= 0) return status_set(STATUS_INVALID_ARGUMENT, "U-Net: empty context");
  for (int i = 0; i < N; i++)
    if (!isfinite(t[i])) return status_set(STATUS_INVALID_ARGUMENT, "U-Net: timestep %d is not finite", i);
  enum status s;
  bool replay = !trace && !gpu_profiling(u->g); /* traced and profiled runs submit plainly */
  if (replay && u->rec && u->rec_N == N && u->rec_H == H && u->rec_W == W && u->rec_T == T) {
    /* the same shape as the recorded forward: new inputs into the same buffers, replay */
    if ((s = gpu_upload(u->g, &u->rec_x, x, u->rec_x.bytes)) || (s = gpu_upload(u->g, &u->rec_t, t, u->rec_t.bytes)) ||
        (s = gpu_upload(u->g, &u->rec_ctx, context, u->rec_ctx.bytes)) ||
        (in->adm_in_channels && (s = gpu_upload(u->g, &u->rec_y, y, u->rec_y.bytes))) || (s = gpu_replay(u->g, u->rec)) ||
        (s = gpu_download(u->g, &u->rec_eps, eps, u->rec_eps.bytes)))
      return s;
    return check_finite(eps, u->rec_eps.bytes / 4, "eps");
  }
  u->rec_N = 0; /* invalid until recorded again */
  /* scratch for convolution patches: the largest layer, capped at 32 MiB (convolutions chunk) */
  int64_t scratch = (int64_t)H * W * conv_weight_cols(4 * in->model_channels, 3);
  if (scratch > (8 << 20)) scratch = 8 << 20;
  struct workspace_trace traced[80];
  int n_traced = 0;
  struct io io;
  /* pass 1: measure */
  struct run r = {.u = u, .N = N, .ctx_len = T};
  r.P = (struct workspace){.g = u->g, .measure = true};
  r.T = (struct workspace){.g = u->g, .measure = true};
  s = alloc_io(&r, H, W, scratch, &io);
  if (!s) s = walk(&r, &io, trace, traced, &n_traced);
  if (s) return s;
  VkDeviceSize pbytes = r.P.peak, tbytes = r.T.peak;
  /* pass 2: record and run */
  n_traced = 0;
  r = (struct run){.u = u, .N = N, .ctx_len = T};
  r.P = (struct workspace){.g = u->g};
  r.T = (struct workspace){.g = u->g};
  if ((s = workspace_prepare(&r.P, &u->persist, pbytes, "U-Net activations")) ||
      (s = workspace_prepare(&r.T, &u->temps, tbytes ? tbytes : 64, "U-Net temporaries")))
    return s;
  u->act_bytes = pbytes + tbytes;
  if ((s = alloc_io(&r, H, W, scratch, &io))) return s;
  if ((s = gpu_upload(u->g, &io.x, x, io.x.bytes)) || (s = gpu_upload(u->g, &io.t, t, io.t.bytes)) ||
      (s = gpu_upload(u->g, &r.context, context, r.context.bytes)) ||
      (in->adm_in_channels && (s = gpu_upload(u->g, &io.y, y, io.y.bytes))))
    return s;
  enum status s2;
  if (!replay) {
    if ((s = gpu_begin(u->g))) return s;
    s = walk(&r, &io, trace, traced, &n_traced);
    s2 = gpu_submit(u->g); /* always close the command buffer */
  } else {
    if (!u->rec && (s = gpu_recording_create(u->g, &u->rec))) return s;
    if ((s = gpu_begin_recording(u->g, u->rec))) return s;
    s = walk(&r, &io, trace, traced, &n_traced);
    s2 = gpu_end_recording(u->g);
    if (!s && !s2) s2 = gpu_replay(u->g, u->rec);
    if (!s && !s2) {
      u->rec_N = N, u->rec_H = H, u->rec_W = W, u->rec_T = T;
      u->rec_x = io.x, u->rec_t = io.t, u->rec_ctx = r.context, u->rec_y = io.y, u->rec_eps = io.eps;
    }
  }
  if (s || s2) return s ? s : s2;
  if ((s = gpu_download(u->g, &io.eps, eps, io.eps.bytes))) return s;
  for (int i = 0; i < n_traced; i++)
    if ((s = gpu_download(u->g, &traced[i].t, traced[i].dst, traced[i].t.bytes))) return s;
  return check_finite(eps, io.eps.bytes / 4, "eps");
}

double unet_gflop(const struct unet *u, int N, int H, int W, int T) {
  /* matrix products: 2 * out * K per conv/linear; attention: 4 * P * Tk * C */
  const struct unet_info *in = &u->info;
  double f = 0;
  int h = H, w = W;
  const struct seq *groups[3] = {u->input, &u->middle, u->output};
  int counts[3] = {in->n_input, 1, in->n_output};
  for (int gi = 0; gi < 3; gi++)
    for (int i = 0; i < counts[gi]; i++)
      for (int j = 0; j < groups[gi][i].n; j++) {
        const struct layer *L = &groups[gi][i].l[j];
        double P = (double)h * w;
        switch (L->kind) {
        case L_CONV: f += 2 * P * L->cout * L->cin * 9; break;
        case L_RES:
          f += 2 * P * L->cout * (L->cin * 9 + L->cout * 9 + (L->res->has_skip ? L->cin : 0));
          break;
        case L_DOWN: f += 2 * (P / 4) * L->cout * L->cin * 9, h = (h + 1) / 2, w = (w + 1) / 2; break;
        case L_UP: f += 2 * (P * 4) * L->cout * L->cin * 9, h *= 2, w *= 2; break;
        case L_ST: {
          double C = L->cin, F = L->st->ff_inner;
          f += 2 * P * C * C * 2 + L->st->depth * (2 * P * C * C * 4 + 2 * P * C * C * 2 + 2 * 2 * T * C * in->context_dim +
                                                    4 * P * P * C + 4 * P * T * C + 2 * P * C * 2 * F + 2 * P * F * C);
          break;
        }
        }
      }
  f += 2.0 * H * W * in->out_channels * in->model_channels * 9;
  f += 2.0 * in->temb_dim * (in->model_channels + in->temb_dim + in->adm_in_channels + in->temb_dim);
  return f * N * 1e-9;
}
