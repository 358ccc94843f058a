/* vkdiffusion tokenize: CLIP token ids of texts, one JSON array of 77 ids per chunk. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "prompt.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: vkdiffusion tokenize [--tokenizer PATH] [--pad eot|zero] [--truncate] [--syntax]\n"
          "                            [--openclip] [--] TEXT...\n\n"
          "Prints one JSON array of 77 ids per chunk per text, one line each. By default the text is\n"
          "taken literally (as OpenAI's clip.tokenize) and split into chunks of 75 tokens wrapped in\n"
          "SOT/EOT. --truncate prints OpenAI's single truncated sequence instead; --syntax applies the\n"
          "AUTOMATIC1111 prompt syntax ((emphasis), [less], (text:1.3), BREAK) and prints each chunk's\n"
          "per-token weights on the line after its ids. --pad zero pads with 0 after EOT (OpenCLIP,\n"
          "SD 2.x/XL); --openclip uses OpenCLIP's <start_of_text>/<end_of_text> spellings.\n"
          "The vocabulary: --tokenizer (a folder with vocab.json + merges.txt, or\n"
          "bpe_simple_vocab_16e6.txt.gz), else $VKDIFFUSION_TOKENIZER, else the installed one.\n");
}

int cmd_tokenize(int argc, char **argv) {
  const char *tok_path = NULL;
  enum prompt_mode mode = PROMPT_LITERAL;
  bool zero_pad = false, openclip = false;
  int first_text = argc;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      first_text = i + 1;
      break;
    }
    if (cli_is_help(a)) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--tokenizer")) {
      if (!(tok_path = cli_value(argc, argv, &i))) return 2;
    } else if (!strcmp(a, "--pad")) {
      const char *v = cli_value(argc, argv, &i);
      if (!v) return 2;
      if (strcmp(v, "eot") && strcmp(v, "zero")) {
        fprintf(stderr, "vkdiffusion tokenize: --pad expects eot or zero, got '%s'\n", v);
        return 2;
      }
      zero_pad = !strcmp(v, "zero");
    } else if (!strcmp(a, "--truncate")) {
      mode = PROMPT_TRUNCATE;
    } else if (!strcmp(a, "--syntax")) {
      mode = PROMPT_SYNTAX;
    } else if (!strcmp(a, "--openclip")) {
      openclip = true;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "vkdiffusion tokenize: unknown option '%s' (use -- before a text that starts with '-')\n", a);
      return 2;
    } else {
      first_text = i;
      break;
    }
  }
  if (first_text >= argc) {
    fprintf(stderr, "vkdiffusion tokenize: no text given\n");
    return 2;
  }
  struct tokenizer *tok;
  if (tokenizer_find(tok_path, NULL, &tok)) return cli_fail("tokenize", NULL);
  tokenizer_set_openclip_specials(tok, openclip);
  int rc = 0;
  for (int i = first_text; i < argc && !rc; i++) {
    struct prompt_tokens p;
    if (prompt_tokenize(tok, argv[i], mode, zero_pad ? 0 : tokenizer_eot(tok), &p)) {
      rc = cli_fail("tokenize", NULL);
      break;
    }
    for (int c = 0; c < p.n_chunks; c++) {
      putchar('[');
      for (int k = 0; k < CLIP_CONTEXT; k++) printf("%s%d", k ? ", " : "", p.ids[c * CLIP_CONTEXT + k]);
      printf("]\n");
      if (mode == PROMPT_SYNTAX) {
        putchar('[');
        for (int k = 0; k < CLIP_CONTEXT; k++) printf("%s%.9g", k ? ", " : "", p.weights[c * CLIP_CONTEXT + k]);
        printf("]\n");
      }
    }
    prompt_tokens_free(&p);
  }
  tokenizer_destroy(tok);
  if (fflush(stdout) != 0) rc = 1;
  return rc;
}
