#define _POSIX_C_SOURCE 200809L
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fileio.h"
#include "json_file.h"
#include "html.h"
#include "unicode.h"

#define MAX_VOCAB_FILE (64u << 20)
#define MAX_GZ_TEXT (64u << 20)
#define OPENAI_MERGES (49152 - 256 - 2) /* simple_tokenizer: merges[1:49152-256-2+1] */
#define CACHE_MAX_WORDS 65536
#define CACHE_MAX_WORD_BYTES 256 /* longer words are not cached */

/* --- hash maps --- */

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

/* string (borrowed, NUL-terminated) -> int32 */
struct strmap {
  const char **keys;
  int32_t *vals;
  size_t cap; /* power of two */
  size_t n;
};

static bool strmap_init(struct strmap *m, size_t expected) {
  m->cap = 64;
  while (m->cap < expected * 2) m->cap *= 2;
  m->keys = calloc(m->cap, sizeof *m->keys);
  m->vals = calloc(m->cap, sizeof *m->vals);
  m->n = 0;
  return m->keys && m->vals;
}

static void strmap_free(struct strmap *m) {
  free(m->keys);
  free(m->vals);
}

static size_t strmap_slot(const struct strmap *m, const char *key, size_t len) {
  size_t i = hash_bytes(key, len) & (m->cap - 1);
  while (m->keys[i] && (strncmp(m->keys[i], key, len) != 0 || m->keys[i][len] != 0)) i = (i + 1) & (m->cap - 1);
  return i;
}

/* Returns -1 when absent. */
static int32_t strmap_get(const struct strmap *m, const char *key, size_t len) {
  size_t i = strmap_slot(m, key, len);
  return m->keys[i] ? m->vals[i] : -1;
}

/* false when the key is already present (the map never fills: sized at twice the entries) */
static bool strmap_put(struct strmap *m, const char *key, int32_t v) {
  size_t i = strmap_slot(m, key, strlen(key));
  if (m->keys[i]) return false;
  m->keys[i] = key;
  m->vals[i] = v;
  m->n++;
  return true;
}

/* (id a, id b) -> merge rank and result id */
struct pairmap {
  uint64_t *keys; /* a << 32 | b, plus 1 so 0 means empty */
  int32_t *rank, *result;
  size_t cap;
};

static size_t pair_slot(const struct pairmap *m, uint64_t key) {
  size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (m->cap - 1);
  while (m->keys[i] && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
  return i;
}

static int32_t pair_rank(const struct pairmap *m, int32_t a, int32_t b, int32_t *result) {
  uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
  size_t i = pair_slot(m, key);
  if (!m->keys[i]) return -1;
  *result = m->result[i];
  return m->rank[i];
}

/* --- the tokenizer --- */

struct cache_entry {
  char *word;
  int32_t *ids;
  int n;
};

struct tokenizer {
  char *source;
  char **vocab; /* id -> byte-level string */
  int32_t n_vocab;
  struct strmap by_string;
  struct pairmap merges;
  int32_t byte_id[256], byte_id_w[256];
  int32_t sot, eot, comma;
  bool openclip;
  struct strmap cache_index; /* word -> index into cache */
  struct cache_entry *cache;
  int n_cache;
};

/* GPT-2 / CLIP bytes_to_unicode: printable bytes map to themselves, the rest to U+0100.. in order */
static uint32_t byte_to_unicode(int b) {
  if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) return (uint32_t)b;
  int n = 0;
  for (int i = 0; i < b; i++)
    if (!((i >= '!' && i <= '~') || (i >= 0xa1 && i <= 0xac) || (i >= 0xae && i <= 0xff))) n++;
  return 256u + (uint32_t)n;
}

/* Byte order of the first 256 vocabulary entries: the printable bytes first, then the rest. */
static void byte_order(int order[256]) {
  int k = 0;
  for (int b = 0; b < 256; b++)
    if (byte_to_unicode(b) < 256) order[k++] = b;
  for (int b = 0; b < 256; b++)
    if (byte_to_unicode(b) >= 256) order[k++] = b;
}

