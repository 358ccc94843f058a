/* vkdiffusion classify / embed-image end to end on the tiny CLIPModel (weight rule): embeddings of
 * the golden pixels through files (4e-4), probabilities that agree with the library's and sum to
 * 1, and malformed images (truncated PNG, not an image, 100000x1) each with a clear error while
 * grey and RGBA images are converted. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image_write.h>

#include <zlib.h>

#include "checkpoint.h"
#include "test.h"

static char out[16384];

#define run(...) test_run(out, sizeof out, __VA_ARGS__)

static void be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void chunk(FILE *f, const char *type, const unsigned char *data, uint32_t n) {
  unsigned char hdr[8];
  be32(hdr, n);
  memcpy(hdr + 4, type, 4);
  fwrite(hdr, 1, 8, f);
  if (n) fwrite(data, 1, n, f);
  uLong crc = crc32(crc32(0, NULL, 0), hdr + 4, 4);
  if (n) crc = crc32(crc, data, n);
  unsigned char c[4];
  be32(c, (uint32_t)crc);
  fwrite(c, 1, 4, f);
}

/* A PNG written by hand: RGB at 8 or 16 bits per sample (stb_image_write makes neither 16-bit nor 0x0) */
static void write_png(const char *path, int w, int h, int depth) {
  FILE *f = fopen(path, "wb");
  fwrite("\x89PNG\r\n\x1a\n", 1, 8, f);
  unsigned char ihdr[13] = {0};
  be32(ihdr, (uint32_t)w);
  be32(ihdr + 4, (uint32_t)h);
  ihdr[8] = (unsigned char)depth;
  ihdr[9] = 2; /* RGB */
  chunk(f, "IHDR", ihdr, 13);
  size_t row = 1 + (size_t)w * 3 * depth / 8, raw_n = row * (size_t)h;
  unsigned char *raw = calloc(raw_n + 1, 1);
  for (size_t i = 0; i < raw_n; i++) raw[i] = i % row ? (unsigned char)(i * 7) : 0; /* filter 0 each row */
  uLongf zn = compressBound((uLong)raw_n) + 16;
  unsigned char *z = malloc(zn);
  compress(z, &zn, raw, (uLong)raw_n);
  chunk(f, "IDAT", z, (uint32_t)zn);
  chunk(f, "IEND", NULL, 0);
  fclose(f);
  free(raw), free(z);
}

