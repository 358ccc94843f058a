#define _POSIX_C_SOURCE 200809L
/* vkdiffusion encode: conditioning embeddings of prompts (or of token ids) into safetensors. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fileio.h"
#include "job_file.h"
#include "json_file.h"
#include "text.h"
#include "prompt.h"
#include "safetensors.h"
#include "textenc.h"
#include "textenc_internal.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: vkdiffusion encode --model PATH [--family sd1|sd2|sdxl] [--tokenizer PATH] [--tokenizer-2 PATH]\n"
          "                          [--config FILE] [--clip-skip K] [--precision fp16|fp32]\n"
          "                          [--hidden-act gelu|quick_gelu] [--literal] [--device N] [--verbose]\n"
          "                          [--lora FILE[:STRENGTH]]... [--lora-strict] [--lora-dir DIR]\n"
          "                          [--negative-prompt TEXT] [--empty-negative zeros|encode]\n"
          "                          [--width W --height H] [--original-size H,W] [--crop TOP,LEFT] [--target-size H,W]\n"
          "                          (--prompt TEXT ... | --prompt-file FILE | --ids JSON|@FILE) -o OUT.safetensors\n\n"
          "The model family (printed with --verbose) comes from the tensors; --family overrides it.\n"
          "SD 1.x (one CLIP tower) writes ids (I32 [N, 77k]), weights (F32 [N, 77k]), cond (F32 [N, 77k, width]:\n"
          "the final-LN hidden state, K-1 layers before the last with --clip-skip K), pooled (F32 [N, width])\n"
          "and projected (F32 [N, proj], when the checkpoint has text_projection).\n"
          "SD 2.x and SDXL write ids, weights (ids_2, weights_2: SDXL's second tower), cond and, under\n"
          "diffusers' names, prompt_embeds [N, 77k, 1024 (SD 2.x) | 2048 (SDXL)], negative_prompt_embeds, and for\n"
          "SDXL pooled_prompt_embeds [N, 1280], negative_pooled_prompt_embeds, add_time_ids [N, 6]\n"
          "(original size, crop, target size) and y / negative_y [N, 2816] (the vector the SDXL U-Net reads).\n"
          "SD 2.x / SDXL clip skip defaults to 2 (the penultimate layer; A1111 numbering, diffusers clip_skip K-1).\n"
          "The negative prompt: --negative-prompt, else the empty prompt, which --empty-negative makes zeros\n"
          "(AUTOMATIC1111, diffusers and sgm for SDXL: the default for SDXL) or the encoding of \"\" (ComfyUI; the\n"
          "default for SD 1.x / 2.x, as every tool does there). Sizes default to --width/--height, else the\n"
          "family's native size (1024 for SDXL).\n"
          "Prompts use the AUTOMATIC1111 syntax ((emphasis), [less], (text:1.3), BREAK) unless --literal; long\n"
          "prompts become k chunks of 77 tokens. --prompt-file: one prompt per line, or a JSON array of strings.\n"
          "--ids: a JSON array of id arrays (each 77*k long) from another tokenizer, inline or @FILE (one tower only).\n"
          "--lora: a LoRA merged into the text tower(s) first (kohya lora_te_* / lora_te1_* / lora_te2_*, or PEFT\n"
          "text_encoder.* / text_encoder_2.*; U-Net keys ignored), W += STRENGTH (default 1) * alpha / rank * up . down;\n"
          "repeatable. <lora:NAME:STRENGTH> in the prompts (the same in every prompt) adds DIR/NAME.safetensors\n"
          "(--lora-dir, default loras/ beside the model). Keys matching no tensor are skipped with a warning\n"
          "(--lora-strict: an error).\n"
          "To use the result in diffusers (SDXL):\n"
          "  from safetensors.torch import load_file; e = load_file('cond.safetensors')\n"
          "  pipe(prompt_embeds=e['prompt_embeds'], pooled_prompt_embeds=e['pooled_prompt_embeds'],\n"
          "       negative_prompt_embeds=e['negative_prompt_embeds'],\n"
          "       negative_pooled_prompt_embeds=e['negative_pooled_prompt_embeds'])\n");
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



/* --original-size / --crop / --target-size: "A,B" as generate reads them */
static bool parse_pair(const char *opt, const char *val, int out[2]) {
  if (job_parse_pair(val, out)) return true;
  fprintf(stderr, "vkdiffusion encode: %s expects two whole numbers of pixels as A,B (0..1048576), got '%s'\n", opt, val);
  return false;
}

