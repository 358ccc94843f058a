/* textenc: the CLIP tokenizer and text encoder of vkdiffusion, on any Vulkan device.
 *
 * Usage (link with `pkg-config --cflags --libs textenc`):
 *
 *   #include <textenc.h>
 *
 *   struct textenc *te;
 *   struct textenc_options opt = textenc_default_options();
 *   opt.model_path = "sd15.safetensors";          // or a diffusers folder
 *   if (textenc_create(&opt, &te) != TEXTENC_OK) {
 *     fprintf(stderr, "%s\n", textenc_last_error());
 *     return 1;
 *   }
 *   struct textenc_info info;
 *   textenc_info(te, &info);                       // width 768, context 77, ...
 *   const char *prompts[] = {"a photo of a cat", "a (red:1.3) car"};
 *   int chunks;                                    // 77-token chunks per prompt
 *   textenc_count_chunks(te, prompts, 2, &chunks);
 *   float *cond = malloc(sizeof(float) * 2 * 77 * chunks * info.width);
 *   float *pooled = malloc(sizeof(float) * 2 * info.width);
 *   textenc_encode(te, prompts, 2, chunks, cond, pooled, NULL);
 *   // cond: [2, 77 * chunks, width] (SD's conditioning), pooled: [2, width]
 *   textenc_destroy(te);
 *
 * Every function returns a status (TEXTENC_OK = 0); on failure textenc_last_error() holds a
 * one-line message for the calling thread. Nothing prints, nothing exits. A struct textenc is
 * not thread-safe: use one per thread. */
#ifndef TEXTENC_H
#define TEXTENC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The API version: major * 10000 + minor * 100 + patch. 1.1.0 added the conditioner (SD 2.x, SDXL). */
#define TEXTENC_VERSION_MAJOR 1
#define TEXTENC_VERSION_MINOR 1
#define TEXTENC_VERSION_PATCH 0
#define TEXTENC_VERSION (TEXTENC_VERSION_MAJOR * 10000 + TEXTENC_VERSION_MINOR * 100 + TEXTENC_VERSION_PATCH)

#if defined(TEXTENC_BUILDING)
#define TEXTENC_API __attribute__((visibility("default")))
#else
#define TEXTENC_API
#endif

/* The same values as the library's internal status codes. */
enum textenc_status {
  TEXTENC_OK = 0,
  TEXTENC_INVALID_ARGUMENT,
  TEXTENC_IO,
  TEXTENC_FORMAT,
  TEXTENC_NOT_FOUND,
  TEXTENC_UNSUPPORTED,
  TEXTENC_OUT_OF_MEMORY,
  TEXTENC_NO_DEVICE,
  TEXTENC_VULKAN,
  TEXTENC_NUMERIC,
};

enum textenc_precision {
  TEXTENC_FP16 = 0, /* fp16 weights on the device where supported (fp32 accumulation) */
  TEXTENC_FP32 = 1, /* fp32 everywhere, for exact comparison */
};

struct gpu; /* a vkdiffusion device, for sharing one between components */

/* Model families: what the conditioner assembles from the text towers. */
enum textenc_family {
  TEXTENC_FAMILY_AUTO = 0, /* detected from the tensors present */
  TEXTENC_FAMILY_SD1,      /* CLIP ViT-L/14, last layer (clip skip 1) after the final LayerNorm */
  TEXTENC_FAMILY_SD2,      /* OpenCLIP ViT-H/14, penultimate layer, then ln_final */
  TEXTENC_FAMILY_SDXL,     /* CLIP-L and OpenCLIP bigG penultimate (no final LN), pooled bigG, vector y */
};

struct textenc_options {
  const char *model_path;     /* .safetensors (HF CLIPTextModel, SD 1.x/2.x single file, OpenCLIP) or a folder */
  const char *tokenizer_path; /* NULL: the model's folder, $VKDIFFUSION_TOKENIZER, the installed one */
  const char *config_path;    /* NULL: config.json beside the weights; else --config's JSON (text_encoder member) */
  const char *prefix;         /* NULL: detected from the tensor names */
  int device_index;           /* -1: $VKDIFFUSION_DEVICE or the best device */
  struct gpu *device;         /* borrowed device, or NULL to create one (device_index) */
  enum textenc_precision precision;
  int clip_skip;              /* 1 (the last layer, default) or more (A1111 numbering) */
  int literal;                /* 1: prompts are plain text; 0: A1111 syntax (emphasis, BREAK) */
  const char *hidden_act;     /* NULL: config.json, else gelu for OpenCLIP names, quick_gelu otherwise */
  int pad_id;                 /* -1: 0 for OpenCLIP / gelu towers (SD 2.x), EOT otherwise */
  /* since 1.1 (the conditioner; single-tower calls ignore them) */
  enum textenc_family family; /* AUTO: detected */
  const char *tokenizer_2_path; /* the second tower's vocabulary; NULL: tokenizer_2/ of a diffusers folder, else as tokenizer_path */
};

