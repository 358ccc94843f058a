/* vkdiffusion generate: prompt files in, PNGs out (the main job). */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
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
#include "plan.h"
#include "png.h"
#include "prompt.h"
#include "progress.h"
#include "rng.h"
#include "sd_model.h"
#include "sha256.h"
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
          "  output (--output; a file name pattern with {index}, {seed}, {prompt}; \"{index}-{seed}.png\"),\n"
          "  img2img: init_image (--init-image FILE; relative to the prompt file's folder) and strength (--strength,\n"
          "  0.75): the image cropped and resized to the job's size (AUTOMATIC1111's \"Crop and resize\", Lanczos),\n"
          "  VAE-encoded (--vae-encode sample|mean: the posterior sampled with the image's seed, or its mean), noised\n"
          "  to step steps - int(strength x steps) and sampled from there (int(strength x steps) U-Net steps).\n"
          "  inpainting: mask (--mask FILE: white repaints, grey blends; cropped and resized like init_image) and\n"
          "  mask_blur (--mask-blur PX, 4): an inpainting checkpoint (U-Net in_channels 9) reads the mask; others\n"
          "  keep the black part of the latent at the init image's, noised to each step's sigma.\n"
          "  taesd (--vae-decoder FILE): decode with madebyollin's tiny autoencoder instead of the KL VAE (one TAESD\n"
          "  file a run). --preview-every N [--preview-decoder FILE]: every N steps NAME.preview.png shows the\n"
          "  current latent through TAESD (replaced atomically; removed when the image is written); without a\n"
          "  decoder, taesd.safetensors beside the model (the demo model has one).\n"
          "  loras ([\"FILE:STRENGTH\", {\"path\": FILE, \"strength\": S}]; relative to the prompt file; --lora\n"
          "  FILE[:STRENGTH], repeatable, adds to every job) and <lora:NAME:STRENGTH> in the prompt (AUTOMATIC1111:\n"
          "  removed from the text; DIR/NAME.safetensors, DIR = --lora-dir, default loras/ beside the model): merged\n"
          "  into the text encoder and U-Net, W += STRENGTH * alpha / rank * up . down (kohya, LoCon, PEFT); a job\n"
          "  with another set re-merges only what changed. Keys matching no tensor are skipped with a warning\n"
          "  (--lora-strict: the job fails). The parameters text lists them (Lora hashes).\n"
          );
  fprintf(f,
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
          "Many workers (README, \"Many GPUs, many machines\"): --shard I/N renders images k with k mod N = I of the\n"
          "run's work list (every image of every valid job, in file order, then batch order); --shard auto takes I and\n"
          "N from SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (or _MIN/_MAX), else JOB_COMPLETION_INDEX with\n"
          "VKDIFFUSION_SHARDS. Jobs without a seed take one from the run seed and their first image's index, so the\n"
          "union of N shards equals the one-process run: --run-seed S|random (default: from the prompt files' bytes).\n"
          "--skip-existing: an image whose file is a complete PNG with the same parameters is skipped; anything else\n"
          "there is rendered again over it. --manifest FILE (default OUTDIR/manifest.jsonl; --no-manifest): a JSON\n"
          "line per written image (path, prompt, seed, settings, model and its sha256, shard, wall time, CLIP score).\n"
          "The PNG carries the settings in AUTOMATIC1111's `parameters` text (vkdiffusion info IMAGE.png).\n"
          "Without --model: $VKDIFFUSION_MODEL, else the demo model (models/demo, installed with vkdiffusion).\n"
          "SIGINT/SIGTERM: the image in progress is discarded after its current step; exit status 128 + signal.\n"
          "Exit status: 0 when every job succeeded; 1 otherwise (the other jobs still run).\n");
}

/* --run-seed random: from the clock and the process (not reproducible, not for --shard) */
static uint64_t random_run_seed(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  return x ^ (x >> 33);
}

struct opts {
  const char *outdir, *noise_file, *latents_file, *score_model, *score_config, *model_name, *model_path;
  bool quiet, progress, overwrite, skip_existing;
  enum sd_vae_tiling tiling;
  enum sd_rng rng;
  enum sd_empty_negative empty_negative;
  enum sd_vae_encode vae_encode;
  int preview_every;
  int default_clip_skip; /* the model family's, for the parameters text */
  bool lora_strict;
  char lora_said[512];   /* the last LoRA set reported (a note when it changes) */
  struct zeroshot *scorer; /* --score-with: CLIP score = 100 * cos(image, prompt) of each image */
  struct shard shard;
  int manifest_fd;         /* -1: --no-manifest */
  const char *manifest_path;
  char model_sha256[65];   /* hashed once, on a thread while the model loads and the first image renders */
  pthread_t digest_thread;
  bool digest_started, digest_done;
};

