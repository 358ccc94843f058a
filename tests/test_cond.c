/* The conditioner (SD 2.x and SDXL text conditioning) against ../shared/ref/goldens:
 * sdxl_cond_tiny (two tiny towers), sdxl_cond_full (CLIP-L + bigG, F16 weights) and the SD 2.x
 * penultimate tower of sample_sd21_tiny_v, with checkpoints built here from the weight rule.
 * Tolerances (../shared/ref/README.md): crossattn atol 1e-4 rtol 1e-4 (tiny) / atol 3e-4 rtol 1e-4
 * (full), pooled atol 1e-4 rtol 1e-4, y's size part atol 2e-4 (float32 sin/cos of arguments up to
 * ~1200), fp16 storage atol 2e-2 rtol 2e-2. Then the rules around them: padding (CLIP-L with the
 * end token, bigG with 0), the empty negative both ways, long prompts pooled from chunk 0, weights
 * on both towers, a diffusers folder, --config's text_encoder_2, and malformed towers. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "prompt.h"
#include "test.h"
#include "textenc.h"
#include "textenc_internal.h"

static char dir[256], tok[1024];
static struct gpu *gpu;

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static struct textenc_cond *open_cond(const char *model, const char *config, enum textenc_precision prec,
                                      enum textenc_family family) {
  struct textenc_options o = textenc_default_options();
  o.model_path = model;
  o.config_path = config;
  o.device = gpu;
  o.precision = prec;
  o.family = family;
  o.tokenizer_path = tok;
  struct textenc_cond *c = NULL;
  CHECK_OK(textenc_cond_create(&o, &c));
  return c;
}

struct golden {
  struct safetensors *st;
  int32_t ids_l[4 * 77], ids_g[4 * 77];
  float *crossattn, *pooled, *y, *y_uncond;
  struct textenc_sizes sizes;
};

static int golden_open(const char *file, struct golden *g) {
  char path[1200];
  test_shared_path(path, sizeof path, file);
  if (safetensors_open(path, &g->st)) return -1;
  CHECK_OK(safetensors_read_i32(g->st, safetensors_find(g->st, "ids_l"), g->ids_l));
  CHECK_OK(safetensors_read_i32(g->st, safetensors_find(g->st, "ids_g"), g->ids_g));
  size_t n;
  g->crossattn = test_tensor(g->st, "crossattn", &n);
  g->pooled = test_tensor(g->st, "pooled", &n);
  g->y = test_tensor(g->st, "y", &n);
  g->y_uncond = test_tensor(g->st, "y_uncond_zero", &n);
  float *sz = test_tensor(g->st, "sizes", &n);
  if (!g->crossattn || !g->pooled || !g->y || !g->y_uncond || !sz || n != 6) return -1;
  g->sizes = (struct textenc_sizes){(int)sz[0], (int)sz[1], (int)sz[2], (int)sz[3], (int)sz[4], (int)sz[5]};
  free(sz);
  return 0;
}

static void golden_close(struct golden *g) {
  free(g->crossattn), free(g->pooled), free(g->y), free(g->y_uncond);
  safetensors_close(g->st);
}

/* y [n, P + 1536]: the pooled part against pooled tolerances, the size part against atol 2e-4 */
static void check_y(const char *label, const float *y, const float *ref, int n, int P, double atol, double rtol) {
  int Y = P + 1536;
  float *a = malloc((size_t)n * P * 4), *b = malloc((size_t)n * P * 4);
  float *c = malloc((size_t)n * 1536 * 4), *d = malloc((size_t)n * 1536 * 4);
  for (int i = 0; i < n; i++) {
    memcpy(a + i * P, y + (size_t)i * Y, (size_t)P * 4), memcpy(b + i * P, ref + (size_t)i * Y, (size_t)P * 4);
    memcpy(c + i * 1536, y + (size_t)i * Y + P, 1536 * 4), memcpy(d + i * 1536, ref + (size_t)i * Y + P, 1536 * 4);
  }
  char what[160];
  snprintf(what, sizeof what, "%s y pooled part", label);
  CHECK_CLOSE(what, a, b, (size_t)n * P, atol, rtol);
  snprintf(what, sizeof what, "%s y size part", label);
  CHECK_CLOSE(what, c, d, (size_t)n * 1536, 2e-4, 0);
  free(a), free(b), free(c), free(d);
}

