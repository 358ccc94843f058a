/* generate's work list (plan.h): names, seeds, workers. */
#define _POSIX_C_SOURCE 200809L
#include "plan.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "sha256.h"

/* a whole number lo..hi, nothing else */
static bool whole(const char *s, long lo, long hi, long *out) {
  if (!s || !*s || isspace((unsigned char)*s)) return false;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > hi) return false;
  *out = v;
  return true;
}

bool shard_parse(const char *s, struct shard *out, char *why, size_t n) {
  const char *slash = s ? strchr(s, '/') : NULL;
  char a[32];
  long i, c;
  if (!slash || (size_t)(slash - s) >= sizeof a) {
    snprintf(why, n, "--shard expects I/N (worker I of N, 0 <= I < N) or auto, got '%s'", s ? s : "");
    return false;
  }
  memcpy(a, s, (size_t)(slash - s));
  a[slash - s] = 0;
  if (!whole(a, 0, 999999, &i) || !whole(slash + 1, 1, 1000000, &c)) {
    snprintf(why, n, "--shard expects I/N with whole numbers 0 <= I < N <= 1000000, got '%s'", s);
    return false;
  }
  if (i >= c) {
    snprintf(why, n, "--shard %s: worker %ld does not exist among %ld (0 <= I < N)", s, i, c);
    return false;
  }
  *out = (struct shard){(int)i, (int)c};
  return true;
}

bool shard_from_env(struct shard *out, char *why, size_t n, char *source, size_t source_n) {
  const char *id = getenv("SLURM_ARRAY_TASK_ID"), *count = getenv("SLURM_ARRAY_TASK_COUNT");
  const char *lo = getenv("SLURM_ARRAY_TASK_MIN"), *hi = getenv("SLURM_ARRAY_TASK_MAX");
  long v_id, v_count, v_lo = 0, v_hi;
  if (id && *id) {
    if (!whole(id, 0, 999999999, &v_id)) {
      snprintf(why, n, "--shard auto: SLURM_ARRAY_TASK_ID='%s' is not a whole number", id);
      return false;
    }
    if (lo && *lo && !whole(lo, 0, 999999999, &v_lo)) {
      snprintf(why, n, "--shard auto: SLURM_ARRAY_TASK_MIN='%s' is not a whole number", lo);
      return false;
    }
    if (count && *count) {
      if (!whole(count, 1, 1000000, &v_count)) {
        snprintf(why, n, "--shard auto: SLURM_ARRAY_TASK_COUNT='%s' is not a whole number 1..1000000", count);
        return false;
      }
    } else if (lo && *lo && hi && *hi && whole(hi, v_lo, 999999999, &v_hi)) {
      v_count = v_hi - v_lo + 1;
    } else {
      snprintf(why, n, "--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
               "SLURM_ARRAY_TASK_MIN/MAX (is this a job array?)");
      return false;
    }
    if (v_id - v_lo < 0 || v_id - v_lo >= v_count || v_count > 1000000) {
      snprintf(why, n, "--shard auto: task %ld is not among %ld tasks from %ld: the job array needs contiguous "
               "indices (--array=0-%ld, no step)", v_id, v_count, v_lo, v_count - 1);
      return false;
    }
    *out = (struct shard){(int)(v_id - v_lo), (int)v_count};
    snprintf(source, source_n, "SLURM_ARRAY_TASK_ID=%s", id);
    return true;
  }
  const char *k_index = getenv("JOB_COMPLETION_INDEX"), *k_count = getenv("VKDIFFUSION_SHARDS");
  if (k_index && *k_index) {
    if (!k_count || !*k_count) {
      snprintf(why, n, "--shard auto: JOB_COMPLETION_INDEX is set but VKDIFFUSION_SHARDS (the Indexed Job's "
               "completions) is not");
      return false;
    }
    if (!whole(k_index, 0, 999999, &v_id) || !whole(k_count, 1, 1000000, &v_count) || v_id >= v_count) {
      snprintf(why, n, "--shard auto: JOB_COMPLETION_INDEX='%s' with VKDIFFUSION_SHARDS='%s' is not a worker "
               "0 <= I < N", k_index, k_count);
      return false;
    }
    *out = (struct shard){(int)v_id, (int)v_count};
    snprintf(source, source_n, "JOB_COMPLETION_INDEX=%s", k_index);
    return true;
  }
  snprintf(why, n, "--shard auto: no worker index: set SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (or "
           "SLURM_ARRAY_TASK_MIN/MAX; a Slurm job array), or JOB_COMPLETION_INDEX with VKDIFFUSION_SHARDS "
           "(a Kubernetes Indexed Job), or give --shard I/N");
  return false;
}

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint32_t plan_random_seed(uint64_t run_seed, int first_index) {
  return (uint32_t)(splitmix64(splitmix64(run_seed) ^ (uint64_t)first_index) & 0xffffffffu);
}

