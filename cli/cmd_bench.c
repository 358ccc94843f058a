/* vkdiffusion bench: speed measurements (never part of a test's pass/fail). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "cli.h"
#include "half.h"
#include "ops.h"
#include "prompt.h"
#include "textenc.h"
#include "textenc_internal.h"
#include "clip_config.h"
#include "rng.h"
#include "safetensors.h"
#include "unet.h"
#include "vae.h"
#include "clip_vision.h"
#include "sd_model.h"
#include "unet_config.h"

static void fill_random(float *p, size_t n, uint32_t seed) {
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = ((s >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
  }
}

static enum status upload_random(struct gpu *g, const struct gpu_tensor *t, uint32_t seed) {
  size_t n = (size_t)gpu_tensor_numel(t);
  float *f = malloc(n * sizeof *f);
  if (!f) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  fill_random(f, n, seed);
  enum status st;
  if (t->dtype == DT_F16) {
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) {
      free(f);
      return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    }
    for (size_t i = 0; i < n; i++) h[i] = half_from_float(f[i]);
    st = gpu_upload(g, t, h, n * 2);
    free(h);
  } else {
    st = gpu_upload(g, t, f, n * 4);
  }
  free(f);
  return st;
}

/* Times `reps` repetitions recorded in one command buffer (after one warm-up); seconds per op. */
typedef enum status (*bench_fn)(struct gpu *g, void *ctx);
static enum status time_op(struct gpu *g, bench_fn fn, void *ctx, int reps, double *seconds) {
  enum status st;
  for (int pass = 0; pass < 2; pass++) {
    int n = pass ? reps : 1;
    double t0 = bench_now();
    if ((st = gpu_begin(g))) return st;
    for (int r = 0; r < n && !st; r++) st = fn(g, ctx);
    if (st) {
      gpu_submit(g);
      return st;
    }
    if ((st = gpu_submit(g))) return st;
    *seconds = (bench_now() - t0) / n;
  }
  return STATUS_OK;
}

struct linear_ctx {
  struct gpu_tensor x, w, b, y;
  enum linear_variant variant;
};
static enum status run_linear(struct gpu *g, void *c) {
  struct linear_ctx *l = c;
  return op_linear_variant(g, &l->x, &l->w, &l->b, &l->y, ACT_NONE, l->variant);
}

struct attn_ctx {
  struct gpu_tensor q, k, v, o;
  int heads;
  bool causal;
  enum attention_variant variant;
};
static enum status run_attention(struct gpu *g, void *c) {
  struct attn_ctx *a = c;
  int64_t d = a->q.shape[2] / a->heads;
  return op_attention_variant(g, &a->q, &a->k, &a->v, &a->o, a->heads, a->causal, 1.0f / sqrtf((float)d), a->variant);
}

struct conv_ctx {
  struct gpu_tensor x, w, b, y, scratch;
  int kernel;
  enum conv_variant variant;
};
static enum status run_conv(struct gpu *g, void *c) {
  struct conv_ctx *v = c;
  return op_conv2d_variant(g, &v->x, &v->w, &v->b, &v->y, v->kernel, 1, v->kernel / 2, false, &v->scratch, v->variant);
}

/* Convolutions at the U-Net's and the VAE's shapes (C in, C out), each algorithm that applies on
 * this device class: GFLOP/s counts the direct convolution's 2 * k * k * C multiply-adds per
 * output, so the rows compare wall time. */