static void *digest_main(void *arg) {
  struct opts *o = arg;
  struct sha256 h;
  sha256_init(&h);
  int fd;
  if (file_open_regular(o->model_path, &fd, NULL)) return NULL; /* the loader reports it */
  enum { CHUNK = 4 << 20 };
  unsigned char *buf = malloc(CHUNK);
  ssize_t got = buf ? 1 : -1;
  while (buf && (got = read(fd, buf, CHUNK)) > 0) sha256_update(&h, buf, (size_t)got);
  close(fd);
  free(buf);
  if (got == 0) sha256_hex(&h, o->model_sha256);
  return NULL;
}

/* the model file's SHA-256 (hex), or NULL when it cannot be read */
static const char *model_digest(struct opts *o) {
  if (o->digest_started) pthread_join(o->digest_thread, NULL);
  else if (!o->digest_done) digest_main(o);
  o->digest_started = false;
  o->digest_done = true;
  return o->model_sha256[0] ? o->model_sha256 : NULL;
}

/* One manifest line for a written image, in one write(2) on an O_APPEND descriptor: lines from
 * workers sharing the file never interleave. A failed write is reported and fails the run. */
static enum status manifest_append(struct opts *o, const struct job *j, const struct planned *pl, double wall_s,
                                   const double *score) {
  if (o->manifest_fd < 0) return STATUS_OK;
  static const char *const schedules[] = {"discrete", "karras", "trailing"};
  char shard[32];
  snprintf(shard, sizeof shard, "%d/%d", o->shard.index, o->shard.count);
  const char *slash = strrchr(o->model_path, '/'), *digest = model_digest(o);
  cJSON *line = cJSON_CreateObject();
  cJSON_AddStringToObject(line, "output", pl->path);
  cJSON_AddStringToObject(line, "prompt", j->prompt);
  cJSON_AddStringToObject(line, "negative_prompt", j->negative_prompt ? j->negative_prompt : "");
  cJSON_AddNumberToObject(line, "seed", pl->seed);
  cJSON_AddNumberToObject(line, "steps", j->steps);
  cJSON_AddStringToObject(line, "sampler", sampler_name(j->sampler));
  cJSON_AddStringToObject(line, "schedule", schedules[j->schedule]);
  cJSON_AddNumberToObject(line, "cfg_scale", j->cfg_scale);
  cJSON_AddNumberToObject(line, "width", j->width);
  cJSON_AddNumberToObject(line, "height", j->height);
  cJSON_AddStringToObject(line, "model", slash ? slash + 1 : o->model_path);
  if (digest) cJSON_AddStringToObject(line, "model_sha256", digest);
  else cJSON_AddNullToObject(line, "model_sha256");
  cJSON_AddStringToObject(line, "shard", shard);
  cJSON_AddNumberToObject(line, "index", pl->index);
  cJSON_AddStringToObject(line, "job", j->where);
  cJSON_AddNumberToObject(line, "wall_s", round(wall_s * 1000) / 1000);
  if (score) cJSON_AddNumberToObject(line, "clip_score", round(*score * 100) / 100);
  if (j->init_image) {
    cJSON_AddStringToObject(line, "init_image", j->init_image);
    cJSON_AddNumberToObject(line, "strength", j->strength);
  }
  if (j->mask) {
    cJSON_AddStringToObject(line, "mask", j->mask);
    cJSON_AddNumberToObject(line, "mask_blur", j->mask_blur);
  }
  char *text = cJSON_PrintUnformatted(line);
  cJSON_Delete(line);
  if (!text) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  size_t n = strlen(text);
  text[n] = '\n'; /* the NUL becomes the line's end: one write */
  ssize_t w = write(o->manifest_fd, text, n + 1);
  int err = errno;
  free(text);
  if (w != (ssize_t)(n + 1))
    return status_set(STATUS_IO, "%s: cannot append to the manifest: %s", o->manifest_path,
                      w < 0 ? strerror(err) : "short write");
  return STATUS_OK;
}

