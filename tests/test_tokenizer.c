/* Tokenizer: ../shared/ref/goldens/tokens.json (OpenAI specials, EOT padding) and
 * tokens_openclip.json (OpenCLIP specials, zero padding) must match 100%, with the vocabulary
 * read both from vocab.json + merges.txt and from bpe_simple_vocab_16e6.txt.gz. Then the
 * A1111 prompt syntax (the examples of its parse_prompt_attention docstring), chunking,
 * malformed vocabularies, random bytes, and very long prompts. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "prompt.h"
#include "test.h"


static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int check_golden(struct tokenizer *tok, const char *file, bool openclip, const char *label) {
  char path[1024];
  test_shared_path(path, sizeof path, file);
  char *text = test_read_file(path, NULL);
  if (!text) return -1;
  cJSON *root = cJSON_Parse(text);
  free(text);
  tokenizer_set_openclip_specials(tok, openclip);
  int total = 0, ok = 0;
  for (const cJSON *e = root ? root->child : NULL; e; e = e->next, total++) {
    const char *t = cJSON_GetObjectItem(e, "text")->valuestring;
    const cJSON *ids = cJSON_GetObjectItem(e, "ids");
    struct prompt_tokens p;
    CHECK_OK(prompt_tokenize(tok, t, PROMPT_TRUNCATE, openclip ? 0 : tokenizer_eot(tok), &p));
    bool same = p.n_chunks == 1 && cJSON_GetArraySize(ids) == CLIP_CONTEXT;
    for (int k = 0; same && k < CLIP_CONTEXT; k++) same = p.ids[k] == cJSON_GetArrayItem(ids, k)->valueint;
    if (same) {
      ok++;
    } else {
      fprintf(stderr, "FAIL %s: '%s'\n  got ", label, t);
      for (int k = 0; k < CLIP_CONTEXT && p.n_chunks; k++) fprintf(stderr, "%d ", p.ids[k]);
      fprintf(stderr, "\n  expected ");
      for (int k = 0; k < CLIP_CONTEXT; k++) fprintf(stderr, "%d ", cJSON_GetArrayItem(ids, k)->valueint);
      fprintf(stderr, "\n");
      test_failures++;
    }
    /* literal chunking: the first chunk equals the truncated sequence but for the last slot */
    struct prompt_tokens lit;
    CHECK_OK(prompt_tokenize(tok, t, PROMPT_LITERAL, openclip ? 0 : tokenizer_eot(tok), &lit));
    CHECK(lit.n_chunks >= 1 && !memcmp(lit.ids, p.ids, (CLIP_CONTEXT - 1) * sizeof *lit.ids));
    prompt_tokens_free(&lit);
    prompt_tokens_free(&p);
  }
  printf("  %-52s %d/%d prompts exact\n", label, ok, total);
  CHECK(total == 63);
  cJSON_Delete(root);
  tokenizer_set_openclip_specials(tok, false);
  return 0;
}

struct seg_case {
  const char *text;
  int n;
  const char *texts[10];
  double weights[10];
};

