/* Vulkan runtime: device selection, buffers and arenas, staging, push-descriptor dispatch.
 *
 *   struct gpu *g;
 *   if (gpu_create(&(struct gpu_options){.device_index = -1}, &g)) die(status_message());
 *   struct gpu_arena *a;  gpu_arena_create(g, 64 << 20, "activations", &a);
 *   struct gpu_tensor x;  gpu_arena_alloc(a, DT_F32, 2, (int64_t[]){77, 768}, &x);
 *   gpu_upload(g, &x, host, x.bytes);
 *   gpu_begin(g);  op_layernorm(g, &x, &w, &b, &y, 1e-5f);  gpu_submit(g);
 *   gpu_download(g, &y, host, y.bytes);
 *   gpu_arena_destroy(a);  gpu_destroy(g);
 *
 * One command buffer is recorded per forward (gpu_begin ... gpu_submit) and submitted once;
 * each dispatch is followed by a compute-to-compute barrier. Every kernel shares one pipeline
 * layout: set 0 holds GPU_STORAGE_BINDINGS storage buffers (bindings 0..7, the op's tensor
 * arguments in order) and GPU_TEXEL_BINDINGS uniform texel buffers (bindings 8..11), written
 * with push descriptors, plus one push-constant range of GPU_PUSH_SIZE bytes. */
#ifndef VKD_GPU_H
#define VKD_GPU_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <vulkan/vulkan.h>

#include "kernels.h"
#include "status.h"

#define GPU_STORAGE_BINDINGS 8
#define GPU_TEXEL_BINDINGS 4
#define GPU_TEXEL_BINDING0 8
#define GPU_PUSH_SIZE 128
#define GPU_MAX_SPEC 8

enum dtype { DT_F32, DT_F16, DT_I32 };
size_t dtype_size(enum dtype dt);
const char *dtype_name(enum dtype dt);

struct gpu_options {
  int device_index; /* -1: VKDIFFUSION_DEVICE, else the best device */
  int validation;   /* 1 on, 0 off, -1: VKDIFFUSION_VALIDATION */
  int profile;      /* 1 on, 0 off, -1: VKDIFFUSION_PROFILE */
};

struct gpu_device_info {
  char name[256];
  char driver[256];
  const char *type; /* "discrete", "integrated", "virtual", "cpu", "other" */
  uint64_t memory_bytes; /* the largest device-local heap */
  bool fp16;             /* 16-bit storage buffers (fp16 weights) */
  bool shader_float16;   /* fp16 arithmetic in shaders (only bench's fp16 peak uses it; kernels compute in fp32) */
  uint32_t subgroup_size;
  bool subgroup_arithmetic; /* subgroupAdd & co. in compute shaders (the _subgroup kernels) */
  uint64_t max_storage_buffer_range;
  uint64_t max_allocation;
  uint32_t api_version;
};

/* Pipelines this process created, the seconds that took (the driver's compiler), and the bytes of
 * the on-disk pipeline cache it started from (core/gpu_cache.c; 0: none yet for this device). */
struct gpu;
void gpu_pipeline_stats(const struct gpu *g, int *created, double *seconds, size_t *cache_loaded);

/* Lists the Vulkan devices (no device is created). *n receives the count; infos may be NULL. */
enum status gpu_list_devices(struct gpu_device_info *infos, int max, int *n);

struct gpu;
struct gpu_buffer;

/* A view of part of a buffer: a contiguous, row-major tensor. */
struct gpu_tensor {
  struct gpu_buffer *buf;
  VkDeviceSize offset, bytes;
  enum dtype dtype;
  int ndim;
  int64_t shape[4];
};
int64_t gpu_tensor_numel(const struct gpu_tensor *t);

/* One argument of a dispatch: a storage buffer, or (texel_format set) a uniform texel buffer. */
struct gpu_arg {
  const struct gpu_tensor *t;
  VkFormat texel_format;
};

enum status gpu_create(const struct gpu_options *opt, struct gpu **out);
void gpu_destroy(struct gpu *g); /* accepts NULL and half-built objects */
const struct gpu_device_info *gpu_info(const struct gpu *g);
const VkPhysicalDeviceLimits *gpu_limits(const struct gpu *g);
bool gpu_has_fp16(const struct gpu *g);
bool gpu_texel_format_ok(const struct gpu *g, VkFormat f);
/* Validation messages (warnings and errors) seen so far; *last gets the latest text or NULL. */
int gpu_validation_count(const struct gpu *g, const char **last);
/* Device bytes allocated now and at the peak. */
uint64_t gpu_memory_in_use(const struct gpu *g);
uint64_t gpu_memory_peak(const struct gpu *g);
void gpu_memory_reset_peak(struct gpu *g);

