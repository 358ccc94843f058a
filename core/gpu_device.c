/* Instance, device choice and creation, validation messages, device facts. */
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>

const char *gpu_vk_result_name(VkResult r) {
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
  g->val.count++;
  snprintf(g->val.last, sizeof g->val.last, "%s", data->pMessage ? data->pMessage : "?");
  /* Validation is a debugging aid the user asked for with VKDIFFUSION_VALIDATION=1. */
  fprintf(stderr, "vulkan validation: %s\n", g->val.last);
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
  info->subgroup_arithmetic = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                              (sub.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                              (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
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

  /* fp16 arithmetic (only the fp16 peak shader uses it): Vulkan 1.2's feature, or its extension */
  const VkStructureType f16_type = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  bool f16_ext = g->info.api_version < VK_API_VERSION_1_2 &&
                 has_extension(g->phys, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  bool f16_query = g->info.api_version >= VK_API_VERSION_1_2 || f16_ext;
  VkPhysicalDeviceShaderFloat16Int8Features f16q = {.sType = f16_type};
  VkPhysicalDevice16BitStorageFeatures s16q = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
                                               .pNext = f16_query ? &f16q : NULL};
  VkPhysicalDeviceFeatures2 fq = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16q};
  vkGetPhysicalDeviceFeatures2(g->phys, &fq);
  g->fp16 = s16q.storageBuffer16BitAccess;
  g->info.shader_float16 = f16_query && f16q.shaderFloat16;

  VkPhysicalDeviceShaderFloat16Int8Features f16 = {.sType = f16_type, .shaderFloat16 = VK_TRUE};
  VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
                                              .pNext = g->info.shader_float16 ? &f16 : NULL,
                                              .storageBuffer16BitAccess = g->fp16};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
  f2.features.shaderInt64 = VK_FALSE;
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                 .queueFamilyIndex = g->queue_family,
                                 .queueCount = 1,
                                 .pQueuePriorities = &prio};
  const char *exts[] = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME};
  VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                            .pNext = &f2,
                            .queueCreateInfoCount = 1,
                            .pQueueCreateInfos = &qci,
                            .enabledExtensionCount = g->info.shader_float16 && f16_ext ? 2 : 1,
                            .ppEnabledExtensionNames = exts};
  VK_TRY(vkCreateDevice(g->phys, &dci, NULL, &g->device));
  vkGetDeviceQueue(g->device, g->queue_family, 0, &g->queue);
  g->kern.push_descriptor = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(g->device, "vkCmdPushDescriptorSetKHR");
  if (!g->kern.push_descriptor) return status_set(STATUS_UNSUPPORTED, "vkCmdPushDescriptorSetKHR is missing");

  VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                 .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                 .queueFamilyIndex = g->queue_family};
  VK_TRY(vkCreateCommandPool(g->device, &pci, NULL, &g->cmds.pool));
  VkCommandBuffer cmds[2];
  VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                     .commandPool = g->cmds.pool,
                                     .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                     .commandBufferCount = 2};
  VK_TRY(vkAllocateCommandBuffers(g->device, &cai, cmds));
  g->cmds.current = g->cmds.main = cmds[0];
  g->cmds.transfer = cmds[1];
  VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VK_TRY(vkCreateFence(g->device, &fci, NULL, &g->cmds.fence));

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
  VK_TRY(vkCreateDescriptorSetLayout(g->device, &dsl, NULL, &g->kern.set_layout));
  VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = GPU_PUSH_SIZE};
  VkPipelineLayoutCreateInfo plci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                     .setLayoutCount = 1,
                                     .pSetLayouts = &g->kern.set_layout,
                                     .pushConstantRangeCount = 1,
                                     .pPushConstantRanges = &pr};
  VK_TRY(vkCreatePipelineLayout(g->device, &plci, NULL, &g->kern.layout));
  if ((st = gpu_cache_open(g))) return st;

  if (g->prof.enabled) {
    if (!timestamps || g->props.limits.timestampPeriod == 0)
      return status_set(STATUS_UNSUPPORTED, "VKDIFFUSION_PROFILE: device '%s' has no compute timestamps",
                        g->info.name);
    VkQueryPoolCreateInfo qpci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                  .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                  .queryCount = MAX_QUERIES};
    VK_TRY(vkCreateQueryPool(g->device, &qpci, NULL, &g->prof.queries));
  }
  return STATUS_OK;
