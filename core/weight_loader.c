#define _POSIX_C_SOURCE 200809L
#include "weight_loader.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"
#include "ops.h"

static bool measuring(const struct weight_loader *l) { return !l->arena && !l->target; }
static enum status weight_load_layout(struct weight_loader *l, const float *src, int ndim, const int64_t *shape, int64_t rows,
                                      int64_t inner, enum weight_layout layout, enum dtype dt, struct gpu_tensor *out);

/* loads on this thread record what they upload here (weight_registry_capture) */
static _Thread_local struct weight_registry *capture;

void weight_registry_capture(struct weight_registry *r) { capture = r; }

void weight_registry_free(struct weight_registry *r) {
  if (!r) return;
  for (int i = 0; i < r->n_paths; i++) free(r->paths[i]);
  free(r->e), free(r->paths);
  *r = (struct weight_registry){0};
}

static enum status record(const struct weight_loader *l, const char *name, const char *key, int ndim, const int64_t *shape, int64_t row0,
                          int64_t rows, enum weight_layout layout, enum dtype dt, const struct gpu_tensor *t) {
  struct weight_registry *r = capture;
  const char *path = safetensors_path(l->st);
  int pi = 0;
  while (pi < r->n_paths && strcmp(r->paths[pi], path)) pi++;
  if (pi == r->n_paths) {
    char **p = realloc(r->paths, (size_t)(r->n_paths + 1) * sizeof *p);
    if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    r->paths = p;
    if (!(p[r->n_paths] = strdup(path))) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    r->n_paths++;
  }
  if (r->n == r->cap) {
    int c = r->cap ? 2 * r->cap : 256;
    struct weight_entry *e = realloc(r->e, (size_t)c * sizeof *e);
    if (!e) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    r->e = e;
    r->cap = c;
  }
  struct weight_entry *e = &r->e[r->n++];
  *e = (struct weight_entry){.t = *t, .layout = layout, .dt = dt, .ndim = ndim, .row0 = row0, .rows = rows, .path = pi};
  snprintf(e->key, sizeof e->key, "%s", key);
  snprintf(e->name, sizeof e->name, "%s", name);
  memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
  return STATUS_OK;
}

/* the checkpoint key of a model name: renamed, then prefixed */
static void key_of(const struct weight_loader *l, const char *name, char *key, size_t n) {
  char mapped[512];
  if (l->rename && l->rename(name, mapped, sizeof mapped, l->rename_ctx)) name = mapped;
  else if (l->rename) name = "(no counterpart)";
  snprintf(key, n, "%s%s", l->prefix ? l->prefix : "", name);
}

static const struct st_tensor *find(const struct weight_loader *l, const char *name) {
  char key[512];
  key_of(l, name, key, sizeof key);
  return safetensors_find(l->st, key);
}

bool weight_exists(const struct weight_loader *l, const char *name) { return find(l, name) != NULL; }

bool weight_shape(const struct weight_loader *l, const char *name, int *ndim, int64_t shape[8]) {
  const struct st_tensor *t = find(l, name);
  *ndim = t ? t->ndim : 0;
  for (int i = 0; t && i < t->ndim; i++) shape[i] = t->shape[i];
  return t != NULL;
}

void weight_loader_free(struct weight_loader *l) {
  free(l->raw);
  l->raw = NULL;
  l->cap16 = 0;
  free(l->host);
  free(l->host2);
  free(l->half);
  l->host = l->host2 = NULL;
  l->half = NULL;
  l->cap = l->cap2 = 0;
}

static void shape_text(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t o = 0;
  buf[0] = 0;
  for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
}

/* An F16 tensor bound for F16 device memory without a difference to add is uploaded as its bits
 * are: converting to f32 and back is exact for every finite half, so only the time differs. The
 * caller sets l->want16 to say the device tensor is F16. */
static bool raw16(const struct weight_loader *l, const struct st_tensor *t, int ndim) {
  return l->want16 && !l->delta && t->dtype == ST_F16 && ndim >= 1;
}

/* The index of the first value in p[0, n) that is NaN or infinite (exponent bits all set), or -1.
 * Blocks are scanned without a branch inside (the compiler vectorises it), then the block that has
 * one, value by value. */
