#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>

#include "fileio.h"
#include "safetensors.h"

int test_failures;

double check_close(const char *what, const float *got, const float *ref, size_t n, double atol, double rtol) {
  double max_abs = 0, max_rel = 0;
  size_t bad = 0, worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)got[i] - (double)ref[i]);
    double lim = atol + rtol * fabs((double)ref[i]);
    if (isnan(got[i]) || isnan(ref[i]) || isinf(got[i]) != isinf(ref[i])) d = INFINITY;
    if (d > max_abs) max_abs = d;
    if (ref[i] != 0 && d / fabs(ref[i]) > max_rel) max_rel = d / fabs(ref[i]);
    if (!(d <= lim)) {
      bad++;
      if (d - lim > worst_excess) worst_excess = d - lim, worst = i;
    }
  }
  printf("  %-40s n=%-9zu max abs err %.3g  (atol %.1g, rtol %.1g)%s\n", what, n, max_abs, atol, rtol,
         bad ? "  FAILED" : "");
  if (bad) {
    fprintf(stderr, "FAIL %s: %zu of %zu elements out of tolerance; worst [%zu] got %.9g expected %.9g\n", what,
            bad, n, worst, got[worst], ref[worst]);
    test_failures++;
  }
  return max_abs;
}

const char *test_shared_dir(void) {
  const char *env = getenv("VKD_SHARED_DIR");
  if (env && *env) return env;
#ifdef VKD_SHARED_DIR
  return VKD_SHARED_DIR;
#else
  return "../shared";
#endif
}

void test_shared_path(char *buf, size_t n, const char *rel) { snprintf(buf, n, "%s/%s", test_shared_dir(), rel); }

int test_skip(const char *why) {
  const char *ci = getenv("CI");
  if (ci && *ci && strcmp(ci, "0") != 0 && strcmp(ci, "false") != 0) {
    fprintf(stderr, "FAIL (CI is set, so this cannot be skipped): %s\n", why);
    return 1;
  }
  printf("SKIP: %s\n", why);
  return SKIP_CODE;
}

struct gpu *test_gpu(int *rc) {
  struct gpu *g = NULL;
  struct gpu_options o = {.device_index = -1, .validation = 1, .profile = 0};
  enum status st = gpu_create(&o, &g);
  if (st) {
    char why[1200];
    snprintf(why, sizeof why, "no usable Vulkan device with the validation layer: %s", status_message());
    *rc = test_skip(why);
    return NULL;
  }
  printf("device: %s\n", gpu_info(g)->name);
  return g;
}

void test_gpu_done(struct gpu *g) {
  if (!g) return;
  const char *last;
  int n = gpu_validation_count(g, &last);
  gpu_destroy(g);
  CHECK_MSG(n == 0, "%d validation message(s), last: %s", n, last ? last : "");
}

int test_result(const char *name) {
  if (test_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

void test_random(float *p, size_t n, unsigned seed) {
  unsigned long long s = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    p[i] = (float)((double)(s >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
    if (p[i] == 0) p[i] = 0.5f;
  }
}

char *test_read_file(const char *path, size_t *len) {
  char *text;
  size_t n;
  if (file_read(path, (size_t)1 << 30, &text, &n)) return NULL;
  if (len) *len = n;
  return text;
}

float *test_tensor(struct safetensors *st, const char *name, size_t *n) {
  const struct st_tensor *t = safetensors_find(st, name);
  if (!t) return NULL;
  float *v = malloc((size_t)t->numel * sizeof *v + 4);
  if (v) safetensors_read_f32(st, t, v);
  if (n) *n = (size_t)t->numel;
  return v;
}

int test_run(char *out, size_t n, const char *fmt, ...) {
  char cmd[4096], full[4300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "( %s ) 2>&1", cmd); /* every command of a list captured */
  FILE *p = popen(full, "r");
  size_t got = p ? fread(out, 1, n - 1, p) : 0;
  out[got] = 0;
  int st = p ? pclose(p) : -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void test_write_text(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  if (!f || fputs(text, f) < 0) {
    fprintf(stderr, "FAIL: cannot write %s\n", path);
    test_failures++;
  }
  if (f) fclose(f);
}

double test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
