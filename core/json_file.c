#include "json_file.h"

#include <stdlib.h>

#include "fileio.h"

enum status json_file_read_object(const char *path, cJSON **out) {
  char *text;
  size_t len;
  *out = NULL;
  enum status s = file_read(path, 1 << 20, &text, &len);
  if (s) return s;
  *out = cJSON_ParseWithLength(text, len);
  free(text);
  if (!*out || !cJSON_IsObject(*out)) {
    cJSON_Delete(*out);
    *out = NULL;
    return status_set(STATUS_FORMAT, "%s: not a JSON object", path);
  }
  return STATUS_OK;
}
