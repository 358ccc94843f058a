/* The U-Net against ../shared/ref/goldens/unet_tiny.safetensors and unet_sd15_16x16.safetensors, and
 * the SD 2.x / SDXL ones (unet_{sd21,sdxl}_tiny, unet_{sd21,sdxl}_16x16),
 * with checkpoints built from the weight rule over the key lists of the reference digests.
 * Tolerances (../shared/ref/README.md, CHECK_CLOSE atol + rtol*|ref|): eps fp32 path atol 1e-4
 * rtol 1e-4 (tiny) and 3e-4 (sd15); block traces atol 1e-3 rtol 1e-4; fp16 storage atol 3e-2
 * rtol 3e-2 (traces 5e-2 / 2e-2). sd15 runs on the fp16 path only (its fp32 weights, 3.4 GB, do
 * not fit lavapipe's 2 GB heap); its golden comes from the same F16 weights, so the fp32 bounds apply. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "test.h"
#include "unet.h"

static struct gpu *gpu;


static void run_golden(const char *label, const char *ckpt_path, struct safetensors *gold, bool fp16, int heads,
                       int head_dim, double eps_atol, double eps_rtol, double tr_atol, double tr_rtol) {
  struct safetensors *ck = NULL;
  CHECK_OK(safetensors_open(ckpt_path, &ck));
  if (!ck) return;
  struct unet_options o = {.fp16 = fp16, .heads_all = heads, .head_dim = head_dim};
  struct unet *u = NULL;
  CHECK_OK(unet_load(gpu, ck, &o, &u));
  if (!u) {
    safetensors_close(ck);
    return;
  }
  const struct st_tensor *xt = safetensors_find(gold, "x"), *ct = safetensors_find(gold, "context");
  int N = (int)xt->shape[0], H = (int)xt->shape[2], W = (int)xt->shape[3], T = (int)ct->shape[1];
  size_t n_eps;
  float *x = test_tensor(gold, "x", NULL), *t = test_tensor(gold, "t", NULL), *ctx = test_tensor(gold, "context", NULL);
  float *ref = test_tensor(gold, "eps", &n_eps), *eps = malloc(n_eps * sizeof *eps);
  float *y = test_tensor(gold, "y", NULL); /* SDXL's vector */
  struct unet_info info;
  unet_get_info(u, &info);
  struct unet_trace tr = {0};
  char names[32][64];
  float *refs[32] = {0};
  size_t sizes[32];
  int nt = 0;
  for (int i = 0; i < info.n_input; i++) { /* every block output the golden holds */
    snprintf(names[nt], 64, "trace.input_blocks.%d", i);
    if ((refs[nt] = test_tensor(gold, names[nt], &sizes[nt]))) tr.input[i] = malloc(sizes[nt] * 4), nt++;
  }
  snprintf(names[nt], 64, "trace.middle_block");
  if ((refs[nt] = test_tensor(gold, names[nt], &sizes[nt]))) tr.middle = malloc(sizes[nt] * 4), nt++;
  for (int i = 0; i < info.n_output; i++) {
    snprintf(names[nt], 64, "trace.output_blocks.%d", i);
    if ((refs[nt] = test_tensor(gold, names[nt], &sizes[nt]))) tr.output[i] = malloc(sizes[nt] * 4), nt++;
  }
  size_t n_emb = 0;
  float *ref_emb = test_tensor(gold, "trace.emb", &n_emb); /* absent: unet_sd21_16x16 has no traces */
  if (ref_emb) tr.emb = malloc(n_emb * 4);
  size_t n_lab = 0;
  float *ref_lab = test_tensor(gold, "trace.label_emb", &n_lab);
  if (ref_lab) tr.label_emb = malloc(n_lab * 4);
  CHECK(!y == !info.adm_in_channels);
  if (y) CHECK(unet_forward(u, x, t, ctx, NULL, N, H, W, T, eps, NULL) == STATUS_INVALID_ARGUMENT); /* y is required */
  CHECK_OK(unet_forward(u, x, t, ctx, y, N, H, W, T, eps, &tr));
  char what[160];
  snprintf(what, sizeof what, "%s eps", label);
  CHECK_CLOSE(what, eps, ref, n_eps, eps_atol, eps_rtol);
  snprintf(what, sizeof what, "%s trace.emb", label);
  if (ref_emb) CHECK_CLOSE(what, tr.emb, ref_emb, n_emb, tr_atol, tr_rtol);
  if (ref_lab) {
    snprintf(what, sizeof what, "%s trace.label_emb", label);
    CHECK_CLOSE(what, tr.label_emb, ref_lab, n_lab, tr_atol, tr_rtol);
  }
  int k = 0;
  for (int i = 0; i < info.n_input; i++)
    if (tr.input[i]) snprintf(what, sizeof what, "%s %s", label, names[k]), CHECK_CLOSE(what, tr.input[i], refs[k], sizes[k], tr_atol, tr_rtol), k++;
  if (tr.middle) snprintf(what, sizeof what, "%s %s", label, names[k]), CHECK_CLOSE(what, tr.middle, refs[k], sizes[k], tr_atol, tr_rtol), k++;
  for (int i = 0; i < info.n_output; i++)
    if (tr.output[i]) snprintf(what, sizeof what, "%s %s", label, names[k]), CHECK_CLOSE(what, tr.output[i], refs[k], sizes[k], tr_atol, tr_rtol), k++;
  printf("  %s: %lld parameters, %d levels, %d ResBlocks, %d transformers, weights %.1f MB, activations %.1f MB\n", label,
         (long long)info.parameters, info.levels, info.n_res, info.n_transformers, unet_weight_bytes(u) / 1e6,
         unet_activation_bytes(u) / 1e6);
  for (int i = 0; i < 32; i++) free(tr.input[i]), free(tr.output[i]), free(refs[i]);
  free(tr.middle), free(tr.emb), free(ref_emb), free(x), free(t), free(ctx), free(ref), free(eps);
  free(y), free(tr.label_emb), free(ref_lab);
  unet_destroy(u);
  safetensors_close(ck);
}

