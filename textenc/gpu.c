#include "gpu.h"

#include <stdlib.h>
#include <string.h>

#define STAGING_BYTES (32u << 20)
#define MAX_QUERIES 8192

static const char *vk_result_name(VkResult r) {
  switch (r) {
#define R(x) \
  case x:    \
    return #x;
    R(VK_SUCCESS) R(VK_NOT_READY) R(VK_TIMEOUT) R(VK_INCOMPLETE) R(VK_ERROR_OUT_OF_HOST_MEMORY)
    R(VK_ERROR_OUT_OF_DEVICE_MEMORY) R(VK_ERROR_INITIALIZATION_FAILED) R(VK_ERROR_DEVICE_LOST)
    R(VK_ERROR_MEMORY_MAP_FAILED) R(VK_ERROR_LAYER_NOT_PRESENT) R(VK_ERROR_EXTENSION_NOT_PRESENT)
    R(VK_ERROR_FEATURE_NOT_PRESENT) R(VK_ERROR_INCOMPATIBLE_DRIVER) R(VK_ERROR_TOO_MANY_OBJECTS)
    R(VK_ERROR_FORMAT_NOT_SUPPORTED) R(VK_ERROR_FRAGMENTED_POOL) R(VK_ERROR_UNKNOWN)
#undef R
  default:
    return "VkResult(other)";
  }
}

/* Checks a VkResult; on failure records the call and the result's name and jumps to fail. */
#define VK_TRY(call)                                                                         \
  do {                                                                                       \
    VkResult vk_try_r = (call);                                                              \
    if (vk_try_r != VK_SUCCESS) {                                                            \
      st = status_set(vk_try_r == VK_ERROR_OUT_OF_DEVICE_MEMORY ||                           \
                              vk_try_r == VK_ERROR_OUT_OF_HOST_MEMORY                        \
                          ? STATUS_OUT_OF_MEMORY                                             \
                          : STATUS_VULKAN,                                                   \
                      "%s failed: %s", #call, vk_result_name(vk_try_r));                     \
      goto fail;                                                                             \
    }                                                                                        \
  } while (0)

struct gpu_buffer {
  struct gpu *g;
  VkBuffer buf;
  VkDeviceMemory mem;
  VkDeviceSize size;
  void *mapped; /* host-visible staging only */
};

struct gpu_arena {
  struct gpu_buffer *buf;
  VkDeviceSize used;
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
  VkCommandPool pool;
  VkCommandBuffer cmd, xfer_cmd, main_cmd; /* cmd: where dispatches go (main_cmd or a recording) */
  VkFence fence;
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout layout;
  PFN_vkCmdPushDescriptorSetKHR push_descriptor;
  VkShaderModule modules[KERNEL_COUNT];
  struct pipeline *pipes;
  int n_pipes, cap_pipes;
  struct view *views;
  int n_views, cap_views;
  struct gpu_buffer *staging;
  bool fp16, recording, validation;
  int validation_count;
  char validation_last[1024];
  uint64_t mem_in_use, mem_peak;
  /* profiling */
  bool profile;
  VkQueryPool queries;
  uint32_t n_queries;
  enum kernel_id query_kernel[MAX_QUERIES];
  double kernel_seconds[KERNEL_COUNT];
  uint64_t kernel_calls[KERNEL_COUNT];
};

size_t dtype_size(enum dtype dt) { return dt == DT_F16 ? 2 : 4; }
const char *dtype_name(enum dtype dt) {
  return dt == DT_F32 ? "f32" : dt == DT_F16 ? "f16" : "i32";
}

int64_t gpu_tensor_numel(const struct gpu_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

static int env_flag(const char *name, int given) {
  if (given >= 0) return given;
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                     VkDebugUtilsMessageTypeFlagsEXT type,
                                                     const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                     void *user) {
  struct gpu *g = user;
  if (!(sev & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)))
    return VK_FALSE;
  g->validation_count++;
  snprintf(g->validation_last, sizeof g->validation_last, "%s", data->pMessage ? data->pMessage : "?");
  /* Validation is a debugging aid the user asked for with VKDIFFUSION_VALIDATION=1. */
  fprintf(stderr, "vulkan validation: %s\n", g->validation_last);
  return VK_FALSE;
}

static const char *type_name(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
  default: return "other";
  }
}

static int type_rank(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
  default: return 4;
  }
}

static bool has_extension(VkPhysicalDevice pd, const char *name) {
  uint32_t n = 0;
  if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS) return false;
  VkExtensionProperties *e = calloc(n ? n : 1, sizeof *e);
  if (!e) return false;
  bool found = false;
  if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e) == VK_SUCCESS)
    for (uint32_t i = 0; i < n && !found; i++) found = strcmp(e[i].extensionName, name) == 0;
  free(e);
  return found;
}