/* the golden ids through the conditioner: context, pooled, y, and the zero uncond */
static void compare(const char *label, struct textenc_cond *c, struct golden *g, double atol, double rtol) {
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  int D = ci.context_dim, P = ci.pooled_dim;
  float *ctx = malloc(4 * 77 * (size_t)D * 4), *pooled = malloc(4 * (size_t)P * 4), *y = malloc(4 * (size_t)ci.y_dim * 4);
  CHECK_OK(textenc_cond_encode_ids(c, g->ids_l, NULL, g->ids_g, NULL, 4, 1, &g->sizes, ctx, pooled, y));
  char what[160];
  snprintf(what, sizeof what, "%s crossattn", label);
  CHECK_CLOSE(what, ctx, g->crossattn, 4 * 77 * (size_t)D, atol, rtol);
  snprintf(what, sizeof what, "%s pooled", label);
  CHECK_CLOSE(what, pooled, g->pooled, 4 * (size_t)P, atol < 1e-3 ? 1e-4 : atol, rtol);
  check_y(label, y, g->y, 4, P, atol < 1e-3 ? 1e-4 : atol, rtol);
  free(ctx), free(pooled), free(y);
}

static bool all_zero(const float *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}

static void test_tiny_rules(struct textenc_cond *c, struct golden *g) {
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  CHECK(ci.family == TEXTENC_FAMILY_SDXL && ci.towers == 2 && ci.context_dim == 128 && ci.pooled_dim == 64 &&
        ci.y_dim == 1600 && ci.clip_skip == 2 && ci.default_size == 1024);
  const int D = 128, P = 64, Y = 1600;
  /* tokenization: CLIP-L pads with the end token, bigG with 0 (the golden ids are the official ones);
   * the long prompt's first chunk is the official truncation */
  const char *prompts[4];
  const char *names = safetensors_metadata(g->st, "prompts");
  char *buf = names ? strdup(names) : NULL;
  int np = 0;
  for (char *p = buf ? strchr(buf, '"') : NULL; p && np < 4; np++) { /* ["a", "", ...]: no escapes in these */
    char *e = strchr(p + 1, '"');
    if (!e) break;
    *e = 0;
    prompts[np] = p + 1;
    p = strchr(e + 1, '"');
  }
  CHECK(np == 4);
  if (np != 4) {
    free(buf);
    return;
  }
  int chunks;
  CHECK_OK(textenc_cond_count_chunks(c, prompts, 4, &chunks));
  CHECK(chunks == 2);
  int32_t *il = malloc((size_t)4 * chunks * 77 * 4), *ig = malloc((size_t)4 * chunks * 77 * 4);
  CHECK_OK(textenc_cond_tokenize(c, prompts, 4, chunks, il, NULL, ig, NULL));
  for (int i = 0; i < 4; i++) {
    CHECK_MSG(!memcmp(il + i * chunks * 77, g->ids_l + i * 77, 77 * 4), "prompt %d: CLIP-L ids differ", i);
    CHECK_MSG(!memcmp(ig + i * chunks * 77, g->ids_g + i * 77, 77 * 4), "prompt %d: bigG ids differ", i);
  }
  CHECK(il[76] == 49407 && ig[76] == 0); /* padding of prompt 0 */
  free(il), free(ig);
  /* from text: the padding reaches the rows after the end token (3 short prompts) */
  float *ctx = malloc(3 * 77 * D * 4), *pooled = malloc(3 * P * 4), *y = malloc(3 * Y * 4);
  CHECK_OK(textenc_cond_encode(c, prompts, 3, 1, &g->sizes, ctx, pooled, y));
  CHECK_CLOSE("tiny from text: crossattn (padding)", ctx, g->crossattn, 3 * 77 * D, 1e-4, 1e-4);
  CHECK_CLOSE("tiny from text: pooled", pooled, g->pooled, 3 * P, 1e-4, 1e-4);
  /* the empty negative: NULL = zeros (A1111, diffusers, sgm), "" = its encoding (ComfyUI, diffusers with "") */
  const char *neg[2] = {NULL, ""};
  CHECK_OK(textenc_cond_encode(c, neg, 2, 1, &g->sizes, ctx, pooled, y));
  CHECK(all_zero(ctx, 77 * D) && all_zero(pooled, P));
  check_y("empty negative as zeros:", y, g->y_uncond, 1, P, 1e-4, 1e-4);
  CHECK_CLOSE("empty negative encoded: context", ctx + 77 * D, g->crossattn + 77 * D, 77 * D, 1e-4, 1e-4);
  CHECK_CLOSE("empty negative encoded: pooled", pooled + P, g->pooled + P, P, 1e-4, 1e-4);
  CHECK_CLOSE("empty negative encoded: y", y + Y, g->y + Y, 1536 + P, 2e-4, 1e-4);
  free(ctx), free(pooled), free(y);
  free(buf);

  /* a long prompt (3 chunks): context chunk by chunk, pooled from chunk 0 only */
  char longp[2048] = "";
  for (int i = 0; i < 30; i++) strcat(longp, "a red cube and a blue sphere ");
  const char *lp = longp;
  CHECK_OK(textenc_cond_count_chunks(c, &lp, 1, &chunks));
  CHECK(chunks == 3);
  int32_t *l3 = malloc(3 * 77 * 4), *g3 = malloc(3 * 77 * 4);
  float *c3 = malloc(3 * 77 * D * 4), *p3 = malloc(P * 4), *c1 = malloc(77 * D * 4), *p1 = malloc(P * 4), *p1b = malloc(P * 4);
  CHECK_OK(textenc_cond_tokenize(c, &lp, 1, 3, l3, NULL, g3, NULL));
  CHECK_OK(textenc_cond_encode(c, &lp, 1, 3, NULL, c3, p3, NULL));
  for (int k = 0; k < 3; k++) {
    CHECK_OK(textenc_cond_encode_ids(c, l3 + k * 77, NULL, g3 + k * 77, NULL, 1, 1, NULL, c1, k ? p1b : p1, NULL));
    char what[64];
    snprintf(what, sizeof what, "long prompt: chunk %d alone", k);
    CHECK_CLOSE(what, c3 + k * 77 * D, c1, 77 * D, 1e-6, 1e-6);
  }
  CHECK_CLOSE("long prompt: pooled is chunk 0's", p3, p1, P, 1e-6, 1e-6);
  double d = 0;
  for (int i = 0; i < P; i++) d = fmax(d, fabs(p3[i] - p1b[i]));
  CHECK_MSG(d > 1e-3, "chunk 2's pooled equals chunk 0's (%g)", d);
  free(l3), free(g3), free(c3), free(p3), free(c1), free(p1), free(p1b);

  /* weights on both towers: z *= w per token, then each tower's chunk mean restored (A1111) */
  const char *plain = "a photo of a cat", *weighted = "a photo of a (cat:1.3)";
  float *a = malloc(77 * D * 4), *b = malloc(77 * D * 4), *wl = malloc(77 * 4), *wg = malloc(77 * 4);
  int32_t il1[77], ig1[77];
  CHECK_OK(textenc_cond_encode(c, &plain, 1, 1, NULL, a, NULL, NULL));
  CHECK_OK(textenc_cond_encode(c, &weighted, 1, 1, NULL, b, NULL, NULL));
  CHECK_OK(textenc_cond_tokenize(c, &weighted, 1, 1, il1, wl, ig1, wg));
  int boosted = 0;
  for (int t = 0; t < 77; t++) boosted += (wl[t] == 1.3f) + (wg[t] == 1.3f);
  CHECK(boosted == 2);
  for (int tw = 0; tw < 2; tw++) {
    int off = tw ? 64 : 0, W = 64;
    const float *w = tw ? wg : wl;
    double before = 0, after = 0;
    for (int t = 0; t < 77; t++)
      for (int k = 0; k < W; k++) before += a[t * D + off + k], after += a[t * D + off + k] * w[t];
    float *e = malloc(77 * W * 4), *got = malloc(77 * W * 4);
    for (int t = 0; t < 77; t++)
      for (int k = 0; k < W; k++) {
        e[t * W + k] = (float)(a[t * D + off + k] * w[t] * (before / after));
        got[t * W + k] = b[t * D + off + k];
      }
    CHECK_CLOSE(tw ? "(cat:1.3) on bigG" : "(cat:1.3) on CLIP-L", got, e, 77 * W, 1e-5, 1e-5);
    free(e), free(got);
  }
  free(a), free(b), free(wl), free(wg);
}

