#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* madvise */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "half.h"
#include "json_file.h"

#define MAX_HEADER (100ull << 20)

struct safetensors {
  char *path;
  const uint8_t *map;
  size_t map_size;
  const uint8_t *data;
  uint64_t data_size;
  struct st_tensor *tensors;
  int n;
  cJSON *metadata;
};

static const char *dtype_names[ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "I64", "I32", "U8"};
static const size_t dtype_sizes[ST_DTYPE_COUNT] = {4, 2, 2, 8, 4, 1};

const char *st_dtype_name(enum st_dtype dt) { return (unsigned)dt < ST_DTYPE_COUNT ? dtype_names[dt] : "?"; }
size_t st_dtype_size(enum st_dtype dt) { return (unsigned)dt < ST_DTYPE_COUNT ? dtype_sizes[dt] : 0; }

static int by_name(const void *a, const void *b) {
  return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int by_begin(const void *a, const void *b) {
  const struct st_tensor *x = *(const struct st_tensor *const *)a, *y = *(const struct st_tensor *const *)b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return false;
  double d = j->valuedouble;
  if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d) return false;
  *out = (uint64_t)d;
  return true;
}

static enum status parse_entry(const char *path, const cJSON *item, struct st_tensor *t, uint64_t data_size) {
  const char *name = item->string;
  if (!cJSON_IsObject(item)) return status_set(STATUS_FORMAT, "%s: tensor '%s': entry is not a JSON object", path, name);
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
  const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
  if (!cJSON_IsString(dtype)) return status_set(STATUS_FORMAT, "%s: tensor '%s': missing \"dtype\"", path, name);
  t->dtype = ST_DTYPE_COUNT;
  for (int d = 0; d < ST_DTYPE_COUNT; d++)
    if (!strcmp(dtype->valuestring, dtype_names[d])) t->dtype = (enum st_dtype)d;
  if (t->dtype == ST_DTYPE_COUNT)
    return status_set(STATUS_UNSUPPORTED, "%s: tensor '%s': unsupported dtype '%s' (supported: F32 F16 BF16 I64 I32 U8)",
                      path, name, dtype->valuestring);
  if (!cJSON_IsArray(shape)) return status_set(STATUS_FORMAT, "%s: tensor '%s': missing \"shape\" array", path, name);
  int nd = cJSON_GetArraySize(shape);
  if (nd > ST_MAX_DIMS) return status_set(STATUS_UNSUPPORTED, "%s: tensor '%s': %d dimensions (at most %d)", path, name, nd, ST_MAX_DIMS);
  t->ndim = nd;
  uint64_t numel = 1;
  for (int i = 0; i < nd; i++) {
    uint64_t d;
    if (!json_uint(cJSON_GetArrayItem(shape, i), &d) || d > (1ull << 40))
      return status_set(STATUS_FORMAT, "%s: tensor '%s': dimension %d is not a valid size", path, name, i);
    t->shape[i] = (int64_t)d;
    if (d && numel > (1ull << 50) / d)
      return status_set(STATUS_FORMAT, "%s: tensor '%s': element count overflows", path, name);
    numel *= d;
  }
  t->numel = (int64_t)numel;
  uint64_t b, e;
  if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(cJSON_GetArrayItem(offs, 0), &b) ||
      !json_uint(cJSON_GetArrayItem(offs, 1), &e))
    return status_set(STATUS_FORMAT, "%s: tensor '%s': \"data_offsets\" must be two non-negative integers", path, name);
  if (b > e || e > data_size)
    return status_set(STATUS_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] out of range (data section is %llu bytes)",
                      path, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_size);
  if (e - b != numel * dtype_sizes[t->dtype])
    return status_set(STATUS_FORMAT, "%s: tensor '%s': %llu bytes for %llu elements of %s (expected %llu)", path, name,
                      (unsigned long long)(e - b), (unsigned long long)numel, dtype_names[t->dtype],
                      (unsigned long long)(numel * dtype_sizes[t->dtype]));
  t->begin = b;
  t->end = e;
  t->name = strdup(name);
  if (!t->name) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  return STATUS_OK;
}

