#include "act.h"

#include <string.h>

enum status act_alloc(struct act *a, enum dtype dt, int ndim, const int64_t *shape, struct gpu_tensor *t) {
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
  return STATUS_OK;
}

VkDeviceSize act_mark(const struct act *a) { return a->used; }

void act_reset(struct act *a, VkDeviceSize mark) {
  a->used = mark;
  if (a->arena) gpu_arena_reset(a->arena, mark);
}

enum status act_prepare(struct act *a, struct gpu_arena **arena, VkDeviceSize bytes, const char *what) {
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
