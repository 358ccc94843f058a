/* U-Net settings from a config file. */
#ifndef VKD_UNET_CONFIG_H
#define VKD_UNET_CONFIG_H

#include "status.h"

/* U-Net attention heads from --config's `unet` member (diffusers UNet2DConditionModel keys:
 * num_attention_heads, or the legacy attention_head_dim that means the same; an int or one per
 * level). heads[] gets per-level values, *heads_all a single one; untouched when absent or when
 * config_file is NULL. */
enum status unet_config_heads(const char *config_file, int heads[8], int *heads_all);

#endif