static void describe(VkPhysicalDevice pd, struct gpu_device_info *info) {
  VkPhysicalDeviceDriverProperties driver = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                            .pNext = &driver};
  VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
                                               .pNext = &sub};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3};
  vkGetPhysicalDeviceProperties2(pd, &p2);
  VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
  vkGetPhysicalDeviceFeatures2(pd, &f2);
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(pd, &mp);

  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", p2.properties.deviceName);
  snprintf(info->driver, sizeof info->driver, "%.120s %.120s", driver.driverName, driver.driverInfo);
  info->type = type_name(p2.properties.deviceType);
  for (uint32_t i = 0; i < mp.memoryHeapCount; i++)
    if ((mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && mp.memoryHeaps[i].size > info->memory_bytes)
      info->memory_bytes = mp.memoryHeaps[i].size;
  info->fp16 = s16.storageBuffer16BitAccess;
  info->subgroup_size = sub.subgroupSize;
  info->max_storage_buffer_range = p2.properties.limits.maxStorageBufferRange;
  info->max_allocation = m3.maxMemoryAllocationSize;
  info->api_version = p2.properties.apiVersion;
}

static enum status instance_create(bool validation, VkInstance *out) {
  enum status st = STATUS_OK;
  const char *layers[] = {"VK_LAYER_KHRONOS_validation"};
  const char *exts[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME};
  if (validation) {
    uint32_t n = 0;
    VK_TRY(vkEnumerateInstanceLayerProperties(&n, NULL));
    VkLayerProperties *lp = calloc(n ? n : 1, sizeof *lp);
    if (!lp) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, lp) == VK_SUCCESS)
      for (uint32_t i = 0; i < n && !found; i++) found = strcmp(lp[i].layerName, layers[0]) == 0;
    free(lp);
    if (!found)
      return status_set(STATUS_NOT_FOUND, "VKDIFFUSION_VALIDATION is set but the Khronos validation layer "
                                          "is not installed (apt-get install vulkan-validationlayers)");
  }
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                           .pApplicationName = "vkdiffusion",
                           .apiVersion = VK_API_VERSION_1_2};
  VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                             .pApplicationInfo = &app,
                             .enabledLayerCount = validation ? 1 : 0,
                             .ppEnabledLayerNames = layers,
                             .enabledExtensionCount = validation ? 1 : 0,
                             .ppEnabledExtensionNames = exts};
  VK_TRY(vkCreateInstance(&ci, NULL, out));
  return STATUS_OK;
fail:
  if (st == STATUS_VULKAN || st == STATUS_OUT_OF_MEMORY)
    status_wrap(STATUS_NO_DEVICE, "cannot start Vulkan (is a Vulkan driver installed? on a machine "
                                  "without a GPU: apt-get install mesa-vulkan-drivers)");
  return STATUS_NO_DEVICE;
}

static enum status physical_devices(VkInstance inst, VkPhysicalDevice **out, uint32_t *n) {
  enum status st = STATUS_OK;
  *out = NULL;
  VK_TRY(vkEnumeratePhysicalDevices(inst, n, NULL));
  if (*n == 0)
    return status_set(STATUS_NO_DEVICE, "no Vulkan device found (hint: on a machine without a GPU, "
                                        "apt-get install mesa-vulkan-drivers for lavapipe)");
  *out = calloc(*n, sizeof **out);
  if (!*out) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  VK_TRY(vkEnumeratePhysicalDevices(inst, n, *out));
  return STATUS_OK;
fail:
  free(*out);
  *out = NULL;
  return st;
}

enum status gpu_list_devices(struct gpu_device_info *infos, int max, int *n) {
  VkInstance inst = VK_NULL_HANDLE;
  VkPhysicalDevice *pds = NULL;
  uint32_t count = 0;
  *n = 0;
  enum status st = instance_create(false, &inst);
  if (st) return st;
  st = physical_devices(inst, &pds, &count);
  if (!st) {
    *n = (int)count;
    for (uint32_t i = 0; infos && i < count && (int)i < max; i++) describe(pds[i], &infos[i]);
  }
  free(pds);
  vkDestroyInstance(inst, NULL);
  return st;
}

