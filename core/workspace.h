/* Activation memory of a forward pass: a stack in one arena. A first pass with `measure` set
 * records no commands and only finds the peak, so the arena is created once at its exact size;
 * temporaries of a layer are released with workspace_reset(workspace_mark()). */
#ifndef VKD_WORKSPACE_H
#define VKD_WORKSPACE_H

#include <stdbool.h>

#include "gpu.h"

struct workspace {
  struct gpu *g;
  struct gpu_arena *arena; /* NULL while measuring */
  bool measure;
  VkDeviceSize used, peak;
  VkDeviceSize largest; /* the largest single allocation, bytes */
};

enum status workspace_alloc(struct workspace *a, enum dtype dt, int ndim, const int64_t *shape, struct gpu_tensor *t);
VkDeviceSize workspace_mark(const struct workspace *a);
void workspace_reset(struct workspace *a, VkDeviceSize mark);
/* Ensures *arena holds at least `bytes` (recreating it when smaller); a->arena points to it. */
enum status workspace_prepare(struct workspace *a, struct gpu_arena **arena, VkDeviceSize bytes, const char *what);


/* Records an op unless the workspace is measuring; returns its status from the enclosing function
 * (which declares `enum status s`). */
#define WORKSPACE_RECORD(ws, call)                   \
  do {                                               \
    if (!(ws)->measure && (s = (call))) return s;    \
  } while (0)

/* Block outputs copied aside during a forward, downloaded after the submit (model traces that
 * tests compare with a reference). */
struct workspace_trace {
  struct gpu_tensor t;
  float *dst;
};
/* When dst is set: a persistent copy of src in ws, recorded (unless measuring), added to list[*n]. */
enum status workspace_trace_copy(struct workspace *ws, const struct gpu_tensor *src, float *dst,
                                 struct workspace_trace *list, int *n);
/* Downloads every traced copy into its dst. */
enum status workspace_trace_download(struct gpu *g, const struct workspace_trace *list, int n);

#endif
