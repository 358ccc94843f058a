/* The vkdiffusion command line end to end: help texts, devices, tokenize against the golden
 * ids, encode writing a safetensors file whose cond matches the library, and bad input giving
 * a one-line error and a non-zero exit with no output file left behind. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "test.h"

static char dir[256], out[8192];

/* Runs cmd (stdout+stderr captured into out); returns the exit status. */
#define run(...) test_run(out, sizeof out, __VA_ARGS__)

static bool exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

static float *tensor(struct safetensors *st, const char *name, int ndim, const int64_t *shape) {
  const struct st_tensor *t = safetensors_find(st, name);
  bool ok = t && t->dtype == ST_F32 && t->ndim == ndim;
  for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
  CHECK_MSG(ok, "tensor '%s' missing or of another shape", name);
  size_t n;
  return ok ? test_tensor(st, name, &n) : NULL;
}

/* encode with an SDXL checkpoint (the tiny towers): diffusers' names with the golden values; the
 * empty negative as zeros (default) and encoded; --family, sizes and errors */
static void test_encode_sdxl(const char *bin, const char *vocab) {
  char ckpt[512], cfg[512], o[512], gpath[1024];
  snprintf(ckpt, sizeof ckpt, "%s/sdxl.safetensors", dir);
  snprintf(o, sizeof o, "%s/sdxl_cond.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/sdxl.json", dir);
  test_write_text(dir, "sdxl.json", "{\"text_encoder\": {\"num_attention_heads\": 4}, "
                                    "\"text_encoder_2\": {\"num_attention_heads\": 4}}");
  CHECK(write_sdxl_text_checkpoint(ckpt, clip_spec("tiny"), clip_spec("tiny_gelu"), ST_F32, 1, NULL) == 0);
  test_shared_path(gpath, sizeof gpath, "ref/goldens/sdxl_cond_tiny.safetensors");
  struct safetensors *g = NULL;
  if (safetensors_open(gpath, &g)) {
    test_failures++;
    return;
  }
  size_t n;
  float *crossattn = test_tensor(g, "crossattn", &n), *pooled = test_tensor(g, "pooled", &n);
  float *y = test_tensor(g, "y", &n), *y_uncond = test_tensor(g, "y_uncond_zero", &n);
  CHECK(run("%s info %s", bin, ckpt) == 0 && strstr(out, "family: SDXL (sdxl)") && strstr(out, "CLIP text 2"));
  for (int mode = 0; mode < 2; mode++) {
    unlink(o);
    int rc = run("%s encode --model %s --config %s --tokenizer %s --precision fp32 --verbose%s "
                 "--prompt 'a photograph of an astronaut riding a horse' --prompt 'A cozy cabin in snowy mountains, warm "
                 "light, 35mm photo, highly detailed' --original-size 896,1152 --crop 16,32 --target-size 1024,768 -o %s",
                 bin, ckpt, cfg, vocab, mode ? " --empty-negative encode" : "", o);
    CHECK_MSG(rc == 0 && strstr(out, "family sdxl"), "encode sdxl: %s", out);
    struct safetensors *st = NULL;
    if (rc || safetensors_open(o, &st)) {
      test_failures++;
      continue;
    }
    float *pe = tensor(st, "prompt_embeds", 3, (int64_t[]){2, 77, 128});
    float *ppe = tensor(st, "pooled_prompt_embeds", 2, (int64_t[]){2, 64});
    float *ne = tensor(st, "negative_prompt_embeds", 3, (int64_t[]){2, 77, 128});
    float *npe = tensor(st, "negative_pooled_prompt_embeds", 2, (int64_t[]){2, 64});
    float *ty = tensor(st, "y", 2, (int64_t[]){2, 1600}), *tny = tensor(st, "negative_y", 2, (int64_t[]){2, 1600});
    float *tid = tensor(st, "add_time_ids", 2, (int64_t[]){2, 6});
    if (pe && ppe && ne && npe && ty && tny && tid) {
      /* the prompts are golden rows 0 and 2 */
      CHECK_CLOSE("encode sdxl prompt_embeds[0]", pe, crossattn, 77 * 128, 1e-4, 1e-4);
      CHECK_CLOSE("encode sdxl prompt_embeds[1]", pe + 77 * 128, crossattn + 2 * 77 * 128, 77 * 128, 1e-4, 1e-4);
      CHECK_CLOSE("encode sdxl pooled_prompt_embeds[1]", ppe + 64, pooled + 2 * 64, 64, 1e-4, 1e-4);
      CHECK_CLOSE("encode sdxl y[1]", ty + 1600, y + 2 * 1600, 1600, 2e-4, 1e-4);
      const float want_ids[6] = {896, 1152, 16, 32, 1024, 768};
      CHECK(!memcmp(tid, want_ids, sizeof want_ids) && !memcmp(tid + 6, want_ids, sizeof want_ids));
      if (mode == 0) { /* zeros: context and pooled 0, y keeps the sizes */
        bool zero = true;
        for (int i = 0; i < 2 * 77 * 128; i++) zero = zero && ne[i] == 0;
        for (int i = 0; i < 2 * 64; i++) zero = zero && npe[i] == 0;
        CHECK_MSG(zero, "--empty-negative zeros: the negative is not zero");
        CHECK_CLOSE("encode sdxl negative_y (zeros)", tny + 1600, y_uncond, 1600, 2e-4, 1e-4);
      } else { /* encode: the golden row of "" */
        CHECK_CLOSE("encode sdxl negative_prompt_embeds (\"\")", ne + 77 * 128, crossattn + 77 * 128, 77 * 128, 1e-4, 1e-4);
        CHECK_CLOSE("encode sdxl negative_pooled (\"\")", npe, pooled + 64, 64, 1e-4, 1e-4);
      }
    }
    CHECK(!strcmp(safetensors_metadata(st, "empty_negative"), mode ? "encode" : "zeros"));
    free(pe), free(ppe), free(ne), free(npe), free(ty), free(tny), free(tid);
    safetensors_close(st);
  }
  /* --family sd1 on the SDXL file: CLIP-L alone, today's names */
  unlink(o);
  CHECK(run("%s encode --model %s --config %s --tokenizer %s --family sd1 --prompt x -o %s", bin, ckpt, cfg, vocab, o) == 0);
  struct safetensors *st = NULL;
  if (!safetensors_open(o, &st)) {
    const struct st_tensor *t = safetensors_find(st, "cond");
    CHECK(t && t->shape[2] == 64 && !safetensors_find(st, "pooled_prompt_embeds"));
    safetensors_close(st);
  }
  /* errors: one line, non-zero, nothing written */
  unlink(o);
  CHECK(run("%s encode --model %s --family sd3 --prompt x -o %s", bin, ckpt, o) == 2 && strstr(out, "sd3") && !exists(o));
  CHECK(run("%s encode --model %s --config %s --ids '[[49406]]' -o %s", bin, ckpt, cfg, o) == 2 && !exists(o));
  char ids[1024] = "[[49406";
  for (int i = 1; i < 77; i++) strcat(ids, ", 49407");
  strcat(ids, "]]");
  CHECK(run("%s encode --model %s --config %s --tokenizer %s --ids '%s' -o %s", bin, ckpt, cfg, vocab, ids, o) == 1 &&
        strstr(out, "two towers") && !exists(o));
  CHECK(run("%s encode --model %s --crop 16 --prompt x -o %s", bin, ckpt, o) == 2 && strstr(out, "--crop") && !exists(o));
  CHECK(run("%s encode --model %s --width 512 --prompt x -o %s", bin, ckpt, o) == 2 && !exists(o));
  free(crossattn), free(pooled), free(y), free(y_uncond);
  safetensors_close(g);
}

