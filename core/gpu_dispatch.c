/* Kernels on the device: shader modules, pipelines per specialization, texel views, the one
 * dispatch function that checks every call's contract, and the per-kernel profile. */
#define _POSIX_C_SOURCE 200809L
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static enum status module_get(struct gpu *g, enum kernel_id k, VkShaderModule *out) {
  enum status st = STATUS_OK;
  if (!g->kern.modules[k]) {
    const struct kernel_code *kc = kernel_code(k);
    VkShaderModuleCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = kc->size,
                                   .pCode = kc->code};
    VK_TRY(vkCreateShaderModule(g->device, &ci, NULL, &g->kern.modules[k]));
  }
  *out = g->kern.modules[k];
  return STATUS_OK;
fail:
  return st;
}

static enum status pipeline_get(struct gpu *g, enum kernel_id k, const uint32_t *spec, int n_spec, VkPipeline *out) {
  enum status st = STATUS_OK;
  for (int i = 0; i < g->kern.n_pipes; i++) {
    struct pipeline *p = &g->kern.pipes[i];
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
      .layout = g->kern.layout};
  if (g->kern.n_pipes == g->kern.cap_pipes) {
    int cap = g->kern.cap_pipes ? 2 * g->kern.cap_pipes : 32;
    struct pipeline *p = realloc(g->kern.pipes, cap * sizeof *p);
    if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    g->kern.pipes = p;
    g->kern.cap_pipes = cap;
  }
  struct pipeline *p = &g->kern.pipes[g->kern.n_pipes];
  memset(p, 0, sizeof *p);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  VK_TRY(vkCreateComputePipelines(g->device, g->kern.cache, 1, &ci, NULL, &p->pipe));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  g->kern.created++;
  double took = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  g->kern.create_seconds += took;
  if (g->prof.enabled) { /* where a first run's compile time goes */
    fprintf(stderr, "pipeline %s", kernel_code(k)->name);
    for (int i = 0; i < n_spec; i++) fprintf(stderr, "%s%u", i ? "," : " [", spec[i]);
    fprintf(stderr, "%s: %.2f s\n", n_spec ? "]" : "", took);
  }
  p->kernel = k;
  p->n_spec = n_spec;
  memcpy(p->spec, spec, n_spec * sizeof *spec);
  g->kern.n_pipes++;
  *out = p->pipe;
  return STATUS_OK;
fail:
  return status_wrap(st, "creating the pipeline of kernel '%s'", kernel_code(k)->name);
}

/* The range of a texel view over t: t's bytes, made longer by whole texels where the buffer allows
 * so that bits 8-15 of the range are never all zero. llvmpipe (lavapipe) keys its compiled shader
 * variants on a "level zero only" flag that it reads from a union member which, for buffer views,
 * overlays those bits of the range; ranges differing there compiled each texel-fetch kernel again
 * (9 variants of the GEMM in a demo run, 15-20 s of LLVM each). Kernels never fetch past t. */
static VkDeviceSize view_range(const struct gpu *g, const struct gpu_tensor *t, uint32_t texel) {
  VkDeviceSize r = t->bytes;
  if (((r >> 8) & 0xff) == 0) {
    VkDeviceSize more = (256 + texel - 1) / texel * texel; /* whole texels, >= 256 bytes */
    if (t->offset + r + more <= t->buf->size && (r + more) / texel <= g->props.limits.maxTexelBufferElements) r += more;
  }
  return r;
}

static enum status view_get(struct gpu *g, const struct gpu_tensor *t, VkFormat f, uint32_t texel, VkBufferView *out) {
  enum status st = STATUS_OK;
  VkDeviceSize range = view_range(g, t, texel);
  for (int i = 0; i < g->kern.n_views; i++) {
    struct view *v = &g->kern.views[i];
    if (v->buf == t->buf->buf && v->offset == t->offset && v->range == range && v->format == f) {
      *out = v->view;
      return STATUS_OK;
    }
  }
  if (g->kern.n_views == g->kern.cap_views) {
    int cap = g->kern.cap_views ? 2 * g->kern.cap_views : 64;
    struct view *v = realloc(g->kern.views, cap * sizeof *v);
    if (!v) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    g->kern.views = v;
    g->kern.cap_views = cap;
  }
  struct view *v = &g->kern.views[g->kern.n_views];
  VkBufferViewCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
                               .buffer = t->buf->buf,
                               .format = f,
                               .offset = t->offset,
                               .range = range};
  VK_TRY(vkCreateBufferView(g->device, &ci, NULL, &v->view));
  v->buf = t->buf->buf;
  v->offset = t->offset;
  v->range = range;
  v->format = f;
  g->kern.n_views++;
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
  const struct kernel_code *kc = kernel_code(k);
  VKD_ASSERT(kc);
  const char *name = kc->name;
  if (!g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "%s: dispatch outside gpu_begin/gpu_submit", name);
  /* the kernel's contract (core/kernels.c): its bindings and its push-constant struct */
  if (n_args != kc->bindings || push_size != kc->push_size)
    return status_set(STATUS_INVALID_ARGUMENT, "%s: dispatched with %d arguments and %zu push bytes; the kernel takes %d "
                      "and %zu", name, n_args, push_size, kc->bindings, kc->push_size);
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
      if ((st = view_get(g, t, args[i].texel_format, tb, &views[n_texel]))) return st;
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
  vkCmdBindPipeline(g->cmds.current, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
  g->kern.push_descriptor(g->cmds.current, VK_PIPELINE_BIND_POINT_COMPUTE, g->kern.layout, 0, (uint32_t)n_w, w);
  uint8_t pc[GPU_PUSH_SIZE] = {0};
  if (push_size) memcpy(pc, push, push_size);
  vkCmdPushConstants(g->cmds.current, g->kern.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, GPU_PUSH_SIZE, pc);
  vkCmdDispatch(g->cmds.current, gx, gy, gz);
  gpu_barrier(g->cmds.current);
  if (g->prof.enabled && g->cmds.current == g->cmds.main && g->prof.n_queries < MAX_QUERIES) {
    g->prof.query_kernel[g->prof.n_queries] = k;
    vkCmdWriteTimestamp(g->cmds.current, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, g->prof.queries, g->prof.n_queries++);
  }
  return STATUS_OK;
}

void gpu_profile_print(const struct gpu *g, FILE *f) {
  double total = 0;
  for (int k = 0; k < KERNEL_COUNT; k++) total += g->prof.kernel_seconds[k];
  fprintf(f, "profile (GPU time per kernel):\n");
  for (int k = 0; k < KERNEL_COUNT; k++)
    if (g->prof.kernel_calls[k])
      fprintf(f, "  %-20s %8llu calls %10.3f ms %5.1f%%\n", kernel_code(k)->name,
              (unsigned long long)g->prof.kernel_calls[k], g->prof.kernel_seconds[k] * 1e3,
              total > 0 ? 100.0 * g->prof.kernel_seconds[k] / total : 0.0);
  fprintf(f, "  %-20s %25.3f ms\n", "total", total * 1e3);
}



void gpu_pipeline_stats(const struct gpu *g, int *created, double *seconds, size_t *cache_loaded) {
  if (created) *created = g->kern.created;
  if (seconds) *seconds = g->kern.create_seconds;
  if (cache_loaded) *cache_loaded = g->kern.cache_loaded;
}
