/* vkdiffusion generate end to end on the tiny random checkpoint (weight rule): PNGs written with
 * their parameters (read back by `info`), bit-identical reruns, a batch file with one bad job
 * (reported, the others still run, exit 1), --noise/--save-latents against the sampler golden.
 * The job-file parser alone is test_job_file. */
#define _DEFAULT_SOURCE /* mkfifo, st_mtim */
#include <dirent.h>
#include <math.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fileio.h"
#include "clip_image.h"
#include "png.h"
#include "sha256.h"
#include "test.h"
#include "vae.h"

static char dir[256], out[16384], base[2048];

/* The `latents` tensor of a --save-latents file ([steps, N, 4, h, w]) as f32, its shape in dims. */
static float *read_latents(const char *path, int64_t dims[5]) {
  struct safetensors *st = NULL;
  if (safetensors_open(path, &st)) return NULL;
  const struct st_tensor *t = safetensors_find(st, "latents");
  float *v = t && t->ndim == 5 ? malloc((size_t)t->numel * sizeof *v) : NULL;
  if (v && safetensors_read_f32(st, t, v)) free(v), v = NULL;
  if (v) memcpy(dims, t->shape, 5 * sizeof *dims);
  safetensors_close(st);
  return v;
}

#define run(...) test_run(out, sizeof out, __VA_ARGS__)

static void write_text(const char *name, const char *text) { test_write_text(dir, name, text); }


static int count_png(const char *d) {
  DIR *dp = opendir(d);
  int n = 0;
  for (struct dirent *e; dp && (e = readdir(dp));) n += strstr(e->d_name, ".png") != NULL;
  if (dp) closedir(dp);
  return n;
}

static bool exists(const char *fmt, const char *a, const char *b) {
  char p[1200];
  snprintf(p, sizeof p, fmt, a, b);
  return access(p, F_OK) == 0;
}

static int count_tmp(const char *d) {
  DIR *dp = opendir(d);
  int n = 0;
  for (struct dirent *e; dp && (e = readdir(dp));) n += strstr(e->d_name, ".tmp-") != NULL;
  if (dp) closedir(dp);
  return n;
}

/* The job path under hostile or careless input (issue: each bug a class): nothing is lost or
 * silently replaced, errors come before any model is loaded (a model path that does not exist
 * proves it: its error never appears), no run hangs, and the exit status tells. */
static void test_hostile(const char *bin, const char *ckpt, const char *cfg, const char *vocab) {
  char h[1024], gen[2048], nomodel[2048];
  snprintf(h, sizeof h, "%s/h", dir);
  mkdir(h, 0755);
  snprintf(gen, sizeof gen, "%s generate --model %s --config %s --tokenizer %s --width 32 --height 32 --steps 2", bin,
           ckpt, cfg, vocab);
  snprintf(nomodel, sizeof nomodel, "%s generate --model %s/no-such-model.safetensors", bin, dir);
  /* batch_count 0 or negative: a failed job, exit 1, never a negative count */
  test_write_text(h, "b0.json", "{\"prompt\": \"x\", \"batch_count\": 0}");
  CHECK_MSG(run("%s %s/b0.json -o %s/o1", gen, h, h) == 1 && strstr(out, "0 of 1 images written; 1 failed (1 invalid jobs)"),
            "batch_count 0: %s", out);
  test_write_text(h, "bneg.json", "[{\"prompt\": \"x\", \"batch_count\": -5}, {\"prompt\": \"y\", \"seed\": 1}]");
  CHECK_MSG(run("%s %s/bneg.json -o %s/o1", gen, h, h) == 1 && strstr(out, "1 of 2 images written; 1 failed (1 invalid jobs)"),
            "batch_count -5: %s", out);
  /* two jobs whose names collide: an error before any work (no model load), nothing written */
  test_write_text(h, "same.json", "[{\"prompt\": \"a\", \"output\": \"same.png\"}, {\"prompt\": \"b\", \"output\": \"same.png\"}]");
  CHECK_MSG(run("%s %s/same.json -o %s/o2", nomodel, h, h) == 1 && strstr(out, "would both write it") &&
            strstr(out, "same.json, job 1, image 1 and") && !strstr(out, "no-such-model"), "collision: %s", out);
  CHECK(count_png(h) == 0 && !exists("%s/%s", h, "o2/same.png"));
  test_write_text(h, "batch.json", "{\"prompt\": \"a\", \"seed\": 5, \"batch_count\": 2, \"output\": \"{prompt}.png\"}");
  CHECK_MSG(run("%s %s/batch.json -o %s/o2", nomodel, h, h) == 1 && strstr(out, "would both write it"), "batch collision: %s", out);
  /* a rerun into a used folder skips what exists (with a note); --overwrite replaces it */
  CHECK(run("%s --prompt 'a red ring' --seed 3 --output keep.png -o %s/o3", gen, h) == 0);
  char keep[1200];
  snprintf(keep, sizeof keep, "%s/o3/keep.png", h);
  struct stat before, after;
  CHECK(stat(keep, &before) == 0);
  CHECK_MSG(run("%s --prompt 'a blue ring' --seed 4 --output keep.png -o %s/o3", gen, h) == 0 && strstr(out, "keep.png: exists: skipped") &&
            strstr(out, "1 skipped"), "rerun: %s", out);
  CHECK(stat(keep, &after) == 0 && after.st_mtim.tv_sec == before.st_mtim.tv_sec && after.st_mtim.tv_nsec == before.st_mtim.tv_nsec &&
        after.st_ino == before.st_ino);
  CHECK_MSG(run("%s %s --prompt 'a blue ring' --seed 4 --output keep.png --overwrite -o %s/o3", gen, "", h) == 0 &&
            !strstr(out, "skipped"), "--overwrite: %s", out);
  CHECK(stat(keep, &after) == 0 && after.st_ino != before.st_ino);
  CHECK_MSG(run("%s info %s", bin, keep) == 0 && strstr(out, "a blue ring"), "the overwritten image: %s", out);
  /* outputs checked before any model load: -o naming a file, names that are no file names */
  CHECK_MSG(run("%s --prompt x -o %s", nomodel, keep) == 1 && strstr(out, "exists and is not a folder") &&
            !strstr(out, "no-such-model"), "-o a file: %s", out);
  CHECK_MSG(run("%s --prompt x --save-latents %s/no/such/folder/l.safetensors -o %s/o4", nomodel, h, h) == 1 &&
            strstr(out, "cannot write in") && !strstr(out, "no-such-model"), "--save-latents folder: %s", out);
  CHECK_MSG(run("%s --prompt x --save-latents %s -o %s/o4", nomodel, h, h) == 1 && strstr(out, "is not a file") &&
            !strstr(out, "no-such-model"), "--save-latents a folder: %s", out);
  char longname[320];
  memset(longname, 'x', 300);
  strcpy(longname + 300, ".png");
  const char *patterns[] = {"''", "..", "'{prompt}'", longname};
  const char *needles[] = {"is not a file name", "is not a file name", "is not a file name", "more than the 255"};
  for (int k = 0; k < 4; k++)
    CHECK_MSG(run("%s --prompt '!!' --output %s -o %s/o4", nomodel, patterns[k], h) == 1 && strstr(out, needles[k]) &&
              !strstr(out, "no-such-model"), "output pattern %s: %s", patterns[k], out);
  /* prompts checked before the model: a weight that overflows, invalid UTF-8, nesting, length */
  CHECK_MSG(run("%s --prompt '(x:100000)' -o %s/o4", nomodel, h) == 1 && strstr(out, "prompt weight") &&
            !strstr(out, "no-such-model"), "weight: %s", out);
  CHECK_MSG(run("%s --prompt \"$(printf 'a \\377 b')\" -o %s/o4", nomodel, h) == 1 && strstr(out, "not valid UTF-8") &&
            !strstr(out, "no-such-model"), "UTF-8: %s", out);
  CHECK_MSG(run("%s --prompt \"$(printf '%%0100d' 0 | tr 0 '(')x\" -o %s/o4", nomodel, h) == 1 && strstr(out, "nest more than 64") &&
            !strstr(out, "no-such-model"), "nesting: %s", out);
  /* tensors given to unet / decode are checked against the model before use (dtype, rank, each
   * dimension, finite values): one-line errors, exit 1, never a crash */
  struct {
    const char *what, *cmd, *names[3], *needle;
    int ndim[3];
    int64_t shape[3][4];
    bool nan;
  } bad[] = {
      {"x with 3 channels", "unet", {"x", "t", "context"}, "tensor 'x' is [1, 3, 16, 16]; expected [N, 4, H, W]", {4, 1, 3},
       {{1, 3, 16, 16}, {1}, {1, 77, 64}}, false},
      {"context of width 32", "unet", {"x", "t", "context"}, "tensor 'context' is [1, 77, 32]; expected [1, T, 64]", {4, 1, 3},
       {{1, 4, 16, 16}, {1}, {1, 77, 32}}, false},
      {"t for 2 images", "unet", {"x", "t", "context"}, "tensor 't' is [2]; expected [1]", {4, 1, 3},
       {{1, 4, 16, 16}, {2}, {1, 77, 64}}, false},
      {"x of odd size", "unet", {"x", "t", "context"}, "H and W multiples of 4", {4, 1, 3}, {{1, 4, 15, 16}, {1}, {1, 77, 64}}, false},
      {"x with a NaN", "unet", {"x", "t", "context"}, "holds a NaN or infinity", {4, 1, 3}, {{1, 4, 16, 16}, {1}, {1, 77, 64}}, true},
      {"latent with 3 channels", "decode", {"latent", NULL, NULL}, "tensor 'latent' is [1, 3, 8, 8]; expected [N, 4, h, w]",
       {4, 0, 0}, {{1, 3, 8, 8}}, false},
      {"latent 3-D", "decode", {"latent", NULL, NULL}, "tensor 'latent' is [4, 8, 8]", {3, 0, 0}, {{4, 8, 8}}, false},
  };
  for (size_t c = 0; c < sizeof bad / sizeof *bad; c++) {
    char in[1200], o[1200];
    snprintf(in, sizeof in, "%s/in%zu.safetensors", h, c);
    snprintf(o, sizeof o, "%s/out%zu.safetensors", h, c);
    struct st_writer *w = NULL;
    CHECK_OK(st_writer_create(&w));
    float *data[3] = {NULL, NULL, NULL};
    for (int k = 0; k < 3 && bad[c].names[k]; k++) {
      size_t n = 1;
      for (int d = 0; d < bad[c].ndim[k]; d++) n *= (size_t)bad[c].shape[k][d];
      data[k] = malloc(n * sizeof(float));
      test_random(data[k], n, (unsigned)(c * 3 + k + 1));
      if (bad[c].nan && k == 0) data[k][5] = NAN;
      CHECK_OK(st_writer_add(w, bad[c].names[k], ST_F32, bad[c].ndim[k], bad[c].shape[k], data[k]));
    }
    CHECK_OK(st_writer_finish(w, in));
    st_writer_destroy(w);
    for (int k = 0; k < 3; k++) free(data[k]);
    int rc2 = run("%s %s --model %s --config %s --precision fp32 --in %s -o %s", bin, bad[c].cmd, ckpt, cfg, in, o);
    CHECK_MSG(rc2 == 1 && strstr(out, bad[c].needle) && strstr(out, in) && access(o, F_OK) != 0, "%s: rc %d: %s", bad[c].what,
              rc2, out);
    printf("  %s %-24s -> %s", bad[c].cmd, bad[c].what, out);
  }
  /* a FIFO as prompt file, model or noise file: an error at once, never a hang */
  char fifo[1200];
  snprintf(fifo, sizeof fifo, "%s/fifo", h);
  CHECK(mkfifo(fifo, 0600) == 0);
  CHECK_MSG(run("timeout 20 %s %s -o %s/o5", gen, fifo, h) == 1 && strstr(out, "not a regular file (a FIFO)"), "FIFO prompts: %s", out);
  CHECK_MSG(run("timeout 20 %s generate --model %s --prompt x -o %s/o5", bin, fifo, h) == 1 && strstr(out, "(a FIFO)"),
            "FIFO model: %s", out);
  CHECK_MSG(run("timeout 20 %s --prompt x --noise %s -o %s/o5", gen, fifo, h) == 1 && strstr(out, "(a FIFO)"), "FIFO noise: %s", out);
  /* a temporary file a killed run left is removed by the next run into the folder */
  char host[64], stale[300];
  file_tmp_host(host, sizeof host);
  snprintf(stale, sizeof stale, "o3/old.png.tmp-%s-999999999-0", host);
  test_write_text(h, stale, "half an image");
  CHECK_MSG(run("%s --prompt x --seed 9 -o %s/o3", gen, h) == 0, "stale: %s", out);
  CHECK(!exists("%s/%s", h, stale));
  /* SIGTERM mid-run: exits promptly with a failure, the finished images are complete, no temporaries left */
  char o6[1200];
  snprintf(o6, sizeof o6, "%s/o6", h);
  int rc = run("%s --prompt x --seed 1 --steps 40 --batch-count 40 -o %s & pid=$!; sleep 4; kill -TERM $pid; wait $pid", gen, o6);
  CHECK_MSG(rc != 0 && strstr(out, "interrupted"), "SIGTERM: rc %d: %s", rc, out);
  CHECK_MSG(count_tmp(o6) == 0, "SIGTERM left %d temporary file(s)", count_tmp(o6));
  printf("  SIGTERM after 4 s: %d image(s) written, exit %d\n", count_png(o6), rc);
  unlink(fifo);
}

