#define _GNU_SOURCE /* O_NOFOLLOW, O_CLOEXEC, gethostname */
#include "fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum status file_open_regular(const char *path, int *fd, uint64_t *size) {
  *fd = -1;
  /* O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting forever */
  int f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (f < 0) return status_set(errno == ENOENT ? STATUS_NOT_FOUND : STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(f, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(f);
    return status_set(STATUS_IO, "%s: not a regular file%s", path,
                      S_ISFIFO(sb.st_mode) ? " (a FIFO)" : S_ISDIR(sb.st_mode) ? " (a folder)" : "");
  }
  int flags = fcntl(f, F_GETFL);
  if (flags < 0 || fcntl(f, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    close(f);
    return status_set(STATUS_IO, "%s: fcntl failed: %s", path, strerror(errno));
  }
  if (size) *size = (uint64_t)sb.st_size;
  *fd = f;
  return STATUS_OK;
}

enum status file_read(const char *path, size_t max, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  int fd;
  uint64_t size;
  enum status s = file_open_regular(path, &fd, &size);
  if (s) return s;
  if (size > max) {
    close(fd);
    return status_set(STATUS_FORMAT, "%s: %llu bytes is more than the %zu this file may have", path,
                      (unsigned long long)size, max);
  }
  char *buf = malloc((size_t)size + 1);
  if (!buf) {
    close(fd);
    return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  size_t n = 0;
  while (n < size) {
    ssize_t r = read(fd, buf + n, (size_t)size - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(fd);
  if (n != size) {
    free(buf);
    return status_set(STATUS_IO, "%s: read failed (%zu of %llu bytes)", path, n, (unsigned long long)size);
  }
  buf[n] = 0;
  *out = buf;
  *len = n;
  return STATUS_OK;
}

/* --- temporaries: a fixed registry a signal handler can walk --- */

#define TMP_SLOTS 32
static char tmp_paths[TMP_SLOTS][FILE_PATH_MAX];
static volatile sig_atomic_t tmp_used[TMP_SLOTS];
static pthread_mutex_t tmp_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned tmp_counter;

static int tmp_register(const char *path) {
  pthread_mutex_lock(&tmp_lock);
  int slot = -1;
  for (int i = 0; i < TMP_SLOTS && slot < 0; i++)
    if (!tmp_used[i]) {
      snprintf(tmp_paths[i], FILE_PATH_MAX, "%s", path);
      tmp_used[i] = 1; /* after the path is complete */
      slot = i;
    }
  pthread_mutex_unlock(&tmp_lock);
  return slot;
}

static void tmp_release(int slot) {
  if (slot >= 0) tmp_used[slot] = 0;
}

void file_tmp_remove_all(void) {
  for (int i = 0; i < TMP_SLOTS; i++)
    if (tmp_used[i]) unlink(tmp_paths[i]);
}

void file_tmp_host(char *buf, size_t n) {
  if (gethostname(buf, n) != 0) snprintf(buf, n, "host");
  buf[n - 1] = 0;
  for (char *p = buf; *p; p++) /* a host name never holds '-', '/' or '.' in our temporary names */
    if (*p == '-' || *p == '/' || *p == '.') *p = '_';
}

void file_tmp_name(const char *path, unsigned k, char *buf, size_t n) {
  char host[64];
  file_tmp_host(host, sizeof host);
  snprintf(buf, n, "%s.tmp-%s-%ld-%u", path, host, (long)getpid(), k);
}

enum status file_out_begin(struct file_out *o, const char *path) {
  o->fd = -1;
  o->slot = -1;
  o->tmp[0] = 0;
  if (strlen(path) + 80 >= FILE_PATH_MAX) return status_set(STATUS_INVALID_ARGUMENT, "%.200s...: path too long", path);
  snprintf(o->path, sizeof o->path, "%s", path);
  for (int attempt = 0; attempt < 16; attempt++) {
    pthread_mutex_lock(&tmp_lock);
    unsigned k = tmp_counter++;
    pthread_mutex_unlock(&tmp_lock);
    file_tmp_name(path, k, o->tmp, sizeof o->tmp);
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (o->fd >= 0) break;
    if (errno != EEXIST) break; /* a name in use (or planted): try the next one */
  }
  if (o->fd < 0) {
    enum status s = status_set(STATUS_IO, "%s: cannot create its temporary file %s: %s", path, o->tmp, strerror(errno));
    o->tmp[0] = 0;
    return s;
  }
  o->slot = tmp_register(o->tmp);
  return STATUS_OK;
}

enum status file_out_write(struct file_out *o, const void *data, size_t n) {
  const char *p = data;
  while (n) {
    ssize_t w = write(o->fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return status_set(STATUS_IO, "%s: write failed: %s", o->path, w < 0 ? strerror(errno) : "no space");
    p += w;
    n -= (size_t)w;
  }
  return STATUS_OK;
}

void file_out_abort(struct file_out *o) {
  if (o->fd >= 0) close(o->fd);
  o->fd = -1;
  if (o->tmp[0]) unlink(o->tmp);
  tmp_release(o->slot);
  o->slot = -1;
  o->tmp[0] = 0;
}

enum status file_out_commit(struct file_out *o, bool overwrite) {
  enum status s = STATUS_OK;
  if (close(o->fd) != 0) s = status_set(STATUS_IO, "%s: write failed: %s", o->path, strerror(errno));
  o->fd = -1;
  if (!s && overwrite && rename(o->tmp, o->path) != 0)
    s = status_set(STATUS_IO, "%s: cannot rename the temporary file into place: %s", o->path, strerror(errno));
  if (!s && !overwrite) {
    /* link fails when the name exists: nothing written meanwhile is replaced */
    if (link(o->tmp, o->path) == 0) {
      unlink(o->tmp);
    } else if (errno == EEXIST) {
      s = status_set(STATUS_IO, "%s: exists (not replaced)", o->path);
    } else if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP || errno == EXDEV || errno == EMLINK) {
      /* a file system without hard links: check, then rename (a narrow window, not an atomic one) */
      struct stat sb;
      if (lstat(o->path, &sb) == 0) s = status_set(STATUS_IO, "%s: exists (not replaced)", o->path);
      else if (rename(o->tmp, o->path) != 0)
        s = status_set(STATUS_IO, "%s: cannot rename the temporary file into place: %s", o->path, strerror(errno));
    } else {
      s = status_set(STATUS_IO, "%s: cannot move the temporary file into place: %s", o->path, strerror(errno));
    }
  }
  if (s) unlink(o->tmp);
  tmp_release(o->slot);
  o->slot = -1;
  o->tmp[0] = 0;
  return s;
}

int file_tmp_remove_stale(const char *dir) {
  char host[64], mark[96];
  file_tmp_host(host, sizeof host);
  snprintf(mark, sizeof mark, ".tmp-%s-", host);
  DIR *d = opendir(dir);
  if (!d) return 0;
  int removed = 0;
  for (struct dirent *e; (e = readdir(d));) {
    const char *m = strstr(e->d_name, mark);
    if (!m) continue;
    for (const char *n = strstr(m + 1, mark); n; n = strstr(n + 1, mark)) m = n; /* the last one */
    char *end;
    long pid = strtol(m + strlen(mark), &end, 10);
    if (pid <= 0 || *end != '-' || pid == (long)getpid()) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* still running (or not ours to ask) */
    char path[FILE_PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path) continue;
    struct stat sb;
    if (lstat(path, &sb) == 0 && S_ISREG(sb.st_mode) && unlink(path) == 0) removed++;
  }
  closedir(d);
  return removed;
}
