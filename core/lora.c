#define _POSIX_C_SOURCE 200809L
#include "lora.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpu.h"
#include "sha256.h"

#define LORA_MAX_RANK 65536

/* --- the file --- */

enum part { P_DOWN, P_UP, P_ALPHA, P_NONE };

/* splits a key into its module base and part; false: not a LoRA key we support */
static bool split_key(const char *key, char *base, size_t n, enum part *part) {
  static const struct {
    const char *suffix;
    enum part part;
  } parts[] = {{".lora_down.weight", P_DOWN}, {".lora_up.weight", P_UP}, {".alpha", P_ALPHA},
               {".lora_A.weight", P_DOWN},    {".lora_B.weight", P_UP}};
  size_t len = strlen(key);
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    size_t sl = strlen(parts[i].suffix);
    if (len > sl && !strcmp(key + len - sl, parts[i].suffix) && len - sl < n) {
      memcpy(base, key, len - sl);
      base[len - sl] = 0;
      *part = parts[i].part;
      return true;
    }
  }
  *part = P_NONE;
  return false;
}

static bool starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* a module base -> network and canonical name ('.' as '_') */
static enum lora_net classify(const char *base, char *name, size_t n) {
  static const struct {
    const char *prefix;
    enum lora_net net;
  } kohya[] = {{"lora_unet_", LORA_NET_UNET}, {"lora_te1_", LORA_NET_TE1}, {"lora_te2_", LORA_NET_TE2},
               {"lora_te_", LORA_NET_TE1},    {"unet.", LORA_NET_UNET},   {"text_encoder_2.", LORA_NET_TE2},
               {"text_encoder.", LORA_NET_TE1}};
  const char *rest = base;
  enum lora_net net = LORA_NET_UNKNOWN;
  if (starts(rest, "base_model.model.")) rest += strlen("base_model.model.");
  for (size_t i = 0; i < sizeof kohya / sizeof *kohya && net == LORA_NET_UNKNOWN; i++)
    if (starts(rest, kohya[i].prefix)) net = kohya[i].net, rest += strlen(kohya[i].prefix);
  if (net == LORA_NET_UNKNOWN) { /* a bare PEFT model: the module path tells */
    static const char *const unet[] = {"down_blocks.", "up_blocks.", "mid_block.", "conv_in", "conv_out", "time_embedding."};
    for (size_t i = 0; i < sizeof unet / sizeof *unet; i++)
      if (starts(rest, unet[i])) net = LORA_NET_UNET;
    if (starts(rest, "text_model.")) net = LORA_NET_TE1;
  }
  snprintf(name, n, "%s", rest);
  for (char *c = name; *c; c++)
    if (*c == '.') *c = '_';
  return net;
}

void lora_close(struct lora_file *f) {
  if (!f) return;
  safetensors_close(f->st);
  free(f->m);
  free(f);
}

static bool float_dtype(const struct st_tensor *t) {
  return t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16;
}

