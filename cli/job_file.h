/* Prompt files: a JSON object (one job), an array of jobs, JSON Lines, or plain text (one prompt a
 * line, '#' comments). Every job is validated before any GPU work: an invalid job gets a message
 * naming the file, the job (index or line) and the field, and the valid jobs still run. */
#ifndef VKD_JOB_FILE_H
#define VKD_JOB_FILE_H

#include <stdbool.h>
#include <stdint.h>

#include "sampler.h"

#define JOB_FILE_MAX_BYTES (64u << 20)

/* A LoRA of a job: its file, the name the parameters text lists it under, its strength, and the
 * file's short hash (filled by the generator). */
struct job_lora {
  char *path, *name;
  double strength;
  char hash[13];
};
#define JOB_MAX_LORAS 64

struct job {
  char *prompt, *negative_prompt, *output;
  char *encode_prompt; /* the prompt without its <lora:...> tags (what is encoded); NULL: prompt */
  struct job_lora *loras; /* "loras" (relative like init_image), then --lora and the prompt's tags */
  int n_loras;
  char *init_image; /* img2img: an image file (a prompt file's relative path is relative to its folder) */
  double strength;  /* img2img: 0..1 (0.75) */
  char *mask;       /* inpainting: white repaints (relative like init_image) */
  double mask_blur; /* Gaussian standard deviation in pixels (4, as AUTOMATIC1111) */
  char *taesd;      /* decode with this TAESD file instead of the KL VAE (relative like init_image) */
  int64_t seed; /* -1: random */
  int steps, width, height, clip_skip, batch_count; /* width/height 0: the model's size; clip_skip 0: the family's */
  int original_size[2], crop[2], target_size[2]; /* SDXL micro-conditioning (h, w), (top, left), (h, w); -1: default */
  double cfg_scale;
  enum sampler_kind sampler;
  enum schedule_kind schedule;
  char where[160]; /* "prompts/a.json, job 2" or "x.txt, line 4", for messages */
  char error[512]; /* non-empty: the job is invalid and is skipped */
};

/* Which fields were given, for command-line overrides (--steps 30 beats "steps": 20). */
struct job_overrides {
  const char *negative_prompt, *output, *init_image, *taesd, *mask;
  bool has_mask_blur, has_strength, has_seed, has_steps, has_width, has_height, has_clip_skip, has_batch_count, has_cfg_scale, has_sampler,
      has_schedule, has_original_size, has_crop, has_target_size;
  struct job values;
  int default_width, default_height; /* non-zero: the model's native size, for jobs that give none */
};

void job_defaults(struct job *j, const struct job_overrides *ov); /* ov may be NULL */
void job_free(struct job *j);
/* Reads path into *jobs (*n of them). Returns non-zero only when the file as a whole cannot be
 * read (missing, not JSON at all); per-job problems are recorded in each job's error. */
enum status job_file_load(const char *path, const struct job_overrides *ov, struct job **jobs, int *n);
/* "H,W" -> two whole numbers 0..1048576 (--original-size, --crop, --target-size). */
bool job_parse_pair(const char *s, int out[2]);
/* A job from --prompt TEXT. */
enum status job_from_text(const char *text, const struct job_overrides *ov, struct job *out);
/* "FILE" or "FILE:STRENGTH" -> *path (malloc'd), *strength (1 when absent; -100..100). */
bool job_lora_parse(const char *arg, char **path, double *strength);
/* The file name without its extension (malloc'd). */
char *job_lora_name(const char *path);
/* Appends a LoRA (name NULL: job_lora_name(path)); false when out of memory or past JOB_MAX_LORAS. */
bool job_add_lora(struct job *j, const char *path, const char *name, double strength);
/* Checks ranges after overrides; fills j->error. */
void job_validate(struct job *j);

#endif