static void write_f32(const char *path, const char *const *names, const float *const *data, int64_t (*shapes)[4],
                      const int *ndims, int n) {
  struct st_writer *w;
  if (st_writer_create(&w)) return;
  for (int i = 0; i < n; i++) st_writer_add(w, names[i], ST_F32, ndims[i], shapes[i], data[i]);
  CHECK_OK(st_writer_finish(w, path));
  st_writer_destroy(w);
}

/* SD 2.x and SDXL through `vkdiffusion generate` (tiny checkpoints from make_checkpoint's writer):
 * --noise and --save-latents against the sampling goldens, SDXL's size fields in a prompt file, the
 * prediction from the file's metadata and --prediction; `unet --in` wants y for SDXL; a VAE output
 * that is not finite never becomes a PNG */
static void test_families(const char *bin, const char *vocab, const char *tiny_digest) {
  char ckpt[2][600], cfg[2][600], ud[1024], gold[2][1024];
  const char *fam[2] = {"sd2", "sdxl"};
  const char *digests[2] = {"ref/goldens/weights_digest_unet_sd21_tiny_seed1.json", "ref/goldens/weights_digest_unet_sdxl_tiny_seed1.json"};
  const char *goldens[2] = {"ref/goldens/sample_sd21_tiny_v.safetensors", "ref/goldens/sample_sdxl_tiny.safetensors"};
  write_text("sd2.json", "{\"text_encoder\": {\"num_attention_heads\": 4}, \"unet\": {\"num_attention_heads\": [2, 4, 4]}}");
  write_text("sdxl.json", "{\"text_encoder\": {\"num_attention_heads\": 4}, \"text_encoder_2\": {\"num_attention_heads\": 4},"
                          " \"unet\": {\"num_attention_heads\": [2, 4, 4]}}");
  write_text("xl_job.json", "{\"prompt\": \"a photograph of an astronaut riding a horse\", \"width\": 32, \"height\": 32, "
                            "\"steps\": 4, \"sampler\": \"euler\", \"cfg_scale\": 5, \"original_size\": [896, 1152], "
                            "\"crop\": [16, 32], \"target_size\": [1024, 768], \"output\": \"xl.png\"}");
  for (int k = 0; k < 2; k++) {
    test_shared_path(ud, sizeof ud, digests[k]);
    test_shared_path(gold[k], sizeof gold[k], goldens[k]);
    snprintf(ckpt[k], sizeof ckpt[k], "%s/%s.safetensors", dir, fam[k]);
    snprintf(cfg[k], sizeof cfg[k], "%s/%s.json", dir, fam[k]);
    CHECK(write_family_checkpoint(ckpt[k], fam[k], ud, tiny_digest, ST_F32, 1, k ? NULL : "modelspec.prediction_type",
                                  k ? NULL : "v") == 0);
  }
  /* SD 2.x: v from the metadata, the golden's latents; --prediction eps overrides (and differs) */
  float *runs[2] = {NULL, NULL};
  for (int r = 0; r < 2; r++) {
    int rc = run("%s generate --model %s --config %s --tokenizer %s --prompt 'a photograph of an astronaut riding a horse' "
                 "--width 32 --height 32 --steps 4 --sampler euler --cfg-scale 7.5 --precision fp32 --noise %s %s "
                 "--save-latents %s/sd2_lat%d.safetensors --output sd2_%d.png -o %s/fam", bin, ckpt[0], cfg[0], vocab, gold[0],
                 r ? "--prediction eps" : "", dir, r, r, dir);
    CHECK_MSG(rc == 0 && strstr(out, r ? "SD 2.x, eps-prediction (--prediction)" : "SD 2.x, v-prediction (modelspec.prediction_type)"),
              "generate sd2 %d: %s", r, out);
    char lat[700];
    snprintf(lat, sizeof lat, "%s/sd2_lat%d.safetensors", dir, r);
    int64_t dims[5];
    runs[r] = read_latents(lat, dims);
  }
  struct safetensors *gs = NULL;
  size_t nl = 4 * 4 * 16 * 16;
  if (runs[0] && runs[1] && !safetensors_open(gold[0], &gs)) {
    float *ref = test_tensor(gs, "euler.latents", NULL);
    if (ref) CHECK_CLOSE("generate sd2 --noise: euler v latents against the golden (fp32)", runs[0], ref, nl, 5e-4, 1e-4);
    CHECK_MSG(memcmp(runs[0], runs[1], nl * sizeof(float)) != 0, "--prediction eps gave the v latents");
    free(ref);
    safetensors_close(gs);
  } else {
    CHECK_MSG(0, "sd2 generate: no latents");
  }
  free(runs[0]), free(runs[1]);
  /* SDXL: the job file's sizes, the empty negative as zeros (the default), the golden's latents */
  int rc = run("%s generate --model %s --config %s --tokenizer %s %s/xl_job.json --precision fp32 --noise %s "
               "--save-latents %s/xl_lat.safetensors -o %s/fam", bin, ckpt[1], cfg[1], vocab, dir, gold[1], dir, dir);
  CHECK_MSG(rc == 0 && strstr(out, "SDXL, eps-prediction"), "generate sdxl: %s", out);
  char lat[700], png[700];
  snprintf(lat, sizeof lat, "%s/xl_lat.safetensors", dir);
  int64_t dims[5];
  float *xl = read_latents(lat, dims);
  if (xl && !safetensors_open(gold[1], &gs)) {
    float *ref = test_tensor(gs, "euler.latents", NULL);
    if (ref) CHECK_CLOSE("generate sdxl --noise: euler latents against the golden (fp32)", xl, ref, nl, 2e-3, 1e-4);
    free(ref);
    safetensors_close(gs);
  } else {
    CHECK_MSG(0, "sdxl generate: no latents");
  }
  free(xl);
  snprintf(png, sizeof png, "%s/fam/xl.png", dir);
  CHECK(run("%s info %s", bin, png) == 0 && strstr(out, "Clip skip: 2, Original size: 1152x896, Crop: 16,32, Target size: 768x1024"));
  /* unet --in: SDXL needs y [N, 1600] */
  float x[2 * 4 * 8 * 8], t[2] = {999, 500}, ctx[2 * 77 * 128], y[2 * 1601];
  test_random(x, sizeof x / 4, 1), test_random(ctx, sizeof ctx / 4, 2), test_random(y, sizeof y / 4, 3);
  const char *nm[4] = {"x", "t", "context", "y"};
  const float *dt[4] = {x, t, ctx, y};
  int64_t sh[4][4] = {{2, 4, 8, 8}, {2}, {2, 77, 128}, {2, 1600}};
  int nd[4] = {4, 1, 3, 2};
  char in[700], o[700];
  snprintf(in, sizeof in, "%s/unet_in.safetensors", dir);
  snprintf(o, sizeof o, "%s/xl_eps.safetensors", dir);
  write_f32(in, nm, dt, sh, nd, 3);
  CHECK_MSG(run("%s unet --model %s --config %s --in %s -o %s", bin, ckpt[1], cfg[1], in, o) == 1 && strstr(out, "'y'") &&
            access(o, F_OK) != 0, "unet without y: %s", out);
  sh[3][1] = 1601;
  write_f32(in, nm, dt, sh, nd, 4);
  CHECK_MSG(run("%s unet --model %s --config %s --in %s -o %s", bin, ckpt[1], cfg[1], in, o) == 1 && strstr(out, "1600") &&
            access(o, F_OK) != 0, "unet with y [2, 1601]: %s", out);
  sh[3][1] = 1600;
  write_f32(in, nm, dt, sh, nd, 4);
  CHECK_MSG(run("%s unet --model %s --config %s --in %s -o %s", bin, ckpt[1], cfg[1], in, o) == 0 && access(o, R_OK) == 0,
            "unet with y: %s", out);
  /* a latent whose decode overflows: an error, no PNG (never a black image) */
  float *huge = malloc(4 * 16 * 16 * sizeof *huge);
  for (int i = 0; i < 4 * 16 * 16; i++) huge[i] = i % 2 ? 3e37f : -3e37f;
  const char *ln[1] = {"latent"};
  const float *ld[1] = {huge};
  int64_t ls[1][4] = {{1, 4, 16, 16}};
  int lnd[1] = {4};
  write_f32(in, ln, ld, ls, lnd, 1);
  snprintf(o, sizeof o, "%s/huge.png", dir);
  CHECK_MSG(run("%s decode --model %s --in %s -o %s", bin, ckpt[1], in, o) == 1 && strstr(out, "NaN or infinite") &&
            access(o, F_OK) != 0, "decode of an overflowing latent: %s", out);
  free(huge);
  printf("  sd2 / sdxl generate: golden latents, sizes in the PNG, unet --in y, no PNG from a non-finite decode\n");
}

