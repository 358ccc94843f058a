/* CLIP text transformer on Vulkan (OpenAI ViT-L/14 as in SD 1.x, OpenCLIP towers, tiny configs).
 *
 *   struct clip_text *m;
 *   clip_text_load(g, st, &(struct clip_text_options){.fp16 = true}, &m);
 *   clip_text_forward(m, ids, n_seq, clip_skip, true, eot_id, cond, pooled, projected);
 *   clip_text_destroy(m);
 *
 * Weights are found by name through one explicit rename map: HF CLIPTextModel names under any
 * prefix ("", "cond_stage_model.transformer.", ...), or OpenCLIP names ("token_embedding.weight",
 * "positional_embedding", "transformer.resblocks.N.attn.in_proj_weight" with rows q;k;v,
 * "ln_final", "text_projection" [width, proj]) under any prefix ("", "cond_stage_model.model.").
 * Width, layers, vocabulary, context, MLP and projection sizes come from the tensors; the number
 * of heads and the activation from the options (config files, see model_config.h). */
#ifndef VKD_CLIP_TEXT_H
#define VKD_CLIP_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "gpu.h"
#include "safetensors.h"

enum clip_layout { CLIP_LAYOUT_HF, CLIP_LAYOUT_OPENCLIP };

struct clip_text_config {
  int width, layers, heads, mlp, vocab, ctx, proj; /* proj 0: no text_projection */
  int act;                                         /* ACT_QUICK_GELU or ACT_GELU */
  float eps;
  enum clip_layout layout;
  char prefix[128];
};

struct clip_text_options {
  bool fp16;        /* fp16 weights on the device (if supported) */
  int heads;        /* 0: head width 64 */
  int act;          /* -1: OpenCLIP names -> gelu, otherwise quick_gelu */
  float eps;        /* 0: 1e-5 */
  const char *prefix; /* NULL: detected */
};

struct clip_text;

/* Finds the text tower in st (prefix and layout detected unless given). */
enum status clip_text_detect(const struct safetensors *st, const char *prefix, struct clip_text_config *cfg);
enum status clip_text_load(struct gpu *g, const struct safetensors *st, const struct clip_text_options *opt,
                           struct clip_text **out);
void clip_text_destroy(struct clip_text *m);
const struct clip_text_config *clip_text_config(const struct clip_text *m);
/* The LoRA names of a text-tower weight (core/lora.h's lora_alias_fn). */
struct weight_entry;
int clip_text_lora_alias(const struct weight_entry *e, char names[2][256], const void *ctx);
bool clip_text_fp16(const struct clip_text *m);

/* Encodes n_seq sequences of ctx (77) ids: cond [n_seq, ctx, width] is the hidden state
 * `clip_skip - 1` layers before the last (1: the last layer), after the final LayerNorm unless
 * final_ln is false and clip_skip > 1 (SDXL takes hidden_states[-2] as is); pooled [n_seq, width] is the
 * final-LN last layer at each sequence's first `eot_id` (argmax of the ids when absent);
 * projected [n_seq, proj] = pooled W^T. Output pointers may be NULL. One submit. */
enum status clip_text_forward(struct clip_text *m, const int32_t *ids, int n_seq, int clip_skip, bool final_ln,
                              int32_t eot_id, float *cond, float *pooled, float *projected);

/* Device bytes of the weights and of the activations for n_seq sequences. */
uint64_t clip_text_weight_bytes(const struct clip_text *m);

#endif