static void expect_error(const char *label, const char *model, const char *config, const char *needle) {
  struct textenc_options o = textenc_default_options();
  o.model_path = model;
  o.config_path = config;
  o.device = gpu;
  o.tokenizer_path = strstr(label, "tokenizer_2") ? NULL : tok;
  struct textenc_cond *c = NULL;
  int rc = textenc_cond_create(&o, &c);
  CHECK_MSG(rc != TEXTENC_OK && !c, "%s: created", label);
  CHECK_MSG(strstr(textenc_last_error(), needle) != NULL, "%s: '%s' lacks '%s'", label, textenc_last_error(), needle);
  CHECK_MSG(!strchr(textenc_last_error(), '\n'), "%s: not one line", label);
  printf("  %-24s -> %s\n", label, textenc_last_error());
  textenc_cond_destroy(c);
}

static void copy_file(const char *from, const char *to) {
  char out[256];
  int rc = test_run(out, sizeof out, "cp '%s' '%s'", from, to);
  CHECK_MSG(rc == 0, "cp %s: %s", from, out);
}

/* a diffusers SDXL folder of the tiny towers: HF names both (text_encoder_2 with text_projection.weight
 * [proj, width], the transpose of OpenCLIP's), config.json beside each, tokenizer/ and tokenizer_2/ */
