/* Whole-file reads with a size limit, for the small text files the project parses (vocabularies,
 * configs, prompt files). */
#ifndef VKD_FILEIO_H
#define VKD_FILEIO_H
#include <stddef.h>

#include "status.h"

/* *out: the file's bytes plus a NUL (free() it); errors name the file. */
enum status file_read(const char *path, size_t max, char **out, size_t *len);

#endif
