/* A tiny test harness: CHECK, CHECK_CLOSE (atol + rtol*|ref|, NaN never passes), skips (exit 77,
 * except under CI, where missing data or a missing Vulkan device is a failure). */
#ifndef VKD_TEST_H
#define VKD_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"

#define SKIP_CODE 77

extern int test_failures;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
      test_failures++;                                                           \
    }                                                                            \
  } while (0)

#define CHECK_MSG(cond, ...)                                                     \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
      fprintf(stderr, __VA_ARGS__);                                              \
      fprintf(stderr, "\n");                                                     \
      test_failures++;                                                           \
    }                                                                            \
  } while (0)

/* A library call that must succeed. */
#define CHECK_OK(call)                                                                          \
  do {                                                                                          \
    enum status check_ok_st = (call);                                                           \
    if (check_ok_st) {                                                                          \
      fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, status_message());     \
      test_failures++;                                                                          \
    }                                                                                           \
  } while (0)

/* Compares n values; prints the max error and the worst elements; returns the max abs error. */
double check_close(const char *what, const float *got, const float *ref, size_t n, double atol, double rtol);
#define CHECK_CLOSE(what, got, ref, n, atol, rtol) check_close(what, got, ref, n, atol, rtol)

/* Folder of the reference data (../shared beside the source tree), or NULL with a message. */
const char *test_shared_dir(void);
/* A path under the shared folder (static buffer per call site is the caller's). */
void test_shared_path(char *buf, size_t n, const char *rel);
/* Reports a missing prerequisite: returns 77 (skip), or 1 under CI. */
int test_skip(const char *why);
/* A gpu with the validation layer on; NULL (and *rc set to 77 or 1) when there is none. */
struct gpu *test_gpu(int *rc);
/* Destroys the gpu; a validation message is a failure. */
void test_gpu_done(struct gpu *g);
int test_result(const char *name);

/* Runs a shell command (printf format), its stdout and stderr captured in out[n]; the exit status. */
int test_run(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Monotonic seconds. */
double test_now(void);
/* Writes text to dir/name (tests build their input files with it). */
void test_write_text(const char *dir, const char *name, const char *text);
/* A whole file (NUL-terminated, free() it) or NULL. */
char *test_read_file(const char *path, size_t *len);
/* A tensor of a safetensors file as f32 (malloc'd; NULL when absent); *n its element count. */
struct safetensors;
float *test_tensor(struct safetensors *st, const char *name, size_t *n);

/* Deterministic random values in [-1, 1), never all zero. */
void test_random(float *p, size_t n, unsigned seed);

#endif
