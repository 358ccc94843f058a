/* What the conditioner (and the generator above textenc) needs of a text tower beyond the public
 * API: which config member configures it, its default activation, the final-LayerNorm switch,
 * its device, and the model family rule. */
#ifndef VKD_TEXTENC_INTERNAL_H
#define VKD_TEXTENC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "lora.h"
#include "status.h"
#include "textenc.h"

struct textenc_tower {
  const char *config_member; /* "text_encoder" or "text_encoder_2" in --config */
  int default_act;           /* ACT_* when neither an option nor a config says; -1: by the names */
};

enum status textenc_create_tower(const struct textenc_options *opt, const struct textenc_tower *tw, struct textenc **out);
/* false: a skipped layer's hidden state is taken without the final LayerNorm (SDXL). */
void textenc_set_final_ln(struct textenc *te, bool on);
struct gpu *textenc_device(const struct textenc *te);
const char *textenc_config_note(const struct textenc *te);

/* LoRA (core/lora.h): a tower as a target (net: LORA_NET_TE1 or TE2), the conditioner's towers
 * (returns how many), and merging with a report. */
struct lora_target textenc_lora_target(const struct textenc *te, enum lora_net net);
int textenc_cond_lora_targets(const struct textenc_cond *c, struct lora_target t[2]);
enum status textenc_apply_loras(struct textenc *te, const struct lora_spec *specs, int n, bool strict,
                                struct lora_report *rep);
enum status textenc_cond_apply_loras(struct textenc_cond *c, const struct lora_spec *specs, int n, bool strict,
                                     struct lora_report *rep);
/* paths + strengths -> specs (calloc'd) */
enum status textenc_lora_specs(const char *const *paths, const double *strengths, int n, struct lora_spec **out);

/* The family of a model (a .safetensors file or a diffusers folder), from the tensors present:
 * SDXL when a second text tower (conditioner.embedders.1., text_encoder_2/) or the U-Net's
 * label_emb is there, SD 2.x for an OpenCLIP tower under cond_stage_model.model. or a text tower
 * 1024 wide, SD 1.x otherwise. `why` receives the evidence ("conditioner.embedders.1.model.*"). */
enum status textenc_detect_family(const char *model_path, enum textenc_family *family, char *why, size_t n);
/* "sd1" / "sd2" / "sdxl" -> family; AUTO for anything else. */
enum textenc_family textenc_parse_family(const char *name);

#endif
