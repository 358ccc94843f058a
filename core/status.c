#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char message[1024];

enum status status_set(enum status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  return st;
}

enum status status_wrap(enum status st, const char *fmt, ...) {
  char old[sizeof message];
  memcpy(old, message, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof message - 2) {
    size_t at = (size_t)n;
    message[at++] = ':';
    message[at++] = ' ';
    size_t room = sizeof message - at - 1, len = strlen(old);
    memcpy(message + at, old, len < room ? len : room);
    message[at + (len < room ? len : room)] = 0;
  }
  return st;
}

const char *status_message(void) { return message[0] ? message : "no error"; }

const char *status_name(enum status st) {
  switch (st) {
#define X(name, text) \
  case name:          \
    return text;
    STATUS_LIST(X)
#undef X
  }
  return "unknown status";
}

void status_clear(void) { message[0] = 0; }

void vkd_assert_fail(const char *cond, const char *file, int line) {
  fprintf(stderr, "vkdiffusion: internal error: assertion '%s' failed at %s:%d\n", cond, file, line);
  abort();
}
