/* vkdiffusion generate: prompt files in, PNGs out (the main job). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <math.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clip_image.h"
#include "fileio.h"
#include "job_file.h"
#include "png.h"
#include "prompt.h"
#include "progress.h"
#include "rng.h"
#include "sd_model.h"
#include "textenc_internal.h"
#include "zeroshot.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: vkdiffusion generate [--model CKPT] [--tokenizer PATH] [--config FILE] [overrides...] [-o OUTDIR]\n"
          "                            (PROMPT_FILE... | --prompt TEXT)\n\n"
          "Generates a PNG per image of every job. Prompt files: a JSON object (one job), an array of jobs,\n"
          "JSON Lines, or .txt (one prompt a line, # comments). Job fields (and their overriding flags):\n"
          "  prompt, negative_prompt (--negative-prompt), seed (--seed; -1 random), steps (--steps, 20),\n"
          "  cfg_scale (--cfg-scale, 7; 1: one U-Net evaluation a step), width/height (--width/--height,\n"
          "  multiples of 8; the checkpoint's modelspec.resolution, else 1024 SDXL, 768 SD 2.x v, 512),\n"
          "  sampler (--sampler euler|euler_a|ddim|dpmpp_2m; euler_a), schedule (--schedule discrete|karras|trailing;\n"
          "  trailing for SD-Turbo / SDXL-Turbo), clip_skip (--clip-skip; 1 SD 1.x, 2 SD 2.x and SDXL),\n"
          "  batch_count (--batch-count, 1), SDXL's original_size [h, w] (--original-size H,W), crop [top, left]\n"
          "  (--crop TOP,LEFT), target_size [h, w] (--target-size H,W): the job's size and no crop by default,\n"
          "  output (--output; a file name pattern with {index}, {seed}, {prompt}; \"{index}-{seed}.png\").\n"
          "Model options: --family sd1|sd2|sdxl (else detected), --prediction eps|v (else the checkpoint's\n"
          "modelspec.prediction_type, else stable-diffusion.cpp's rule), --empty-negative zeros|encode (an empty\n"
          "negative prompt as zeros: SDXL's default, as A1111 / diffusers / sgm; or encoded: SD 1.x / 2.x, ComfyUI).\n"
          "Other options: --precision fp16|fp32, --device N, --vae-tiling auto|on|off, --literal (no prompt\n"
          "syntax), --noise FILE (noise [N,4,h,w], ancestral_noise [steps,N,4,h,w]: replaces the RNG),\n"
          "--save-latents FILE (latents [steps,N,4,h,w]: every step of the N images of the job, the last job),\n"
          "--rng cpu|cpu-scalar (torch.randn's bits as PyTorch computes them on x86-64 with AVX2, the default,\n"
          "or without AVX2, e.g. on Arm), --quiet, --progress, --overwrite (replace existing images; without it they are skipped\n"
          "with a note, and two images of one run with the same name are an error before any work),\n"
          "--score-with CLIP_MODEL [--score-config FILE]: the CLIP score (100 x cosine of image and prompt\n"
          "embeddings) of every image, on stderr and in the PNG's parameters.\n"
          "The PNG carries the settings in AUTOMATIC1111's `parameters` text (vkdiffusion info IMAGE.png).\n"
          "Without --model: $VKDIFFUSION_MODEL, else the demo model (models/demo, installed with vkdiffusion).\n"
          "Exit status: 0 when every job succeeded; 1 otherwise (the other jobs still run).\n");
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

static uint64_t random_seed(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x & 0xffffffffu;
}

struct opts {
  const char *outdir, *noise_file, *latents_file, *score_model, *score_config, *model_name;
  bool quiet, progress, overwrite;
  enum sd_vae_tiling tiling;
  enum sd_rng rng;
  enum sd_empty_negative empty_negative;
  int default_clip_skip; /* the model family's, for the parameters text */
  struct zeroshot *scorer; /* --score-with: CLIP score = 100 * cos(image, prompt) of each image */
};

/* Every image's output, decided before any GPU work: its path, its seed, whether it is skipped
 * (the file exists and --overwrite is not given). */