static int bench_convs(struct gpu *g, double peak) {
  struct {
    int64_t n, c, h, w;
    int k;
    const char *what;
  } cv[] = {{2, 64, 16, 16, 3, "demo U-Net, CFG"},      {2, 320, 64, 64, 3, "SD U-Net 512^2, CFG"},
            {2, 640, 32, 32, 3, "SD U-Net 512^2, CFG"}, {2, 1280, 16, 16, 3, "SD U-Net 512^2, CFG"},
            {2, 1280, 8, 8, 3, "SD U-Net 512^2, CFG"},  {2, 320, 32, 32, 3, "SD U-Net 256^2, CFG"},
            {2, 640, 16, 16, 3, "SD U-Net 256^2, CFG"}, {1, 1280, 16, 16, 3, "SD U-Net 512^2, no CFG"},
            {1, 512, 64, 64, 3, "SD VAE 512^2"},
            {1, 256, 256, 256, 3, "SD VAE 512^2"},      {1, 128, 512, 512, 3, "SD VAE 512^2"},
            {2, 320, 64, 64, 1, "SD U-Net 512^2 proj, CFG"}, {1, 512, 64, 64, 1, "SD VAE 512^2 q/k/v"}};
  const int64_t scratch = 8 << 20; /* the U-Net's */
  const char *names[] = {"im2col", "winograd", "implicit"};
  const enum conv_variant vs[] = {CONV_IM2COL, CONV_WINOGRAD, CONV_IMPLICIT};
  for (size_t i = 0; i < sizeof cv / sizeof *cv; i++) { /* one set of operands, each algorithm on it */
    struct gpu_arena *a = NULL;
    struct conv_ctx c = {0};
    int64_t n = cv[i].n, ch = cv[i].c, h = cv[i].h, w = cv[i].w, k = cv[i].k, kp = conv_weight_cols(ch, cv[i].k);
    c.kernel = cv[i].k;
    VkDeviceSize bytes = 2 * gpu_aligned_size(g, n * ch * h * w * 4) + gpu_aligned_size(g, ch * kp * 2) +
                         gpu_aligned_size(g, ch * 4) + gpu_aligned_size(g, scratch * 4);
    enum status st = gpu_arena_create(g, bytes, "bench", &a);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 4, (int64_t[]){n, ch, h, w}, &c.x);
    if (!st) st = gpu_arena_alloc(a, DT_F16, 2, (int64_t[]){ch, kp}, &c.w);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){ch}, &c.b);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 4, (int64_t[]){n, ch, h, w}, &c.y);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){scratch}, &c.scratch);
    if (!st) st = upload_random(g, &c.x, 7);
    if (!st) st = upload_random(g, &c.w, 8);
    if (!st) st = upload_random(g, &c.b, 9);
    double flops = 2.0 * k * k * ch * ch * h * w * n;
    for (int v = 0; v < 3 && !st; v++) {
      if (k != 3 && vs[v] == CONV_WINOGRAD) continue;
      c.variant = vs[v];
      double s = 0;
      if ((st = time_op(g, run_conv, &c, flops > 2e10 ? 1 : 3, &s)) == STATUS_UNSUPPORTED) { /* not on this class */
        st = STATUS_OK;
        continue;
      }
      if (st) break;
      double gf = flops / s * 1e-9;
      char label[80];
      snprintf(label, sizeof label, "conv%lldx%lld %s %lldx%lldx%lldx%lld (%s)", (long long)k, (long long)k, names[v],
               (long long)n, (long long)ch, (long long)h, (long long)w, cv[i].what);
      printf("%-54s %10.3f %10.2f %7.1f%%\n", label, s * 1e3, gf, 100 * gf / peak);
    }
    gpu_arena_destroy(a);
    if (st) return cli_fail("bench", "conv2d");
  }
  return 0;
}

