/* Job files (cli/job_file.c) without a GPU: every malformed case names the file, the job and the
 * field; plain-text files; command-line overrides beat file values. */
#define _POSIX_C_SOURCE 200809L
#include <sys/stat.h>
#include <unistd.h>

#include "job_file.h"
#include "test.h"

static char dir[256];

static void write_text(const char *name, const char *text) { test_write_text(dir, name, text); }

/* job_file_load on a text: the first job's error must contain needle */
static void bad_file(const char *label, const char *name, const char *text, const char *needle) {
  write_text(name, text);
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  struct job *jobs = NULL;
  int n = 0;
  enum status s = job_file_load(path, NULL, &jobs, &n);
  int bad = 0; /* the first invalid job */
  while (!s && bad + 1 < n && !jobs[bad].error[0]) bad++;
  const char *msg = s ? status_message() : n ? jobs[bad].error : "";
  CHECK_MSG(strstr(msg, needle) != NULL, "%s: '%s' lacks '%s'", label, msg, needle);
  printf("  %-22s -> %s%s%s\n", label, s ? "" : jobs[bad].where, s ? "" : ": ", msg);
  for (int i = 0; i < n; i++) job_free(&jobs[i]);
  free(jobs);
}

static void test_prompt_files(void) {
  bad_file("unknown field", "a.json", "{\"prompt\": \"x\", \"stepz\": 4}", "unknown field \"stepz\"");
  bad_file("steps 0", "b.json", "{\"prompt\": \"x\", \"steps\": 0}", "\"steps\" 0");
  bad_file("width 7", "c.json", "{\"prompt\": \"x\", \"width\": 7}", "\"width\" 7");
  bad_file("cfg NaN", "d.json", "{\"prompt\": \"x\", \"cfg_scale\": \"NaN\"}", "\"cfg_scale\" must be a number");
  bad_file("cfg huge", "d2.json", "{\"prompt\": \"x\", \"cfg_scale\": 1e309}", "cfg_scale");
  bad_file("wrong type", "e.json", "{\"prompt\": 5}", "\"prompt\" must be a string");
  bad_file("no prompt", "f.json", "{\"steps\": 5}", "missing field \"prompt\"");
  bad_file("bad sampler", "g.json", "{\"prompt\": \"x\", \"sampler\": \"plms\"}", "sampler");
  bad_file("seed range", "h.json", "{\"prompt\": \"x\", \"seed\": 99999999999}", "seed");
  bad_file("float steps", "i.json", "{\"prompt\": \"x\", \"steps\": 2.5}", "integer");
  bad_file("not json", "j.json", "{\"prompt\": ", "not valid JSON");
  bad_file("empty array", "k.json", "[]", "no jobs");
  bad_file("jsonl line 2", "l.jsonl", "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"height\": 12}\n", "\"height\" 12");
  /* a .txt file: one prompt a line, comments and blank lines skipped */
  write_text("m.txt", "# comment\n\na red circle\n  a blue square  \n");
  char path[512];
  snprintf(path, sizeof path, "%s/m.txt", dir);
  struct job *jobs = NULL;
  int n = 0;
  CHECK_OK(job_file_load(path, NULL, &jobs, &n));
  CHECK(n == 2 && !strcmp(jobs[0].prompt, "a red circle") && !strcmp(jobs[1].prompt, "a blue square"));
  CHECK(n == 2 && strstr(jobs[1].where, "line 4"));
  for (int i = 0; i < n; i++) job_free(&jobs[i]);
  free(jobs);
  /* overrides beat file values */
  write_text("o.json", "{\"prompt\": \"x\", \"steps\": 3, \"cfg_scale\": 2}");
  snprintf(path, sizeof path, "%s/o.json", dir);
  struct job_overrides ov = {.has_steps = true};
  ov.values.steps = 9;
  CHECK_OK(job_file_load(path, &ov, &jobs, &n));
  CHECK(n == 1 && jobs[0].steps == 9 && jobs[0].cfg_scale == 2 && !jobs[0].error[0]);
  job_free(&jobs[0]);
  free(jobs);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/vkd_test_job_file_%ld", (long)getpid());
  mkdir(dir, 0755);
  test_prompt_files();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return test_result("test_job_file");
}