struct encode_args {
  struct textenc_options o;
  const char *out, *prompt_file, *ids_arg, *negative;
  struct strings prompts;
  bool verbose;
  int empty_negative; /* -1: the family's default, 0: encode "", 1: zeros */
  int width, height;
  int orig[2], crop[2], target[2]; /* -1: unset */
  struct cli_loras loras;           /* --lora, then the prompts' <lora:...> tags */
  const char *lora_dir;
};

/* SD 1.x: one tower, today's names */
static int encode_one_tower(struct encode_args *a, int32_t *ids, int n, int chunks) {
  struct textenc_options o = a->o;
  int rc = 1;
  struct textenc *te = NULL;
  float *weights = NULL, *cond = NULL, *pooled = NULL, *projected = NULL;
  if (textenc_create(&o, &te)) {
    cli_fail("encode", NULL);
    goto cleanup;
  }
  if (a->loras.n) {
    struct lora_report rep;
    if (textenc_apply_loras(te, a->loras.v, a->loras.n, a->loras.strict, &rep)) {
      cli_fail("encode", NULL);
      goto cleanup;
    }
    cli_lora_note("encode", &rep, !a->verbose);
  }
  struct textenc_info info;
  textenc_info(te, &info);
  const char *note = textenc_config_note(te);
  if (a->verbose)
    fprintf(stderr, "encode: family sd1, %s layout, prefix '%s', width %d, %d layers, %d heads, %s, projection %d, "
            "%s weights on %s\n%s%s%s", info.layout, info.prefix, info.width, info.layers, info.heads, info.activation,
            info.projection_dim, info.fp16 ? "fp16" : "fp32", info.device_name, note[0] ? "config: " : "", note,
            note[0] ? "\n" : "");
  const char *const *pp = (const char *const *)a->prompts.s;
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
  snprintf(skip, sizeof skip, "%d", o.clip_skip > 0 ? o.clip_skip : 1);
  st_writer_metadata(w, "model", o.model_path);
  st_writer_metadata(w, "family", "sd1");
  st_writer_metadata(w, "clip_skip", skip);
  if (st_writer_finish(w, a->out))
    cli_fail("encode", NULL);
  else
    rc = 0;
  st_writer_destroy(w);
cleanup:
  free(ids), free(weights), free(cond), free(pooled), free(projected);
  textenc_destroy(te);
  return rc;
}