static void make_diffusers(const char *root, bool with_tok2) {
  char p[600], v[1200], m[1200];
  mkdir(root, 0755);
  const char *sub[] = {"text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"};
  for (int i = 0; i < (with_tok2 ? 4 : 3); i++) {
    snprintf(p, sizeof p, "%s/%s", root, sub[i]);
    mkdir(p, 0755);
  }
  snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", root);
  CHECK(write_clip_checkpoint(p, clip_spec("tiny"), &(struct ckpt_options){.dtype = ST_F32, .prefix = "", .seed = 1}) == 0);
  snprintf(p, sizeof p, "%s/text_encoder_2/model.safetensors", root);
  CHECK(write_clip_checkpoint(p, clip_spec("tiny_gelu"),
                              &(struct ckpt_options){.dtype = ST_F32, .prefix = "", .seed = 2, .projection = true}) == 0);
  snprintf(p, sizeof p, "%s/text_encoder", root);
  test_write_text(p, "config.json", "{\"architectures\": [\"CLIPTextModel\"], \"hidden_act\": \"quick_gelu\", "
                                    "\"num_attention_heads\": 4}");
  snprintf(p, sizeof p, "%s/text_encoder_2", root);
  test_write_text(p, "config.json", "{\"architectures\": [\"CLIPTextModelWithProjection\"], \"hidden_act\": \"gelu\", "
                                    "\"num_attention_heads\": 4}");
  snprintf(v, sizeof v, "%s/vocab.json", tok);
  snprintf(m, sizeof m, "%s/merges.txt", tok);
  for (int i = 2; i < (with_tok2 ? 4 : 3); i++) {
    snprintf(p, sizeof p, "%s/%s/vocab.json", root, sub[i]);
    copy_file(v, p);
    snprintf(p, sizeof p, "%s/%s/merges.txt", root, sub[i]);
    copy_file(m, p);
  }
}