static enum status pick_device(struct gpu *g, int index) {
  VkPhysicalDevice *pds = NULL;
  uint32_t n = 0;
  enum status st = physical_devices(g->instance, &pds, &n);
  if (st) return st;
  if (index < 0) {
    const char *env = getenv("VKDIFFUSION_DEVICE");
    if (env && *env) {
      char *end;
      long v = strtol(env, &end, 10);
      if (*end || v < 0) {
        free(pds);
        return status_set(STATUS_INVALID_ARGUMENT, "VKDIFFUSION_DEVICE='%s' is not a device index", env);
      }
      index = (int)v;
    }
  }
  if (index >= (int)n) {
    free(pds);
    return status_set(STATUS_NO_DEVICE, "device %d does not exist: there are %u Vulkan devices "
                                        "(see 'vkdiffusion devices')", index, n);
  }
  int best = -1, best_rank = 99;
  for (uint32_t i = 0; i < n; i++) {
    if (index >= 0 && (int)i != index) continue;
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(pds[i], &p);
    if (p.apiVersion < VK_API_VERSION_1_1 || !has_extension(pds[i], VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME)) {
      if (index >= 0) {
        free(pds);
        return status_set(STATUS_UNSUPPORTED, "device %d (%s) lacks Vulkan 1.1 or VK_KHR_push_descriptor",
                          index, p.deviceName);
      }
      continue;
    }
    if (type_rank(p.deviceType) < best_rank) best = (int)i, best_rank = type_rank(p.deviceType);
  }
  if (best < 0) {
    free(pds);
    return status_set(STATUS_NO_DEVICE, "no Vulkan 1.1 device with VK_KHR_push_descriptor (hint: "
                                        "apt-get install mesa-vulkan-drivers for lavapipe)");
  }
  g->phys = pds[best];
  free(pds);
  describe(g->phys, &g->info);
  vkGetPhysicalDeviceProperties(g->phys, &g->props);
  vkGetPhysicalDeviceMemoryProperties(g->phys, &g->mem_props);
  return STATUS_OK;
}

static enum status device_create(struct gpu *g) {
  enum status st = STATUS_OK;
  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(g->phys, &nq, NULL);
  VkQueueFamilyProperties qp[16];
  if (nq > 16) nq = 16;
  vkGetPhysicalDeviceQueueFamilyProperties(g->phys, &nq, qp);
  g->queue_family = UINT32_MAX;
  for (uint32_t i = 0; i < nq && g->queue_family == UINT32_MAX; i++)
    if (qp[i].queueFlags & VK_QUEUE_COMPUTE_BIT) g->queue_family = i;
  if (g->queue_family == UINT32_MAX)
    return status_set(STATUS_UNSUPPORTED, "device '%s' has no compute queue", g->info.name);
  bool timestamps = qp[g->queue_family].timestampValidBits > 0;

  VkPhysicalDevice16BitStorageFeatures s16q = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceFeatures2 fq = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16q};
  vkGetPhysicalDeviceFeatures2(g->phys, &fq);
  g->fp16 = s16q.storageBuffer16BitAccess;

  VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
                                              .storageBuffer16BitAccess = g->fp16};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
  f2.features.shaderInt64 = VK_FALSE;
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                 .queueFamilyIndex = g->queue_family,
                                 .queueCount = 1,
                                 .pQueuePriorities = &prio};
  const char *exts[] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                            .pNext = &f2,
                            .queueCreateInfoCount = 1,
                            .pQueueCreateInfos = &qci,
                            .enabledExtensionCount = 1,
                            .ppEnabledExtensionNames = exts};
  VK_TRY(vkCreateDevice(g->phys, &dci, NULL, &g->device));
  vkGetDeviceQueue(g->device, g->queue_family, 0, &g->queue);
  g->push_descriptor = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(g->device, "vkCmdPushDescriptorSetKHR");
  if (!g->push_descriptor) return status_set(STATUS_UNSUPPORTED, "vkCmdPushDescriptorSetKHR is missing");

  VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                 .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                 .queueFamilyIndex = g->queue_family};
  VK_TRY(vkCreateCommandPool(g->device, &pci, NULL, &g->pool));
  VkCommandBuffer cmds[2];
  VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                     .commandPool = g->pool,
                                     .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                     .commandBufferCount = 2};
  VK_TRY(vkAllocateCommandBuffers(g->device, &cai, cmds));
  g->cmd = g->main_cmd = cmds[0];
  g->xfer_cmd = cmds[1];
  VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VK_TRY(vkCreateFence(g->device, &fci, NULL, &g->fence));

  VkDescriptorSetLayoutBinding b[GPU_STORAGE_BINDINGS + GPU_TEXEL_BINDINGS];
  for (int i = 0; i < GPU_STORAGE_BINDINGS + GPU_TEXEL_BINDINGS; i++)
    b[i] = (VkDescriptorSetLayoutBinding){
        .binding = (uint32_t)i,
        .descriptorType = i < GPU_STORAGE_BINDINGS ? VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                                                   : VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
        .descriptorCount = 1,
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
  VkDescriptorSetLayoutCreateInfo dsl = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                         .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR,
                                         .bindingCount = GPU_STORAGE_BINDINGS + GPU_TEXEL_BINDINGS,
                                         .pBindings = b};
  VK_TRY(vkCreateDescriptorSetLayout(g->device, &dsl, NULL, &g->set_layout));
  VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = GPU_PUSH_SIZE};
  VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                     .setLayoutCount = 1,
                                     .pSetLayouts = &g->set_layout,
                                     .pushConstantRangeCount = 1,
                                     .pPushConstantRanges = &pr};
  VK_TRY(vkCreatePipelineLayout(g->device, &plci, NULL, &g->layout));

  if (g->profile) {
    if (!timestamps || g->props.limits.timestampPeriod == 0)
      return status_set(STATUS_UNSUPPORTED, "VKDIFFUSION_PROFILE: device '%s' has no compute timestamps",
                        g->info.name);
    VkQueryPoolCreateInfo qpci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                  .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                  .queryCount = MAX_QUERIES};
    VK_TRY(vkCreateQueryPool(g->device, &qpci, NULL, &g->queries));
  }
  return STATUS_OK;