/* the tensor `name` of the file at path against `ref_name` of the golden: want values, CHECK_CLOSE */
static void check_file_tensor(const char *what, const char *path, const char *name, struct safetensors *gold,
                              const char *ref_name, size_t want, double atol, double rtol) {
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(path, &st));
  size_t n = 0, nr = 0;
  float *got = st ? test_tensor(st, name, &n) : NULL, *ref = gold ? test_tensor(gold, ref_name, &nr) : NULL;
  CHECK_MSG(got && ref && n == nr && n == want, "%s: %s has %zu values, the golden %zu, expected %zu", what, name, n, nr, want);
  if (got && ref && n == nr) CHECK_CLOSE(what, got, ref, n, atol, rtol);
  free(got), free(ref);
  safetensors_close(st);
}

/* vae-encode (#29): the golden's image and noise in, mean / logvar / latent out, against
 * vae_enc_tiny_64 (fp32: atol 1e-4 rtol 1e-4); the same image as a PNG (8-bit) lands within the
 * quantisation's reach; bad inputs are one-line errors and write nothing. */
static void test_vae_encode_cli(const char *bin, const char *ckpt) {
  char gold[1024], o[700], png[700];
  test_shared_path(gold, sizeof gold, "ref/goldens/vae_enc_tiny_64.safetensors");
  snprintf(o, sizeof o, "%s/enc.safetensors", dir);
  int rc = run("%s vae-encode --model %s --in %s --noise %s --precision fp32 -o %s", bin, ckpt, gold, gold, o);
  CHECK_MSG(rc == 0, "vae-encode: %s", out);
  struct safetensors *g = NULL, *e = NULL;
  CHECK_OK(safetensors_open(gold, &g));
  check_file_tensor("vae-encode mean", o, "mean", g, "mean", 4 * 32 * 32, 1e-4, 1e-4);
  check_file_tensor("vae-encode logvar", o, "logvar", g, "logvar", 4 * 32 * 32, 1e-4, 1e-4);
  check_file_tensor("vae-encode latent", o, "latent", g, "latent_sd", 4 * 32 * 32, 1e-4, 1e-4);
  /* the same image as an 8-bit PNG: --sample mean gives latent = mean * 0.18215 */
  size_t ni = 0;
  float *img = g ? test_tensor(g, "image", &ni) : NULL;
  if (img) {
    unsigned char *u8 = malloc(ni);
    image_to_u8(img, 64, 64, u8);
    snprintf(png, sizeof png, "%s/enc_in.png", dir);
    CHECK_OK(png_write(png, u8, 64, 64, NULL, true));
    free(u8);
    snprintf(o, sizeof o, "%s/enc_png.safetensors", dir);
    rc = run("%s vae-encode --model %s --in %s --sample mean -o %s", bin, ckpt, png, o);
    CHECK_MSG(rc == 0, "vae-encode PNG: %s", out);
    CHECK_OK(safetensors_open(o, &e));
    size_t n = 0;
    float *mean = e ? test_tensor(e, "mean", &n) : NULL, *lat = e ? test_tensor(e, "latent", NULL) : NULL;
    float *ref = test_tensor(g, "mean", NULL);
    CHECK(mean && lat && ref && n == 4 * 32 * 32);
    if (mean && lat && ref) {
      double worst = 0;
      for (size_t i = 0; i < n; i++) {
        CHECK(fabsf(lat[i] - mean[i] * 0.18215f) <= 1e-6f * (1 + fabsf(lat[i])));
        worst = fmax(worst, fabs(mean[i] - ref[i]));
      }
      printf("  vae-encode of the 8-bit PNG (fp16): mean within %.3g of the float golden\n", worst);
      CHECK(worst < 0.1);
    }
    free(mean), free(lat), free(ref), free(img);
    safetensors_close(e);
  }
  safetensors_close(g);
  /* refused: an odd-sized image (factor 2), a tensor file without `image`, noise of the wrong shape */
  const float px[3 * 5 * 4] = {0.5f};
  unsigned char odd[5 * 3 * 3] = {7};
  snprintf(png, sizeof png, "%s/odd.png", dir);
  CHECK_OK(png_write(png, odd, 3, 5, NULL, true));
  snprintf(o, sizeof o, "%s/bad.safetensors", dir);
  rc = run("%s vae-encode --model %s --in %s -o %s", bin, ckpt, png, o);
  CHECK_MSG(rc == 1 && strstr(out, "odd.png") && strstr(out, "multiples of 2") && access(o, F_OK) != 0, "odd: %s", out);
  char t[700];
  snprintf(t, sizeof t, "%s/noimage.safetensors", dir);
  struct st_writer *w = NULL;
  CHECK_OK(st_writer_create(&w));
  CHECK_OK(st_writer_add(w, "pixels", ST_F32, 4, (int64_t[]){1, 3, 5, 4}, px));
  CHECK_OK(st_writer_finish(w, t));
  st_writer_destroy(w);
  rc = run("%s vae-encode --model %s --in %s -o %s", bin, ckpt, t, o);
  CHECK_MSG(rc == 1 && strstr(out, "noimage.safetensors") && strstr(out, "'image'") && access(o, F_OK) != 0, "no image: %s", out);
  rc = run("%s vae-encode --model %s --in %s --noise %s -o %s", bin, ckpt, gold, t, o);
  CHECK_MSG(rc == 1 && strstr(out, "'noise'") && access(o, F_OK) != 0, "bad noise: %s", out);
  rc = run("%s vae-encode --model %s --in %s --sample median -o %s", bin, ckpt, gold, o);
  CHECK_MSG(rc == 2 && strstr(out, "--sample"), "--sample median: %s", out);
  printf("  vae-encode: golden mean / logvar / latent; odd sizes, missing tensors and bad flags refused\n");
}