/* txt2img's callbacks for one job: the progress line, and each finished image scored and written */
struct job_run {
  const struct job *j;
  const struct job_plan *plan;
  struct opts *o;
  struct progress prog;
  int *images_done, *images_skipped, failed, delivered, manifest_errors;
  double t_last; /* when the previous image was delivered (or the job started) */
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int on_progress(enum sd_phase phase, int image, int step, int steps, void *user) {
  struct job_run *r = user;
  static const char *const names[] = {"encode", "sample", "decode"};
  r->prog.image = image + 1;
  if (step == 0) progress_phase(&r->prog, names[phase]);
  progress_draw(&r->prog, step, steps);
  return 0;
}

/* NAME.png -> NAME.preview.png */
static void preview_path(const char *path, char *out, size_t n) {
  size_t len = strlen(path);
  if (len > 4 && !strcmp(path + len - 4, ".png")) len -= 4;
  snprintf(out, n, "%.*s.preview.png", (int)len, path);
}

static int on_preview(int image, int step, int steps, const unsigned char *rgb, int width, int height, void *user) {
  struct job_run *r = user;
  char path[4200];
  preview_path(r->plan->img[image].path, path, sizeof path);
  char text[64];
  snprintf(text, sizeof text, "preview after step %d of %d", step, steps);
  if (png_write(path, rgb, width, height, text, true)) /* a preview that cannot be written is not worth the image */
    fprintf(stderr, "%svkdiffusion generate: preview: %s\n", r->prog.on ? "\n" : "", status_message());
  return 0;
}

static int on_image(int image, uint32_t seed, const unsigned char *rgb, const float *latent, void *user) {
  struct job_run *r = user;
  const struct job *j = r->j;
  const struct planned *pl = &r->plan->img[image];
  r->delivered++;
  double t = now_s(), wall = t - r->t_last;
  r->t_last = t;
  if (pl->skip) return 0; /* exists: noted when planned (rendered for --save-latents only) */
  char *params = plan_parameters_text(j, seed, r->o->model_name, r->o->default_clip_skip);
  enum status st = params ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of memory");
  double score = 0;
  if (!st && r->o->scorer && !(st = zeroshot_score(r->o->scorer, rgb, j->width, j->height, j->prompt, &score))) {
    char *p2 = realloc(params, strlen(params) + 64);
    if (p2) params = p2, snprintf(params + strlen(params), 64, ", CLIP score: %.2f", score);
    fprintf(stderr, "%s, image %d: CLIP score %.2f\n", j->where, image + 1, score);
  }
  if (!st) st = png_write(pl->path, rgb, j->width, j->height, params, r->o->overwrite || pl->replace);
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
    if (r->o->preview_every > 0) { /* the image is here: its preview goes */
      char prev[4200];
      preview_path(pl->path, prev, sizeof prev);
      unlink(prev);
    }
    if (!r->o->quiet) fprintf(stderr, "%swrote %s (seed %llu)\n", r->prog.on ? "\n" : "", pl->path, (unsigned long long)seed);
    if (manifest_append(r->o, j, pl, wall, r->o->scorer ? &score : NULL)) {
      fprintf(stderr, "vkdiffusion generate: %s\n", status_message());
      r->manifest_errors++;
    }
  }
  (void)latent;
  return 0; /* a failed write fails this image only */
}

/* An invalid job counts as its images (at least one) in the summary. */
static int job_images(const struct job *j) { return j->batch_count >= 1 && j->batch_count <= 1000 ? j->batch_count : 1; }

/* Runs this worker's images of one job; returns the number that failed. A failure to write
 * --save-latents or the manifest (the images are written) counts in *errors. */