static void test_parse(void) {
  /* the examples in A1111's parse_prompt_attention docstring */
  static const struct seg_case cases[] = {
      {"normal text", 1, {"normal text"}, {1.0}},
      {"an (important) word", 3, {"an ", "important", " word"}, {1.0, 1.1, 1.0}},
      {"(unbalanced", 1, {"unbalanced"}, {1.1}},
      {"\\(literal\\]", 1, {"(literal]"}, {1.0}},
      {"(unnecessary)(parens)", 1, {"unnecessaryparens"}, {1.1}},
      {"a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
       9,
       {"a ", "house", " ", "on", " a ", "hill", ", sun, ", "sky", "."},
       {1.0, 1.5730000000000004, 1.1, 1.0, 1.1, 0.55, 1.1, 1.4641000000000006, 1.1}},
      {"[blue]", 1, {"blue"}, {1 / 1.1}},
      {"(red:1.3)", 1, {"red"}, {1.3}},
      {"stray) and ] closers", 1, {"stray) and ] closers"}, {1.0}},
      {"a BREAK b", 3, {"a", "BREAK", "b"}, {1.0, -1.0, 1.0}},
      {"BREAKfast", 1, {"BREAKfast"}, {1.0}},
      {"x:y", 1, {"x:y"}, {1.0}},
      {"(a:1.5 ) b", 2, {"a", " b"}, {1.5, 1.0}},
      {"", 1, {""}, {1.0}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    struct prompt_segment *s = NULL;
    int n = 0;
    CHECK_OK(prompt_parse(cases[c].text, &s, &n));
    bool same = n == cases[c].n;
    for (int i = 0; same && i < n; i++)
      same = !strcmp(s[i].text, cases[c].texts[i]) && fabs(s[i].weight - cases[c].weights[i]) <= 1e-6 * fabs(cases[c].weights[i]);
    CHECK_MSG(same, "prompt_parse('%s'): %d segments, first '%s' %g", cases[c].text, n, n ? s[0].text : "",
              n ? s[0].weight : 0.0);
    prompt_segments_free(s, n);
  }
  printf("  prompt syntax: %zu parse cases\n", sizeof cases / sizeof *cases);
}

static void test_weights_and_chunks(struct tokenizer *tok) {
  int32_t eot = tokenizer_eot(tok), sot = tokenizer_sot(tok);
  struct prompt_tokens p;
  /* a (red) car, with weights per token */
  CHECK_OK(prompt_tokenize(tok, "a (red) car", PROMPT_SYNTAX, eot, &p));
  CHECK(p.n_chunks == 1);
  CHECK(p.ids[0] == sot && p.ids[1] == 320 && p.ids[4] == eot && p.ids[5] == eot);
  CHECK(p.weights[0] == 1.0f && p.weights[1] == 1.0f && fabsf(p.weights[2] - 1.1f) < 1e-6f && p.weights[3] == 1.0f);
  prompt_tokens_free(&p);
  /* ((x)) = 1.21, [x] = 1/1.1, (x:0.5) */
  CHECK_OK(prompt_tokenize(tok, "((cat)) [dog] (bird:0.5)", PROMPT_SYNTAX, 0, &p));
  CHECK(fabsf(p.weights[1] - 1.21f) < 1e-6f && fabsf(p.weights[2] - 1 / 1.1f) < 1e-6f && p.weights[3] == 0.5f);
  CHECK(p.ids[4] == eot && p.ids[5] == 0); /* zero padding after EOT */
  prompt_tokens_free(&p);
  /* BREAK forces a chunk; the syntax chars are gone; without --syntax, brackets are text */
  CHECK_OK(prompt_tokenize(tok, "a cat BREAK a dog", PROMPT_SYNTAX, eot, &p));
  CHECK(p.n_chunks == 2 && p.ids[1] == 320 && p.ids[77 + 1] == 320 && p.ids[77 + 3] == eot);
  prompt_tokens_free(&p);
  CHECK_OK(prompt_tokenize(tok, "a cat BREAK a dog", PROMPT_LITERAL, eot, &p));
  CHECK(p.n_chunks == 1);
  prompt_tokens_free(&p);
  /* 80 words: 2 chunks of 75 + 5; the literal and the syntax paths agree without commas */
  char text[1024] = "";
  for (int i = 0; i < 80; i++) strcat(text, "cat ");
  CHECK_OK(prompt_tokenize(tok, text, PROMPT_LITERAL, eot, &p));
  CHECK(p.n_chunks == 2 && p.ids[76] == eot && p.ids[75] == 2368 && p.ids[77 + 5] == 2368 && p.ids[77 + 6] == eot);
  struct prompt_tokens q;
  CHECK_OK(prompt_tokenize(tok, text, PROMPT_SYNTAX, eot, &q));
  CHECK(q.n_chunks == 2 && !memcmp(p.ids, q.ids, 2 * CLIP_CONTEXT * sizeof *p.ids));
  prompt_tokens_free(&q);
  prompt_tokens_free(&p);
  /* comma backtracking: 37 x "cat," is 74 tokens; the 6 dogs overflow the chunk, so the dog
   * after the last comma moves to the next chunk (A1111: comma_padding_backtrack 20) */
  text[0] = 0;
  for (int i = 0; i < 37; i++) strcat(text, "cat, ");
  strcat(text, "dog dog dog dog dog dog");
  CHECK_OK(prompt_tokenize(tok, text, PROMPT_SYNTAX, eot, &p));
  CHECK(p.n_chunks == 2);
  CHECK(p.ids[74] == 267 && p.ids[75] == eot);
  CHECK(p.ids[77 + 1] == 1929 && p.ids[77 + 6] == 1929 && p.ids[77 + 7] == eot);
  prompt_tokens_free(&p);
  /* a comma that lands on the boundary simply starts the next chunk */
  text[0] = 0;
  for (int i = 0; i < 40; i++) strcat(text, "cat, ");
  CHECK_OK(prompt_tokenize(tok, text, PROMPT_SYNTAX, eot, &p));
  CHECK(p.n_chunks == 2 && p.ids[75] == 2368 && p.ids[77 + 1] == 267 && p.ids[77 + 6] == eot);
  prompt_tokens_free(&p);
  /* the negative prompt gets as many chunks as the positive one */
  CHECK_OK(prompt_tokenize(tok, "", PROMPT_SYNTAX, eot, &p));
  CHECK(p.n_chunks == 1 && p.ids[0] == sot && p.ids[1] == eot && p.ids[2] == eot);
  CHECK_OK(prompt_tokens_extend(&p, 3, sot, eot, eot));
  CHECK(p.n_chunks == 3 && p.ids[154] == sot && p.ids[155] == eot);
  prompt_tokens_free(&p);
  /* truncation keeps EOT last */
  CHECK_OK(prompt_tokenize(tok, text, PROMPT_TRUNCATE, eot, &p));
  CHECK(p.n_chunks == 1 && p.ids[76] == eot && p.ids[75] != eot);
  prompt_tokens_free(&p);
}

static char dir[256];

static void write_file(const char *name, const char *data, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  fwrite(data, 1, n, f);
  fclose(f);
}

static void expect_load_error(const char *label, const char *path, const char *needle) {
  struct tokenizer *t = NULL;
  enum status st = tokenizer_load(path, &t);
  CHECK_MSG(st != STATUS_OK && t == NULL, "%s: loaded a bad vocabulary", label);
  const char *msg = status_message();
  CHECK_MSG(strstr(msg, needle) != NULL, "%s: '%s' lacks '%s'", label, msg, needle);
  printf("  %-18s -> %s\n", label, msg);
  tokenizer_destroy(t);
}

static void test_malformed(const char *vocab, size_t vlen, const char *merges, size_t mlen) {
  char sub[512], cmd[700];
  /* missing folder */
  expect_load_error("missing", "/nonexistent/tokenizer", "no such file");
  /* truncated merges: the first 1000 lines */
  snprintf(sub, sizeof sub, "%s/trunc", dir);
  snprintf(cmd, sizeof cmd, "mkdir -p %s", sub);
  CHECK(system(cmd) == 0);
  const char *p = merges;
  for (int i = 0; i < 1000; i++) p = strchr(p, '\n') + 1;
  write_file("trunc/vocab.json", vocab, vlen);
  write_file("trunc/merges.txt", merges, (size_t)(p - merges));
  expect_load_error("truncated merges", sub, "truncated");
  /* a merge cut mid-line */
  write_file("trunc/merges.txt", merges, (size_t)(p - merges) + 1);
  expect_load_error("cut merge line", sub, "line 1001");
  /* bad JSON */
  write_file("trunc/vocab.json", vocab, 1000);
  write_file("trunc/merges.txt", merges, mlen);
  expect_load_error("bad JSON", sub, "not valid JSON");
  /* duplicate entry */
  char *dup = malloc(vlen + 64);
  int k = snprintf(dup, vlen + 64, "{\"a</w>\": 320, ");
  memcpy(dup + k, vocab + 1, vlen - 1);
  write_file("trunc/vocab.json", dup, (size_t)k + vlen - 1);
  free(dup);
  expect_load_error("duplicate entry", sub, "twice");
  /* not an object */
  write_file("trunc/vocab.json", "[1,2]", 5);
  expect_load_error("vocab not object", sub, "JSON object");
  /* truncated gzip */
  snprintf(sub, sizeof sub, "%s/bpe.txt.gz", dir);
  gzFile gz = gzopen(sub, "wb");
  gzwrite(gz, merges, 100000);
  gzclose(gz);
  expect_load_error("truncated .gz", sub, "truncated merge list");
  write_file("notgz.txt.gz", "this is not gzip data at all, just text\n", 40);
  snprintf(sub, sizeof sub, "%s/notgz.txt.gz", dir);
  expect_load_error("not gzip", sub, "truncated");
  /* tokenizer_find names every place it looked */
  struct tokenizer *t = NULL;
  unsetenv("VKDIFFUSION_TOKENIZER");
  CHECK(tokenizer_find(NULL, "/nonexistent/model.safetensors", &t) == STATUS_NOT_FOUND);
  CHECK(strstr(status_message(), "/nonexistent") && strstr(status_message(), "VKDIFFUSION_TOKENIZER"));
  printf("  %-18s -> %s\n", "not found", status_message());
}

static void test_fuzz(struct tokenizer *tok) {
  unsigned s = 12345;
  char buf[512];
  int32_t v = tokenizer_vocab_size(tok);
  for (int it = 0; it < 3000; it++) {
    size_t n = (size_t)(s % 300);
    for (size_t i = 0; i < n; i++) {
      s = s * 1103515245u + 12345u;
      buf[i] = (char)(s >> 16);
      if (it % 3 == 0) buf[i] = "()[]:\\ ,aB1&;#<|>'"[(s >> 20) % 18]; /* syntax-heavy */
    }
    buf[n] = 0;
    for (int mode = 0; mode < 3; mode++) {
      struct prompt_tokens p;
      CHECK_OK(prompt_tokenize(tok, buf, (enum prompt_mode)mode, 0, &p));
      bool ok = p.n_chunks >= 1;
      for (int k = 0; ok && k < p.n_chunks * CLIP_CONTEXT; k++) ok = p.ids[k] >= 0 && p.ids[k] < v && isfinite(p.weights[k]);
      CHECK(ok);
      prompt_tokens_free(&p);
    }
    s = s * 1103515245u + 12345u;
  }
  /* control characters, emoji, CJK, invalid UTF-8 */
  const char *odd = "\x01\x02\x7f \xff\xfe\xc0\xaf \xed\xa0\x80 \xf0\x9f\x98\x80 \xe7\x8c\xab \t\x1c";
  struct token_list ids = {0};
  CHECK_OK(tokenizer_encode(tok, odd, strlen(odd), &ids));
  CHECK(ids.n > 0);
  token_list_free(&ids);
}

static void test_long(struct tokenizer *tok) {
  size_t n = 100000;
  char *text = malloc(n + 1);
  const char *words = "the quick brown fox jumps over the lazy dog, a photograph of an astronaut riding a horse. ";
  size_t wl = strlen(words);
  for (size_t i = 0; i < n; i++) text[i] = words[i % wl];
  text[n] = 0;
  struct token_list ids = {0};
  double t0 = now();
  CHECK_OK(tokenizer_encode(tok, text, n, &ids));
  double t1 = now();
  printf("  100 kB English text: %zu tokens in %.1f ms\n", ids.n, (t1 - t0) * 1e3);
  memset(text, 'a', n); /* one 100 kB word: the heap BPE keeps this near-linear */
  ids.n = 0;
  t0 = now();
  CHECK_OK(tokenizer_encode(tok, text, n, &ids));
  t1 = now();
  printf("  one 100 kB word: %zu tokens in %.1f ms\n", ids.n, (t1 - t0) * 1e3);
  CHECK(ids.n > 0 && ids.n < n);
  /* a prompt is at most PROMPT_MAX_BYTES: the 100 kB word is refused with the limit named, one of
   * exactly the limit is chunked */
  struct prompt_tokens p;
  CHECK(prompt_tokenize(tok, text, PROMPT_SYNTAX, 0, &p) == STATUS_INVALID_ARGUMENT);
  CHECK(strstr(status_message(), "more than the 65536 allowed") != NULL);
  text[PROMPT_MAX_BYTES] = 0;
  ids.n = 0;
  CHECK_OK(tokenizer_encode(tok, text, PROMPT_MAX_BYTES, &ids));
  CHECK_OK(prompt_tokenize(tok, text, PROMPT_SYNTAX, 0, &p));
  CHECK(p.n_chunks == (int)((ids.n + CLIP_CHUNK - 1) / CLIP_CHUNK));
  prompt_tokens_free(&p);
  token_list_free(&ids);
  free(text);
}

/* The prompt syntax is linear in its text and its limits are errors that name them: every kind of
 * hostile prompt, each within a second */
static void test_hostile_prompts(void) {
  size_t n = PROMPT_MAX_BYTES;
  char *t = malloc(n + 1);
  struct prompt_segment *seg = NULL;
  int ns = 0;
  struct {
    const char *what, *unit, *needle; /* needle NULL: parses */
  } cases[] = {
      {"64 kB of '('", "(", "nest more than 64 deep"},
      {"64 kB of '['", "[", "nest more than 64 deep"},
      {"'(a)' repeated", "(a)", NULL},
      {"'(a:1.1) ' repeated", "(a:1.1) ", NULL},
      {"'a b ' repeated", "a b ", NULL},
      {"'\\(' repeated", "\\(", NULL},
      {"')' repeated", ")", NULL},
      {"'((a)b)' repeated", "((a)b)", NULL},
      {"'a BREAK ' repeated", "a BREAK ", NULL},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    size_t ul = strlen(cases[c].unit);
    for (size_t i = 0; i < n; i++) t[i] = cases[c].unit[i % ul];
    t[n] = 0;
    double t0 = now();
    enum status st = prompt_parse(t, &seg, &ns);
    double dt = now() - t0;
    if (cases[c].needle) CHECK_MSG(st && strstr(status_message(), cases[c].needle), "%s: %s", cases[c].what, status_message());
    else CHECK_MSG(!st, "%s: %s", cases[c].what, status_message());
    CHECK_MSG(dt < 1.0, "%s: %.2f s to parse 64 kB", cases[c].what, dt);
    printf("  prompt syntax, %-22s %6.1f ms %s\n", cases[c].what, dt * 1e3, st ? status_message() : "");
    if (!st) prompt_segments_free(seg, ns);
  }
  /* 64 levels are allowed, 65 are not; the limit counts ( and [ together */
  char deep[200];
  snprintf(deep, sizeof deep, "%.*s%s", 64, "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((", "x");
  CHECK_OK(prompt_parse(deep, &seg, &ns));
  if (ns == 1) CHECK(fabsf(seg[0].weight - powf(1.1f, 64)) < 1e-2f * powf(1.1f, 64));
  prompt_segments_free(seg, ns);
  CHECK(prompt_parse("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[((((((((((((((((((((((((((((((((x", &seg, &ns) == STATUS_INVALID_ARGUMENT);
  /* weights that overflow are errors naming the text, never infinities that reach the network */
  const char *overflow[] = {"(x:1000000000000000000000000000000000000000)", "(x:100000)", "(x:-100000)", "((((x:9999))))"};
  for (int k = 0; k < 4; k++) {
    CHECK_MSG(prompt_parse(overflow[k], &seg, &ns) == STATUS_INVALID_ARGUMENT && strstr(status_message(), "\"x\""),
              "%s: %s", overflow[k], status_message());
  }
  CHECK_OK(prompt_parse("(x:1000)", &seg, &ns));
  prompt_segments_free(seg, ns);
  free(t);
}

int main(void) {
  char path[1024], vp[1024], mp[1024];
  test_shared_path(path, sizeof path, "clip");
  test_shared_path(vp, sizeof vp, "clip/vocab.json");
  test_shared_path(mp, sizeof mp, "clip/merges.txt");
  size_t vlen = 0, mlen = 0;
  char *vocab = test_read_file(vp, &vlen), *merges = test_read_file(mp, &mlen);
  if (!vocab || !merges) {
    free(vocab), free(merges);
    char why[1200];
    snprintf(why, sizeof why, "cannot read the CLIP vocabulary in %s", path);
    return test_skip(why);
  }
  struct tokenizer *hf = NULL, *gz = NULL;
  CHECK_OK(tokenizer_load(path, &hf));
  test_shared_path(path, sizeof path, "clip/bpe_simple_vocab_16e6.txt.gz");
  CHECK_OK(tokenizer_load(path, &gz));
  if (!hf || !gz) return test_result("test_tokenizer");
  CHECK(tokenizer_vocab_size(hf) == 49408 && tokenizer_vocab_size(gz) == 49408);
  CHECK(tokenizer_sot(hf) == 49406 && tokenizer_eot(hf) == 49407 && tokenizer_comma(hf) == 267);
  for (int32_t i = 0; i < 49408; i++) CHECK(!strcmp(tokenizer_token(hf, i), tokenizer_token(gz, i)));
  if (check_golden(hf, "ref/goldens/tokens.json", false, "tokens.json, vocab.json + merges.txt") < 0 ||
      check_golden(gz, "ref/goldens/tokens.json", false, "tokens.json, bpe_simple_vocab_16e6.txt.gz") < 0 ||
      check_golden(hf, "ref/goldens/tokens_openclip.json", true, "tokens_openclip.json (OpenCLIP specials, pad 0)") < 0) {
    tokenizer_destroy(hf), tokenizer_destroy(gz), free(vocab), free(merges);
    return test_skip("cannot read ../shared/ref/goldens/tokens*.json");
  }
  test_parse();
  test_weights_and_chunks(hf);
  snprintf(dir, sizeof dir, "/tmp/vkd_test_tok_%ld", (long)getpid());
  char cmd[400];
  snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
  CHECK(system(cmd) == 0);
  test_malformed(vocab, vlen, merges, mlen);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  test_fuzz(hf);
  test_hostile_prompts();
  test_long(hf);
  tokenizer_destroy(hf);
  tokenizer_destroy(gz);
  free(vocab);
  free(merges);
  return test_result("test_tokenizer");
}
