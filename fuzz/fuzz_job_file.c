/* Prompt files in every format: the first byte picks the name's extension (.json, .jsonl, .txt,
 * none), the rest is the file. */
#include <stdlib.h>

#include "fuzz.h"
#include "job_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!size) return 0;
  static const char *const names[] = {"jobs.json", "jobs.jsonl", "jobs.txt", "jobs"};
  const char *path = fuzz_file(names[data[0] % 4], data + 1, size - 1);
  struct job *jobs = NULL;
  int n = 0;
  struct job_overrides ov = {.default_width = 64, .default_height = 64};
  if (!job_file_load(path, data[0] & 4 ? &ov : NULL, &jobs, &n))
    for (int i = 0; i < n; i++) job_free(&jobs[i]);
  free(jobs);
  return 0;
}
