/* vkdiffusion encode: conditioning embeddings of prompts (or of token ids) into safetensors. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fileio.h"
#include "json_file.h"
#include "text.h"
#include "prompt.h"
#include "safetensors.h"
#include "textenc.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: vkdiffusion encode --model PATH [--tokenizer PATH] [--config FILE] [--clip-skip K]\n"
          "                          [--precision fp16|fp32] [--hidden-act gelu|quick_gelu] [--literal]\n"
          "                          [--device N] [--verbose]\n"
          "                          (--prompt TEXT ... | --prompt-file FILE | --ids JSON|@FILE) -o OUT.safetensors\n\n"
          "Writes ids (I32 [N, 77k]), weights (F32 [N, 77k]), cond (F32 [N, 77k, width]: the final-LN hidden\n"
          "state, K-1 layers before the last with --clip-skip K), pooled (F32 [N, width]) and projected\n"
          "(F32 [N, proj], when the checkpoint has text_projection). Prompts use the AUTOMATIC1111 syntax\n"
          "((emphasis), [less], (text:1.3), BREAK) unless --literal; long prompts become k chunks of 77\n"
          "tokens. --prompt-file: one prompt per line, or a JSON array of strings. --ids: a JSON array of\n"
          "id arrays (each 77*k long) from another tokenizer, inline or @FILE.\n"
          "To use the result as diffusers' prompt_embeds:\n"
          "  from safetensors.torch import load_file; e = load_file('out.safetensors')\n"
          "  pipe(prompt_embeds=e['cond'][:1], negative_prompt_embeds=...)\n");
}

struct strings {
  char **s;
  int n;
};

static void strings_free(struct strings *l) {
  for (int i = 0; i < l->n; i++) free(l->s[i]);
  free(l->s);
  l->s = NULL;
  l->n = 0;
}

static bool strings_add(struct strings *l, const char *s, size_t len) {
  char **p = realloc(l->s, (size_t)(l->n + 1) * sizeof *p);
  if (!p) return false;
  l->s = p;
  if (!(l->s[l->n] = malloc(len + 1))) return false;
  memcpy(l->s[l->n], s, len);
  l->s[l->n++][len] = 0;
  return true;
}

static char *slurp(const char *path, size_t *len) {
  char *text;
  if (file_read(path, 64u << 20, &text, len)) fprintf(stderr, "vkdiffusion encode: %s\n", status_message());
  return text;
}

/* --prompt-file: a JSON array of strings, or one prompt a line (any line ending; UTF-8 only) */
static bool read_prompt_file(const char *path, struct strings *out) {
  size_t len, skip;
  char *buf = slurp(path, &len);
  if (!buf) return false;
  if (text_check(path, buf, len, &skip)) {
    fprintf(stderr, "vkdiffusion encode: %s\n", status_message());
    free(buf);
    return false;
  }
  const char *text = buf + skip;
  len -= skip;
  size_t i = 0;
  while (i < len && strchr(" \t\r\n", text[i])) i++;
  bool ok = true;
  if (i < len && text[i] == '[') {
    cJSON *j = NULL;
    if (json_parse(text, len, path, &j) || !cJSON_IsArray(j)) {
      fprintf(stderr, "vkdiffusion encode: %s\n", j ? "not a JSON array of strings" : status_message());
      ok = false;
    }
    int k = 0;
    for (cJSON *e = j ? j->child : NULL; ok && e; e = e->next, k++) {
      if (!cJSON_IsString(e)) {
        fprintf(stderr, "vkdiffusion encode: %s: element %d is not a string\n", path, k);
        ok = false;
      } else {
        ok = strings_add(out, e->valuestring, strlen(e->valuestring));
      }
    }
    cJSON_Delete(j);
  } else {
    const char *line;
    size_t pos = 0, l;
    while (ok && text_next_line(text, len, &pos, &line, &l))
      if (l) ok = strings_add(out, line, l);
  }
  free(buf);
  if (ok && out->n == 0) {
    fprintf(stderr, "vkdiffusion encode: %s: no prompts\n", path);
    ok = false;
  }
  return ok;
}