static enum status check_module(const char *path, struct lora_file *f, struct lora_module *m) {
  const char *k = m->key;
  if (!m->down || !m->up)
    return status_set(STATUS_FORMAT, "%s: LoRA module '%s' has %s but no %s matrix", path, k, m->down ? "a down" : "an up",
                      m->down ? "up" : "down");
  const struct st_tensor *d = m->down, *u = m->up;
  if (!float_dtype(d) || !float_dtype(u))
    return status_set(STATUS_FORMAT, "%s: LoRA module '%s': matrices must be F32, F16 or BF16", path, k);
  if ((d->ndim != 2 && d->ndim != 4) || (u->ndim != 2 && u->ndim != 4))
    return status_set(STATUS_FORMAT, "%s: LoRA module '%s': down and up must be 2-D or 4-D (got %d-D and %d-D)", path, k,
                      d->ndim, u->ndim);
  if (u->ndim == 4 && (u->shape[2] != 1 || u->shape[3] != 1))
    return status_set(STATUS_FORMAT, "%s: LoRA module '%s': a convolution's up matrix must be 1x1 (LoCon), got %lldx%lld", path,
                      k, (long long)u->shape[2], (long long)u->shape[3]);
  m->rank = d->shape[0];
  m->out = u->shape[0];
  if (m->rank < 1 || m->rank > LORA_MAX_RANK || u->shape[1] != m->rank || m->out < 1)
    return status_set(STATUS_FORMAT, "%s: LoRA module '%s': down has rank %lld but up is [%lld, %lld]", path, k,
                      (long long)m->rank, (long long)u->shape[0], (long long)u->shape[1]);
  m->in = d->numel / m->rank;
  if (m->in < 1 || m->in > (INT64_C(1) << 26) || m->out > (INT64_C(1) << 26))
    return status_set(STATUS_FORMAT, "%s: LoRA module '%s': a %lld x %lld difference is out of range", path, k,
                      (long long)m->out, (long long)m->in);
  m->alpha = (double)m->rank;
  if (m->alpha_t) {
    float a;
    if (m->alpha_t->numel != 1 || !float_dtype(m->alpha_t) || safetensors_read_f32(f->st, m->alpha_t, &a) || !isfinite(a))
      return status_set(STATUS_FORMAT, "%s: LoRA module '%s': alpha must be one finite number", path, k);
    if (a != 0) m->alpha = a; /* kohya: alpha 0 means rank (a scale of 1) */
  }
  return STATUS_OK;
}

enum status lora_open(const char *path, struct lora_file **out) {
  *out = NULL;
  struct lora_file *f = calloc(1, sizeof *f);
  if (!f) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = safetensors_open(path, &f->st);
  int cap = 0;
  for (int i = 0; !s && i < safetensors_count(f->st); i++) {
    const struct st_tensor *t = safetensors_at(f->st, i);
    char base[LORA_NAME], name[LORA_NAME];
    enum part part;
    if (!split_key(t->name, base, sizeof base, &part)) {
      if (!f->unsupported++) snprintf(f->first_unsupported, sizeof f->first_unsupported, "%s", t->name);
      continue;
    }
    enum lora_net net = classify(base, name, sizeof name);
    int j = f->n - 1; /* the module: its keys are usually neighbours in the sorted file */
    while (j >= 0 && (f->m[j].net != net || strcmp(f->m[j].name, name))) j--;
    if (j < 0) {
      if (f->n == cap) {
        int c = cap ? 2 * cap : 64;
        struct lora_module *m = realloc(f->m, (size_t)c * sizeof *m);
        if (!m) {
          s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
          break;
        }
        f->m = m, cap = c;
      }
      j = f->n++;
      f->m[j] = (struct lora_module){.net = net};
      snprintf(f->m[j].name, LORA_NAME, "%s", name);
      snprintf(f->m[j].key, LORA_NAME, "%s", base);
    }
    const struct st_tensor **slot = part == P_DOWN ? &f->m[j].down : part == P_UP ? &f->m[j].up : &f->m[j].alpha_t;
    if (*slot) /* the same module twice (kohya and PEFT spellings of one name) */
      s = status_set(STATUS_FORMAT, "%s: LoRA key '%s' repeats a module already given", path, t->name);
    *slot = t;
  }
  for (int j = 0; !s && j < f->n; j++) s = check_module(path, f, &f->m[j]);
  if (!s && f->n == 0)
    s = status_set(STATUS_FORMAT, "%s: no LoRA tensors (kohya .lora_down/.lora_up or PEFT .lora_A/.lora_B weights)%s%s", path,
                   f->unsupported ? "; first key: " : "", f->first_unsupported);
  if (s) {
    lora_close(f);
    return s;
  }
  *out = f;
  return STATUS_OK;
}