struct textenc_info {
  int width, layers, heads, context, vocab, mlp;
  int projection_dim; /* 0 when the checkpoint has no text_projection */
  int fp16;           /* weights stored as fp16 on the device */
  const char *activation; /* "gelu" or "quick_gelu" */
  const char *layout;     /* "hf" or "openclip" */
  const char *prefix;
  const char *device_name;
  uint64_t weight_bytes;
};

struct textenc;

/* TEXTENC_VERSION of the library actually loaded. */
TEXTENC_API int textenc_version(void);
TEXTENC_API struct textenc_options textenc_default_options(void);
TEXTENC_API int textenc_create(const struct textenc_options *opt, struct textenc **out);
TEXTENC_API void textenc_destroy(struct textenc *te); /* accepts NULL */
TEXTENC_API int textenc_info(const struct textenc *te, struct textenc_info *info);
TEXTENC_API const char *textenc_last_error(void);

/* Changes the clip skip (1 = the last layer) for later encodes. */
TEXTENC_API int textenc_set_clip_skip(struct textenc *te, int clip_skip);
/* LoRAs merged into the tower's weights: W' = W + strength * (alpha / rank) * up . down (fp32, stored
 * in the tower's precision), replacing the set merged before (n = 0: the checkpoint's exact weights
 * again); only tensors whose contributions changed are rewritten. Files: kohya (lora_te_*,
 * lora_te1_*) or PEFT (text_encoder.*); keys for other networks (lora_unet_*) are ignored. strict:
 * a key that matches no tensor, or another shape, is an error; otherwise such keys are skipped. A
 * file with no matching key is an error either way. */
TEXTENC_API int textenc_set_loras(struct textenc *te, const char *const *paths, const double *strengths, int n, int strict);

/* The number of 77-token chunks the longest of the prompts needs (every prompt is padded to it). */
TEXTENC_API int textenc_count_chunks(struct textenc *te, const char *const *prompts, int n, int *chunks);
/* Token ids [n, 77 * chunks] and per-token weights (may be NULL) of the prompts, padded to `chunks`. */
TEXTENC_API int textenc_tokenize(struct textenc *te, const char *const *prompts, int n, int chunks, int32_t *ids,
                                 float *weights);
/* Encodes prompts (tokenized with the model's tokenizer, padded to `chunks` chunks) into
 * caller-provided arrays: cond [n, 77 * chunks, width], pooled [n, width] (first chunk),
 * projected [n, projection_dim]; any may be NULL. Prompt weights are applied to cond with the
 * mean of each chunk restored, as AUTOMATIC1111 does. The whole batch runs as one GPU batch. */
TEXTENC_API int textenc_encode(struct textenc *te, const char *const *prompts, int n, int chunks, float *cond,
                               float *pooled, float *projected);
/* The same from token ids of another tokenizer: ids [n, 77 * chunks], weights NULL or the same shape. */
TEXTENC_API int textenc_encode_ids(struct textenc *te, const int32_t *ids, const float *weights, int n, int chunks,
                                   float *cond, float *pooled, float *projected);

/* The conditioner: the text conditioning a Stable Diffusion family's U-Net consumes, from one
 * tower (SD 1.x, SD 2.x) or two (SDXL) behind one create call.
 *
 *   struct textenc_options opt = textenc_default_options();
 *   opt.model_path = "sd_xl_base_1.0.safetensors";  // or a diffusers folder (text_encoder[_2]/, tokenizer[_2]/)
 *   struct textenc_cond *c;
 *   textenc_cond_create(&opt, &c);
 *   struct textenc_cond_info ci;
 *   textenc_cond_info(c, &ci);                      // SDXL: context_dim 2048, pooled_dim 1280, y_dim 2816
 *   const char *prompts[] = {"a photo of a cat", NULL};   // NULL: the zero conditioning
 *   struct textenc_sizes sz = {1024, 1024, 0, 0, 1024, 1024};
 *   int chunks;
 *   textenc_cond_count_chunks(c, prompts, 2, &chunks);
 *   float *ctx = malloc(sizeof(float) * 2 * 77 * chunks * ci.context_dim);
 *   float *pooled = malloc(sizeof(float) * 2 * ci.pooled_dim), *y = malloc(sizeof(float) * 2 * ci.y_dim);
 *   textenc_cond_encode(c, prompts, 2, chunks, &sz, ctx, pooled, y);
 *   textenc_cond_destroy(c);
 *
 * opt.clip_skip 0 takes the family's default (SD 1.x: 1; SD 2.x and SDXL: 2, the penultimate
 * layer); N is AUTOMATIC1111's / stable-diffusion.cpp's "clip skip N" (diffusers clip_skip N-1)
 * and applies to both SDXL towers. */
