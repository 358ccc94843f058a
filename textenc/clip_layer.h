/* One CLIP transformer layer (pre-LN self-attention + MLP), shared by the text and vision towers:
 *   x += out_proj(attention(LN1(x)));  x += fc2(act(fc1(LN2(x))))  */
#ifndef VKD_CLIP_LAYER_H
#define VKD_CLIP_LAYER_H

#include <stdbool.h>

#include "gpu.h"

struct clip_layer {
  struct gpu_tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

/* Work tensors shaped like x ([S, T, D]) except f ([S, T, MLP]). */
struct clip_scratch {
  struct gpu_tensor h, q, k, v, a, f;
};

/* HF checkpoint leaf names of the 16 tensors of a layer, in the order of clip_layer_fields(). */
extern const char *const clip_layer_hf_names[16];
void clip_layer_fields(struct clip_layer *L, struct gpu_tensor *fields[16]);
/* Loads a layer stored under HF names: prefix + leaf name (e.g. "vision_model.encoder.layers.3."). */
struct weight_loader;
enum status clip_layer_load_hf(struct weight_loader *l, const char *prefix, int64_t width, int64_t mlp, enum dtype mat,
                               struct clip_layer *L);

enum status clip_layer_forward(struct gpu *g, const struct clip_layer *L, const struct gpu_tensor *x,
                               const struct clip_scratch *s, int heads, bool causal, int act, float eps);

#endif
