#define _POSIX_C_SOURCE 200809L
#include "prompt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"

#define COMMA_BACKTRACK 20

void prompt_segments_free(struct prompt_segment *s, int n) {
  for (int i = 0; s && i < n; i++) free(s[i].text);
  free(s);
}

struct seglist {
  struct prompt_segment *s;
  int n, cap;
};

static enum status seg_push(struct seglist *l, const char *text, size_t len, float w) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    struct prompt_segment *p = realloc(l->s, (size_t)cap * sizeof *p);
    if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    l->s = p;
    l->cap = cap;
  }
  char *t = malloc(len + 1);
  if (!t) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  memcpy(t, text, len);
  t[len] = 0;
  l->s[l->n++] = (struct prompt_segment){t, w};
  return STATUS_OK;
}

static bool is_word_byte(const char *s, size_t i, size_t n) {
  if (i >= n) return false;
  unsigned char c = (unsigned char)s[i];
  if (c >= 0x80) { /* \w on non-ASCII: letters and numbers */
    size_t k;
    uint32_t *cp = utf8_decode(s + i, n - i < 4 ? n - i : 4, &k);
    bool w = cp && k && uc_class(cp[0]) != UC_OTHER;
    free(cp);
    return w;
  }
  return c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

static bool is_space_byte(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* re.split(r"\s*\bBREAK\b\s*", text): plain text with BREAK markers (weight -1) between parts */
static enum status push_text(struct seglist *l, const char *s, size_t n) {
  size_t start = 0;
  for (size_t i = 0; i + 5 <= n; i++) {
    if (memcmp(s + i, "BREAK", 5) != 0) continue;
    bool left = i == 0 || !is_word_byte(s, i - 1, n);
    if (i > 0 && (unsigned char)s[i - 1] >= 0x80) { /* find the start of the previous UTF-8 character */
      size_t k = i - 1;
      while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) k--;
      left = !is_word_byte(s, k, n);
    }
    if (!left || is_word_byte(s, i + 5, n)) continue;
    size_t a = i, b = i + 5;
    while (a > start && is_space_byte(s[a - 1])) a--;
    while (b < n && is_space_byte(s[b])) b++;
    enum status st = seg_push(l, s + start, a - start, 1.0f);
    if (!st) st = seg_push(l, "BREAK", 5, -1.0f);
    if (st) return st;
    start = b;
    i = b - 1;
  }
  return seg_push(l, s + start, n - start, 1.0f);
}

static void multiply_range(struct seglist *l, int from, double m) {
  for (int p = from; p < l->n; p++) l->s[p].weight = (float)(l->s[p].weight * m);
}

/* ":\s*([+-]?[.\d]+)\s*\)" at s[i]; *end past ')' */
static bool match_weight(const char *s, size_t n, size_t i, double *w, size_t *end) {
  if (s[i] != ':') return false;
  size_t k = i + 1;
  while (k < n && is_space_byte(s[k])) k++;
  size_t num = k;
  if (k < n && (s[k] == '+' || s[k] == '-')) k++;
  size_t digits = k;
  while (k < n && ((s[k] >= '0' && s[k] <= '9') || s[k] == '.')) k++;
  if (k == digits) return false;
  size_t num_end = k;
  while (k < n && is_space_byte(s[k])) k++;
  if (k >= n || s[k] != ')') return false;
  char buf[64];
  size_t len = num_end - num < sizeof buf - 1 ? num_end - num : sizeof buf - 1;
  memcpy(buf, s + num, len);
  buf[len] = 0;
  char *e;
  *w = strtod(buf, &e);
  if (*e) return false; /* "1.2.3": Python's float() fails; we keep the text literal instead */
  *end = k + 1;
  return true;
}

/* Neighbours of equal weight merged into one segment, in one pass (each text copied once). */
static enum status merge_equal(struct seglist *l) {
  int out = 0;
  for (int i = 0; i < l->n;) {
    int j = i + 1;
    size_t len = strlen(l->s[i].text);
    while (j < l->n && l->s[j].weight == l->s[i].weight) len += strlen(l->s[j].text), j++;
    if (j > i + 1) {
      char *t = malloc(len + 1);
      if (!t) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      size_t o = 0;
      for (int k = i; k < j; k++) {
        size_t b = strlen(l->s[k].text);
        memcpy(t + o, l->s[k].text, b);
        o += b;
        free(l->s[k].text);
        l->s[k].text = NULL;
      }
      t[o] = 0;
      l->s[i].text = t;
    }
    l->s[out++] = l->s[i];
    i = j;
  }
  l->n = out;
  return STATUS_OK;
}

enum status prompt_parse(const char *s, struct prompt_segment **out, int *count) {
  struct seglist l = {0};
  int round[PROMPT_MAX_DEPTH], square[PROMPT_MAX_DEPTH], nr = 0, ns = 0; /* bracket stacks: segment index at the opener */
  size_t n = strlen(s);
  if (n > PROMPT_MAX_BYTES)
    return status_set(STATUS_INVALID_ARGUMENT, "prompt of %zu bytes: more than the %d allowed", n, PROMPT_MAX_BYTES);
  enum status st = STATUS_OK;
  for (size_t i = 0; i < n && !st;) {
    char c = s[i];
    double w;
    size_t end;
    if (c == '\\') {
      if (i + 1 < n && strchr("()[]\\", s[i + 1])) {
        st = seg_push(&l, s + i + 1, 1, 1.0f);
        i += 2;
      } else {
        st = seg_push(&l, "", 0, 1.0f); /* a lone backslash: text[1:] == "" */
        i++;
      }
    } else if (c == '(' || c == '[') {
      /* each closer multiplies the segments since its opener: the depth bounds that work (linear) */
      if (nr + ns >= PROMPT_MAX_DEPTH)
        st = status_set(STATUS_INVALID_ARGUMENT, "prompt brackets nest more than %d deep (at byte %zu)", PROMPT_MAX_DEPTH, i);
      else if (c == '(') round[nr++] = l.n;
      else square[ns++] = l.n;
      i++;
    } else if (c == ':' && nr > 0 && match_weight(s, n, i, &w, &end)) {
      multiply_range(&l, round[--nr], w);
      i = end;
    } else if (c == ')' && nr > 0) {
      multiply_range(&l, round[--nr], 1.1);
      i++;
    } else if (c == ']' && ns > 0) {
      multiply_range(&l, square[--ns], 1 / 1.1);
      i++;
    } else {
      /* plain text: [^\\()\[\]:]+, or a single ':' / stray ')' / ']' / unmatched weight */
      size_t j = i;
      if (c == ':' && match_weight(s, n, i, &w, &end)) {
        j = end;
      } else if (strchr(":)]", c)) {
        j = i + 1;
      } else {
        while (j < n && !strchr("\\()[]:", s[j])) j++;
      }
      st = push_text(&l, s + i, j - i);
      i = j;
    }
  }
  while (nr > 0 && !st) multiply_range(&l, round[--nr], 1.1);
  while (ns > 0 && !st) multiply_range(&l, square[--ns], 1 / 1.1);
  for (int i = 0; i < l.n && !st; i++) /* "(x:1e39)": a weight that overflows is an error here, not a NaN later */
    if (l.s[i].weight != -1.0f && !(fabsf(l.s[i].weight) <= PROMPT_MAX_WEIGHT))
      st = status_set(STATUS_INVALID_ARGUMENT, "prompt weight %g of \"%.40s\" is beyond +-%g", (double)l.s[i].weight,
                      l.s[i].text, (double)PROMPT_MAX_WEIGHT);
  if (!st && l.n == 0) st = seg_push(&l, "", 0, 1.0f);
  if (!st) st = merge_equal(&l);
  if (st) {
    prompt_segments_free(l.s, l.n);
    return st;
  }
  *out = l.s;
  *count = l.n;
  return STATUS_OK;
}

/* --- chunking --- */

struct builder {
  struct prompt_tokens *p;
  int32_t sot, eot, pad;
  int32_t ids[CLIP_CONTEXT];
  float w[CLIP_CONTEXT];
  int len, last_comma;
};

static enum status emit_chunk(struct builder *b) {
  struct prompt_tokens *p = b->p;
  int k = p->n_chunks;
  int32_t *ids = realloc(p->ids, (size_t)(k + 1) * CLIP_CONTEXT * sizeof *ids);
  if (ids) p->ids = ids;
  float *w = realloc(p->weights, (size_t)(k + 1) * CLIP_CONTEXT * sizeof *w);
  if (w) p->weights = w;
  if (!ids || !w) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  int32_t *ci = p->ids + (size_t)k * CLIP_CONTEXT;
  float *cw = p->weights + (size_t)k * CLIP_CONTEXT;
  ci[0] = b->sot;
  cw[0] = 1.0f;
  for (int i = 0; i < b->len; i++) ci[1 + i] = b->ids[i], cw[1 + i] = b->w[i];
  ci[1 + b->len] = b->eot;
  cw[1 + b->len] = 1.0f;
  for (int i = 2 + b->len; i < CLIP_CONTEXT; i++) ci[i] = b->pad, cw[i] = 1.0f;
  p->n_chunks++;
  b->len = 0;
  b->last_comma = -1;
  return STATUS_OK;
}

/* A1111 tokenize_line: one segment's tokens into the chunks, with comma backtracking */
static enum status add_tokens(struct builder *b, const int32_t *ids, size_t n, float weight, int32_t comma,
                              bool backtrack) {
  enum status st = STATUS_OK;
  for (size_t k = 0; k < n && !st; k++) {
    if (ids[k] == comma) {
      b->last_comma = b->len;
    } else if (backtrack && b->len == CLIP_CHUNK && b->last_comma != -1 && b->len - b->last_comma <= COMMA_BACKTRACK) {
      int at = b->last_comma + 1, moved = b->len - at;
      int32_t mi[CLIP_CHUNK];
      float mw[CLIP_CHUNK];
      memcpy(mi, b->ids + at, (size_t)moved * sizeof *mi);
      memcpy(mw, b->w + at, (size_t)moved * sizeof *mw);
      b->len = at;
      if ((st = emit_chunk(b))) break;
      memcpy(b->ids, mi, (size_t)moved * sizeof *mi);
      memcpy(b->w, mw, (size_t)moved * sizeof *mw);
      b->len = moved;
    }
    if (b->len == CLIP_CHUNK && (st = emit_chunk(b))) break;
    b->ids[b->len] = ids[k];
    b->w[b->len++] = weight;
  }
  return st;
}

void prompt_tokens_free(struct prompt_tokens *p) {
  free(p->ids);
  free(p->weights);
  memset(p, 0, sizeof *p);
}

enum status prompt_tokenize(struct tokenizer *t, const char *text, enum prompt_mode mode, int32_t pad,
                            struct prompt_tokens *out) {
  memset(out, 0, sizeof *out);
  struct builder b = {.p = out, .sot = tokenizer_sot(t), .eot = tokenizer_eot(t), .pad = pad, .last_comma = -1};
  struct token_list ids = {0};
  enum status st = STATUS_OK;
  size_t bytes = strlen(text);
  if (bytes > PROMPT_MAX_BYTES)
    return status_set(STATUS_INVALID_ARGUMENT, "prompt of %zu bytes: more than the %d allowed", bytes, PROMPT_MAX_BYTES);
  if (mode != PROMPT_SYNTAX) {
    st = tokenizer_encode(t, text, strlen(text), &ids);
    size_t n = mode == PROMPT_TRUNCATE && ids.n > CLIP_CHUNK ? CLIP_CHUNK : ids.n;
    if (!st) st = add_tokens(&b, ids.ids, n, 1.0f, -2, false);
  } else {
    struct prompt_segment *seg = NULL;
    int ns = 0;
    st = prompt_parse(text, &seg, &ns);
    for (int i = 0; i < ns && !st; i++) {
      if (seg[i].weight == -1.0f && !strcmp(seg[i].text, "BREAK")) {
        st = emit_chunk(&b);
        continue;
      }
      ids.n = 0;
      st = tokenizer_encode(t, seg[i].text, strlen(seg[i].text), &ids);
      if (!st) st = add_tokens(&b, ids.ids, ids.n, seg[i].weight, tokenizer_comma(t), true);
    }
    prompt_segments_free(seg, ns);
  }
  if (!st && (b.len > 0 || out->n_chunks == 0)) st = emit_chunk(&b);
  token_list_free(&ids);
  if (st) prompt_tokens_free(out);
  return st;
}

enum status prompt_tokens_extend(struct prompt_tokens *p, int n, int32_t sot, int32_t eot, int32_t pad) {
  struct builder b = {.p = p, .sot = sot, .eot = eot, .pad = pad, .last_comma = -1};
  while (p->n_chunks < n) {
    enum status st = emit_chunk(&b);
    if (st) return st;
  }
  return STATUS_OK;
}

enum status prompt_take_loras(const char *text, char **clean, struct prompt_lora **tags, int *n) {
  *clean = NULL;
  *tags = NULL;
  *n = 0;
  size_t len = strlen(text);
  char *out = malloc(len + 1);
  struct prompt_lora *t = NULL;
  if (!out) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  size_t o = 0;
  enum status s = STATUS_OK;
  for (const char *p = text; *p && !s;) {
    if (strncmp(p, "<lora:", 6)) {
      out[o++] = *p++;
      continue;
    }
    const char *body = p + 6, *end = strchr(body, '>');
    if (!end) {
      s = status_set(STATUS_INVALID_ARGUMENT, "<lora:%.40s: no closing '>'", body);
      break;
    }
    const char *colon = memchr(body, ':', (size_t)(end - body));
    size_t name_len = (size_t)((colon ? colon : end) - body);
    /* the name: no leading or trailing blanks, not empty, no path separators */
    while (name_len && (body[0] == ' ')) body++, name_len--;
    while (name_len && body[name_len - 1] == ' ') name_len--;
    if (!name_len || name_len >= sizeof t->name || memchr(body, '/', name_len)) {
      s = status_set(STATUS_INVALID_ARGUMENT, "<lora:%.*s>: a LoRA needs a file name (no '/', at most 255 bytes)",
                     (int)(end - (p + 6)), p + 6);
      break;
    }
    double strength = 1.0;
    if (colon) {
      char num[64];
      size_t nl = (size_t)(end - colon - 1);
      char *e;
      if (nl >= sizeof num) nl = sizeof num - 1;
      memcpy(num, colon + 1, nl);
      num[nl] = 0;
      strength = strtod(num, &e);
      while (*e == ' ') e++;
      if (e == num || *e || !isfinite(strength) || fabs(strength) > 100) {
        s = status_set(STATUS_INVALID_ARGUMENT, "<lora:%.*s>: the strength must be a number from -100 to 100 "
                       "(one strength: separate text-encoder and U-Net strengths are not supported)",
                       (int)(end - (p + 6)), p + 6);
        break;
      }
    }
    if (*n == PROMPT_MAX_LORAS) {
      s = status_set(STATUS_INVALID_ARGUMENT, "more than %d <lora:...> tags in one prompt", PROMPT_MAX_LORAS);
      break;
    }
    struct prompt_lora *g = realloc(t, (size_t)(*n + 1) * sizeof *g);
    if (!g) {
      s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      break;
    }
    t = g;
    memcpy(t[*n].name, body, name_len);
    t[*n].name[name_len] = 0;
    t[(*n)++].strength = strength;
    p = end + 1;
  }
  if (s) {
    free(out), free(t);
    *n = 0;
    return s;
  }
  out[o] = 0;
  *clean = out;
  *tags = t;
  return STATUS_OK;
}