/* --ids: [[...], ...], every row the same length, a multiple of 77 */
static int32_t *parse_ids(const char *arg, int *n, int *chunks) {
  size_t len;
  char *text = arg[0] == '@' ? slurp(arg + 1, &len) : NULL;
  const char *src = arg[0] == '@' ? text : arg;
  if (!src) return NULL;
  cJSON *j = NULL;
  if (json_parse(src, strlen(src), arg[0] == '@' ? arg + 1 : "--ids", &j)) {
    fprintf(stderr, "vkdiffusion encode: %s\n", status_message());
    free(text);
    return NULL;
  }
  free(text);
  int32_t *ids = NULL;
  int rows = j && cJSON_IsArray(j) ? cJSON_GetArraySize(j) : 0, cols = -1, r = 0;
  if (!rows) goto bad;
  for (cJSON *row = j->child; row; row = row->next, r++) {
    int c = cJSON_IsArray(row) ? cJSON_GetArraySize(row) : -1;
    if (c <= 0 || c % CLIP_CONTEXT || (cols >= 0 && c != cols)) {
      fprintf(stderr, "vkdiffusion encode: --ids: row %d must hold 77*k ids like the others (it has %d)\n", r, c);
      goto fail;
    }
    if (!ids) {
      cols = c;
      ids = malloc((size_t)rows * cols * sizeof *ids);
      if (!ids) goto fail;
    }
    int k = 0;
    for (cJSON *v = row->child; v; v = v->next, k++) {
      if (!cJSON_IsNumber(v) || v->valuedouble != (double)v->valueint || v->valueint < 0) {
        fprintf(stderr, "vkdiffusion encode: --ids: row %d, element %d is not a token id\n", r, k);
        goto fail;
      }
      ids[(size_t)r * cols + k] = v->valueint;
    }
  }
  cJSON_Delete(j);
  *n = rows;
  *chunks = cols / CLIP_CONTEXT;
  return ids;
bad:
  fprintf(stderr, "vkdiffusion encode: --ids: expected a JSON array of arrays of token ids\n");
fail:
  cJSON_Delete(j);
  free(ids);
  return NULL;
}

const char *textenc_config_note(const struct textenc *te);

int cmd_encode(int argc, char **argv) {
  struct textenc_options o = textenc_default_options();
  const char *out = NULL, *prompt_file = NULL, *ids_arg = NULL;
  struct strings prompts = {0};
  bool verbose = false;
  long v;
  int rc = 2;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL;
    if (cli_is_help(a)) {
      usage(stdout);
      strings_free(&prompts);
      return 0;
    }
#define VALUE() \
  if (!(val = cli_value(argc, argv, &i))) goto done
    if (!strcmp(a, "--model")) { VALUE(); o.model_path = val; }
    else if (!strcmp(a, "--tokenizer")) { VALUE(); o.tokenizer_path = val; }
    else if (!strcmp(a, "--config")) { VALUE(); o.config_path = val; }
    else if (!strcmp(a, "--prompt")) { VALUE(); if (!strings_add(&prompts, val, strlen(val))) goto done; }
    else if (!strcmp(a, "--prompt-file")) { VALUE(); prompt_file = val; }
    else if (!strcmp(a, "--ids")) { VALUE(); ids_arg = val; }
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) { VALUE(); out = val; }
    else if (!strcmp(a, "--hidden-act")) { VALUE(); o.hidden_act = val; }
    else if (!strcmp(a, "--literal")) o.literal = 1;
    else if (!strcmp(a, "--verbose")) verbose = true;
    else if (!strcmp(a, "--clip-skip")) { VALUE(); if (!cli_int(a, val, 1, 64, &v)) goto done; o.clip_skip = (int)v; }
    else if (!strcmp(a, "--device")) { VALUE(); if (!cli_int(a, val, 0, 64, &v)) goto done; o.device_index = (int)v; }
    else if (!strcmp(a, "--precision")) {
      VALUE();
      if (strcmp(val, "fp16") && strcmp(val, "fp32")) {
        fprintf(stderr, "vkdiffusion encode: --precision expects fp16 or fp32, got '%s'\n", val);
        goto done;
      }
      o.precision = strcmp(val, "fp32") ? TEXTENC_FP16 : TEXTENC_FP32;
    } else {
      fprintf(stderr, "vkdiffusion encode: unknown option '%s' (see --help)\n", a);
      goto done;
    }
