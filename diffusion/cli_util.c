#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *cli_value(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "vkdiffusion %s: option %s needs a value\n", argv[0], argv[*i]);
    return NULL;
  }
  return argv[++*i];
}

bool cli_int(const char *opt, const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "vkdiffusion: %s expects an integer from %ld to %ld, got '%s'\n", opt, lo, hi, s);
    return false;
  }
  *out = v;
  return true;
}

bool cli_is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

int cli_fail(const char *cmd, const char *what) {
  if (what)
    fprintf(stderr, "vkdiffusion %s: %s: %s\n", cmd, what, status_message());
  else
    fprintf(stderr, "vkdiffusion %s: %s\n", cmd, status_message());
  return 1;
}

struct gpu *cli_gpu(const char *cmd, int device) {
  struct gpu *g = NULL;
  struct gpu_options o = {.device_index = device, .validation = -1, .profile = -1};
  if (gpu_create(&o, &g)) {
    cli_fail(cmd, NULL);
    return NULL;
  }
  return g;
}

int cli_finish_gpu(struct gpu *g, int rc) {
  if (!g) return rc;
  if (gpu_profiling(g)) gpu_profile_print(g, stderr);
  const char *last;
  int n = gpu_validation_count(g, &last);
  gpu_destroy(g);
  if (n) {
    fprintf(stderr, "vkdiffusion: %d Vulkan validation message(s); last: %s\n", n, last ? last : "?");
    return rc ? rc : 1;
  }
  return rc;
}
