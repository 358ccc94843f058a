#include "workspace.h"

#include <string.h>

enum status workspace_alloc(struct workspace *a, enum dtype dt, int ndim, const int64_t *shape, struct gpu_tensor *t) {
  if (a->measure) {
    int64_t n = 1;
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) n *= t->shape[i] = shape[i];
    t->bytes = (VkDeviceSize)n * dtype_size(dt);
    a->used += gpu_aligned_size(a->g, t->bytes ? t->bytes : 4);
  } else {
    enum status s = gpu_arena_alloc(a->arena, dt, ndim, shape, t);
    if (s) return s;
    a->used = gpu_arena_used(a->arena);
  }
  if (a->used > a->peak) a->peak = a->used;
  if (t->bytes > a->largest) a->largest = t->bytes;
  return STATUS_OK;
}

VkDeviceSize workspace_mark(const struct workspace *a) { return a->used; }

void workspace_reset(struct workspace *a, VkDeviceSize mark) {
  a->used = mark;
  if (a->arena) gpu_arena_reset(a->arena, mark);
}

enum status workspace_prepare(struct workspace *a, struct gpu_arena **arena, VkDeviceSize bytes, const char *what) {
  if (*arena && gpu_arena_capacity(*arena) >= bytes) {
    gpu_arena_reset(*arena, 0);
  } else {
    gpu_arena_destroy(*arena);
    *arena = NULL;
    enum status s = gpu_arena_create(a->g, bytes, what, arena);
    if (s) return s;
  }
  a->arena = *arena;
  a->measure = false;
  a->used = a->peak = 0;
  return STATUS_OK;
}

enum status workspace_trace_copy(struct workspace *ws, const struct gpu_tensor *src, float *dst,
                                 struct workspace_trace *list, int *n) {
  if (!dst) return STATUS_OK;
  enum status s = workspace_alloc(ws, DT_F32, src->ndim, src->shape, &list[*n].t);
  if (s) return s;
  list[*n].dst = dst;
  if (!ws->measure && (s = gpu_copy(ws->g, src, &list[*n].t))) return s;
  (*n)++;
  return STATUS_OK;
}

enum status workspace_trace_download(struct gpu *g, const struct workspace_trace *list, int n) {
  enum status s = STATUS_OK;
  for (int i = 0; i < n && !s; i++) s = gpu_download(g, &list[i].t, list[i].dst, list[i].t.bytes);
  return s;
}