/* img2img on the command line (#29): a prompt file's init_image (relative to the file) and
 * strength; the parameters text and the manifest carry them; strength 0 with --vae-encode mean is
 * exactly `vae-encode --sample mean` then `decode` (the same pixels); bad values are refused. */
static void test_img2img_cli(const char *bin, const char *ckpt) {
  char init[700], a[700], b[700], lat[700];
  snprintf(init, sizeof init, "%s/i2i/in.png", dir);
  char mk[800];
  snprintf(mk, sizeof mk, "mkdir -p %s/i2i", dir);
  CHECK(system(mk) == 0);
  unsigned char rgb[40 * 24 * 3];
  for (int i = 0; i < 40 * 24 * 3; i++) rgb[i] = (unsigned char)((i * 7) % 251);
  CHECK_OK(png_write(init, rgb, 40, 24, NULL, true)); /* 40x24: cropped and resized to 32x32 */
  write_text("i2i/jobs.json", "[{\"prompt\": \"a red circle\", \"init_image\": \"in.png\", \"strength\": 0.5, \"steps\": 4, "
                              "\"seed\": 2, \"width\": 32, \"height\": 32, \"output\": \"half.png\"},\n"
                              " {\"prompt\": \"a red circle\", \"init_image\": \"in.png\", \"strength\": 0, \"steps\": 4, "
                              "\"seed\": 2, \"width\": 32, \"height\": 32, \"output\": \"zero.png\"}]");
  int rc = run("%s %s/i2i/jobs.json --vae-encode mean -o %s/i2i/out", base, dir, dir);
  CHECK_MSG(rc == 0, "img2img jobs: %s", out);
  snprintf(a, sizeof a, "%s/i2i/out/half.png", dir);
  CHECK(run("%s info %s", bin, a) == 0 && strstr(out, "Size: 32x32, Model: tiny_sd, Denoising strength: 0.5, Init image: in.png"));
  snprintf(a, sizeof a, "%s/i2i/out/manifest.jsonl", dir);
  char *m = test_read_file(a, NULL);
  CHECK_MSG(m && strstr(m, "\"strength\":0.5") && strstr(m, "i2i/in.png\""), "manifest: %s", m ? m : "");
  free(m);
  /* strength 0: the init image's VAE round trip, as the two part commands give it */
  unsigned char fit[32 * 32 * 3];
  CHECK_OK(image_cover_crop(rgb, 40, 24, 32, 32, fit));
  snprintf(b, sizeof b, "%s/i2i/fit.png", dir);
  CHECK_OK(png_write(b, fit, 32, 32, NULL, true));
  snprintf(lat, sizeof lat, "%s/i2i/lat.safetensors", dir);
  CHECK(run("%s vae-encode --model %s --in %s --sample mean -o %s", bin, ckpt, b, lat) == 0);
  snprintf(b, sizeof b, "%s/i2i/roundtrip.png", dir);
  CHECK(run("%s decode --model %s --in %s -o %s", bin, ckpt, lat, b) == 0);
  snprintf(a, sizeof a, "%s/i2i/out/zero.png", dir);
  unsigned char *pa = NULL, *pb = NULL;
  int wa = 0, ha = 0, wb = 0, hb = 0;
  CHECK_OK(image_load(a, &pa, &wa, &ha));
  CHECK_OK(image_load(b, &pb, &wb, &hb));
  CHECK_MSG(pa && pb && wa == 32 && ha == 32 && wb == 32 && hb == 32 && !memcmp(pa, pb, 32 * 32 * 3),
            "strength 0 differs from vae-encode + decode");
  free(pa), free(pb);
  /* refused */
  CHECK(run("%s --prompt x --init-image %s --strength 1.5 -o %s/i2i/bad", base, init, dir) == 2 && strstr(out, "--strength"));
  rc = run("%s --prompt x --init-image %s/i2i/nothere.png -o %s/i2i/bad", base, dir, dir);
  CHECK_MSG(rc == 1 && strstr(out, "nothere.png") && strstr(out, "init_image"), "missing init image: %s", out);
  write_text("i2i/bad.json", "{\"prompt\": \"x\", \"strength\": 2}");
  rc = run("%s %s/i2i/bad.json -o %s/i2i/bad", base, dir, dir);
  CHECK_MSG(rc == 1 && strstr(out, "\"strength\" 2"), "strength 2: %s", out);
  /* inpainting: a half mask from a prompt file (relative paths), blurred; a mask without an init image is refused */
  unsigned char mrgb[40 * 24 * 3];
  for (int i = 0; i < 40 * 24; i++) memset(mrgb + 3 * i, i % 40 < 20 ? 0 : 255, 3);
  snprintf(b, sizeof b, "%s/i2i/m.png", dir);
  CHECK_OK(png_write(b, mrgb, 40, 24, NULL, true));
  write_text("i2i/mask.json", "{\"prompt\": \"a red circle\", \"init_image\": \"in.png\", \"mask\": \"m.png\", "
                              "\"mask_blur\": 2, \"strength\": 1, \"steps\": 3, \"seed\": 2, \"width\": 32, \"height\": 32, "
                              "\"output\": \"masked.png\"}");
  rc = run("%s %s/i2i/mask.json -o %s/i2i/out", base, dir, dir);
  CHECK_MSG(rc == 0, "inpainting job: %s", out);
  snprintf(a, sizeof a, "%s/i2i/out/masked.png", dir);
  CHECK(run("%s info %s", bin, a) == 0 && strstr(out, "Denoising strength: 1, Init image: in.png, Mask blur: 2, Mask: m.png"));
  snprintf(a, sizeof a, "%s/i2i/out/manifest.jsonl", dir);
  m = test_read_file(a, NULL);
  CHECK(m && strstr(m, "i2i/m.png\",\"mask_blur\":2"));
  free(m);
  rc = run("%s --prompt x --mask %s -o %s/i2i/bad", base, b, dir);
  CHECK_MSG(rc == 1 && strstr(out, "\"mask\" needs an \"init_image\""), "mask alone: %s", out);
  printf("  img2img CLI: parameters and manifest; strength 0 = vae-encode --sample mean + decode; bad values refused\n");
}

/* TAESD on the command line (#29): decode --vae-decoder and vae-encode --vae-encoder alone (no
 * --model) against taesd_seed1 (fp32 atol 1e-4 rtol 1e-4); generate --vae-decoder --preview-every
 * on a tiny U-Net with SD's 8x VAE: the image, "VAE: <file>" in its parameters, no preview left. */
