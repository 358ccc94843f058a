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
  bad_file("strength 2", "s1.json", "{\"prompt\": \"x\", \"strength\": 2}", "\"strength\" 2 must be a number from 0 to 1");
  bad_file("strength text", "s2.json", "{\"prompt\": \"x\", \"strength\": \"0.5\"}", "\"strength\" must be a number");
  bad_file("init_image number", "s3.json", "{\"prompt\": \"x\", \"init_image\": 5}", "\"init_image\" must be a string");
  bad_file("init_image empty", "s4.json", "{\"prompt\": \"x\", \"init_image\": \"\"}", "\"init_image\" must name");
  { /* init_image: relative to the prompt file's folder; absolute kept; --init-image overrides as given */
    write_text("i.json", "[{\"prompt\": \"x\", \"init_image\": \"pics/a.png\", \"strength\": 0.25},"
                         " {\"prompt\": \"y\", \"init_image\": \"/abs/b.png\"}, {\"prompt\": \"z\"}]");
    char path[512], want[600];
    snprintf(path, sizeof path, "%s/i.json", dir);
    snprintf(want, sizeof want, "%s/pics/a.png", dir);
    struct job *jobs = NULL;
    int n = 0;
    CHECK_OK(job_file_load(path, NULL, &jobs, &n));
    CHECK(n == 3 && jobs[0].init_image && !strcmp(jobs[0].init_image, want) && jobs[0].strength == 0.25);
    CHECK(n == 3 && jobs[1].init_image && !strcmp(jobs[1].init_image, "/abs/b.png") && jobs[1].strength == 0.75);
    CHECK(n == 3 && !jobs[2].init_image);
    for (int i = 0; i < n; i++) job_free(&jobs[i]);
    free(jobs);
    struct job_overrides ov = {.init_image = "c.png", .has_strength = true, .values.strength = 0.5};
    CHECK_OK(job_file_load(path, &ov, &jobs, &n));
    CHECK(n == 3 && !strcmp(jobs[0].init_image, "c.png") && !strcmp(jobs[2].init_image, "c.png") && jobs[1].strength == 0.5);
    for (int i = 0; i < n; i++) job_free(&jobs[i]);
    free(jobs);
  }
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

static void write_bytes(const char *name, const char *bytes, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (f) fwrite(bytes, 1, n, f), fclose(f);
}

/* loads name; expects either the prompts (NULL-terminated list) or an error containing needle */
static void expect(const char *label, const char *name, const char *bytes, size_t n, const char *const *prompts,
                   const char *needle) {
  write_bytes(name, bytes, n);
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  struct job *jobs = NULL;
  int count = 0;
  double t0 = test_now();
  enum status st = job_file_load(path, NULL, &jobs, &count);
  double dt = test_now() - t0;
  CHECK_MSG(dt < 1.0, "%s: %.1f s to read %zu bytes", label, dt, n);
  if (needle) {
    CHECK_MSG(st && strstr(status_message(), needle) && strstr(status_message(), path), "%s: '%s' lacks '%s'", label,
              st ? status_message() : "(loaded)", needle);
  } else {
    CHECK_MSG(!st, "%s: %s", label, status_message());
    int want = 0;
    while (prompts[want]) want++;
    CHECK_MSG(count == want, "%s: %d jobs, expected %d", label, count, want);
    for (int i = 0; i < count && i < want; i++)
      CHECK_MSG(jobs[i].prompt && !strcmp(jobs[i].prompt, prompts[i]) && !jobs[i].error[0], "%s: job %d: '%s' (%s)",
                label, i, jobs[i].prompt ? jobs[i].prompt : "", jobs[i].error);
  }
  printf("  %-34s -> %s\n", label, st ? status_message() : "ok");
  for (int i = 0; i < count; i++) job_free(&jobs[i]);
  free(jobs);
}

#define B(lit) lit, sizeof lit - 1