struct planned {
  char *path;
  uint32_t seed;
  bool skip;
  const struct job *job; /* for messages */
  int image;
};
struct job_plan {
  struct planned *img; /* batch_count of them; NULL for an invalid job */
  uint64_t seed;
  int skipped;
};

/* AUTOMATIC1111's parameters text of a generated image (malloc'd) */
static char *parameters_text(const struct job *j, uint64_t seed, const char *model, int default_clip_skip) {
  size_t n = strlen(j->prompt) + (j->negative_prompt ? strlen(j->negative_prompt) : 0) + strlen(model) + 512;
  char *t = malloc(n);
  if (!t) return NULL;
  size_t o = (size_t)snprintf(t, n, "%s\n", j->prompt);
  if (j->negative_prompt && j->negative_prompt[0]) o += (size_t)snprintf(t + o, n - o, "Negative prompt: %s\n", j->negative_prompt);
  o += (size_t)snprintf(t + o, n - o, "Steps: %d, Sampler: %s, ", j->steps, sampler_a1111_name(j->sampler, SCHEDULE_DISCRETE));
  if (j->schedule == SCHEDULE_KARRAS) o += (size_t)snprintf(t + o, n - o, "Schedule type: Karras, ");
  if (j->schedule == SCHEDULE_TRAILING) o += (size_t)snprintf(t + o, n - o, "Schedule type: trailing, ");
  o += (size_t)snprintf(t + o, n - o, "CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s", j->cfg_scale,
                        (unsigned long long)seed, j->width, j->height, model);
  int skip = j->clip_skip ? j->clip_skip : default_clip_skip;
  if (skip > 1) o += (size_t)snprintf(t + o, n - o, ", Clip skip: %d", skip);
  if (j->original_size[0] >= 0 || j->crop[0] >= 0 || j->target_size[0] >= 0)
    snprintf(t + o, n - o, ", Original size: %dx%d, Crop: %d,%d, Target size: %dx%d",
             j->original_size[0] >= 0 ? j->original_size[1] : j->width, j->original_size[0] >= 0 ? j->original_size[0] : j->height,
             j->crop[0] >= 0 ? j->crop[0] : 0, j->crop[0] >= 0 ? j->crop[1] : 0,
             j->target_size[0] >= 0 ? j->target_size[1] : j->width, j->target_size[0] >= 0 ? j->target_size[0] : j->height);
  return t;
}

/* txt2img's callbacks for one job: the progress line, and each finished image scored and written */
struct job_run {
  const struct job *j;
  const struct job_plan *plan;
  const struct opts *o;
  struct progress prog;
  int *images_done, *images_skipped, failed, delivered;
};

static int on_progress(enum sd_phase phase, int image, int step, int steps, void *user) {
  struct job_run *r = user;
  static const char *const names[] = {"encode", "sample", "decode"};
  r->prog.image = image + 1;
  if (step == 0) progress_phase(&r->prog, names[phase]);
  progress_draw(&r->prog, step, steps);
  return 0;
}

static int on_image(int image, uint32_t seed, const unsigned char *rgb, const float *latent, void *user) {
  struct job_run *r = user;
  const struct job *j = r->j;
  const struct planned *pl = &r->plan->img[image];
  r->delivered++;
  if (pl->skip) return 0; /* exists: noted when planned */
  char *params = parameters_text(j, seed, r->o->model_name, r->o->default_clip_skip);
  enum status st = params ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of memory");
  double score = 0;
  if (!st && r->o->scorer && !(st = zeroshot_score(r->o->scorer, rgb, j->width, j->height, j->prompt, &score))) {
    char *p2 = realloc(params, strlen(params) + 64);
    if (p2) params = p2, snprintf(params + strlen(params), 64, ", CLIP score: %.2f", score);
    fprintf(stderr, "%s, image %d: CLIP score %.2f\n", j->where, image + 1, score);
  }
  if (!st) st = png_write(pl->path, rgb, j->width, j->height, params, r->o->overwrite);
  free(params);
  if (st && !r->o->overwrite && strstr(status_message(), "(not replaced)")) {
    /* another process wrote it since the plan: kept, never replaced */
    fprintf(stderr, "%s%s: written meanwhile by another process: kept\n", r->prog.on ? "\n" : "", pl->path);
    (*r->images_skipped)++;
  } else if (st) {
    fprintf(stderr, "%svkdiffusion generate: %s, image %d: %s\n", r->prog.on ? "\n" : "", j->where, image + 1,
            status_message());
    r->failed++;
  } else {
    (*r->images_done)++;
    if (!r->o->quiet) fprintf(stderr, "wrote %s (seed %llu)\n", pl->path, (unsigned long long)seed);
  }
  (void)latent;
  return 0; /* a failed write fails this image only */
}