static void test_taesd_cli(const char *bin, const char *cfg, const char *vocab, const char *digest) {
  char w[1024], gold[1024], o[700], in[700];
  test_shared_path(w, sizeof w, "ref/goldens/taesd_weights_seed1.safetensors");
  test_shared_path(gold, sizeof gold, "ref/goldens/taesd_seed1.safetensors");
  snprintf(o, sizeof o, "%s/taesd_img.safetensors", dir);
  int rc = run("%s decode --vae-decoder %s --in %s --precision fp32 -o %s", bin, w, gold, o);
  CHECK_MSG(rc == 0, "decode --vae-decoder: %s", out);
  struct safetensors *g = NULL, *e = NULL;
  CHECK_OK(safetensors_open(gold, &g));
  check_file_tensor("decode --vae-decoder image", o, "image", g, "image", 3 * 64 * 96, 1e-4, 1e-4);
  size_t n = 0;
  /* the encoder: the golden's input in [0, 1] given as `image` in [-1, 1] */
  float *input = g ? test_tensor(g, "input_image", &n) : NULL;
  for (size_t i = 0; input && i < n; i++) input[i] = input[i] * 2 - 1;
  snprintf(in, sizeof in, "%s/taesd_in.safetensors", dir);
  struct st_writer *wr = NULL;
  CHECK_OK(st_writer_create(&wr));
  if (input) CHECK_OK(st_writer_add(wr, "image", ST_F32, 4, (int64_t[]){1, 3, 64, 64}, input));
  CHECK_OK(st_writer_finish(wr, in));
  st_writer_destroy(wr);
  free(input);
  snprintf(o, sizeof o, "%s/taesd_lat.safetensors", dir);
  rc = run("%s vae-encode --vae-encoder %s --in %s --precision fp32 -o %s", bin, w, in, o);
  CHECK_MSG(rc == 0, "vae-encode --vae-encoder: %s", out);
  check_file_tensor("vae-encode --vae-encoder latent", o, "latent", g, "encoded", 4 * 8 * 8, 1e-4, 1e-4);
  CHECK_OK(safetensors_open(o, &e));
  CHECK(e && !safetensors_find(e, "mean")); /* TAESD has no posterior */
  safetensors_close(e);
  safetensors_close(g);
  CHECK(run("%s vae-encode --vae-encoder %s --in %s --sample mean -o %s", bin, w, in, o) == 2 && strstr(out, "TAESD"));
  CHECK(run("%s decode --in %s -o %s", bin, gold, o) == 2 && strstr(out, "--vae-decoder"));
  /* generate with TAESD and previews */
  char sd15[1024], ckpt[700];
  test_shared_path(sd15, sizeof sd15, "ref/goldens/weights_digest_unet_vae_sd15_seed1.json");
  snprintf(ckpt, sizeof ckpt, "%s/tiny_unet_sd15_vae.safetensors", dir);
  CHECK(write_sd_checkpoint_mixed(ckpt, digest, sd15, ST_F16, 1, clip_spec("tiny")) == 0);
  rc = run("%s generate --model %s --config %s --tokenizer %s --prompt x --seed 4 --steps 3 --width 64 --height 64 "
           "--vae-decoder %s --preview-every 1 --output t.png -o %s/taesd --quiet", bin, ckpt, cfg, vocab, w, dir);
  CHECK_MSG(rc == 0, "generate --vae-decoder: %s", out);
  snprintf(o, sizeof o, "%s/taesd/t.png", dir);
  CHECK(run("%s info %s", bin, o) == 0 && strstr(out, "Model: tiny_unet_sd15_vae, VAE: taesd_weights_seed1.safetensors"));
  CHECK(!exists("%s/%s", dir, "taesd/t.preview.png") && exists("%s/%s", dir, "taesd/t.png"));
  rc = run("%s generate --model %s --config %s --tokenizer %s --prompt x --preview-every 2 -o %s/taesd", bin, ckpt, cfg,
           vocab, dir);
  CHECK_MSG(rc == 2 && strstr(out, "--preview-every needs a TAESD"), "--preview-every alone: %s", out);
  unlink(ckpt);
  printf("  TAESD CLI: decode / vae-encode against taesd_seed1; generate --vae-decoder --preview-every\n");
}

/* the files of a folder's PNGs, sorted (names only) */
static int png_names(const char *d, char names[][64], int max) {
  DIR *dp = opendir(d);
  int n = 0;
  for (struct dirent *e; dp && (e = readdir(dp));)
    if (strstr(e->d_name, ".png") && !strstr(e->d_name, ".tmp-") && n < max) snprintf(names[n++], 64, "%s", e->d_name);
  if (dp) closedir(dp);
  qsort(names, (size_t)n, 64, (int (*)(const void *, const void *))strcmp);
  return n;
}

