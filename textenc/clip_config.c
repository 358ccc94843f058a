#define _POSIX_C_SOURCE 200809L
#include "clip_config.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"
#include "json_file.h"
#include "push.h"

static bool is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

enum status clip_find_text_encoder(const char *model_path, char *weights, size_t n, char *config, size_t m) {
  config[0] = 0;
  if (is_dir(model_path)) {
    const char *forms[] = {"%s/text_encoder/model.safetensors", "%s/model.safetensors"};
    for (int i = 0; i < 2; i++) {
      snprintf(weights, n, forms[i], model_path);
      if (is_file(weights)) break;
      weights[0] = 0;
    }
    if (!weights[0])
      return status_set(STATUS_NOT_FOUND, "%s: a folder without text_encoder/model.safetensors or model.safetensors",
                        model_path);
  } else if (is_file(model_path)) {
    snprintf(weights, n, "%s", model_path);
  } else {
    return status_set(STATUS_NOT_FOUND, "%s: no such file or folder", model_path);
  }
  const char *slash = strrchr(weights, '/');
  snprintf(config, m, "%.*sconfig.json", slash ? (int)(slash - weights + 1) : 0, weights);
  if (!is_file(config)) config[0] = 0;
  return STATUS_OK;
}

int clip_parse_act(const char *name) {
  if (!strcmp(name, "quick_gelu")) return ACT_QUICK_GELU;
  if (!strcmp(name, "gelu")) return ACT_GELU;
  return -1;
}

/* HF CLIPTextConfig keys of obj into opt */
static enum status apply(const cJSON *obj, const char *path, struct clip_text_options *opt, char *note, size_t ns) {
  const cJSON *heads = cJSON_GetObjectItemCaseSensitive(obj, "num_attention_heads");
  const cJSON *act = cJSON_GetObjectItemCaseSensitive(obj, "hidden_act");
  const cJSON *eps = cJSON_GetObjectItemCaseSensitive(obj, "layer_norm_eps");
  size_t o = strlen(note);
  if (heads) {
    if (!cJSON_IsNumber(heads) || heads->valueint <= 0 || heads->valuedouble != heads->valueint)
      return status_set(STATUS_FORMAT, "%s: num_attention_heads must be a positive integer", path);
    if (opt->heads <= 0) {
      opt->heads = heads->valueint;
      o += (size_t)snprintf(note + o, o < ns ? ns - o : 0, "heads %d from %s; ", opt->heads, path);
    }
  }
  if (act) {
    if (!cJSON_IsString(act) || clip_parse_act(act->valuestring) < 0)
      return status_set(STATUS_FORMAT, "%s: hidden_act must be \"gelu\" or \"quick_gelu\"", path);
    if (opt->act < 0) {
      opt->act = clip_parse_act(act->valuestring);
      o += (size_t)snprintf(note + o, o < ns ? ns - o : 0, "activation %s from %s; ", act->valuestring, path);
    }
  }
  if (eps) {
    if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0 && eps->valuedouble < 1))
      return status_set(STATUS_FORMAT, "%s: layer_norm_eps must be a small positive number", path);
    if (opt->eps <= 0) opt->eps = (float)eps->valuedouble;
  }
  return STATUS_OK;
}

enum status clip_config_text(const char *config_file, const char *member, const char *beside,
                              struct clip_text_options *opt, char *note, size_t note_size) {
  note[0] = 0;
  cJSON *j = NULL;
  enum status s;
  if (config_file) {
    if ((s = json_file_read_object(config_file, &j))) return s;
    const cJSON *te = cJSON_GetObjectItemCaseSensitive(j, member);
    if (te && !cJSON_IsObject(te)) s = status_set(STATUS_FORMAT, "%s: \"%s\" must be an object", config_file, member);
    else if (te) s = apply(te, config_file, opt, note, note_size);
    cJSON_Delete(j);
    if (s) return s;
  }
  if (beside && beside[0]) {
    if ((s = json_file_read_object(beside, &j))) return s;
    s = apply(j, beside, opt, note, note_size);
    cJSON_Delete(j);
    if (s) return s;
  }
  return STATUS_OK;
}

enum status clip_vision_heads(const char *config_file, int *heads) {
  if (!config_file) return STATUS_OK;
  cJSON *j = NULL;
  enum status s = json_file_read_object(config_file, &j);
  if (s) return s;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "vision_model");
  const cJSON *h = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "num_attention_heads") : NULL;
  if (h && (!cJSON_IsNumber(h) || h->valueint <= 0))
    s = status_set(STATUS_FORMAT, "%s: vision_model.num_attention_heads must be a positive integer", config_file);
  else if (h)
    *heads = h->valueint;
  cJSON_Delete(j);
  return s;
}