/* An invalid job counts as its images (at least one) in the summary. */
static int job_images(const struct job *j) { return j->batch_count >= 1 && j->batch_count <= 1000 ? j->batch_count : 1; }

/* Runs one job (all its images); returns the number of images that failed. A failure to write
 * --save-latents (the images are written) counts in *errors. */
static int run_job(struct sd_model *m, const struct job *j, const struct job_plan *plan, const struct opts *o,
                   int *images_done, int *images_skipped, int *errors) {
  if (j->error[0]) {
    fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", j->where, j->error);
    return job_images(j);
  }
  if (plan->skipped == j->batch_count && !o->latents_file) return 0; /* every image exists */
  struct sd_model_info info;
  sd_model_get_info(m, &info);
  int unit = info.vae_factor * info.latent_align, h = j->height / info.vae_factor, w = j->width / info.vae_factor;
  if (j->height % unit || j->width % unit) {
    fprintf(stderr, "vkdiffusion generate: %s: %dx%d is not a multiple of %d for this model (job skipped)\n", j->where,
            j->width, j->height, unit);
    return j->batch_count;
  }
  /* the job's --noise (read once: [batch_count][n], ancestral [steps][batch_count][n]) and its
   * --save-latents buffer [steps, batch_count, 4, h, w], before the prompt is encoded */
  size_t n = (size_t)info.latent_channels * h * w;
  float *noise = NULL, *anoise = NULL, *saved = NULL;
  enum status js = STATUS_OK;
  if (o->noise_file) js = sd_load_noise(o->noise_file, j->batch_count, j->steps, info.latent_channels, h, w, &noise, &anoise);
  if (!js && o->latents_file && !(saved = calloc((size_t)j->steps * j->batch_count * n, sizeof *saved)))
    js = status_set(STATUS_OUT_OF_MEMORY, "out of host memory for --save-latents");
  if (js) {
    fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", j->where, status_message());
    free(noise), free(anoise);
    return j->batch_count;
  }
  struct job_run r = {.j = j, .plan = plan, .o = o, .prog = {.on = o->progress && !o->quiet, .images = j->batch_count},
                      .images_done = images_done, .images_skipped = images_skipped};
  struct txt2img_params p = txt2img_default_params();
  p.prompt = j->prompt;
  p.negative_prompt = j->negative_prompt;
  p.seed = (int64_t)plan->seed;
  p.noise = noise;
  p.ancestral_noise = anoise;
  p.steps = j->steps;
  p.cfg_scale = j->cfg_scale;
  p.width = j->width;
  p.height = j->height;
  p.sampler = (enum sd_sampler)j->sampler;
  p.schedule = (enum sd_schedule)j->schedule;
  p.clip_skip = j->clip_skip;
  p.batch_count = j->batch_count;
  p.empty_negative = o->empty_negative;
  if (j->original_size[0] >= 0) p.original_height = j->original_size[0], p.original_width = j->original_size[1];
  if (j->crop[0] >= 0) p.crop_top = j->crop[0], p.crop_left = j->crop[1];
  if (j->target_size[0] >= 0) p.target_height = j->target_size[0], p.target_width = j->target_size[1];
  p.vae_tiling = o->tiling;
  p.rng = o->rng;
  p.progress = on_progress;
  p.on_image = on_image;
  p.user = &r;
  p.cancel = &cli_interrupted;
  if (txt2img(m, &p, NULL, saved)) { /* the images not delivered failed with it */
    fprintf(stderr, "%svkdiffusion generate: %s, image %d: %s\n", r.prog.on ? "\n" : "", j->where, r.delivered + 1,
            status_message());
    r.failed += j->batch_count - r.delivered;
  }
  if (saved && r.failed) {
    fprintf(stderr, "vkdiffusion generate: %s: %s not written (%d of %d images failed)\n", j->where, o->latents_file,
            r.failed, j->batch_count);
    (*errors)++;
  } else if (saved) { /* every image of the job, written once they are all done */
    struct st_writer *lw = NULL;
    enum status ws = st_writer_create(&lw);
    if (!ws) ws = st_writer_add(lw, "latents", ST_F32, 5, (int64_t[]){j->steps, j->batch_count, info.latent_channels, h, w}, saved);
    if (!ws) ws = st_writer_finish(lw, o->latents_file);
    st_writer_destroy(lw);
    if (ws) {
      fprintf(stderr, "vkdiffusion generate: %s: --save-latents: %s\n", j->where, status_message());
      (*errors)++;
    }
  }
  free(noise), free(anoise), free(saved);
  return r.failed;
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

/* Decides every image's path, seed and fate before any GPU work: bad output names make the job
 * invalid; two images of the run with one name are an error for the whole run (nothing is
 * generated); an existing file is skipped with a note unless --overwrite. Returns 0 or 1. */
static int plan_outputs(struct job *jobs, int n_jobs, struct job_plan *plans, const struct opts *o, int *skipped) {
  int index = 0, total = 0;
  for (int k = 0; k < n_jobs; k++) {
    struct job *j = &jobs[k];
    struct job_plan *pl = &plans[k];
    if (j->error[0]) continue;
    pl->seed = j->seed >= 0 ? (uint64_t)j->seed : random_seed();
    if (j->seed < 0 && !o->quiet) fprintf(stderr, "%s: seed %llu\n", j->where, (unsigned long long)pl->seed);
    if (!(pl->img = calloc((size_t)j->batch_count, sizeof *pl->img))) {
      fprintf(stderr, "vkdiffusion generate: out of host memory\n");
      return 1;
    }
    for (int b = 0; b < j->batch_count; b++) {
      char name[1024], why[160];
      uint32_t seed = (uint32_t)((pl->seed + (uint64_t)b) & 0xffffffffu);
      expand_name(j->output ? j->output : "{index}-{seed}.png", index++, seed, j->prompt, name, sizeof name);
      if (!name_ok(name, why, sizeof why)) {
        snprintf(j->error, sizeof j->error, "%s", why);
        break;
      }
      size_t len = strlen(o->outdir) + strlen(name) + 2;
      if (!(pl->img[b].path = malloc(len))) return 1;
      snprintf(pl->img[b].path, len, "%s/%s", o->outdir, name);
      pl->img[b].seed = seed;
      pl->img[b].job = j;
      pl->img[b].image = b + 1;
      total++;
    }
  }
  /* collisions: sort every path once */
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
  for (int k = 0; !rc && k < n_jobs; k++)
    for (int b = 0; !jobs[k].error[0] && b < jobs[k].batch_count; b++) {
      struct stat sb;
      if (lstat(plans[k].img[b].path, &sb) != 0) continue;
      if (o->overwrite && S_ISREG(sb.st_mode)) continue;
      if (S_ISREG(sb.st_mode)) {
        if (!o->quiet) fprintf(stderr, "%s: exists: skipped (--overwrite replaces it)\n", plans[k].img[b].path);
      } else {
        fprintf(stderr, "vkdiffusion generate: %s: exists and is not a regular file: skipped\n", plans[k].img[b].path);
      }
      plans[k].img[b].skip = true;
      plans[k].skipped++;
      (*skipped)++;
    }
  return rc;
}

static void free_plans(struct job_plan *plans, struct job *jobs, int n) {
  for (int k = 0; plans && k < n; k++) {
    for (int b = 0; plans[k].img && b < jobs[k].batch_count; b++) free(plans[k].img[b].path);
    free(plans[k].img);
  }
  free(plans);
}

int cmd_generate(int argc, char **argv) {
  struct sd_model_options mo = sd_model_default_options();
  struct job_overrides ov = {0};
  struct opts o = {.outdir = ".", .progress = isatty(2), .tiling = SD_VAE_TILING_AUTO};
  const char **files = calloc((size_t)argc, sizeof *files), *prompt = NULL;
  int n_files = 0;
  long v;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
#define VALUE() \
  if (!(val = cli_value(argc, argv, &i))) goto usage_error
#define INT(field, lo, hi)                                   \
  do {                                                       \
    VALUE();                                                 \
    if (!cli_int(a, val, lo, hi, &v)) goto usage_error;      \
    ov.values.field = (int)v;                                \
  } while (0)
    if (cli_is_help(a)) {
      usage(stdout);
      free(files);
      return 0;
    } else if (!strcmp(a, "--model")) { VALUE(); mo.model_path = val; }
    else if (!strcmp(a, "--tokenizer")) { VALUE(); mo.tokenizer_path = val; }
    else if (!strcmp(a, "--config")) { VALUE(); mo.config_path = val; }
    else if (!strcmp(a, "--prompt")) { VALUE(); prompt = val; }
    else if (!strcmp(a, "-o") || !strcmp(a, "--outdir")) { VALUE(); o.outdir = val; }
    else if (!strcmp(a, "--negative-prompt")) { VALUE(); ov.negative_prompt = val; }
    else if (!strcmp(a, "--output")) { VALUE(); ov.output = val; }
    else if (!strcmp(a, "--steps")) { INT(steps, 1, 1000); ov.has_steps = true; }
    else if (!strcmp(a, "--width")) { INT(width, -100000, 100000); ov.has_width = true; }
    else if (!strcmp(a, "--height")) { INT(height, -100000, 100000); ov.has_height = true; }
    else if (!strcmp(a, "--clip-skip")) { INT(clip_skip, 1, 12); ov.has_clip_skip = true; }
    else if (!strcmp(a, "--original-size") || !strcmp(a, "--crop") || !strcmp(a, "--target-size")) {
      VALUE();
      int *dst = a[2] == 'o' ? ov.values.original_size : a[2] == 'c' ? ov.values.crop : ov.values.target_size;
      if (!job_parse_pair(val, dst)) {
        fprintf(stderr, "vkdiffusion generate: %s expects two whole numbers of pixels as A,B, got '%s'\n", a, val);
        goto usage_error;
      }
      *(a[2] == 'o' ? &ov.has_original_size : a[2] == 'c' ? &ov.has_crop : &ov.has_target_size) = true;
    } else if (!strcmp(a, "--family")) {
      VALUE();
      mo.family = (enum sd_family)textenc_parse_family(val); /* sd_family mirrors textenc_family */
      if (mo.family == SD_FAMILY_AUTO) {
        fprintf(stderr, "vkdiffusion generate: --family expects sd1, sd2 or sdxl, got '%s'\n", val);
        goto usage_error;
      }
    } else if (!strcmp(a, "--prediction")) {
      VALUE();
      if (strcmp(val, "eps") && strcmp(val, "v")) {
        fprintf(stderr, "vkdiffusion generate: --prediction expects eps or v, got '%s'\n", val);
        goto usage_error;
      }
      mo.prediction = strcmp(val, "v") ? SD_PREDICTION_EPS : SD_PREDICTION_V;
    } else if (!strcmp(a, "--empty-negative")) {
      VALUE();
      if (strcmp(val, "zeros") && strcmp(val, "encode")) {
        fprintf(stderr, "vkdiffusion generate: --empty-negative expects zeros or encode, got '%s'\n", val);
        goto usage_error;
      }
      o.empty_negative = strcmp(val, "zeros") ? SD_EMPTY_NEGATIVE_ENCODE : SD_EMPTY_NEGATIVE_ZEROS;
    }
    else if (!strcmp(a, "--batch-count")) { INT(batch_count, 1, 1000); ov.has_batch_count = true; }
    else if (!strcmp(a, "--seed")) {
      VALUE();
      if (!cli_int(a, val, -1, 4294967295L, &v)) goto usage_error;
      ov.values.seed = v;
      ov.has_seed = true;
    } else if (!strcmp(a, "--cfg-scale")) {
      VALUE();
      char *end;
      ov.values.cfg_scale = strtod(val, &end);
      if (*end || end == val) {
        fprintf(stderr, "vkdiffusion generate: --cfg-scale expects a number, got '%s'\n", val);
        goto usage_error;
      }
      ov.has_cfg_scale = true;
    } else if (!strcmp(a, "--sampler")) {
      VALUE();
      int s = sampler_parse(val);
      if (s < 0) {
        fprintf(stderr, "vkdiffusion generate: --sampler expects euler, euler_a, ddim or dpmpp_2m, got '%s'\n", val);
        goto usage_error;
      }
      ov.values.sampler = (enum sampler_kind)s;
      ov.has_sampler = true;
    } else if (!strcmp(a, "--schedule")) {
      VALUE();
      int s = schedule_parse(val);
      if (s < 0) {
        fprintf(stderr, "vkdiffusion generate: --schedule expects discrete, karras or trailing, got '%s'\n", val);
        goto usage_error;
      }
      ov.values.schedule = (enum schedule_kind)s;
      ov.has_schedule = true;
    } else if (!strcmp(a, "--precision")) {
      VALUE();
      if (strcmp(val, "fp16") && strcmp(val, "fp32")) {
        fprintf(stderr, "vkdiffusion generate: --precision expects fp16 or fp32\n");
        goto usage_error;
      }
      mo.precision = strcmp(val, "fp32") ? SD_FP16 : SD_FP32;
    } else if (!strcmp(a, "--device")) {
      VALUE();
      if (!cli_int(a, val, 0, 64, &v)) goto usage_error;
      mo.device_index = (int)v;
    } else if (!strcmp(a, "--vae-tiling")) {
      VALUE();
      if (!strcmp(val, "auto")) o.tiling = SD_VAE_TILING_AUTO;
      else if (!strcmp(val, "on")) o.tiling = SD_VAE_TILING_ON;
      else if (!strcmp(val, "off")) o.tiling = SD_VAE_TILING_OFF;
      else {
        fprintf(stderr, "vkdiffusion generate: --vae-tiling expects auto, on or off\n");
        goto usage_error;
      }
    } else if (!strcmp(a, "--rng")) {
      VALUE();
      int k = rng_kind_parse(val);
      if (k < 0) {
        fprintf(stderr, "vkdiffusion generate: --rng expects cpu (PyTorch on x86-64 with AVX2) or cpu-scalar "
                "(PyTorch without AVX2, e.g. Arm), got '%s'\n", val);
        goto usage_error;
      }
      o.rng = (enum sd_rng)k;
    } else if (!strcmp(a, "--noise")) { VALUE(); o.noise_file = val; }
    else if (!strcmp(a, "--save-latents")) { VALUE(); o.latents_file = val; }
    else if (!strcmp(a, "--score-with")) { VALUE(); o.score_model = val; }
    else if (!strcmp(a, "--score-config")) { VALUE(); o.score_config = val; }
    else if (!strcmp(a, "--quiet")) o.quiet = true;
    else if (!strcmp(a, "--overwrite")) o.overwrite = true;
    else if (!strcmp(a, "--progress")) o.progress = true;
    else if (!strcmp(a, "--literal")) mo.literal = 1; /* the text encoder is created with it */
    else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "vkdiffusion generate: unknown option '%s' (see --help)\n", a);
      goto usage_error;
    } else {
      files[n_files++] = a;
    }