/* how many manifest lines name this output */
static int manifest_count(const char *manifest, const char *folder, const char *name) {
  char needle[1400];
  snprintf(needle, sizeof needle, "\"output\":\"%s/%s\"", folder, name);
  int n = 0;
  for (const char *p = manifest; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

static bool same_file(const char *a, const char *b) {
  size_t na, nb;
  char *x = test_read_file(a, &na), *y = test_read_file(b, &nb);
  bool same = x && y && na == nb && !memcmp(x, y, na);
  free(x), free(y);
  return same;
}

/* #30: a prompt file of 8 images (random seeds among them) in one process, then as three shards
 * (--shard 0/3, Slurm's variables, a Kubernetes Indexed Job's): the same names, byte-identical PNGs,
 * the manifests list each image once. Then resume: one PNG deleted, one truncated, one replaced by
 * another image: --skip-existing renders exactly those three again and touches nothing else. */
static void test_sharding(const char *bin) {
  write_text("shard.json",
             "[{\"prompt\": \"a red circle\", \"steps\": 2, \"width\": 32, \"height\": 32, \"batch_count\": 3},\n"
             " {\"prompt\": \"a blue square\", \"seed\": 11, \"steps\": 2, \"width\": 32, \"height\": 32, \"batch_count\": 2},\n"
             " {\"prompt\": \"a green ring\", \"steps\": 2, \"width\": 32, \"height\": 32, \"sampler\": \"euler\"},\n"
             " {\"prompt\": \"a yellow star\", \"steps\": 2, \"width\": 32, \"height\": 32, \"batch_count\": 2}]\n");
  char one[600], three[600];
  snprintf(one, sizeof one, "%s/shard1", dir);
  snprintf(three, sizeof three, "%s/shard3", dir);
  int rc = run("%s %s/shard.json -o %s", base, dir, one);
  CHECK_MSG(rc == 0, "one process: %s", out);
  const char *how[3] = {"--shard 0/3", "SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=3 --shard auto",
                        "JOB_COMPLETION_INDEX=2 VKDIFFUSION_SHARDS=3 --shard auto"};
  for (int i = 0; i < 3; i++) {
    char env[128] = "", flag[64];
    const char *sp = strstr(how[i], "--shard");
    snprintf(env, sizeof env, "%.*s", (int)(sp - how[i]), how[i]);
    snprintf(flag, sizeof flag, "%s", sp);
    rc = run("env %s %s %s %s/shard.json -o %s", env, base, flag, dir, three);
    CHECK_MSG(rc == 0, "%s: %s", how[i], out);
  }
  char a[16][64], b[16][64], pa[1400], pb[1400];
  int na = png_names(one, a, 16), nb = png_names(three, b, 16);
  CHECK_MSG(na == 8 && nb == 8, "one process wrote %d images, three shards %d", na, nb);
  for (int k = 0; k < na && k < nb; k++) {
    snprintf(pa, sizeof pa, "%s/%s", one, a[k]);
    snprintf(pb, sizeof pb, "%s/%s", three, b[k]);
    CHECK_MSG(!strcmp(a[k], b[k]) && same_file(pa, pb), "%s and %s differ", pa, pb);
  }
  snprintf(pa, sizeof pa, "%s/manifest.jsonl", one);
  snprintf(pb, sizeof pb, "%s/manifest.jsonl", three);
  char *m1 = test_read_file(pa, NULL), *m3 = test_read_file(pb, NULL);
  for (int k = 0; k < na; k++)
    CHECK_MSG(manifest_count(m1, one, a[k]) == 1 && manifest_count(m3, three, a[k]) == 1, "%s: in the manifests %d and %d times",
              a[k], manifest_count(m1, one, a[k]), manifest_count(m3, three, a[k]));
  CHECK(m3 && strstr(m3, "\"shard\":\"0/3\"") && strstr(m3, "\"shard\":\"1/3\"") && strstr(m3, "\"shard\":\"2/3\"") &&
        strstr(m3, "\"model_sha256\":\"") && strstr(m3, "\"seed\":11,") && strstr(m3, "\"wall_s\":"));
  printf("  8 images: one process and three shards byte-identical; manifests list each once\n");
  free(m1), free(m3);

  /* resume: 00001 deleted, 00004 truncated, 00005 replaced by 00000 (another image's parameters) */
  char victim[3][1400];
  struct stat before[16];
  for (int k = 0; k < nb; k++) {
    snprintf(pb, sizeof pb, "%s/%s", three, b[k]);
    stat(pb, &before[k]);
  }
  snprintf(victim[0], sizeof victim[0], "%s/%s", three, b[1]);
  snprintf(victim[1], sizeof victim[1], "%s/%s", three, b[4]);
  snprintf(victim[2], sizeof victim[2], "%s/%s", three, b[5]);
  CHECK(unlink(victim[0]) == 0 && truncate(victim[1], before[4].st_size / 2) == 0);
  snprintf(pb, sizeof pb, "cp %s/%s %s", three, b[0], victim[2]);
  CHECK(system(pb) == 0);
  rc = test_run(out, sizeof out, "%s %s/shard.json -o %s --skip-existing", base, dir, three);
  CHECK_MSG(rc == 0, "resume: %s", out);
  snprintf(pb, sizeof pb, "%s/manifest.jsonl", three);
  m3 = test_read_file(pb, NULL);
  int lines = 0;
  for (const char *p = m3; p && *p; p++) lines += *p == '\n';
  CHECK_MSG(lines == 11, "the manifest has %d lines after the resume (8 + 3)", lines);
  for (int k = 0; k < nb; k++) {
    bool redone = k == 1 || k == 4 || k == 5;
    snprintf(pa, sizeof pa, "%s/%s", one, b[k]);
    snprintf(pb, sizeof pb, "%s/%s", three, b[k]);
    struct stat now;
    CHECK(stat(pb, &now) == 0 && same_file(pa, pb));
    CHECK_MSG(manifest_count(m3, three, b[k]) == 1 + redone, "%s: %d manifest lines", b[k], manifest_count(m3, three, b[k]));
    if (!redone)
      CHECK_MSG(now.st_mtim.tv_sec == before[k].st_mtim.tv_sec && now.st_mtim.tv_nsec == before[k].st_mtim.tv_nsec &&
                    now.st_ino == before[k].st_ino, "%s was touched by the resume", b[k]);
  }
  free(m3);
  printf("  resume: 3 images rendered again (deleted, truncated, another's), 5 untouched\n");
  /* a rerun with nothing missing renders nothing and adds no line */
  rc = run("%s %s/shard.json -o %s --skip-existing --shard 1/3", base, dir, three);
  snprintf(pb, sizeof pb, "%s/manifest.jsonl", three);
  m3 = test_read_file(pb, NULL);
  lines = 0;
  for (const char *p = m3; p && *p; p++) lines += *p == '\n';
  CHECK_MSG(rc == 0 && lines == 11, "nothing missing: rc %d, %d lines: %s", rc, lines, out);
  free(m3);
  /* bad shards: one-line usage errors before any work */
  const char *bad[] = {"--shard 3/2", "--shard -1/4", "--shard 1/0", "--shard garbage", "--shard auto"};
  for (int i = 0; i < 5; i++) {
    rc = run("env -u SLURM_ARRAY_TASK_ID -u JOB_COMPLETION_INDEX %s %s/shard.json -o %s/bad %s", base, dir, dir, bad[i]);
    CHECK_MSG(rc == 2 && strstr(out, "--shard") && strchr(out, '\n') == out + strlen(out) - 1, "%s: rc %d: %s", bad[i], rc, out);
  }
  snprintf(pb, sizeof pb, "%s/bad", dir);
  CHECK(access(pb, F_OK) != 0);
}

/* The last step's latents of a --save-latents file (n values), or NULL. */
static float *last_latent(const char *path, int64_t *n) {
  int64_t d[5];
  float *v = read_latents(path, d);
  if (!v) return NULL;
  *n = d[1] * d[2] * d[3] * d[4];
  memmove(v, v + (d[0] - 1) * *n, (size_t)*n * sizeof *v);
  return v;
}

/* LoRA on the command line (#29): generate --lora against a checkpoint merged offline by
 * make_checkpoint --merge-lora (the final latent within the golden tolerance, atol 2e-3 rtol 1e-4);
 * <lora:NAME:S> (--lora-dir and the default loras/ beside the model) and the "loras" field give the
 * same latents bit for bit; Lora hashes in the parameters (SHA-256 after the header, computed here);
 * encode --lora and unet --lora against the merged checkpoint (fp32 atol 1e-5 rtol 1e-4); refused:
 * a missing file or tag, a bad --lora value, an unmatched key under --lora-strict, a file with no LoRA. */
static void test_lora_cli(const char *bin, const char *ckpt, const char *cfg, const char *vocab) {
  char d[600], lora[700], merged[700], cmd[4096];
  snprintf(d, sizeof d, "%s/lora", dir);
  snprintf(cmd, sizeof cmd, "mkdir -p %s/loras %s/jobs", d, d);
  CHECK(system(cmd) == 0);
  snprintf(lora, sizeof lora, "%s/loras/style.safetensors", d);
  snprintf(merged, sizeof merged, "%s/merged.safetensors", d);
  CHECK(write_test_lora(lora, ckpt, TEST_LORA_KOHYA, 4, 2, 9, TEST_LORA_UNET | TEST_LORA_TEXT) == 0);
  CHECK(merge_test_lora(ckpt, lora, 0.7, merged) == 0);
  const char *job = "--width 32 --height 32 --steps 3 --seed 5 --sampler euler --no-manifest";
  int rc = run("%s --prompt 'a red cube' %s --lora %s:0.7 --output a.png --save-latents %s/a.st -o %s/out", base, job, lora, d, d);
  CHECK_MSG(rc == 0, "generate --lora: %s", out);
  char mbase[2048];
  snprintf(mbase, sizeof mbase, "%s generate --model %s --config %s --tokenizer %s --quiet", bin, merged, cfg, vocab);
  rc = run("%s --prompt 'a red cube' %s --output m.png --save-latents %s/m.st -o %s/out", mbase, job, d, d);
  CHECK_MSG(rc == 0, "generate on the merged checkpoint: %s", out);
  rc = run("%s --prompt 'a red cube' %s --output n.png --save-latents %s/n.st -o %s/out", base, job, d, d);
  CHECK(rc == 0);
  /* the tag, from --lora-dir and from loras/ beside a model there; the "loras" field relative to its file */
  rc = run("%s --prompt 'a red cube <lora:style:0.7>' %s --lora-dir %s/loras --output t.png --save-latents %s/t.st -o %s/out",
           base, job, d, d, d);
  CHECK_MSG(rc == 0, "<lora:style:0.7>: %s", out);
  snprintf(cmd, sizeof cmd, "cp %s %s/model.safetensors", ckpt, d);
  CHECK(system(cmd) == 0);
  char lbase[2048];
  snprintf(lbase, sizeof lbase, "%s generate --model %s/model.safetensors --config %s --tokenizer %s --quiet", bin, d, cfg, vocab);
  rc = run("%s --prompt '<lora:style:0.7>a red cube' %s --output u.png --save-latents %s/u.st -o %s/out", lbase, job, d, d);
  CHECK_MSG(rc == 0, "<lora:style:0.7> beside the model: %s", out);
  write_text("lora/jobs/j.json", "{\"prompt\": \"a red cube\", \"loras\": [\"../loras/style.safetensors:0.7\"], "
                                 "\"width\": 32, \"height\": 32, \"steps\": 3, \"seed\": 5, \"sampler\": \"euler\", \"output\": \"f.png\"}");
  rc = run("%s %s/jobs/j.json --no-manifest --save-latents %s/f.st -o %s/out", base, d, d, d);
  CHECK_MSG(rc == 0, "\"loras\" field: %s", out);
  char p1[800], p2[800];
  int64_t n1 = 0, n2 = 0;
  snprintf(p1, sizeof p1, "%s/a.st", d);
  snprintf(p2, sizeof p2, "%s/m.st", d);
  float *la = last_latent(p1, &n1), *lm = last_latent(p2, &n2);
  CHECK_MSG(la && lm && n1 == n2 && n1 == 4 * 16 * 16, "latents: %lld / %lld values", (long long)n1, (long long)n2);
  if (la && lm && n1 == n2) CHECK_CLOSE("generate --lora vs the offline merge (final latent)", la, lm, (size_t)n1, 2e-3, 1e-4);
  snprintf(p2, sizeof p2, "%s/n.st", d);
  float *ln = last_latent(p2, &n2);
  double moved = 0;
  for (int64_t i = 0; la && ln && i < n1 && i < n2; i++) moved = fmax(moved, fabs(la[i] - ln[i]));
  CHECK_MSG(moved > 0.1, "the LoRA moves the latent by only %g", moved);
  const char *same[] = {"t", "u", "f"};
  for (int k = 0; k < 3; k++) {
    snprintf(p2, sizeof p2, "%s/%s.st", d, same[k]);
    float *l2 = last_latent(p2, &n2);
    CHECK_MSG(la && l2 && n2 == n1 && !memcmp(la, l2, (size_t)n1 * sizeof *la), "%s differs from --lora", same[k]);
    free(l2);
  }
  free(la), free(lm), free(ln);
  /* the parameters text: the prompt as written, Lora hashes with the addnet hash */
  size_t len;
  unsigned char *bytes = (unsigned char *)test_read_file(lora, &len);
  char hex[65] = "", want[200];
  if (bytes && len > 8) {
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = hn << 8 | bytes[i];
    struct sha256 h;
    sha256_init(&h);
    sha256_update(&h, bytes + 8 + hn, len - 8 - hn);
    sha256_hex(&h, hex);
  }
  free(bytes);
  snprintf(want, sizeof want, "Lora hashes: \"style: %.12s\"", hex);
  snprintf(p2, sizeof p2, "%s/out/t.png", d);
  CHECK_MSG(run("%s info %s", bin, p2) == 0 && strstr(out, "a red cube <lora:style:0.7>\n") && strstr(out, want),
            "parameters (want %s): %s", want, out);
  /* encode and unet alone against the merged checkpoint */
  snprintf(p1, sizeof p1, "%s/e1.st", d);
  snprintf(p2, sizeof p2, "%s/e2.st", d);
  CHECK(run("%s encode --model %s --config %s --tokenizer %s --precision fp32 --prompt 'a red cube' --lora %s:0.7 -o %s", bin,
            ckpt, cfg, vocab, lora, p1) == 0);
  CHECK(run("%s encode --model %s --config %s --tokenizer %s --precision fp32 --prompt 'a red cube' -o %s", bin, merged, cfg,
            vocab, p2) == 0);
  struct safetensors *e2 = NULL;
  if (!safetensors_open(p2, &e2)) {
    check_file_tensor("encode --lora vs the offline merge", p1, "cond", e2, "cond", 77 * 64, 1e-5, 1e-4);
    safetensors_close(e2);
  } else {
    CHECK_MSG(false, "encode on the merged checkpoint wrote nothing");
  }
  snprintf(cmd, sizeof cmd, "%s/uin.st", d);
  {
    float x[4 * 8 * 8], t = 700, ctx[77 * 64];
    test_random(x, 4 * 8 * 8, 12), test_random(ctx, 77 * 64, 13);
    const char *names[] = {"x", "t", "context"};
    const float *data[] = {x, &t, ctx};
    int64_t shapes[][4] = {{1, 4, 8, 8}, {1}, {1, 77, 64}};
    int ndims[] = {4, 1, 3};
    struct st_writer *w = NULL;
    CHECK_OK(st_writer_create(&w));
    for (int i = 0; i < 3; i++) st_writer_add(w, names[i], ST_F32, ndims[i], shapes[i], data[i]);
    CHECK_OK(st_writer_finish(w, cmd));
    st_writer_destroy(w);
  }
  snprintf(p1, sizeof p1, "%s/u1.st", d);
  snprintf(p2, sizeof p2, "%s/u2.st", d);
  CHECK(run("%s unet --model %s --config %s --precision fp32 --in %s --lora %s:0.7 --lora-strict -o %s", bin, ckpt, cfg, cmd,
            lora, p1) == 0 && strstr(out, "8 of 10 modules merged"));
  CHECK(run("%s unet --model %s --config %s --precision fp32 --in %s -o %s", bin, merged, cfg, cmd, p2) == 0);
  if (!safetensors_open(p2, &e2)) {
    check_file_tensor("unet --lora vs the offline merge", p1, "eps", e2, "eps", 4 * 8 * 8, 1e-5, 1e-4);
    safetensors_close(e2);
  }
  /* refused, nothing written */
  rc = run("%s --prompt x %s --lora %s/none.safetensors --output r1.png -o %s/out", base, job, d, d);
  CHECK_MSG(rc == 1 && strstr(out, "none.safetensors") && !exists("%s/out/%s", d, "r1.png"), "missing --lora: %s", out);
  rc = run("%s --prompt 'x <lora:nope>' %s --lora-dir %s/loras --output r2.png -o %s/out", base, job, d, d);
  CHECK_MSG(rc == 1 && strstr(out, "<lora:nope>") && strstr(out, "loras/nope.safetensors is not there"), "missing tag: %s", out);
  rc = run("%s --prompt 'x <lora:style:a:b>' %s --lora-dir %s/loras --output r3.png -o %s/out", base, job, d, d);
  CHECK_MSG(rc == 1 && strstr(out, "strength must be a number"), "bad tag: %s", out);
  CHECK(run("%s --prompt x --lora %s:1e9 -o %s/out", base, lora, d) == 2 && strstr(out, "--lora"));
  rc = run("%s --prompt x %s --lora %s --output r4.png -o %s/out", base, job, ckpt, d);
  CHECK_MSG(rc == 1 && strstr(out, "no LoRA tensors") && !exists("%s/out/%s", d, "r4.png"), "a checkpoint as LoRA: %s", out);
  { /* one key the model lacks: skipped with a warning, or the job refused under --lora-strict */
    float dn[4 * 32], up[32 * 4];
    test_random(dn, 4 * 32, 1), test_random(up, 32 * 4, 2);
    struct st_writer *w = NULL;
    CHECK_OK(st_writer_create(&w));
    st_writer_add(w, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", ST_F32, 2,
                  (int64_t[]){4, 32}, dn);
    st_writer_add(w, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight", ST_F32, 2,
                  (int64_t[]){32, 4}, up);
    st_writer_add(w, "lora_unet_mid_block_attentions_9_proj_out.lora_down.weight", ST_F32, 2, (int64_t[]){4, 32}, dn);
    st_writer_add(w, "lora_unet_mid_block_attentions_9_proj_out.lora_up.weight", ST_F32, 2, (int64_t[]){32, 4}, up);
    snprintf(p1, sizeof p1, "%s/odd.safetensors", d);
    CHECK_OK(st_writer_finish(w, p1));
    st_writer_destroy(w);
  }
  rc = run("%s --prompt x %s --lora %s --output r5.png -o %s/out", base, job, p1, d);
  CHECK_MSG(rc == 0 && strstr(out, "warning: 1 LoRA key(s) match no tensor") && strstr(out, "mid_block_attentions_9"),
            "unmatched key: %s", out);
  rc = run("%s --prompt x %s --lora %s --lora-strict --output r6.png -o %s/out", base, job, p1, d);
  CHECK_MSG(rc == 1 && strstr(out, "lora_unet_mid_block_attentions_9_proj_out' matches no tensor") &&
                !exists("%s/out/%s", d, "r6.png"), "--lora-strict: %s", out);
  printf("  LoRA CLI: --lora, <lora:...>, \"loras\" agree; encode/unet --lora match the offline merge; bad input refused\n");
}

int main(void) {
  const char *bin = VKD_BINARY;
  char digest[1024], vocab[1024], ckpt[512], cfg[512];
  test_shared_path(digest, sizeof digest, "ref/goldens/weights_digest_unet_vae_tiny_seed1.json");
  test_shared_path(vocab, sizeof vocab, "clip");
  if (access(digest, R_OK) || access(vocab, R_OK)) return test_skip("../shared/ref goldens or ../shared/clip missing");
  snprintf(dir, sizeof dir, "/tmp/vkd_test_generate_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny_sd.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  CHECK(write_sd_checkpoint(ckpt, digest, ST_F32, 1, clip_spec("tiny")) == 0);
  write_text("config.json", "{\"text_encoder\": {\"num_attention_heads\": 4}, \"unet\": {\"num_attention_heads\": 2}}");
  snprintf(base, sizeof base, "%s generate --model %s --config %s --tokenizer %s --quiet", bin, ckpt, cfg, vocab);

  /* one image, parameters round trip */
  int rc = run("%s --prompt 'a photograph of an astronaut riding a horse' --negative-prompt 'blurry' --width 64 "
               "--height 48 --steps 3 --seed 42 --cfg-scale 7.5 --sampler dpmpp_2m --schedule karras --clip-skip 2 "
               "--output one.png -o %s/a", base, dir);
  CHECK_MSG(rc == 0, "generate failed: %s", out);
  char png[600];
  snprintf(png, sizeof png, "%s/a/one.png", dir);
  CHECK(run("%s info %s", bin, png) == 0);
  CHECK_MSG(strstr(out, "a photograph of an astronaut riding a horse\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M, "
                        "Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 64x48, Model: tiny_sd, Clip skip: 2") != NULL,
            "parameters: %s", out);
  /* determinism: the same job twice gives the same bytes */
  rc = run("%s --prompt 'a photograph of an astronaut riding a horse' --negative-prompt 'blurry' --width 64 "
           "--height 48 --steps 3 --seed 42 --cfg-scale 7.5 --sampler dpmpp_2m --schedule karras --clip-skip 2 "
           "--output one.png -o %s/b", base, dir);
  CHECK(rc == 0);
  size_t na, nb;
  char pb[600];
  snprintf(pb, sizeof pb, "%s/b/one.png", dir);
  char *a = test_read_file(png, &na), *b = test_read_file(pb, &nb);
  CHECK_MSG(a && b && na == nb && !memcmp(a, b, na), "two runs with the same seed differ");
  printf("  determinism: %zu-byte PNGs, %s\n", na, a && b && na == nb && !memcmp(a, b, na) ? "identical" : "DIFFERENT");
  free(a), free(b);

  /* --literal reaches the text encoder: "(cat:1.5)" as text differs from the weighted cat */
  rc = run("%s --prompt '(cat:1.5)' --width 32 --height 32 --steps 1 --seed 3 --output lit.png --literal -o %s/a", base, dir);
  CHECK(rc == 0);
  rc = run("%s --prompt '(cat:1.5)' --width 32 --height 32 --steps 1 --seed 3 --output syn.png -o %s/a", base, dir);
  CHECK(rc == 0);
  char lp[600], sp[600];
  snprintf(lp, sizeof lp, "%s/a/lit.png", dir);
  snprintf(sp, sizeof sp, "%s/a/syn.png", dir);
  a = test_read_file(lp, &na);
  b = test_read_file(sp, &nb);
  CHECK_MSG(a && b && (na != nb || memcmp(a, b, na)), "--literal made no difference");
  free(a), free(b);

  /* a batch file with one bad job: the others run, the bad one is reported, exit 1 */
  write_text("batch.json",
             "[{\"prompt\": \"a red circle\", \"seed\": 1, \"steps\": 2, \"width\": 32, \"height\": 32, \"batch_count\": 2},\n"
             " {\"prompt\": \"a blue square\", \"steps\": 0},\n"
             " {\"prompt\": \"a green ring\", \"seed\": 3, \"steps\": 2, \"width\": 32, \"height\": 32, \"sampler\": \"ddim\","
             " \"output\": \"{prompt}-{seed}.png\"}]");
  rc = run("%s %s/batch.json -o %s/c", base, dir, dir);
  CHECK_MSG(rc == 1, "batch with a bad job: exit %d: %s", rc, out);
  CHECK(strstr(out, "batch.json, job 2: \"steps\" 0 is outside 1..1000 (job skipped)") != NULL);
  CHECK(strstr(out, "3 of 4 images written; 1 failed (1 invalid jobs)") != NULL);
  char c3[600];
  snprintf(c3, sizeof c3, "%s/c", dir);
  CHECK(count_png(c3) == 3);
  snprintf(c3, sizeof c3, "%s/c/a-green-ring-3.png", dir);
  CHECK(access(c3, R_OK) == 0);
  printf("  batch with a bad job: %s", out);

  /* --noise replaces the RNG: with euler (no per-step noise) two different --seeds give the same
   * latents, which are the golden's (the golden's prompt, empty negative, cfg 7.5, fp32), and a run
   * without --noise differs; --save-latents writes every step */
  char gold[1024];
  test_shared_path(gold, sizeof gold, "ref/goldens/sample_tiny.safetensors");
  float *runs[3] = {NULL, NULL, NULL};
  const char *noise_arg[3] = {"--noise", "--noise", ""}, *noise_file[3] = {gold, gold, ""};
  for (int k = 0; k < 3; k++) {
    rc = run("%s --prompt 'a photograph of an astronaut riding a horse' --width 32 --height 32 --steps 4 --sampler euler "
             "--cfg-scale 7.5 --precision fp32 --seed %d %s %s --save-latents %s/lat%d.safetensors --output n%d.png -o %s/d",
             base, k + 1, noise_arg[k], noise_file[k], dir, k, k, dir);
    CHECK_MSG(rc == 0, "--noise run %d: %s", k, out);
    char lat[600];
    snprintf(lat, sizeof lat, "%s/lat%d.safetensors", dir, k);
    int64_t dims[5] = {0};
    runs[k] = read_latents(lat, dims);
    /* the tiny VAE has factor 2: a 32x32 image is a 16x16 latent, as in sample_tiny */
    CHECK(runs[k] && dims[0] == 4 && dims[1] == 1 && dims[2] == 4 && dims[3] == 16 && dims[4] == 16);
  }
  if (runs[0] && runs[1] && runs[2]) {
    size_t nl = 4 * 4 * 16 * 16;
    CHECK_MSG(!memcmp(runs[0], runs[1], nl * sizeof(float)), "--noise: seeds 1 and 2 gave different latents");
    CHECK_MSG(memcmp(runs[0], runs[2], nl * sizeof(float)) != 0, "--noise: the same latents as without --noise");
    struct safetensors *gs = NULL;
    CHECK_OK(safetensors_open(gold, &gs));
    float *ref = gs ? test_tensor(gs, "euler.latents", NULL) : NULL;
    CHECK(ref != NULL);
    if (ref) CHECK_CLOSE("generate --noise: euler latents against the golden (fp32)", runs[0], ref, nl, 2e-3, 1e-4);
    free(ref);
    safetensors_close(gs);
  }
  for (int k = 0; k < 3; k++) free(runs[k]);
  printf("  --noise: the same latents for seeds 1 and 2, the golden's; a run without it differs\n");
  /* a batch of 2 needs noise for 2 images: the golden holds one */
  rc = run("%s --prompt x --width 32 --height 32 --steps 4 --sampler euler_a --noise %s --batch-count 2 -o %s/d", base, gold, dir);
  CHECK_MSG(rc == 1 && strstr(out, "needs `noise` [N >= 2, 4, 16, 16]"), "--noise, batch of 2: %s", out);
  char lat[600];
  /* --save-latents keeps every image of a batch: image 1 of a batch of 2 (seed 8) is the single image of seed 8 */
  float *lat2 = NULL, *lat1 = NULL;
  int64_t dims2[5] = {0}, dims1[5] = {0};
  rc = run("%s --prompt 'a red ring' --width 32 --height 32 --steps 3 --seed 7 --batch-count 2 --save-latents %s/l2.safetensors "
           "-o %s/e", base, dir, dir);
  CHECK_MSG(rc == 0, "--save-latents, batch of 2: %s", out);
  rc = run("%s --prompt 'a red ring' --width 32 --height 32 --steps 3 --seed 8 --save-latents %s/l1.safetensors -o %s/e",
           base, dir, dir);
  CHECK_MSG(rc == 0, "--save-latents, one image: %s", out);
  snprintf(lat, sizeof lat, "%s/l2.safetensors", dir);
  lat2 = read_latents(lat, dims2);
  snprintf(lat, sizeof lat, "%s/l1.safetensors", dir);
  lat1 = read_latents(lat, dims1);
  CHECK(lat2 && lat1 && dims2[0] == 3 && dims2[1] == 2 && dims1[0] == 3 && dims1[1] == 1 && dims2[4] == dims1[4]);
  if (lat2 && lat1 && dims2[1] == 2 && dims1[1] == 1 && dims2[0] == dims1[0]) {
    size_t per = (size_t)dims1[2] * dims1[3] * dims1[4];
    bool same = true, differs = false;
    for (int64_t k = 0; k < dims1[0]; k++) {
      same &= memcmp(lat2 + ((size_t)k * 2 + 1) * per, lat1 + (size_t)k * per, per * sizeof *lat1) == 0;
      differs |= memcmp(lat2 + (size_t)k * 2 * per, lat1 + (size_t)k * per, per * sizeof *lat1) != 0;
    }
    CHECK_MSG(same, "--save-latents: image 1 of the batch differs from the same seed alone");
    CHECK_MSG(differs, "--save-latents: image 0 of the batch equals image 1");
  }
  free(lat2), free(lat1);
  printf("  --save-latents: a batch of 2 keeps both images' steps\n");
  /* vkdiffusion unet / decode against the goldens through files (fp32 path bounds) */
  char ugold[1024], vgold[1024], eps_path[600], img_path[600];
  test_shared_path(ugold, sizeof ugold, "ref/goldens/unet_tiny.safetensors");
  test_shared_path(vgold, sizeof vgold, "ref/goldens/vae_tiny.safetensors");
  snprintf(eps_path, sizeof eps_path, "%s/eps.safetensors", dir);
  snprintf(img_path, sizeof img_path, "%s/img.safetensors", dir);
  CHECK(run("%s unet --model %s --config %s --precision fp32 --in %s -o %s", bin, ckpt, cfg, ugold, eps_path) == 0);
  CHECK(run("%s decode --model %s --precision fp32 --in %s -o %s", bin, ckpt, vgold, img_path) == 0);
  const char *pairs[2][3] = {{eps_path, ugold, "eps"}, {img_path, vgold, "image"}};
  for (int k = 0; k < 2; k++) {
    struct safetensors *got = NULL, *ref = NULL;
    CHECK_OK(safetensors_open(pairs[k][0], &got));
    CHECK_OK(safetensors_open(pairs[k][1], &ref));
    const struct st_tensor *tg = got ? safetensors_find(got, pairs[k][2]) : NULL, *tr = ref ? safetensors_find(ref, pairs[k][2]) : NULL;
    CHECK(tg && tr && tg->numel == tr->numel);
    if (tg && tr && tg->numel == tr->numel) {
      float *vg = malloc((size_t)tg->numel * 4), *vr = malloc((size_t)tr->numel * 4);
      safetensors_read_f32(got, tg, vg);
      safetensors_read_f32(ref, tr, vr);
      char what[64];
      snprintf(what, sizeof what, "vkdiffusion %s -> %s", k ? "decode" : "unet", pairs[k][2]);
      CHECK_CLOSE(what, vg, vr, (size_t)tg->numel, 1e-4, 1e-4);
      free(vg), free(vr);
    }
    safetensors_close(got);
    safetensors_close(ref);
  }
  /* bad input: nothing half-written, clear messages */
  CHECK(run("%s --prompt x --width 36 -o %s/e", base, dir) == 1 && strstr(out, "\"width\" 36"));
  CHECK(run("%s %s/missing.json -o %s/e", base, dir, dir) == 1 && strstr(out, "missing.json"));
  /* no --model: $VKDIFFUSION_MODEL (here a file that is not there: a clear error, exit 1) */
  CHECK(run("VKDIFFUSION_MODEL=%s/nothing.safetensors %s generate --prompt x -o %s/e", dir, bin, dir) == 1 &&
        strstr(out, "nothing.safetensors"));
  CHECK(run("%s generate -o %s/e", bin, dir) == 2); /* no prompt */
  test_hostile(bin, ckpt, cfg, vocab);
  test_families(bin, vocab, digest);
  test_sharding(bin);
  test_vae_encode_cli(bin, ckpt);
  test_img2img_cli(bin, ckpt);
  test_taesd_cli(bin, cfg, vocab, digest);
  test_lora_cli(bin, ckpt, cfg, vocab);
  snprintf(c3, sizeof c3, "rm -rf %s", dir);
  CHECK(system(c3) == 0);
  return test_result("test_generate");
}