uint64_t plan_run_seed(const char *const *files, int n_files, const char *prompt) {
  struct sha256 h;
  sha256_init(&h);
  for (int f = 0; f < n_files; f++) {
    char *data = NULL;
    size_t len = 0;
    if (file_read(files[f], JOB_FILE_MAX_BYTES, &data, &len)) status_clear(), len = 0;
    uint64_t l = len;
    sha256_update(&h, &l, sizeof l);
    sha256_update(&h, data, len);
    free(data);
  }
  if (prompt) {
    uint64_t l = strlen(prompt);
    sha256_update(&h, &l, sizeof l);
    sha256_update(&h, prompt, l);
  }
  char hex[65];
  sha256_hex(&h, hex);
  uint64_t seed = 0;
  for (int i = 0; i < 16; i++) seed = seed << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
  return seed;
}

/* {index} {seed} {prompt} in a file-name pattern */
static void expand_name(const char *pattern, int index, uint64_t seed, const char *prompt, char *out, size_t n) {
  size_t o = 0;
  for (const char *p = pattern; *p && o + 1 < n;) {
    if (!strncmp(p, "{index}", 7)) {
      o += (size_t)snprintf(out + o, n - o, "%05d", index);
      p += 7;
    } else if (!strncmp(p, "{seed}", 6)) {
      o += (size_t)snprintf(out + o, n - o, "%llu", (unsigned long long)seed);
      p += 6;
    } else if (!strncmp(p, "{prompt}", 8)) { /* slug: lower-case letters and digits, '-' between words */
      int k = 0;
      bool dash = false;
      for (const char *q = prompt; *q && k < 48 && o + 1 < n; q++) {
        unsigned char ch = (unsigned char)*q;
        if (isalnum(ch)) {
          if (dash && k) out[o++] = '-', k++;
          out[o++] = (char)tolower(ch);
          k++;
          dash = false;
        } else {
          dash = true;
        }
      }
      p += 8;
    } else {
      out[o++] = *p == '/' ? '_' : *p;
      p++;
    }
    if (o >= n) o = n - 1;
  }
  out[o] = 0;
}

/* an output name: not empty, not . or .., no longer than a file name may be */
static bool name_ok(const char *name, char *why, size_t n) {
  size_t len = strlen(name);
  if (!len || !strcmp(name, ".") || !strcmp(name, "..")) snprintf(why, n, "the output name \"%s\" is not a file name", name);
  else if (len > 255) snprintf(why, n, "the output name is %zu bytes, more than the 255 a file name may have", len);
  else return true;
  return false;
}

static int cmp_names(const void *a, const void *b) {
  const struct planned *const *x = a, *const *y = b;
  return strcmp((*x)->path, (*y)->path);
}

int plan_outputs(struct job *jobs, int n_jobs, struct job_plan *plans, const struct plan_options *o) {
  int index = 0, total = 0;
  struct shard sh = o->shard.count > 0 ? o->shard : (struct shard){0, 1};
  for (int k = 0; k < n_jobs; k++) {
    struct job *j = &jobs[k];
    struct job_plan *pl = &plans[k];
    if (j->error[0]) continue;
    pl->first_index = index;
    pl->seed = j->seed >= 0 ? (uint64_t)j->seed : plan_random_seed(o->run_seed, index);
    if (!(pl->img = calloc((size_t)j->batch_count, sizeof *pl->img))) {
      fprintf(stderr, "vkdiffusion generate: out of host memory\n");
      return 1;
    }
    for (int b = 0; b < j->batch_count; b++) {
      char name[1024], why[160];
      uint32_t seed = (uint32_t)((pl->seed + (uint64_t)b) & 0xffffffffu);
      expand_name(j->output ? j->output : "{index}-{seed}.png", index, seed, j->prompt, name, sizeof name);
      if (!name_ok(name, why, sizeof why)) {
        snprintf(j->error, sizeof j->error, "%s", why);
        break;
      }
      size_t len = strlen(o->outdir) + strlen(name) + 2;
      if (!(pl->img[b].path = malloc(len))) return 1;
      snprintf(pl->img[b].path, len, "%s/%s", o->outdir, name);
      pl->img[b] = (struct planned){.path = pl->img[b].path, .seed = seed, .index = index, .job = j, .image = b + 1,
                                    .mine = index % sh.count == sh.index};
      pl->mine += pl->img[b].mine;
      index++;
      total++;
    }
    if (j->error[0]) continue;
    if (j->seed < 0 && !o->quiet && pl->mine) fprintf(stderr, "%s: seed %llu\n", j->where, (unsigned long long)pl->seed);
  }
  /* collisions, over the whole run (every worker finds the same ones): sort every path once */
  struct planned **all = calloc((size_t)total + 1, sizeof *all);
  int m = 0, rc = 0;
  if (!all) return 1;
  for (int k = 0; k < n_jobs; k++)
    for (int b = 0; !jobs[k].error[0] && plans[k].img && b < jobs[k].batch_count; b++) all[m++] = &plans[k].img[b];
  qsort(all, (size_t)m, sizeof *all, cmp_names);
  for (int i = 0; i + 1 < m; i++)
    if (!strcmp(all[i]->path, all[i + 1]->path)) {
      fprintf(stderr, "vkdiffusion generate: %s: %s, image %d and %s, image %d would both write it ({index} or {seed} "
              "in \"output\" make names unique); nothing generated\n", all[i]->path, all[i]->job->where, all[i]->image,
              all[i + 1]->job->where, all[i + 1]->image);
      rc = 1;
      while (i + 1 < m && !strcmp(all[i]->path, all[i + 1]->path)) i++;
    }
  free(all);
  return rc;
}

