/* Image files (PNG, JPEG, BMP, GIF, ... through stb_image with our size checks) and OpenAI's exact
 * preprocessing of whatever decodes, at a small crop so the fuzzer stays fast. */
#include <stdlib.h>

#include "clip_image.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  unsigned char *rgb = NULL;
  int w, h;
  /* 4 Mpixels at most: a few hundred bytes of JPEG can declare 100 Mpixels, seconds of decoding
   * that would read as a timeout; the limit check itself is what image_load runs */
  if (image_load_limited(fuzz_file("in.img", data, size), 1u << 22, &rgb, &w, &h)) return 0;
  float px[3 * 16 * 16];
  unsigned char crop[16 * 16 * 3];
  clip_preprocess(rgb, w, h, 16, px, crop);
  free(rgb);
  return 0;
}