#undef VALUE
#undef INT
  }
  if (!mo.model_path) {
    if (!(mo.model_path = cli_default_model("generate"))) goto usage_error;
    if (!o.quiet) fprintf(stderr, "vkdiffusion generate: no --model: using %s\n", mo.model_path);
  }
  if (!prompt && !n_files) {
    fprintf(stderr, "vkdiffusion generate: give prompt files or --prompt TEXT\n");
    goto usage_error;
  }
  /* jobs without a size take the checkpoint's native size (modelspec.resolution) */
  sd_checkpoint_native_size(mo.model_path, &ov.default_width, &ov.default_height);
  /* the model's name in the parameters text: the file name without its extension */
  char model_name[256];
  const char *slash = strrchr(mo.model_path, '/');
  snprintf(model_name, sizeof model_name, "%s", slash ? slash + 1 : mo.model_path);
  char *dot = strrchr(model_name, '.');
  if (dot && dot != model_name) *dot = 0;
  o.model_name = model_name;
  /* every job is read and checked before any GPU work */
  struct job *jobs = NULL;
  int n_jobs = 0, rc = 0;
  for (int f = 0; f < n_files; f++) {
    struct job *fj;
    int fn;
    if (job_file_load(files[f], &ov, &fj, &fn)) {
      fprintf(stderr, "vkdiffusion generate: %s\n", status_message());
      rc = 1;
      continue;
    }
    jobs = realloc(jobs, (size_t)(n_jobs + fn + 1) * sizeof *jobs);
    memcpy(jobs + n_jobs, fj, (size_t)fn * sizeof *fj);
    n_jobs += fn;
    free(fj);
  }
  if (prompt) {
    jobs = realloc(jobs, (size_t)(n_jobs + 1) * sizeof *jobs);
    job_from_text(prompt, &ov, &jobs[n_jobs++]);
  }
  cli_handle_signals(true);
  /* the prompts' syntax (weights, nesting, length) is checked now, not after the model is loaded */
  for (int k = 0; k < n_jobs && !mo.literal; k++) {
    const char *texts[2] = {jobs[k].prompt, jobs[k].negative_prompt}, *names[2] = {"prompt", "negative_prompt"};
    for (int t = 0; t < 2 && !jobs[k].error[0]; t++) {
      struct prompt_segment *seg = NULL;
      int ns = 0;
      if (texts[t] && prompt_parse(texts[t], &seg, &ns)) snprintf(jobs[k].error, sizeof jobs[k].error, "\"%s\": %s", names[t], status_message());
      else prompt_segments_free(seg, ns);
    }
  }
  /* the output folder, every image's name and fate: all decided before any GPU work */
  struct stat sb;
  if (stat(o.outdir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "vkdiffusion generate: %s: exists and is not a folder (-o names the output folder)\n", o.outdir);
    rc = 1;
  } else if (cli_mkdirs(o.outdir) != 0) {
    fprintf(stderr, "vkdiffusion generate: %s: cannot create the output folder: %s\n", o.outdir, strerror(errno));
    rc = 1;
  } else if (access(o.outdir, W_OK | X_OK) != 0) {
    fprintf(stderr, "vkdiffusion generate: %s: cannot write in the output folder: %s\n", o.outdir, strerror(errno));
    rc = 1;
  }
  if (!rc && o.latents_file) { /* --save-latents: a file in a folder we can write, checked now */
    char folder[4096];
    snprintf(folder, sizeof folder, "%s", o.latents_file);
    char *sep = strrchr(folder, '/');
    if (sep) *sep = 0;
    else snprintf(folder, sizeof folder, ".");
    if (stat(o.latents_file, &sb) == 0 && !S_ISREG(sb.st_mode)) {
      fprintf(stderr, "vkdiffusion generate: --save-latents %s: exists and is not a file\n", o.latents_file);
      rc = 1;
    } else if (access(folder[0] ? folder : "/", W_OK | X_OK) != 0) {
      fprintf(stderr, "vkdiffusion generate: --save-latents %s: cannot write in %s: %s\n", o.latents_file,
              folder[0] ? folder : "/", strerror(errno));
      rc = 1;
    }
  }
  int stale = rc ? 0 : file_tmp_remove_stale(o.outdir);
  if (stale && !o.quiet) fprintf(stderr, "vkdiffusion generate: removed %d temporary file(s) a killed run left in %s\n", stale, o.outdir);
  int skipped = 0;
  struct job_plan *plans = calloc((size_t)n_jobs + 1, sizeof *plans);
  if (!plans) rc = 1;
  if (!rc) rc = plan_outputs(jobs, n_jobs, plans, &o, &skipped);
  int invalid = 0, to_render = 0;
  for (int k = 0; k < n_jobs; k++) {
    invalid += jobs[k].error[0] != 0;
    if (!jobs[k].error[0]) to_render += jobs[k].batch_count - plans[k].skipped;
  }
  struct sd_model *m = NULL;
  int failed_images = 0, done_images = 0;
  if (!rc && (to_render > 0 || (o.latents_file && invalid < n_jobs)) && sd_model_create(&mo, &m)) {
    fprintf(stderr, "vkdiffusion generate: %s\n", status_message());
    rc = 1;
  }
  if (m) { /* jobs without a size or clip skip take the model's; say what was detected */
    struct sd_model_info mi;
    sd_model_get_info(m, &mi);
    for (int k = 0; k < n_jobs; k++)
      if (!jobs[k].width) jobs[k].width = mi.default_width;
    for (int k = 0; k < n_jobs; k++)
      if (!jobs[k].height) jobs[k].height = mi.default_height;
    o.default_clip_skip = mi.default_clip_skip;
    static const char *const fam[] = {"", "SD 1.x", "SD 2.x", "SDXL"};
    if (!o.quiet)
      fprintf(stderr, "vkdiffusion generate: %s, %s-prediction (%s), default size %dx%d\n", fam[mi.family],
              mi.prediction == SD_PREDICTION_V ? "v" : "eps", mi.prediction_source, mi.default_width, mi.default_height);
  }
  if (m && o.score_model) {
    struct textenc_options to = textenc_default_options();
    to.model_path = o.score_model;
    to.config_path = o.score_config;
    to.tokenizer_path = mo.tokenizer_path;
    to.device = sd_model_gpu(m);
    if (zeroshot_create(&to, &o.scorer)) {
      fprintf(stderr, "vkdiffusion generate: --score-with: %s\n", status_message());
      rc = 1;
      sd_model_destroy(m);
      m = NULL;
    }
  }
  for (int k = 0; k < n_jobs; k++) {
    if (cli_interrupted) { /* SIGINT/SIGTERM: the image in progress was discarded; the rest are not started */
      failed_images += jobs[k].error[0] ? job_images(&jobs[k]) : jobs[k].batch_count - plans[k].skipped;
      continue;
    }
    if (!m && !jobs[k].error[0] && plans[k].skipped == jobs[k].batch_count) continue;
    if (!m) {
      if (jobs[k].error[0]) fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", jobs[k].where, jobs[k].error);
      failed_images += jobs[k].error[0] ? job_images(&jobs[k]) : jobs[k].batch_count - plans[k].skipped;
      continue;
    }
    failed_images += run_job(m, &jobs[k], &plans[k], &o, &done_images, &skipped, &rc);
  }
  int total = done_images + failed_images + skipped;
  char skip_note[96] = "";
  if (skipped) snprintf(skip_note, sizeof skip_note, "; %d skipped (the file exists; --overwrite replaces it)", skipped);
  if (cli_interrupted) {
    fprintf(stderr, "vkdiffusion generate: interrupted: %d of %d images written%s\n", done_images, total, skip_note);
    rc = 1;
  } else if (failed_images || rc || invalid) {
    fprintf(stderr, "vkdiffusion generate: %d of %d images written; %d failed (%d invalid jobs)%s\n", done_images, total,
            failed_images, invalid, skip_note);
    rc = 1;
  } else if (!o.quiet) {
    fprintf(stderr, "vkdiffusion generate: %d images written to %s%s\n", done_images, o.outdir, skip_note);
  }
  free_plans(plans, jobs, n_jobs);
  for (int k = 0; k < n_jobs; k++) job_free(&jobs[k]);
  free(jobs);
  free(files);
  zeroshot_destroy(o.scorer);
  if (m) rc = cli_report_gpu(sd_model_gpu(m), rc); /* the profile, and validation messages fail the run */
  sd_model_destroy(m);
  return rc;
usage_error:
  free(files);
  return 2;
}
