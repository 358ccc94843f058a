/* Loading checkpoint tensors into a model's weights arena, in two passes: the first only adds up
 * the bytes (so the arena is created once at its exact size), the second converts and uploads.
 * Every tensor is checked: present, the expected shape (an error names the key and both shapes),
 * a float dtype, and finite values (a NaN or infinity is an error naming the tensor). */
#ifndef VKD_WEIGHT_LOADER_H
#define VKD_WEIGHT_LOADER_H

#include <stdbool.h>

#include "gpu.h"
#include "safetensors.h"

/* One rename map from a model's own names to a checkpoint's (diffusers' U-Net names, ...): writes
 * the checkpoint key of `name` into key; false when the name has no counterpart. */
typedef bool (*weight_rename_fn)(const char *name, char *key, size_t n, const void *ctx);

struct weight_loader {
  struct gpu *g;
  const struct safetensors *st;
  struct gpu_arena *arena; /* NULL in the measuring pass */
  const char *prefix;      /* prepended to every name (after the rename) */
  weight_rename_fn rename; /* NULL: the names as they are */
  const void *rename_ctx;
  VkDeviceSize bytes;      /* measuring pass: the total */
  struct gpu_tensor *target; /* weight_reload: write into this tensor instead of the arena */
  const float *delta;        /* weight_reload: added to the checkpoint's values (rows x inner) first */
  float *host, *host2;
  uint16_t *half, *raw; /* raw: an F16 tensor as stored (the F16 -> F16 path) */
  size_t cap, cap2, cap16;
  bool want16;          /* inside weight_load: the device tensor is F16 */
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

/* What a model uploaded, tensor by tensor, so that a tensor can be rewritten later from its
 * checkpoint: merging a difference (LoRA) and restoring the exact original values. */
struct weight_entry {
  char key[256];            /* the checkpoint key */
  char name[256];           /* the model's own name for it (before the rename map and prefix) */
  struct gpu_tensor t;      /* where it lives on the device */
  enum weight_layout layout;
  enum dtype dt;
  int ndim, path;           /* path: an index into the registry's paths */
  int64_t shape[8], row0, rows;
};
struct weight_registry {
  struct weight_entry *e;
  int n, cap, n_paths;
  char **paths;
};
/* Loads on this thread record every weight_load into r from now on (NULL: stop recording). */
void weight_registry_capture(struct weight_registry *r);
void weight_registry_free(struct weight_registry *r);
/* Rewrites e's device tensor from its checkpoint plus delta [rows, inner] (NULL: exactly the
 * checkpoint's values), through the same layout and precision as the first load. l: a loader on
 * that checkpoint (l->g, l->st = the file r->paths[e->path]; its buffers are reused across calls). */
enum status weight_reload(struct weight_loader *l, const struct weight_entry *e, const float *delta);

/* The layers every model has, named base + "." + the checkpoint's leaf names (weight, bias):
 * an error names the key and both shapes. */
/* The stored shape of prefix+name, which must exist with ndim dimensions. */
enum status weight_dims(const struct weight_loader *l, const char *name, int ndim, int64_t shape[8]);
/* base.leaf, an f32 vector of n */
enum status weight_load_vector(struct weight_loader *l, const char *base, const char *leaf, int64_t n,
                               struct gpu_tensor *out);
/* base.weight, base.bias [channels] (GroupNorm, LayerNorm) */
enum status weight_load_norm(struct weight_loader *l, const char *base, int64_t channels, struct gpu_tensor *w,
                             struct gpu_tensor *b);
/* base.weight [cout, cin, k, k] as [cout, Kp] in dt, base.bias [cout] (skipped when b is NULL) */
enum status weight_load_conv(struct weight_loader *l, const char *base, int64_t cin, int64_t cout, int kernel,
                             enum dtype dt, struct gpu_tensor *w, struct gpu_tensor *b);
/* base.weight [out, in] in dt, base.bias [out] (skipped when b is NULL) */
enum status weight_load_linear(struct weight_loader *l, const char *base, int64_t in, int64_t out, enum dtype dt,
                               struct gpu_tensor *w, struct gpu_tensor *b);

/* A whole model in two passes: load(l, model) first measures (l->arena NULL), then reset(model)
 * (may be NULL) undoes what it built, *arena is created at the exact size, and load runs again to
 * fill it. prefix is prepended to every name. */
typedef enum status (*weight_load_fn)(struct weight_loader *l, void *model);
enum status weight_load_model(struct gpu *g, const struct safetensors *st, const char *prefix, const char *what,
                              weight_load_fn load, void (*reset)(void *model), void *model, struct gpu_arena **arena);
/* The same with a rename map (rename NULL: none). */
enum status weight_load_model_renamed(struct gpu *g, const struct safetensors *st, const char *prefix,
                                      weight_rename_fn rename, const void *rename_ctx, const char *what,
                                      weight_load_fn load, void (*reset)(void *model), void *model,
                                      struct gpu_arena **arena);

#endif
