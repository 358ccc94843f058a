/* Prompts to 77-token chunks: OpenAI's literal tokenisation, and the AUTOMATIC1111 prompt syntax
 * (emphasis and BREAK) with per-token weights.
 *
 *   struct prompt_tokens p = {0};
 *   prompt_tokenize(tok, "a (red:1.3) car BREAK night", PROMPT_SYNTAX, tokenizer_eot(tok), &p);
 *   // p.n_chunks == 2; p.ids[0..76] = SOT a red car EOT pad..., p.weights[2] == 1.3f
 *   prompt_tokens_free(&p);
 *
 * Syntax (as A1111's parse_prompt_attention): (text) x1.1, ((text)) x1.21, [text] /1.1,
 * (text:1.3) explicit weight, \( \) \[ \] literal brackets, unbalanced brackets tolerated (open
 * ones apply at the end, stray closers are text), BREAK starts a new chunk. Long prompts are split
 * into chunks of 75 tokens, each wrapped SOT ... EOT and padded to 77; with the syntax, a chunk
 * that fills up moves the words after its last comma (within 20 tokens) to the next chunk, as
 * A1111 does (comma_padding_backtrack = 20). Parsing is linear in the text; the limits below make
 * the cost of any prompt bounded. */
#ifndef VKD_PROMPT_H
#define VKD_PROMPT_H

#include "tokenizer.h"

#define CLIP_CONTEXT 77
#define CLIP_CHUNK 75

/* Limits, named in the errors that enforce them: a prompt's length (about 16000 tokens, 200
 * chunks), how deep its brackets nest, how large a weight may grow. */
#define PROMPT_MAX_BYTES 65536
#define PROMPT_MAX_DEPTH 64
#define PROMPT_MAX_WEIGHT 1e4f

enum prompt_mode {
  PROMPT_LITERAL,  /* the text as is, split into chunks (no syntax) */
  PROMPT_SYNTAX,   /* emphasis and BREAK */
  PROMPT_TRUNCATE, /* OpenAI clip.tokenize(truncate=True): one chunk, EOT kept last */
};

struct prompt_tokens {
  int n_chunks;
  int32_t *ids;   /* [n_chunks * 77] */
  float *weights; /* [n_chunks * 77]; 1 for SOT, EOT and padding */
};

struct prompt_segment {
  char *text;
  float weight; /* -1 marks a BREAK */
};

/* A1111's parse_prompt_attention: text segments with weights (merged when equal). */
enum status prompt_parse(const char *text, struct prompt_segment **out, int *n);
void prompt_segments_free(struct prompt_segment *s, int n);

/* AUTOMATIC1111's LoRA tags, <lora:NAME> and <lora:NAME:STRENGTH> (1 when absent): removed from the
 * text (*clean: a malloc'd copy without them) and listed in order (*tags, malloc'd; NULL when none).
 * Errors: a tag without '>', an empty name or one with '/', a strength that is not a number in
 * -100..100 (NAME:TE:UNET included), more than PROMPT_MAX_LORAS tags. */
#define PROMPT_MAX_LORAS 64
struct prompt_lora {
  char name[256];
  double strength;
};
enum status prompt_take_loras(const char *text, char **clean, struct prompt_lora **tags, int *n);

/* pad: the id after EOT (EOT for SD 1.x / OpenAI, 0 for OpenCLIP / SD 2.x / SDXL). */
enum status prompt_tokenize(struct tokenizer *t, const char *text, enum prompt_mode mode, int32_t pad,
                            struct prompt_tokens *out);
/* Appends empty chunks (SOT EOT pad...) until there are n (A1111 pads the shorter of cond and
 * uncond this way). */
enum status prompt_tokens_extend(struct prompt_tokens *p, int n, int32_t sot, int32_t eot, int32_t pad);
void prompt_tokens_free(struct prompt_tokens *p);

#endif