static char *byte_string(int b, bool word_end) {
  char buf[16];
  int n = utf8_encode(byte_to_unicode(b), buf);
  if (word_end) memcpy(buf + n, "</w>", 4), n += 4;
  buf[n] = 0;
  return strdup(buf);
}

void tokenizer_destroy(struct tokenizer *t) {
  if (!t) return;
  for (int32_t i = 0; t->vocab && i < t->n_vocab; i++) free(t->vocab[i]);
  free(t->vocab);
  strmap_free(&t->by_string);
  free(t->merges.keys);
  free(t->merges.rank);
  free(t->merges.result);
  for (int i = 0; i < t->n_cache; i++) {
    free(t->cache[i].word);
    free(t->cache[i].ids);
  }
  free(t->cache);
  strmap_free(&t->cache_index);
  free(t->source);
  free(t);
}

static enum status read_gz(const char *path, char **out, size_t *len) {
  *out = NULL;
  gzFile f = gzopen(path, "rb");
  if (!f) return status_set(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap + 1);
  enum status st = STATUS_OK;
  while (buf) {
    if (n == cap) {
      if (cap >= MAX_GZ_TEXT) {
        st = status_set(STATUS_FORMAT, "%s: decompressed text exceeds %u MB", path, MAX_GZ_TEXT >> 20);
        break;
      }
      char *b = realloc(buf, 2 * cap + 1);
      if (!b) break;
      buf = b;
      cap *= 2;
    }
    int r = gzread(f, buf + n, (unsigned)(cap - n));
    if (r < 0) {
      int err;
      st = status_set(STATUS_FORMAT, "%s: not a valid gzip file (%s)", path, gzerror(f, &err));
      break;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  gzclose(f);
  if (!buf) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (st) {
    free(buf);
    return st;
  }
  buf[n] = 0;
  *out = buf;
  *len = n;
  return STATUS_OK;
}

/* Splits text into lines in place (\n, optional \r); returns the count. */
static size_t split_lines(char *text, size_t len, char ***lines) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += text[i] == '\n';
  *lines = malloc((n + 2) * sizeof **lines);
  if (!*lines) return 0;
  size_t k = 0;
  char *p = text;
  while (p < text + len) {
    char *e = memchr(p, '\n', (size_t)(text + len - p));
    if (!e) e = text + len;
    *e = 0;
    if (e > p && e[-1] == '\r') e[-1] = 0;
    (*lines)[k++] = p;
    p = e + 1;
  }
  return k;
}

static enum status add_vocab(struct tokenizer *t, int32_t id, char *s, const char *path) {
  if (!s) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  if (t->vocab[id]) {
    free(s);
    return status_set(STATUS_FORMAT, "%s: id %d appears twice", path, id);
  }
  t->vocab[id] = s;
  if (!strmap_put(&t->by_string, s, id)) return status_set(STATUS_FORMAT, "%s: duplicate entry '%s'", path, s);
  return STATUS_OK;
}

static enum status load_vocab_json(struct tokenizer *t, const char *path) {
  char *text;
  size_t len;
  enum status st = file_read(path, MAX_VOCAB_FILE, &text, &len);
  if (st) return st;
  cJSON *root = NULL;
  st = json_parse(text, len, path, &root);
  free(text);
  if (st) return st;
  if (!cJSON_IsObject(root) || !root->child) {
    cJSON_Delete(root);
    return status_set(STATUS_FORMAT, "%s: expected a JSON object mapping tokens to ids", path);
  }
  int count = cJSON_GetArraySize(root);
  t->n_vocab = count;
  t->vocab = calloc((size_t)count, sizeof *t->vocab);
  if (!t->vocab || !strmap_init(&t->by_string, (size_t)count)) {
    cJSON_Delete(root);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  for (cJSON *e = root->child; e && !st; e = e->next) {
    if (!cJSON_IsNumber(e) || e->valuedouble != (double)e->valueint || e->valueint < 0 || e->valueint >= count) {
      st = status_set(STATUS_FORMAT, "%s: entry '%s' must map to an integer id below %d (the entry count)", path,
                      e->string, count);
      break;
    }
    st = add_vocab(t, e->valueint, strdup(e->string), path);
  }
  cJSON_Delete(root);
  return st;
}

/* merges: "a b" lines; resolves both parts and their concatenation in the vocabulary. */
static enum status apply_merges(struct tokenizer *t, char **lines, size_t n, const char *path, size_t first_line) {
  t->merges.cap = 64;
  while (t->merges.cap < n * 2) t->merges.cap *= 2;
  t->merges.keys = calloc(t->merges.cap, sizeof *t->merges.keys);
  t->merges.rank = calloc(t->merges.cap, sizeof *t->merges.rank);
  t->merges.result = calloc(t->merges.cap, sizeof *t->merges.result);
  bool *produced = calloc((size_t)t->n_vocab, 1);
  char *joined = NULL;
  enum status st = STATUS_OK;
  if (!t->merges.keys || !t->merges.rank || !t->merges.result || !produced) {
    st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  for (size_t r = 0; r < n; r++) {
    char *line = lines[r];
    char *sp = strchr(line, ' ');
    if (!sp || sp == line || !sp[1] || strchr(sp + 1, ' ')) {
      st = status_set(STATUS_FORMAT, "%s: line %zu: expected two tokens separated by one space, got '%.40s'", path,
                      first_line + r, line);
      goto done;
    }
    size_t la = (size_t)(sp - line), lb = strlen(sp + 1);
    int32_t a = strmap_get(&t->by_string, line, la), b = strmap_get(&t->by_string, sp + 1, lb);
    free(joined);
    joined = malloc(la + lb + 1);
    if (!joined) {
      st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      goto done;
    }
    memcpy(joined, line, la);
    memcpy(joined + la, sp + 1, lb + 1);
    int32_t ab = strmap_get(&t->by_string, joined, la + lb);
    if (a < 0 || b < 0 || ab < 0) {
      st = status_set(STATUS_FORMAT, "%s: line %zu: merge '%.40s' uses a token missing from the vocabulary ('%.40s')",
                      path, first_line + r, line, a < 0 ? line : b < 0 ? sp + 1 : joined);
      goto done;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t slot = pair_slot(&t->merges, key);
    if (t->merges.keys[slot]) {
      st = status_set(STATUS_FORMAT, "%s: line %zu: duplicate merge '%.40s'", path, first_line + r, line);
      goto done;
    }
    t->merges.keys[slot] = key;
    t->merges.rank[slot] = (int32_t)r;
    t->merges.result[slot] = ab;
    produced[ab] = true;
  }
  /* every entry but the 512 byte tokens and the specials must come from a merge */
  for (int b = 0; b < 256; b++) produced[t->byte_id[b]] = produced[t->byte_id_w[b]] = true;
  produced[t->sot] = produced[t->eot] = true;
  int32_t orphans = 0, first = -1;
  for (int32_t i = 0; i < t->n_vocab; i++)
    if (!produced[i] && orphans++ == 0) first = i;
  if (orphans)
    st = status_set(STATUS_FORMAT, "%s: %d vocabulary entries (first: '%.40s', id %d) come from no merge: "
                                   "is the merge list truncated?", path, orphans, t->vocab[first], first);
done:
  free(joined);
  free(produced);
  return st;
}

/* byte tokens and specials, which every CLIP-format vocabulary has */
static enum status resolve_basics(struct tokenizer *t, const char *path) {
  for (int b = 0; b < 256; b++) {
    char buf[16];
    int n = utf8_encode(byte_to_unicode(b), buf);
    buf[n] = 0;
    t->byte_id[b] = strmap_get(&t->by_string, buf, (size_t)n);
    memcpy(buf + n, "</w>", 5);
    t->byte_id_w[b] = strmap_get(&t->by_string, buf, (size_t)n + 4);
    if (t->byte_id[b] < 0 || t->byte_id_w[b] < 0)
      return status_set(STATUS_FORMAT, "%s: the vocabulary lacks the byte token for byte 0x%02x", path, b);
  }
  t->sot = strmap_get(&t->by_string, "<|startoftext|>", 15);
  t->eot = strmap_get(&t->by_string, "<|endoftext|>", 13);
  if (t->sot < 0 || t->eot < 0)
    return status_set(STATUS_FORMAT, "%s: the vocabulary lacks <|startoftext|> or <|endoftext|>", path);
  t->comma = strmap_get(&t->by_string, ",</w>", 5);
  return STATUS_OK;
}

static enum status load_hf(struct tokenizer *t, const char *vocab_path, const char *merges_path) {
  enum status st = load_vocab_json(t, vocab_path);
  if (!st) st = resolve_basics(t, vocab_path);
  if (st) return st;
  char *text, **lines = NULL;
  size_t len = 0;
  if ((st = file_read(merges_path, MAX_VOCAB_FILE, &text, &len))) return st;
  size_t n = split_lines(text, len, &lines), first = 0;
  if (!lines) {
    free(text);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  if (n && !strncmp(lines[0], "#version", 8)) first = 1;
  while (n > first && lines[n - 1][0] == 0) n--; /* trailing empty lines */
  st = apply_merges(t, lines + first, n - first, merges_path, first + 1);
  free(lines);
  free(text);
  return st;
}

static enum status load_openai_gz(struct tokenizer *t, const char *path) {
  char *text, **lines = NULL;
  size_t len = 0;
  enum status st = read_gz(path, &text, &len);
  if (st) return st;
  size_t n = split_lines(text, len, &lines);
  if (!lines) {
    free(text);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  if (n < 1 + OPENAI_MERGES) {
    st = status_set(STATUS_FORMAT, "%s: truncated merge list: %zu lines, expected at least %d", path, n, 1 + OPENAI_MERGES);
    goto done;
  }
  t->n_vocab = 512 + OPENAI_MERGES + 2;
  t->vocab = calloc((size_t)t->n_vocab, sizeof *t->vocab);
  if (!t->vocab || !strmap_init(&t->by_string, (size_t)t->n_vocab)) {
    st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  int order[256];
  byte_order(order);
  int32_t id = 0;
  for (int i = 0; i < 256 && !st; i++) st = add_vocab(t, id++, byte_string(order[i], false), path);
  for (int i = 0; i < 256 && !st; i++) st = add_vocab(t, id++, byte_string(order[i], true), path);
  for (int r = 0; r < OPENAI_MERGES && !st; r++) {
    const char *line = lines[1 + r], *sp = strchr(line, ' ');
    if (!sp) {
      st = status_set(STATUS_FORMAT, "%s: line %d: expected two tokens separated by one space", path, r + 2);
      break;
    }
    char *joined = malloc(strlen(line));
    if (joined) {
      memcpy(joined, line, (size_t)(sp - line));
      strcpy(joined + (sp - line), sp + 1);
    }
    st = add_vocab(t, id++, joined, path);
  }
  if (!st) st = add_vocab(t, id++, strdup("<|startoftext|>"), path);
  if (!st) st = add_vocab(t, id++, strdup("<|endoftext|>"), path);
  if (!st) st = resolve_basics(t, path);
  if (!st) st = apply_merges(t, lines + 1, OPENAI_MERGES, path, 2);
done:
  free(lines);
  free(text);
  return st;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

static bool is_dir(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

enum status tokenizer_load(const char *path, struct tokenizer **out) {
  *out = NULL;
  struct tokenizer *t = calloc(1, sizeof *t);
  if (!t || !(t->source = strdup(path)) || !strmap_init(&t->cache_index, CACHE_MAX_WORDS) ||
      !(t->cache = calloc(CACHE_MAX_WORDS, sizeof *t->cache))) {
    tokenizer_destroy(t);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  enum status st;
  char a[4096], b[4096];
  if (ends_with(path, ".gz")) {
    st = load_openai_gz(t, path);
  } else if (is_dir(path)) {
    snprintf(a, sizeof a, "%s/vocab.json", path);
    snprintf(b, sizeof b, "%s/merges.txt", path);
    if (!is_file(a)) {
      char gz[4096];
      snprintf(gz, sizeof gz, "%s/bpe_simple_vocab_16e6.txt.gz", path);
      st = is_file(gz) ? load_openai_gz(t, gz)
                       : status_set(STATUS_NOT_FOUND, "%s: no vocab.json + merges.txt or bpe_simple_vocab_16e6.txt.gz "
                                                      "in this folder", path);
    } else {
      st = load_hf(t, a, b);
    }
  } else if (ends_with(path, "vocab.json") || ends_with(path, "merges.txt")) {
    size_t dir = strlen(path) - strlen("vocab.json"); /* both names have 10 characters */
    snprintf(a, sizeof a, "%.*svocab.json", (int)dir, path);
    snprintf(b, sizeof b, "%.*smerges.txt", (int)dir, path);
    st = load_hf(t, a, b);
  } else if (is_file(path)) {
    st = status_set(STATUS_UNSUPPORTED, "%s: not a tokenizer (expected a folder with vocab.json + merges.txt, "
                                        "or bpe_simple_vocab_16e6.txt.gz)", path);
  } else {
    st = status_set(STATUS_NOT_FOUND, "%s: no such file or folder", path);
  }
  if (st) {
    tokenizer_destroy(t);
    return st;
  }
  *out = t;
  return STATUS_OK;
}

static bool has_vocab(const char *dir) {
  char p[4200];
  snprintf(p, sizeof p, "%.4000s/vocab.json", dir);
  if (is_file(p)) return true;
  snprintf(p, sizeof p, "%.4000s/bpe_simple_vocab_16e6.txt.gz", dir);
  return is_file(p);
}

enum status tokenizer_find(const char *explicit_path, const char *model_path, struct tokenizer **out) {
  if (explicit_path) return tokenizer_load(explicit_path, out);
  char looked[8192] = "", cand[4096], dir[4000];
  size_t lo = 0;
  if (model_path) { /* the model's own folder, its tokenizer/ subfolder, or a diffusers sibling */
    snprintf(dir, sizeof dir, "%s", model_path);
    if (!is_dir(dir)) {
      char *slash = strrchr(dir, '/');
      if (slash) *slash = 0;
      else snprintf(dir, sizeof dir, ".");
    }
    const char *forms[] = {"%s", "%s/tokenizer", "%s/../tokenizer"};
    for (int i = 0; i < 3; i++) {
      snprintf(cand, sizeof cand, forms[i], dir); /* dir is shorter than cand by more than 13 */
      if (has_vocab(cand)) return tokenizer_load(cand, out);
      lo += (size_t)snprintf(looked + lo, lo < sizeof looked ? sizeof looked - lo : 0, "%s%s", lo ? ", " : "", cand);
    }
  }
  const char *env = getenv("VKDIFFUSION_TOKENIZER");
  if (env && *env) return tokenizer_load(env, out);
  lo += (size_t)snprintf(looked + lo, lo < sizeof looked ? sizeof looked - lo : 0, "%s$VKDIFFUSION_TOKENIZER (unset)",
                         lo ? ", " : "");
#ifdef VKD_DATADIR
  snprintf(cand, sizeof cand, "%s/tokenizer", VKD_DATADIR);
  if (has_vocab(cand)) return tokenizer_load(cand, out);
  if (lo < sizeof looked) snprintf(looked + lo, sizeof looked - lo, ", %s", cand);
#endif
  *out = NULL;
  return status_set(STATUS_NOT_FOUND, "no CLIP vocabulary found (looked in: %s); pass --tokenizer PATH (a folder "
                                      "with vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz)", looked);
}

void tokenizer_set_openclip_specials(struct tokenizer *t, bool on) { t->openclip = on; }
int32_t tokenizer_sot(const struct tokenizer *t) { return t->sot; }
int32_t tokenizer_eot(const struct tokenizer *t) { return t->eot; }
int32_t tokenizer_comma(const struct tokenizer *t) { return t->comma; }
int32_t tokenizer_vocab_size(const struct tokenizer *t) { return t->n_vocab; }
const char *tokenizer_source(const struct tokenizer *t) { return t->source; }
const char *tokenizer_token(const struct tokenizer *t, int32_t id) {
  return id >= 0 && id < t->n_vocab ? t->vocab[id] : NULL;
}

enum status token_list_push(struct token_list *l, int32_t id) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 128;
    int32_t *p = realloc(l->ids, cap * sizeof *p);
    if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    l->ids = p;
    l->cap = cap;
  }
  l->ids[l->n++] = id;
  return STATUS_OK;
}

void token_list_free(struct token_list *l) {
  free(l->ids);
  memset(l, 0, sizeof *l);
}

/* --- BPE --- */

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
  size_t i = (*n)++;
  while (i && h[(i - 1) / 2] > v) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
  uint64_t top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && h[c + 1] < h[c]) c++;
    if (h[c] >= last) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

/* Merges of one word: repeatedly the lowest-ranked adjacent pair, all its non-overlapping
 * occurrences left to right (as simple_tokenizer.bpe), in O(n log n) with a heap. */
static enum status bpe_word(struct tokenizer *t, const uint8_t *w, size_t n, struct token_list *out) {
  if (n == 1) return token_list_push(out, t->byte_id_w[w[0]]);
  int32_t *sym = malloc(n * sizeof *sym), *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
  uint64_t *heap = malloc(4 * n * sizeof *heap), *batch = malloc(n * sizeof *batch);
  enum status st = STATUS_OK;
  if (!sym || !next || !prev || !heap || !batch) {
    st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  size_t hn = 0;
  for (size_t i = 0; i < n; i++) {
    sym[i] = i + 1 < n ? t->byte_id[w[i]] : t->byte_id_w[w[i]];
    next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    prev[i] = (int32_t)i - 1;
  }
  int32_t res;
  for (size_t i = 0; i + 1 < n; i++) {
    int32_t r = pair_rank(&t->merges, sym[i], sym[i + 1], &res);
    if (r >= 0) heap_push(heap, &hn, (uint64_t)r << 32 | i);
  }
  while (hn) {
    uint32_t rank = (uint32_t)(heap[0] >> 32);
    size_t nb = 0;
    while (hn && (uint32_t)(heap[0] >> 32) == rank) batch[nb++] = heap_pop(heap, &hn) & 0xffffffffu;
    size_t merged = 0;
    for (size_t k = 0; k < nb; k++) { /* ascending positions; stale entries fail the check */
      int32_t i = (int32_t)batch[k];
      if (sym[i] < 0 || next[i] < 0 || pair_rank(&t->merges, sym[i], sym[next[i]], &res) != (int32_t)rank) continue;
      int32_t j = next[i];
      sym[i] = res;
      sym[j] = -1;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      batch[merged++] = (uint64_t)i;
    }
    for (size_t k = 0; k < merged; k++) {
      int32_t i = (int32_t)batch[k];
      if (sym[i] < 0) continue;
      int32_t r;
      if (prev[i] >= 0 && (r = pair_rank(&t->merges, sym[prev[i]], sym[i], &res)) >= 0)
        heap_push(heap, &hn, (uint64_t)r << 32 | (uint32_t)prev[i]);
      if (next[i] >= 0 && (r = pair_rank(&t->merges, sym[i], sym[next[i]], &res)) >= 0)
        heap_push(heap, &hn, (uint64_t)r << 32 | (uint32_t)i);
    }
  }
  for (int32_t i = 0; i >= 0 && !st; i = next[i]) st = token_list_push(out, sym[i]);
done:
  free(sym), free(next), free(prev), free(heap), free(batch);
  return st;
}

static void cache_clear(struct tokenizer *t) {
  for (int i = 0; i < t->n_cache; i++) {
    free(t->cache[i].word);
    free(t->cache[i].ids);
  }
  t->n_cache = 0;
  memset(t->cache_index.keys, 0, t->cache_index.cap * sizeof *t->cache_index.keys);
  t->cache_index.n = 0;
}

static enum status bpe_cached(struct tokenizer *t, const char *w, size_t n, struct token_list *out) {
  if (n > CACHE_MAX_WORD_BYTES) return bpe_word(t, (const uint8_t *)w, n, out);
  int32_t c = strmap_get(&t->cache_index, w, n);
  if (c >= 0) {
    for (int i = 0; i < t->cache[c].n; i++) {
      enum status st = token_list_push(out, t->cache[c].ids[i]);
      if (st) return st;
    }
    return STATUS_OK;
  }
  size_t start = out->n;
  enum status st = bpe_word(t, (const uint8_t *)w, n, out);
  if (st) return st;
  if (t->n_cache == CACHE_MAX_WORDS) cache_clear(t);
  struct cache_entry *e = &t->cache[t->n_cache];
  e->word = malloc(n + 1);
  e->ids = malloc((out->n - start) * sizeof *e->ids);
  if (!e->word || !e->ids) { /* the cache is an optimisation: skip it */
    free(e->word), free(e->ids);
    e->word = NULL, e->ids = NULL;
    return STATUS_OK;
  }
  memcpy(e->word, w, n);
  e->word[n] = 0;
  e->n = (int)(out->n - start);
  memcpy(e->ids, out->ids + start, (size_t)e->n * sizeof *e->ids);
  strmap_put(&t->cache_index, e->word, t->n_cache++);
  return STATUS_OK;
}

/* --- cleaning and pre-tokenisation --- */

static bool match_ascii(const uint32_t *s, size_t n, size_t i, const char *lit) {
  for (size_t k = 0; lit[k]; k++)
    if (i + k >= n || s[i + k] != (uint8_t)lit[k]) return false;
  return true;
}

/* Python: html.unescape twice, strip, re.sub(r'\s+', ' '), strip, lower(). Returns new length. */
static size_t clean(uint32_t *s, size_t n, uint32_t *tmp) {
  n = html_unescape(s, n, tmp);
  n = html_unescape(tmp, n, s);
  size_t a = 0, b = n;
  while (a < b && uc_is_strip_space(s[a])) a++;
  while (b > a && uc_is_strip_space(s[b - 1])) b--;
  size_t o = 0;
  for (size_t i = a; i < b;) {
    if (uc_is_space(s[i])) {
      while (i < b && uc_is_space(s[i])) i++;
      tmp[o++] = ' ';
    } else {
      tmp[o++] = s[i++];
    }
  }
  a = 0, b = o;
  while (a < b && uc_is_strip_space(tmp[a])) a++;
  while (b > a && uc_is_strip_space(tmp[b - 1])) b--;
  /* lower() may grow the text (U+0130 -> 2 code points): s has room for 2n */
  size_t m = 0;
  for (size_t i = a; i < b; i++) {
    uint32_t lc[2];
    int k = uc_lower(tmp[i], lc);
    for (int j = 0; j < k; j++) s[m++] = lc[j];
  }
  return m;
}

enum status tokenizer_encode(struct tokenizer *t, const char *text, size_t len, struct token_list *out) {
  size_t n;
  uint32_t *cps = utf8_decode(text, len, &n);
  uint32_t *big = cps ? realloc(cps, (2 * n + 1) * sizeof *cps) : NULL;
  uint32_t *tmp = malloc((2 * n + 1) * sizeof *tmp);
  char *bytes = malloc(8 * n + 8);
  enum status st = STATUS_OK;
  if (!big || !tmp || !bytes) {
    free(big ? big : cps), free(tmp), free(bytes);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  cps = big;
  n = clean(cps, n, tmp);
  const char *sot = t->openclip ? "<start_of_text>" : "<|startoftext|>";
  const char *eot = t->openclip ? "<end_of_text>" : "<|endoftext|>";
  static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  for (size_t i = 0; i < n && !st;) {
    uint32_t c = cps[i];
    if (uc_is_space(c)) {
      i++;
      continue;
    }
    size_t j = i;
    if (c == '<' && match_ascii(cps, n, i, sot)) {
      st = token_list_push(out, t->sot);
      i += strlen(sot);
      continue;
    }
    if (c == '<' && match_ascii(cps, n, i, eot)) {
      st = token_list_push(out, t->eot);
      i += strlen(eot);
      continue;
    }
    if (c == '\'')
      for (int k = 0; k < 7 && j == i; k++)
        if (match_ascii(cps, n, i, contractions[k])) j = i + strlen(contractions[k]);
    if (j == i) {
      enum uc_class cl = uc_class(c);
      if (cl == UC_LETTER)
        while (j < n && uc_class(cps[j]) == UC_LETTER) j++;
      else if (cl == UC_NUMBER)
        j = i + 1;
      else
        while (j < n && !uc_is_space(cps[j]) && uc_class(cps[j]) == UC_OTHER) j++;
    }
    size_t nb = 0;
    for (size_t k = i; k < j; k++) nb += (size_t)utf8_encode(cps[k], bytes + nb);
    st = bpe_cached(t, bytes, nb, out);
    i = j;
  }
  free(cps), free(tmp), free(bytes);
  return st;
}
