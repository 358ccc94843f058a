/* LoRA: low-rank differences merged into a model's device weights.
 *
 *   W' = W + strength * (alpha / rank) * up . down        (fp32 arithmetic, stored in W's precision)
 *
 * Files: kohya/sd-scripts (lora_unet_*, lora_te_*, lora_te1_* / lora_te2_* for SDXL; .lora_down.weight,
 * .lora_up.weight, .alpha; LoCon's 3x3 and 1x1 convolution downs), and diffusers/PEFT (unet.*,
 * text_encoder.*, text_encoder_2.*, optionally under base_model.model.; .lora_A.weight, .lora_B.weight,
 * alpha = rank). A module's name is its path with '.' written '_' (kohya's form); each model says
 * which names its weights answer to (lora_alias_fn): the U-Net both its ldm and its diffusers names,
 * the text towers Hugging Face's names (OpenCLIP's packed in_proj rows as q_proj, k_proj, v_proj).
 *
 * The file is untrusted: every module needs both matrices, ranks agree, shapes are 2-D or 4-D with 1x1
 * ups, alpha is one finite number, values are finite; errors name the file and the key. */
#ifndef VKD_LORA_H
#define VKD_LORA_H

#include <stdbool.h>
#include <stdint.h>

#include "safetensors.h"
#include "status.h"
#include "weight_loader.h"

#define LORA_NAME 256
#define LORA_MAX_ALIASES 2

enum lora_net { LORA_NET_UNET, LORA_NET_TE1, LORA_NET_TE2, LORA_NET_UNKNOWN };

struct lora_module {
  char name[LORA_NAME];        /* the module path, '.' as '_' (without the network's prefix) */
  char key[LORA_NAME];         /* the file's key of its down matrix, for messages */
  enum lora_net net;
  const struct st_tensor *up, *down, *alpha_t;
  double alpha;                /* alpha / rank scales the product; alpha 0 or absent: rank */
  int64_t rank, out, in;       /* up [out, rank(, 1, 1)], down [rank, in] (in = C k k for a convolution) */
};

struct lora_file {
  struct safetensors *st;
  struct lora_module *m;
  int n;
  int unsupported;             /* keys of other network kinds (LoHa, LoKr, DoRA, ...) */
  char first_unsupported[LORA_NAME];
};

/* Opens and checks a LoRA file. */
enum status lora_open(const char *path, struct lora_file **out);
void lora_close(struct lora_file *f); /* accepts NULL */
/* delta [out, in] = scale * (alpha / rank) * up . down, values checked finite. */
enum status lora_delta(const struct lora_file *f, const struct lora_module *m, double scale, float *delta);
/* AUTOMATIC1111's short hash of a LoRA file: the first 12 hex digits of the SHA-256 of everything
 * after the safetensors header (sd-webui-additional-networks' "addnet" hash). */
enum status lora_short_hash(const char *path, char out[13]);

/* The names (at most LORA_MAX_ALIASES, '.' as '_') a registry entry answers to; 0: none (not a
 * weight a LoRA can touch). */
typedef int (*lora_alias_fn)(const struct weight_entry *e, char names[LORA_MAX_ALIASES][LORA_NAME], const void *ctx);

/* One network of a model: what it loaded and the names its weights answer to. */
struct lora_target {
  const struct weight_registry *reg;
  enum lora_net net;
  lora_alias_fn alias;
  const void *ctx;
};

struct lora_spec {
  const char *path;
  double strength;
};

struct lora_report {
  int modules;     /* LoRA modules in the files */
  int applied;     /* merged into a tensor (strength 0 counts: it matched) */
  int unmatched;   /* no tensor of that name, or another shape */
  int other;       /* for a network this model does not have loaded (the U-Net's, to `encode`) */
  int unsupported; /* keys of network kinds not supported (LoHa, LoKr, ...) */
  int rewritten;   /* device tensors rewritten by this call */
  char first_unmatched[2 * LORA_NAME];
};

struct lora_state;
struct gpu;
enum status lora_state_create(struct gpu *g, const struct lora_target *targets, int n, struct lora_state **out);
void lora_state_destroy(struct lora_state *s); /* accepts NULL */
/* Makes the merged set exactly specs (replacing the previous set): tensors whose contributions are
 * unchanged are left alone; those that lost every contribution get the checkpoint's exact values
 * back. strict: an unmatched or unsupported key is an error naming it; otherwise counted in rep.
 * A file none of whose keys matches anything of a loaded network is an error either way. */
enum status lora_state_apply(struct lora_state *s, const struct lora_spec *specs, int n, bool strict,
                             struct lora_report *rep);

#endif
