/* The CLIP text encoder against ../shared/ref/goldens/clip_{tiny,tiny_gelu,vitl14}.safetensors,
 * with checkpoints built here from the weight rule (seed 1) in HF and OpenCLIP names, F32 and F16.
 * Tolerances (../shared/ref/README.md): fp32 path max abs error 1e-4 (tiny) and 5e-4 (ViT-L/14);
 * fp16 weights 1e-2. Then clip skip, pooled index, batching (exactly equal), prompt weighting
 * (mean restored), chunked long prompts, and bad checkpoints. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "prompt.h"
#include "test.h"
#include "textenc.h"

static char dir[256];
static struct gpu *gpu;

struct golden {
  struct safetensors *st;
  int32_t ids[8 * 77];
  int32_t eot_pos[8];
};

static float *golden_f32(struct golden *g, const char *name, size_t *n) {
  const struct st_tensor *t = safetensors_find(g->st, name);
  if (!t) {
    fprintf(stderr, "FAIL: golden tensor '%s' missing\n", name);
    test_failures++;
    return NULL;
  }
  float *v = malloc((size_t)t->numel * sizeof *v);
  safetensors_read_f32(g->st, t, v);
  *n = (size_t)t->numel;
  return v;
}

static int open_golden(const char *file, struct golden *g) {
  char path[1024];
  test_shared_path(path, sizeof path, file);
  if (safetensors_open(path, &g->st)) return -1;
  CHECK_OK(safetensors_read_i32(g->st, safetensors_find(g->st, "ids"), g->ids));
  CHECK_OK(safetensors_read_i32(g->st, safetensors_find(g->st, "eot_pos"), g->eot_pos));
  return 0;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

static struct textenc *open_model(const char *path, const char *config, enum textenc_precision prec, int clip_skip) {
  struct textenc_options o = textenc_default_options();
  o.model_path = path;
  o.config_path = config;
  o.device = gpu;
  o.precision = prec;
  o.clip_skip = clip_skip;
  char tok[1024];
  test_shared_path(tok, sizeof tok, "clip");
  o.tokenizer_path = tok;
  struct textenc *te = NULL;
  CHECK_OK(textenc_create(&o, &te));
  return te;
}

/* Encodes the golden ids and compares every output. */
static void compare(const char *label, const char *ckpt, const char *config, struct golden *g, int width, int proj,
                    enum textenc_precision prec, double tol) {
  for (int skip = 1; skip <= 2; skip++) {
    struct textenc *te = open_model(ckpt, config, prec, skip);
    if (!te) return;
    float *cond = malloc(8 * 77 * (size_t)width * 4), *pooled = malloc(8 * (size_t)width * 4);
    float *projected = proj ? malloc(8 * (size_t)proj * 4) : NULL;
    CHECK_OK(textenc_encode_ids(te, g->ids, NULL, 8, 1, cond, pooled, projected));
    size_t n;
    char what[160];
    float *ref = golden_f32(g, skip == 1 ? "last_hidden_state" : "penultimate_normed", &n);
    snprintf(what, sizeof what, "%s %s", label, skip == 1 ? "last_hidden_state" : "penultimate (clip skip 2)");
    if (ref) CHECK_CLOSE(what, cond, ref, n, tol, 0);
    free(ref);
    ref = golden_f32(g, "pooled", &n);
    snprintf(what, sizeof what, "%s pooled%s", label, skip == 2 ? " (clip skip 2)" : "");
    if (ref) CHECK_CLOSE(what, pooled, ref, n, tol, 0);
    free(ref);
    if (proj) {
      ref = golden_f32(g, "projected", &n);
      snprintf(what, sizeof what, "%s projected%s", label, skip == 2 ? " (clip skip 2)" : "");
      if (ref) CHECK_CLOSE(what, projected, ref, n, tol, 0);
      free(ref);
    }
    free(cond), free(pooled), free(projected);
    textenc_destroy(te);
  }
}

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static int test_goldens(void) {
  struct golden g;
  char ckpt[512], cfg[512], sub[512];
  /* tiny, F32, HF names, heads from a config.json beside the weights (a diffusers text_encoder/) */
  if (open_golden("ref/goldens/clip_tiny.safetensors", &g)) return -1;
  path_in(sub, sizeof sub, "tiny_te");
  mkdir(sub, 0755);
  path_in(ckpt, sizeof ckpt, "tiny_te/model.safetensors");
  path_in(cfg, sizeof cfg, "tiny_te/config.json");
  write_text(cfg, "{\"architectures\": [\"CLIPTextModel\"], \"hidden_act\": \"quick_gelu\", \"hidden_size\": 64, "
                  "\"num_attention_heads\": 4, \"num_hidden_layers\": 2}");
  struct ckpt_options o = {.dtype = ST_F32, .prefix = "", .projection = true, .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("tiny"), &o) == 0);
  compare("tiny f32 weights, fp32", sub, NULL, &g, 64, 64, TEXTENC_FP32, 1e-4);
  /* the eot position is the first EOT */
  for (int s = 0; s < 8; s++) {
    int at = -1;
    for (int t = 0; t < 77 && at < 0; t++)
      if (g.ids[s * 77 + t] == 49407) at = t;
    CHECK(at == g.eot_pos[s]);
  }
  /* tiny, F16 file, SD 1.x single-file prefix, heads from --config (text_encoder member) */
  path_in(ckpt, sizeof ckpt, "tiny_sd_f16.safetensors");
  path_in(cfg, sizeof cfg, "tiny_config.json");
  write_text(cfg, "{\"text_encoder\": {\"num_attention_heads\": 4}, \"unet\": {}}");
  o = (struct ckpt_options){.dtype = ST_F16, .prefix = "cond_stage_model.transformer.", .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("tiny"), &o) == 0);
  compare("tiny f16 weights, fp16 device", ckpt, cfg, &g, 64, 0, TEXTENC_FP16, 1e-2);
  compare("tiny f16 weights, fp32 device", ckpt, cfg, &g, 64, 0, TEXTENC_FP32, 1e-2);
  /* BF16 file */
  path_in(ckpt, sizeof ckpt, "tiny_bf16.safetensors");
  o = (struct ckpt_options){.dtype = ST_BF16, .prefix = "", .projection = true, .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("tiny"), &o) == 0);
  struct textenc *te = open_model(ckpt, cfg, TEXTENC_FP32, 1);
  if (te) {
    float *cond = malloc(8 * 77 * 64 * 4);
    CHECK_OK(textenc_encode_ids(te, g.ids, NULL, 8, 1, cond, NULL, NULL));
    size_t n;
    float *ref = golden_f32(&g, "last_hidden_state", &n);
    /* bf16 keeps 8 bits of mantissa: about 8x the fp16 weight error */
    if (ref) CHECK_CLOSE("tiny bf16 weights last_hidden_state", cond, ref, n, 5e-2, 0);
    free(ref), free(cond);
    textenc_destroy(te);
  }
  safetensors_close(g.st);

  /* tiny_gelu: OpenCLIP names (SD 2.x prefix), gelu detected from the names, zero padding */
  if (open_golden("ref/goldens/clip_tiny_gelu.safetensors", &g)) return -1;
  path_in(ckpt, sizeof ckpt, "tiny_openclip.safetensors");
  o = (struct ckpt_options){.dtype = ST_F32, .prefix = "cond_stage_model.model.", .openclip_names = true,
                            .projection = true, .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("tiny_gelu"), &o) == 0);
  compare("tiny_gelu OpenCLIP names, fp32", ckpt, cfg, &g, 64, 64, TEXTENC_FP32, 1e-4);
  safetensors_close(g.st);

  /* ViT-L/14 (SD 1.x's text encoder) */
  if (open_golden("ref/goldens/clip_vitl14.safetensors", &g)) return -1;
  path_in(ckpt, sizeof ckpt, "vitl14_f32.safetensors");
  o = (struct ckpt_options){.dtype = ST_F32, .prefix = "", .projection = true, .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("vitl14"), &o) == 0);
  compare("vitl14 f32 weights, fp32", ckpt, NULL, &g, 768, 768, TEXTENC_FP32, 5e-4);
  unlink(ckpt);
  path_in(ckpt, sizeof ckpt, "vitl14_sd_f16.safetensors");
  o = (struct ckpt_options){.dtype = ST_F16, .prefix = "cond_stage_model.transformer.", .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("vitl14"), &o) == 0);
  compare("vitl14 f16 weights, fp16 device", ckpt, NULL, &g, 768, 0, TEXTENC_FP16, 1e-2);
  unlink(ckpt);
  safetensors_close(g.st);
  return 0;
}

