/* Builds checkpoints from the deterministic weight rule (weights.h), so tests use real-size
 * models without storing them: CLIP text towers in HF or OpenCLIP names under any prefix. */
#ifndef VKD_TEST_CHECKPOINT_H
#define VKD_TEST_CHECKPOINT_H
#include <stdbool.h>
#include <stdint.h>

#include "safetensors.h"

struct clip_spec {
  const char *name; /* tiny, tiny_gelu, vitl14, vith14, vitbigg14 */
  int width, layers, heads, mlp, vocab, ctx, proj;
  bool gelu;
};
const struct clip_spec *clip_spec(const char *name);

struct ckpt_options {
  enum st_dtype dtype;   /* ST_F32, ST_F16 or ST_BF16 */
  const char *prefix;    /* "" or "cond_stage_model.transformer." ... */
  bool openclip_names;   /* OpenCLIP layout */
  bool projection;
  uint64_t seed;
  const char *drop;      /* a canonical tensor name to leave out (missing-tensor tests) */
  const char *reshape;   /* a canonical tensor name to store with one column more */
  const char *poison;    /* a canonical tensor name whose element 3 is NaN */
};

/* Writes the checkpoint; returns 0 on success. */
int write_clip_checkpoint(const char *path, const struct clip_spec *spec, const struct ckpt_options *o);

/* SDXL's two text towers as sgm's single files hold them: `l` in HF names under
 * conditioner.embedders.0.transformer. (seed, no projection), `g` in OpenCLIP names under
 * conditioner.embedders.1.model. (seed + 1, text_projection, logit_scale). faults (may be NULL):
 * drop / reshape / poison for tower 1 only. */
int write_sdxl_text_checkpoint(const char *path, const struct clip_spec *l, const struct clip_spec *g,
                               enum st_dtype dtype, uint64_t seed, const struct ckpt_options *faults);

/* An SD single-file checkpoint of the U-Net and VAE tensors listed in a weight digest of
 * ../shared/ref/goldens (names and shapes in checkpoint order), under model.diffusion_model. and
 * first_stage_model., values from the weight rule; with `with_clip`, the CLIP text tensors of
 * `clip` under cond_stage_model.transformer. too. */
/* Non-zero: the U-Net's conv_in reads this many channels (9: an inpainting U-Net). */
extern int checkpoint_unet_in_channels;
/* The U-Net of one digest, the VAE of another (a tiny U-Net with SD's 8x VAE, for TAESD). */
int write_sd_checkpoint_mixed(const char *path, const char *unet_digest, const char *vae_digest, enum st_dtype dtype,
                              uint64_t seed, const struct clip_spec *clip);
int write_sd_checkpoint(const char *path, const char *digest_path, enum st_dtype dtype, uint64_t seed,
                        const struct clip_spec *clip);

/* The U-Net tensors of a digest alone under model.diffusion_model., streamed: one tensor in memory
 * at a time (the full SDXL U-Net is 2.6 G values). */
int write_unet_checkpoint(const char *path, const char *digest_path, enum st_dtype dtype, uint64_t seed);

/* A tiny SD 2.x ("sd2": tiny_gelu OpenCLIP tower under cond_stage_model.model.) or SDXL ("sdxl":
 * tiny + tiny_gelu towers, seeds seed and seed + 1) single file: the U-Net of unet_digest and the VAE
 * tensors of vae_digest, values from the weight rule; one metadata entry when meta_key is set. */
int write_family_checkpoint(const char *path, const char *family, const char *unet_digest, const char *vae_digest,
                            enum st_dtype dtype, uint64_t seed, const char *meta_key, const char *meta_value);

/* The same U-Net in diffusers' UNet2DConditionModel names (a unet/ folder's file), F32, no prefix. */
int write_unet_checkpoint_diffusers(const char *path, const char *digest_path, uint64_t seed);

/* LoRA files for the tiny SD 1.x checkpoint (8 U-Net modules: attention, a 1x1 proj_in, LoCon 3x3
 * convolutions, a time projection; 2 text modules): kohya with diffusers' names, kohya with ldm's,
 * or PEFT (alpha / rank folded into lora_B, so all three carry the same difference). */
enum test_lora_format { TEST_LORA_KOHYA, TEST_LORA_KOHYA_LDM, TEST_LORA_PEFT };
enum { TEST_LORA_UNET = 1, TEST_LORA_TEXT = 2 };
int write_test_lora(const char *path, const char *ckpt, enum test_lora_format f, int rank, double alpha, uint64_t seed,
                    unsigned parts);
/* ckpt + strength * (alpha / rank) * up . down for every module of lora (matched through the table,
 * summed in double), written as F32 to out: the offline merge LoRA merging is checked against. */
int merge_test_lora(const char *ckpt, const char *lora, double strength, const char *out);

struct vision_spec {
  const char *name; /* tiny, vitb32 */
  int image, patch, width, layers, mlp, proj;
};
const struct vision_spec *vision_spec(const char *name);
/* An HF CLIPVisionModel (vision_model.*, visual_projection.weight); with `text`, a whole CLIPModel:
 * the text tensors (HF names, text_projection) and logit_scale = ln 100 too. */
int write_vision_checkpoint(const char *path, const struct vision_spec *v, const struct clip_spec *text,
                            enum st_dtype dtype, uint64_t seed);

#endif