static int bench_ops(struct gpu *g, double peak) {
  struct {
    int64_t m, n, k;
    enum dtype wdt;
    const char *what;
  } lin[] = {
      {77, 768, 768, DT_F16, "CLIP q/k/v/out"}, {77, 3072, 768, DT_F16, "CLIP fc1"},
      {77, 768, 3072, DT_F16, "CLIP fc2"},      {1024, 1024, 1024, DT_F16, "1024^3"},
      {77, 768, 768, DT_F32, "CLIP q/k/v/out"}, {1024, 1024, 1024, DT_F32, "1024^3"},
  };
  double peak16 = 0;
  if (bench_peak16(g, &peak16)) {
    cli_fail("bench", "fp16 peak");
    return 1;
  }
  char p16[96];
  if (peak16 > 0) snprintf(p16, sizeof p16, "fp16 FMA peak %.1f GFLOP/s", peak16);
  else snprintf(p16, sizeof p16, "no fp16 arithmetic");
  printf("device: %s (%s); measured fp32 FMA peak %.1f GFLOP/s, %s (all kernels compute in fp32 and are rated "
         "against the fp32 peak; f16 is storage)\n", gpu_info(g)->name, gpu_info(g)->type, peak, p16);
  printf("each kernel variant, whichever this device would pick (VKDIFFUSION_KERNELS picks for the model runs)\n\n");
  printf("%-54s %10s %10s %8s\n", "op", "ms", "GFLOP/s", "% peak");
  const enum linear_variant lvs[] = {LINEAR_TILED, LINEAR_SHARED};
  const char *lv_names[] = {"tiled", "shared"};
  for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) { /* one set of operands, each kernel on it */
    struct gpu_arena *a = NULL;
    struct linear_ctx c = {0};
    int64_t m = lin[i].m, n = lin[i].n, k = lin[i].k;
    VkDeviceSize bytes = gpu_aligned_size(g, m * k * 4) + gpu_aligned_size(g, n * k * 4) +
                         gpu_aligned_size(g, n * 4) + gpu_aligned_size(g, m * n * 4);
    enum status st = gpu_arena_create(g, bytes, "bench", &a);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 2, (int64_t[]){m, k}, &c.x);
    if (!st) st = gpu_arena_alloc(a, lin[i].wdt, 2, (int64_t[]){n, k}, &c.w);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 1, (int64_t[]){n}, &c.b);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 2, (int64_t[]){m, n}, &c.y);
    if (!st) st = upload_random(g, &c.x, 1);
    if (!st) st = upload_random(g, &c.w, 2);
    if (!st) st = upload_random(g, &c.b, 3);
    for (int v = 0; v < 2 && !st; v++) {
      c.variant = lvs[v];
      double s = 0;
      if ((st = time_op(g, run_linear, &c, m * n * k > 100000000 ? 3 : 10, &s))) break;
      double gf = 2.0 * m * n * k / s * 1e-9;
      char label[96];
      snprintf(label, sizeof label, "linear %s %lldx%lldx%lld %s (%s)", lv_names[v], (long long)m, (long long)n,
               (long long)k, dtype_name(lin[i].wdt), lin[i].what);
      printf("%-54s %10.3f %10.2f %7.1f%%\n", label, s * 1e3, gf, 100 * gf / peak);
    }
    gpu_arena_destroy(a);
    if (st) return cli_fail("bench", "linear");
  }
  struct {
    int64_t t, tk, width;
    int heads;
    bool causal;
    const char *what;
  } att[] = {{77, 77, 768, 12, true, "CLIP"}, {4096, 4096, 320, 8, false, "U-Net 512^2 self"},
             {4096, 77, 320, 8, false, "U-Net 512^2 cross"}};
  const enum attention_variant avs[] = {ATTN_VEC4, ATTN_FLASH};
  const char *av_names[] = {"vec4", "flash"};
  for (size_t i = 0; i < sizeof att / sizeof *att; i++) {
    struct gpu_arena *a = NULL;
    struct attn_ctx c = {.heads = att[i].heads, .causal = att[i].causal};
    int64_t t = att[i].t, tk = att[i].tk, w = att[i].width;
    VkDeviceSize bytes = 2 * gpu_aligned_size(g, t * w * 4) + 2 * gpu_aligned_size(g, tk * w * 4);
    enum status st = gpu_arena_create(g, bytes, "bench", &a);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 3, (int64_t[]){1, t, w}, &c.q);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 3, (int64_t[]){1, tk, w}, &c.k);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 3, (int64_t[]){1, tk, w}, &c.v);
    if (!st) st = gpu_arena_alloc(a, DT_F32, 3, (int64_t[]){1, t, w}, &c.o);
    if (!st) st = upload_random(g, &c.q, 4);
    if (!st) st = upload_random(g, &c.k, 5);
    if (!st) st = upload_random(g, &c.v, 6);
    for (int v = 0; v < 2 && !st; v++) {
      c.variant = avs[v];
      double s = 0;
      if ((st = time_op(g, run_attention, &c, t > 1000 ? 1 : 10, &s))) break;
      double gf = 4.0 * t * tk * w * (att[i].causal ? 0.5 : 1.0) / s * 1e-9;
      char label[96];
      snprintf(label, sizeof label, "attention %s T=%lld Tk=%lld (%s)", av_names[v], (long long)t, (long long)tk,
               att[i].what);
      printf("%-54s %10.3f %10.2f %7.1f%%\n", label, s * 1e3, gf, 100 * gf / peak);
    }
    gpu_arena_destroy(a);
    if (st) return cli_fail("bench", "attention");
  }
  return bench_convs(g, peak);
}