static int64_t first_nonfinite32(const float *p, int64_t n) {
  for (int64_t b = 0; b < n; b += 4096) {
    int64_t e = n - b < 4096 ? n : b + 4096;
    uint32_t any = 0;
    for (int64_t i = b; i < e; i++) {
      uint32_t u;
      memcpy(&u, p + i, 4);
      any |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    if (any)
      for (int64_t i = b; i < e; i++)
        if (!isfinite(p[i])) return i;
  }
  return -1;
}

/* the same for halves */
static int64_t first_nonfinite16(const uint16_t *p, int64_t n) {
  for (int64_t b = 0; b < n; b += 4096) {
    int64_t e = n - b < 4096 ? n : b + 4096;
    uint16_t any = 0;
    for (int64_t i = b; i < e; i++) any |= (uint16_t)((p[i] & 0x7c00) == 0x7c00);
    if (any)
      for (int64_t i = b; i < e; i++)
        if ((p[i] & 0x7c00) == 0x7c00) return i;
  }
  return -1;
}

/* Reads and checks prefix+name into l->host (all of it, as f32), or leaves it for load_raw16. */
static enum status read_checked(struct weight_loader *l, const char *name, int ndim, const int64_t *shape,
                                const struct st_tensor **out) {
  const struct st_tensor *t = find(l, name);
  const char *path = safetensors_path(l->st), *pre = "";
  char want[128], got[128], key[512];
  key_of(l, name, key, sizeof key);
  name = key; /* messages name the checkpoint's key */
  shape_text(want, sizeof want, ndim, shape);
  if (!t) return status_set(STATUS_FORMAT, "%s: tensor '%s%s' [%s] is missing", path, pre, name, want);
  bool same = t->ndim == ndim;
  for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
  if (!same) {
    shape_text(got, sizeof got, t->ndim, t->shape);
    return status_set(STATUS_FORMAT, "%s: tensor '%s%s': expected [%s], got [%s]", path, pre, name, want, got);
  }
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
    return status_set(STATUS_FORMAT, "%s: tensor '%s%s' is %s, expected F32, F16 or BF16", path, pre, name,
                      st_dtype_name(t->dtype));
  *out = t;
  if (measuring(l) || raw16(l, t, ndim)) return STATUS_OK; /* nothing to read yet, or read as it is stored */
  size_t need = (size_t)t->numel + 4;
  if (need > l->cap) {
    free(l->host);
    l->cap = need;
    if (!(l->host = malloc(need * sizeof *l->host))) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  safetensors_read_f32(l->st, t, l->host);
  safetensors_release(l->st, t); /* the file's pages go back once converted (read again if needed) */
  int64_t bad = first_nonfinite32(l->host, t->numel);
  if (bad >= 0)
    return status_set(STATUS_NUMERIC, "%s: tensor '%s%s' holds a NaN or infinite value (element %lld): the "
                      "checkpoint is damaged", path, pre, name, (long long)bad);
  return STATUS_OK;
}

/* host2 (the converted copy) and half (the fp16 copy) hold at least n values */
static enum status reserve(struct weight_loader *l, int64_t n) {
  if (measuring(l) || (size_t)n + 4 <= l->cap2) return STATUS_OK;
  free(l->host2);
  free(l->half);
  l->cap2 = (size_t)n + 4;
  l->host2 = malloc(l->cap2 * sizeof *l->host2);
  l->half = malloc(l->cap2 * sizeof *l->half);
  return l->host2 && l->half ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
}

/* the device tensor of a load: a new one in the arena, or (a reload) the one the first load made */
static enum status device_tensor(struct weight_loader *l, enum dtype dt, int ndim, const int64_t *shape,
                                 struct gpu_tensor *out, struct gpu_tensor **dst) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  if (l->target) {
    if (l->target->dtype != dt || gpu_tensor_numel(l->target) != n)
      return status_set(STATUS_INVALID_ARGUMENT, "weight reload: the device tensor changed shape");
    *dst = l->target;
    return STATUS_OK;
  }
  *dst = out;
  return gpu_arena_alloc(l->arena, dt, ndim, shape, out);
}

static enum status upload(struct weight_loader *l, const float *v, int ndim, const int64_t *shape, enum dtype dt,
                          struct gpu_tensor *out) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  enum status s = reserve(l, n);
  if (s) return s;
  if (measuring(l)) {
    l->bytes += gpu_aligned_size(l->g, (VkDeviceSize)n * dtype_size(dt));
    return STATUS_OK;
  }
  if ((s = device_tensor(l, dt, ndim, shape, out, &out))) return s;
  if (dt == DT_F16) {
    uint16_t *h = gpu_tensor_host(l->g, out); /* converted in place, or in l->half and uploaded */
    for (int64_t i = 0; i < n; i++) (h ? h : l->half)[i] = half_from_float(v[i]);
    return h ? STATUS_OK : gpu_upload(l->g, out, l->half, (size_t)n * 2);
  }
  return gpu_upload(l->g, out, v, (size_t)n * 4);
}