fail:
  return st;
}

static enum status buffer_create(struct gpu *g, VkDeviceSize bytes, bool host, const char *what,
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
  g->mem_in_use += req.size;
  if (g->mem_in_use > g->mem_peak) g->mem_peak = g->mem_in_use;
  *out = b;
  return STATUS_OK;
fail:
  if (st == STATUS_OUT_OF_MEMORY)
    status_wrap(st, "%s: allocating %.1f MiB of device memory", what, bytes / 1048576.0);
  gpu_buffer_destroy(b);
  return st;
}

enum status gpu_buffer_create(struct gpu *g, VkDeviceSize bytes, const char *what, struct gpu_buffer **out) {
  return buffer_create(g, bytes, false, what, out);
}

void gpu_buffer_destroy(struct gpu_buffer *b) {
  if (!b) return;
  struct gpu *g = b->g;
  for (int i = 0; i < g->n_views;) { /* views of this buffer die with it */
    if (g->views[i].buf == b->buf) {
      vkDestroyBufferView(g->device, g->views[i].view, NULL);
      g->views[i] = g->views[--g->n_views];
    } else {
      i++;
    }
  }
  if (b->mem) {
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(g->device, b->buf, &req);
    g->mem_in_use -= req.size;
  }
  if (b->mapped) vkUnmapMemory(g->device, b->mem);
  if (b->buf) vkDestroyBuffer(g->device, b->buf, NULL);
  if (b->mem) vkFreeMemory(g->device, b->mem, NULL);
  free(b);
}

enum status gpu_create(const struct gpu_options *opt, struct gpu **out) {
  struct gpu_options o = opt ? *opt : (struct gpu_options){.device_index = -1, .validation = -1, .profile = -1};
  enum status st = STATUS_OK;
  *out = NULL;
  struct gpu *g = calloc(1, sizeof *g);
  if (!g) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  g->validation = env_flag("VKDIFFUSION_VALIDATION", o.validation);
  g->profile = env_flag("VKDIFFUSION_PROFILE", o.profile);
  if ((st = instance_create(g->validation, &g->instance))) goto fail;
  if (g->validation) {
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_callback,
        .pUserData = g};
    PFN_vkCreateDebugUtilsMessengerEXT create =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(g->instance, "vkCreateDebugUtilsMessengerEXT");
    if (!create) {
      st = status_set(STATUS_UNSUPPORTED, "VK_EXT_debug_utils is missing");
      goto fail;
    }
    VK_TRY(create(g->instance, &mci, NULL, &g->messenger));
  }
  if ((st = pick_device(g, o.device_index))) goto fail;
  if ((st = device_create(g))) goto fail;
  if ((st = buffer_create(g, STAGING_BYTES, true, "staging buffer", &g->staging))) goto fail;
  *out = g;
  return STATUS_OK;
fail:
  gpu_destroy(g);
  return st;
}