enum status lora_delta(const struct lora_file *f, const struct lora_module *m, double scale, float *delta) {
  size_t nu = (size_t)m->out * m->rank, nd = (size_t)m->rank * m->in;
  float *up = malloc(nu * sizeof *up), *down = malloc(nd * sizeof *down);
  enum status s = !up || !down ? status_set(STATUS_OUT_OF_MEMORY, "out of host memory") : STATUS_OK;
  if (!s) s = safetensors_read_f32(f->st, m->up, up);
  if (!s) s = safetensors_read_f32(f->st, m->down, down);
  for (size_t i = 0; !s && i < nu; i++)
    if (!isfinite(up[i])) s = status_set(STATUS_NUMERIC, "%s: LoRA tensor '%s' has a value that is not finite", safetensors_path(f->st), m->up->name);
  for (size_t i = 0; !s && i < nd; i++)
    if (!isfinite(down[i])) s = status_set(STATUS_NUMERIC, "%s: LoRA tensor '%s' has a value that is not finite", safetensors_path(f->st), m->down->name);
  if (!s) {
    float sc = (float)(scale * m->alpha / (double)m->rank);
    for (int64_t o = 0; o < m->out; o++) {
      float *row = delta + o * m->in;
      memset(row, 0, (size_t)m->in * sizeof *row);
      for (int64_t k = 0; k < m->rank; k++) {
        float a = up[o * m->rank + k];
        const float *d = down + k * m->in;
        for (int64_t i = 0; i < m->in; i++) row[i] += a * d[i];
      }
      for (int64_t i = 0; i < m->in; i++) row[i] *= sc;
    }
  }
  free(up), free(down);
  return s;
}

enum status lora_short_hash(const char *path, char out[13]) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return status_set(STATUS_IO, "%s: cannot open", path);
  unsigned char head[8];
  enum status s = STATUS_OK;
  struct sha256 h;
  sha256_init(&h);
  if (read(fd, head, 8) != 8) {
    s = status_set(STATUS_FORMAT, "%s: shorter than a safetensors header", path);
  } else {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | head[i];
    if (n > (UINT64_C(1) << 40) || lseek(fd, (off_t)(8 + n), SEEK_SET) < 0) s = status_set(STATUS_FORMAT, "%s: bad header size", path);
    unsigned char buf[1 << 14];
    ssize_t r;
    while (!s && (r = read(fd, buf, sizeof buf)) > 0) sha256_update(&h, buf, (size_t)r);
  }
  close(fd);
  char hex[65];
  sha256_hex(&h, hex);
  memcpy(out, hex, 12);
  out[12] = 0;
  return s;
}

/* --- merging into a model --- */

struct target_state {
  struct lora_target t;
  char (*alias)[LORA_MAX_ALIASES][LORA_NAME]; /* per entry */
  int *n_alias;
  uint64_t *sig; /* per entry: what is merged now (0: nothing, the checkpoint's values) */
};

struct lora_state {
  struct gpu *g;
  struct target_state *t;
  int n;
};

void lora_state_destroy(struct lora_state *s) {
  if (!s) return;
  for (int i = 0; i < s->n; i++) free(s->t[i].alias), free(s->t[i].n_alias), free(s->t[i].sig);
  free(s->t);
  free(s);
}