/* SD 2.x and SDXL: the conditioner, with diffusers' names */
static int encode_conditioner(struct encode_args *a, int32_t *given_ids, int n, int chunks) {
  int rc = 1;
  struct textenc_cond *c = NULL;
  int32_t *ids[2] = {given_ids, NULL};
  float *w[2] = {NULL, NULL}, *ctx = NULL, *pooled = NULL, *y = NULL, *nctx = NULL, *npooled = NULL, *ny = NULL;
  float *time_ids = NULL;
  if (textenc_cond_create(&a->o, &c)) {
    cli_fail("encode", NULL);
    goto cleanup;
  }
  if (a->loras.n) {
    struct lora_report rep;
    if (textenc_cond_apply_loras(c, a->loras.v, a->loras.n, a->loras.strict, &rep)) {
      cli_fail("encode", NULL);
      goto cleanup;
    }
    cli_lora_note("encode", &rep, !a->verbose);
  }
  struct textenc_cond_info ci;
  textenc_cond_info(c, &ci);
  bool xl = ci.family == TEXTENC_FAMILY_SDXL;
  if (a->verbose)
    for (int t = 0; t < ci.towers; t++) {
      const struct textenc_info *ti = &ci.tower[t];
      fprintf(stderr, "encode: family %s, tower %d: %s layout, prefix '%s', width %d, %d layers, %d heads, %s, "
              "projection %d, %s weights on %s; clip skip %d\n", textenc_family_name(ci.family), t, ti->layout,
              ti->prefix, ti->width, ti->layers, ti->heads, ti->activation, ti->projection_dim,
              ti->fp16 ? "fp16" : "fp32", ti->device_name, ci.clip_skip);
    }
  if (given_ids && xl) {
    fprintf(stderr, "vkdiffusion encode: --ids gives one tower's ids; SDXL has two towers (give prompts)\n");
    goto cleanup;
  }
  int W = a->width > 0 ? a->width : ci.default_size, H = a->height > 0 ? a->height : ci.default_size;
  struct textenc_sizes sz = {a->orig[0] >= 0 ? a->orig[0] : H,     a->orig[0] >= 0 ? a->orig[1] : W,
                             a->crop[0] >= 0 ? a->crop[0] : 0,     a->crop[0] >= 0 ? a->crop[1] : 0,
                             a->target[0] >= 0 ? a->target[0] : H, a->target[0] >= 0 ? a->target[1] : W};
  bool zeros = a->empty_negative >= 0 ? a->empty_negative == 1 : xl;
  const char *neg = a->negative && a->negative[0] ? a->negative : zeros ? NULL : "";
  const char *const *pp = (const char *const *)a->prompts.s;
  if (!given_ids) {
    int kn;
    if (textenc_cond_count_chunks(c, pp, n, &chunks) || textenc_cond_count_chunks(c, &neg, 1, &kn)) {
      cli_fail("encode", NULL);
      goto cleanup;
    }
    if (kn > chunks) chunks = kn; /* prompt and negative padded alike, as diffusers needs */
  }
  size_t T = (size_t)chunks * CLIP_CONTEXT, D = (size_t)ci.context_dim, P = (size_t)ci.pooled_dim;
  size_t per = (size_t)n * T;
  for (int t = 0; t < ci.towers; t++) {
    if (!ids[t] && !(ids[t] = malloc(per * sizeof *ids[t]))) goto oom;
    if (!given_ids && !(w[t] = malloc(per * sizeof *w[t]))) goto oom;
  }
  if (!(ctx = malloc(per * D * sizeof *ctx)) || !(pooled = malloc(n * P * sizeof *pooled)) ||
      !(nctx = malloc(per * D * sizeof *nctx)) || !(npooled = malloc(n * P * sizeof *npooled)) ||
      (xl && (!(y = malloc((size_t)n * ci.y_dim * sizeof *y)) || !(ny = malloc((size_t)n * ci.y_dim * sizeof *ny)) ||
              !(time_ids = malloc((size_t)n * 6 * sizeof *time_ids)))))
    goto oom;
  if (!given_ids && textenc_cond_tokenize(c, pp, n, chunks, ids[0], w[0], ids[1], w[1])) {
    cli_fail("encode", NULL);
    goto cleanup;
  }
  /* the prompts, then the negative once (copied to every row) */
  if (textenc_cond_encode_ids(c, ids[0], w[0], ids[1], w[1], n, chunks, &sz, ctx, pooled, y) ||
      textenc_cond_encode(c, &neg, 1, chunks, &sz, nctx, npooled, ny)) {
    cli_fail("encode", NULL);
    goto cleanup;
  }
  for (int i = 1; i < n; i++) {
    memcpy(nctx + i * T * D, nctx, T * D * sizeof *nctx);
    memcpy(npooled + i * P, npooled, P * sizeof *npooled);
    if (xl) memcpy(ny + (size_t)i * ci.y_dim, ny, (size_t)ci.y_dim * sizeof *ny);
  }
  if (xl)
    for (int i = 0; i < n; i++) memcpy(time_ids + i * 6, (float[]){(float)sz.original_h, (float)sz.original_w,
                                        (float)sz.crop_top, (float)sz.crop_left, (float)sz.target_h, (float)sz.target_w},
                                        6 * sizeof *time_ids);
  struct st_writer *wr;
  if (st_writer_create(&wr)) goto cleanup;
  int64_t nT[] = {n, (int64_t)T}, nTD[] = {n, (int64_t)T, (int64_t)D}, nP[] = {n, (int64_t)P}, nY[] = {n, ci.y_dim};
  st_writer_add(wr, "ids", ST_I32, 2, nT, ids[0]);
  if (w[0]) st_writer_add(wr, "weights", ST_F32, 2, nT, w[0]);
  if (xl) st_writer_add(wr, "ids_2", ST_I32, 2, nT, ids[1]);
  if (xl && w[1]) st_writer_add(wr, "weights_2", ST_F32, 2, nT, w[1]);
  st_writer_add(wr, "cond", ST_F32, 3, nTD, ctx);
  st_writer_add(wr, "pooled", ST_F32, 2, nP, pooled);
  st_writer_add(wr, "prompt_embeds", ST_F32, 3, nTD, ctx);
  st_writer_add(wr, "negative_prompt_embeds", ST_F32, 3, nTD, nctx);
  if (xl) {
    st_writer_add(wr, "pooled_prompt_embeds", ST_F32, 2, nP, pooled);
    st_writer_add(wr, "negative_pooled_prompt_embeds", ST_F32, 2, nP, npooled);
    st_writer_add(wr, "add_time_ids", ST_F32, 2, (int64_t[]){n, 6}, time_ids);
    st_writer_add(wr, "negative_add_time_ids", ST_F32, 2, (int64_t[]){n, 6}, time_ids);
    st_writer_add(wr, "y", ST_F32, 2, nY, y);
    st_writer_add(wr, "negative_y", ST_F32, 2, nY, ny);
  }
  char skip[16], sizes[128];
  snprintf(skip, sizeof skip, "%d", ci.clip_skip);
  snprintf(sizes, sizeof sizes, "original %d,%d crop %d,%d target %d,%d", sz.original_h, sz.original_w, sz.crop_top,
           sz.crop_left, sz.target_h, sz.target_w);
  st_writer_metadata(wr, "model", a->o.model_path);
  st_writer_metadata(wr, "family", textenc_family_name(ci.family));
  st_writer_metadata(wr, "clip_skip", skip);
  st_writer_metadata(wr, "negative_prompt", a->negative ? a->negative : "");
  st_writer_metadata(wr, "empty_negative", zeros ? "zeros" : "encode");
  if (xl) st_writer_metadata(wr, "sizes", sizes);
  if (st_writer_finish(wr, a->out))
    cli_fail("encode", NULL);
  else
    rc = 0;
  st_writer_destroy(wr);
  goto cleanup;
oom:
  fprintf(stderr, "vkdiffusion encode: out of memory\n");
cleanup:
  for (int t = 0; t < 2; t++) free(ids[t]), free(w[t]);
  free(ctx), free(pooled), free(y), free(nctx), free(npooled), free(ny), free(time_ids);
  textenc_cond_destroy(c);
  return rc;
}

