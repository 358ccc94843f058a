/* safetensors: round trip through the writer, conversions, unaligned data, and every malformed
 * case (each written by this test) giving its one-line error that names the file. */
#define _DEFAULT_SOURCE /* mkfifo, symlink, lstat */
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

#include "half.h"
#include "safetensors.h"
#include "test.h"

static char dir[256];

static void write_raw(const char *path, const char *header, size_t header_len_field, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  size_t hl = strlen(header);
  uint64_t len = header_len_field ? header_len_field : hl;
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(len >> (8 * i));
  fwrite(b, 1, 8, f);
  fwrite(header, 1, hl, f);
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

/* Writes the case, opens it, expects failure with a message containing `needle` and the path. */
static void expect_error(const char *label, const char *header, size_t hlen_field, size_t data_bytes, const char *needle) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s.safetensors", dir, label);
  uint8_t data[64] = {0};
  write_raw(path, header, hlen_field, data, data_bytes);
  struct safetensors *st = NULL;
  enum status s = safetensors_open(path, &st);
  CHECK_MSG(s != STATUS_OK, "%s: opened a malformed file", label);
  CHECK(st == NULL);
  const char *msg = status_message();
  CHECK_MSG(strstr(msg, path) != NULL, "%s: message does not name the file: %s", label, msg);
  CHECK_MSG(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", label, msg, needle);
  CHECK_MSG(strchr(msg, '\n') == NULL, "%s: message is not one line", label);
  printf("  %-22s -> %s\n", label, msg);
  safetensors_close(st);
  remove(path);
}

static void test_malformed(void) {
  expect_error("not_json", "{\"a\": ", 0, 0, "not valid JSON");
  expect_error("not_object", "[1, 2, 3]", 0, 0, "not a JSON object");
  expect_error("header_beyond_file", "{}", 1000, 0, "beyond the end of the file");
  expect_error("huge_header", "{}", (size_t)200 << 20, 0, "100 MB");
  expect_error("offset_range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 4, "out of range");
  expect_error("offsets_reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 0, 8, "out of range");
  expect_error("size_mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 16, "expected 12");
  expect_error("unknown_dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 8, "unsupported dtype");
  expect_error("duplicate",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               0, 8, "duplicate tensor name 'a'");
  expect_error("overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               0, 16, "overlap");
  expect_error("negative_dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 8, "not a valid size");
  expect_error("missing_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 8, "data_offsets");
  expect_error("entry_not_object", "{\"a\": 5}", 0, 0, "not a JSON object");
  expect_error("bad_metadata", "{\"__metadata__\": 5}", 0, 0, "__metadata__");
  /* a file shorter than the length field */
  char path[512];
  snprintf(path, sizeof path, "%s/short.safetensors", dir);
  FILE *f = fopen(path, "wb");
  fwrite("abc", 1, 3, f);
  fclose(f);
  struct safetensors *st;
  CHECK(safetensors_open(path, &st) == STATUS_FORMAT);
  CHECK(strstr(status_message(), "too short") != NULL);
  remove(path);
  CHECK(safetensors_open("/nonexistent/x.safetensors", &st) == STATUS_NOT_FOUND);
  CHECK(strstr(status_message(), "/nonexistent/x.safetensors") != NULL);
}

static void test_round_trip(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/rt.safetensors", dir);
  float a[6];
  test_random(a, 6, 1);
  uint16_t h[3] = {half_from_float(1.5f), half_from_float(-2.25f), half_from_float(65504.0f)};
  uint16_t bf[2] = {bf16_from_float(3.0f), bf16_from_float(-0.5f)};
  int64_t l[2] = {-7, 49407};
  int32_t i32[1] = {123};
  uint8_t u8[3] = {1, 2, 255};
  struct st_writer *w;
  CHECK_OK(st_writer_create(&w));
  CHECK_OK(st_writer_add(w, "a", ST_F32, 2, (int64_t[]){2, 3}, a));
  CHECK_OK(st_writer_add(w, "h", ST_F16, 1, (int64_t[]){3}, h)); /* 6 bytes: following tensors are unaligned */
  CHECK_OK(st_writer_add(w, "bf", ST_BF16, 1, (int64_t[]){2}, bf));
  CHECK_OK(st_writer_add(w, "l", ST_I64, 1, (int64_t[]){2}, l));
  CHECK_OK(st_writer_add(w, "i", ST_I32, 0, NULL, i32));
  CHECK_OK(st_writer_add(w, "u", ST_U8, 1, (int64_t[]){3}, u8));
  CHECK_OK(st_writer_add(w, "empty", ST_F32, 2, (int64_t[]){0, 4}, a));
  CHECK_OK(st_writer_metadata(w, "format", "pt"));
  CHECK_OK(st_writer_finish(w, path));
  st_writer_destroy(w);

  struct safetensors *st;
  CHECK_OK(safetensors_open(path, &st));
  if (!st) return;
  CHECK(safetensors_count(st) == 7);
  CHECK(safetensors_metadata(st, "format") && !strcmp(safetensors_metadata(st, "format"), "pt"));
  const struct st_tensor *t = safetensors_find(st, "a");
  CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->dtype == ST_F32);
  float got[6];
  CHECK_OK(safetensors_read_f32(st, t, got));
  CHECK(!memcmp(got, a, sizeof a));
  t = safetensors_find(st, "h");
  CHECK_OK(safetensors_read_f32(st, t, got));
  CHECK(got[0] == 1.5f && got[1] == -2.25f && got[2] == 65504.0f);
  t = safetensors_find(st, "bf");
  CHECK(t->begin % 2 == 0 && t->begin % 4 != 0); /* misaligned for 4-byte reads */
  CHECK_OK(safetensors_read_f32(st, t, got));
  CHECK(got[0] == 3.0f && got[1] == -0.5f);
  uint16_t hh[2];
  CHECK_OK(safetensors_read_f16(st, t, hh));
  CHECK(half_to_float(hh[0]) == 3.0f);
  t = safetensors_find(st, "l");
  CHECK(t->begin % 8 != 0);
  int32_t ids[2];
  CHECK_OK(safetensors_read_i32(st, t, ids));
  CHECK(ids[0] == -7 && ids[1] == 49407);
  t = safetensors_find(st, "i");
  CHECK(t && t->ndim == 0 && t->numel == 1);
  CHECK_OK(safetensors_read_i32(st, t, ids));
  CHECK(ids[0] == 123);
  t = safetensors_find(st, "u");
  CHECK_OK(safetensors_read_f32(st, t, got));
  CHECK(got[2] == 255.0f);
  t = safetensors_find(st, "empty");
  CHECK(t && t->numel == 0);
  CHECK(safetensors_find(st, "missing") == NULL);
  t = safetensors_find(st, "a");
  CHECK(safetensors_read_i32(st, t, ids) == STATUS_FORMAT);
  safetensors_close(st);
  /* no temporary file left behind */
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
  CHECK(access(tmp, F_OK) != 0);
  remove(path);
  /* writing into a missing folder fails cleanly */
  CHECK_OK(st_writer_create(&w));
  CHECK_OK(st_writer_add(w, "a", ST_F32, 1, (int64_t[]){1}, a));
  CHECK(st_writer_finish(w, "/nonexistent/dir/x.safetensors") == STATUS_IO);
  st_writer_destroy(w);
}

static void test_half(void) {
  /* every finite half value survives half -> float -> half */
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    if ((h & 0x7c00) == 0x7c00) continue;
    if (half_from_float(half_to_float((uint16_t)h)) != h) bad++;
  }
  CHECK(bad == 0);
  CHECK(half_from_float(1.0f + 1.0f / 2048) == 0x3c00);   /* tie to even: down */
  CHECK(half_from_float(1.0f + 3.0f / 2048) == 0x3c02);   /* tie to even: up */
  CHECK(half_from_float(1e6f) == 0x7c00);                  /* overflow: inf */
  CHECK(half_from_float(5.96046448e-8f) == 0x0001);        /* smallest subnormal */
  CHECK(bf16_from_float(1.00390625f) == 0x3f80);           /* tie to even */
}

/* Files as an attacker or a careless user leaves them: trailing data after the header, nesting
 * that cJSON would refuse as "invalid", a FIFO where a file belongs, symlinks planted at the
 * temporary names, an output that exists, temporaries a killed run left. */
static void test_files_defensively(void) {
  expect_error("trailing_garbage", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} xyz", 0, 8,
               "unexpected data after the JSON value at line 1, column 56");
  char deep[512];
  snprintf(deep, sizeof deep, "{\"__metadata__\": %.*s%.*s}", 100,
           "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", 100,
           "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
  expect_error("deep_header", deep, 0, 0, "nested too deeply");
  /* a FIFO: an error at once (open never blocks), for safetensors and every small-file reader */
  char fifo[512], victim[512], out[512], tmp[4200];
  snprintf(fifo, sizeof fifo, "%s/fifo.safetensors", dir);
  CHECK(mkfifo(fifo, 0600) == 0);
  struct safetensors *st = NULL;
  CHECK(safetensors_open(fifo, &st) == STATUS_IO && strstr(status_message(), "FIFO"));
  char *text = NULL;
  size_t len;
  CHECK(file_read(fifo, 100, &text, &len) == STATUS_IO && strstr(status_message(), "not a regular file"));
  unlink(fifo);
  /* symlinks planted at the first temporary names point at a victim: it is never written */
  snprintf(victim, sizeof victim, "%s/victim.txt", dir);
  snprintf(out, sizeof out, "%s/out.safetensors", dir);
  test_write_text(dir, "victim.txt", "precious");
  for (unsigned k = 0; k < 4; k++) {
    file_tmp_name(out, k, tmp, sizeof tmp);
    CHECK(symlink(victim, tmp) == 0);
  }
  float v[3] = {1, 2, 3};
  struct st_writer *w = NULL;
  CHECK_OK(st_writer_create(&w));
  CHECK_OK(st_writer_add(w, "v", ST_F32, 1, (int64_t[]){3}, v));
  CHECK_OK(st_writer_finish(w, out));
  st_writer_destroy(w);
  size_t vn;
  char *vt = test_read_file(victim, &vn);
  CHECK_MSG(vt && !strcmp(vt, "precious"), "the symlink's target was written: '%s'", vt ? vt : "(unreadable)");
  free(vt);
  CHECK_OK(safetensors_open(out, &st));
  CHECK(st && safetensors_find(st, "v") != NULL);
  safetensors_close(st);
  struct stat sb;
  for (unsigned k = 0; k < 4; k++) {
    file_tmp_name(out, k, tmp, sizeof tmp);
    CHECK(lstat(tmp, &sb) == 0 && S_ISLNK(sb.st_mode));
    unlink(tmp);
  }
  /* committing without overwrite never replaces an existing file; the temporary is gone after */
  struct file_out o;
  CHECK_OK(file_out_begin(&o, victim));
  CHECK_OK(file_out_write(&o, "new", 3));
  char tmp_used[4200];
  snprintf(tmp_used, sizeof tmp_used, "%s", o.tmp);
  CHECK(file_out_commit(&o, false) == STATUS_IO && strstr(status_message(), "exists (not replaced)"));
  vt = test_read_file(victim, &vn);
  CHECK(vt && !strcmp(vt, "precious"));
  free(vt);
  CHECK(access(tmp_used, F_OK) != 0);
  /* stale temporaries: this host's dead process's are removed; a live one's and another host's stay */
  char host[64], name[300];
  file_tmp_host(host, sizeof host);
  snprintf(name, sizeof name, "a.png.tmp-%s-999999999-0", host);
  test_write_text(dir, name, "x");
  file_tmp_name("live.png", 7, tmp, sizeof tmp);
  test_write_text(dir, tmp, "x");
  test_write_text(dir, "b.png.tmp-otherhost-999999999-0", "x");
  CHECK(file_tmp_remove_stale(dir) == 1);
  char p1[700], p2[4800], p3[700];
  snprintf(p1, sizeof p1, "%s/%s", dir, name);
  snprintf(p2, sizeof p2, "%s/%s", dir, tmp);
  snprintf(p3, sizeof p3, "%s/b.png.tmp-otherhost-999999999-0", dir);
  CHECK(access(p1, F_OK) != 0 && access(p2, F_OK) == 0 && access(p3, F_OK) == 0);
  unlink(p2), unlink(p3), unlink(victim), unlink(out);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/vkd_test_st_%ld", (long)getpid());
  char cmd[300];
  snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
  if (system(cmd) != 0) return 1;
  test_half();
  test_round_trip();
  test_malformed();
  test_files_defensively();
  rmdir(dir);
  return test_result("test_safetensors");
}
