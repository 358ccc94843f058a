#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_devices(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      printf("usage: vkdiffusion devices\n\nLists the Vulkan devices: index (for --device N or VKDIFFUSION_DEVICE),\n"
             "name, type, driver, device-local memory, fp16 storage support, subgroup size and\n"
             "maxStorageBufferRange. Without --device, the first discrete GPU is used, then\n"
             "integrated, then CPU (lavapipe).\n");
      return 0;
    }
    fprintf(stderr, "vkdiffusion devices: unknown option '%s'\n", argv[i]);
    return 2;
  }
  int n = 0;
  if (gpu_list_devices(NULL, 0, &n)) return cli_fail("devices", NULL);
  struct gpu_device_info *info = calloc(n, sizeof *info);
  if (!info) return cli_fail("devices", "out of memory");
  if (gpu_list_devices(info, n, &n)) {
    free(info);
    return cli_fail("devices", NULL);
  }
  printf("%-5s %-36s %-10s %-28s %10s %5s %8s %14s\n", "index", "name", "type", "driver", "memory", "fp16",
         "subgroup", "max storage");
  for (int i = 0; i < n; i++)
    printf("%-5d %-36.36s %-10s %-28.28s %7.1f GiB %5s %8u %10.0f MiB\n", i, info[i].name, info[i].type,
           info[i].driver, info[i].memory_bytes / 1073741824.0, info[i].fp16 ? "yes" : "no", info[i].subgroup_size,
           info[i].max_storage_buffer_range / 1048576.0);
  free(info);
  return 0;
}