#undef VALUE
  }
  if (!o.model_path || !out) {
    fprintf(stderr, "vkdiffusion encode: --model and -o are required (see --help)\n");
    goto done;
  }
  if ((prompts.n > 0) + (prompt_file != NULL) + (ids_arg != NULL) != 1) {
    fprintf(stderr, "vkdiffusion encode: give exactly one of --prompt, --prompt-file or --ids\n");
    goto done;
  }
  if (prompt_file && !read_prompt_file(prompt_file, &prompts)) goto done;
  int n = prompts.n, chunks = 1;
  int32_t *ids = NULL;
  if (ids_arg && !(ids = parse_ids(ids_arg, &n, &chunks))) goto done;

  rc = 1;
  struct textenc *te = NULL;
  float *weights = NULL, *cond = NULL, *pooled = NULL, *projected = NULL;
  /* the CLI's own device, lent to the encoder: VKDIFFUSION_PROFILE and validation reported at the end */
  struct gpu *g = cli_gpu("encode", o.device_index);
  if (!g) goto cleanup;
  o.device = g;
  if (textenc_create(&o, &te)) {
    cli_fail("encode", NULL);
    goto cleanup;
  }
  struct textenc_info info;
  textenc_info(te, &info);
  if (verbose)
    fprintf(stderr, "encode: %s layout, prefix '%s', width %d, %d layers, %d heads, %s, projection %d, %s weights on %s\n%s%s",
            info.layout, info.prefix, info.width, info.layers, info.heads, info.activation, info.projection_dim,
            info.fp16 ? "fp16" : "fp32", info.device_name, textenc_config_note(te)[0] ? "config: " : "",
            textenc_config_note(te)[0] ? textenc_config_note(te) : "");
  if (verbose && textenc_config_note(te)[0]) fputc('\n', stderr);
  const char *const *pp = (const char *const *)prompts.s;
  if (!ids) {
    if (textenc_count_chunks(te, pp, n, &chunks)) {
      cli_fail("encode", NULL);
      goto cleanup;
    }
    ids = malloc((size_t)n * chunks * CLIP_CONTEXT * sizeof *ids);
    weights = malloc((size_t)n * chunks * CLIP_CONTEXT * sizeof *weights);
    if (!ids || !weights || textenc_tokenize(te, pp, n, chunks, ids, weights)) {
      cli_fail("encode", ids && weights ? NULL : "out of memory");
      goto cleanup;
    }
  }
  size_t T = (size_t)chunks * CLIP_CONTEXT, D = (size_t)info.width;
  cond = malloc((size_t)n * T * D * sizeof *cond);
  pooled = malloc((size_t)n * D * sizeof *pooled);
  projected = info.projection_dim ? malloc((size_t)n * info.projection_dim * sizeof *projected) : NULL;
  if (!cond || !pooled || (info.projection_dim && !projected)) {
    fprintf(stderr, "vkdiffusion encode: out of memory\n");
    goto cleanup;
  }
  if (textenc_encode_ids(te, ids, weights, n, chunks, cond, pooled, projected)) {
    cli_fail("encode", NULL);
    goto cleanup;
  }
  struct st_writer *w;
  if (st_writer_create(&w)) goto cleanup;
  st_writer_add(w, "ids", ST_I32, 2, (int64_t[]){n, (int64_t)T}, ids);
  if (weights) st_writer_add(w, "weights", ST_F32, 2, (int64_t[]){n, (int64_t)T}, weights);
  st_writer_add(w, "cond", ST_F32, 3, (int64_t[]){n, (int64_t)T, (int64_t)D}, cond);
  st_writer_add(w, "pooled", ST_F32, 2, (int64_t[]){n, (int64_t)D}, pooled);
  if (projected) st_writer_add(w, "projected", ST_F32, 2, (int64_t[]){n, info.projection_dim}, projected);
  char skip[16];
  snprintf(skip, sizeof skip, "%d", o.clip_skip);
  st_writer_metadata(w, "model", o.model_path);
  st_writer_metadata(w, "clip_skip", skip);
  if (st_writer_finish(w, out))
    cli_fail("encode", NULL);
  else
    rc = 0;
  st_writer_destroy(w);
cleanup:
  free(ids), free(weights), free(cond), free(pooled), free(projected);
  textenc_destroy(te);
  rc = cli_finish_gpu(g, rc);
done:
  strings_free(&prompts);
  return rc;
}
