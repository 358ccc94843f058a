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

#include "bench.h"
#include "image.h"
#include "cli.h"
#include "guidance.h"
#include "model_config.h"
#include "png.h"
#include "prompt.h"
#include "prompt_file.h"
#include "rng.h"
#include "safetensors.h"
#include "sd_model.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: vkdiffusion generate [--model CKPT] [--tokenizer PATH] [--config FILE] [overrides...] [-o OUTDIR]\n"
          "                            (PROMPT_FILE... | --prompt TEXT)\n\n"
          "Generates a PNG per image of every job. Prompt files: a JSON object (one job), an array of jobs,\n"
          "JSON Lines, or .txt (one prompt a line, # comments). Job fields (and their overriding flags):\n"
          "  prompt, negative_prompt (--negative-prompt), seed (--seed; -1 random), steps (--steps, 20),\n"
          "  cfg_scale (--cfg-scale, 7), width/height (--width/--height, multiples of 8; 512, or the checkpoint's\n"
          "  modelspec.resolution metadata),\n"
          "  sampler (--sampler euler|euler_a|ddim|dpmpp_2m; euler_a), schedule (--schedule discrete|karras),\n"
          "  clip_skip (--clip-skip, 1), batch_count (--batch-count, 1),\n"
          "  output (--output; a file name pattern with {index}, {seed}, {prompt}; \"{index}-{seed}.png\").\n"
          "Other options: --precision fp16|fp32, --device N, --vae-tiling auto|on|off, --literal (no prompt\n"
          "syntax), --noise FILE (noise [N,4,h,w], ancestral_noise [steps,N,4,h,w]: replaces the RNG),\n"
          "--save-latents FILE (latents [steps,N,4,h,w]: every step of the N images of the job, the last job),\n"
          "--rng cpu, --quiet, --progress,\n"
          "--score-with CLIP_MODEL [--score-config FILE]: the CLIP score (100 x cosine of image and prompt\n"
          "embeddings) of every image, on stderr and in the PNG's parameters.\n"
          "The PNG carries the settings in AUTOMATIC1111's `parameters` text (vkdiffusion info IMAGE.png).\n"
          "Without --model: $VKDIFFUSION_MODEL, else the demo model (models/demo, installed with vkdiffusion).\n"
          "Exit status: 0 when every job succeeded; 1 otherwise (the other jobs still run).\n");
}

struct progress {
  bool on;
  int image, images;
  const char *phase;
  double t0;
};

static void progress_draw(struct progress *p, int step, int steps) {
  if (!p->on) return;
  double el = bench_now() - p->t0, rate = step > 0 ? step / el : 0;
  int width = 24, fill = steps ? step * width / steps : 0;
  char bar[32];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  fprintf(stderr, "\r[image %d/%d] %-7s [%s] %d/%d %5.2f it/s ETA %4.0fs  ", p->image, p->images, p->phase, bar, step,
          steps, rate, rate > 0 ? (steps - step) / rate : 0.0);
  if (step == steps) fputc('\n', stderr);
  fflush(stderr);
}

struct step_ctx {
  struct progress *prog;
  float *save;   /* this image's latents at step 0, or NULL */
  size_t n, stride; /* values an image, values a step (all the job's images) */
};