static int run_job(struct sd_model *m, const struct job *j, const struct job_plan *plan, struct opts *o,
                   int *images_done, int *images_skipped, int *errors) {
  if (j->error[0]) {
    fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", j->where, j->error);
    return job_images(j);
  }
  /* the images to render: this worker's, less those that exist (rendered anyway for --save-latents) */
  unsigned char *not_mine = calloc((size_t)j->batch_count, 1);
  int want = 0;
  if (!not_mine) {
    fprintf(stderr, "vkdiffusion generate: out of host memory\n");
    return j->batch_count;
  }
  for (int b = 0; b < j->batch_count; b++) {
    not_mine[b] = !plan->img[b].mine || (plan->img[b].skip && !o->latents_file);
    want += !not_mine[b];
  }
  if (!want) {
    free(not_mine);
    return 0;
  }
  struct sd_model_info info;
  sd_model_get_info(m, &info);
  int unit = info.vae_factor * info.latent_align, h = j->height / info.vae_factor, w = j->width / info.vae_factor;
  if (j->height % unit || j->width % unit) {
    fprintf(stderr, "vkdiffusion generate: %s: %dx%d is not a multiple of %d for this model (job skipped)\n", j->where,
            j->width, j->height, unit);
    free(not_mine);
    return want;
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
    free(noise), free(anoise), free(not_mine);
    return want;
  }
  /* the job's LoRA set (re-merging only what changed since the last job) */
  struct lora_spec specs[JOB_MAX_LORAS];
  char said[512] = "";
  size_t used = 0;
  for (int i = 0; i < j->n_loras; i++) {
    specs[i] = (struct lora_spec){.path = j->loras[i].path, .strength = j->loras[i].strength};
    used += (size_t)snprintf(said + used, used < sizeof said ? sizeof said - used : 0, "%s%s:%g", i ? ", " : "",
                             j->loras[i].name, j->loras[i].strength);
    if (used >= sizeof said) used = sizeof said - 1;
  }
  struct lora_report rep;
  if (sd_model_apply_loras(m, specs, j->n_loras, o->lora_strict, &rep)) {
    fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", j->where, status_message());
    free(noise), free(anoise), free(saved), free(not_mine);
    return want;
  }
  if (strcmp(said, o->lora_said) && j->n_loras) { /* a new set: what it did */
    if (!o->quiet) fprintf(stderr, "vkdiffusion generate: %s: LoRA %s\n", j->where, said);
    cli_lora_note("generate", &rep, o->quiet);
  }
  snprintf(o->lora_said, sizeof o->lora_said, "%s", said);
  struct job_run r = {.j = j, .plan = plan, .o = o, .prog = {.on = o->progress && !o->quiet, .images = j->batch_count},
                      .images_done = images_done, .images_skipped = images_skipped, .t_last = now_s()};
  struct txt2img_params p = txt2img_default_params();
  unsigned char *init_rgb = NULL;
  if (j->init_image && image_load_limited(j->init_image, (uint64_t)8192 * 8192, &init_rgb, &p.init_width, &p.init_height)) {
    fprintf(stderr, "vkdiffusion generate: %s: init_image: %s (job skipped)\n", j->where, status_message());
    free(noise), free(anoise), free(saved), free(not_mine);
    return want;
  }
  unsigned char *mask_rgb = NULL;
  if (j->mask && image_load_limited(j->mask, (uint64_t)8192 * 8192, &mask_rgb, &p.mask_width, &p.mask_height)) {
    fprintf(stderr, "vkdiffusion generate: %s: mask: %s (job skipped)\n", j->where, status_message());
    free(noise), free(anoise), free(saved), free(not_mine), free(init_rgb);
    return want;
  }
  p.mask = mask_rgb;
  p.mask_blur = j->mask_blur;
  p.init_image = init_rgb;
  p.taesd_decode = j->taesd != NULL;
  p.preview_every = o->preview_every;
  p.preview = o->preview_every > 0 ? on_preview : NULL;
  p.strength = j->strength;
  p.vae_encode = o->vae_encode;
  p.prompt = j->encode_prompt ? j->encode_prompt : j->prompt;
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
  p.skip = not_mine;
  if (txt2img(m, &p, NULL, saved)) { /* the images not delivered failed with it */
    fprintf(stderr, "%svkdiffusion generate: %s, image %d: %s\n", r.prog.on ? "\n" : "", j->where, r.delivered + 1,
            status_message());
    r.failed += want - r.delivered;
  }
  *errors += r.manifest_errors;
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
  free(noise), free(anoise), free(saved), free(not_mine), free(init_rgb), free(mask_rgb);
  return r.failed;
}

/* What to do with an image whose file exists, for this worker's images only (another worker's
 * files are not looked at). Without --skip-existing: skipped with a note (--overwrite: replaced).
 * With --skip-existing: skipped when it is a complete PNG whose parameters text is this image's
 * (a CLIP score after it aside), else rendered again over it. Needs the job's size and the clip
 * skip default: *pending counts images left for after the model is loaded (default_clip_skip 0,
 * or a job without a size). */
