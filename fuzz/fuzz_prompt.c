/* The tokenizer and the AUTOMATIC1111 prompt syntax on arbitrary text, with the real CLIP vocabulary
 * (../shared/clip): every mode, the syntax parser alone, the chunk padding, and the <lora:...> tags. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prompt.h"
#include "tokenizer.h"

static struct tokenizer *tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!tok && tokenizer_load(VKD_SHARED_DIR "/clip", &tok)) { /* the real vocabulary must be there */
    fprintf(stderr, "fuzz_prompt: needs the CLIP vocabulary in %s/clip: %s\n", VKD_SHARED_DIR, status_message());
    abort();
  }
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = 0; /* a NUL inside ends the C string, as for any caller */
  struct token_list ids = {0};
  tokenizer_encode(tok, text, strlen(text), &ids);
  token_list_free(&ids);
  const enum prompt_mode modes[] = {PROMPT_SYNTAX, PROMPT_LITERAL, PROMPT_TRUNCATE};
  for (int m = 0; m < 3; m++) {
    struct prompt_tokens p = {0};
    if (!prompt_tokenize(tok, text, modes[m], m ? 0 : tokenizer_eot(tok), &p)) {
      prompt_tokens_extend(&p, p.n_chunks + 1, tokenizer_sot(tok), tokenizer_eot(tok), 0);
      prompt_tokens_free(&p);
    }
  }
  struct prompt_segment *seg = NULL;
  int n = 0;
  if (!prompt_parse(text, &seg, &n)) prompt_segments_free(seg, n);
  char *clean = NULL; /* AUTOMATIC1111's <lora:NAME:S> tags */
  struct prompt_lora *tags = NULL;
  if (!prompt_take_loras(text, &clean, &tags, &n)) {
    if (strlen(clean) > strlen(text)) abort(); /* taking tags out never lengthens the text */
    free(clean), free(tags);
  }
  free(text);
  return 0;
}
