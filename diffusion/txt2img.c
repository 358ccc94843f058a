/* Text to image, the whole pipeline (../shared/STYLE.md, "Architecture"):
 *
 *   prompt ─► tokens ─► conditioning (CLIP text, GPU) ─► cond / uncond
 *   seed ─► starting noise x ─► for each sigma: U-Net (GPU) ─► CFG + sampler step (CPU)
 *   final latent ─► VAE decode (GPU) ─► 8-bit pixels
 *
 * No printing and no files: progress, finished images and cancellation go through the
 * parameters' callbacks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip_image.h"
#include "guidance.h"
#include "rng.h"
#include "taesd.h"
#include "sd_model.h"
#include "textenc_internal.h"

_Static_assert((int)SD_SAMPLER_EULER == (int)SAMPLER_EULER && (int)SD_SAMPLER_EULER_A == (int)SAMPLER_EULER_A &&
                   (int)SD_SAMPLER_DDIM == (int)SAMPLER_DDIM && (int)SD_SAMPLER_DPMPP_2M == (int)SAMPLER_DPMPP_2M,
               "sd_sampler mirrors sampler_kind");
_Static_assert((int)SD_SCHEDULE_DISCRETE == (int)SCHEDULE_DISCRETE && (int)SD_SCHEDULE_KARRAS == (int)SCHEDULE_KARRAS &&
                   (int)SD_SCHEDULE_TRAILING == (int)SCHEDULE_TRAILING,
               "sd_schedule mirrors schedule_kind");
_Static_assert((int)SD_FAMILY_SD1 == (int)TEXTENC_FAMILY_SD1 && (int)SD_FAMILY_SDXL == (int)TEXTENC_FAMILY_SDXL,
               "sd_family mirrors textenc_family");
_Static_assert((int)SD_VAE_TILING_AUTO == (int)VAE_TILING_AUTO && (int)SD_VAE_TILING_ON == (int)VAE_TILING_ON &&
                   (int)SD_VAE_TILING_OFF == (int)VAE_TILING_OFF,
               "sd_vae_tiling mirrors vae_tiling");
_Static_assert((int)SD_RNG_CPU == (int)RNG_CPU && (int)SD_RNG_CPU_SCALAR == (int)RNG_CPU_SCALAR, "sd_rng mirrors rng_kind");

struct txt2img_params txt2img_default_params(void) {
  return (struct txt2img_params){.steps = 20, .cfg_scale = 7.0, .sampler = SD_SAMPLER_EULER_A,
                                 .schedule = SD_SCHEDULE_DISCRETE, .batch_count = 1, .vae_tiling = SD_VAE_TILING_AUTO,
                                 .strength = 0.75};
}

static enum status check_params(const struct sd_model *m, const struct txt2img_params *p) {
  const struct sd_model_info *in = &m->info;
  if (p->clip_skip < 0 || (unsigned)p->empty_negative > SD_EMPTY_NEGATIVE_ENCODE)
    return status_set(STATUS_INVALID_ARGUMENT, "txt2img: clip skip %d or empty-negative setting %d is invalid", p->clip_skip,
                      (int)p->empty_negative);
  const int *sz = &p->original_width;
  for (int i = 0; i < 6; i++)
    if (sz[i] < 0 || sz[i] > 1 << 20)
      return status_set(STATUS_INVALID_ARGUMENT, "txt2img: SDXL size field %d (%d) is outside 0..1048576", i, sz[i]);
  int unit = in->vae_factor * in->latent_align;
  if (!p->prompt) return status_set(STATUS_INVALID_ARGUMENT, "txt2img: no prompt");
  if (p->steps < 1 || p->steps > 1000) return status_set(STATUS_INVALID_ARGUMENT, "txt2img: steps %d is outside 1..1000", p->steps);
  if (p->batch_count < 1) return status_set(STATUS_INVALID_ARGUMENT, "txt2img: batch_count %d is below 1", p->batch_count);
  if (!(p->cfg_scale >= 0 && p->cfg_scale <= 100))
    return status_set(STATUS_INVALID_ARGUMENT, "txt2img: cfg_scale %g is outside 0..100", p->cfg_scale);
  if (p->width < unit || p->height < unit || p->width % unit || p->height % unit || p->width > 16384 || p->height > 16384)
    return status_set(STATUS_INVALID_ARGUMENT, "txt2img: %dx%d is not a multiple of %d for this model", p->width,
                      p->height, unit);
  if ((unsigned)p->sampler >= SAMPLER_COUNT || (unsigned)p->schedule >= SCHEDULE_COUNT || (unsigned)p->rng > SD_RNG_CPU_SCALAR)
    return status_set(STATUS_INVALID_ARGUMENT, "txt2img: unknown sampler, schedule or rng");
  if (p->init_image && (p->init_width < 1 || p->init_height < 1 || p->init_width > 16384 || p->init_height > 16384 ||
                        !(p->strength >= 0 && p->strength <= 1) || (unsigned)p->vae_encode > SD_VAE_ENCODE_MEAN))
    return status_set(STATUS_INVALID_ARGUMENT, "img2img: a %dx%d init image with strength %g", p->init_width,
                      p->init_height, p->strength);
  if ((p->taesd_decode || (p->preview && p->preview_every > 0)) && !m->taesd)
    return status_set(STATUS_INVALID_ARGUMENT, "txt2img: a TAESD decode or preview needs sd_model_options.taesd_path");
  if (p->mask && (!p->init_image || p->mask_width < 1 || p->mask_height < 1 || p->mask_width > 16384 ||
                  p->mask_height > 16384 || !(p->mask_blur >= 0 && p->mask_blur <= 256)))
    return status_set(STATUS_INVALID_ARGUMENT, "inpainting: a %dx%d mask with blur %g%s", p->mask_width, p->mask_height,
                      p->mask_blur, p->init_image ? "" : " and no init image");
  if ((p->init_image || m->info.inpainting) && !vae_has_encoder(m->vae))
    return status_set(STATUS_UNSUPPORTED, "img2img: the checkpoint has no VAE encoder (first_stage_model.encoder.*)");
  if (!p->noise && (p->seed < 0 || p->seed > 0xffffffffLL))
    return status_set(STATUS_INVALID_ARGUMENT, "txt2img: seed %lld is outside 0..4294967295", (long long)p->seed);
  return STATUS_OK;
}

/* the sampler's per-step hook: progress, the caller's cancel flag, the saved latents */
struct step_hook {
  const struct txt2img_params *p;
  struct sd_model *m;
  int h, w;           /* the latent's size (previews) */
  float *preview;     /* [3, f h, f w] (f: the TAESD's factor, the VAE's) */
  unsigned char *rgb; /* [8h, 8w, 3] */
  int image;
  float *latents; /* this image's slot at step 0, or NULL */
  size_t n, stride;
};