static void decide_existing(struct job *jobs, int n_jobs, struct job_plan *plans, const struct opts *o,
                            int default_clip_skip, int *skipped, int *pending) {
  *pending = 0;
  for (int k = 0; k < n_jobs; k++)
    for (int b = 0; !jobs[k].error[0] && b < jobs[k].batch_count; b++) {
      struct planned *pl = &plans[k].img[b];
      struct stat sb;
      if (!pl->mine || pl->skip || pl->replace || lstat(pl->path, &sb) != 0) continue;
      if (o->overwrite && S_ISREG(sb.st_mode)) continue;
      if (!S_ISREG(sb.st_mode)) {
        fprintf(stderr, "vkdiffusion generate: %s: exists and is not a regular file: skipped\n", pl->path);
      } else if (!o->skip_existing) {
        if (!o->quiet) fprintf(stderr, "%s: exists: skipped (--overwrite replaces it)\n", pl->path);
      } else if (!default_clip_skip || !jobs[k].width || !jobs[k].height) {
        (*pending)++;
        continue;
      } else {
        char *have = NULL, *want = plan_parameters_text(&jobs[k], pl->seed, o->model_name, default_clip_skip);
        enum status cs = png_check_complete(pl->path, &have);
        const char *why = cs ? status_message() /* names the file */ : !have ? "it has no parameters text" : NULL;
        if (!why && want && (strncmp(have, want, strlen(want)) ||
                             (have[strlen(want)] && strncmp(have + strlen(want), ", CLIP score: ", 14))))
          why = "its parameters text is another image's";
        if (why && !o->quiet) {
          if (cs) fprintf(stderr, "%s: rendered again\n", why);
          else fprintf(stderr, "%s: %s: rendered again\n", pl->path, why);
        }
        free(have), free(want);
        if (why) {
          pl->replace = true;
          continue;
        }
      }
      pl->skip = true;
      plans[k].skipped++;
      (*skipped)++;
    }
}

/* Each job's LoRAs: its "loras", then --lora, then the prompt's <lora:NAME:S> tags (removed from the
 * text that is encoded); every file must be there, and gets its short hash for the parameters text. */