/* F16 in the file, F16 on the device: rows [row0, row0 + rows) checked finite on their bits and put
 * in the device layout as 16-bit values (no conversion), straight from the file's mapping (when it is
 * 2-byte aligned) into the device memory (when the host can map it: gpu_tensor_host), else through
 * host copies and gpu_upload. */
static enum status load_raw16(struct weight_loader *l, const struct st_tensor *t, const char *name, const int64_t *shape,
                              int64_t row0, int64_t rows, int64_t inner, enum weight_layout layout, struct gpu_tensor *out) {
  int64_t kp = layout == WL_CONV ? (inner + 3) / 4 * 4 : inner, n = rows * kp;
  const uint16_t *file = safetensors_data(l->st, t);
  if ((uintptr_t)file % 2) { /* an odd header length: copy to read it as halves */
    size_t need = (size_t)t->numel + 4;
    if (need > l->cap16) {
      free(l->raw);
      l->cap16 = need;
      if (!(l->raw = malloc(need * sizeof *l->raw))) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    }
    safetensors_read_f16(l->st, t, l->raw);
    file = l->raw;
  }
  const uint16_t *src = file + row0 * inner;
  int64_t bad = first_nonfinite16(src, rows * inner);
  if (bad >= 0) {
    char key[512];
    key_of(l, name, key, sizeof key);
    return status_set(STATUS_NUMERIC, "%s: tensor '%s' holds a NaN or infinite value (element %lld): the checkpoint is "
                      "damaged", safetensors_path(l->st), key, (long long)(row0 * inner + bad));
  }
  int64_t dshape[2] = {rows, kp}, plain[8];
  for (int i = 0; i < t->ndim; i++) plain[i] = shape[i];
  plain[0] = rows;
  if (layout == WL_TRANSPOSE) dshape[0] = shape[1], dshape[1] = shape[0];
  struct gpu_tensor *dst = NULL;
  enum status s = layout == WL_PLAIN ? device_tensor(l, DT_F16, t->ndim, plain, out, &dst)
                                     : device_tensor(l, DT_F16, 2, dshape, out, &dst);
  if (s) return s;
  uint16_t *direct = gpu_tensor_host(l->g, dst); /* NULL: laid out in l->half and uploaded */
  const uint16_t *v = src;                       /* the values in the device layout */
  if (kp != inner || layout == WL_TRANSPOSE) {
    if (!direct && (s = reserve(l, n))) return s;
    uint16_t *lay = direct ? direct : l->half;
    if (layout == WL_CONV) { /* [Co, C, k, k] -> [Co, Kp], zero padded */
      for (int64_t r = 0; r < rows; r++) {
        memcpy(lay + r * kp, src + r * inner, (size_t)inner * sizeof *src);
        memset(lay + r * kp + inner, 0, (size_t)(kp - inner) * sizeof *src);
      }
    } else {
      for (int64_t r = 0; r < shape[0]; r++)
        for (int64_t c = 0; c < shape[1]; c++) lay[c * shape[0] + r] = src[r * shape[1] + c];
    }
    v = lay;
  }
  if (v != direct) s = gpu_upload(l->g, dst, v, (size_t)n * 2); /* a memcpy when mapped */
  safetensors_release(l->st, t); /* the file's pages go back once uploaded (read again if needed) */
  return s;
}