/* batching, weighting, chunking on the tiny model */
static void test_units(void) {
  char sub[512];
  path_in(sub, sizeof sub, "tiny_te");
  struct textenc *te = open_model(sub, NULL, TEXTENC_FP32, 1);
  if (!te) return;
  const char *prompts[8] = {"a photo of a cat", "a (red:1.5) car", "", "an astronaut riding a horse",
                            "((masterpiece)), best quality", "[blurry] landscape", "x", "café 北京"};
  const size_t D = 64, per = 77 * D;
  float *batch = malloc(8 * per * 4), *one = malloc(per * 4), *pooled8 = malloc(8 * D * 4), *pooled1 = malloc(D * 4);
  CHECK_OK(textenc_encode(te, prompts, 8, 1, batch, pooled8, NULL));
  bool same = true;
  for (int i = 0; i < 8; i++) {
    CHECK_OK(textenc_encode(te, &prompts[i], 1, 1, one, pooled1, NULL));
    same = same && !memcmp(one, batch + i * per, per * 4) && !memcmp(pooled1, pooled8 + i * D, D * 4);
  }
  CHECK_MSG(same, "a batch of 8 differs from 8 single runs");
  printf("  batch of 8 == 8 single runs: %s\n", same ? "bit-identical" : "DIFFERENT");
  /* weighting: the weighted token changes, the chunk's mean is restored */
  const char *plain = "a red car", *weighted = "a (red:1.5) car";
  float *a = malloc(per * 4), *b = malloc(per * 4);
  CHECK_OK(textenc_encode(te, &plain, 1, 1, a, NULL, NULL));
  CHECK_OK(textenc_encode(te, &weighted, 1, 1, b, NULL, NULL));
  double ma = 0, mb = 0, mw = 0, d_red = 0, d_car = 0;
  for (size_t i = 0; i < per; i++) ma += a[i], mb += b[i], mw += a[i] * (i / D == 2 ? 1.5 : 1.0);
  double k = ma / mw; /* A1111: z *= w; z *= mean(z before) / mean(z after) */
  for (size_t c = 0; c < D; c++) {
    d_red += fabs(b[2 * D + c] - a[2 * D + c] * 1.5 * k); /* token 2 = "red" */
    d_car += fabs(b[3 * D + c] - a[3 * D + c] * k);
  }
  CHECK_MSG(fabs(ma - mb) <= 1e-5 * fabs(ma) + 1e-4, "mean not restored: %g vs %g", ma / per, mb / per);
  CHECK_MSG(d_red < 1e-3 && d_car < 1e-3, "weighting: red %g car %g", d_red, d_car);
  printf("  weighting: mean %.6f -> %.6f (restored)\n", ma / per, mb / per);
  /* a long prompt: chunks encoded separately and concatenated */
  char text[2048] = "";
  for (int i = 0; i < 90; i++) strcat(text, i % 2 ? "cat " : "dog ");
  const char *longp = text;
  int chunks = 0;
  CHECK_OK(textenc_count_chunks(te, &longp, 1, &chunks));
  CHECK(chunks == 2);
  float *two = malloc(2 * per * 4);
  int32_t ids[154];
  CHECK_OK(textenc_tokenize(te, &longp, 1, 2, ids, NULL));
  CHECK_OK(textenc_encode(te, &longp, 1, 2, two, NULL, NULL));
  CHECK_OK(textenc_encode_ids(te, ids + 77, NULL, 1, 1, one, NULL, NULL));
  CHECK_MSG(!memcmp(one, two + per, per * 4), "the second chunk differs from its own encoding");
  /* the negative prompt padded to the positive's chunk count: an empty chunk */
  const char *empty = "";
  CHECK_OK(textenc_encode(te, &empty, 1, 2, two, NULL, NULL));
  CHECK_OK(textenc_encode(te, &empty, 1, 1, one, NULL, NULL));
  CHECK(!memcmp(one, two, per * 4) && !memcmp(one, two + per, per * 4));
  free(two), free(a), free(b), free(batch), free(one), free(pooled8), free(pooled1);
  /* token ids outside the vocabulary are an error, not garbage */
  int32_t bad[77];
  for (int i = 0; i < 77; i++) bad[i] = 49407;
  bad[5] = 60000;
  CHECK(textenc_encode_ids(te, bad, NULL, 1, 1, NULL, NULL, NULL) == TEXTENC_INVALID_ARGUMENT);
  CHECK(strstr(textenc_last_error(), "60000") != NULL);
  textenc_destroy(te);
}

