/* Device memory: buffers, arenas and views of them as tensors. */
#include "gpu_internal.h"

#include <stdio.h>
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
  /* Device memory the host sees coherently (CPU devices, most integrated GPUs) is mapped too, when
   * direct transfers are on: uploads and downloads are then a memcpy, with no staging copy, no copy
   * command and no wait (every submission is waited for, so the device is idle between them). */
  VkMemoryPropertyFlags flags = g->mem_props.memoryTypes[type].propertyFlags;
  VkMemoryPropertyFlags coherent = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  if (host) VK_TRY(vkMapMemory(g->device, b->mem, 0, VK_WHOLE_SIZE, 0, &b->mapped));
  else if (g->cmds.direct && (flags & coherent) == coherent && /* a mapping refused: staged transfers */
           vkMapMemory(g->device, b->mem, 0, VK_WHOLE_SIZE, 0, &b->mapped) != VK_SUCCESS)
    b->mapped = NULL;
  b->host_cached = b->mapped && (flags & VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
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

/* An arena is one buffer, or, beyond the device's largest allocation (maxMemoryAllocationSize:
 * 2 GiB on lavapipe, 4 GiB on many drivers, while bigG's fp32 weights take 2.6 GB), a row of
 * blocks. Offsets are virtual: block i covers [base_i, base_i + size_i); a tensor never straddles
 * two blocks. A multi-block arena adds blocks as needed, since the space lost at block ends is
 * not known when it is sized. */
static VkDeviceSize block_limit(const struct gpu *g) {
  return g->mem.block_limit && g->mem.block_limit < g->info.max_allocation ? g->mem.block_limit
                                                                          : g->info.max_allocation;
}

static enum status arena_add_block(struct gpu_arena *a, VkDeviceSize bytes) {
  if (a->n == a->cap) {
    int cap = a->cap ? 2 * a->cap : 4;
    struct gpu_buffer **b = realloc(a->blocks, (size_t)cap * sizeof *b);
    if (!b) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    a->blocks = b;
    VkDeviceSize *base = realloc(a->base, (size_t)cap * sizeof *base);
    if (!base) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    a->base = base;
    a->cap = cap;
  }
  VkDeviceSize base = a->n ? a->base[a->n - 1] + a->blocks[a->n - 1]->size : 0;
  enum status st = gpu_buffer_create(a->g, bytes, a->what, &a->blocks[a->n]);
  if (st) return st;
  a->base[a->n++] = base;
  return STATUS_OK;
}

enum status gpu_arena_create(struct gpu *g, VkDeviceSize bytes, const char *what, struct gpu_arena **out) {
  *out = NULL;
  struct gpu_arena *a = calloc(1, sizeof *a);
  if (!a) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  a->g = g;
  snprintf(a->what, sizeof a->what, "%s", what);
  VkDeviceSize limit = block_limit(g);
  a->growable = bytes > limit;
  a->requested = bytes;
  enum status st = arena_add_block(a, a->growable ? limit : bytes);
  if (st) {
    gpu_arena_destroy(a);
    return st;
  }
  *out = a;
  return STATUS_OK;
}

void gpu_arena_destroy(struct gpu_arena *a) {
  if (!a) return;
  for (int i = 0; i < a->n; i++) gpu_buffer_destroy(a->blocks[i]);
  free(a->blocks);
  free(a->base);
  free(a);
}

enum status gpu_arena_alloc(struct gpu_arena *a, enum dtype dt, int ndim, const int64_t *shape,
                            struct gpu_tensor *out) {
  VKD_ASSERT(ndim >= 1 && ndim <= 4);
  struct gpu *g = a->g;
  memset(out, 0, sizeof *out);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return status_set(STATUS_INVALID_ARGUMENT, "negative tensor dimension");
    out->shape[i] = shape[i];
    n *= shape[i];
  }
  VkDeviceSize bytes = (VkDeviceSize)n * dtype_size(dt);
  VkDeviceSize size = gpu_aligned_size(g, bytes ? bytes : 4);
  int b = 0; /* the block holding a->used */
  while (b + 1 < a->n && a->used >= a->base[b + 1]) b++;
  while (a->used + size > a->base[b] + a->blocks[b]->size) {
    if (b + 1 < a->n) { /* the rest of this block stays unused */
      a->used = a->base[++b];
      continue;
    }
    if (!a->growable)
      return status_set(STATUS_OUT_OF_MEMORY, "arena of %.1f MiB is full (%.1f MiB used, %.1f MiB asked)",
                        a->blocks[0]->size / 1048576.0, a->used / 1048576.0, bytes / 1048576.0);
    VkDeviceSize limit = block_limit(g);
    VkDeviceSize left = a->requested > a->used ? a->requested - a->used : 0;
    VkDeviceSize want = left < size ? size : left > limit ? limit : left;
    if (size > limit)
      return status_set(STATUS_OUT_OF_MEMORY, "%s: a tensor of %.1f MiB exceeds the device's maxMemoryAllocationSize "
                        "(%.1f MiB)", a->what, bytes / 1048576.0, limit / 1048576.0);
    enum status st = arena_add_block(a, want);
    if (st) return st;
    a->used = a->base[++b];
  }
  out->buf = a->blocks[b];
  out->offset = a->used - a->base[b];
  out->bytes = bytes;
  out->dtype = dt;
  out->ndim = ndim;
  a->used += size;
  return STATUS_OK;
}

void gpu_set_block_limit(struct gpu *g, uint64_t bytes) { g->mem.block_limit = bytes; }

VkDeviceSize gpu_arena_used(const struct gpu_arena *a) { return a->used; }
VkDeviceSize gpu_arena_capacity(const struct gpu_arena *a) {
  return a->growable ? a->requested : a->base[a->n - 1] + a->blocks[a->n - 1]->size;
}
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