void gpu_destroy(struct gpu *g) {
  if (!g) return;
  if (g->device) vkDeviceWaitIdle(g->device);
  gpu_buffer_destroy(g->staging);
  for (int i = 0; i < g->n_views; i++) vkDestroyBufferView(g->device, g->views[i].view, NULL);
  free(g->views);
  for (int i = 0; i < g->n_pipes; i++) vkDestroyPipeline(g->device, g->pipes[i].pipe, NULL);
  free(g->pipes);
  for (int i = 0; i < KERNEL_COUNT; i++)
    if (g->modules[i]) vkDestroyShaderModule(g->device, g->modules[i], NULL);
  if (g->device) {
    if (g->queries) vkDestroyQueryPool(g->device, g->queries, NULL);
    if (g->layout) vkDestroyPipelineLayout(g->device, g->layout, NULL);
    if (g->set_layout) vkDestroyDescriptorSetLayout(g->device, g->set_layout, NULL);
    if (g->fence) vkDestroyFence(g->device, g->fence, NULL);
    if (g->pool) vkDestroyCommandPool(g->device, g->pool, NULL);
    vkDestroyDevice(g->device, NULL);
  }
  if (g->messenger) {
    PFN_vkDestroyDebugUtilsMessengerEXT destroy =
        (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(g->instance, "vkDestroyDebugUtilsMessengerEXT");
    if (destroy) destroy(g->instance, g->messenger, NULL);
  }
  if (g->instance) vkDestroyInstance(g->instance, NULL);
  free(g);
}

const struct gpu_device_info *gpu_info(const struct gpu *g) { return &g->info; }
const VkPhysicalDeviceLimits *gpu_limits(const struct gpu *g) { return &g->props.limits; }
bool gpu_has_fp16(const struct gpu *g) { return g->fp16; }
bool gpu_profiling(const struct gpu *g) { return g->profile; }
uint64_t gpu_memory_in_use(const struct gpu *g) { return g->mem_in_use; }
uint64_t gpu_memory_peak(const struct gpu *g) { return g->mem_peak; }
void gpu_memory_reset_peak(struct gpu *g) { g->mem_peak = g->mem_in_use; }

bool gpu_texel_format_ok(const struct gpu *g, VkFormat f) {
  VkFormatProperties fp;
  vkGetPhysicalDeviceFormatProperties(g->phys, f, &fp);
  return (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
}

int gpu_validation_count(const struct gpu *g, const char **last) {
  if (last) *last = g->validation_count ? g->validation_last : NULL;
  return g->validation_count;
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

/* --- transfers --- */

static enum status xfer_begin(struct gpu *g) {
  enum status st = STATUS_OK;
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  VK_TRY(vkBeginCommandBuffer(g->xfer_cmd, &bi));
  return STATUS_OK;
fail:
  return st;
}

/* Submits a finished command buffer and waits for it. */
static enum status submit_and_wait(struct gpu *g, VkCommandBuffer cmd) {
  enum status st = STATUS_OK;
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
  VK_TRY(vkQueueSubmit(g->queue, 1, &si, g->fence));
  VK_TRY(vkWaitForFences(g->device, 1, &g->fence, VK_TRUE, UINT64_MAX));
  VK_TRY(vkResetFences(g->device, 1, &g->fence));
  return STATUS_OK;
fail:
  return st;
}

static enum status run_and_wait(struct gpu *g, VkCommandBuffer cmd) {
  enum status st = STATUS_OK;
  VK_TRY(vkEndCommandBuffer(cmd));
  return submit_and_wait(g, cmd);
fail:
  return st;
}

static enum status transfer(struct gpu *g, const struct gpu_tensor *t, void *host, size_t bytes, bool up) {
  enum status st = STATUS_OK;
  if (g->recording) return status_set(STATUS_INVALID_ARGUMENT, "transfer while a command buffer is recording");
  if (bytes > t->bytes)
    return status_set(STATUS_INVALID_ARGUMENT, "transfer of %zu bytes into a tensor of %llu bytes", bytes,
                      (unsigned long long)t->bytes);
  for (size_t done = 0; done < bytes;) {
    size_t chunk = bytes - done < STAGING_BYTES ? bytes - done : STAGING_BYTES;
    if (up) memcpy(g->staging->mapped, (const char *)host + done, chunk);
    if ((st = xfer_begin(g))) return st;
    VkBufferCopy region = {.size = chunk};
    if (up) {
      region.dstOffset = t->offset + done;
      vkCmdCopyBuffer(g->xfer_cmd, g->staging->buf, t->buf->buf, 1, &region);
    } else {
      region.srcOffset = t->offset + done;
      vkCmdCopyBuffer(g->xfer_cmd, t->buf->buf, g->staging->buf, 1, &region);
    }
    if ((st = run_and_wait(g, g->xfer_cmd))) return st;
    if (!up) memcpy((char *)host + done, g->staging->mapped, chunk);
    done += chunk;
  }
  return STATUS_OK;
}

enum status gpu_upload(struct gpu *g, const struct gpu_tensor *t, const void *src, size_t bytes) {
  return transfer(g, t, (void *)src, bytes, true);
}

enum status gpu_download(struct gpu *g, const struct gpu_tensor *t, void *dst, size_t bytes) {
  return transfer(g, t, dst, bytes, false);
}

/* Everything recorded after waits for the writes recorded before (shaders and copies alike). */
static void barrier(VkCommandBuffer cmd) {
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
  VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
}

enum status gpu_fill(struct gpu *g, const struct gpu_tensor *t, uint32_t pattern) {
  if (!g->recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_fill outside gpu_begin/gpu_submit");
  VkDeviceSize bytes = (t->bytes + 3) / 4 * 4;
  vkCmdFillBuffer(g->cmd, t->buf->buf, t->offset, bytes, pattern);
  barrier(g->cmd);
  return STATUS_OK;
}

enum status gpu_copy(struct gpu *g, const struct gpu_tensor *src, const struct gpu_tensor *dst) {
  if (!g->recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_copy outside gpu_begin/gpu_submit");
  if (src->bytes != dst->bytes) return status_set(STATUS_INVALID_ARGUMENT, "gpu_copy: %llu bytes into %llu",
                                                  (unsigned long long)src->bytes, (unsigned long long)dst->bytes);
  if (!src->bytes) return STATUS_OK;
  VkBufferCopy region = {.srcOffset = src->offset, .dstOffset = dst->offset, .size = src->bytes};
  vkCmdCopyBuffer(g->cmd, src->buf->buf, dst->buf->buf, 1, &region);
  barrier(g->cmd);
  return STATUS_OK;
}

/* --- recording --- */

enum status gpu_begin(struct gpu *g) {
  enum status st = STATUS_OK;
  if (g->recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_begin: already recording");
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  VK_TRY(vkBeginCommandBuffer(g->cmd, &bi));
  g->recording = true;
  g->n_queries = 0;
  if (g->profile) {
    vkCmdResetQueryPool(g->cmd, g->queries, 0, MAX_QUERIES);
    vkCmdWriteTimestamp(g->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, g->queries, g->n_queries++);
  }
  return STATUS_OK;
fail:
  return st;
}

bool gpu_recording(const struct gpu *g) { return g->recording; }

enum status gpu_submit(struct gpu *g) {
  if (!g->recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_submit without gpu_begin");
  g->recording = false;
  enum status st = run_and_wait(g, g->cmd);
  if (st) return st;
  uint64_t *ts = NULL;
  if (g->profile && g->n_queries > 1) {
    ts = calloc(g->n_queries, sizeof *ts);
    if (!ts) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    VK_TRY(vkGetQueryPoolResults(g->device, g->queries, 0, g->n_queries, g->n_queries * sizeof *ts, ts,
                                 sizeof *ts, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
    double period = g->props.limits.timestampPeriod * 1e-9;
    for (uint32_t i = 1; i < g->n_queries; i++) {
      double s = (double)(ts[i] - ts[i - 1]) * period;
      g->kernel_seconds[g->query_kernel[i]] += s;
      g->kernel_calls[g->query_kernel[i]]++;
    }
    free(ts);
    ts = NULL;
  }
  return STATUS_OK;
fail:
  free(ts);
  return st;
}

static enum status module_get(struct gpu *g, enum kernel_id k, VkShaderModule *out) {
  enum status st = STATUS_OK;
  if (!g->modules[k]) {
    const struct kernel_code *kc = kernel_code(k);
    VkShaderModuleCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = kc->size,
                                   .pCode = kc->code};
    VK_TRY(vkCreateShaderModule(g->device, &ci, NULL, &g->modules[k]));
  }
  *out = g->modules[k];
  return STATUS_OK;
fail:
  return st;
}

static enum status pipeline_get(struct gpu *g, enum kernel_id k, const uint32_t *spec, int n_spec, VkPipeline *out) {
  enum status st = STATUS_OK;
  for (int i = 0; i < g->n_pipes; i++) {
    struct pipeline *p = &g->pipes[i];
    if (p->kernel == k && p->n_spec == n_spec && !memcmp(p->spec, spec, n_spec * sizeof *spec)) {
      *out = p->pipe;
      return STATUS_OK;
    }
  }
  VkShaderModule mod = VK_NULL_HANDLE;
  if ((st = module_get(g, k, &mod))) return st;
  VkSpecializationMapEntry entries[GPU_MAX_SPEC];
  for (int i = 0; i < n_spec; i++)
    entries[i] = (VkSpecializationMapEntry){.constantID = (uint32_t)i, .offset = 4u * i, .size = 4};
  VkSpecializationInfo si = {.mapEntryCount = (uint32_t)n_spec,
                             .pMapEntries = entries,
                             .dataSize = 4u * n_spec,
                             .pData = spec};
  VkComputePipelineCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
      .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = mod,
                .pName = "main",
                .pSpecializationInfo = n_spec ? &si : NULL},
      .layout = g->layout};
  if (g->n_pipes == g->cap_pipes) {
    int cap = g->cap_pipes ? 2 * g->cap_pipes : 32;
    struct pipeline *p = realloc(g->pipes, cap * sizeof *p);
    if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    g->pipes = p;
    g->cap_pipes = cap;
  }
  struct pipeline *p = &g->pipes[g->n_pipes];
  memset(p, 0, sizeof *p);
  VK_TRY(vkCreateComputePipelines(g->device, VK_NULL_HANDLE, 1, &ci, NULL, &p->pipe));
  p->kernel = k;
  p->n_spec = n_spec;
  memcpy(p->spec, spec, n_spec * sizeof *spec);
  g->n_pipes++;
  *out = p->pipe;
  return STATUS_OK;
fail:
  return status_wrap(st, "creating the pipeline of kernel '%s'", kernel_code(k)->name);
}

static enum status view_get(struct gpu *g, const struct gpu_tensor *t, VkFormat f, VkBufferView *out) {
  enum status st = STATUS_OK;
  for (int i = 0; i < g->n_views; i++) {
    struct view *v = &g->views[i];
    if (v->buf == t->buf->buf && v->offset == t->offset && v->range == t->bytes && v->format == f) {
      *out = v->view;
      return STATUS_OK;
    }
  }
  if (g->n_views == g->cap_views) {
    int cap = g->cap_views ? 2 * g->cap_views : 64;
    struct view *v = realloc(g->views, cap * sizeof *v);
    if (!v) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    g->views = v;
    g->cap_views = cap;
  }
  struct view *v = &g->views[g->n_views];
  VkBufferViewCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
                               .buffer = t->buf->buf,
                               .format = f,
                               .offset = t->offset,
                               .range = t->bytes};
  VK_TRY(vkCreateBufferView(g->device, &ci, NULL, &v->view));
  v->buf = t->buf->buf;
  v->offset = t->offset;
  v->range = t->bytes;
  v->format = f;
  g->n_views++;
  *out = v->view;
  return STATUS_OK;
fail:
  return st;
}

static uint32_t texel_bytes(VkFormat f) {
  switch (f) {
  case VK_FORMAT_R32G32B32A32_SFLOAT: return 16;
  case VK_FORMAT_R16G16B16A16_SFLOAT: return 8;
  case VK_FORMAT_R32_SFLOAT: return 4;
  case VK_FORMAT_R16_SFLOAT: return 2;
  default: return 0;
  }
}

enum status gpu_dispatch(struct gpu *g, enum kernel_id k, const uint32_t *spec, int n_spec,
                         const struct gpu_arg *args, int n_args, const void *push, size_t push_size,
                         uint32_t gx, uint32_t gy, uint32_t gz) {
  const char *name = kernel_code(k)->name;
  if (!g->recording) return status_set(STATUS_INVALID_ARGUMENT, "%s: dispatch outside gpu_begin/gpu_submit", name);
  VKD_ASSERT(n_spec >= 0 && n_spec <= GPU_MAX_SPEC && push_size <= GPU_PUSH_SIZE);
  const VkPhysicalDeviceLimits *l = &g->props.limits;
  if (gx == 0 || gy == 0 || gz == 0) return STATUS_OK; /* empty tensor: nothing to do */
  if (gx > l->maxComputeWorkGroupCount[0] || gy > l->maxComputeWorkGroupCount[1] ||
      gz > l->maxComputeWorkGroupCount[2])
    return status_set(STATUS_UNSUPPORTED, "%s: %u x %u x %u work groups exceed the device limit %u x %u x %u",
                      name, gx, gy, gz, l->maxComputeWorkGroupCount[0], l->maxComputeWorkGroupCount[1],
                      l->maxComputeWorkGroupCount[2]);
  VkWriteDescriptorSet w[GPU_STORAGE_BINDINGS + GPU_TEXEL_BINDINGS];
  VkDescriptorBufferInfo bi[GPU_STORAGE_BINDINGS];
  VkBufferView views[GPU_TEXEL_BINDINGS];
  int n_storage = 0, n_texel = 0, n_w = 0;
  enum status st;
  for (int i = 0; i < n_args; i++) {
    const struct gpu_tensor *t = args[i].t;
    VKD_ASSERT(t && t->buf);
    if (args[i].texel_format == VK_FORMAT_UNDEFINED) {
      VKD_ASSERT(n_storage < GPU_STORAGE_BINDINGS);
      if (t->bytes > l->maxStorageBufferRange)
        return status_set(STATUS_UNSUPPORTED,
                          "%s: argument %d is %.1f MiB, beyond the device's maxStorageBufferRange (%.1f MiB)",
                          name, i, t->bytes / 1048576.0, l->maxStorageBufferRange / 1048576.0);
      bi[n_storage] = (VkDescriptorBufferInfo){.buffer = t->buf->buf, .offset = t->offset,
                                               .range = t->bytes ? (t->bytes + 3) / 4 * 4 : 4};
      w[n_w++] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                        .dstBinding = (uint32_t)n_storage,
                                        .descriptorCount = 1,
                                        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                        .pBufferInfo = &bi[n_storage]};
      n_storage++;
    } else {
      VKD_ASSERT(n_texel < GPU_TEXEL_BINDINGS);
      uint32_t tb = texel_bytes(args[i].texel_format);
      VKD_ASSERT(tb && t->bytes % tb == 0);
      if (t->bytes / tb > l->maxTexelBufferElements)
        return status_set(STATUS_UNSUPPORTED, "%s: argument %d has %llu texels, beyond maxTexelBufferElements (%u)",
                          name, i, (unsigned long long)(t->bytes / tb), l->maxTexelBufferElements);
      if ((st = view_get(g, t, args[i].texel_format, &views[n_texel]))) return st;
      w[n_w++] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                        .dstBinding = (uint32_t)(GPU_TEXEL_BINDING0 + n_texel),
                                        .descriptorCount = 1,
                                        .descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
                                        .pTexelBufferView = &views[n_texel]};
      n_texel++;
    }
  }
  VkPipeline pipe = VK_NULL_HANDLE;
  if ((st = pipeline_get(g, k, spec, n_spec, &pipe))) return st;
  vkCmdBindPipeline(g->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
  g->push_descriptor(g->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, g->layout, 0, (uint32_t)n_w, w);
  uint8_t pc[GPU_PUSH_SIZE] = {0};
  if (push_size) memcpy(pc, push, push_size);
  vkCmdPushConstants(g->cmd, g->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, GPU_PUSH_SIZE, pc);
  vkCmdDispatch(g->cmd, gx, gy, gz);
  barrier(g->cmd);
  if (g->profile && g->cmd == g->main_cmd && g->n_queries < MAX_QUERIES) {
    g->query_kernel[g->n_queries] = k;
    vkCmdWriteTimestamp(g->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, g->queries, g->n_queries++);
  }
  return STATUS_OK;
}

void gpu_profile_print(const struct gpu *g, FILE *f) {
  double total = 0;
  for (int k = 0; k < KERNEL_COUNT; k++) total += g->kernel_seconds[k];
  fprintf(f, "profile (GPU time per kernel):\n");
  for (int k = 0; k < KERNEL_COUNT; k++)
    if (g->kernel_calls[k])
      fprintf(f, "  %-20s %8llu calls %10.3f ms %5.1f%%\n", kernel_code(k)->name,
              (unsigned long long)g->kernel_calls[k], g->kernel_seconds[k] * 1e3,
              total > 0 ? 100.0 * g->kernel_seconds[k] / total : 0.0);
  fprintf(f, "  %-20s %25.3f ms\n", "total", total * 1e3);
}


struct gpu_recording {
  struct gpu *g;
  VkCommandBuffer cmd;
};

enum status gpu_recording_create(struct gpu *g, struct gpu_recording **out) {
  enum status st = STATUS_OK;
  struct gpu_recording *r = calloc(1, sizeof *r);
  if (!r) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  r->g = g;
  VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                     .commandPool = g->pool,
                                     .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                     .commandBufferCount = 1};
  VK_TRY(vkAllocateCommandBuffers(g->device, &cai, &r->cmd));
  *out = r;
  return STATUS_OK;
fail:
  free(r);
  return st;
}

void gpu_recording_destroy(struct gpu_recording *r) {
  if (!r) return;
  if (r->cmd) vkFreeCommandBuffers(r->g->device, r->g->pool, 1, &r->cmd);
  free(r);
}

enum status gpu_begin_recording(struct gpu *g, struct gpu_recording *r) {
  enum status st = STATUS_OK;
  if (g->recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_begin_recording: already recording");
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO}; /* reusable */
  VK_TRY(vkResetCommandBuffer(r->cmd, 0));
  VK_TRY(vkBeginCommandBuffer(r->cmd, &bi));
  g->cmd = r->cmd;
  g->recording = true;
  g->n_queries = 0; /* no timestamps in recordings: profiles cover plain submits */
  return STATUS_OK;
fail:
  return st;
}

enum status gpu_end_recording(struct gpu *g) {
  enum status st = STATUS_OK;
  if (!g->recording || g->cmd == g->main_cmd) return status_set(STATUS_INVALID_ARGUMENT, "gpu_end_recording without a recording");
  g->recording = false;
  VkCommandBuffer cmd = g->cmd;
  g->cmd = g->main_cmd;
  VK_TRY(vkEndCommandBuffer(cmd));
  return STATUS_OK;
fail:
  return st;
}

enum status gpu_replay(struct gpu *g, struct gpu_recording *r) {
  if (g->recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_replay while recording");
  return submit_and_wait(g, r->cmd);
}