/* Every text-file ending and encoding, as a class: each loads (or fails with a clear message) at once */
static void test_endings_and_encodings(void) {
  const char *const one[] = {"a red circle", NULL}, *const two[] = {"a red circle", "a blue square", NULL};
  expect("no final newline", "e1.txt", B("a red circle"), one, NULL);
  expect("trailing blank, no newline", "e2.txt", B("a red circle "), one, NULL);
  expect("trailing tab, no newline", "e3.txt", B("a red circle\t"), one, NULL);
  expect("CR at the end", "e4.txt", B("a red circle\r"), one, NULL);
  expect("CRLF", "e5.txt", B("a red circle\r\na blue square\r\n"), two, NULL);
  expect("CRLF without a final LF", "e6.txt", B("a red circle\r\na blue square\r"), two, NULL);
  expect("blanks only on the last line", "e7.txt", B("a red circle\n \t \r"), one, NULL);
  expect("UTF-8 BOM, text", "e8.txt", B("\xef\xbb\xbf" "a red circle\n"), one, NULL);
  expect("UTF-8 BOM, JSON", "e9.json", B("\xef\xbb\xbf{\"prompt\": \"a red circle\", \"steps\": 3}"), one, NULL);
  expect("UTF-8 BOM, JSON Lines", "e10.jsonl", B("\xef\xbb\xbf{\"prompt\": \"a red circle\"}\r\n{\"prompt\": \"a blue square\"}"),
         two, NULL);
  expect("NUL byte", "e11.txt", B("a red circle\nabc\0def\n"), NULL, "a NUL byte on line 2");
  expect("UTF-16 LE with BOM", "e12.txt", B("\xff\xfe" "a\0 \0r\0e\0d\0"), NULL, "UTF-16 text: save it as UTF-8");
  expect("UTF-16 BE with BOM", "e13.json", B("\xfe\xff\0{\0\"\0p"), NULL, "UTF-16");
  expect("UTF-16 LE without BOM", "e14.json", B("{\0\"\0p\0r\0"), NULL, "UTF-16");
  expect("invalid UTF-8", "e15.txt", B("a red circle\na \xff blue square\n"), NULL, "invalid UTF-8 on line 2");
  expect("overlong UTF-8", "e16.txt", B("a \xc0\xaf\n"), NULL, "invalid UTF-8 on line 1");
  expect("JSON array then garbage", "e17.json", B("[{\"prompt\": \"a\"}]\n garbage"), NULL,
         "unexpected data after the JSON array at line 2, column 2");
  char deep[300];
  snprintf(deep, sizeof deep, "%.*s%.*s", 100, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
           100, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
  expect("valid JSON, nested 100 deep", "e18.json", deep, strlen(deep), NULL, "nested too deeply");
  expect("a .json file of plain text", "e19.json", B("a red circle\n"), NULL, "must hold a JSON object");
  /* JSON Lines: a bad line is that job's error, the others load */
  write_bytes("e20.jsonl", B("{\"prompt\": \"a\"}\n{\"prompt\": \n"));
  char path[512];
  snprintf(path, sizeof path, "%s/e20.jsonl", dir);
  struct job *jobs = NULL;
  int n = 0;
  CHECK_OK(job_file_load(path, NULL, &jobs, &n));
  CHECK(n == 2 && !jobs[0].error[0] && strstr(jobs[1].error, "not valid JSON") && strstr(jobs[1].where, "line 2"));
  for (int i = 0; i < n; i++) job_free(&jobs[i]);
  free(jobs);
  /* batch_count 0 or negative: the job is invalid (counted as a failure by generate) */
  bad_file("batch_count 0", "e21.json", "{\"prompt\": \"x\", \"batch_count\": 0}", "\"batch_count\" 0 is outside 1..1000");
  bad_file("batch_count -3", "e22.json", "{\"prompt\": \"x\", \"batch_count\": -3}", "\"batch_count\" -3");
  bad_file("prompt not UTF-8", "e23.json", "{\"prompt\": \"a \\udc80 b\"}", "not valid");
}

/* every shipped prompt file loads with no invalid job; SDXL's size fields and the trailing schedule */
static void test_shipped_and_sdxl_fields(void) {
  const char *files[] = {"demo.json", "landscapes.json", "portrait.json", "batch.jsonl", "simple.txt", "turbo.json"};
  for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/prompts/%s", VKD_SOURCE_DIR, files[k]);
    struct job *jobs = NULL;
    int n = 0;
    CHECK_MSG(job_file_load(path, NULL, &jobs, &n) == STATUS_OK && n > 0, "%s: %s", path, status_message());
    for (int i = 0; i < n; i++) {
      CHECK_MSG(!jobs[i].error[0], "%s: %s", jobs[i].where, jobs[i].error);
      job_free(&jobs[i]);
    }
    free(jobs);
  }
  test_write_text(dir, "xl.json", "[{\"prompt\": \"a\", \"original_size\": [896, 1152], \"crop\": [16, 32], "
                                  "\"target_size\": [1024, 768], \"schedule\": \"trailing\"},"
                                  " {\"prompt\": \"b\", \"crop\": [16]},"
                                  " {\"prompt\": \"c\", \"original_size\": [-1, 5]},"
                                  " {\"prompt\": \"d\", \"width\": 512}]");
  char path[600];
  snprintf(path, sizeof path, "%s/xl.json", dir);
  struct job *jobs = NULL;
  int n = 0;
  CHECK_OK(job_file_load(path, NULL, &jobs, &n));
  CHECK(n == 4);
  if (n == 4) {
    CHECK(!jobs[0].error[0] && jobs[0].original_size[0] == 896 && jobs[0].original_size[1] == 1152 && jobs[0].crop[0] == 16 &&
          jobs[0].crop[1] == 32 && jobs[0].target_size[0] == 1024 && jobs[0].target_size[1] == 768 &&
          jobs[0].schedule == SCHEDULE_TRAILING && jobs[0].width == 0 && jobs[0].clip_skip == 0);
    CHECK_MSG(strstr(jobs[1].error, "\"crop\" must be an array of two integers"), "%s", jobs[1].error);
    CHECK_MSG(strstr(jobs[2].error, "\"original_size\" = -1 is outside"), "%s", jobs[2].error);
    CHECK_MSG(!jobs[3].error[0] && jobs[3].width == 512 && jobs[3].height == 0, "%s", jobs[3].error); /* height: the model's */
  }
  for (int i = 0; i < n; i++) job_free(&jobs[i]);
  free(jobs);
  int pair[2];
  CHECK(job_parse_pair("896,1152", pair) && pair[0] == 896 && pair[1] == 1152);
  CHECK(!job_parse_pair("896", pair) && !job_parse_pair("1,2,3", pair) && !job_parse_pair("-1,2", pair) && !job_parse_pair("a,b", pair));
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/vkd_test_job_file_%ld", (long)getpid());
  mkdir(dir, 0755);
  test_prompt_files();
  test_endings_and_encodings();
  test_shipped_and_sdxl_fields();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  return test_result("test_job_file");
}