static int bench_tokenize(const char *tok_path) {
  struct tokenizer *tok;
  if (tokenizer_find(tok_path, NULL, &tok)) return cli_fail("bench", NULL);
  const char *para =
      "A breathtaking ultra-detailed matte painting of an ancient elven city built into giant trees, glowing "
      "lanterns, waterfalls, mist, volumetric god rays, golden hour. The quick brown fox jumps over the lazy dog; "
      "it's 3.14 o'clock and we've got 1,000,000 reasons to photograph an astronaut riding a horse on Mars! ";
  size_t plen = strlen(para), n = 1 << 20; /* 1 MiB of English text */
  char *text = malloc(n + 1);
  if (!text) return cli_fail("bench", "out of memory");
  for (size_t i = 0; i < n; i++) text[i] = para[i % plen];
  text[n] = 0;
  struct token_list ids = {0};
  int rc = 0;
  for (int pass = 0; pass < 2 && !rc; pass++) { /* pass 0 warms the word cache */
    ids.n = 0;
    double t0 = bench_now();
    if (tokenizer_encode(tok, text, n, &ids)) rc = cli_fail("bench", NULL);
    double t = bench_now() - t0;
    if (!rc)
      printf("tokenize: %zu bytes -> %zu tokens in %.1f ms: %.2f M tokens/s, %.1f MB/s (%s cache)\n", n, ids.n,
             t * 1e3, ids.n / t * 1e-6, n / t * 1e-6, pass ? "warm" : "cold");
  }
  token_list_free(&ids);
  free(text);
  tokenizer_destroy(tok);
  return rc;
}

