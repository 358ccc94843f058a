/* generate's work list without a GPU (cli/plan.c): --shard I/N and auto from each batch engine's
 * variables, bad values as one-line errors; the split for N = 1, 2, 3, 7 covers every image exactly
 * once with the same names and seeds as the one-process run; the run seed; complete-PNG checks. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "job_file.h"
#include "plan.h"
#include "png.h"
#include "test.h"

static char dir[256];

static void test_parse(void) {
  struct shard s;
  char why[512];
  CHECK(shard_parse("0/1", &s, why, sizeof why) && s.index == 0 && s.count == 1);
  CHECK(shard_parse("2/3", &s, why, sizeof why) && s.index == 2 && s.count == 3);
  CHECK(shard_parse("6/7", &s, why, sizeof why) && s.index == 6 && s.count == 7);
  const char *bad[] = {"3/2", "-1/4", "1/0", "garbage", "", "1/", "/3", "1/3x", " 1/3", "1/ 3", "0x1/3", "1/3/4",
                       "2/2", "99999999999999999999/3", "1.5/3"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    why[0] = 0;
    bool ok = shard_parse(bad[i], &s, why, sizeof why);
    CHECK_MSG(!ok && strstr(why, "--shard") && !strchr(why, '\n'), "'%s' accepted or no one-line reason: %s", bad[i], why);
    if (i < 4) printf("  --shard %-8s -> %s\n", bad[i], why);
  }
}

static void clear_env(void) {
  const char *vars[] = {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                        "JOB_COMPLETION_INDEX", "VKDIFFUSION_SHARDS"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

/* --shard auto with the given variables ("NAME=VALUE" ..., NULL-terminated): I/N, or -1 and the reason */
static struct shard env_shard(char *why, size_t n, ...) {
  clear_env();
  va_list ap;
  va_start(ap, n);
  for (const char *kv; (kv = va_arg(ap, const char *));) {
    char name[64];
    const char *eq = strchr(kv, '=');
    snprintf(name, sizeof name, "%.*s", (int)(eq - kv), kv);
    setenv(name, eq + 1, 1);
  }
  va_end(ap);
  struct shard s = {-1, -1};
  char source[128];
  why[0] = 0;
  if (!shard_from_env(&s, why, n, source, sizeof source)) s = (struct shard){-1, -1};
  clear_env();
  return s;
}

