#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
  static char dir[64], path[256];
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "/tmp/vkd_fuzz_%ld", (long)getpid());
    mkdir(dir, 0700);
  }
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  return path;
}
