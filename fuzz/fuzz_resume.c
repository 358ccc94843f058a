/* What --skip-existing and --shard read from outside: an existing output file checked as a complete
 * PNG with its parameters text (byte 0 even), a --shard value (byte 0 odd, 1 mod 4), or --shard
 * auto's variables (3 mod 4: the rest split at the first newline into the index and the count, set
 * as SLURM's or, with bit 2, Kubernetes' variables). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "plan.h"
#include "png.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!size) return 0;
  if (!(data[0] & 1)) {
    char *params = NULL;
    if (!png_check_complete(fuzz_file("image.png", data + 1, size - 1), &params)) free(params);
    return 0;
  }
  char *text = strndup((const char *)data + 1, size - 1), why[512], source[128];
  if (!text) return 0;
  struct shard s;
  if ((data[0] & 3) == 1) {
    if (shard_parse(text, &s, why, sizeof why) && (s.index < 0 || s.index >= s.count)) abort();
  } else {
    char *nl = strchr(text, '\n'), *count = nl ? nl + 1 : "";
    if (nl) *nl = 0;
    bool k8s = data[0] & 4;
    unsetenv("SLURM_ARRAY_TASK_ID"), unsetenv("SLURM_ARRAY_TASK_COUNT"), unsetenv("JOB_COMPLETION_INDEX");
    setenv(k8s ? "JOB_COMPLETION_INDEX" : "SLURM_ARRAY_TASK_ID", text, 1);
    setenv(k8s ? "VKDIFFUSION_SHARDS" : "SLURM_ARRAY_TASK_COUNT", count, 1);
    if (shard_from_env(&s, why, sizeof why, source, sizeof source) && (s.index < 0 || s.index >= s.count)) abort();
  }
  free(text);
  return 0;
}
