/* Where a model's files are and what its tensors cannot tell: the number of attention heads and
 * the activation of the text and image towers. Sources, in order: --config FILE (a
 * JSON object whose `text_encoder` member holds HF CLIPTextConfig keys), a config.json beside the
 * weights (a diffusers `text_encoder/` folder), else the published defaults. */
#ifndef VKD_CLIP_CONFIG_H
#define VKD_CLIP_CONFIG_H

#include <stddef.h>

#include "clip_text.h"

/* model_path: a .safetensors file, a diffusers folder (text_encoder/model.safetensors), or a
 * text_encoder folder (model.safetensors). Fills the weights file and the config.json beside it
 * ("" when there is none). */
enum status clip_find_text_encoder(const char *model_path, char *weights, size_t n, char *config, size_t m);

/* Reads heads / activation / eps into opt (fields left as they are where no file says).
 * config_file: --config (NULL for none), whose `member` object ("text_encoder" or
 * "text_encoder_2") holds HF CLIPTextConfig keys; beside: config.json next to the weights ("" for none).
 * note receives a human-readable account of where each value came from. */
enum status clip_config_text(const char *config_file, const char *member, const char *beside,
                              struct clip_text_options *opt, char *note, size_t note_size);

/* Vision tower heads from --config's `vision_model` member (HF CLIPVisionConfig num_attention_heads);
 * *heads untouched when absent. */
enum status clip_vision_heads(const char *config_file, int *heads);

/* "gelu" / "quick_gelu" -> ACT_*; -1 when unknown. */
int clip_parse_act(const char *name);

#endif
