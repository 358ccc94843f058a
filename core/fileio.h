/* Files, defensively.
 *
 * Reading: file_open_regular opens without blocking (a FIFO or a device given as a model, prompt
 * file or image would block forever in open(2)) and accepts regular files only; file_read reads a
 * whole small file (vocabularies, configs, prompt files) with a size limit.
 *
 * Writing: an output is written to a temporary file beside it, created exclusively (O_EXCL,
 * O_NOFOLLOW: a symlink planted at the temporary name is never followed), then committed under
 * its name: with `overwrite` by rename(2), else by link(2), which fails when the name exists, so
 * a file another process wrote meanwhile is never replaced. Temporary names are
 * NAME.tmp-HOST-PID-N; the ones in progress are registered so a signal handler can remove them
 * (file_tmp_remove_all, async-signal-safe), and file_tmp_remove_stale removes those left in a
 * folder by processes of this host that are gone (a killed run).
 *
 *   struct file_out o;
 *   if (!file_out_begin(&o, "out/a.png")) {
 *     s = file_out_write(&o, bytes, n);
 *     s = s ? (file_out_abort(&o), s) : file_out_commit(&o, false);
 *   } */
#ifndef VKD_FILEIO_H
#define VKD_FILEIO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define FILE_PATH_MAX 4096

/* *fd: path opened read-only (close-on-exec, blocking again after the check); it must be a
 * regular file. *size may be NULL. Errors name the file. */
enum status file_open_regular(const char *path, int *fd, uint64_t *size);
/* *out: the file's bytes plus a NUL (free() it); errors name the file. */
enum status file_read(const char *path, size_t max, char **out, size_t *len);

struct file_out {
  int fd;
  int slot; /* in the registry of temporaries */
  char path[FILE_PATH_MAX], tmp[FILE_PATH_MAX];
};
/* Creates the temporary file of path (exclusively). */
enum status file_out_begin(struct file_out *o, const char *path);
enum status file_out_write(struct file_out *o, const void *data, size_t n);
/* Closes and moves the temporary under its name; without overwrite an existing file is an error
 * (STATUS_IO, "exists"). The temporary is removed on failure. */
enum status file_out_commit(struct file_out *o, bool overwrite);
void file_out_abort(struct file_out *o); /* removes the temporary */

/* The k-th temporary name of path for this process (file_out_begin tries k = 0, 1, ... while a
 * name is taken). */
void file_tmp_name(const char *path, unsigned k, char *buf, size_t n);
/* This host's part of temporary names (its name with '-', '/' and '.' made '_'). */
void file_tmp_host(char *buf, size_t n);
/* Removes every registered temporary (from a SIGINT/SIGTERM handler: only async-signal-safe calls). */
void file_tmp_remove_all(void);
/* Removes NAME.tmp-HOST-PID-N files in dir whose HOST is this host and whose PID is not running;
 * returns how many. */
int file_tmp_remove_stale(const char *dir);

#endif