int main(void) {
  const char *bin = VKD_BINARY;
  char vocab[1024];
  test_shared_path(vocab, sizeof vocab, "clip");
  if (!exists(vocab)) return test_skip("the CLIP vocabulary in ../shared/clip is missing");
  snprintf(dir, sizeof dir, "/tmp/vkd_test_cli_%ld", (long)getpid());
  mkdir(dir, 0755);

  CHECK(run("%s --help", bin) == 0 && strstr(out, "encode") && strstr(out, "tokenize") && strstr(out, "devices"));
  const char *cmds[] = {"devices", "bench", "tokenize", "encode"};
  for (int i = 0; i < 4; i++) CHECK_MSG(run("%s %s --help", bin, cmds[i]) == 0 && strstr(out, "usage"), "%s --help", cmds[i]);
  CHECK(run("%s frobnicate", bin) == 2 && strstr(out, "unknown command"));
  int rc = run("%s devices", bin);
  if (rc != 0 || !strstr(out, "llvmpipe")) printf("devices (no lavapipe listed?):\n%s", out);
  CHECK(rc == 0 && strstr(out, "index") && strstr(out, "fp16"));

  /* tokenize: the golden ids of "a photo of a cat", both vocabulary forms */
  CHECK(run("%s tokenize --tokenizer %s 'a photo of a cat'", bin, vocab) == 0);
  CHECK(!strncmp(out, "[49406, 320, 1125, 539, 320, 2368, 49407, 49407", 47));
  CHECK(run("%s tokenize --tokenizer %s/bpe_simple_vocab_16e6.txt.gz --pad zero -- '-a cat'", bin, vocab) == 0);
  CHECK(strstr(out, "49407, 0, 0") != NULL);
  CHECK(run("%s tokenize --tokenizer %s --syntax 'a (cat:1.5) BREAK dog'", bin, vocab) == 0);
  int lines = 0;
  for (char *p = out; (p = strchr(p, '\n')); p++) lines++;
  CHECK(lines == 4 && strstr(out, "1.5"));
  CHECK(run("%s tokenize --tokenizer /nonexistent 'x'", bin) == 1 && strstr(out, "/nonexistent"));
  CHECK(run("%s tokenize --pad sideways x", bin) == 2);

  /* encode with the tiny model (heads from --config) */
  char ckpt[512], cfg[512], o1[512];
  snprintf(ckpt, sizeof ckpt, "%s/tiny.safetensors", dir);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  snprintf(o1, sizeof o1, "%s/emb.safetensors", dir);
  struct ckpt_options co = {.dtype = ST_F16, .prefix = "cond_stage_model.transformer.", .seed = 1};
  CHECK(write_clip_checkpoint(ckpt, clip_spec("tiny"), &co) == 0);
  FILE *f = fopen(cfg, "w");
  fputs("{\"text_encoder\": {\"num_attention_heads\": 4, \"hidden_act\": \"quick_gelu\"}}", f);
  fclose(f);
  rc = run("%s encode --model %s --config %s --tokenizer %s --precision fp32 --verbose "
           "--prompt 'a photo of a cat' --prompt 'a (red:1.2) car' -o %s", bin, ckpt, cfg, vocab, o1);
  CHECK_MSG(rc == 0, "encode failed: %s", out);
  CHECK(strstr(out, "heads 4") && strstr(out, "quick_gelu"));
  struct safetensors *st = NULL;
  CHECK_OK(safetensors_open(o1, &st));
  if (st) {
    const struct st_tensor *t = safetensors_find(st, "cond");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 77 && t->shape[2] == 64);
    t = safetensors_find(st, "ids");
    CHECK(t && t->dtype == ST_I32 && t->shape[0] == 2 && t->shape[1] == 77);
    t = safetensors_find(st, "pooled");
    CHECK(t && t->shape[0] == 2 && t->shape[1] == 64);
    CHECK(safetensors_find(st, "projected") == NULL); /* SD 1.x checkpoints have no projection */
    safetensors_close(st);
  }
  /* --ids equals --prompt for the same ids; --clip-skip is accepted */
  char o2[512];
  snprintf(o2, sizeof o2, "%s/emb_ids.safetensors", dir);
  char ids[1024] = "[[49406, 320, 1125, 539, 320, 2368";
  for (int i = 6; i < 77; i++) strcat(ids, ", 49407");
  strcat(ids, "]]");
  rc = run("%s encode --model %s --config %s --precision fp32 --clip-skip 2 --ids '%s' -o %s", bin, ckpt, cfg, ids, o2);
  CHECK_MSG(rc == 0, "encode --ids failed: %s", out);
  /* VKDIFFUSION_PROFILE=1: GPU time per kernel of the encode on stderr */
  rc = run("env VKDIFFUSION_PROFILE=1 %s encode --model %s --config %s --precision fp32 --ids '%s' -o %s", bin, ckpt, cfg, ids, o2);
  CHECK_MSG(rc == 0 && strstr(out, "profile (GPU time per kernel)") && strstr(out, "layernorm") && strstr(out, "total"),
            "encode with VKDIFFUSION_PROFILE=1: %s", out);
  /* bad input: one line, non-zero, nothing written */
  char o3[512];
  snprintf(o3, sizeof o3, "%s/never.safetensors", dir);
  CHECK(run("%s encode --model /nonexistent.safetensors --prompt x -o %s", bin, o3) == 1 && !exists(o3));
  CHECK(strstr(out, "/nonexistent.safetensors") && strchr(out, '\n') == out + strlen(out) - 1);
  CHECK(run("%s encode --model %s --config %s --ids '[[1, 2]]' -o %s", bin, ckpt, cfg, o3) == 2 && !exists(o3));
  CHECK(run("%s encode --model %s --config %s --tokenizer %s --clip-skip 9 --prompt x -o %s", bin, ckpt, cfg, vocab, o3) == 1 &&
        strstr(out, "clip skip"));
  CHECK(run("%s encode --model %s --prompt x", bin, ckpt) == 2);
  /* encode --prompt-file: every line ending loads at once (a CR or blank without a final LF once
   * hung); UTF-16 and deep JSON are clear errors */
  const char *files[] = {"a red circle\r", "a red circle\r\na cat", "a red circle \nx", "[\"a\", \"b\"]  \r\n",
                          "\xef\xbb\xbf" "a\nb"};
  const int prompts[] = {1, 2, 2, 2, 2};
  for (int k = 0; k < 5; k++) {
    test_write_text(dir, "pf.txt", files[k]);
    char pf[600];
    snprintf(pf, sizeof pf, "%s/pf%d.safetensors", dir, k);
    rc = run("timeout 20 %s encode --model %s --config %s --tokenizer %s --prompt-file %s/pf.txt -o %s", bin, ckpt, cfg,
             vocab, dir, pf);
    struct safetensors *pst = NULL;
    const struct st_tensor *t = rc == 0 && !safetensors_open(pf, &pst) ? safetensors_find(pst, "cond") : NULL;
    CHECK_MSG(t && t->shape[0] == prompts[k], "--prompt-file case %d: rc %d: %s", k, rc, out);
    safetensors_close(pst);
  }
  test_write_text(dir, "pf.txt", "\xff\xfe" "a\0b\0");
  CHECK(run("timeout 20 %s encode --model %s --config %s --prompt-file %s/pf.txt -o %s", bin, ckpt, cfg, dir, o3) != 0 &&
        strstr(out, "UTF-16") && !exists(o3));
  test_encode_sdxl(bin, vocab);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return test_result("test_cli");
}
