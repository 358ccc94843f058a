#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void cleanup(void) {
  char cmd[100];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", dir);
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
  static char path[300];
  if (!dir[0]) {
    /* $TMPDIR (a tmpfs such as /dev/shm keeps a long campaign CPU-bound: each input is a file write) */
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/vkd_fuzz_%ld", tmp && *tmp && strlen(tmp) < 200 ? tmp : "/tmp", (long)getpid());
    mkdir(dir, 0700);
    atexit(cleanup);
  }
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  return path;
}
