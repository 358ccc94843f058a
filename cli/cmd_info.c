/* vkdiffusion info: what a checkpoint holds, or the parameters a PNG was generated with. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clip_text.h"
#include "png.h"
#include "safetensors.h"
#include "textenc_internal.h"
#include "unet.h"
#include "vae.h"

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

static int info_png(const char *path) {
  char *params;
  if (png_read_parameters(path, &params)) return cli_fail("info", NULL);
  if (!params) {
    fprintf(stderr, "vkdiffusion info: %s: no generation parameters in this PNG\n", path);
    return 1;
  }
  printf("%s\n", params);
  free(params);
  return 0;
}

static int info_checkpoint(const char *path) {
  struct safetensors *st;
  if (safetensors_open(path, &st)) return cli_fail("info", NULL);
  int64_t total = 0, unet = 0, vae_dec = 0, vae_enc = 0, clip = 0, other = 0;
  int counts[ST_DTYPE_COUNT] = {0};
  for (int i = 0; i < safetensors_count(st); i++) {
    const struct st_tensor *t = safetensors_at(st, i);
    total += t->numel;
    counts[t->dtype]++;
    if (!strncmp(t->name, "model.diffusion_model.", 22)) unet += t->numel;
    else if (!strncmp(t->name, "first_stage_model.decoder.", 26) || !strncmp(t->name, "first_stage_model.post_quant", 28))
      vae_dec += t->numel;
    else if (!strncmp(t->name, "first_stage_model.", 18)) vae_enc += t->numel;
    else if (!strncmp(t->name, "cond_stage_model.", 17) || !strncmp(t->name, "conditioner.", 12) ||
             strstr(t->name, "text_model.") || strstr(t->name, "token_embedding"))
      clip += t->numel;
    else other += t->numel;
  }
  struct clip_text_config cc, cc2;
  bool has_clip = clip_text_detect(st, NULL, &cc) == STATUS_OK;
  bool has_clip2 = clip_text_detect(st, "conditioner.embedders.1.model.", &cc2) == STATUS_OK;
  bool has_unet = unet_present(st, NULL), has_vae = vae_present(st, NULL);
  enum textenc_family fam = TEXTENC_FAMILY_SD1;
  char why[256] = "";
  if (has_unet || has_clip) textenc_detect_family(path, &fam, why, sizeof why);
  static const char *const names[] = {"", "Stable Diffusion 1.x (sd1)", "Stable Diffusion 2.x (sd2)", "SDXL (sdxl)"};
  const char *family = has_unet || has_clip2 || (has_clip && fam != TEXTENC_FAMILY_SD1) ? names[fam]
                       : has_clip ? "CLIP text encoder" : "unknown";
  printf("file: %s\nfamily: %s%s%s%s\ntensors: %d, parameters: %lld\ndtypes:", path, family, why[0] ? " [" : "", why,
         why[0] ? "]" : "", safetensors_count(st), (long long)total);
  for (int d = 0; d < ST_DTYPE_COUNT; d++)
    if (counts[d]) printf(" %s x%d", st_dtype_name((enum st_dtype)d), counts[d]);
  printf("\ncomponents:\n");
  if (has_unet) {
    const struct st_tensor *cin = safetensors_find(st, "model.diffusion_model.input_blocks.0.0.weight");
    int in = cin && cin->ndim == 4 ? (int)cin->shape[1] : 0;
    printf("  U-Net: %lld parameters, %d input channels%s\n", (long long)unet, in,
           in == 9 ? " (an inpainting model: latent + mask + masked-image latent)" : "");
  }
  if (has_vae || vae_enc) printf("  VAE: decoder %lld, encoder %lld parameters\n", (long long)vae_dec, (long long)vae_enc);
  for (int t = 0; t < 2; t++) {
    const struct clip_text_config *c = t ? &cc2 : &cc;
    if (!(t ? has_clip2 : has_clip)) continue;
    printf("  CLIP text%s (%s names, prefix '%s'): width %d, %d layers, vocab %d, context %d%s", t ? " 2" : "",
           c->layout == CLIP_LAYOUT_HF ? "HF" : "OpenCLIP", c->prefix, c->width, c->layers, c->vocab, c->ctx,
           c->proj ? ", projection" : "");
    if (!has_clip2) printf(": %lld parameters", (long long)clip);
    printf("\n");
  }
  if (has_clip2) printf("  text towers: %lld parameters\n", (long long)clip);
  if (other) printf("  other: %lld values (schedule buffers, ...)\n", (long long)other);
  safetensors_close(st);
  return 0;
}

int cmd_info(int argc, char **argv) {
  if (argc != 2 || cli_is_help(argv[1])) {
    FILE *f = argc == 2 ? stdout : stderr;
    fprintf(f, "usage: vkdiffusion info CKPT.safetensors | IMAGE.png\n\n"
               "A checkpoint: the detected model family, components, dtypes and parameter counts.\n"
               "A PNG written by generate: its `parameters` text (prompt, negative prompt, settings).\n");
    return argc == 2 ? 0 : 2;
  }
  return ends_with(argv[1], ".png") || ends_with(argv[1], ".PNG") ? info_png(argv[1]) : info_checkpoint(argv[1]);
}