static void test_env(void) {
  char why[512];
  struct shard s = env_shard(why, sizeof why, "SLURM_ARRAY_TASK_ID=2", "SLURM_ARRAY_TASK_COUNT=5", NULL);
  CHECK(s.index == 2 && s.count == 5);
  s = env_shard(why, sizeof why, "SLURM_ARRAY_TASK_ID=4", "SLURM_ARRAY_TASK_MIN=1", "SLURM_ARRAY_TASK_MAX=8", NULL);
  CHECK_MSG(s.index == 3 && s.count == 8, "MIN/MAX: %d/%d %s", s.index, s.count, why);
  s = env_shard(why, sizeof why, "SLURM_ARRAY_TASK_ID=4", "SLURM_ARRAY_TASK_COUNT=4", "SLURM_ARRAY_TASK_MIN=1",
                "SLURM_ARRAY_TASK_MAX=4", NULL); /* --array=1-4 */
  CHECK(s.index == 3 && s.count == 4);
  s = env_shard(why, sizeof why, "JOB_COMPLETION_INDEX=0", "VKDIFFUSION_SHARDS=3", NULL);
  CHECK(s.index == 0 && s.count == 3);
  /* Slurm wins over Kubernetes when both are set (a Slurm job in a pod) */
  s = env_shard(why, sizeof why, "JOB_COMPLETION_INDEX=1", "VKDIFFUSION_SHARDS=3", "SLURM_ARRAY_TASK_ID=0",
                "SLURM_ARRAY_TASK_COUNT=2", NULL);
  CHECK(s.index == 0 && s.count == 2);
  struct {
    const char *a, *b, *c, *needle;
  } bad[] = {
      {NULL, NULL, NULL, "SLURM_ARRAY_TASK_ID"},
      {"SLURM_ARRAY_TASK_ID=3", NULL, NULL, "SLURM_ARRAY_TASK_COUNT"},
      {"SLURM_ARRAY_TASK_ID=x", "SLURM_ARRAY_TASK_COUNT=4", NULL, "SLURM_ARRAY_TASK_ID='x'"},
      {"SLURM_ARRAY_TASK_ID=12", "SLURM_ARRAY_TASK_COUNT=4", "SLURM_ARRAY_TASK_MIN=0", "contiguous"}, /* --array=0-12:4 */
      {"SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_COUNT=0", NULL, "SLURM_ARRAY_TASK_COUNT='0'"},
      {"JOB_COMPLETION_INDEX=2", NULL, NULL, "VKDIFFUSION_SHARDS"},
      {"JOB_COMPLETION_INDEX=3", "VKDIFFUSION_SHARDS=3", NULL, "JOB_COMPLETION_INDEX='3'"},
      {"JOB_COMPLETION_INDEX=-1", "VKDIFFUSION_SHARDS=3", NULL, "JOB_COMPLETION_INDEX"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    s = env_shard(why, sizeof why, bad[i].a, bad[i].b, bad[i].c, NULL);
    CHECK_MSG(s.count == -1 && strstr(why, bad[i].needle) && !strchr(why, '\n'), "case %zu: %d/%d '%s' lacks %s", i,
              s.index, s.count, why, bad[i].needle);
    if (i == 0 || i == 3) printf("  %s\n", why);
  }
}

/* The work list of a prompt file split N ways: each image once, the same path and seed as N = 1 */
static void test_split(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/run.json", dir);
  test_write_text(dir, "run.json",
                  "[{\"prompt\": \"a\", \"batch_count\": 5},\n"
                  " {\"prompt\": \"b\", \"seed\": 7, \"batch_count\": 3},\n"
                  " {\"prompt\": \"c\", \"steps\": 0},\n" /* invalid: not in the work list */
                  " {\"prompt\": \"d\"},\n"
                  " {\"prompt\": \"e\", \"batch_count\": 4, \"output\": \"{prompt}-{index}.png\"},\n"
                  " {\"prompt\": \"f\", \"seed\": 4294967295, \"batch_count\": 2}]\n");
  struct job *jobs = NULL;
  int n_jobs = 0;
  CHECK_OK(job_file_load(path, NULL, &jobs, &n_jobs));
  CHECK(n_jobs == 6 && jobs[2].error[0]);
  const char *files[] = {path};
  uint64_t run_seed = plan_run_seed(files, 1, NULL);
  CHECK(run_seed == plan_run_seed(files, 1, NULL) && run_seed != plan_run_seed(files, 1, "x"));
  enum { TOTAL = 5 + 3 + 1 + 4 + 2 };
  char *names[TOTAL] = {0};
  uint32_t seeds[TOTAL];
  const int counts[] = {1, 2, 3, 7};
  for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
    int owner[TOTAL];
    for (int k = 0; k < TOTAL; k++) owner[k] = -1;
    for (int i = 0; i < counts[c]; i++) {
      struct job_plan *plans = calloc((size_t)n_jobs, sizeof *plans);
      struct plan_options po = {dir, {i, counts[c]}, run_seed, true};
      CHECK(plan_outputs(jobs, n_jobs, plans, &po) == 0);
      int k = 0, mine = 0;
      for (int j = 0; j < n_jobs; j++) {
        for (int b = 0; !jobs[j].error[0] && b < jobs[j].batch_count; b++, k++) {
          const struct planned *p = &plans[j].img[b];
          CHECK(k < TOTAL && p->index == k);
          if (k >= TOTAL) break;
          if (p->mine) {
            CHECK_MSG(owner[k] == -1, "N=%d: image %d rendered by workers %d and %d", counts[c], k, owner[k], i);
            owner[k] = i;
            mine++;
          }
          if (!names[k]) names[k] = strdup(p->path), seeds[k] = p->seed;
          CHECK_MSG(!strcmp(names[k], p->path) && seeds[k] == p->seed, "N=%d worker %d: image %d is %s seed %u, not %s seed %u",
                    counts[c], i, k, p->path, p->seed, names[k], seeds[k]);
        }
        if (!jobs[j].error[0]) CHECK(plans[j].first_index == k - jobs[j].batch_count);
      }
      CHECK(k == TOTAL);
      CHECK_MSG(mine == TOTAL / counts[c] + (i < TOTAL % counts[c]), "N=%d worker %d: %d images", counts[c], i, mine);
      plan_free(plans, jobs, n_jobs);
    }
    for (int k = 0; k < TOTAL; k++) CHECK_MSG(owner[k] == k % counts[c], "N=%d: image %d by %d", counts[c], k, owner[k]);
    printf("  N=%d: %d images, each once\n", counts[c], TOTAL);
  }
  /* seeds: a job's images count up from its seed; random ones from the run seed and the first index */
  CHECK(seeds[5] == 7 && seeds[7] == 9 && seeds[13] == 4294967295u && seeds[14] == 0);
  CHECK(seeds[0] == plan_random_seed(run_seed, 0) && seeds[1] == seeds[0] + 1 && seeds[8] == plan_random_seed(run_seed, 8));
  CHECK(seeds[0] != plan_random_seed(run_seed + 1, 0) && seeds[8] != seeds[0]);
  CHECK(strstr(names[9], "/e-00009.png") && strstr(names[12], "/e-00012.png"));
  for (int k = 0; k < TOTAL; k++) free(names[k]);
  for (int i = 0; i < n_jobs; i++) job_free(&jobs[i]);
  free(jobs);
}