static enum status parse_header(struct safetensors *st, const char *json, size_t len) {
  const char *path = st->path;
  char what[FILE_PATH_MAX + 16];
  snprintf(what, sizeof what, "%s: header", path);
  cJSON *root = NULL;
  enum status s = json_parse(json, len, what, &root);
  if (s) return s;
  if (!cJSON_IsObject(root)) {
    s = status_set(STATUS_FORMAT, "%s: header is not a JSON object", path);
    goto done;
  }
  int count = cJSON_GetArraySize(root);
  st->tensors = calloc(count ? count : 1, sizeof *st->tensors);
  if (!st->tensors) {
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  for (cJSON *item = root->child; item; item = item->next) {
    if (!item->string) {
      s = status_set(STATUS_FORMAT, "%s: header entry without a name", path);
      goto done;
    }
    if (!strcmp(item->string, "__metadata__")) {
      if (!cJSON_IsObject(item)) {
        s = status_set(STATUS_FORMAT, "%s: __metadata__ is not an object", path);
        goto done;
      }
      if (st->metadata) {
        s = status_set(STATUS_FORMAT, "%s: duplicate key '__metadata__'", path);
        goto done;
      }
      st->metadata = cJSON_Duplicate(item, 1);
      continue;
    }
    if ((s = parse_entry(path, item, &st->tensors[st->n], st->data_size))) goto done;
    st->n++;
  }
  qsort(st->tensors, st->n, sizeof *st->tensors, by_name);
  for (int i = 1; i < st->n; i++)
    if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name)) {
      s = status_set(STATUS_FORMAT, "%s: duplicate tensor name '%s'", path, st->tensors[i].name);
      goto done;
    }
  /* overlapping data ranges (empty tensors take no bytes) */
  const struct st_tensor **order = malloc((st->n ? st->n : 1) * sizeof *order);
  if (!order) {
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  for (int i = 0; i < st->n; i++) order[i] = &st->tensors[i];
  qsort(order, st->n, sizeof *order, by_begin);
  const struct st_tensor *prev = NULL;
  for (int i = 0; i < st->n && !s; i++) {
    if (order[i]->begin == order[i]->end) continue;
    if (prev && order[i]->begin < prev->end)
      s = status_set(STATUS_FORMAT, "%s: tensors '%s' and '%s' overlap", path, prev->name, order[i]->name);
    prev = order[i];
  }
  free(order);
done:
  cJSON_Delete(root);
  return s;
}

enum status safetensors_open(const char *path, struct safetensors **out) {
  *out = NULL;
  struct safetensors *st = calloc(1, sizeof *st);
  if (!st || !(st->path = strdup(path))) {
    free(st);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  enum status s = STATUS_OK;
  int fd;
  uint64_t size;
  if ((s = file_open_regular(path, &fd, &size))) goto fail;
  struct stat sb = {.st_size = (off_t)size};
  if (sb.st_size < 8) {
    close(fd);
    s = status_set(STATUS_FORMAT, "%s: too short for a safetensors file (%lld bytes)", path, (long long)sb.st_size);
    goto fail;
  }
  st->map_size = (size_t)sb.st_size;
  void *m = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) {
    s = status_set(STATUS_IO, "%s: mmap failed: %s", path, strerror(errno));
    goto fail;
  }
  st->map = m;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = hlen << 8 | st->map[i];
  if (hlen > MAX_HEADER) {
    s = status_set(STATUS_FORMAT, "%s: header length %llu exceeds the 100 MB limit", path, (unsigned long long)hlen);
    goto fail;
  }
  if (hlen > st->map_size - 8) {
    s = status_set(STATUS_FORMAT, "%s: header length %llu goes beyond the end of the file (%zu bytes)", path,
                   (unsigned long long)hlen, st->map_size);
    goto fail;
  }
  st->data = st->map + 8 + hlen;
  st->data_size = st->map_size - 8 - hlen;
  if ((s = parse_header(st, (const char *)st->map + 8, (size_t)hlen))) goto fail;
  *out = st;
  return STATUS_OK;
fail:
  safetensors_close(st);
  return s;
}

void safetensors_release(const struct safetensors *st, const struct st_tensor *t) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo, hi;
  if (t) lo = (uintptr_t)(st->data + t->begin), hi = (uintptr_t)(st->data + t->end);
  else lo = (uintptr_t)st->map, hi = (uintptr_t)(st->map + st->map_size);
  lo = (lo + page - 1) / page * page; /* whole pages inside the range: a neighbour's bytes stay */
  hi = hi / page * page;
  if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED); /* advice: a failure changes nothing */
}

