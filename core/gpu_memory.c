/* Device memory: buffers, arenas and views of them as tensors. */
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>

enum status gpu_buffer_create_in(struct gpu *g, VkDeviceSize bytes, bool host, const char *what,
                                 struct gpu_buffer **out) {
  enum status st = STATUS_OK;
  *out = NULL;
  if (bytes == 0) bytes = 16;
  if (bytes > g->info.max_allocation)
    return status_set(STATUS_OUT_OF_MEMORY,
                      "%s: a buffer of %.1f MiB exceeds the device's maxMemoryAllocationSize (%.1f MiB)",
                      what, bytes / 1048576.0, g->info.max_allocation / 1048576.0);
  struct gpu_buffer *b = calloc(1, sizeof *b);
  if (!b) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  b->g = g;
  b->size = bytes;
  VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                            .size = bytes,
                            .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                                     VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                            .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  VK_TRY(vkCreateBuffer(g->device, &bci, NULL, &b->buf));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(g->device, b->buf, &req);
  VkMemoryPropertyFlags want = host ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
                                    : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
  uint32_t type = UINT32_MAX;
  for (uint32_t i = 0; i < g->mem_props.memoryTypeCount && type == UINT32_MAX; i++)
    if ((req.memoryTypeBits & (1u << i)) && (g->mem_props.memoryTypes[i].propertyFlags & want) == want) type = i;
  if (type == UINT32_MAX) {
    st = status_set(STATUS_UNSUPPORTED, "%s: no suitable memory type", what);
    goto fail;
  }
  VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                              .allocationSize = req.size,
                              .memoryTypeIndex = type};
  VK_TRY(vkAllocateMemory(g->device, &mai, NULL, &b->mem));
  VK_TRY(vkBindBufferMemory(g->device, b->buf, b->mem, 0));
  if (host) VK_TRY(vkMapMemory(g->device, b->mem, 0, VK_WHOLE_SIZE, 0, &b->mapped));
  g->mem.in_use += req.size;
  if (g->mem.in_use > g->mem.peak) g->mem.peak = g->mem.in_use;
  *out = b;
  return STATUS_OK;
fail:
  if (st == STATUS_OUT_OF_MEMORY)
    status_wrap(st, "%s: allocating %.1f MiB of device memory", what, bytes / 1048576.0);
  gpu_buffer_destroy(b);
  return st;
}

enum status gpu_buffer_create(struct gpu *g, VkDeviceSize bytes, const char *what, struct gpu_buffer **out) {
  return gpu_buffer_create_in(g, bytes, false, what, out);
}

void gpu_buffer_destroy(struct gpu_buffer *b) {
  if (!b) return;
  struct gpu *g = b->g;
  for (int i = 0; i < g->kern.n_views;) { /* views of this buffer die with it */
    if (g->kern.views[i].buf == b->buf) {
      vkDestroyBufferView(g->device, g->kern.views[i].view, NULL);
      g->kern.views[i] = g->kern.views[--g->kern.n_views];
    } else {
      i++;
    }
  }
  if (b->mem) {
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(g->device, b->buf, &req);
    g->mem.in_use -= req.size;
  }
  if (b->mapped) vkUnmapMemory(g->device, b->mem);
  if (b->buf) vkDestroyBuffer(g->device, b->buf, NULL);
  if (b->mem) vkFreeMemory(g->device, b->mem, NULL);
  free(b);
}

/* --- arenas --- */

static VkDeviceSize alignment(const struct gpu *g) {
  VkDeviceSize a = 64;
  const VkPhysicalDeviceLimits *l = &g->props.limits;
  if (l->minStorageBufferOffsetAlignment > a) a = l->minStorageBufferOffsetAlignment;
  if (l->minTexelBufferOffsetAlignment > a) a = l->minTexelBufferOffsetAlignment;
  return a;
}

VkDeviceSize gpu_aligned_size(const struct gpu *g, VkDeviceSize bytes) {
  VkDeviceSize a = alignment(g);
  return (bytes + a - 1) / a * a;
}

enum status gpu_arena_create(struct gpu *g, VkDeviceSize bytes, const char *what, struct gpu_arena **out) {
  *out = NULL;
  struct gpu_arena *a = calloc(1, sizeof *a);
  if (!a) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  enum status st = gpu_buffer_create(g, bytes, what, &a->buf);
  if (st) {
    free(a);
    return st;
  }
  *out = a;
  return STATUS_OK;
}

void gpu_arena_destroy(struct gpu_arena *a) {
  if (!a) return;
  gpu_buffer_destroy(a->buf);
  free(a);
}

enum status gpu_arena_alloc(struct gpu_arena *a, enum dtype dt, int ndim, const int64_t *shape,
                            struct gpu_tensor *out) {
  VKD_ASSERT(ndim >= 1 && ndim <= 4);
  struct gpu *g = a->buf->g;
  memset(out, 0, sizeof *out);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return status_set(STATUS_INVALID_ARGUMENT, "negative tensor dimension");
    out->shape[i] = shape[i];
    n *= shape[i];
  }
  VkDeviceSize bytes = (VkDeviceSize)n * dtype_size(dt);
  VkDeviceSize size = gpu_aligned_size(g, bytes ? bytes : 4);
  if (a->used + size > a->buf->size)
    return status_set(STATUS_OUT_OF_MEMORY, "arena of %.1f MiB is full (%.1f MiB used, %.1f MiB asked)",
                      a->buf->size / 1048576.0, a->used / 1048576.0, bytes / 1048576.0);
  out->buf = a->buf;
  out->offset = a->used;
  out->bytes = bytes;
  out->dtype = dt;
  out->ndim = ndim;
  a->used += size;
  return STATUS_OK;
}

VkDeviceSize gpu_arena_used(const struct gpu_arena *a) { return a->used; }
VkDeviceSize gpu_arena_capacity(const struct gpu_arena *a) { return a->buf->size; }
void gpu_arena_reset(struct gpu_arena *a, VkDeviceSize to) {
  VKD_ASSERT(to <= a->used);
  a->used = to;
}

struct gpu_tensor gpu_tensor_reshape(const struct gpu_tensor *t, int ndim, const int64_t *shape) {
  struct gpu_tensor r = *t;
  int64_t n = 1;
  VKD_ASSERT(ndim >= 1 && ndim <= 4);
  r.ndim = ndim;
  for (int i = 0; i < 4; i++) r.shape[i] = i < ndim ? shape[i] : 0;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  VKD_ASSERT(n == gpu_tensor_numel(t));
  return r;
}

struct gpu_tensor gpu_tensor_rows(const struct gpu_tensor *t, int64_t first, int64_t count) {
  VKD_ASSERT(first >= 0 && count >= 0 && first + count <= t->shape[0]);
  struct gpu_tensor r = *t;
  int64_t inner = gpu_tensor_numel(t) / (t->shape[0] ? t->shape[0] : 1);
  r.shape[0] = count;
  r.offset = t->offset + (VkDeviceSize)(first * inner) * dtype_size(t->dtype);
  r.bytes = (VkDeviceSize)(count * inner) * dtype_size(t->dtype);
  return r;
}

