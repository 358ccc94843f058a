/* generate's work list, decided before any GPU work and identical in every worker:
 *
 *   jobs (file order) ─► images (batch order) ─► index k = 0, 1, 2, ...  (valid jobs only)
 *   image k: its output path, its seed, and its worker: k mod N (--shard I/N)
 *
 * A job without a seed (-1) takes one from the run seed and the index of its first image, so N
 * workers (each computing the whole list and rendering its share) write exactly the files one
 * process would. Workers never talk to each other. */
#ifndef VKD_PLAN_H
#define VKD_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job_file.h"

struct shard {
  int index, count; /* worker `index` of `count`; {0, 1}: the whole run */
};
/* "I/N" with 0 <= I < N <= 1000000; false with a reason in why. */
bool shard_parse(const char *s, struct shard *out, char *why, size_t n);
/* --shard auto: SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MIN / MAX), else
 * JOB_COMPLETION_INDEX with VKDIFFUSION_SHARDS (a Kubernetes Indexed Job). `source` names what was
 * used; false with a reason naming the variables looked for. */
bool shard_from_env(struct shard *out, char *why, size_t n, char *source, size_t source_n);

/* The seed of a job without one: a 32-bit mix of the run seed and the index of its first image. */
uint32_t plan_random_seed(uint64_t run_seed, int first_index);
/* The default run seed: the first 8 bytes of SHA-256 over the prompt files' bytes (in order, each
 * preceded by its length) and the --prompt text. Files that cannot be read count as empty (the job
 * loader reports them). */
uint64_t plan_run_seed(const char *const *files, int n_files, const char *prompt);

struct planned {
  char *path;
  uint32_t seed;
  int index;                /* in the work list */
  bool mine;                /* index mod N == I */
  bool skip;                /* mine, but not rendered (it exists; see generate) */
  bool replace;             /* --skip-existing found a file that is not this image: rendered over it */
  const struct job *job;    /* for messages */
  int image;                /* 1-based within the job */
};
struct job_plan {
  struct planned *img; /* batch_count of them; NULL for an invalid job */
  uint64_t seed;       /* image b's seed is seed + b (mod 2^32) */
  int first_index;     /* the work-list index of image 1 */
  int mine, skipped;   /* this worker's images, and how many of them are skipped */
};
struct plan_options {
  const char *outdir;
  struct shard shard;
  uint64_t run_seed;
  bool quiet;
};
/* Every image's path, seed and worker. A bad output name makes its job invalid; two images of the
 * run with one name are an error for the whole run (returns 1, nothing generated). Returns 0. */
int plan_outputs(struct job *jobs, int n_jobs, struct job_plan *plans, const struct plan_options *o);
void plan_free(struct job_plan *plans, const struct job *jobs, int n_jobs);

/* AUTOMATIC1111's parameters text of an image (malloc'd), before any CLIP score. */
char *plan_parameters_text(const struct job *j, uint64_t seed, const char *model, int default_clip_skip);

#endif