/* png_check_complete: a written PNG passes with its parameters; cut, damaged or extended fails */
static void test_png_complete(void) {
  unsigned char rgb[8 * 6 * 3];
  for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (unsigned char)(i * 37 + 11);
  char path[512], bad[512];
  snprintf(path, sizeof path, "%s/ok.png", dir);
  snprintf(bad, sizeof bad, "%s/bad.png", dir);
  CHECK_OK(png_write(path, rgb, 8, 6, "a cat\nSteps: 4", false));
  char *params = NULL;
  CHECK_OK(png_check_complete(path, &params));
  CHECK(params && !strcmp(params, "a cat\nSteps: 4"));
  free(params);
  size_t len = 0;
  char *png = test_read_file(path, &len);
  CHECK(png && len > 60);
  struct {
    const char *what, *needle;
    size_t keep;
    int flip; /* byte to change, -1 none */
    bool extra;
  } cases[] = {{"cut in IDAT", "truncated", len - 20, -1, false}, {"cut before IEND", "no IEND", len - 12, -1, false},
               {"damaged", "bad CRC", len, (int)len - 30, false},   {"bytes after IEND", "after the IEND", len, -1, true},
               {"not a PNG", "not a PNG", len, 1, false}};
  for (size_t i = 0; png && i < sizeof cases / sizeof *cases; i++) {
    FILE *f = fopen(bad, "wb");
    char *copy = malloc(len);
    memcpy(copy, png, len);
    if (cases[i].flip >= 0) copy[cases[i].flip] ^= 0x20;
    fwrite(copy, 1, cases[i].keep, f);
    if (cases[i].extra) fputs("junk", f);
    fclose(f);
    free(copy);
    params = NULL;
    enum status s = png_check_complete(bad, &params);
    CHECK_MSG(s && !params && strstr(status_message(), cases[i].needle) && strstr(status_message(), "bad.png"),
              "%s: %d %s", cases[i].what, (int)s, status_message());
    printf("  %-16s -> %s\n", cases[i].what, status_message());
    status_clear();
  }
  free(png);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/vkd_test_shard_%ld", (long)getpid());
  mkdir(dir, 0755);
  test_parse();
  test_env();
  test_split();
  test_png_complete();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return test_result("test_shard");
}