void plan_free(struct job_plan *plans, const struct job *jobs, int n_jobs) {
  for (int k = 0; plans && k < n_jobs; k++) {
    for (int b = 0; plans[k].img && b < jobs[k].batch_count; b++) free(plans[k].img[b].path);
    free(plans[k].img);
  }
  free(plans);
}

static size_t lora_names(const struct job *j) {
  size_t n = 0;
  for (int i = 0; i < j->n_loras; i++) n += strlen(j->loras[i].name);
  return n;
}

char *plan_parameters_text(const struct job *j, uint64_t seed, const char *model, int default_clip_skip) {
  size_t n = strlen(j->prompt) + (j->negative_prompt ? strlen(j->negative_prompt) : 0) + strlen(model) + 512 +
             (size_t)j->n_loras * 16 + lora_names(j) +
             (j->init_image ? strlen(j->init_image) : 0) + (j->taesd ? strlen(j->taesd) : 0) + (j->mask ? strlen(j->mask) : 0);
  char *t = malloc(n);
  if (!t) return NULL;
  size_t o = (size_t)snprintf(t, n, "%s\n", j->prompt);
  if (j->negative_prompt && j->negative_prompt[0]) o += (size_t)snprintf(t + o, n - o, "Negative prompt: %s\n", j->negative_prompt);
  o += (size_t)snprintf(t + o, n - o, "Steps: %d, Sampler: %s, ", j->steps, sampler_a1111_name(j->sampler, SCHEDULE_DISCRETE));
  if (j->schedule == SCHEDULE_KARRAS) o += (size_t)snprintf(t + o, n - o, "Schedule type: Karras, ");
  if (j->schedule == SCHEDULE_TRAILING) o += (size_t)snprintf(t + o, n - o, "Schedule type: trailing, ");
  o += (size_t)snprintf(t + o, n - o, "CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s", j->cfg_scale,
                        (unsigned long long)seed, j->width, j->height, model);
  if (j->init_image) { /* AUTOMATIC1111's img2img key, then the init image's file name */
    const char *slash = strrchr(j->init_image, '/');
    o += (size_t)snprintf(t + o, n - o, ", Denoising strength: %g, Init image: %s", j->strength,
                          slash ? slash + 1 : j->init_image);
    if (j->mask) {
      const char *ms = strrchr(j->mask, '/');
      o += (size_t)snprintf(t + o, n - o, ", Mask blur: %g, Mask: %s", j->mask_blur, ms ? ms + 1 : j->mask);
    }
  }
  if (j->taesd) { /* AUTOMATIC1111's "VAE: name" for a VAE other than the checkpoint's */
    const char *slash = strrchr(j->taesd, '/');
    o += (size_t)snprintf(t + o, n - o, ", VAE: %s", slash ? slash + 1 : j->taesd);
  }
  int skip = j->clip_skip ? j->clip_skip : default_clip_skip;
  if (skip > 1) o += (size_t)snprintf(t + o, n - o, ", Clip skip: %d", skip);
  if (j->original_size[0] >= 0 || j->crop[0] >= 0 || j->target_size[0] >= 0)
    o += (size_t)snprintf(t + o, n - o, ", Original size: %dx%d, Crop: %d,%d, Target size: %dx%d",
             j->original_size[0] >= 0 ? j->original_size[1] : j->width, j->original_size[0] >= 0 ? j->original_size[0] : j->height,
             j->crop[0] >= 0 ? j->crop[0] : 0, j->crop[0] >= 0 ? j->crop[1] : 0,
             j->target_size[0] >= 0 ? j->target_size[1] : j->width, j->target_size[0] >= 0 ? j->target_size[0] : j->height);
  for (int i = 0; i < j->n_loras; i++) /* AUTOMATIC1111: Lora hashes: "name: hash, name: hash" */
    o += (size_t)snprintf(t + o, n - o, "%s%s: %s%s", i ? ", " : ", Lora hashes: \"", j->loras[i].name, j->loras[i].hash,
                          i == j->n_loras - 1 ? "\"" : "");
  return t;
}