int main(void) {
  int rc = 0;
  char gpath[1024], dpath[1024], dir[256], ckpt[512];
  test_shared_path(gpath, sizeof gpath, "ref/goldens/unet_tiny.safetensors");
  test_shared_path(dpath, sizeof dpath, "ref/goldens/weights_digest_unet_vae_tiny_seed1.json");
  struct safetensors *gold = NULL;
  if (safetensors_open(gpath, &gold)) return test_skip("cannot read ../shared/ref/goldens/unet_tiny.safetensors");
  gpu = test_gpu(&rc);
  if (!gpu) {
    safetensors_close(gold);
    return rc;
  }
  snprintf(dir, sizeof dir, "/tmp/vkd_test_unet_%ld", (long)getpid());
  mkdir(dir, 0755);
  snprintf(ckpt, sizeof ckpt, "%s/tiny.safetensors", dir);
  CHECK(write_sd_checkpoint(ckpt, dpath, ST_F32, 1, NULL) == 0);
  run_golden("tiny fp32", ckpt, gold, false, 2, 0, 1e-4, 1e-4, 1e-3, 1e-4);
  run_golden("tiny fp16", ckpt, gold, true, 2, 0, 3e-2, 3e-2, 5e-2, 2e-2);
  unlink(ckpt);
  safetensors_close(gold);
  /* VKD_TEST_TINY: the tiny models only (the ctest run with the GPU kernels forced on lavapipe,
   * where they run at a few GFLOP/s) */
  bool tiny_only = getenv("VKD_TEST_TINY") != NULL;
  if (!tiny_only) { /* SD 1.5 at 16x16 from its F16 checkpoint */
    test_shared_path(gpath, sizeof gpath, "ref/goldens/unet_sd15_16x16.safetensors");
    test_shared_path(dpath, sizeof dpath, "ref/goldens/weights_digest_unet_vae_sd15_seed1.json");
    if (!safetensors_open(gpath, &gold)) {
      snprintf(ckpt, sizeof ckpt, "%s/sd15.safetensors", dir);
      CHECK(write_sd_checkpoint(ckpt, dpath, ST_F16, 1, NULL) == 0);
      /* the golden was computed from these F16 weights: fp16 storage is exact here, so the fp32 bounds hold */
      run_golden("sd15 16x16 fp16", ckpt, gold, true, 8, 0, 3e-4, 3e-4, 1e-3, 1e-4);
      unlink(ckpt);
      safetensors_close(gold);
    } else {
      CHECK_MSG(0, "cannot read %s", gpath);
    }
  }
  /* SD 2.x and SDXL: linear projections, heads of 16 (tiny) / 64 (full: the default), SDXL's label_emb and
   * vector y; the full-size ones from F16 weights (exact on the fp16 path), streamed to disk */
  static const struct {
    const char *golden, *digest, *label;
    int head_dim;
    bool full;
  } xl[] = {
      {"unet_sd21_tiny", "weights_digest_unet_sd21_tiny_seed1.json", "sd21 tiny", 16, false},
      {"unet_sdxl_tiny", "weights_digest_unet_sdxl_tiny_seed1.json", "sdxl tiny", 16, false},
      {"unet_sd21_16x16", "weights_digest_unet_sd21_seed1.json", "sd21 16x16 fp16", 0, true},
      {"unet_sdxl_16x16", "weights_digest_unet_sdxl_seed1.json", "sdxl 16x16 fp16", 0, true},
  };
  for (size_t k = 0; k < sizeof xl / sizeof *xl; k++) {
    if (xl[k].full && (tiny_only || getenv("VKD_SKIP_FULL"))) continue;
    char g2[1024], name[128];
    snprintf(name, sizeof name, "ref/goldens/%s.safetensors", xl[k].golden);
    test_shared_path(g2, sizeof g2, name);
    snprintf(name, sizeof name, "ref/goldens/%s", xl[k].digest);
    test_shared_path(dpath, sizeof dpath, name);
    if (safetensors_open(g2, &gold)) {
      CHECK_MSG(0, "cannot read %s", g2);
      continue;
    }
    snprintf(ckpt, sizeof ckpt, "%s/%s.safetensors", dir, xl[k].golden);
    double t0 = test_now();
    CHECK(write_unet_checkpoint(ckpt, dpath, xl[k].full ? ST_F16 : ST_F32, 1) == 0);
    printf("  %s: checkpoint written in %.1f s\n", xl[k].label, test_now() - t0);
    char lab[64];
    if (xl[k].full) {
      run_golden(xl[k].label, ckpt, gold, true, 0, 0, 3e-4, 3e-4, 1e-3, 1e-4);
    } else {
      snprintf(lab, sizeof lab, "%s fp32", xl[k].label);
      run_golden(lab, ckpt, gold, false, 0, xl[k].head_dim, 1e-4, 1e-4, 1e-3, 1e-4);
      snprintf(lab, sizeof lab, "%s fp16", xl[k].label);
      run_golden(lab, ckpt, gold, true, 0, xl[k].head_dim, 3e-2, 3e-2, 5e-2, 2e-2);
      /* the same weights in diffusers' names (a unet/ folder): the rename map, the same numbers */
      CHECK(write_unet_checkpoint_diffusers(ckpt, dpath, 1) == 0);
      struct safetensors *dst = NULL;
      CHECK_OK(safetensors_open(ckpt, &dst));
      CHECK(dst && safetensors_find(dst, "conv_in.weight") && safetensors_find(dst, "down_blocks.1.attentions.0.proj_in.weight") &&
            safetensors_find(dst, "up_blocks.0.resnets.2.conv_shortcut.weight") && !safetensors_find(dst, "model.diffusion_model.out.2.weight"));
      safetensors_close(dst);
      snprintf(lab, sizeof lab, "%s diffusers names fp32", xl[k].label);
      run_golden(lab, ckpt, gold, false, 0, xl[k].head_dim, 1e-4, 1e-4, 1e-3, 1e-4);
    }
    unlink(ckpt);
    safetensors_close(gold);
  }
  rmdir(dir);
  test_gpu_done(gpu);
  return test_result("test_unet");
}
