/* Loading checkpoint tensors into a model's weights arena, in two passes: the first only adds up
 * the bytes (so the arena is created once at its exact size), the second converts and uploads.
 * Every tensor is checked: present, the expected shape (an error names the key and both shapes),
 * a float dtype, and finite values (a NaN or infinity is an error naming the tensor). */
#ifndef VKD_WEIGHT_LOADER_H
#define VKD_WEIGHT_LOADER_H

#include <stdbool.h>

#include "gpu.h"
#include "safetensors.h"

struct weight_loader {
  struct gpu *g;
  const struct safetensors *st;
  struct gpu_arena *arena; /* NULL in the measuring pass */
  const char *prefix;      /* prepended to every name */
  VkDeviceSize bytes;      /* measuring pass: the total */
  float *host, *host2;
  uint16_t *half;
  size_t cap, cap2;
};

enum weight_layout {
  WL_PLAIN,     /* as stored */
  WL_CONV,      /* [Cout, C, k, k] (or [Cout, C]) -> [Cout, Kp], Kp = C k k rounded up to 4 */
  WL_TRANSPOSE, /* [a, b] -> [b, a] */
};

/* Loads prefix+name, expected shape `shape` (ndim dims); rows [row0, row0 + rows) of dimension 0
 * when rows > 0 (OpenCLIP's packed q;k;v), else all of it. */
enum status weight_load(struct weight_loader *l, const char *name, int ndim, const int64_t *shape, int64_t row0,
                        int64_t rows, enum weight_layout layout, enum dtype dt, struct gpu_tensor *out);
/* An f32 vector a + b (two biases that the model adds anyway), each of n elements. */
enum status weight_load_sum(struct weight_loader *l, const char *a, const char *b, int64_t n, struct gpu_tensor *out);
/* Whether prefix+name exists. */
bool weight_exists(const struct weight_loader *l, const char *name);
/* The stored shape of prefix+name (ndim 0 and false when absent). */
bool weight_shape(const struct weight_loader *l, const char *name, int *ndim, int64_t shape[8]);
void weight_loader_free(struct weight_loader *l);

#endif
