/* Built by test_install.sh against the installed textenc.h and libtextenc (pkg-config). */
#include <stdio.h>
#include <stdlib.h>
#include <textenc.h>

int main(int argc, char **argv) {
  if (argc != 4) return 2;
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
  return rc ? 1 : 0;
}
