#define _POSIX_C_SOURCE 200809L
#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum status file_read(const char *path, size_t max, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return status_set(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return status_set(STATUS_IO, "%s: not a regular file", path);
  }
  if ((size_t)sb.st_size > max) {
    fclose(f);
    return status_set(STATUS_FORMAT, "%s: %lld bytes is more than the %zu this file may have", path, (long long)sb.st_size, max);
  }
  char *buf = malloc((size_t)sb.st_size + 1);
  if (!buf) {
    fclose(f);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  size_t n = fread(buf, 1, (size_t)sb.st_size, f);
  fclose(f);
  if (n != (size_t)sb.st_size) {
    free(buf);
    return status_set(STATUS_IO, "%s: read failed", path);
  }
  buf[n] = 0;
  *out = buf;
  *len = n;
  return STATUS_OK;
}
