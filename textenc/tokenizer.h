/* CLIP byte-level BPE tokenizer, exactly as OpenAI CLIP's simple_tokenizer (without ftfy).
 *
 *   struct tokenizer *tok;
 *   if (tokenizer_load("sd15/tokenizer", &tok)) die(status_message());
 *   struct token_list ids = {0};
 *   tokenizer_encode(tok, "a photo of a cat", 16, &ids);   // 320 1125 539 320 2368
 *   token_list_free(&ids);
 *   tokenizer_destroy(tok);
 *
 * Vocabulary sources: a folder holding vocab.json + merges.txt (a diffusers `tokenizer/`), those
 * files themselves, or OpenAI's bpe_simple_vocab_16e6.txt.gz (merges only; the vocabulary is
 * derived). Every file is untrusted and checked. encode() applies CLIP's cleaning (HTML unescape
 * twice, whitespace collapse, strip, lower-case), its pre-tokenisation pattern and the merges;
 * it does not add SOT/EOT (see prompt.h). Invalid UTF-8 bytes become U+FFFD. */
#ifndef VKD_TOKENIZER_H
#define VKD_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

struct token_list {
  int32_t *ids;
  size_t n, cap;
};
enum status token_list_push(struct token_list *l, int32_t id);
void token_list_free(struct token_list *l);

struct tokenizer;

/* path: a folder, vocab.json, merges.txt or a .txt.gz merge list. */
enum status tokenizer_load(const char *path, struct tokenizer **out);
/* Looks for a vocabulary: `explicit_path` (--tokenizer), else `model_path`'s folder (and its
 * tokenizer/ subfolder or parent's tokenizer/), else $VKDIFFUSION_TOKENIZER, else the install
 * data folder. The error lists every place it looked. */
enum status tokenizer_find(const char *explicit_path, const char *model_path, struct tokenizer **out);
void tokenizer_destroy(struct tokenizer *t);

/* OpenCLIP (SD 2.x) spells the specials <start_of_text> / <end_of_text>; then <|endoftext|> is text. */
void tokenizer_set_openclip_specials(struct tokenizer *t, bool on);

enum status tokenizer_encode(struct tokenizer *t, const char *text, size_t len, struct token_list *out);

int32_t tokenizer_sot(const struct tokenizer *t);
int32_t tokenizer_eot(const struct tokenizer *t);
int32_t tokenizer_comma(const struct tokenizer *t); /* ",</w>", or -1 */
int32_t tokenizer_vocab_size(const struct tokenizer *t);
const char *tokenizer_source(const struct tokenizer *t);
/* The vocabulary entry of id (byte-level form, e.g. "cat</w>"), or NULL. */
const char *tokenizer_token(const struct tokenizer *t, int32_t id);

#endif