static enum status on_step(int step, int steps, const float *x, void *user) {
  struct step_hook *h = user;
  if (h->latents) memcpy(h->latents + (size_t)step * h->stride, x, h->n * sizeof *x);
  if (h->p->cancel && *h->p->cancel) return status_set(STATUS_CANCELLED, "cancelled at step %d of %d", step + 1, steps);
  if (h->p->progress && h->p->progress(SD_PHASE_SAMPLE, h->image, step + 1, steps, h->p->user))
    return status_set(STATUS_CANCELLED, "cancelled at step %d of %d", step + 1, steps);
  const struct txt2img_params *p = h->p;
  if (p->preview && p->preview_every > 0 && (step + 1) % p->preview_every == 0 && step + 1 < steps && h->m->taesd) {
    enum status s = taesd_decode(h->m->taesd, x, 1, h->h, h->w, h->preview);
    if (s) return s;
    int f = taesd_factor(h->m->taesd);
    taesd_image_to_u8(h->preview, f * h->h, f * h->w, h->rgb);
    if (p->preview(h->image, step + 1, steps, h->rgb, f * h->w, f * h->h, p->user))
      return status_set(STATUS_CANCELLED, "cancelled at step %d of %d", step + 1, steps);
  }
  return STATUS_OK;
}

/* the mask's luma (PIL's "L": (299 R + 587 G + 114 B) / 1000, rounded) cropped and resized like the
 * init image, in [0, 1], blurred by a Gaussian of standard deviation `blur` pixels (edges repeated) */
