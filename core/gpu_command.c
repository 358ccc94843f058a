/* Command buffers: one recorded forward submitted at once, synchronous transfers through the
 * staging buffer, copies and fills, and recordings replayed between sampling steps. */
#include "gpu_internal.h"

#include <stdlib.h>
#include <string.h>

/* --- transfers --- */

static enum status xfer_begin(struct gpu *g) {
  enum status st = STATUS_OK;
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  VK_TRY(vkBeginCommandBuffer(g->cmds.transfer, &bi));
  return STATUS_OK;
fail:
  return st;
}

/* Submits a finished command buffer and waits for it. */
static enum status submit_and_wait(struct gpu *g, VkCommandBuffer cmd) {
  enum status st = STATUS_OK;
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
  VK_TRY(vkQueueSubmit(g->queue, 1, &si, g->cmds.fence));
  VK_TRY(vkWaitForFences(g->device, 1, &g->cmds.fence, VK_TRUE, UINT64_MAX));
  VK_TRY(vkResetFences(g->device, 1, &g->cmds.fence));
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

void *gpu_tensor_host(struct gpu *g, const struct gpu_tensor *t) {
  if (g->cmds.recording || !t->buf->mapped) return NULL;
  return (char *)t->buf->mapped + t->offset;
}

static enum status transfer(struct gpu *g, const struct gpu_tensor *t, void *host, size_t bytes, bool up) {
  enum status st = STATUS_OK;
  if (g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "transfer while a command buffer is recording");
  if (bytes > t->bytes)
    return status_set(STATUS_INVALID_ARGUMENT, "transfer of %zu bytes into a tensor of %llu bytes", bytes,
                      (unsigned long long)t->bytes);
  void *direct = gpu_tensor_host(g, t);
  if (direct && (up || t->buf->host_cached)) { /* the device is idle: every submission was waited for */
    if (up) memcpy(direct, host, bytes);
    else memcpy(host, direct, bytes);
    return STATUS_OK;
  }
  if (!g->cmds.staging &&
      (st = gpu_buffer_create_in(g, STAGING_BYTES, true, "staging buffer", &g->cmds.staging)))
    return st;
  for (size_t done = 0; done < bytes;) {
    size_t chunk = bytes - done < STAGING_BYTES ? bytes - done : STAGING_BYTES;
    if (up) memcpy(g->cmds.staging->mapped, (const char *)host + done, chunk);
    if ((st = xfer_begin(g))) return st;
    VkBufferCopy region = {.size = chunk};
    if (up) {
      region.dstOffset = t->offset + done;
      vkCmdCopyBuffer(g->cmds.transfer, g->cmds.staging->buf, t->buf->buf, 1, &region);
    } else {
      region.srcOffset = t->offset + done;
      vkCmdCopyBuffer(g->cmds.transfer, t->buf->buf, g->cmds.staging->buf, 1, &region);
    }
    if ((st = run_and_wait(g, g->cmds.transfer))) return st;
    if (!up) memcpy((char *)host + done, g->cmds.staging->mapped, chunk);
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

void gpu_barrier(VkCommandBuffer cmd) {
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
  VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
}

enum status gpu_fill(struct gpu *g, const struct gpu_tensor *t, uint32_t pattern) {
  if (!g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_fill outside gpu_begin/gpu_submit");
  VkDeviceSize bytes = (t->bytes + 3) / 4 * 4;
  vkCmdFillBuffer(g->cmds.current, t->buf->buf, t->offset, bytes, pattern);
  gpu_barrier(g->cmds.current);
  return STATUS_OK;
}

enum status gpu_copy(struct gpu *g, const struct gpu_tensor *src, const struct gpu_tensor *dst) {
  if (!g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_copy outside gpu_begin/gpu_submit");
  if (src->bytes != dst->bytes) return status_set(STATUS_INVALID_ARGUMENT, "gpu_copy: %llu bytes into %llu",
                                                  (unsigned long long)src->bytes, (unsigned long long)dst->bytes);
  if (!src->bytes) return STATUS_OK;
  VkBufferCopy region = {.srcOffset = src->offset, .dstOffset = dst->offset, .size = src->bytes};
  vkCmdCopyBuffer(g->cmds.current, src->buf->buf, dst->buf->buf, 1, &region);
  gpu_barrier(g->cmds.current);
  return STATUS_OK;
}

/* --- recording --- */

enum status gpu_begin(struct gpu *g) {
  enum status st = STATUS_OK;
  if (g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_begin: already recording");
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  VK_TRY(vkBeginCommandBuffer(g->cmds.current, &bi));
  g->cmds.recording = true;
  g->prof.n_queries = 0;
  if (g->prof.enabled) {
    vkCmdResetQueryPool(g->cmds.current, g->prof.queries, 0, MAX_QUERIES);
    vkCmdWriteTimestamp(g->cmds.current, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, g->prof.queries, g->prof.n_queries++);
  }
  return STATUS_OK;
fail:
  return st;
}

bool gpu_recording(const struct gpu *g) { return g->cmds.recording; }

enum status gpu_submit(struct gpu *g) {
  if (!g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_submit without gpu_begin");
  g->cmds.recording = false;
  enum status st = run_and_wait(g, g->cmds.current);
  if (st) return st;
  uint64_t *ts = NULL;
  if (g->prof.enabled && g->prof.n_queries > 1) {
    ts = calloc(g->prof.n_queries, sizeof *ts);
    if (!ts) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    VK_TRY(vkGetQueryPoolResults(g->device, g->prof.queries, 0, g->prof.n_queries, g->prof.n_queries * sizeof *ts, ts,
                                 sizeof *ts, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
    double period = g->props.limits.timestampPeriod * 1e-9;
    for (uint32_t i = 1; i < g->prof.n_queries; i++) {
      double s = (double)(ts[i] - ts[i - 1]) * period;
      g->prof.kernel_seconds[g->prof.query_kernel[i]] += s;
      g->prof.kernel_calls[g->prof.query_kernel[i]]++;
    }
    free(ts);
    ts = NULL;
  }
  return STATUS_OK;
fail:
  free(ts);
  return st;
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
                                     .commandPool = g->cmds.pool,
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
  if (r->cmd) vkFreeCommandBuffers(r->g->device, r->g->cmds.pool, 1, &r->cmd);
  free(r);
}

enum status gpu_begin_recording(struct gpu *g, struct gpu_recording *r) {
  enum status st = STATUS_OK;
  if (g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_begin_recording: already recording");
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO}; /* reusable */
  VK_TRY(vkResetCommandBuffer(r->cmd, 0));
  VK_TRY(vkBeginCommandBuffer(r->cmd, &bi));
  g->cmds.current = r->cmd;
  g->cmds.recording = true;
  g->prof.n_queries = 0; /* no timestamps in recordings: profiles cover plain submits */
  return STATUS_OK;
fail:
  return st;
}

enum status gpu_end_recording(struct gpu *g) {
  enum status st = STATUS_OK;
  if (!g->cmds.recording || g->cmds.current == g->cmds.main) return status_set(STATUS_INVALID_ARGUMENT, "gpu_end_recording without a recording");
  g->cmds.recording = false;
  VkCommandBuffer cmd = g->cmds.current;
  g->cmds.current = g->cmds.main;
  VK_TRY(vkEndCommandBuffer(cmd));
  return STATUS_OK;
fail:
  return st;
}

enum status gpu_replay(struct gpu *g, struct gpu_recording *r) {
  if (g->cmds.recording) return status_set(STATUS_INVALID_ARGUMENT, "gpu_replay while recording");
  return submit_and_wait(g, r->cmd);
}