/* bench encode: the model's whole conditioner (SD 1.x / 2.x one tower, SDXL both), 1 and 8 prompts */
static int bench_encode(int argc, char **argv, long device) {
  struct textenc_options o = textenc_default_options();
  for (int i = 1; i < argc; i++) {
    const char *v;
    if (!strcmp(argv[i], "--model") && (v = cli_value(argc, argv, &i))) o.model_path = v;
    else if (!strcmp(argv[i], "--tokenizer") && (v = cli_value(argc, argv, &i))) o.tokenizer_path = v;
    else if (!strcmp(argv[i], "--config") && (v = cli_value(argc, argv, &i))) o.config_path = v;
    else if (!strcmp(argv[i], "--family") && (v = cli_value(argc, argv, &i))) o.family = textenc_parse_family(v);
    else if (!strcmp(argv[i], "--precision") && (v = cli_value(argc, argv, &i))) o.precision = strcmp(v, "fp32") ? TEXTENC_FP16 : TEXTENC_FP32;
    else if (!strcmp(argv[i], "--device") && (v = cli_value(argc, argv, &i)) && cli_int("--device", v, 0, 64, &device)) ;
    else {
      fprintf(stderr, "vkdiffusion bench encode: bad option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!o.model_path) {
    fprintf(stderr, "vkdiffusion bench encode: --model is required\n");
    return 2;
  }
  double peak = 0;
  struct gpu *g = bench_open(device, &peak);
  if (!g) return 1;
  o.device = g;
  struct textenc_cond *c;
  double t0 = bench_now();
  if (textenc_cond_create(&o, &c)) return cli_finish_gpu(g, cli_fail("bench", NULL));
  double load = bench_now() - t0;
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  double flops = 0, bytes = 0;
  for (int k = 0; k < ci.towers; k++) {
    const struct textenc_info *ti = &ci.tower[k];
    double T = ti->context, D = ti->width, M = ti->mlp;
    /* per layer: q, k, v, out (4 T D^2), MLP (2 T D M), q k^T and attention v (2 T^2 D) multiply-adds */
    flops += 2 * ti->layers * (T * (4 * D * D + 2 * D * M) + 2 * T * T * D) + 2 * D * ti->projection_dim;
    bytes += (double)ti->weight_bytes;
    printf("tower %d: %d layers, width %d, %s weights (%.1f MB) on %s\n", k, ti->layers, ti->width,
           ti->fp16 ? "fp16" : "fp32", ti->weight_bytes / 1e6, ti->device_name);
  }
  printf("%s conditioner: %.0f MB of weights, loaded in %.1f s; %.2f GFLOP per prompt; FMA peak %.1f GFLOP/s\n",
         textenc_family_name(ci.family), bytes / 1e6, load, flops * 1e-9, peak);
  int32_t *ids = malloc(8 * 77 * sizeof *ids), *ids2 = malloc(8 * 77 * sizeof *ids2);
  float *ctx = malloc(8 * 77 * (size_t)ci.context_dim * sizeof *ctx), *y = malloc(8 * (size_t)(ci.y_dim + 1) * sizeof *y);
  const char *prompt = "a photograph of an astronaut riding a horse, highly detailed, 8k";
  int rc = 0;
  if (!ids || !ids2 || !ctx || !y || textenc_cond_tokenize(c, &prompt, 1, 1, ids, NULL, ids2, NULL)) rc = cli_fail("bench", NULL);
  for (int i = 1; i < 8 && !rc; i++) memcpy(ids + i * 77, ids, 77 * sizeof *ids), memcpy(ids2 + i * 77, ids2, 77 * sizeof *ids2);
  double per1 = 0;
  const int batches[] = {1, 8};
  for (int b = 0; b < 2 && !rc; b++) {
    int n = batches[b], reps = n == 1 ? 3 : 2;
    if (textenc_cond_encode_ids(c, ids, NULL, ids2, NULL, n, 1, NULL, ctx, NULL, ci.y_dim ? y : NULL)) { /* warm-up */
      rc = cli_fail("bench", NULL);
      break;
    }
    double s0 = bench_now();
    for (int r = 0; r < reps && !rc; r++)
      if (textenc_cond_encode_ids(c, ids, NULL, ids2, NULL, n, 1, NULL, ctx, NULL, ci.y_dim ? y : NULL))
        rc = cli_fail("bench", NULL);
    double per = (bench_now() - s0) / reps / n;
    if (n == 1) per1 = per;
    if (!rc)
      printf("%d prompt%s: %8.1f ms per prompt (%.2f s for the batch), %6.2f GFLOP/s (%4.1f%% of peak)\n", n,
             n > 1 ? "s" : " ", per * 1e3, per * n, flops / per * 1e-9, 100 * flops / per * 1e-9 / peak);
    if (!rc && n > 1) printf("batch %d throughput: %.2fx batch 1\n", n, per1 / per);
  }
  printf("peak device memory: %.1f MB (weights, activations for 8 prompts, the staging buffer where transfers stage)\n",
         gpu_memory_peak(g) / 1e6);
  free(ids), free(ids2), free(ctx), free(y);
  textenc_cond_destroy(c);
  return cli_finish_gpu(g, rc);
}

/* bench unet / vae: --model CKPT --size 256|512 [--config FILE] [--precision] */
static int bench_model(const char *what, int argc, char **argv, long device) {
  const char *model = NULL, *config = NULL;
  long size = 512, steps = 2, batch = 2;
  bool fp16 = true;
  for (int i = 1; i < argc; i++) {
    const char *v = cli_value(argc, argv, &i);
    if (!v) return 2;
    if (!strcmp(argv[i - 1], "--model")) model = v;
    else if (!strcmp(argv[i - 1], "--config")) config = v;
    else if (!strcmp(argv[i - 1], "--size") && cli_int("--size", v, 64, 2048, &size)) ;
    else if (!strcmp(argv[i - 1], "--runs") && cli_int("--runs", v, 0, 100, &steps)) ;
    else if (!strcmp(argv[i - 1], "--batch") && cli_int("--batch", v, 1, 2, &batch)) ;
    else if (!strcmp(argv[i - 1], "--precision")) fp16 = strcmp(v, "fp32") != 0;
    else if (!strcmp(argv[i - 1], "--device") && cli_int("--device", v, 0, 64, &device)) ;
    else {
      fprintf(stderr, "vkdiffusion bench %s: bad option '%s'\n", what, argv[i - 1]);
      return 2;
    }
  }
  if (!model) {
    fprintf(stderr, "vkdiffusion bench %s: --model is required\n", what);
    return 2;
  }
  double peak = 0;
  struct gpu *g = bench_open(device, &peak);
  if (!g) return 1;
  struct safetensors *st;
  if (safetensors_open(model, &st)) return cli_finish_gpu(g, cli_fail("bench", NULL));
  int rc = 0, lat = (int)size / 8;
  struct rng r;
  rng_seed(&r, 1);
  double t0 = bench_now();
  if (!strcmp(what, "unet")) {
    struct unet_options uo = {.fp16 = fp16};
    struct unet *u = NULL;
    if (unet_config_heads(config, uo.heads, &uo.heads_all) || unet_load(g, st, &uo, &u)) {
      rc = cli_fail("bench", NULL);
    } else {
      struct unet_info info;
      unet_get_info(u, &info);
      double load = bench_now() - t0;
      size_t nx = 2 * 4 * (size_t)lat * lat, nc = 2 * 77 * (size_t)info.context_dim;
      size_t ny = 2 * (size_t)(info.adm_in_channels ? info.adm_in_channels : 1);
      float *x = malloc(nx * 4), *ctx = malloc(nc * 4), *eps = malloc(nx * 4), *yv = malloc(ny * 4), t[2] = {500, 500};
      rng_randn(&r, x, nx);
      rng_randn(&r, ctx, nc);
      rng_randn(&r, yv, ny);
      double gf = unet_gflop(u, (int)batch, lat, lat, 77), best = 1e30;
      printf("U-Net: %lld parameters, %s weights %.0f MB (loaded in %.1f s) on %s; FMA peak %.1f GFLOP/s\n",
             (long long)info.parameters, fp16 ? "fp16" : "fp32", unet_weight_bytes(u) / 1e6, load, gpu_info(g)->name, peak);
      for (int k = 0; k <= steps && !rc; k++) { /* the first run records pipelines: not counted (unless --runs 0) */
        double s0 = bench_now();
        if (unet_forward(u, x, t, ctx, info.adm_in_channels ? yv : NULL, (int)batch, lat, lat, 77, eps, NULL))
          rc = cli_fail("bench", NULL);
        double s = bench_now() - s0;
        if ((k > 0 || steps == 0) && s < best) best = s;
        if (!rc) printf("  run %d: %.2f s\n", k, s);
      }
      if (!rc)
        printf("U-Net at %ldx%ld (latent %dx%d), batch %ld%s: %.2f s per evaluation%s, %.0f GFLOP, %.2f GFLOP/s "
               "(%.1f%% of peak); activations %.0f MB, peak device memory %.0f MB\n", size, size, lat, lat, batch,
               batch == 2 ? " (a CFG step)" : " (one evaluation)", best, steps ? "" : " (first run: with pipeline creation)",
               gf, gf / best, 100 * gf / best / peak, unet_activation_bytes(u) / 1e6, gpu_memory_peak(g) / 1e6);
      free(x), free(ctx), free(eps), free(yv);
    }
    unet_destroy(u);
  } else {
    struct vae *v = NULL;
    if (vae_load(g, st, &(struct vae_options){.fp16 = fp16}, &v)) {
      rc = cli_fail("bench", NULL);
    } else {
      size_t nz = 4 * (size_t)lat * lat;
      float *z = malloc(nz * 4), *img = malloc(3 * (size_t)size * size * 4);
      rng_randn(&r, z, nz);
      for (size_t i = 0; i < nz; i++) z[i] *= 0.18215f;
      double gf = vae_gflop(v, 1, lat, lat), best = 1e30;
      for (int k = 0; k <= steps && !rc; k++) {
        double s0 = bench_now();
        if (vae_decode(v, z, 1, lat, lat, VAE_TILING_AUTO, img)) rc = cli_fail("bench", NULL);
        double s = bench_now() - s0;
        if (k > 0 && s < best) best = s;
        if (!rc) printf("  run %d: %.2f s%s\n", k, s, vae_last_tiled(v) ? " (tiled)" : "");
      }
      if (!rc)
        printf("VAE decode %ldx%ld: %.2f s, %.0f GFLOP, %.2f GFLOP/s (%.1f%% of peak), %s; weights %.0f MB, "
               "activations %.0f MB\n", size, size, best, gf, gf / best, 100 * gf / best / peak,
               vae_last_tiled(v) ? "tiled" : "whole", vae_weight_bytes(v) / 1e6, vae_activation_bytes(v) / 1e6);
      free(z), free(img);
    }
    vae_destroy(v);
  }
  printf("peak device memory: %.0f MB\n", gpu_memory_peak(g) / 1e6);
  safetensors_close(st);
  return cli_finish_gpu(g, rc);
}

/* bench classify: images/s of the vision tower at batch 1 and 16 */
static int bench_classify(int argc, char **argv, long device) {
  struct textenc_options o = textenc_default_options();
  for (int i = 1; i < argc; i++) {
    const char *v = cli_value(argc, argv, &i);
    if (!v) return 2;
    if (!strcmp(argv[i - 1], "--model")) o.model_path = v;
    else if (!strcmp(argv[i - 1], "--config")) o.config_path = v;
    else if (!strcmp(argv[i - 1], "--precision")) o.precision = strcmp(v, "fp32") ? TEXTENC_FP16 : TEXTENC_FP32;
    else {
      fprintf(stderr, "vkdiffusion bench classify: bad option '%s'\n", argv[i - 1]);
      return 2;
    }
  }
  if (!o.model_path) {
    fprintf(stderr, "vkdiffusion bench classify: --model is required\n");
    return 2;
  }
  double peak = 0;
  struct gpu *g = bench_open(device, &peak);
  if (!g) return 1;
  o.device = g;
  struct safetensors *st;
  struct clip_vision *vm = NULL;
  int heads = 0;
  if (safetensors_open(o.model_path, &st)) return cli_finish_gpu(g, cli_fail("bench", NULL));
  if (clip_vision_heads(o.config_path, &heads) || clip_vision_load(g, st, o.precision == TEXTENC_FP16, heads, -1, &vm)) {
    safetensors_close(st);
    return cli_finish_gpu(g, cli_fail("bench", NULL));
  }
  const struct clip_vision_config *c = clip_vision_config(vm);
  int S = c->image, W = c->width, P = c->proj, rc = 0;
  double T = c->tokens, grid2 = T - 1;
  double flops = c->layers * (2 * T * (4.0 * W * W + 2.0 * W * c->mlp) + 4 * T * T * W) + 2 * grid2 * 3.0 * c->patch * c->patch * W +
                 2.0 * W * P;
  size_t per = 3 * (size_t)S * S;
  float *px = malloc(16 * per * 4), *emb = malloc(16 * (size_t)(P ? P : 1) * 4);
  struct rng r;
  rng_seed(&r, 3);
  rng_randn(&r, px, 16 * per);
  printf("vision tower: image %d, patch %d, width %d, %d layers, projection %d (%.2f GFLOP per image) on %s; "
         "FMA peak %.1f GFLOP/s\n", S, c->patch, W, c->layers, P, flops * 1e-9, gpu_info(g)->name, peak);
  const int batches[] = {1, 16};
  for (int b = 0; b < 2 && !rc; b++) {
    int n = batches[b], reps = n == 1 ? 3 : 1;
    if (clip_vision_forward(vm, px, n, NULL, emb, NULL)) rc = cli_fail("bench", NULL); /* warm-up */
    double t0 = bench_now();
    for (int k = 0; k < reps && !rc; k++)
      if (clip_vision_forward(vm, px, n, NULL, emb, NULL)) rc = cli_fail("bench", NULL);
    double per_img = (bench_now() - t0) / reps / n;
    if (!rc)
      printf("batch %2d: %.3f s per image, %.2f images/s, %.1f GFLOP/s (%.1f%% of peak)\n", n, per_img, 1 / per_img,
             flops / per_img * 1e-9, 100 * flops / per_img * 1e-9 / peak);
  }
  free(px), free(emb);
  clip_vision_destroy(vm);
  safetensors_close(st);
  return cli_finish_gpu(g, rc);
}

/* bench generate: txt2img of one image (encode, every step, decode), timed through its progress callback */
struct phase_times {
  double start, enc, first_step, steps_sum, dec, last;
  int n;
};

static int time_phase(enum sd_phase phase, int image, int step, int steps, void *user) {
  struct phase_times *t = user;
  double now = bench_now(), dt = now - t->last;
  t->last = now;
  if (step == 0) return 0; /* a phase starts */
  if (phase == SD_PHASE_ENCODE) t->enc = dt;
  else if (phase == SD_PHASE_DECODE) t->dec = dt;
  else if (step == 1) t->first_step = dt;
  else t->steps_sum += dt, t->n++;
  if (phase == SD_PHASE_SAMPLE) printf("  step %d/%d: %.2f s\n", step, steps, dt);
  (void)image;
  return 0;
}

static int bench_generate(int argc, char **argv, long device) {
  struct sd_model_options mo = sd_model_default_options();
  mo.device_index = (int)device;
  long size = 512, steps = 20;
  for (int i = 1; i < argc; i++) {
    const char *v = cli_value(argc, argv, &i);
    if (!v) return 2;
    const char *a = argv[i - 1];
    if (!strcmp(a, "--model")) mo.model_path = v;
    else if (!strcmp(a, "--config")) mo.config_path = v;
    else if (!strcmp(a, "--tokenizer")) mo.tokenizer_path = v;
    else if (!strcmp(a, "--size") && cli_int(a, v, 64, 2048, &size)) ;
    else if (!strcmp(a, "--steps") && cli_int(a, v, 1, 1000, &steps)) ;
    else if (!strcmp(a, "--precision")) mo.precision = strcmp(v, "fp32") ? SD_FP16 : SD_FP32;
    else {
      fprintf(stderr, "vkdiffusion bench generate: bad option '%s'\n", a);
      return 2;
    }
  }
  if (!mo.model_path) {
    fprintf(stderr, "vkdiffusion bench generate: --model is required\n");
    return 2;
  }
  double t0 = bench_now();
  struct sd_model *m;
  if (sd_model_create(&mo, &m)) return cli_fail("bench", NULL);
  double t_load = bench_now() - t0;
  struct phase_times pt = {.last = bench_now()};
  struct txt2img_params p = txt2img_default_params();
  p.prompt = "a photograph of an astronaut riding a horse";
  p.negative_prompt = "blurry";
  p.seed = 42;
  p.steps = (int)steps;
  p.width = p.height = (int)size;
  p.progress = time_phase;
  p.user = &pt;
  pt.start = pt.last = bench_now();
  int rc = txt2img(m, &p, NULL, NULL) ? cli_fail("bench", NULL) : 0;
  double total = bench_now() - pt.start;
  if (!rc) {
    printf("generate %ldx%ld, %ld steps (euler_a, CFG batch 2): load %.1f s, encode %.2f s, sampling %.1f s "
           "(first step %.2f s, then %.2f s per step), decode %.1f s, total %.1f s (without loading)\n",
           size, size, steps, t_load, pt.enc, pt.first_step + pt.steps_sum, pt.first_step,
           pt.n ? pt.steps_sum / pt.n : pt.first_step, pt.dec, total);
    printf("peak device memory: %.0f MB\n", gpu_memory_peak(sd_model_gpu(m)) / 1e6);
  }
  rc = cli_report_gpu(sd_model_gpu(m), rc);
  sd_model_destroy(m);
  return rc;
}

int cmd_bench(int argc, char **argv) {
  long device = -1;
  const char *what = NULL;
  int first_rest = argc;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i]) && !what) {
      printf("usage: vkdiffusion bench ops [--device N]\n"
             "       vkdiffusion bench tokenize [--tokenizer PATH]\n"
             "       vkdiffusion bench encode --model PATH [--family sd1|sd2|sdxl] [--config FILE] [--precision fp16|fp32]\n"
             "       vkdiffusion bench unet --model CKPT [--size 256|512|1024] [--batch 1|2] [--config FILE] [--runs N]\n"
             "       vkdiffusion bench vae --model CKPT [--size 256|512] [--runs N]\n"
             "       vkdiffusion bench generate --model CKPT [--size 512] [--steps 20] [--config FILE]\n"
             "       vkdiffusion bench classify --model CLIP [--config FILE] [--precision fp16|fp32]\n\n"
             "ops: every kernel variant of linear (tiled, shared) at the CLIP shapes and 1024^3, attention\n"
             "(vec4, flash) at T=77 and T=4096, and 3x3 and 1x1 convolutions (im2col, winograd, implicit\n"
             "GEMM, where each applies on this device class) at the U-Net's and the VAE's shapes: time,\n"
             "GFLOP/s and the ratio to the device's fp32 FMA peak measured by a peak-FLOPs shader\n"
             "(convolutions count the direct convolution's FLOPs).\n");
      return 0;
    }
    if (!what && argv[i][0] != '-') {
      what = argv[i];
      first_rest = i + 1;
      break;
    }
    if (!strcmp(argv[i], "--device")) {
      const char *v = cli_value(argc, argv, &i);
      if (!v || !cli_int("--device", v, 0, 64, &device)) return 2;
    } else {
      fprintf(stderr, "vkdiffusion bench: unknown option '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!what) {
    fprintf(stderr, "vkdiffusion bench: what to measure? (ops, tokenize, encode, unet, vae, generate, classify)\n");
    return 2;
  }
  int rest_argc = argc - first_rest + 1;
  char **rest = argv + first_rest - 1; /* rest[0] = the benchmark's name */
  if (!strcmp(what, "ops")) {
    for (int i = 1; i < rest_argc; i++) {
      if (!strcmp(rest[i], "--device")) {
        const char *v = cli_value(rest_argc, rest, &i);
        if (!v || !cli_int("--device", v, 0, 64, &device)) return 2;
      } else {
        fprintf(stderr, "vkdiffusion bench ops: unknown option '%s'\n", rest[i]);
        return 2;
      }
    }
    double peak = 0;
    struct gpu *g = bench_open(device, &peak);
    if (!g) return 1;
    return cli_finish_gpu(g, bench_ops(g, peak));
  }
  if (!strcmp(what, "tokenize")) {
    const char *tok = NULL;
    for (int i = 1; i < rest_argc; i++) {
      if (!strcmp(rest[i], "--tokenizer") && (tok = cli_value(rest_argc, rest, &i))) continue;
      fprintf(stderr, "vkdiffusion bench tokenize: bad option '%s'\n", rest[i]);
      return 2;
    }
    return bench_tokenize(tok);
  }
  if (!strcmp(what, "encode")) return bench_encode(rest_argc, rest, device);
  if (!strcmp(what, "unet") || !strcmp(what, "vae")) return bench_model(what, rest_argc, rest, device);
  if (!strcmp(what, "generate")) return bench_generate(rest_argc, rest, device);
  if (!strcmp(what, "classify")) return bench_classify(rest_argc, rest, device);
  fprintf(stderr, "vkdiffusion bench: unknown benchmark '%s' (ops, tokenize, encode, unet, vae, generate, classify)\n", what);
  return 2;
}
