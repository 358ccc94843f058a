/* Built by test_install.sh against the installed textenc.h and libtextenc (pkg-config).
 * usage: install_example CLIP_CKPT TOKENIZER CONFIG [SDXL_CKPT]: one tower, then SDXL conditioning. */
#include <stdio.h>
#include <stdlib.h>
#include <textenc.h>

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) return 2;
  if (textenc_version() != TEXTENC_VERSION) {
    fprintf(stderr, "header %d, library %d\n", TEXTENC_VERSION, textenc_version());
    return 1;
  }
  struct textenc_options opt = textenc_default_options();
  opt.model_path = argv[1];
  opt.tokenizer_path = argv[2];
  opt.config_path = argv[3];
  struct textenc *te;
  if (textenc_create(&opt, &te) != TEXTENC_OK) {
    fprintf(stderr, "%s\n", textenc_last_error());
    return 1;
  }
  struct textenc_info info;
  textenc_info(te, &info);
  const char *prompts[] = {"a photo of a cat"};
  int chunks;
  float *cond = NULL, *pooled = NULL;
  int rc = textenc_count_chunks(te, prompts, 1, &chunks);
  if (!rc) {
    cond = malloc(sizeof(float) * 77 * chunks * info.width);
    pooled = malloc(sizeof(float) * info.width);
    rc = textenc_encode(te, prompts, 1, chunks, cond, pooled, NULL);
  }
  if (rc) fprintf(stderr, "%s\n", textenc_last_error());
  else printf("width %d, chunks %d, cond[0] %g, pooled[0] %g\n", info.width, chunks, cond[0], pooled[0]);
  free(cond);
  free(pooled);
  textenc_destroy(te);
  if (rc || argc == 4) return rc ? 1 : 0;
  /* SDXL: both towers behind one create call; the negative prompt as zeros (NULL) */
  opt.model_path = argv[4];
  struct textenc_cond *c;
  if (textenc_cond_create(&opt, &c) != TEXTENC_OK) {
    fprintf(stderr, "%s\n", textenc_last_error());
    return 1;
  }
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  const char *pair[] = {"a photo of a cat", NULL};
  struct textenc_sizes sz = {1024, 1024, 0, 0, 1024, 1024};
  float *ctx = malloc(sizeof(float) * 2 * 77 * ci.context_dim), *pool = malloc(sizeof(float) * 2 * ci.pooled_dim);
  float *y = malloc(sizeof(float) * 2 * ci.y_dim);
  rc = textenc_cond_encode(c, pair, 2, 1, &sz, ctx, pool, y);
  if (rc) fprintf(stderr, "%s\n", textenc_last_error());
  else printf("%s: towers %d, context %d, pooled %d, y %d, uncond y[0] %g, y[%d] %g\n", textenc_family_name(ci.family),
              ci.towers, ci.context_dim, ci.pooled_dim, ci.y_dim, y[ci.y_dim], ci.pooled_dim + 512, y[ci.pooled_dim + 512]);
  free(ctx), free(pool), free(y);
  textenc_cond_destroy(c);
  return rc ? 1 : 0;
}