static enum status on_step(int step, int steps, const float *x, void *user) {
  struct step_ctx *c = user;
  if (c->save) memcpy(c->save + (size_t)step * c->stride, x, c->n * sizeof *x);
  progress_draw(c->prog, step + 1, steps);
  return STATUS_OK;
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

/* --score-with: CLIP score = 100 * cos(image embedding, prompt embedding) of each image */
struct scorer {
  struct textenc *te;
  struct textenc_vision *tv;
  int size, proj;
};

struct opts {
  const char *outdir, *noise_file, *latents_file, *score_model, *score_config;
  bool quiet, progress;
  enum vae_tiling tiling;
  struct scorer *scorer;
};

static enum status scorer_open(struct scorer *sc, const struct opts *o, const char *tokenizer, struct gpu *g) {
  struct textenc_options to = textenc_default_options();
  to.model_path = o->score_model;
  to.config_path = o->score_config;
  to.tokenizer_path = tokenizer;
  to.device = g;
  to.literal = 1;
  enum status s = textenc_create(&to, &sc->te);
  if (!s) s = textenc_vision_create(&to, &sc->tv);
  int width, tproj = 0;
  if (!s) {
    struct textenc_info ti;
    textenc_info(sc->te, &ti);
    tproj = ti.projection_dim;
    textenc_vision_info(sc->tv, &sc->size, &width, &sc->proj);
    if (!sc->proj || tproj != sc->proj)
      s = status_set(STATUS_FORMAT, "%s: no matching text and visual projections for CLIP scores", o->score_model);
  }
  return s;
}

static void scorer_close(struct scorer *sc) {
  textenc_destroy(sc->te);
  textenc_vision_destroy(sc->tv);
}

static enum status clip_score(struct scorer *sc, const unsigned char *rgb, int w, int h, const char *prompt, double *out) {
  size_t np = 3 * (size_t)sc->size * sc->size;
  float *px = malloc(np * sizeof *px), *ie = malloc((size_t)sc->proj * sizeof *ie), *te = malloc((size_t)sc->proj * sizeof *te);
  enum status s = px && ie && te ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (!s) s = clip_preprocess(rgb, w, h, sc->size, px, NULL);
  if (!s) s = textenc_vision_embed(sc->tv, px, 1, ie, NULL);
  if (!s) s = textenc_encode(sc->te, &prompt, 1, 1, NULL, NULL, te);
  if (!s) {
    double d = 0, a = 0, b = 0;
    for (int i = 0; i < sc->proj; i++) d += (double)ie[i] * te[i], a += (double)ie[i] * ie[i], b += (double)te[i] * te[i];
    *out = a > 0 && b > 0 ? 100.0 * d / sqrt(a * b) : 0;
  }
  free(px), free(ie), free(te);
  return s;
}

/* The checkpoint's native size from its ModelSpec metadata ("modelspec.resolution": "512x512"):
 * the width and height of jobs that give none. A file that cannot be read is reported by the loader. */
static void native_size(const char *path, struct job_overrides *ov) {
  struct stat sb;
  struct safetensors *st;
  if (stat(path, &sb) || !S_ISREG(sb.st_mode) || safetensors_open(path, &st)) return;
  const char *r = safetensors_metadata(st, "modelspec.resolution");
  int w, h;
  char tail;
  if (r && sscanf(r, "%dx%d%c", &w, &h, &tail) == 2 && w >= 8 && h >= 8 && w <= 8192 && h <= 8192 && w % 8 == 0 && h % 8 == 0)
    ov->default_width = w, ov->default_height = h;
  safetensors_close(st);
}

/* Runs one job (all its images); returns the number of images that failed. A failure to write
 * --save-latents (the images are written) counts in *errors. */
static int run_job(struct sd_model *m, struct job *j, const struct opts *o, int *next_index, int *images_done, int *errors) {
  char label[200];
  snprintf(label, sizeof label, "%s", j->where);
  if (j->error[0]) {
    fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", label, j->error);
    return j->batch_count;
  }
  int h = j->height / sd_model_vae_factor(m), w = j->width / sd_model_vae_factor(m), align = sd_model_latent_align(m);
  if (h % align || w % align) {
    fprintf(stderr, "vkdiffusion generate: %s: %dx%d is not a multiple of %d for this model (job skipped)\n", label,
            j->width, j->height, align * sd_model_vae_factor(m));
    return j->batch_count;
  }
  /* the job's --noise (read once: [batch_count][n], ancestral [batch_count][steps][n]) and its
   * --save-latents buffer [steps, batch_count, 4, h, w], before the prompt is encoded */
  size_t n = (size_t)4 * h * w;
  float *noise_file = NULL, *anoise_file = NULL, *saved = NULL;
  enum status js = STATUS_OK;
  if (o->noise_file) js = sd_load_noise(o->noise_file, j->batch_count, j->steps, n, &noise_file, &anoise_file);
  if (!js && o->latents_file && !(saved = calloc((size_t)j->steps * j->batch_count * n, sizeof *saved)))
    js = status_set(STATUS_OUT_OF_MEMORY, "out of host memory for --save-latents");
  if (js) {
    fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", label, status_message());
    free(noise_file), free(anoise_file);
    return j->batch_count;
  }
  struct progress prog = {.on = o->progress && !o->quiet, .images = j->batch_count};
  struct sd_conditioning c = {0};
  prog.phase = "encode";
  prog.t0 = bench_now();
  progress_draw(&prog, 0, 1);
  if (sd_model_encode(m, j->prompt, j->negative_prompt ? j->negative_prompt : "", j->clip_skip, &c)) {
    fprintf(stderr, "\nvkdiffusion generate: %s: %s (job skipped)\n", label, status_message());
    free(noise_file), free(anoise_file), free(saved);
    return j->batch_count;
  }
  progress_draw(&prog, 1, 1);
  int failed = 0;
  uint64_t seed = j->seed >= 0 ? (uint64_t)j->seed : random_seed();
  if (j->seed < 0 && !o->quiet) fprintf(stderr, "%s: seed %llu\n", label, (unsigned long long)seed);
  for (int b = 0; b < j->batch_count; b++) {
    uint64_t s = (seed + (uint64_t)b) & 0xffffffffu;
    prog.image = b + 1;
    float *noise = malloc(n * sizeof *noise), *x = malloc(n * sizeof *x), *img = malloc(3 * (size_t)j->width * j->height * 4);
    unsigned char *u8 = malloc((size_t)j->width * j->height * 3);
    struct rng rng;
    rng_seed(&rng, s);
    enum status st = noise && x && img && u8 ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    const float *anoise = NULL;
    if (!st && noise_file) {
      memcpy(noise, noise_file + (size_t)b * n, n * sizeof *noise);
      anoise = anoise_file ? anoise_file + (size_t)b * j->steps * n : NULL;
    } else if (!st) {
      rng_randn(&rng, noise, n); /* torch.manual_seed(seed); torch.randn([1, 4, h, w]) */
    }
    struct guidance g = {0};
    if (!st) st = guidance_init(&g, sd_model_unet(m), c.cond, c.uncond, c.tokens, 4, h, w, (float)j->cfg_scale);
    prog.phase = "sample";
    prog.t0 = bench_now();
    struct step_ctx sc = {.prog = &prog, .save = saved ? saved + (size_t)b * n : NULL, .n = n, .stride = (size_t)j->batch_count * n};
    struct sampler_run run = {.sampler = j->sampler, .schedule = j->schedule, .steps = j->steps, .n = n, .noise = noise,
                              .ancestral_noise = anoise, .rng = &rng, .denoise = guidance_denoise, .user = &g,
                              .on_step = on_step, .step_user = &sc};
    if (!st) st = sd_model_sample(m, &run, x);
    guidance_free(&g);
    if (!st) {
      prog.phase = "decode";
      prog.t0 = bench_now();
      progress_draw(&prog, 0, 1);
      st = sd_model_decode(m, x, h, w, o->tiling, img);
      progress_draw(&prog, 1, 1);
    }
    char name[1024], path[2048];
    if (!st) {
      image_to_u8(img, j->height, j->width, u8);
      expand_name(j->output ? j->output : "{index}-{seed}.png", *next_index, s, j->prompt, name, sizeof name);
      snprintf(path, sizeof path, "%s/%s", o->outdir, name);
      char *params = sd_parameters_text(m, j, s);
      double score = 0;
      if (params && o->scorer && !(st = clip_score(o->scorer, u8, j->width, j->height, j->prompt, &score))) {
        char *p2 = realloc(params, strlen(params) + 64);
        if (p2) params = p2, snprintf(params + strlen(params), 64, ", CLIP score: %.2f", score);
        fprintf(stderr, "%s, image %d: CLIP score %.2f\n", label, b + 1, score);
      }
      if (!st) st = params ? png_write(path, u8, j->width, j->height, params) : status_set(STATUS_OUT_OF_MEMORY, "out of memory");
      free(params);
    }
    if (st) {
      fprintf(stderr, "%svkdiffusion generate: %s, image %d: %s\n", prog.on ? "\n" : "", label, b + 1, status_message());
      failed++;
    } else {
      (*images_done)++;
      if (!o->quiet) fprintf(stderr, "wrote %s (seed %llu)\n", path, (unsigned long long)s);
    }
    (*next_index)++;
    free(noise), free(x), free(img), free(u8);
  }
  if (saved && failed) {
    fprintf(stderr, "vkdiffusion generate: %s: %s not written (%d of %d images failed)\n", label, o->latents_file, failed,
            j->batch_count);
    (*errors)++;
  } else if (saved) { /* every image of the job, written once they are all done */
    struct st_writer *lw = NULL;
    enum status st = st_writer_create(&lw);
    if (!st) st = st_writer_add(lw, "latents", ST_F32, 5, (int64_t[]){j->steps, j->batch_count, 4, h, w}, saved);
    if (!st) st = st_writer_finish(lw, o->latents_file);
    st_writer_destroy(lw);
    if (st) {
      fprintf(stderr, "vkdiffusion generate: %s: --save-latents: %s\n", label, status_message());
      (*errors)++;
    }
  }
  free(noise_file), free(anoise_file), free(saved);
  sd_conditioning_free(&c);
  return failed;
}

int cmd_generate(int argc, char **argv) {
  struct sd_model_options mo = {.precision = TEXTENC_FP16, .device = -1};
  struct job_overrides ov = {0};
  struct opts o = {.outdir = ".", .progress = isatty(2), .tiling = VAE_TILING_AUTO};
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
        fprintf(stderr, "vkdiffusion generate: --schedule expects discrete or karras, got '%s'\n", val);
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
      mo.precision = strcmp(val, "fp32") ? TEXTENC_FP16 : TEXTENC_FP32;
    } else if (!strcmp(a, "--device")) {
      VALUE();
      if (!cli_int(a, val, 0, 64, &v)) goto usage_error;
      mo.device = (int)v;
    } else if (!strcmp(a, "--vae-tiling")) {
      VALUE();
      if (!strcmp(val, "auto")) o.tiling = VAE_TILING_AUTO;
      else if (!strcmp(val, "on")) o.tiling = VAE_TILING_ON;
      else if (!strcmp(val, "off")) o.tiling = VAE_TILING_OFF;
      else {
        fprintf(stderr, "vkdiffusion generate: --vae-tiling expects auto, on or off\n");
        goto usage_error;
      }
    } else if (!strcmp(a, "--rng")) {
      VALUE();
      if (strcmp(val, "cpu")) {
        fprintf(stderr, "vkdiffusion generate: --rng: only cpu (torch's CPU generator) is supported\n");
        goto usage_error;
      }
    } else if (!strcmp(a, "--noise")) { VALUE(); o.noise_file = val; }
    else if (!strcmp(a, "--save-latents")) { VALUE(); o.latents_file = val; }
    else if (!strcmp(a, "--score-with")) { VALUE(); o.score_model = val; }
    else if (!strcmp(a, "--score-config")) { VALUE(); o.score_config = val; }
    else if (!strcmp(a, "--quiet")) o.quiet = true;
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
  native_size(mo.model_path, &ov);
  /* every job is read and checked before any GPU work */
  struct job *jobs = NULL;
  int n_jobs = 0, rc = 0;
  for (int f = 0; f < n_files; f++) {
    struct job *fj;
    int fn;
    if (prompt_file_load(files[f], &ov, &fj, &fn)) {
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
    prompt_job_from_text(prompt, &ov, &jobs[n_jobs++]);
  }
  int invalid = 0;
  for (int k = 0; k < n_jobs; k++) invalid += jobs[k].error[0] != 0;
  if (mkdir(o.outdir, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "vkdiffusion generate: %s: cannot create the output folder: %s\n", o.outdir, strerror(errno));
    rc = 1;
  }
  struct sd_model *m = NULL;
  int failed_images = 0, done_images = 0, index = 0;
  if (!rc && invalid < n_jobs) {
    if (sd_model_load(&mo, &m)) {
      fprintf(stderr, "vkdiffusion generate: %s\n", status_message());
      rc = 1;
    }
  }
  struct scorer scorer = {0};
  if (m && o.score_model) {
    if (scorer_open(&scorer, &o, mo.tokenizer_path, sd_model_gpu(m))) {
      fprintf(stderr, "vkdiffusion generate: --score-with: %s\n", status_message());
      rc = 1;
      scorer_close(&scorer);
      sd_model_close(m, 0);
      m = NULL;
    } else {
      o.scorer = &scorer;
    }
  }
  for (int k = 0; k < n_jobs; k++) {
    if (!m) {
      if (jobs[k].error[0]) fprintf(stderr, "vkdiffusion generate: %s: %s (job skipped)\n", jobs[k].where, jobs[k].error);
      failed_images += jobs[k].batch_count;
      continue;
    }
    failed_images += run_job(m, &jobs[k], &o, &index, &done_images, &rc);
  }
  int total = done_images + failed_images;
  if (failed_images || rc) {
    fprintf(stderr, "vkdiffusion generate: %d of %d images written; %d failed (%d invalid jobs)\n", done_images, total,
            failed_images, invalid);
    rc = 1;
  } else if (!o.quiet) {
    fprintf(stderr, "vkdiffusion generate: %d images written to %s\n", done_images, o.outdir);
  }
  for (int k = 0; k < n_jobs; k++) job_free(&jobs[k]);
  free(jobs);
  free(files);
  scorer_close(&scorer);
  return sd_model_close(m, rc);
usage_error:
  free(files);
  return 2;
}
