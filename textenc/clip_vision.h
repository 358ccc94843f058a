/* CLIP ViT image tower (HF CLIPVisionModel / CLIPModel names: vision_model.*, visual_projection)
 * on Vulkan: patch embedding, class token, position embedding, pre-LayerNorm, encoder layers (no
 * mask, quick_gelu), post-LayerNorm of the class token, projection. Architecture from the tensors
 * (ViT-B/32, B/16, L/14, the reference's tiny); heads = width / 64 unless given. */
#ifndef VKD_CLIP_VISION_H
#define VKD_CLIP_VISION_H

#include <stdbool.h>

#include "gpu.h"
#include "safetensors.h"

struct clip_vision_config {
  int image, patch, width, layers, heads, mlp, proj, tokens, act;
  float eps;
  char prefix[128];
};

struct clip_vision;

bool clip_vision_present(const struct safetensors *st);
/* heads <= 0: width / 64; act < 0: quick_gelu */
enum status clip_vision_load(struct gpu *g, const struct safetensors *st, bool fp16, int heads, int act,
                             struct clip_vision **out);
void clip_vision_destroy(struct clip_vision *m);
const struct clip_vision_config *clip_vision_config(const struct clip_vision *m);
/* pixels [N, 3, S, S] (preprocessed) -> pooled [N, width], image_embeds [N, proj], last_hidden_state
 * [N, tokens, width] (not post-normed, the HF convention); any output may be NULL. */
enum status clip_vision_forward(struct clip_vision *m, const float *pixels, int N, float *pooled, float *embeds,
                                float *last_hidden);

#endif
