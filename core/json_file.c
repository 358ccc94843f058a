#include "json_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

void json_position(const char *text, size_t at, char *buf, size_t n) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < at; i++) {
    if (text[i] == '\n') line++, col = 1;
    else col++;
  }
  snprintf(buf, n, "line %zu, column %zu", line, col);
}

/* the deepest nesting of [ and { outside strings, in one linear pass */
static int depth_of(const char *t, size_t len, size_t *where) {
  int d = 0, max = 0;
  bool str = false;
  for (size_t i = 0; i < len; i++) {
    char c = t[i];
    if (str) {
      if (c == '\\') i++;
      else if (c == '"') str = false;
    } else if (c == '"') {
      str = true;
    } else if (c == '[' || c == '{') {
      if (++d > max) max = d, *where = i;
      if (max > JSON_MAX_DEPTH) return max;
    } else if (c == ']' || c == '}') {
      d--;
    }
  }
  return max;
}

enum status json_parse_prefix(const char *text, size_t len, const char *what, cJSON **out, size_t *end) {
  *out = NULL;
  char pos[64];
  const char *nul = memchr(text, 0, len);
  if (nul) {
    json_position(text, (size_t)(nul - text), pos, sizeof pos);
    return status_set(STATUS_FORMAT, "%s: a NUL byte at %s: not JSON text", what, pos);
  }
  size_t deep = 0;
  if (depth_of(text, len, &deep) > JSON_MAX_DEPTH) {
    json_position(text, deep, pos, sizeof pos);
    return status_set(STATUS_FORMAT, "%s: nested too deeply (more than %d levels at %s)", what, JSON_MAX_DEPTH, pos);
  }
  const char *stop = NULL;
  cJSON *j = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
  if (!j) {
    size_t at = stop && stop >= text && stop <= text + len ? (size_t)(stop - text) : 0;
    json_position(text, at, pos, sizeof pos);
    return status_set(STATUS_FORMAT, "%s: not valid JSON (at %s)", what, pos);
  }
  *out = j;
  *end = stop ? (size_t)(stop - text) : len;
  return STATUS_OK;
}

enum status json_parse(const char *text, size_t len, const char *what, cJSON **out) {
  size_t end;
  enum status s = json_parse_prefix(text, len, what, out, &end);
  if (s) return s;
  while (end < len && strchr(" \t\r\n", text[end])) end++;
  if (end < len) {
    char pos[64];
    json_position(text, end, pos, sizeof pos);
    cJSON_Delete(*out);
    *out = NULL;
    return status_set(STATUS_FORMAT, "%s: unexpected data after the JSON value at %s", what, pos);
  }
  return STATUS_OK;
}

enum status json_file_read_object(const char *path, cJSON **out) {
  char *text;
  size_t len;
  *out = NULL;
  enum status s = file_read(path, 1 << 20, &text, &len);
  if (s) return s;
  s = json_parse(text, len, path, out);
  free(text);
  if (!s && !cJSON_IsObject(*out)) {
    cJSON_Delete(*out);
    *out = NULL;
    s = status_set(STATUS_FORMAT, "%s: not a JSON object", path);
  }
  return s;
}
