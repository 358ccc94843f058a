/* safetensors reader (mmap, defensive) and writer (exclusive temporary file + rename).
 *
 *   struct safetensors *st;
 *   if (safetensors_open("model.safetensors", &st)) die(status_message());
 *   const struct st_tensor *t = safetensors_find(st, "text_model.final_layer_norm.weight");
 *   float *v = malloc(t->numel * sizeof *v);
 *   safetensors_read_f32(st, t, v);
 *   safetensors_close(st);
 *
 * The file is untrusted: header size, JSON structure, dtypes, shapes, offsets (range, overlap,
 * size agreement) and duplicate names are checked at open; each problem is a one-line error
 * naming the file. Tensor data may be unaligned; reads copy element by element with memcpy. */
#ifndef VKD_SAFETENSORS_H
#define VKD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_U8, ST_DTYPE_COUNT };

#define ST_MAX_DIMS 8

struct st_tensor {
  char *name;
  enum st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  int64_t numel;
  uint64_t begin, end; /* byte offsets into the data section */
};

struct safetensors;

enum status safetensors_open(const char *path, struct safetensors **out);
void safetensors_close(struct safetensors *st); /* accepts NULL */
const char *safetensors_path(const struct safetensors *st);
int safetensors_count(const struct safetensors *st);
const struct st_tensor *safetensors_at(const struct safetensors *st, int i); /* sorted by name */
const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name);
/* __metadata__ value for key, or NULL. */
const char *safetensors_metadata(const struct safetensors *st, const char *key);
const void *safetensors_data(const struct safetensors *st, const struct st_tensor *t);
/* Drops the pages of t's data (t NULL: of the whole file) from this process's memory: they are read
 * from the file again if touched. Loaders call it after converting a tensor, so a checkpoint's
 * mapping does not stay resident after its upload. */
void safetensors_release(const struct safetensors *st, const struct st_tensor *t);

const char *st_dtype_name(enum st_dtype dt);
size_t st_dtype_size(enum st_dtype dt);

/* Conversions of a whole tensor into caller memory of numel elements. Float dtypes convert to
 * each other (f32 -> f16 rounds to nearest even); integers convert to i32 (range-checked) and
 * to f32. */
enum status safetensors_read_f32(const struct safetensors *st, const struct st_tensor *t, float *dst);
enum status safetensors_read_f16(const struct safetensors *st, const struct st_tensor *t, uint16_t *dst);
enum status safetensors_read_i32(const struct safetensors *st, const struct st_tensor *t, int32_t *dst);

/* An input tensor checked against what the model needs before anything reads it: present, a float
 * dtype (f32, f16, bf16), rank ndim, and every dimension equal to want[d] (want[d] < 0: any size
 * >= 1; the sizes found are returned in got). Every value must be finite. *out: the f32 values
 * (malloc'd). Errors name the file, the tensor, its shape and the expected one ("x.safetensors:
 * tensor 'x' is [1, 3, 16, 16]; expected [N, 4, H, W] with ..."), hint says what the letters are. */
enum status safetensors_read_input(const struct safetensors *st, const char *name, int ndim, const int64_t *want,
                                   const char *expected, int64_t *got, float **out);

/* Writer: collects tensors (borrowing the data until st_writer_finish), then writes an exclusive
 * temporary file beside path and renames it over path (core/fileio.h). */
struct st_writer;
enum status st_writer_create(struct st_writer **out);
enum status st_writer_add(struct st_writer *w, const char *name, enum st_dtype dt, int ndim,
                          const int64_t *shape, const void *data);
enum status st_writer_metadata(struct st_writer *w, const char *key, const char *value);
enum status st_writer_finish(struct st_writer *w, const char *path);
void st_writer_destroy(struct st_writer *w);

#endif