int main(void) {
  const char *bin = VKD_BINARY;
  char dir[256], ckpt[512], cfg[512], vocab[1024], gold[1024], emb[600], img[600];
  test_shared_path(vocab, sizeof vocab, "clip");
  test_shared_path(gold, sizeof gold, "ref/goldens/zeroshot_tiny.safetensors");
  if (access(gold, R_OK) || access(vocab, R_OK)) return test_skip("../shared goldens or vocabulary missing");
  snprintf(dir, sizeof dir, "/tmp/vkd_test_classify_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/clip.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  CHECK(write_vision_checkpoint(ckpt, vision_spec("tiny"), clip_spec("tiny"), ST_F32, 1) == 0);
  FILE *f = fopen(cfg, "w");
  fputs("{\"text_encoder\": {\"num_attention_heads\": 4}, \"vision_model\": {\"num_attention_heads\": 4}}", f);
  fclose(f);
  /* embed-image --pixels: the golden's image_embeds through files */
  snprintf(emb, sizeof emb, "%s/emb.safetensors", dir);
  int rc = run("%s embed-image --model %s --config %s --precision fp32 --pixels %s -o %s", bin, ckpt, cfg, gold, emb);
  CHECK_MSG(rc == 0, "embed-image: %s", out);
  struct safetensors *a = NULL, *b = NULL;
  CHECK_OK(safetensors_open(emb, &a));
  CHECK_OK(safetensors_open(gold, &b));
  if (a && b) {
    size_t n1 = 0, n2 = 0;
    float *x = test_tensor(a, "image_embeds", &n1), *y = test_tensor(b, "image_embeds", &n2);
    CHECK(x && y && n1 == n2);
    if (x && y && n1 == n2) CHECK_CLOSE("embed-image --pixels image_embeds", x, y, n1, 4e-4, 0);
    CHECK(safetensors_find(a, "pooled") && safetensors_find(a, "pixels"));
    free(x), free(y);
  }
  safetensors_close(a);
  safetensors_close(b);
  /* classify a picture: JSON, top 3, probabilities summing to at most 1 */
  unsigned char pic[96 * 80 * 4];
  for (int i = 0; i < 96 * 80; i++) pic[4 * i] = (unsigned char)(i % 96 * 2), pic[4 * i + 1] = (unsigned char)(i / 96 * 3), pic[4 * i + 2] = 90, pic[4 * i + 3] = 255;
  snprintf(img, sizeof img, "%s/rgba.png", dir);
  stbi_write_png(img, 96, 80, 4, pic, 96 * 4); /* RGBA: alpha dropped */
  char grey[600];
  snprintf(grey, sizeof grey, "%s/grey.png", dir);
  stbi_write_png(grey, 96, 80, 1, pic, 96); /* one channel: replicated */
  rc = run("%s classify --model %s --config %s --tokenizer %s --precision fp32 --image %s --image %s --labels 'dog, cat,car,tree,boat' "
           "--template 'a photo of a {}.' --top 3 --json", bin, ckpt, cfg, vocab, img, grey);
  CHECK_MSG(rc == 0, "classify: %s", out);
  double sum = 0;
  int count = 0;
  for (char *p = out; (p = strstr(p, "\"prob\": ")); p += 8, count++) sum += atof(p + 8);
  CHECK_MSG(count == 6 && sum > 0.2 && sum <= 2.0 + 1e-6, "classify output: %s", out);
  printf("  classify: %s", out);
  /* generate --score-with: the score is printed and stored in the PNG's parameters */
  char digest[1024], sd[600];
  test_shared_path(digest, sizeof digest, "ref/goldens/weights_digest_unet_vae_tiny_seed1.json");
  snprintf(sd, sizeof sd, "%s/sd.safetensors", dir);
  CHECK(write_sd_checkpoint(sd, digest, ST_F32, 1, clip_spec("tiny")) == 0);
  f = fopen(cfg, "w");
  fputs("{\"text_encoder\": {\"num_attention_heads\": 4}, \"vision_model\": {\"num_attention_heads\": 4}, "
        "\"unet\": {\"num_attention_heads\": 2}}", f);
  fclose(f);
  rc = run("%s generate --model %s --config %s --tokenizer %s --score-with %s --score-config %s --prompt 'a red circle' "
           "--width 32 --height 32 --steps 2 --seed 5 --output s.png -o %s --quiet", bin, sd, cfg, vocab, ckpt, cfg, dir);
  CHECK_MSG(rc == 0 && strstr(out, "CLIP score "), "generate --score-with: %s", out);
  char spng[600];
  snprintf(spng, sizeof spng, "%s/s.png", dir);
  CHECK(run("%s info %s", bin, spng) == 0 && strstr(out, ", CLIP score: "));
  printf("  generate --score-with: %s", out);
  /* the manifest line carries the score; --skip-existing keeps the scored image (its parameters are
   * this image's, the score after them aside) and adds no line */
  char man[700];
  snprintf(man, sizeof man, "%s/manifest.jsonl", dir);
  char *mtext = test_read_file(man, NULL);
  CHECK_MSG(mtext && strstr(mtext, "\"clip_score\":") && strstr(mtext, "/s.png\""), "manifest: %s", mtext ? mtext : "(none)");
  free(mtext);
  rc = run("%s generate --model %s --config %s --tokenizer %s --score-with %s --score-config %s --prompt 'a red circle' "
           "--width 32 --height 32 --steps 2 --seed 5 --output s.png -o %s --skip-existing", bin, sd, cfg, vocab, ckpt, cfg, dir);
  CHECK_MSG(rc == 0 && strstr(out, "0 images written") && strstr(out, "1 skipped"), "--skip-existing with a score: %s", out);
  mtext = test_read_file(man, NULL);
  int lines = 0;
  for (const char *q = mtext; q && *q; q++) lines += *q == '\n';
  CHECK_MSG(lines == 1, "%d manifest lines after the skipping rerun", lines);
  free(mtext);
  /* malformed images: a clear error naming the file */
  char bad[600];
  snprintf(bad, sizeof bad, "%s/truncated.png", dir);
  f = fopen(img, "rb");
  char buf[200];
  size_t nb = fread(buf, 1, sizeof buf, f);
  fclose(f);
  f = fopen(bad, "wb");
  fwrite(buf, 1, nb / 2, f);
  fclose(f);
  CHECK(run("%s embed-image --model %s --config %s --image %s -o %s/x.safetensors", bin, ckpt, cfg, bad, dir) == 1 &&
        strstr(out, "truncated.png"));
  printf("  truncated PNG -> %s", out);
  CHECK(run("%s embed-image --model %s --config %s --image %s -o %s/x.safetensors", bin, ckpt, cfg, cfg, dir) == 1 &&
        strstr(out, "config.json") && strstr(out, "not a readable image"));
  snprintf(bad, sizeof bad, "%s/deep.png", dir); /* 16 bits per sample: reduced to 8 */
  write_png(bad, 40, 30, 16);
  CHECK_MSG(run("%s embed-image --model %s --config %s --image %s -o %s/x.safetensors", bin, ckpt, cfg, bad, dir) == 0,
            "16-bit PNG: %s", out);
  snprintf(bad, sizeof bad, "%s/empty.png", dir); /* 0x0 */
  write_png(bad, 0, 0, 8);
  CHECK(run("%s embed-image --model %s --config %s --image %s -o %s/x.safetensors", bin, ckpt, cfg, bad, dir) == 1 &&
        strstr(out, "empty.png"));
  printf("  0x0 PNG -> %s", out);
  unsigned char *line = calloc(100000, 3);
  snprintf(bad, sizeof bad, "%s/line.png", dir);
  stbi_write_png(bad, 100000, 1, 3, line, 300000);
  free(line);
  /* an extreme aspect ratio is embedded like any image: the crop computes only what it keeps (it
   * used to resize to 22400000x224 first: refused, or 22 s at 336000x224) */
  double t0 = test_now();
  int rc_line = run("%s embed-image --model %s --config %s --image %s -o %s/x.safetensors", bin, ckpt, cfg, bad, dir);
  double t_line = test_now() - t0;
  CHECK_MSG(rc_line == 0, "100000x1 PNG: %s", out);
  printf("  100000x1 PNG embedded in %.2f s (the command, device start included)\n", t_line);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return test_result("test_classify");
}