static enum status pixel_mask(const struct txt2img_params *p, float *out) {
  size_t npix = (size_t)p->width * p->height;
  unsigned char *fit = malloc(3 * npix);
  float *tmp = malloc(npix * sizeof *tmp);
  enum status s = fit && tmp ? image_cover_crop(p->mask, p->mask_width, p->mask_height, p->width, p->height, fit)
                             : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  for (size_t i = 0; !s && i < npix; i++)
    out[i] = (float)((299 * fit[3 * i] + 587 * fit[3 * i + 1] + 114 * fit[3 * i + 2] + 500) / 1000) / 255.0f;
  int r = (int)ceil(3 * p->mask_blur);
  if (!s && p->mask_blur > 0) {
    double *k = malloc((size_t)(2 * r + 1) * sizeof *k), sum = 0;
    if (!k) s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    for (int i = -r; k && i <= r; i++) sum += k[i + r] = exp(-0.5 * i * i / (p->mask_blur * p->mask_blur));
    for (int pass = 0; k && pass < 2; pass++) { /* rows into tmp, then columns back into out */
      const float *src = pass ? tmp : out;
      float *dst = pass ? out : tmp;
      for (int y = 0; y < p->height; y++)
        for (int x = 0; x < p->width; x++) {
          double v = 0;
          for (int i = -r; i <= r; i++) {
            int xx = pass ? x : x + i, yy = pass ? y + i : y;
            xx = xx < 0 ? 0 : xx >= p->width ? p->width - 1 : xx;
            yy = yy < 0 ? 0 : yy >= p->height ? p->height - 1 : yy;
            v += k[i + r] * src[(size_t)yy * p->width + xx];
          }
          dst[(size_t)y * p->width + x] = (float)(v / sum);
        }
    }
    free(k);
  }
  free(fit), free(tmp);
  return s;
}

static enum status report(const struct txt2img_params *p, enum sd_phase phase, int image, int step, int steps) {
  if ((p->cancel && *p->cancel) || (p->progress && p->progress(phase, image, step, steps, p->user)))
    return status_set(STATUS_CANCELLED, "cancelled");
  return STATUS_OK;
}