static void resolve_loras(struct job *jobs, int n_jobs, const struct cli_loras *global, const char *lora_dir,
                          const char *model_path, bool literal) {
  struct {
    char *path;
    char hash[13];
  } seen[256];
  int n_seen = 0;
  for (int k = 0; k < n_jobs; k++) {
    struct job *j = &jobs[k];
    for (int i = 0; i < global->n && !j->error[0]; i++)
      if (!job_add_lora(j, global->v[i].path, NULL, global->v[i].strength))
        snprintf(j->error, sizeof j->error, "more than %d LoRAs", JOB_MAX_LORAS);
    if (!j->error[0] && !literal) {
      struct prompt_lora *tags = NULL;
      int nt = 0;
      if (prompt_take_loras(j->prompt, &j->encode_prompt, &tags, &nt))
        snprintf(j->error, sizeof j->error, "\"prompt\": %s", status_message());
      for (int t = 0; t < nt && !j->error[0]; t++) {
        char path[4200];
        if (!cli_lora_find(lora_dir, model_path, tags[t].name, path, sizeof path))
          snprintf(j->error, sizeof j->error, "<lora:%s>: %s is not there (--lora-dir names the folder)", tags[t].name, path);
        else if (!job_add_lora(j, path, tags[t].name, tags[t].strength))
          snprintf(j->error, sizeof j->error, "more than %d LoRAs", JOB_MAX_LORAS);
      }
      free(tags);
    }
    for (int i = 0; i < j->n_loras && !j->error[0]; i++) { /* each file hashed once a run */
      int s = 0;
      while (s < n_seen && strcmp(seen[s].path, j->loras[i].path)) s++;
      if (s == n_seen) {
        struct stat sb;
        if (stat(j->loras[i].path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
          snprintf(j->error, sizeof j->error, "LoRA %s: %s", j->loras[i].path, stat(j->loras[i].path, &sb) ? strerror(errno) : "not a regular file");
          break;
        }
        char hash[13];
        if (lora_short_hash(j->loras[i].path, hash)) {
          snprintf(j->error, sizeof j->error, "LoRA %s", status_message());
          break;
        }
        if (n_seen == 256) {
          memcpy(j->loras[i].hash, hash, sizeof hash);
          continue;
        }
        seen[n_seen].path = j->loras[i].path;
        memcpy(seen[n_seen++].hash, hash, sizeof hash);
      }
      memcpy(j->loras[i].hash, seen[s].hash, sizeof seen[s].hash);
    }
  }
}

int cmd_generate(int argc, char **argv) {
  struct sd_model_options mo = sd_model_default_options();
  struct job_overrides ov = {0};
  struct opts o = {.outdir = ".", .progress = isatty(2), .tiling = SD_VAE_TILING_AUTO, .shard = {0, 1}, .manifest_fd = -1};
  const char **files = calloc((size_t)argc, sizeof *files), *prompt = NULL, *shard_arg = NULL;
  bool no_manifest = false, run_seed_given = false, run_seed_random = false;
  const char *preview_decoder = NULL, *lora_dir = NULL;
  struct cli_loras loras = {0};
  uint64_t run_seed = 0;
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
    else if (!strcmp(a, "--shard")) { VALUE(); shard_arg = val; }
    else if (!strcmp(a, "--run-seed")) {
      VALUE();
      char *end;
      errno = 0;
      run_seed = strtoull(val, &end, 10);
      run_seed_random = !strcmp(val, "random");
      if (!run_seed_random && (errno || *end || end == val || val[0] == '-' || isspace((unsigned char)val[0]))) {
        fprintf(stderr, "vkdiffusion generate: --run-seed expects a whole number 0..18446744073709551615 or random, "
                "got '%s'\n", val);
        goto usage_error;
      }
      run_seed_given = true;
    }
    else if (!strcmp(a, "--skip-existing")) o.skip_existing = true;
    else if (!strcmp(a, "--lora")) { VALUE(); if (!cli_lora_arg("generate", val, &loras)) goto usage_error; }
    else if (!strcmp(a, "--lora-strict")) o.lora_strict = true;
    else if (!strcmp(a, "--lora-dir")) { VALUE(); lora_dir = val; }
    else if (!strcmp(a, "--init-image")) { VALUE(); ov.init_image = val; }
    else if (!strcmp(a, "--vae-decoder")) { VALUE(); ov.taesd = val; }
    else if (!strcmp(a, "--mask")) { VALUE(); ov.mask = val; }
    else if (!strcmp(a, "--mask-blur")) {
      VALUE();
      if (!cli_double(a, val, 0, 256, &ov.values.mask_blur)) goto usage_error;
      ov.has_mask_blur = true;
    }
    else if (!strcmp(a, "--preview-decoder")) { VALUE(); preview_decoder = val; }
    else if (!strcmp(a, "--preview-every")) {
      VALUE();
      if (!cli_int(a, val, 1, 1000, &v)) goto usage_error;
      o.preview_every = (int)v;
    }
    else if (!strcmp(a, "--strength")) {
      VALUE();
      if (!cli_double(a, val, 0, 1, &ov.values.strength)) goto usage_error;
      ov.has_strength = true;
    } else if (!strcmp(a, "--vae-encode")) {
      VALUE();
      if (strcmp(val, "sample") && strcmp(val, "mean")) {
        fprintf(stderr, "vkdiffusion generate: --vae-encode expects sample or mean, got '%s'\n", val);
        goto usage_error;
      }
      o.vae_encode = strcmp(val, "mean") ? SD_VAE_ENCODE_SAMPLE : SD_VAE_ENCODE_MEAN;
    }
    else if (!strcmp(a, "--manifest")) { VALUE(); o.manifest_path = val; }
    else if (!strcmp(a, "--no-manifest")) no_manifest = true;
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
  if (shard_arg) { /* this worker's share: I/N, or from the batch engine's variables */
    char why[512], source[128] = "--shard";
    if (strcmp(shard_arg, "auto") ? !shard_parse(shard_arg, &o.shard, why, sizeof why)
                                  : !shard_from_env(&o.shard, why, sizeof why, source, sizeof source)) {
      fprintf(stderr, "vkdiffusion generate: %s\n", why);
      goto usage_error;
    }
    fprintf(stderr, "vkdiffusion generate: shard %d/%d (%s)\n", o.shard.index, o.shard.count, source); /* even --quiet */
  }
  if (o.shard.count > 1 && o.latents_file) {
    fprintf(stderr, "vkdiffusion generate: --save-latents saves a whole job's images: not with --shard over %d workers\n",
            o.shard.count);
    goto usage_error;
  }
  if (o.overwrite && o.skip_existing) {
    fprintf(stderr, "vkdiffusion generate: --overwrite and --skip-existing contradict each other\n");
    goto usage_error;
  }
  if (run_seed_random) run_seed = random_run_seed();
  else if (!run_seed_given) run_seed = plan_run_seed(files, n_files, prompt);
  /* jobs without a size take the checkpoint's native size (modelspec.resolution) */
  sd_checkpoint_native_size(mo.model_path, &ov.default_width, &ov.default_height);
  /* the model's name in the parameters text: the file name without its extension */
  char model_name[256];
  const char *slash = strrchr(mo.model_path, '/');
  snprintf(model_name, sizeof model_name, "%s", slash ? slash + 1 : mo.model_path);
  char *dot = strrchr(model_name, '.');
  if (dot && dot != model_name) *dot = 0;
  o.model_name = model_name;
  o.model_path = mo.model_path;
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
  /* one TAESD a run: --vae-decoder, else --preview-decoder, else the jobs' "taesd" (all the same file) */
  const char *taesd = ov.taesd ? ov.taesd : preview_decoder;
  for (int k = 0; k < n_jobs; k++) {
    if (jobs[k].error[0] || !jobs[k].taesd) continue;
    if (!taesd) taesd = jobs[k].taesd;
    else if (strcmp(taesd, jobs[k].taesd))
      snprintf(jobs[k].error, sizeof jobs[k].error, "\"taesd\" %s: one TAESD file a run (%s is in use)", jobs[k].taesd, taesd);
  }
  char beside_model[4200];
  if (o.preview_every > 0 && !taesd) { /* a taesd.safetensors beside the model (the demo model ships one) */
    const char *sep = strrchr(mo.model_path, '/');
    struct stat tb;
    if (stat(mo.model_path, &tb) == 0 && S_ISDIR(tb.st_mode))
      snprintf(beside_model, sizeof beside_model, "%s/taesd.safetensors", mo.model_path);
    else if (sep)
      snprintf(beside_model, sizeof beside_model, "%.*s/taesd.safetensors", (int)(sep - mo.model_path), mo.model_path);
    else
      snprintf(beside_model, sizeof beside_model, "taesd.safetensors");
    if (stat(beside_model, &tb) == 0 && S_ISREG(tb.st_mode)) taesd = beside_model;
  }
  if (o.preview_every > 0 && !taesd) {
    fprintf(stderr, "vkdiffusion generate: --preview-every needs a TAESD: --preview-decoder FILE (or --vae-decoder FILE, "
            "or a taesd.safetensors beside the model)\n");
    for (int k = 0; k < n_jobs; k++) job_free(&jobs[k]);
    free(jobs);
    goto usage_error;
  }
  mo.taesd_path = taesd;
  for (int k = 0; k < n_jobs; k++) /* an init image or mask that is not there fails its job now */
    for (int f = 0; f < 2; f++) {
      const char *file = f ? jobs[k].mask : jobs[k].init_image;
      struct stat ib;
      if (!jobs[k].error[0] && file && (stat(file, &ib) != 0 || !S_ISREG(ib.st_mode)))
        snprintf(jobs[k].error, sizeof jobs[k].error, "\"%s\" %s: %s", f ? "mask" : "init_image", file,
                 stat(file, &ib) != 0 ? strerror(errno) : "not a regular file");
    }
  resolve_loras(jobs, n_jobs, &loras, lora_dir, mo.model_path, mo.literal);
  /* the prompts' syntax (weights, nesting, length) is checked now, not after the model is loaded */
  for (int k = 0; k < n_jobs && !mo.literal; k++) {
    const char *texts[2] = {jobs[k].encode_prompt ? jobs[k].encode_prompt : jobs[k].prompt, jobs[k].negative_prompt};
    const char *names[2] = {"prompt", "negative_prompt"};
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
  char manifest_buf[4096];
  if (!rc && !no_manifest) { /* appended to by every worker: O_APPEND, one write a line */
    char *path = manifest_buf;
    if (!o.manifest_path) {
      snprintf(path, sizeof manifest_buf, "%s/manifest.jsonl", o.outdir);
      o.manifest_path = path;
    }
    if (stat(o.manifest_path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
      fprintf(stderr, "vkdiffusion generate: %s: the manifest exists and is not a file\n", o.manifest_path);
      rc = 1;
    } else if ((o.manifest_fd = open(o.manifest_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
      fprintf(stderr, "vkdiffusion generate: %s: cannot open the manifest: %s\n", o.manifest_path, strerror(errno));
      rc = 1;
    }
  }
  int skipped = 0, pending = 0;
  struct job_plan *plans = calloc((size_t)n_jobs + 1, sizeof *plans);
  if (!plans) rc = 1;
  bool random_seeds = false;
  for (int k = 0; k < n_jobs; k++) random_seeds |= !jobs[k].error[0] && jobs[k].seed < 0;
  if (!rc && random_seeds && !o.quiet)
    fprintf(stderr, "vkdiffusion generate: run seed %llu (the seeds of jobs without one; --run-seed)\n",
            (unsigned long long)run_seed);
  if (!rc) rc = plan_outputs(jobs, n_jobs, plans, &(struct plan_options){o.outdir, o.shard, run_seed, o.quiet});
  if (!rc) { /* existing files: decided now where the model's defaults are not needed */
    enum textenc_family fam = (enum textenc_family)mo.family;
    char why[256];
    if (fam == TEXTENC_FAMILY_AUTO && textenc_detect_family(mo.model_path, &fam, why, sizeof why)) status_clear();
    int clip_skip = fam == TEXTENC_FAMILY_AUTO ? 0 : fam == TEXTENC_FAMILY_SD1 ? 1 : 2;
    decide_existing(jobs, n_jobs, plans, &o, clip_skip, &skipped, &pending);
  }
  int invalid = 0, to_render = pending;
  for (int k = 0; k < n_jobs; k++) {
    invalid += jobs[k].error[0] != 0;
    if (!jobs[k].error[0]) to_render += plans[k].mine - plans[k].skipped;
  }
  /* the manifest's model digest: hashed on a thread beside the load (status messages are per thread) */
  if (!rc && to_render > 0 && o.manifest_fd >= 0)
    o.digest_started = !pthread_create(&o.digest_thread, NULL, digest_main, &o);
  struct sd_model *m = NULL;
  int failed_images = 0, done_images = 0;
  double t_load = now_s();
  if (!rc && (to_render > 0 || (o.latents_file && invalid < n_jobs)) && sd_model_create(&mo, &m)) {
    fprintf(stderr, "vkdiffusion generate: %s\n", status_message());
    rc = 1;
  }
  if (m && o.progress && !o.quiet) /* where the time goes: the load here, each phase on its line, pipelines at the end */
    fprintf(stderr, "vkdiffusion generate: model loaded in %.2f s\n", now_s() - t_load);
  if (m) { /* jobs without a size or clip skip take the model's; say what was detected */
    struct sd_model_info mi;
    sd_model_get_info(m, &mi);
    for (int k = 0; k < n_jobs; k++)
      if (!jobs[k].width) jobs[k].width = mi.default_width;
    for (int k = 0; k < n_jobs; k++)
      if (!jobs[k].height) jobs[k].height = mi.default_height;
    o.default_clip_skip = mi.default_clip_skip;
    if (pending) decide_existing(jobs, n_jobs, plans, &o, mi.default_clip_skip, &skipped, &pending);
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
      failed_images += jobs[k].error[0] ? job_images(&jobs[k]) : plans[k].mine - plans[k].skipped;
      continue;
    }
    if (!m && !jobs[k].error[0] && plans[k].skipped == plans[k].mine) continue;
    if (!m) {
      if (jobs[k].error[0]) fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", jobs[k].where, jobs[k].error);
      failed_images += jobs[k].error[0] ? job_images(&jobs[k]) : plans[k].mine - plans[k].skipped;
      continue;
    }
    failed_images += run_job(m, &jobs[k], &plans[k], &o, &done_images, &skipped, &rc);
  }
  int total = done_images + failed_images + skipped;
  char skip_note[128] = "";
  if (skipped)
    snprintf(skip_note, sizeof skip_note, "; %d skipped (%s)", skipped,
             o.skip_existing ? "complete, with the same parameters" : "the file exists; --overwrite replaces it");
  if (cli_interrupted) {
    fprintf(stderr, "vkdiffusion generate: interrupted by signal %d: %d of %d images written%s (rerun with "
            "--skip-existing to finish)\n", cli_interrupted, done_images, total, skip_note);
    rc = 128 + cli_interrupted;
  } else if (failed_images || rc || invalid) {
    fprintf(stderr, "vkdiffusion generate: %d of %d images written; %d failed (%d invalid jobs)%s\n", done_images, total,
            failed_images, invalid, skip_note);
    rc = 1;
  } else if (!o.quiet) {
    fprintf(stderr, "vkdiffusion generate: %d images written to %s%s\n", done_images, o.outdir, skip_note);
  }
  if (m && o.progress && !o.quiet) {
    int made;
    double secs;
    size_t cached;
    gpu_pipeline_stats(sd_model_gpu(m), &made, &secs, &cached);
    fprintf(stderr, "vkdiffusion generate: %d pipelines created in %.2f s (pipeline cache: %zu bytes read)\n", made, secs,
            cached);
  }
  plan_free(plans, jobs, n_jobs);
  if (o.digest_started) pthread_join(o.digest_thread, NULL);
  if (o.manifest_fd >= 0) close(o.manifest_fd);
  for (int k = 0; k < n_jobs; k++) job_free(&jobs[k]);
  free(jobs);
  free(files);
  cli_loras_free(&loras);
  zeroshot_destroy(o.scorer);
  if (m) rc = cli_report_gpu(sd_model_gpu(m), rc); /* the profile, and validation messages fail the run */
  sd_model_destroy(m);
  return rc;
usage_error:
  cli_loras_free(&loras);
  free(files);
  return 2;
}