enum status weight_load(struct weight_loader *l, const char *name, int ndim, const int64_t *shape, int64_t row0,
                        int64_t rows, enum weight_layout layout, enum dtype dt, struct gpu_tensor *out) {
  const struct st_tensor *t;
  l->want16 = dt == DT_F16;
  enum status s = read_checked(l, name, ndim, shape, &t);
  bool fast = !s && !measuring(l) && raw16(l, t, ndim); /* read_checked left it for load_raw16 */
  l->want16 = false;
  if (s) return s;
  int64_t inner = 1;
  for (int i = 1; i < ndim; i++) inner *= shape[i];
  if (rows <= 0) row0 = 0, rows = ndim ? shape[0] : 1;
  if (fast) {
    if ((s = load_raw16(l, t, name, shape, row0, rows, inner, layout, out))) return s;
    if (l->arena && capture && !l->target) {
      char key[512];
      key_of(l, name, key, sizeof key);
      return record(l, name, key, ndim, shape, row0, rows, layout, dt, out);
    }
    return STATUS_OK;
  }
  const float *src = l->host ? l->host + row0 * inner : NULL;
  if (l->delta && !measuring(l)) /* a reload with a merged difference (LoRA), checked like the file's values */
    for (int64_t i = 0; i < rows * inner; i++)
      if (!isfinite(l->host[row0 * inner + i] += l->delta[i]))
        return status_set(STATUS_NUMERIC, "%s: tensor '%s' is not finite after adding a LoRA difference",
                          safetensors_path(l->st), name);
  if (l->arena && capture && !l->target) { /* record where it went */
    if ((s = weight_load_layout(l, src, ndim, shape, rows, inner, layout, dt, out))) return s;
    char key[512];
    key_of(l, name, key, sizeof key);
    return record(l, name, key, ndim, shape, row0, rows, layout, dt, out);
  }
  return weight_load_layout(l, src, ndim, shape, rows, inner, layout, dt, out);
}

enum status weight_reload(struct weight_loader *l, const struct weight_entry *e, const float *delta) {
  struct gpu_tensor t = e->t;
  l->target = &t;
  l->delta = delta;
  l->arena = NULL, l->prefix = NULL, l->rename = NULL;
  enum status s = weight_load(l, e->key, e->ndim, e->shape, e->row0, e->rows, e->layout, e->dt, &t);
  l->target = NULL;
  l->delta = NULL;
  return s;
}

static enum status weight_load_layout(struct weight_loader *l, const float *src, int ndim, const int64_t *shape, int64_t rows,
                                      int64_t inner, enum weight_layout layout, enum dtype dt, struct gpu_tensor *out) {
  enum status s;
  if (layout == WL_CONV) { /* [Co, C, k, k] -> [Co, Kp], zero padded */
    int64_t kp = (inner + 3) / 4 * 4;
    if ((s = reserve(l, rows * kp))) return s;
    if (!measuring(l)) {
      for (int64_t r = 0; r < rows; r++) {
        memcpy(l->host2 + r * kp, src + r * inner, (size_t)inner * sizeof *src);
        memset(l->host2 + r * kp + inner, 0, (size_t)(kp - inner) * sizeof *src);
      }
    }
    return upload(l, l->host2, 2, (int64_t[]){rows, kp}, dt, out);
  }
  if (layout == WL_TRANSPOSE) {
    VKD_ASSERT(ndim == 2);
    if ((s = reserve(l, shape[0] * shape[1]))) return s;
    if (!measuring(l))
      for (int64_t r = 0; r < shape[0]; r++)
        for (int64_t c = 0; c < shape[1]; c++) l->host2[c * shape[0] + r] = src[r * shape[1] + c];
    return upload(l, l->host2, 2, (int64_t[]){shape[1], shape[0]}, dt, out);
  }
  int64_t out_shape[8];
  for (int i = 0; i < ndim; i++) out_shape[i] = shape[i];
  if (ndim) out_shape[0] = rows;
  return upload(l, src, ndim ? ndim : 1, ndim ? out_shape : (int64_t[]){1}, dt, out);
}