int txt2img(struct sd_model *m, const struct txt2img_params *given, unsigned char *images, float *latents) {
  struct txt2img_params params = *given, *p = &params;
  if (!p->width && !p->height) p->width = m->info.default_width, p->height = m->info.default_height;
  enum status s = check_params(m, p);
  if (s) return s;
  int f = m->info.vae_factor, C = m->info.latent_channels, h = p->height / f, w = p->width / f;
  size_t n = (size_t)C * h * w, npix = (size_t)p->width * p->height;
  float *noise = malloc(n * sizeof *noise), *x = malloc(n * sizeof *x), *anoise = NULL;
  float *image = malloc(3 * npix * sizeof *image);
  unsigned char *rgb = malloc(3 * npix);
  if (p->ancestral_noise) anoise = malloc((size_t)p->steps * n * sizeof *anoise);
  struct sd_conditioning c = {0};
  /* img2img: the posterior of the init image (once for the batch) and each image's latent from it */
  float *post_mean = NULL, *post_logvar = NULL, *init = NULL, *pnoise = NULL;
  unsigned char *fit = NULL;
  /* inpainting: the pixel mask (1 repaints); an ordinary U-Net's per-latent keep mask, or an
   * inpainting U-Net's extra channels [mask, masked image latent] */
  float *pmask = NULL, *keep = NULL, *concat = NULL, *scratch = NULL, *trip = NULL;
  int runs = p->init_image ? (int)(p->strength * p->steps) : p->steps, start = p->steps - runs;
  if (p->init_image && (!(post_mean = malloc(n * sizeof *post_mean)) || !(post_logvar = malloc(n * sizeof *post_logvar)) ||
                        !(init = malloc(n * sizeof *init)) || !(pnoise = malloc(n * sizeof *pnoise)) || !(fit = malloc(3 * npix)))) {
    s = status_set(STATUS_OUT_OF_MEMORY, "txt2img: out of host memory for a %dx%d image", p->width, p->height);
    goto done;
  }
  if (!noise || !x || !image || !rgb || (p->ancestral_noise && !anoise)) {
    s = status_set(STATUS_OUT_OF_MEMORY, "txt2img: out of host memory for a %dx%d image", p->width, p->height);
    goto done;
  }

  int wanted = 0;
  bool trip_ready = false; /* inpainting: trip holds the init latent's decode (the same for every image in mean mode) */
  for (int b = 0; b < p->batch_count; b++) wanted += !(p->skip && p->skip[b]);
  if (!wanted) goto done;
  /* prompt -> tokens -> conditioning: cond and uncond [77 k, width], one encode for the batch */
  if ((s = report(p, SD_PHASE_ENCODE, 0, 0, 1))) goto done;
  /* SDXL's micro-conditioning: original = target = the job's size, crop (0, 0), unless given */
  struct textenc_sizes sizes = {p->original_height ? p->original_height : p->height,
                                p->original_width ? p->original_width : p->width, p->crop_top, p->crop_left,
                                p->target_height ? p->target_height : p->height, p->target_width ? p->target_width : p->width};
  if ((s = sd_model_encode(m, p->prompt, p->negative_prompt, p->clip_skip, p->empty_negative, &sizes, &c))) goto done;
  if (p->init_image) { /* crop and resize, [-1, 1], VAE encoder: mean and log-variance */
    if ((s = image_cover_crop(p->init_image, p->init_width, p->init_height, p->width, p->height, fit))) goto done;
    for (size_t q = 0; q < npix; q++)
      for (int ch = 0; ch < 3; ch++) image[ch * npix + q] = fit[q * 3 + ch] / 127.5f - 1.0f;
    if ((s = vae_encode(m->vae, image, 1, p->height, p->width, (enum vae_tiling)p->vae_tiling, post_mean, post_logvar))) goto done;
  }
  if (p->mask || m->info.inpainting) {
    size_t hw = (size_t)h * w;
    bool inp = m->info.inpainting;
    if (!(pmask = malloc(npix * sizeof *pmask)) || (p->mask && !(trip = malloc(3 * npix * sizeof *trip))) ||
        (!inp && !(keep = malloc(n * sizeof *keep))) ||
        (inp && (!(concat = malloc((hw + n) * sizeof *concat)) || !(scratch = malloc(2 * n * sizeof *scratch))))) {
      s = status_set(STATUS_OUT_OF_MEMORY, "txt2img: out of host memory for the mask");
      goto done;
    }
    if (p->mask && (s = pixel_mask(p, pmask))) goto done;
    if (!p->mask) /* an inpainting U-Net without a mask repaints everything */
      for (size_t i = 0; i < npix; i++) pmask[i] = 1;
    for (int y = 0; keep && y < h; y++) /* the keep mask: 1 - the mask's mean over the latent pixel */
      for (int xx = 0; xx < w; xx++) {
        double sum = 0;
        for (int dy = 0; dy < f; dy++)
          for (int dx = 0; dx < f; dx++) sum += pmask[(size_t)(y * f + dy) * p->width + xx * f + dx];
        for (int ch = 0; ch < C; ch++) keep[((size_t)ch * h + y) * w + xx] = (float)(1 - sum / (f * f));
      }
    if (inp) { /* mask: rounded, nearest; the image with the repainted part zeroed, encoded */
      for (int y = 0; y < h; y++)
        for (int xx = 0; xx < w; xx++) concat[(size_t)y * w + xx] = pmask[(size_t)(y * f) * p->width + xx * f] >= 0.5f;
      for (size_t q = 0; q < npix; q++)
        for (int ch = 0; ch < 3; ch++)
          image[ch * npix + q] = p->init_image && pmask[q] < 0.5f ? fit[q * 3 + ch] / 127.5f - 1.0f : 0.0f;
      if ((s = vae_encode(m->vae, image, 1, p->height, p->width, (enum vae_tiling)p->vae_tiling, scratch,
                            scratch + n))) goto done;
      vae_sample_latent(scratch, scratch + n, NULL, n, m->info.scale_factor, concat + hw);
    }
  }
  if ((s = report(p, SD_PHASE_ENCODE, 0, 1, 1))) goto done;

  for (int b = 0; b < p->batch_count; b++) {
    if (p->skip && p->skip[b]) continue;
    /* the starting noise: torch.manual_seed(seed + b); torch.randn([1, 4, h, w]), or the caller's */
    uint32_t seed = (uint32_t)((uint64_t)p->seed + (uint64_t)b);
    struct rng rng;
    rng_seed_kind(&rng, seed, (enum rng_kind)p->rng);
    if (p->noise) memcpy(noise, p->noise + (size_t)b * n, n * sizeof *noise);
    else rng_randn(&rng, noise, n);
    if (p->init_image) { /* the posterior sample (or its mean), scaled: the latent to start from */
      if (p->vae_encode == SD_VAE_ENCODE_SAMPLE) rng_randn(&rng, pnoise, n);
      vae_sample_latent(post_mean, post_logvar, p->vae_encode == SD_VAE_ENCODE_SAMPLE ? pnoise : NULL, n,
                        m->info.scale_factor, init);
    }
    for (int k = 0; anoise && k < p->steps; k++) /* [steps, batch, n] -> this image's [steps, n] */
      memcpy(anoise + (size_t)k * n, p->ancestral_noise + ((size_t)k * p->batch_count + b) * n, n * sizeof *anoise);

    /* the sampling loop: each step one guided U-Net evaluation (cond and uncond in one batch) */
    struct guidance g = {0};
    if ((s = guidance_init(&g, m->unet, c.cond, c.uncond, c.y_cond, c.y_uncond, c.tokens, C, h, w, (float)p->cfg_scale)) ||
        (m->info.inpainting && (s = guidance_set_concat(&g, concat, 1 + C)))) {
      guidance_free(&g);
      goto done;
    }
    struct step_hook hook = {.p = p, .m = m, .h = h, .w = w, .preview = image, .rgb = rgb, .image = b, .latents = latents ? latents + (size_t)b * n : NULL, .n = n,
                             .stride = (size_t)p->batch_count * n};
    struct sampler_run run = {.sampler = (enum sampler_kind)p->sampler, .schedule = (enum schedule_kind)p->schedule,
                              .prediction = m->info.prediction == SD_PREDICTION_V ? PREDICTION_V : PREDICTION_EPS,
                              .steps = p->steps, .n = n, .noise = noise, .init = init, .start = start,
                              .keep = p->mask ? keep : NULL, /* NULL for an inpainting U-Net */
                              .ancestral_noise = anoise, .rng = &rng,
                              .denoise = guidance_denoise, .user = &g, .on_step = on_step, .step_user = &hook};
    vae_release_activations(m->vae); /* the U-Net's and the VAE's activations are never held at once */
    if (!(s = report(p, SD_PHASE_SAMPLE, b, 0, runs))) s = sampler_run(&m->sched, &run, x);
    guidance_free(&g);
    if (s) goto done;
    unet_release_activations(m->unet);

    /* the final latent -> VAE decode -> 8-bit pixels */
    if ((s = report(p, SD_PHASE_DECODE, b, 0, 1))) goto done;
    /* inpainting: the init latent's decode first (once when every image starts from the posterior mean) */
    for (int pass = p->mask && !(trip_ready && p->vae_encode == SD_VAE_ENCODE_MEAN) ? 2 : 1; pass-- > 0;) {
      float *dst = pass ? trip : image;
      const float *z = pass ? init : x;
      if (p->taesd_decode) { /* TAESD: the latent as the U-Net made it, [0, 1] out */
        if ((s = taesd_decode(m->taesd, z, 1, h, w, dst))) goto done;
      } else if ((s = vae_decode(m->vae, z, 1, h, w, (enum vae_tiling)p->vae_tiling, dst))) {
        if (s == STATUS_NUMERIC) /* never a black image: the job fails, naming the step */
          status_wrap(s, "image %d, VAE decode after step %d of %d%s", b + 1, runs, runs,
                      m->info.fp16 ? " (fp16 weights: the SDXL VAE overflows on some latents; try --precision fp32)" : "");
        goto done;
      }
    }
    trip_ready = true;
    for (size_t q = 0; p->mask && q < npix; q++) /* the kept part: the init image's own VAE round trip */
      for (int ch = 0; ch < 3; ch++) image[ch * npix + q] = pmask[q] * image[ch * npix + q] + (1 - pmask[q]) * trip[ch * npix + q];
    (p->taesd_decode ? taesd_image_to_u8 : image_to_u8)(image, p->height, p->width, rgb);
    if ((s = report(p, SD_PHASE_DECODE, b, 1, 1))) goto done;
    if (images) memcpy(images + (size_t)b * 3 * npix, rgb, 3 * npix);
    if (p->on_image && p->on_image(b, seed, rgb, x, p->user)) {
      s = status_set(STATUS_CANCELLED, "cancelled after image %d of %d", b + 1, p->batch_count);
      goto done;
    }
  }
done:
  sd_conditioning_free(&c);
  free(post_mean), free(post_logvar), free(init), free(pnoise), free(fit);
  free(pmask), free(keep), free(concat), free(scratch), free(trip);
  free(noise), free(x), free(anoise), free(image), free(rgb);
  return s;
}
