/* What the U-Net's tensors cannot tell: its attention heads, from --config's `unet` member. */
#include "unet_config.h"

#include <cjson/cJSON.h>

#include "json_file.h"

enum status unet_config_heads(const char *config_file, int heads[8], int *heads_all) {
  if (!config_file) return STATUS_OK;
  cJSON *j = NULL;
  enum status s = json_file_read_object(config_file, &j);
  if (s) return s;
  const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "unet");
  if (u && !cJSON_IsObject(u)) s = status_set(STATUS_FORMAT, "%s: \"unet\" must be an object", config_file);
  const cJSON *h = u ? cJSON_GetObjectItemCaseSensitive(u, "num_attention_heads") : NULL;
  if (!s && u && (!h || cJSON_IsNull(h))) h = cJSON_GetObjectItemCaseSensitive(u, "attention_head_dim");
  if (!s && h && !cJSON_IsNull(h)) {
    if (cJSON_IsNumber(h) && h->valueint > 0 && h->valuedouble == h->valueint) {
      *heads_all = h->valueint;
    } else if (cJSON_IsArray(h) && cJSON_GetArraySize(h) <= 8) {
      int i = 0;
      for (const cJSON *e = h->child; e && !s; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valueint <= 0) s = status_set(STATUS_FORMAT, "%s: unet heads must be positive integers", config_file);
        else heads[i] = e->valueint;
      }
    } else {
      s = status_set(STATUS_FORMAT, "%s: unet num_attention_heads must be a positive integer or a list of them", config_file);
    }
  }
  cJSON_Delete(j);
  return s;
}