fail:
  return st;
}

enum status gpu_create(const struct gpu_options *opt, struct gpu **out) {
  struct gpu_options o = opt ? *opt : (struct gpu_options){.device_index = -1, .validation = -1, .profile = -1};
  enum status st = STATUS_OK;
  *out = NULL;
  const char *xfer = getenv("VKDIFFUSION_TRANSFER"); /* staged: always through the staging buffer */
  if (xfer && *xfer && strcmp(xfer, "staged") && strcmp(xfer, "auto"))
    return status_set(STATUS_INVALID_ARGUMENT, "VKDIFFUSION_TRANSFER='%s': expected auto or staged", xfer);
  struct gpu *g = calloc(1, sizeof *g);
  if (!g) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  g->val.enabled = env_flag("VKDIFFUSION_VALIDATION", o.validation);
  g->prof.enabled = env_flag("VKDIFFUSION_PROFILE", o.profile);
  if ((st = instance_create(g->val.enabled, &g->instance))) goto fail;
  if (g->val.enabled) {
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
  g->cmds.direct = !(xfer && strcmp(xfer, "staged") == 0);
  if ((st = device_create(g))) goto fail;
  *out = g;
  return STATUS_OK;
fail:
  gpu_destroy(g);
  return st;
}

void gpu_destroy(struct gpu *g) {
  if (!g) return;
  if (g->device) vkDeviceWaitIdle(g->device);
  gpu_buffer_destroy(g->cmds.staging);
  for (int i = 0; i < g->kern.n_views; i++) vkDestroyBufferView(g->device, g->kern.views[i].view, NULL);
  free(g->kern.views);
  if (g->device) gpu_cache_close(g); /* written back to disk when pipelines were made */
  for (int i = 0; i < g->kern.n_pipes; i++) vkDestroyPipeline(g->device, g->kern.pipes[i].pipe, NULL);
  free(g->kern.pipes);
  for (int i = 0; i < KERNEL_COUNT; i++)
    if (g->kern.modules[i]) vkDestroyShaderModule(g->device, g->kern.modules[i], NULL);
  if (g->device) {
    if (g->prof.queries) vkDestroyQueryPool(g->device, g->prof.queries, NULL);
    if (g->kern.layout) vkDestroyPipelineLayout(g->device, g->kern.layout, NULL);
    if (g->kern.set_layout) vkDestroyDescriptorSetLayout(g->device, g->kern.set_layout, NULL);
    if (g->cmds.fence) vkDestroyFence(g->device, g->cmds.fence, NULL);
    if (g->cmds.pool) vkDestroyCommandPool(g->device, g->cmds.pool, NULL);
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
bool gpu_profiling(const struct gpu *g) { return g->prof.enabled; }
uint64_t gpu_memory_in_use(const struct gpu *g) { return g->mem.in_use; }
uint64_t gpu_memory_peak(const struct gpu *g) { return g->mem.peak; }
void gpu_memory_reset_peak(struct gpu *g) { g->mem.peak = g->mem.in_use; }

bool gpu_texel_format_ok(const struct gpu *g, VkFormat f) {
  VkFormatProperties fp;
  vkGetPhysicalDeviceFormatProperties(g->phys, f, &fp);
  return (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
}

int gpu_validation_count(const struct gpu *g, const char **last) {
  if (last) *last = g->val.count ? g->val.last : NULL;
  return g->val.count;
}