/* The prompts' <lora:NAME:S> tags: removed from the text; every prompt must name the same set (one
 * encoder, one set of weights), which joins --lora's. */
static bool take_prompt_loras(struct encode_args *a) {
  struct prompt_lora *first = NULL;
  int n_first = -1;
  bool ok = true;
  for (int i = 0; i < a->prompts.n && ok; i++) {
    char *clean;
    struct prompt_lora *tags;
    int nt;
    if (prompt_take_loras(a->prompts.s[i], &clean, &tags, &nt)) {
      fprintf(stderr, "vkdiffusion encode: prompt %d: %s\n", i + 1, status_message());
      return false;
    }
    free(a->prompts.s[i]);
    a->prompts.s[i] = clean;
    if (n_first < 0) {
      first = tags, n_first = nt;
      continue;
    }
    ok = nt == n_first;
    for (int k = 0; ok && k < nt; k++) ok = !strcmp(tags[k].name, first[k].name) && tags[k].strength == first[k].strength;
    if (!ok) fprintf(stderr, "vkdiffusion encode: prompt %d names other LoRAs than prompt 1: encode them separately\n", i + 1);
    free(tags);
  }
  for (int k = 0; ok && k < n_first; k++) {
    char path[4200];
    if (a->loras.n == CLI_MAX_LORAS) {
      fprintf(stderr, "vkdiffusion encode: more than %d LoRAs\n", CLI_MAX_LORAS);
      ok = false;
    } else if (!cli_lora_find(a->lora_dir, a->o.model_path, first[k].name, path, sizeof path)) {
      fprintf(stderr, "vkdiffusion encode: <lora:%s>: %s is not there (--lora-dir names the folder)\n", first[k].name, path);
      ok = false;
    } else if (!(a->loras.v[a->loras.n].path = strdup(path))) {
      ok = false;
    } else {
      a->loras.v[a->loras.n++].strength = first[k].strength;
    }
  }
  free(first);
  return ok;
}