static void expect_create_error(const char *label, const char *ckpt, const char *tok, const char *needle) {
  struct textenc_options o = textenc_default_options();
  o.model_path = ckpt;
  o.device = gpu;
  o.tokenizer_path = tok;
  o.config_path = NULL;
  struct textenc *te = NULL;
  int rc = textenc_create(&o, &te);
  CHECK_MSG(rc != TEXTENC_OK && te == NULL, "%s: created", label);
  CHECK_MSG(strstr(textenc_last_error(), needle) != NULL, "%s: '%s' lacks '%s'", label, textenc_last_error(), needle);
  printf("  %-16s -> %s\n", label, textenc_last_error());
  textenc_destroy(te);
}

static void test_bad_input(void) {
  char ckpt[512], tok[1024];
  test_shared_path(tok, sizeof tok, "clip");
  const struct clip_spec *tiny = clip_spec("tiny");
  path_in(ckpt, sizeof ckpt, "bad.safetensors");
  struct ckpt_options o = {.dtype = ST_F32, .prefix = "", .seed = 1,
                           .drop = "text_model.encoder.layers.1.mlp.fc2.weight"};
  CHECK(write_clip_checkpoint(ckpt, tiny, &o) == 0);
  expect_create_error("missing tensor", ckpt, tok, "'text_model.encoder.layers.1.mlp.fc2.weight' [64, 256] is missing");
  o.drop = NULL;
  o.reshape = "text_model.encoder.layers.0.self_attn.k_proj.weight";
  CHECK(write_clip_checkpoint(ckpt, tiny, &o) == 0);
  expect_create_error("wrong shape", ckpt, tok, "'text_model.encoder.layers.0.self_attn.k_proj.weight': expected [64, 64], got [64, 65]");
  o.reshape = NULL;
  o.poison = "text_model.encoder.layers.1.layer_norm2.weight";
  CHECK(write_clip_checkpoint(ckpt, tiny, &o) == 0);
  expect_create_error("NaN weights", ckpt, tok, "NaN");
  o.poison = NULL;
  CHECK(write_clip_checkpoint(ckpt, tiny, &o) == 0);
  expect_create_error("bad tokenizer", ckpt, "/nonexistent/tokenizer", "/nonexistent/tokenizer");
  char notclip[512];
  path_in(notclip, sizeof notclip, "notclip.safetensors");
  struct st_writer *w;
  float v = 1;
  st_writer_create(&w);
  st_writer_add(w, "model.diffusion_model.out.2.bias", ST_F32, 1, (int64_t[]){1}, &v);
  st_writer_finish(w, notclip);
  st_writer_destroy(w);
  expect_create_error("no text encoder", notclip, tok, "no CLIP text encoder");
  expect_create_error("missing file", "/nonexistent/model.safetensors", tok, "/nonexistent/model.safetensors");
}

int main(void) {
  int rc = 0;
  gpu = test_gpu(&rc);
  if (!gpu) return rc;
  snprintf(dir, sizeof dir, "/tmp/vkd_test_clip_%ld", (long)getpid());
  mkdir(dir, 0755);
  int g = test_goldens();
  if (g == 0) {
    test_units();
    test_bad_input();
  }
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) test_failures++;
  test_gpu_done(gpu);
  if (g < 0) return test_skip("cannot read the goldens in ../shared/ref/goldens");
  return test_result("test_clip");
}