struct textenc_sizes {
  int original_h, original_w; /* SDXL micro-conditioning, in pixels: (height, width) */
  int crop_top, crop_left;
  int target_h, target_w;
};

struct textenc_cond_info {
  enum textenc_family family;
  int towers;      /* 1 or 2 */
  int context_dim; /* width of a context row: 768 (SD 1.x), 1024 (SD 2.x), 2048 (SDXL) */
  int pooled_dim;  /* SDXL: bigG's projected EOT (1280); else the tower's projection, or its width */
  int y_dim;       /* SDXL: pooled_dim + 6 * 256 (2816); 0 otherwise */
  int clip_skip;   /* in effect */
  int default_size; /* the family's native image side in pixels (512, 768, 1024) */
  struct textenc_info tower[2];
};

struct textenc_cond;
TEXTENC_API int textenc_cond_create(const struct textenc_options *opt, struct textenc_cond **out);
TEXTENC_API void textenc_cond_destroy(struct textenc_cond *c); /* accepts NULL */
TEXTENC_API int textenc_cond_info(const struct textenc_cond *c, struct textenc_cond_info *info);
TEXTENC_API const char *textenc_family_name(enum textenc_family f); /* "sd1", "sd2", "sdxl" */
/* Clip skip for later encodes (0: the family's default), on every tower. */
TEXTENC_API int textenc_cond_set_clip_skip(struct textenc_cond *c, int clip_skip);
/* textenc_set_loras on every tower (SDXL: lora_te1_* / text_encoder.* to the first, lora_te2_* /
 * text_encoder_2.* to the second). */
TEXTENC_API int textenc_cond_set_loras(struct textenc_cond *c, const char *const *paths, const double *strengths, int n,
                                       int strict);
/* Chunks of 77 tokens the longest prompt needs in either tower (NULL prompts count as one). */
TEXTENC_API int textenc_cond_count_chunks(struct textenc_cond *c, const char *const *prompts, int n, int *chunks);
/* Token ids [n, 77 * chunks] each tower reads (ids_2 only for two towers), weights alike; any may be NULL. */
TEXTENC_API int textenc_cond_tokenize(struct textenc_cond *c, const char *const *prompts, int n, int chunks,
                                      int32_t *ids, float *weights, int32_t *ids_2, float *weights_2);
/* context [n, 77 * chunks, context_dim], pooled [n, pooled_dim] (each prompt's first chunk) and,
 * for SDXL, y [n, y_dim] = pooled ++ the sinusoidal embeddings of `sizes` (NULL: the family's
 * default size, no crop). A NULL prompt gives zeros for context and pooled (y keeps its size
 * part): the empty negative prompt of AUTOMATIC1111, diffusers and sgm for SDXL. Any output may
 * be NULL. Prompt weights are applied per tower with each chunk's mean restored. */
TEXTENC_API int textenc_cond_encode(struct textenc_cond *c, const char *const *prompts, int n, int chunks,
                                    const struct textenc_sizes *sizes, float *context, float *pooled, float *y);
/* The same from token ids (ids_2: the second tower's, required for SDXL); weights may be NULL. */
TEXTENC_API int textenc_cond_encode_ids(struct textenc_cond *c, const int32_t *ids, const float *weights,
                                        const int32_t *ids_2, const float *weights_2, int n, int chunks,
                                        const struct textenc_sizes *sizes, float *context, float *pooled, float *y);

/* The CLIP image tower of a CLIPModel / CLIPVisionModel checkpoint (opt->model_path; config_path's
 * `vision_model` member may give num_attention_heads; device, device_index and precision as above).
 *
 *   struct textenc_vision *tv;
 *   textenc_vision_create(&opt, &tv);
 *   int size, width, proj;
 *   textenc_vision_info(tv, &size, &width, &proj);            // 224, 768, 512 for ViT-B/32
 *   textenc_vision_embed(tv, pixels, n, image_embeds, pooled); // pixels [n, 3, size, size], preprocessed
 *   textenc_vision_destroy(tv);
 */
struct textenc_vision;
TEXTENC_API int textenc_vision_create(const struct textenc_options *opt, struct textenc_vision **out);
TEXTENC_API void textenc_vision_destroy(struct textenc_vision *tv); /* accepts NULL */
TEXTENC_API int textenc_vision_info(const struct textenc_vision *tv, int *image_size, int *width, int *projection_dim);
/* image_embeds [n, projection_dim] and pooled [n, width]; either may be NULL. */
TEXTENC_API int textenc_vision_embed(struct textenc_vision *tv, const float *pixels, int n, float *image_embeds,
                                     float *pooled);

#ifdef __cplusplus
}
#endif
#endif