int cmd_encode(int argc, char **argv) {
  struct encode_args a = {.o = textenc_default_options(), .empty_negative = -1,
                          .orig = {-1, -1}, .crop = {-1, -1}, .target = {-1, -1}};
  struct textenc_options *o = &a.o;
  long v;
  int rc = 2;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *val = NULL;
    if (cli_is_help(arg)) {
      usage(stdout);
      strings_free(&a.prompts);
      return 0;
    }
#define VALUE() \
  if (!(val = cli_value(argc, argv, &i))) goto done
    if (!strcmp(arg, "--model")) { VALUE(); o->model_path = val; }
    else if (!strcmp(arg, "--tokenizer")) { VALUE(); o->tokenizer_path = val; }
    else if (!strcmp(arg, "--tokenizer-2")) { VALUE(); o->tokenizer_2_path = val; }
    else if (!strcmp(arg, "--config")) { VALUE(); o->config_path = val; }
    else if (!strcmp(arg, "--prompt")) { VALUE(); if (!strings_add(&a.prompts, val, strlen(val))) goto done; }
    else if (!strcmp(arg, "--prompt-file")) { VALUE(); a.prompt_file = val; }
    else if (!strcmp(arg, "--negative-prompt")) { VALUE(); a.negative = val; }
    else if (!strcmp(arg, "--ids")) { VALUE(); a.ids_arg = val; }
    else if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) { VALUE(); a.out = val; }
    else if (!strcmp(arg, "--hidden-act")) { VALUE(); o->hidden_act = val; }
    else if (!strcmp(arg, "--literal")) o->literal = 1;
    else if (!strcmp(arg, "--lora")) { VALUE(); if (!cli_lora_arg("encode", val, &a.loras)) goto done; }
    else if (!strcmp(arg, "--lora-strict")) a.loras.strict = true;
    else if (!strcmp(arg, "--lora-dir")) { VALUE(); a.lora_dir = val; }
    else if (!strcmp(arg, "--verbose")) a.verbose = true;
    else if (!strcmp(arg, "--clip-skip")) { VALUE(); if (!cli_int(arg, val, 1, 64, &v)) goto done; o->clip_skip = (int)v; }
    else if (!strcmp(arg, "--device")) { VALUE(); if (!cli_int(arg, val, 0, 64, &v)) goto done; o->device_index = (int)v; }
    else if (!strcmp(arg, "--width")) { VALUE(); if (!cli_int(arg, val, 8, 1 << 20, &v)) goto done; a.width = (int)v; }
    else if (!strcmp(arg, "--height")) { VALUE(); if (!cli_int(arg, val, 8, 1 << 20, &v)) goto done; a.height = (int)v; }
    else if (!strcmp(arg, "--original-size")) { VALUE(); if (!parse_pair(arg, val, a.orig)) goto done; }
    else if (!strcmp(arg, "--crop")) { VALUE(); if (!parse_pair(arg, val, a.crop)) goto done; }
    else if (!strcmp(arg, "--target-size")) { VALUE(); if (!parse_pair(arg, val, a.target)) goto done; }
    else if (!strcmp(arg, "--family")) {
      VALUE();
      if ((o->family = textenc_parse_family(val)) == TEXTENC_FAMILY_AUTO) {
        fprintf(stderr, "vkdiffusion encode: --family expects sd1, sd2 or sdxl, got '%s'\n", val);
        goto done;
      }
    } else if (!strcmp(arg, "--empty-negative")) {
      VALUE();
      if (strcmp(val, "zeros") && strcmp(val, "encode")) {
        fprintf(stderr, "vkdiffusion encode: --empty-negative expects zeros or encode, got '%s'\n", val);
        goto done;
      }
      a.empty_negative = !strcmp(val, "zeros");
    } else if (!strcmp(arg, "--precision")) {
      VALUE();
      if (strcmp(val, "fp16") && strcmp(val, "fp32")) {
        fprintf(stderr, "vkdiffusion encode: --precision expects fp16 or fp32, got '%s'\n", val);
        goto done;
      }
      o->precision = strcmp(val, "fp32") ? TEXTENC_FP16 : TEXTENC_FP32;
    } else {
      fprintf(stderr, "vkdiffusion encode: unknown option '%s' (see --help)\n", arg);
      goto done;
    }
