/* The CLIP vision tower against ../shared/ref/goldens/vision_tiny and vision_vitb32 (checkpoints
 * from the weight rule, seed 1). Tolerances (../shared/ref/README.md): fp32 path 1e-4 x the
 * largest output value (pooled/embeds ~4e-4, last_hidden_state scaled likewise); fp16 weights
 * 1e-2 x the largest value. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "clip_vision.h"
#include "test.h"

static double max_abs(const float *v, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

static void golden(struct gpu *gpu, const char *label, const char *ckpt, const char *gold_name, bool fp16, int heads) {
  char gpath[1024];
  test_shared_path(gpath, sizeof gpath, gold_name);
  struct safetensors *gold = NULL, *st = NULL;
  CHECK_OK(safetensors_open(gpath, &gold));
  CHECK_OK(safetensors_open(ckpt, &st));
  struct clip_vision *m = NULL;
  if (st) CHECK_OK(clip_vision_load(gpu, st, fp16, heads, -1, &m));
  if (m && gold) {
    const struct clip_vision_config *c = clip_vision_config(m);
    size_t np, ne, nl, npx;
    float *px = test_tensor(gold, "pixels", &npx), *rp = test_tensor(gold, "pooled", &np);
    float *re = test_tensor(gold, "image_embeds", &ne), *rl = test_tensor(gold, "last_hidden_state", &nl);
    int N = (int)(npx / (3 * (size_t)c->image * c->image));
    float *p = malloc(np * 4), *e = malloc(ne * 4), *l = malloc(nl * 4);
    CHECK_OK(clip_vision_forward(m, px, N, p, e, l));
    double k = fp16 ? 1e-2 : 1e-4;
    char what[128];
    snprintf(what, sizeof what, "%s pooled", label);
    CHECK_CLOSE(what, p, rp, np, k * max_abs(rp, np), 0);
    snprintf(what, sizeof what, "%s image_embeds", label);
    CHECK_CLOSE(what, e, re, ne, k * max_abs(re, ne), 0);
    snprintf(what, sizeof what, "%s last_hidden_state", label);
    CHECK_CLOSE(what, l, rl, nl, k * max_abs(rl, nl), 0);
    free(px), free(rp), free(re), free(rl), free(p), free(e), free(l);
  }
  clip_vision_destroy(m);
  safetensors_close(st);
  safetensors_close(gold);
}

int main(void) {
  char probe[1024], dir[256], ckpt[512];
  test_shared_path(probe, sizeof probe, "ref/goldens/vision_tiny.safetensors");
  if (access(probe, R_OK)) return test_skip("cannot read ../shared/ref/goldens/vision_tiny.safetensors");
  int rc = 0;
  struct gpu *gpu = test_gpu(&rc);
  if (!gpu) return rc;
  snprintf(dir, sizeof dir, "/tmp/vkd_test_vision_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny.safetensors", dir);
  CHECK(write_vision_checkpoint(ckpt, vision_spec("tiny"), NULL, ST_F32, 1) == 0);
  golden(gpu, "tiny fp32", ckpt, "ref/goldens/vision_tiny.safetensors", false, 4); /* tiny: 4 heads of 16 */
  golden(gpu, "tiny fp16", ckpt, "ref/goldens/vision_tiny.safetensors", true, 4);
  unlink(ckpt);
  snprintf(ckpt, sizeof ckpt, "%s/vitb32.safetensors", dir);
  CHECK(write_vision_checkpoint(ckpt, vision_spec("vitb32"), NULL, ST_F32, 1) == 0);
  golden(gpu, "vitb32 fp32", ckpt, "ref/goldens/vision_vitb32.safetensors", false, 0); /* 12 heads of 64 */
  golden(gpu, "vitb32 fp16", ckpt, "ref/goldens/vision_vitb32.safetensors", true, 0);
  unlink(ckpt);
  rmdir(dir);
  test_gpu_done(gpu);
  return test_result("test_vision");
}