enum status weight_load_sum(struct weight_loader *l, const char *a, const char *b, int64_t n, struct gpu_tensor *out) {
  const struct st_tensor *t;
  enum status s = read_checked(l, a, 1, (int64_t[]){n}, &t);
  if (!s) s = reserve(l, n);
  if (s) return s;
  if (l->arena) memcpy(l->host2, l->host, (size_t)n * sizeof *l->host);
  if ((s = read_checked(l, b, 1, (int64_t[]){n}, &t))) return s;
  if (l->arena)
    for (int64_t i = 0; i < n; i++) l->host2[i] += l->host[i];
  return upload(l, l->host2, 1, (int64_t[]){n}, DT_F32, out);
}

/* --- the layers every model has, by their checkpoint leaf names --- */

enum status weight_dims(const struct weight_loader *l, const char *name, int ndim, int64_t shape[8]) {
  int nd;
  if (!weight_shape(l, name, &nd, shape) || nd != ndim) {
    char key[512];
    key_of(l, name, key, sizeof key);
    return status_set(STATUS_FORMAT, "%s: tensor '%s' is missing or not %d-D", safetensors_path(l->st), key, ndim);
  }
  return STATUS_OK;
}

enum status weight_load_vector(struct weight_loader *l, const char *base, const char *leaf, int64_t n,
                               struct gpu_tensor *out) {
  char name[512];
  snprintf(name, sizeof name, "%s.%s", base, leaf);
  return weight_load(l, name, 1, (int64_t[]){n}, 0, 0, WL_PLAIN, DT_F32, out);
}

enum status weight_load_norm(struct weight_loader *l, const char *base, int64_t channels, struct gpu_tensor *w,
                             struct gpu_tensor *b) {
  enum status s = weight_load_vector(l, base, "weight", channels, w);
  return s ? s : weight_load_vector(l, base, "bias", channels, b);
}

enum status weight_load_conv(struct weight_loader *l, const char *base, int64_t cin, int64_t cout, int kernel,
                             enum dtype dt, struct gpu_tensor *w, struct gpu_tensor *b) {
  char name[512];
  snprintf(name, sizeof name, "%s.weight", base);
  enum status s = weight_load(l, name, 4, (int64_t[]){cout, cin, kernel, kernel}, 0, 0, WL_CONV, dt, w);
  return s || !b ? s : weight_load_vector(l, base, "bias", cout, b);
}

enum status weight_load_linear(struct weight_loader *l, const char *base, int64_t in, int64_t out, enum dtype dt,
                               struct gpu_tensor *w, struct gpu_tensor *b) {
  char name[512];
  snprintf(name, sizeof name, "%s.weight", base);
  enum status s = weight_load(l, name, 2, (int64_t[]){out, in}, 0, 0, WL_PLAIN, dt, w);
  return s || !b ? s : weight_load_vector(l, base, "bias", out, b);
}

enum status weight_load_model(struct gpu *g, const struct safetensors *st, const char *prefix, const char *what,
                              weight_load_fn load, void (*reset)(void *model), void *model, struct gpu_arena **arena) {
  return weight_load_model_renamed(g, st, prefix, NULL, NULL, what, load, reset, model, arena);
}

enum status weight_load_model_renamed(struct gpu *g, const struct safetensors *st, const char *prefix,
                                      weight_rename_fn rename, const void *rename_ctx, const char *what,
                                      weight_load_fn load, void (*reset)(void *model), void *model,
                                      struct gpu_arena **arena) {
  struct weight_loader l = {.g = g, .st = st, .prefix = prefix, .rename = rename, .rename_ctx = rename_ctx};
  enum status s = load(&l, model); /* measuring: l.arena is NULL, only l.bytes grows */
  if (!s && reset) reset(model);
  if (!s) s = gpu_arena_create(g, l.bytes, what, arena);
  if (!s) {
    l.arena = *arena;
    s = load(&l, model);
  }
  weight_loader_free(&l);
  return s;
}