enum status lora_state_create(struct gpu *g, const struct lora_target *targets, int n, struct lora_state **out) {
  *out = NULL;
  struct lora_state *s = calloc(1, sizeof *s);
  if (!s || !(s->t = calloc((size_t)(n > 0 ? n : 1), sizeof *s->t))) {
    free(s);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  s->g = g;
  s->n = n;
  for (int i = 0; i < n; i++) {
    struct target_state *ts = &s->t[i];
    ts->t = targets[i];
    int ne = ts->t.reg->n > 0 ? ts->t.reg->n : 1;
    ts->alias = calloc((size_t)ne, sizeof *ts->alias);
    ts->n_alias = calloc((size_t)ne, sizeof *ts->n_alias);
    ts->sig = calloc((size_t)ne, sizeof *ts->sig);
    if (!ts->alias || !ts->n_alias || !ts->sig) {
      lora_state_destroy(s);
      return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    }
    for (int e = 0; e < ts->t.reg->n; e++)
      if (ts->t.reg->e[e].ndim >= 2) ts->n_alias[e] = ts->t.alias(&ts->t.reg->e[e], ts->alias[e], ts->t.ctx);
  }
  *out = s;
  return STATUS_OK;
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

/* a file's identity (device, inode, size, modification time) and its path's text */
static uint64_t file_id(const char *path) {
  struct stat sb;
  uint64_t h = 0x5851f42d4c957f2dull;
  for (const char *c = path; *c; c++) h = mix(h, (unsigned char)*c);
  if (stat(path, &sb) == 0)
    h = mix(mix(mix(mix(h, (uint64_t)sb.st_dev), (uint64_t)sb.st_ino), (uint64_t)sb.st_size),
            (uint64_t)sb.st_mtim.tv_sec * 1000000000ull + (uint64_t)sb.st_mtim.tv_nsec);
  return h;
}

/* one module merged into one entry */
struct contribution {
  int target, entry, file, module;
};

static int64_t entry_inner(const struct weight_entry *e) {
  int64_t inner = 1;
  for (int i = 1; i < e->ndim; i++) inner *= e->shape[i];
  return inner;
}

static enum status match_file(struct lora_state *s, const struct lora_file *f, int fi, const char *path, bool strict,
                              bool contribute, struct lora_report *rep, struct contribution **c, int *nc, int *cap) {
  int applied = 0, loaded = 0;
  rep->unsupported += f->unsupported;
  if (strict && f->unsupported)
    return status_set(STATUS_FORMAT, "%s: LoRA key '%s' is not a kind this program merges (kohya/LoCon or PEFT lora_A/lora_B)",
                      path, f->first_unsupported);
  for (int mi = 0; mi < f->n; mi++) {
    const struct lora_module *m = &f->m[mi];
    rep->modules++;
    int ti = 0;
    while (ti < s->n && s->t[ti].t.net != m->net) ti++;
    if (ti == s->n && m->net != LORA_NET_UNKNOWN) { /* a network this model has not loaded */
      rep->other++;
      continue;
    }
    loaded++;
    struct target_state *ts = ti < s->n ? &s->t[ti] : NULL;
    int found = -1;
    for (int e = 0; ts && e < ts->t.reg->n && found < 0; e++)
      for (int a = 0; a < ts->n_alias[e]; a++)
        if (!strcmp(ts->alias[e][a], m->name)) found = e;
    char why[2 * LORA_NAME];
    why[0] = 0;
    if (found < 0) {
      snprintf(why, sizeof why, "LoRA key '%s' matches no tensor of the model%s", m->key,
               m->net == LORA_NET_UNKNOWN ? " (no lora_unet_/lora_te_/unet./text_encoder. prefix)" : "");
    } else {
      const struct weight_entry *e = &ts->t.reg->e[found];
      if (m->out != e->rows || m->in != entry_inner(e))
        snprintf(why, sizeof why, "LoRA key '%s' is a %lld x %lld difference but the model's '%s' is %lld x %lld", m->key,
                 (long long)m->out, (long long)m->in, e->key, (long long)e->rows, (long long)entry_inner(e));
    }
    if (why[0]) {
      if (strict) return status_set(STATUS_FORMAT, "%s: %s (--lora-strict)", path, why);
      if (!rep->unmatched++) snprintf(rep->first_unmatched, sizeof rep->first_unmatched, "%s", why);
      continue;
    }
    applied++;
    rep->applied++;
    if (!contribute) continue;
    if (*nc == *cap) {
      int nc2 = *cap ? 2 * *cap : 256;
      struct contribution *p = realloc(*c, (size_t)nc2 * sizeof *p);
      if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      *c = p, *cap = nc2;
    }
    (*c)[(*nc)++] = (struct contribution){.target = ti, .entry = found, .file = fi, .module = mi};
  }
  if (!applied && loaded)
    return status_set(STATUS_FORMAT, "%s: none of its %d LoRA keys matches the model (first: %s)", path, loaded,
                      rep->first_unmatched[0] ? rep->first_unmatched : f->m[0].key);
  return STATUS_OK;
}

static int by_entry(const void *a, const void *b) {
  const struct contribution *x = a, *y = b;
  if (x->target != y->target) return x->target - y->target;
  if (x->entry != y->entry) return x->entry - y->entry;
  return x->file != y->file ? x->file - y->file : x->module - y->module;
}

enum status lora_state_apply(struct lora_state *s, const struct lora_spec *specs, int n, bool strict,
                             struct lora_report *rep) {
  struct lora_report local;
  if (!rep) rep = &local;
  *rep = (struct lora_report){0};
  struct lora_file **files = calloc((size_t)(n > 0 ? n : 1), sizeof *files);
  uint64_t *ids = calloc((size_t)(n > 0 ? n : 1), sizeof *ids);
  struct contribution *c = NULL;
  int nc = 0, cap = 0;
  enum status st = !files || !ids ? status_set(STATUS_OUT_OF_MEMORY, "out of host memory") : STATUS_OK;
  for (int i = 0; !st && i < n; i++) {
    if (!isfinite(specs[i].strength))
      st = status_set(STATUS_INVALID_ARGUMENT, "%s: the LoRA strength is not a finite number", specs[i].path);
    if (!st) st = lora_open(specs[i].path, &files[i]);
    if (!st) ids[i] = file_id(specs[i].path);
    if (!st) st = match_file(s, files[i], i, specs[i].path, strict, specs[i].strength != 0, rep, &c, &nc, &cap);
  }
  /* every entry's new signature; rewrite those that changed */
  if (!st && nc) qsort(c, (size_t)nc, sizeof *c, by_entry);
  float *delta = NULL, *part = NULL;
  size_t delta_cap = 0;
  int k = 0;
  for (int ti = 0; !st && ti < s->n; ti++) {
    struct target_state *ts = &s->t[ti];
    const struct weight_registry *reg = ts->t.reg;
    struct weight_loader l = {.g = s->g};
    struct safetensors *open_st = NULL;
    int open_path = -1;
    for (int e = 0; !st && e < reg->n; e++) {
      int k0 = k;
      uint64_t sig = 0;
      while (k < nc && c[k].target == ti && c[k].entry == e) {
        uint64_t strength_bits;
        double sv = specs[c[k].file].strength;
        memcpy(&strength_bits, &sv, sizeof sv);
        sig = mix(mix(mix(sig ? sig : 1, ids[c[k].file]), (uint64_t)c[k].module), strength_bits);
        k++;
      }
      if (sig == ts->sig[e]) continue;
      const struct weight_entry *we = &reg->e[e];
      size_t numel = (size_t)we->rows * (size_t)entry_inner(we);
      if (k > k0 && numel > delta_cap) {
        free(delta), free(part);
        delta = malloc(numel * sizeof *delta);
        part = malloc(numel * sizeof *part);
        delta_cap = numel;
        if (!delta || !part) {
          delta_cap = 0;
          st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
          break;
        }
      }
      for (int j = k0; !st && j < k; j++) {
        const struct lora_file *f = files[c[j].file];
        st = lora_delta(f, &f->m[c[j].module], specs[c[j].file].strength, j == k0 ? delta : part);
        if (!st && j > k0)
          for (size_t i = 0; i < numel; i++) delta[i] += part[i];
      }
      if (!st && we->path != open_path) {
        safetensors_close(open_st);
        open_st = NULL;
        open_path = -1;
        if (!(st = safetensors_open(reg->paths[we->path], &open_st))) open_path = we->path;
        l.st = open_st;
      }
      ts->sig[e] = UINT64_MAX; /* unknown until the rewrite succeeds */
      if (!st) st = weight_reload(&l, we, k > k0 ? delta : NULL);
      if (!st) {
        ts->sig[e] = sig;
        rep->rewritten++;
      }
    }
    weight_loader_free(&l);
    safetensors_close(open_st);
  }
  free(delta), free(part), free(c), free(ids);
  for (int i = 0; files && i < n; i++) lora_close(files[i]);
  free(files);
  return st;
}