static int test_sdxl_tiny(void) {
  struct golden g;
  if (golden_open("ref/goldens/sdxl_cond_tiny.safetensors", &g)) return -1;
  char ckpt[512], cfg[512], cfg1[512];
  path_in(ckpt, sizeof ckpt, "sdxl_tiny.safetensors");
  test_write_text(dir, "config.json", "{\"text_encoder\": {\"num_attention_heads\": 4}, "
                                      "\"text_encoder_2\": {\"num_attention_heads\": 4}}");
  test_write_text(dir, "config1.json", "{\"text_encoder\": {\"num_attention_heads\": 4}}");
  path_in(cfg, sizeof cfg, "config.json");
  path_in(cfg1, sizeof cfg1, "config1.json");
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("tiny"), clip_spec("tiny_gelu"), ST_F32, 1, NULL) == 0);
  enum textenc_family f;
  char why[256];
  CHECK_OK(textenc_detect_family(ckpt, &f, why, sizeof why));
  CHECK(f == TEXTENC_FAMILY_SDXL);
  struct textenc_cond *c = open_cond(ckpt, cfg, TEXTENC_FP32, TEXTENC_FAMILY_AUTO);
  if (c) {
    compare("sdxl tiny f32", c, &g, 1e-4, 1e-4);
    test_tiny_rules(c, &g);
    textenc_cond_destroy(c);
  }
  /* --config's text_encoder_2 configures the second tower: without it bigG runs with 1 head */
  if ((c = open_cond(ckpt, cfg1, TEXTENC_FP32, TEXTENC_FAMILY_AUTO))) {
    float *ctx = malloc(4 * 77 * 128 * 4);
    CHECK_OK(textenc_cond_encode_ids(c, g.ids_l, NULL, g.ids_g, NULL, 4, 1, &g.sizes, ctx, NULL, NULL));
    double d = 0;
    for (size_t i = 0; i < 4 * 77 * 128; i++) d = fmax(d, fabs(ctx[i] - g.crossattn[i]));
    CHECK_MSG(d > 1e-2, "bigG with 1 head matches the 4-head golden (%g)", d);
    free(ctx);
    textenc_cond_destroy(c);
  }
  /* fp16 storage; bf16 storage */
  path_in(ckpt, sizeof ckpt, "sdxl_tiny_f16.safetensors");
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("tiny"), clip_spec("tiny_gelu"), ST_F16, 1, NULL) == 0);
  if ((c = open_cond(ckpt, cfg, TEXTENC_FP16, TEXTENC_FAMILY_AUTO))) {
    compare("sdxl tiny f16 weights, fp16", c, &g, 2e-2, 2e-2);
    textenc_cond_destroy(c);
  }
  path_in(ckpt, sizeof ckpt, "sdxl_tiny_bf16.safetensors");
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("tiny"), clip_spec("tiny_gelu"), ST_BF16, 1, NULL) == 0);
  if ((c = open_cond(ckpt, cfg, TEXTENC_FP32, TEXTENC_FAMILY_AUTO))) {
    compare("sdxl tiny bf16 weights (8-bit mantissa)", c, &g, 5e-2, 5e-2);
    textenc_cond_destroy(c);
  }
  /* a diffusers folder: the same numbers as the single file */
  char root[512];
  path_in(root, sizeof root, "sdxl_diffusers");
  make_diffusers(root, true);
  CHECK_OK(textenc_detect_family(root, &f, why, sizeof why));
  CHECK(f == TEXTENC_FAMILY_SDXL);
  if ((c = open_cond(root, NULL, TEXTENC_FP32, TEXTENC_FAMILY_AUTO))) {
    compare("sdxl tiny diffusers folder", c, &g, 1e-4, 1e-4);
    textenc_cond_destroy(c);
  }
  /* malformed towers */
  path_in(ckpt, sizeof ckpt, "sdxl_bad.safetensors");
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("tiny"), clip_spec("tiny_gelu"), ST_F32, 1,
                                   &(struct ckpt_options){.reshape = "text_projection.weight"}) == 0);
  expect_error("bigG text_projection", ckpt, cfg, "'conditioner.embedders.1.model.text_projection' [64, 64] for the pooled vector, found 65 outputs");
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("tiny"), clip_spec("tiny_gelu"), ST_F32, 1,
                                   &(struct ckpt_options){.drop = "text_model.final_layer_norm.weight"}) == 0);
  expect_error("bigG without ln_final", ckpt, cfg, "'conditioner.embedders.1.model.ln_final.weight' [64] is missing");
  path_in(root, sizeof root, "sdxl_no_tok2");
  make_diffusers(root, false);
  expect_error("no tokenizer_2", root, NULL, "tokenizer_2");
  golden_close(&g);
  return 0;
}

