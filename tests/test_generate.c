/* vkdiffusion generate end to end on the tiny random checkpoint (weight rule): PNGs written with
 * their parameters (read back by `info`), bit-identical reruns, a batch file with one bad job
 * (reported, the others still run, exit 1), --noise/--save-latents against the sampler golden.
 * The job-file parser alone is test_job_file. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "test.h"

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
  CHECK_MSG(rc == 1 && strstr(out, "needs `noise` [N >= 2, 4, h, w]"), "--noise, batch of 2: %s", out);
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
  snprintf(c3, sizeof c3, "rm -rf %s", dir);
  CHECK(system(c3) == 0);
  return test_result("test_generate");
}