void safetensors_close(struct safetensors *st) {
  if (!st) return;
  if (st->map) munmap((void *)st->map, st->map_size);
  for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
  free(st->tensors);
  cJSON_Delete(st->metadata);
  free(st->path);
  free(st);
}

const char *safetensors_path(const struct safetensors *st) { return st->path; }
int safetensors_count(const struct safetensors *st) { return st->n; }
const struct st_tensor *safetensors_at(const struct safetensors *st, int i) {
  return i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name) {
  struct st_tensor key = {.name = (char *)name};
  return bsearch(&key, st->tensors, st->n, sizeof key, by_name);
}

const char *safetensors_metadata(const struct safetensors *st, const char *key) {
  const cJSON *v = st->metadata ? cJSON_GetObjectItemCaseSensitive(st->metadata, key) : NULL;
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

const void *safetensors_data(const struct safetensors *st, const struct st_tensor *t) { return st->data + t->begin; }

/* Element i as double, read through memcpy (the data may be unaligned). */
static double element(const uint8_t *p, enum st_dtype dt, int64_t i) {
  switch (dt) {
  case ST_F32: { float v; memcpy(&v, p + 4 * i, 4); return v; }
  case ST_F16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return half_to_float(v); }
  case ST_BF16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return bf16_to_float(v); }
  case ST_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return (double)v; }
  case ST_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
  case ST_U8: return p[i];
  default: return 0;
  }
}

enum status safetensors_read_f32(const struct safetensors *st, const struct st_tensor *t, float *dst) {
  const uint8_t *p = st->data + t->begin;
  if (t->dtype == ST_F32) {
    memcpy(dst, p, (size_t)t->numel * 4);
    return STATUS_OK;
  }
  for (int64_t i = 0; i < t->numel; i++) dst[i] = (float)element(p, t->dtype, i);
  return STATUS_OK;
}

enum status safetensors_read_input(const struct safetensors *st, const char *name, int ndim, const int64_t *want,
                                   const char *expected, int64_t *got, float **out) {
  *out = NULL;
  const struct st_tensor *t = safetensors_find(st, name);
  if (!t) return status_set(STATUS_FORMAT, "%s: no tensor '%s' (expected %s)", st->path, name, expected);
  char shape[160];
  size_t o = 0;
  for (int d = 0; d < t->ndim && o < sizeof shape; d++)
    o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
    return status_set(STATUS_FORMAT, "%s: tensor '%s' is %s; expected a float tensor (F32, F16 or BF16) %s", st->path,
                      name, dtype_names[t->dtype], expected);
  bool ok = t->ndim == ndim && t->numel > 0;
  for (int d = 0; ok && d < ndim; d++) ok = want[d] < 0 ? t->shape[d] >= 1 : t->shape[d] == want[d];
  if (!ok) return status_set(STATUS_FORMAT, "%s: tensor '%s' is [%s]; expected %s", st->path, name, shape, expected);
  float *v = malloc((size_t)t->numel * sizeof *v);
  if (!v) return status_set(STATUS_OUT_OF_MEMORY, "%s: out of host memory for tensor '%s' [%s]", st->path, name, shape);
  safetensors_read_f32(st, t, v);
  for (int64_t i = 0; i < t->numel; i++)
    if (!isfinite(v[i])) {
      free(v);
      return status_set(STATUS_FORMAT, "%s: tensor '%s' holds a NaN or infinity (element %lld)", st->path, name,
                        (long long)i);
    }
  for (int d = 0; got && d < ndim; d++) got[d] = t->shape[d];
  *out = v;
  return STATUS_OK;
}

enum status safetensors_read_f16(const struct safetensors *st, const struct st_tensor *t, uint16_t *dst) {
  const uint8_t *p = st->data + t->begin;
  if (t->dtype == ST_F16) {
    memcpy(dst, p, (size_t)t->numel * 2);
    return STATUS_OK;
  }
  for (int64_t i = 0; i < t->numel; i++) dst[i] = half_from_float((float)element(p, t->dtype, i));
  return STATUS_OK;
}