/* SD 2.x: the OpenCLIP tower under cond_stage_model.model., penultimate layer then ln_final */
static int test_sd2_tiny(void) {
  char path[1200], ckpt[512];
  test_shared_path(path, sizeof path, "ref/goldens/sample_sd21_tiny_v.safetensors");
  struct safetensors *st;
  if (safetensors_open(path, &st)) return -1;
  path_in(ckpt, sizeof ckpt, "sd2_tiny.safetensors");
  CHECK(write_clip_checkpoint(ckpt, clip_spec("tiny_gelu"),
                              &(struct ckpt_options){.dtype = ST_F32, .prefix = "cond_stage_model.model.",
                                                     .openclip_names = true, .projection = true, .seed = 1}) == 0);
  enum textenc_family f;
  char why[256], cfg[512];
  CHECK_OK(textenc_detect_family(ckpt, &f, why, sizeof why));
  CHECK(f == TEXTENC_FAMILY_SD2);
  path_in(cfg, sizeof cfg, "config.json");
  struct textenc_cond *c = open_cond(ckpt, cfg, TEXTENC_FP32, TEXTENC_FAMILY_AUTO);
  if (c) {
    struct textenc_cond_info ci;
    textenc_cond_info(c, &ci);
    CHECK(ci.family == TEXTENC_FAMILY_SD2 && ci.towers == 1 && ci.context_dim == 64 && ci.y_dim == 0 && ci.clip_skip == 2);
    const char *prompts[2] = {"a photograph of an astronaut riding a horse", ""};
    int32_t ids[2 * 77], ref_ids[2 * 77];
    CHECK_OK(textenc_cond_tokenize(c, prompts, 2, 1, ids, NULL, NULL, NULL));
    CHECK_OK(safetensors_read_i32(st, safetensors_find(st, "tokens_cond"), ref_ids));
    CHECK_OK(safetensors_read_i32(st, safetensors_find(st, "tokens_uncond"), ref_ids + 77));
    CHECK_MSG(!memcmp(ids, ref_ids, sizeof ids), "OpenCLIP ids (padded with 0) differ");
    float ctx[2 * 77 * 64];
    size_t n;
    float *cond = test_tensor(st, "cond", &n), *uncond = test_tensor(st, "uncond", &n);
    CHECK_OK(textenc_cond_encode(c, prompts, 2, 1, NULL, ctx, NULL, NULL));
    if (cond && uncond) {
      CHECK_CLOSE("sd2 tiny penultimate + ln_final (cond)", ctx, cond, 77 * 64, 1e-4, 1e-4);
      CHECK_CLOSE("sd2 tiny penultimate + ln_final (uncond)", ctx + 77 * 64, uncond, 77 * 64, 1e-4, 1e-4);
    }
    free(cond), free(uncond);
    textenc_cond_destroy(c);
  }
  safetensors_close(st);
  return 0;
}

/* the full-size towers: CLIP-L (123M) + bigG (695M), F16 weights as the golden */
static int test_sdxl_full(void) {
  struct golden g;
  if (golden_open("ref/goldens/sdxl_cond_full.safetensors", &g)) return -1;
  char ckpt[512];
  path_in(ckpt, sizeof ckpt, "sdxl_full_f16.safetensors");
  double t0 = test_now();
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("vitl14"), clip_spec("vitbigg14"), ST_F16, 1, NULL) == 0);
  printf("  full-size SDXL text towers written in %.1f s\n", test_now() - t0);
  t0 = test_now();
  struct textenc_cond *c = open_cond(ckpt, NULL, TEXTENC_FP32, TEXTENC_FAMILY_AUTO);
  if (c) {
    compare("sdxl full f16 weights, fp32", c, &g, 3e-4, 1e-4);
    textenc_cond_destroy(c);
  }
  printf("  loaded and encoded in %.1f s\n", test_now() - t0);
  unlink(ckpt);
  golden_close(&g);
  return 0;
}

int main(void) {
  int rc = 0;
  gpu = test_gpu(&rc);
  if (!gpu) return rc;
  test_shared_path(tok, sizeof tok, "clip");
  snprintf(dir, sizeof dir, "/tmp/vkd_test_cond_%ld", (long)getpid());
  mkdir(dir, 0755);
  int missing = test_sdxl_tiny() | test_sd2_tiny();
  if (!missing && !getenv("VKD_SKIP_FULL")) missing |= test_sdxl_full();
  char out[256];
  if (test_run(out, sizeof out, "rm -rf %s", dir) != 0) test_failures++;
  test_gpu_done(gpu);
  if (missing) return test_skip("cannot read the goldens in ../shared/ref/goldens");
  return test_result("test_cond");
}