/* Device-local buffer. Fails with a clear message beyond maxMemoryAllocationSize. */
enum status gpu_buffer_create(struct gpu *g, VkDeviceSize bytes, const char *what, struct gpu_buffer **out);
void gpu_buffer_destroy(struct gpu_buffer *b);

/* Arena: one buffer (several beyond the device's maxMemoryAllocationSize; a tensor lies in one),
 * sub-allocations aligned to the device's offset alignments. */
struct gpu_arena;
enum status gpu_arena_create(struct gpu *g, VkDeviceSize bytes, const char *what, struct gpu_arena **out);
void gpu_arena_destroy(struct gpu_arena *a);
enum status gpu_arena_alloc(struct gpu_arena *a, enum dtype dt, int ndim, const int64_t *shape,
                            struct gpu_tensor *out);
VkDeviceSize gpu_arena_used(const struct gpu_arena *a);
VkDeviceSize gpu_arena_capacity(const struct gpu_arena *a);
void gpu_arena_reset(struct gpu_arena *a, VkDeviceSize to); /* frees everything above `to` */
/* Arenas use buffers of at most `bytes` from now on (0: the device's limit), so that tests reach
 * the several-buffer path of large models with small ones. */
void gpu_set_block_limit(struct gpu *g, uint64_t bytes);
/* Bytes an allocation of `bytes` takes in an arena of this device (with alignment). */
VkDeviceSize gpu_aligned_size(const struct gpu *g, VkDeviceSize bytes);

/* A tensor of another shape over the same bytes (numel must match). */
struct gpu_tensor gpu_tensor_reshape(const struct gpu_tensor *t, int ndim, const int64_t *shape);
/* Rows [first, first+count) of the outermost dimension. */
struct gpu_tensor gpu_tensor_rows(const struct gpu_tensor *t, int64_t first, int64_t count);

/* Synchronous transfers (outside gpu_begin/gpu_submit): a memcpy where the device memory is mapped
 * (host-visible and coherent: CPU devices, most integrated GPUs; downloads also need it host-cached),
 * else through a staging buffer and a copy command. VKDIFFUSION_TRANSFER=staged stages always. */
enum status gpu_upload(struct gpu *g, const struct gpu_tensor *t, const void *src, size_t bytes);
enum status gpu_download(struct gpu *g, const struct gpu_tensor *t, void *dst, size_t bytes);
/* The tensor's bytes in host address space when its memory is mapped (see above), outside
 * gpu_begin/gpu_submit; NULL otherwise. Writing there is an upload (loaders lay weights out in
 * place); it stays valid until the buffer is destroyed, but only between submissions. */
void *gpu_tensor_host(struct gpu *g, const struct gpu_tensor *t);
/* Fills a tensor with a 32-bit pattern (tests poison outputs with NaN); recorded, not immediate. */
enum status gpu_fill(struct gpu *g, const struct gpu_tensor *t, uint32_t pattern);

/* Records a copy of src into dst (same byte size). */
enum status gpu_copy(struct gpu *g, const struct gpu_tensor *src, const struct gpu_tensor *dst);

/* Command recording: everything between begin and submit is one command buffer. */
enum status gpu_begin(struct gpu *g);
enum status gpu_submit(struct gpu *g); /* ends, submits, waits; collects profile timings */
bool gpu_recording(const struct gpu *g);

/* Records one dispatch. spec: specialization constants (constant_id 0..n_spec-1; ids 0-2 are
 * the work-group size by convention). Checks arguments, push size and group counts. */
enum status gpu_dispatch(struct gpu *g, enum kernel_id k, const uint32_t *spec, int n_spec,
                         const struct gpu_arg *args, int n_args, const void *push, size_t push_size,
                         uint32_t gx, uint32_t gy, uint32_t gz);

/* A recorded command buffer that can be submitted again (a forward whose buffers and shapes do not
 * change: the U-Net between sampling steps). Record with gpu_begin_recording ... gpu_end_recording
 * (ops dispatch into it as into gpu_begin/gpu_submit), then gpu_replay as often as needed. */
struct gpu_recording;
enum status gpu_recording_create(struct gpu *g, struct gpu_recording **out);
void gpu_recording_destroy(struct gpu_recording *r); /* accepts NULL */
enum status gpu_begin_recording(struct gpu *g, struct gpu_recording *r);
enum status gpu_end_recording(struct gpu *g);
enum status gpu_replay(struct gpu *g, struct gpu_recording *r); /* submits and waits */

/* Per-kernel GPU time of the submits since the last reset (VKDIFFUSION_PROFILE=1). */
bool gpu_profiling(const struct gpu *g);
void gpu_profile_print(const struct gpu *g, FILE *f);

#endif
