/* The Vulkan runtime's private parts, shared by its files (core/gpu_*.c), split by concern:
 *   gpu_device.c    instance, device choice and creation, validation messages, limits
 *   gpu_memory.c    buffers, arenas, tensor views
 *   gpu_command.c   command buffers: begin/submit, transfers, copies, recordings and replays
 *   gpu_dispatch.c  shader modules, pipelines, texel views, gpu_dispatch, the profile
 * Nothing outside core/gpu_*.c includes this. */
#ifndef VKD_GPU_INTERNAL_H
#define VKD_GPU_INTERNAL_H

#include "gpu.h"

#define STAGING_BYTES (32u << 20)
#define MAX_QUERIES 8192

const char *gpu_vk_result_name(VkResult r);

/* Checks a VkResult; on failure records the call and the result's name and jumps to fail. */
#define VK_TRY(call)                                                                         \
  do {                                                                                       \
    VkResult vk_try_r = (call);                                                              \
    if (vk_try_r != VK_SUCCESS) {                                                            \
      st = status_set(vk_try_r == VK_ERROR_OUT_OF_DEVICE_MEMORY ||                           \
                              vk_try_r == VK_ERROR_OUT_OF_HOST_MEMORY                        \
                          ? STATUS_OUT_OF_MEMORY                                             \
                          : STATUS_VULKAN,                                                   \
                      "%s failed: %s", #call, gpu_vk_result_name(vk_try_r));                     \
      goto fail;                                                                             \
    }                                                                                        \
  } while (0)

struct gpu_buffer {
  struct gpu *g;
  VkBuffer buf;
  VkDeviceMemory mem;
  VkDeviceSize size;
  void *mapped;     /* the staging buffer, or device memory the host sees coherently (direct transfers) */
  bool host_cached; /* mapped memory the host reads at full speed (direct downloads) */
};

struct gpu_arena {
  struct gpu *g;
  struct gpu_buffer **blocks; /* one, or several beyond the device's largest allocation */
  VkDeviceSize *base;         /* virtual offset of each block */
  int n, cap;
  bool growable;              /* several blocks: more are added as needed */
  VkDeviceSize used, requested;
  char what[64];
};

struct pipeline {
  enum kernel_id kernel;
  int n_spec;
  uint32_t spec[GPU_MAX_SPEC];
  VkPipeline pipe;
};

struct view {
  VkBuffer buf;
  VkDeviceSize offset, range;
  VkFormat format;
  VkBufferView view;
};

/* The device, its command buffers, its kernels (layout, modules, pipelines, texel views), and
 * what it keeps count of (validation messages, memory, per-kernel time). */
struct gpu_commands {
  VkCommandPool pool;
  VkCommandBuffer current, transfer, main; /* current: where dispatches go (main or a recording) */
  VkFence fence;
  bool recording;
  struct gpu_buffer *staging; /* host-visible, STAGING_BYTES, made at the first staged transfer */
  bool direct;                /* device memory the host can map is mapped: transfers are memcpy */
};

struct gpu_kernels {
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout layout; /* one for every kernel */
  PFN_vkCmdPushDescriptorSetKHR push_descriptor;
  VkShaderModule modules[KERNEL_COUNT];
  struct pipeline *pipes; /* one per kernel and specialization */
  int n_pipes, cap_pipes;
  struct view *views;     /* texel-buffer views, destroyed with their buffer */
  int n_views, cap_views;
  VkPipelineCache cache;  /* gpu_cache.c: read from disk at creation, written back at destroy */
  bool cache_on;          /* a cache folder is in use */
  size_t cache_loaded;    /* bytes read from it (0: none or not this device's) */
  int created;            /* pipelines created by this process */
  double create_seconds;  /* and the time vkCreateComputePipelines took */
};
enum status gpu_cache_open(struct gpu *g);
void gpu_cache_close(struct gpu *g);

struct gpu_validation {
  bool enabled;
  int count;
  char last[1024];
};

struct gpu_memory_stats {
  uint64_t in_use, peak; /* device bytes */
  uint64_t block_limit;  /* 0, or a smaller largest buffer than the device's (gpu_set_block_limit) */
};

struct gpu_profile {
  bool enabled;
  VkQueryPool queries;
  uint32_t n_queries;
  enum kernel_id query_kernel[MAX_QUERIES];
  double kernel_seconds[KERNEL_COUNT];
  uint64_t kernel_calls[KERNEL_COUNT];
};

struct gpu {
  struct gpu_device_info info;
  VkInstance instance;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkPhysicalDeviceProperties props;
  VkPhysicalDeviceMemoryProperties mem_props;
  VkDevice device;
  VkQueue queue;
  uint32_t queue_family;
  bool fp16;
  struct gpu_commands cmds;
  struct gpu_kernels kern;
  struct gpu_validation val;
  struct gpu_memory_stats mem;
  struct gpu_profile prof;
};

/* A buffer in device-local (host false) or host-visible, mapped memory (the staging buffer). */
enum status gpu_buffer_create_in(struct gpu *g, VkDeviceSize bytes, bool host, const char *what, struct gpu_buffer **out);
/* Everything recorded after waits for the writes recorded before (shaders and copies alike). */
void gpu_barrier(VkCommandBuffer cmd);

#endif
