/* Activation memory of a forward pass: a stack in one arena. A first pass with `measure` set
 * records no commands and only finds the peak, so the arena is created once at its exact size;
 * temporaries of a layer are released with act_reset(act_mark()). */
#ifndef VKD_ACT_H
#define VKD_ACT_H

#include <stdbool.h>

#include "gpu.h"

struct act {
  struct gpu *g;
  struct gpu_arena *arena; /* NULL while measuring */
  bool measure;
  VkDeviceSize used, peak;
};

enum status act_alloc(struct act *a, enum dtype dt, int ndim, const int64_t *shape, struct gpu_tensor *t);
VkDeviceSize act_mark(const struct act *a);
void act_reset(struct act *a, VkDeviceSize mark);
/* Ensures *arena holds at least `bytes` (recreating it when smaller); a->arena points to it. */
enum status act_prepare(struct act *a, struct gpu_arena **arena, VkDeviceSize bytes, const char *what);

#endif
