/* Shared by the libFuzzer harnesses: the input as a file (every parser here reads files, as users
 * give them), in a per-process temporary folder. */
#ifndef VKD_FUZZ_H
#define VKD_FUZZ_H
#include <stddef.h>
#include <stdint.h>

/* Writes data to <tmpdir>/name and returns the path (a static buffer per call site is the caller's). */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);

#endif
