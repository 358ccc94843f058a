/* The pipeline cache on disk: $VKDIFFUSION_CACHE_DIR, else $XDG_CACHE_HOME/vkdiffusion, else
 * ~/.cache/vkdiffusion; one file per device and driver,
 *   pipelines-<pipelineCacheUUID>-<vendor>-<device>-<driverVersion>.bin
 * holding vkGetPipelineCacheData's bytes. Read at device creation when its Vulkan header names this
 * device (header size, version one, vendor, device, cache UUID: anything else is ignored and
 * replaced); written at gpu_destroy when pipelines were created, through an exclusive temporary
 * renamed over the file (processes sharing a cache each write a whole file: the last one stays).
 * VKDIFFUSION_PIPELINE_CACHE=0 turns it off. A cache that cannot be read or written never fails the
 * work: the pipelines are simply compiled. */
#define _POSIX_C_SOURCE 200809L
#include "gpu_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"

#define CACHE_MAX_BYTES (512u << 20)

static bool cache_dir(char *dir, size_t n) {
  const char *v = getenv("VKDIFFUSION_PIPELINE_CACHE");
  if (v && !strcmp(v, "0")) return false;
  const char *d = getenv("VKDIFFUSION_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
  if (d && d[0]) snprintf(dir, n, "%s", d);
  else if (x && x[0] == '/') snprintf(dir, n, "%s/vkdiffusion", x);
  else if (h && h[0] == '/') snprintf(dir, n, "%s/.cache/vkdiffusion", h);
  else return false;
  return true;
}

static void cache_path(const struct gpu *g, const char *dir, char *path, size_t n) {
  char uuid[2 * VK_UUID_SIZE + 1];
  for (unsigned i = 0; i < VK_UUID_SIZE; i++) snprintf(uuid + 2 * i, 3, "%02x", g->props.pipelineCacheUUID[i]);
  snprintf(path, n, "%s/pipelines-%s-%04x-%04x-%08x.bin", dir, uuid, g->props.vendorID, g->props.deviceID,
           g->props.driverVersion);
}

/* VkPipelineCacheHeaderVersionOne, little-endian as the spec writes it */
static bool header_matches(const struct gpu *g, const unsigned char *b, size_t len) {
  if (len < 16 + VK_UUID_SIZE) return false;
  uint32_t w[4];
  for (int i = 0; i < 4; i++) w[i] = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
  return w[0] >= 16 + VK_UUID_SIZE && w[0] <= len && w[1] == VK_PIPELINE_CACHE_HEADER_VERSION_ONE &&
         w[2] == g->props.vendorID && w[3] == g->props.deviceID && !memcmp(b + 16, g->props.pipelineCacheUUID, VK_UUID_SIZE);
}

enum status gpu_cache_open(struct gpu *g) {
  char dir[FILE_PATH_MAX - 200], path[FILE_PATH_MAX];
  char *data = NULL;
  size_t len = 0;
  if (cache_dir(dir, sizeof dir)) {
    cache_path(g, dir, path, sizeof path);
    struct stat sb;
    if (stat(path, &sb) == 0 && file_read(path, CACHE_MAX_BYTES, &data, &len)) status_clear(); /* unreadable: start empty */
    if (data && !header_matches(g, (unsigned char *)data, len)) free(data), data = NULL, len = 0;
    g->kern.cache_loaded = data ? len : 0;
    g->kern.cache_on = true;
  }
  VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO, .initialDataSize = data ? len : 0,
                                  .pInitialData = data};
  VkResult r = vkCreatePipelineCache(g->device, &ci, NULL, &g->kern.cache);
  if (r != VK_SUCCESS && data) { /* the driver refused the data: an empty cache */
    ci.initialDataSize = 0, ci.pInitialData = NULL;
    g->kern.cache_loaded = 0;
    r = vkCreatePipelineCache(g->device, &ci, NULL, &g->kern.cache);
  }
  free(data);
  if (r != VK_SUCCESS) return status_set(STATUS_VULKAN, "vkCreatePipelineCache failed (%d)", (int)r);
  return STATUS_OK;
}

/* mkdir -p of dir (0700: the cache is this user's) */
static bool make_dirs(const char *dir) {
  char p[FILE_PATH_MAX];
  snprintf(p, sizeof p, "%s", dir);
  for (char *c = p + 1; *c; c++)
    if (*c == '/') {
      *c = 0;
      if (mkdir(p, 0700) != 0 && errno != EEXIST) return false;
      *c = '/';
    }
  return mkdir(p, 0700) == 0 || errno == EEXIST;
}

void gpu_cache_close(struct gpu *g) {
  if (!g->kern.cache) return;
  char dir[FILE_PATH_MAX - 200], path[FILE_PATH_MAX];
  size_t len = 0;
  void *data = NULL;
  if (g->kern.cache_on && g->kern.created > 0 && cache_dir(dir, sizeof dir) && make_dirs(dir) &&
      vkGetPipelineCacheData(g->device, g->kern.cache, &len, NULL) == VK_SUCCESS && len > 0 && len <= CACHE_MAX_BYTES &&
      (data = malloc(len)) && vkGetPipelineCacheData(g->device, g->kern.cache, &len, data) == VK_SUCCESS) {
    cache_path(g, dir, path, sizeof path);
    struct file_out o;
    if (file_out_begin(&o, path)) {
      status_clear();
    } else if (file_out_write(&o, data, len)) {
      file_out_abort(&o);
      status_clear();
    } else if (file_out_commit(&o, true)) {
      status_clear();
    }
  }
  free(data);
  vkDestroyPipelineCache(g->device, g->kern.cache, NULL);
  g->kern.cache = VK_NULL_HANDLE;
}