enum status safetensors_read_i32(const struct safetensors *st, const struct st_tensor *t, int32_t *dst) {
  const uint8_t *p = st->data + t->begin;
  if (t->dtype != ST_I64 && t->dtype != ST_I32 && t->dtype != ST_U8)
    return status_set(STATUS_FORMAT, "%s: tensor '%s' is %s, expected an integer type", st->path, t->name,
                      dtype_names[t->dtype]);
  for (int64_t i = 0; i < t->numel; i++) {
    double v = element(p, t->dtype, i);
    if (v < INT32_MIN || v > INT32_MAX)
      return status_set(STATUS_FORMAT, "%s: tensor '%s': value %.0f out of the int32 range", st->path, t->name, v);
    dst[i] = (int32_t)v;
  }
  return STATUS_OK;
}

/* --- writer --- */

struct st_entry {
  char *name;
  enum st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const void *data;
  uint64_t bytes;
};

struct st_writer {
  struct st_entry *e;
  int n, cap;
  cJSON *metadata;
};

enum status st_writer_create(struct st_writer **out) {
  *out = calloc(1, sizeof **out);
  return *out ? STATUS_OK : status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
}

void st_writer_destroy(struct st_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n; i++) free(w->e[i].name);
  free(w->e);
  cJSON_Delete(w->metadata);
  free(w);
}

enum status st_writer_add(struct st_writer *w, const char *name, enum st_dtype dt, int ndim, const int64_t *shape,
                          const void *data) {
  VKD_ASSERT(ndim >= 0 && ndim <= ST_MAX_DIMS && (unsigned)dt < ST_DTYPE_COUNT);
  if (w->n == w->cap) {
    int cap = w->cap ? 2 * w->cap : 16;
    struct st_entry *e = realloc(w->e, cap * sizeof *e);
    if (!e) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    w->e = e;
    w->cap = cap;
  }
  struct st_entry *e = &w->e[w->n];
  memset(e, 0, sizeof *e);
  uint64_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= (uint64_t)(e->shape[i] = shape[i]);
  e->name = strdup(name);
  if (!e->name) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  e->dtype = dt;
  e->ndim = ndim;
  e->data = data;
  e->bytes = numel * dtype_sizes[dt];
  w->n++;
  return STATUS_OK;
}

enum status st_writer_metadata(struct st_writer *w, const char *key, const char *value) {
  if (!w->metadata && !(w->metadata = cJSON_CreateObject())) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  cJSON_DeleteItemFromObjectCaseSensitive(w->metadata, key);
  if (!cJSON_AddStringToObject(w->metadata, key, value)) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  return STATUS_OK;
}

enum status st_writer_finish(struct st_writer *w, const char *path) {
  cJSON *root = cJSON_CreateObject();
  if (!root) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status s = STATUS_OK;
  char *json = NULL;
  if (w->metadata) cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->metadata, 1));
  uint64_t off = 0;
  for (int i = 0; i < w->n; i++) {
    cJSON *t = cJSON_AddObjectToObject(root, w->e[i].name);
    cJSON *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
    if (!t || !shape || !offs) {
      cJSON_Delete(shape);
      cJSON_Delete(offs);
      s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
      goto done;
    }
    cJSON_AddStringToObject(t, "dtype", dtype_names[w->e[i].dtype]);
    for (int d = 0; d < w->e[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)w->e[i].shape[d]));
    cJSON_AddItemToObject(t, "shape", shape);
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + w->e[i].bytes)));
    cJSON_AddItemToObject(t, "data_offsets", offs);
    off += w->e[i].bytes;
  }
  json = cJSON_PrintUnformatted(root);
  if (!json) {
    s = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    goto done;
  }
  size_t len = strlen(json), padded = (len + 7) / 8 * 8;
  struct file_out o;
  if ((s = file_out_begin(&o, path))) goto done;
  uint8_t hdr[8];
  for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  s = file_out_write(&o, hdr, 8);
  if (!s) s = file_out_write(&o, json, len);
  if (!s && padded > len) s = file_out_write(&o, "        ", padded - len);
  for (int i = 0; !s && i < w->n; i++) s = file_out_write(&o, w->e[i].data, w->e[i].bytes);
  if (s) file_out_abort(&o);
  else s = file_out_commit(&o, true); /* the file the caller named: replaced as a whole, never half-written */
done:
  free(json);
  cJSON_Delete(root);
  return s;
}
