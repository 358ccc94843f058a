/* Status codes and the thread-local error message shared by every library function.
 *
 *   enum status st = safetensors_open(path, &st_file);
 *   if (st) fprintf(stderr, "error: %s\n", status_message());
 *
 * Library code never prints or exits: a failing function returns a non-zero status and
 * leaves a one-line message (with the file, tensor or call that failed) for the caller. */
#ifndef VKD_STATUS_H
#define VKD_STATUS_H

#define STATUS_LIST(X)                                                   \
  X(STATUS_OK, "ok")                                                     \
  X(STATUS_INVALID_ARGUMENT, "invalid argument")                         \
  X(STATUS_IO, "input/output error")                                     \
  X(STATUS_FORMAT, "malformed input")                                    \
  X(STATUS_NOT_FOUND, "not found")                                       \
  X(STATUS_UNSUPPORTED, "unsupported")                                   \
  X(STATUS_OUT_OF_MEMORY, "out of memory")                               \
  X(STATUS_NO_DEVICE, "no Vulkan device")                                \
  X(STATUS_VULKAN, "Vulkan error")                                       \
  X(STATUS_NUMERIC, "numerical error (NaN or infinity)")                 \
  X(STATUS_CANCELLED, "cancelled")

enum status {
#define X(name, text) name,
  STATUS_LIST(X)
#undef X
};

/* Sets the message (printf format) and returns st, so callers write `return status_set(...)`. */
enum status status_set(enum status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with more context ("loading 'x.safetensors': <old>"). */
enum status status_wrap(enum status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *status_message(void);
const char *status_name(enum status st);
void status_clear(void);

/* Always-on assertion for programmer errors (never wraps real work). */
#define VKD_ASSERT(cond)                                                      \
  do {                                                                        \
    if (!(cond)) vkd_assert_fail(#cond, __FILE__, __LINE__);                  \
  } while (0)
_Noreturn void vkd_assert_fail(const char *cond, const char *file, int line);

#endif
