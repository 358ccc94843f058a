/* make_checkpoint: writes a checkpoint from the deterministic weight rule (../shared/ref/README.md),
 * for benchmarks and manual checks with real-size models.
 *   make_checkpoint clip tiny|tiny_gelu|vitl14 [--dtype f32|f16|bf16] [--prefix P] [--openclip]
 *                   [--projection] [--seed S] -o OUT.safetensors
 *   make_checkpoint sd DIGEST.json tiny|vitl14 [--dtype f32|f16] [--merge-lora LORA:S] -o OUT.safetensors
 *     (an SD single-file checkpoint: the U-Net/VAE keys of a ../shared/ref digest and a CLIP text model;
 *     --merge-lora: the LoRA (a file of make_checkpoint lora) merged in offline at strength S, F32)
 *   make_checkpoint lora CKPT kohya|kohya-ldm|peft [--rank R] [--alpha A] [--seed S] [--unet-only|--text-only]
 *                   -o OUT.safetensors   (a LoRA for the tiny SD 1.x checkpoint CKPT)
 *   make_checkpoint unet DIGEST.json [--dtype f32|f16] -o OUT.safetensors
 *     (a U-Net alone under model.diffusion_model., streamed: the full SDXL one for bench unet)
 *   make_checkpoint sd2|sdxl UNET_DIGEST.json VAE_DIGEST.json [--dtype f32|f16] [--meta KEY=VALUE] -o OUT.safetensors
 *     (a tiny SD 2.x / SDXL single file: U-Net and VAE of the digests, the tiny text towers)
 *   make_checkpoint sdxl-text tiny|full [--dtype f32|f16|bf16] [--seed S] -o OUT.safetensors
 *     (SDXL's two text towers as in sd_xl_base_1.0.safetensors: tiny + tiny_gelu, or vitl14 + vitbigg14) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "lora")) {
    const char *out = NULL, *fmt = argv[3];
    int rank = 4;
    double alpha = 2;
    uint64_t seed = 1;
    unsigned parts = TEST_LORA_UNET | TEST_LORA_TEXT;
    for (int i = 4; i < argc; i++) {
      if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
      else if (!strcmp(argv[i], "--alpha") && i + 1 < argc) alpha = atof(argv[++i]);
      else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
      else if (!strcmp(argv[i], "--unet-only")) parts = TEST_LORA_UNET;
      else if (!strcmp(argv[i], "--text-only")) parts = TEST_LORA_TEXT;
      else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    }
    int f = !strcmp(fmt, "kohya") ? TEST_LORA_KOHYA : !strcmp(fmt, "kohya-ldm") ? TEST_LORA_KOHYA_LDM : !strcmp(fmt, "peft") ? TEST_LORA_PEFT : -1;
    if (!out || f < 0 || rank < 1) {
      fprintf(stderr, "usage: make_checkpoint lora CKPT kohya|kohya-ldm|peft [--rank R] [--alpha A] [--seed S] "
                      "[--unet-only|--text-only] -o OUT.safetensors\n");
      return 2;
    }
    return write_test_lora(out, argv[2], (enum test_lora_format)f, rank, alpha, seed, parts) ? 1 : 0;
  }
  if (argc >= 4 && !strcmp(argv[1], "sd")) { /* make_checkpoint sd DIGEST.json tiny|vitl14 [--dtype f16] -o OUT */
    enum st_dtype dt = ST_F32;
    const char *out = NULL, *merge = NULL;
    for (int i = 4; i < argc; i++) {
      if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = !strcmp(argv[++i], "f16") ? ST_F16 : ST_F32;
      else if (!strcmp(argv[i], "--merge-lora") && i + 1 < argc && strrchr(argv[i + 1], ':')) merge = argv[++i];
      else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    }
    if (!out || !clip_spec(argv[3])) {
      fprintf(stderr, "usage: make_checkpoint sd DIGEST.json tiny|vitl14 [--dtype f32|f16] -o OUT.safetensors\n");
      return 2;
    }
    if (!merge) return write_sd_checkpoint(out, argv[2], dt, 1, clip_spec(argv[3])) ? 1 : 0;
    char base[4200], lora[4200];
    snprintf(base, sizeof base, "%s.unmerged", out);
    snprintf(lora, sizeof lora, "%.*s", (int)(strrchr(merge, ':') - merge), merge);
    int rc = write_sd_checkpoint(base, argv[2], dt, 1, clip_spec(argv[3])) ||
             merge_test_lora(base, lora, atof(strrchr(merge, ':') + 1), out);
    remove(base);
    return rc ? 1 : 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "unet")) {
    enum st_dtype dt = ST_F32;
    const char *out = NULL;
    for (int i = 3; i < argc; i++) {
      if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = !strcmp(argv[++i], "f16") ? ST_F16 : ST_F32;
      else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    }
    if (!out) {
      fprintf(stderr, "usage: make_checkpoint unet DIGEST [--dtype f32|f16] -o OUT\n");
      return 2;
    }
    return write_unet_checkpoint(out, argv[2], dt, 1) ? 1 : 0;
  }
  if (argc >= 4 && (!strcmp(argv[1], "sd2") || !strcmp(argv[1], "sdxl"))) {
    enum st_dtype dt = ST_F32;
    const char *out = NULL;
    char key[128] = "", *val = NULL;
    for (int i = 4; i < argc; i++) {
      if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = !strcmp(argv[++i], "f16") ? ST_F16 : ST_F32;
      else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
      else if (!strcmp(argv[i], "--meta") && i + 1 < argc && strchr(argv[i + 1], '=')) {
        snprintf(key, sizeof key, "%.*s", (int)(strchr(argv[i + 1], '=') - argv[i + 1]), argv[i + 1]);
        val = strchr(argv[++i], '=') + 1;
      }
    }
    if (!out) {
      fprintf(stderr, "usage: make_checkpoint sd2|sdxl UNET_DIGEST VAE_DIGEST [--dtype f32|f16] [--meta K=V] -o OUT\n");
      return 2;
    }
    return write_family_checkpoint(out, argv[1], argv[2], argv[3], dt, 1, key[0] ? key : NULL, val) ? 1 : 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "sdxl-text")) {
    enum st_dtype dt = ST_F32;
    uint64_t seed = 1;
    const char *out = NULL;
    for (int i = 3; i < argc; i++) {
      if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
        const char *d = argv[++i];
        dt = !strcmp(d, "f16") ? ST_F16 : !strcmp(d, "bf16") ? ST_BF16 : ST_F32;
      } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
        seed = strtoull(argv[++i], NULL, 10);
      } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
        out = argv[++i];
      }
    }
    bool full = !strcmp(argv[2], "full");
    if (!out || (!full && strcmp(argv[2], "tiny"))) {
      fprintf(stderr, "usage: make_checkpoint sdxl-text tiny|full [--dtype f32|f16|bf16] [--seed S] -o OUT.safetensors\n");
      return 2;
    }
    return write_sdxl_text_checkpoint(out, clip_spec(full ? "vitl14" : "tiny"), clip_spec(full ? "vitbigg14" : "tiny_gelu"),
                                      dt, seed, NULL) ? 1 : 0;
  }
  if (argc >= 3 && !strcmp(argv[1], "vision")) { /* make_checkpoint vision tiny|vitb32|vitl14 [--dtype f16] -o OUT */
    enum st_dtype dt = ST_F32;
    const char *out = NULL;
    for (int i = 3; i < argc; i++) {
      if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dt = !strcmp(argv[++i], "f16") ? ST_F16 : ST_F32;
      else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    }
    if (!out || !vision_spec(argv[2])) {
      fprintf(stderr, "usage: make_checkpoint vision tiny|vitb32|vitl14 [--dtype f32|f16] -o OUT.safetensors\n");
      return 2;
    }
    return write_vision_checkpoint(out, vision_spec(argv[2]), NULL, dt, 1) ? 1 : 0;
  }
  if (argc < 3 || strcmp(argv[1], "clip")) {
    fprintf(stderr, "usage: make_checkpoint clip tiny|tiny_gelu|vitl14 [--dtype f32|f16|bf16] [--prefix P] "
                    "[--openclip] [--projection] [--seed S] -o OUT.safetensors\n");
    return 2;
  }
  const struct clip_spec *spec = clip_spec(argv[2]);
  if (!spec) {
    fprintf(stderr, "make_checkpoint: unknown config '%s'\n", argv[2]);
    return 2;
  }
  struct ckpt_options o = {.dtype = ST_F32, .prefix = "", .seed = 1};
  const char *out = NULL;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
      const char *d = argv[++i];
      o.dtype = !strcmp(d, "f16") ? ST_F16 : !strcmp(d, "bf16") ? ST_BF16 : ST_F32;
    } else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) {
      o.prefix = argv[++i];
    } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
      o.seed = strtoull(argv[++i], NULL, 10);
    } else if (!strcmp(argv[i], "--openclip")) {
      o.openclip_names = true;
    } else if (!strcmp(argv[i], "--projection")) {
      o.projection = true;
    } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
      out = argv[++i];
    } else {
      fprintf(stderr, "make_checkpoint: bad option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!out) {
    fprintf(stderr, "make_checkpoint: -o is required\n");
    return 2;
  }
  if (write_clip_checkpoint(out, spec, &o)) {
    fprintf(stderr, "make_checkpoint: writing %s failed\n", out);
    return 1;
  }
  return 0;
}
