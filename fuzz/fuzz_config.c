/* The config and vocabulary readers: the input is a config file (text_encoder / vision_model / unet
 * members, or an HF config.json), and also split at the first 0xff byte into vocab.json and
 * merges.txt for the tokenizer loader. */
#include <stdlib.h>
#include <string.h>

#include "clip_config.h"
#include "fuzz.h"
#include "tokenizer.h"
#include "unet_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *cfg = fuzz_file("config.json", data, size);
  struct clip_text_options opt = {.heads = 0, .act = -1};
  char note[256];
  clip_config_text(cfg, "text_encoder", cfg, &opt, note, sizeof note);
  struct clip_text_options opt2 = {.act = -1};
  clip_config_text(cfg, "text_encoder_2", NULL, &opt2, note, sizeof note);
  int heads = 0, uh[8] = {0}, all = 0;
  clip_vision_heads(cfg, &heads);
  unet_config_heads(cfg, uh, &all);
  const uint8_t *cut = memchr(data, 0xff, size);
  size_t a = cut ? (size_t)(cut - data) : size;
  fuzz_file("vocab.json", data, a);
  const char *merges = fuzz_file("merges.txt", cut ? cut + 1 : data, cut ? size - a - 1 : 0);
  char dir[256];
  strncpy(dir, merges, sizeof dir - 1);
  dir[sizeof dir - 1] = 0;
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  struct tokenizer *t = NULL;
  if (!tokenizer_load(dir, &t)) {
    struct token_list ids = {0};
    tokenizer_encode(t, "a photo of a cat", 16, &ids);
    token_list_free(&ids);
    tokenizer_destroy(t);
  }
  return 0;
}