#undef VALUE
  }
  if (!o->model_path || !a.out) {
    fprintf(stderr, "vkdiffusion encode: --model and -o are required (see --help)\n");
    goto done;
  }
  if ((a.prompts.n > 0) + (a.prompt_file != NULL) + (a.ids_arg != NULL) != 1) {
    fprintf(stderr, "vkdiffusion encode: give exactly one of --prompt, --prompt-file or --ids\n");
    goto done;
  }
  if ((a.width > 0) != (a.height > 0)) {
    fprintf(stderr, "vkdiffusion encode: give --width and --height together\n");
    goto done;
  }
  if (a.prompt_file && !read_prompt_file(a.prompt_file, &a.prompts)) goto done;
  if (!o->literal && !take_prompt_loras(&a)) goto done;
  int n = a.prompts.n, chunks = 1;
  int32_t *ids = NULL;
  if (a.ids_arg && !(ids = parse_ids(a.ids_arg, &n, &chunks))) goto done;
  rc = 1;
  char why[256] = "--family";
  if (o->family == TEXTENC_FAMILY_AUTO && textenc_detect_family(o->model_path, &o->family, why, sizeof why)) {
    free(ids);
    rc = cli_fail("encode", NULL);
    goto done;
  }
  if (a.verbose) fprintf(stderr, "encode: family %s (%s)\n", textenc_family_name(o->family), why);
  /* the CLI's own device, lent to the encoder: VKDIFFUSION_PROFILE and validation reported at the end */
  struct gpu *g = cli_gpu("encode", o->device_index);
  if (!g) {
    free(ids);
    goto done;
  }
  o->device = g;
  rc = o->family == TEXTENC_FAMILY_SD1 ? encode_one_tower(&a, ids, n, chunks) : encode_conditioner(&a, ids, n, chunks);
  rc = cli_finish_gpu(g, rc);
done:
  strings_free(&a.prompts);
  cli_loras_free(&a.loras);
  return rc;
}
