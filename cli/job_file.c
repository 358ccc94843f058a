#define _POSIX_C_SOURCE 200809L
#include "job_file.h"

#include "fileio.h"
#include "json_file.h"
#include "prompt.h"
#include "text.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void job_defaults(struct job *j, const struct job_overrides *ov) {
  memset(j, 0, sizeof *j);
  j->seed = -1;
  j->steps = 20;
  j->cfg_scale = 7.0;
  j->strength = 0.75;
  j->mask_blur = 4;
  j->width = ov ? ov->default_width : 0; /* 0: the model's (resolved once it is loaded) */
  j->height = ov ? ov->default_height : 0;
  j->sampler = SAMPLER_EULER_A;
  j->schedule = SCHEDULE_DISCRETE;
  j->clip_skip = 0;
  j->batch_count = 1;
  for (int i = 0; i < 2; i++) j->original_size[i] = j->crop[i] = j->target_size[i] = -1;
}

bool job_parse_pair(const char *s, int out[2]) {
  char *end;
  long a = strtol(s, &end, 10), b;
  if (end == s || *end != ',') return false;
  const char *q = end + 1;
  b = strtol(q, &end, 10);
  if (end == q || *end || a < 0 || b < 0 || a > 1 << 20 || b > 1 << 20) return false;
  out[0] = (int)a, out[1] = (int)b;
  return true;
}

/* "FILE" or "FILE:STRENGTH" (the last colon followed by a number), for --lora and "loras" strings */
bool job_lora_parse(const char *arg, char **path, double *strength) {
  const char *colon = strrchr(arg, ':');
  char *end = NULL;
  double v = colon ? strtod(colon + 1, &end) : 1.0;
  bool numeric = colon && end != colon + 1 && !*end;
  size_t len = numeric ? (size_t)(colon - arg) : strlen(arg);
  if (!len || (numeric && (!isfinite(v) || fabs(v) > 100))) return false;
  *path = strndup(arg, len);
  *strength = numeric ? v : 1.0;
  return *path != NULL;
}

/* the name AUTOMATIC1111 lists a LoRA under: the file name without its extension */
char *job_lora_name(const char *path) {
  const char *slash = strrchr(path, '/');
  char *name = strdup(slash ? slash + 1 : path), *dot = name ? strrchr(name, '.') : NULL;
  if (dot && dot != name) *dot = 0;
  return name;
}

bool job_add_lora(struct job *j, const char *path, const char *name, double strength) {
  if (j->n_loras >= JOB_MAX_LORAS) return false;
  struct job_lora *l = realloc(j->loras, (size_t)(j->n_loras + 1) * sizeof *l);
  if (!l) return false;
  j->loras = l;
  l[j->n_loras] = (struct job_lora){.path = strdup(path), .name = name ? strdup(name) : job_lora_name(path), .strength = strength};
  return l[j->n_loras].path && l[j->n_loras++].name;
}

void job_free(struct job *j) {
  for (int i = 0; i < j->n_loras; i++) free(j->loras[i].path), free(j->loras[i].name);
  free(j->loras), free(j->encode_prompt);
  j->loras = NULL, j->encode_prompt = NULL, j->n_loras = 0;
  free(j->prompt), free(j->negative_prompt), free(j->output), free(j->init_image), free(j->taesd), free(j->mask);
  j->prompt = j->negative_prompt = j->output = j->init_image = j->taesd = j->mask = NULL;
}

static void fail(struct job *j, const char *fmt, const char *field) {
  if (j->error[0]) return; /* the first problem is the one reported */
  snprintf(j->error, sizeof j->error, fmt, field);
}

static void set_str(char **dst, const char *v) {
  free(*dst);
  *dst = v ? strdup(v) : NULL;
}

void job_validate(struct job *j) {
  if (j->error[0]) return;
  char buf[200];
  if (!j->prompt) fail(j, "missing field \"%s\"", "prompt");
  size_t bad;
  const char *texts[] = {j->prompt, j->negative_prompt, j->output}, *names[] = {"prompt", "negative_prompt", "output"};
  for (int k = 0; k < 3; k++) {
    if (texts[k] && !text_utf8_valid(texts[k], strlen(texts[k]), &bad))
      snprintf(buf, sizeof buf, "\"%s\" is not valid UTF-8 (byte %zu)", names[k], bad), fail(j, "%s", buf);
    if (k < 2 && texts[k] && strlen(texts[k]) > PROMPT_MAX_BYTES)
      snprintf(buf, sizeof buf, "\"%s\" of %zu bytes is longer than the %d allowed", names[k], strlen(texts[k]),
               PROMPT_MAX_BYTES), fail(j, "%s", buf);
  }
  if (j->steps < 1 || j->steps > 1000) snprintf(buf, sizeof buf, "\"steps\" %d is outside 1..1000", j->steps), fail(j, "%s", buf);
  if (j->width && (j->width < 8 || j->width > 8192 || j->width % 8))
    snprintf(buf, sizeof buf, "\"width\" %d must be a multiple of 8 from 8 to 8192", j->width), fail(j, "%s", buf);
  if (j->height && (j->height < 8 || j->height > 8192 || j->height % 8))
    snprintf(buf, sizeof buf, "\"height\" %d must be a multiple of 8 from 8 to 8192", j->height), fail(j, "%s", buf);
  if (!isfinite(j->cfg_scale) || j->cfg_scale < 0 || j->cfg_scale > 100)
    snprintf(buf, sizeof buf, "\"cfg_scale\" %g must be a finite number from 0 to 100", j->cfg_scale), fail(j, "%s", buf);
  if (!(j->strength >= 0 && j->strength <= 1))
    snprintf(buf, sizeof buf, "\"strength\" %g must be a number from 0 to 1", j->strength), fail(j, "%s", buf);
  if (j->init_image && (!j->init_image[0] || strlen(j->init_image) > 4000))
    fail(j, "%s", "\"init_image\" must name an image file");
  if (j->taesd && (!j->taesd[0] || strlen(j->taesd) > 4000)) fail(j, "%s", "\"taesd\" must name a TAESD file");
  if (j->mask && (!j->mask[0] || strlen(j->mask) > 4000)) fail(j, "%s", "\"mask\" must name an image file");
  if (j->mask && !j->init_image) fail(j, "%s", "\"mask\" needs an \"init_image\" (inpainting)");
  if (!(j->mask_blur >= 0 && j->mask_blur <= 256))
    snprintf(buf, sizeof buf, "\"mask_blur\" %g must be a number of pixels from 0 to 256", j->mask_blur), fail(j, "%s", buf);
  if (j->clip_skip < 0 || j->clip_skip > 12)
    snprintf(buf, sizeof buf, "\"clip_skip\" %d is outside 1..12", j->clip_skip), fail(j, "%s", buf);
  if (j->batch_count < 1 || j->batch_count > 1000)
    snprintf(buf, sizeof buf, "\"batch_count\" %d is outside 1..1000", j->batch_count), fail(j, "%s", buf);
  if (j->seed < -1 || j->seed > 0xffffffffll)
    snprintf(buf, sizeof buf, "\"seed\" %lld is outside -1..4294967295", (long long)j->seed), fail(j, "%s", buf);
}

static bool get_int(struct job *j, const cJSON *v, const char *name, int64_t lo, int64_t hi, int64_t *out);
static void get_pair(struct job *j, const cJSON *v, const char *name, int out[2]);

static void apply_overrides(struct job *j, const struct job_overrides *ov) {
  if (!ov) return;
  if (ov->negative_prompt) set_str(&j->negative_prompt, ov->negative_prompt);
  if (ov->output) set_str(&j->output, ov->output);
  if (ov->init_image) set_str(&j->init_image, ov->init_image);
  if (ov->taesd) set_str(&j->taesd, ov->taesd);
  if (ov->mask) set_str(&j->mask, ov->mask);
  if (ov->has_mask_blur) j->mask_blur = ov->values.mask_blur;
  if (ov->has_strength) j->strength = ov->values.strength;
  if (ov->has_seed) j->seed = ov->values.seed;
  if (ov->has_steps) j->steps = ov->values.steps;
  if (ov->has_width) j->width = ov->values.width;
  if (ov->has_height) j->height = ov->values.height;
  if (ov->has_clip_skip) j->clip_skip = ov->values.clip_skip;
  if (ov->has_batch_count) j->batch_count = ov->values.batch_count;
  if (ov->has_cfg_scale) j->cfg_scale = ov->values.cfg_scale;
  if (ov->has_sampler) j->sampler = ov->values.sampler;
  if (ov->has_schedule) j->schedule = ov->values.schedule;
  if (ov->has_original_size) memcpy(j->original_size, ov->values.original_size, sizeof j->original_size);
  if (ov->has_crop) memcpy(j->crop, ov->values.crop, sizeof j->crop);
  if (ov->has_target_size) memcpy(j->target_size, ov->values.target_size, sizeof j->target_size);
}

/* [a, b]: two whole numbers 0..1048576 */
static void get_pair(struct job *j, const cJSON *v, const char *name, int out[2]) {
  int64_t a, b;
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2) {
    char buf[160];
    snprintf(buf, sizeof buf, "field \"%s\" must be an array of two integers (%s)", name,
             strcmp(name, "crop") ? "[height, width]" : "[top, left]");
    fail(j, "%s", buf);
    return;
  }
  if (get_int(j, v->child, name, 0, 1 << 20, &a) && get_int(j, v->child->next, name, 0, 1 << 20, &b))
    out[0] = (int)a, out[1] = (int)b;
}

static bool get_int(struct job *j, const cJSON *v, const char *name, int64_t lo, int64_t hi, int64_t *out) {
  if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || !isfinite(v->valuedouble)) {
    char buf[128];
    snprintf(buf, sizeof buf, "field \"%s\" must be an integer", name);
    fail(j, "%s", buf);
    return false;
  }
  if (v->valuedouble < (double)lo || v->valuedouble > (double)hi) {
    char buf[160];
    snprintf(buf, sizeof buf, "field \"%s\" = %.0f is outside %lld..%lld", name, v->valuedouble, (long long)lo, (long long)hi);
    fail(j, "%s", buf);
    return false;
  }
  *out = (int64_t)v->valuedouble;
  return true;
}

/* one JSON object -> job (fields, types); ranges are checked later, after the overrides */
static void job_from_json(const cJSON *o, struct job *j) {
  if (!cJSON_IsObject(o)) {
    fail(j, "%s", "a job must be a JSON object (or a string prompt)");
    return;
  }
  for (const cJSON *f = o->child; f; f = f->next) {
    const char *k = f->string;
    int64_t v;
    if (!strcmp(k, "prompt") || !strcmp(k, "negative_prompt") || !strcmp(k, "output") || !strcmp(k, "sampler") ||
        !strcmp(k, "schedule") || !strcmp(k, "init_image") || !strcmp(k, "taesd") || !strcmp(k, "mask")) {
      if (!cJSON_IsString(f)) {
        fail(j, "field \"%s\" must be a string", k);
        continue;
      }
      if (!strcmp(k, "prompt")) set_str(&j->prompt, f->valuestring);
      else if (!strcmp(k, "negative_prompt")) set_str(&j->negative_prompt, f->valuestring);
      else if (!strcmp(k, "output")) set_str(&j->output, f->valuestring);
      else if (!strcmp(k, "init_image")) set_str(&j->init_image, f->valuestring);
      else if (!strcmp(k, "taesd")) set_str(&j->taesd, f->valuestring);
      else if (!strcmp(k, "mask")) set_str(&j->mask, f->valuestring);
      else if (!strcmp(k, "sampler")) {
        int s = sampler_parse(f->valuestring);
        if (s < 0) fail(j, "%s", "field \"sampler\" must be one of euler, euler_a, ddim, dpmpp_2m");
        else j->sampler = (enum sampler_kind)s;
      } else {
        int s = schedule_parse(f->valuestring);
        if (s < 0) fail(j, "%s", "field \"schedule\" must be discrete, karras or trailing");
        else j->schedule = (enum schedule_kind)s;
      }
    } else if (!strcmp(k, "seed")) {
      if (get_int(j, f, k, -1, 0xffffffffll, &v)) j->seed = v;
    } else if (!strcmp(k, "steps")) {
      if (get_int(j, f, k, -1000000, 1000000, &v)) j->steps = (int)v;
    } else if (!strcmp(k, "width")) {
      if (get_int(j, f, k, -1000000, 1000000, &v)) j->width = (int)v;
    } else if (!strcmp(k, "height")) {
      if (get_int(j, f, k, -1000000, 1000000, &v)) j->height = (int)v;
    } else if (!strcmp(k, "clip_skip")) {
      if (get_int(j, f, k, -1000000, 1000000, &v)) j->clip_skip = (int)v;
    } else if (!strcmp(k, "batch_count")) {
      if (get_int(j, f, k, -1000000, 1000000, &v)) j->batch_count = (int)v;
    } else if (!strcmp(k, "original_size")) {
      get_pair(j, f, k, j->original_size);
    } else if (!strcmp(k, "crop")) {
      get_pair(j, f, k, j->crop);
    } else if (!strcmp(k, "target_size")) {
      get_pair(j, f, k, j->target_size);
    } else if (!strcmp(k, "loras")) { /* ["FILE:S", {"path": FILE, "strength": S}, ...] */
      if (!cJSON_IsArray(f)) {
        fail(j, "%s", "field \"loras\" must be an array of \"FILE:STRENGTH\" strings or {\"path\", \"strength\"} objects");
        continue;
      }
      for (const cJSON *e = f->child; e && !j->error[0]; e = e->next) {
        char *path = NULL;
        double st = 1.0;
        const cJSON *pp = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "path") : NULL;
        const cJSON *ss = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "strength") : NULL;
        bool ok = cJSON_IsString(e) ? job_lora_parse(e->valuestring, &path, &st)
                  : cJSON_IsString(pp) && pp->valuestring[0] && (!ss || (cJSON_IsNumber(ss) && fabs(ss->valuedouble) <= 100)) &&
                        (path = strdup(pp->valuestring)) != NULL;
        if (ok && ss) st = ss->valuedouble;
        if (!ok) fail(j, "%s", "field \"loras\": each entry is \"FILE\", \"FILE:STRENGTH\" or {\"path\": FILE, \"strength\": S} "
                           "(strength -100..100)");
        else if (!job_add_lora(j, path, NULL, st)) fail(j, "%s", "field \"loras\": more than 64 LoRAs");
        free(path);
      }
    } else if (!strcmp(k, "cfg_scale") || !strcmp(k, "strength") || !strcmp(k, "mask_blur")) {
      if (!cJSON_IsNumber(f)) fail(j, "field \"%s\" must be a number", k);
      else *(k[0] == 'c' ? &j->cfg_scale : k[0] == 's' ? &j->strength : &j->mask_blur) = f->valuedouble;
    } else {
      fail(j, "unknown field \"%s\"", k);
    }
  }
}

static enum status grow(struct job **jobs, int *n, int *cap) {
  if (*n < *cap) return STATUS_OK;
  int c = *cap ? *cap * 2 : 8;
  struct job *p = realloc(*jobs, (size_t)c * sizeof *p);
  if (!p) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  *jobs = p;
  *cap = c;
  return STATUS_OK;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

/* a new job at the end of the list, defaults and overrides applied after the caller fills it */
static struct job *add_job(struct job **jobs, int *n, int *cap, const struct job_overrides *ov, enum status *st) {
  if ((*st = grow(jobs, n, cap))) return NULL;
  struct job *j = &(*jobs)[(*n)++];
  job_defaults(j, ov);
  return j;
}

static void finish_job(struct job *j, const struct job_overrides *ov) {
  apply_overrides(j, ov);
  job_validate(j);
}

/* .txt: one prompt a line, # comments and blank lines skipped, any line ending */
static enum status load_text(const char *path, const char *text, size_t len, const struct job_overrides *ov,
                             struct job **jobs, int *n, int *cap) {
  enum status st = STATUS_OK;
  const char *line;
  size_t pos = 0, l;
  for (int no = 1; !st && text_next_line(text, len, &pos, &line, &l); no++) {
    text_trim(&line, &l);
    if (!l || line[0] == '#') continue;
    struct job *j = add_job(jobs, n, cap, ov, &st);
    if (!j) break;
    snprintf(j->where, sizeof j->where, "%s, line %d", path, no);
    if (!(j->prompt = strndup(line, l))) st = status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
    finish_job(j, ov);
  }
  return st;
}

/* JSON Lines: one object (or prompt string) a line; a line that is not JSON is that job's error */
static enum status load_json_lines(const char *path, const char *text, size_t len, const struct job_overrides *ov,
                                   struct job **jobs, int *n, int *cap, bool *any) {
  enum status st = STATUS_OK;
  const char *line;
  size_t pos = 0, l;
  for (int no = 1; !st && text_next_line(text, len, &pos, &line, &l); no++) {
    text_trim(&line, &l);
    if (!l) continue;
    struct job *j = add_job(jobs, n, cap, ov, &st);
    if (!j) break;
    snprintf(j->where, sizeof j->where, "%s, line %d", path, no);
    cJSON *o = NULL;
    if (json_parse(line, l, "this line", &o)) {
      fail(j, "%s", status_message());
      status_clear();
    } else {
      if (cJSON_IsString(o)) set_str(&j->prompt, o->valuestring);
      else job_from_json(o, j);
      *any = true;
    }
    cJSON_Delete(o);
    finish_job(j, ov);
  }
  return st;
}

/* a relative path in a prompt file -> relative to the file's folder (slash: its last '/') */
static enum status beside(const char *file, const char *slash, char **field) {
  if (!*field || (*field)[0] == '/') return STATUS_OK;
  size_t flen = (size_t)(slash - file) + strlen(*field) + 2;
  char *full = malloc(flen);
  if (!full) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  snprintf(full, flen, "%.*s/%s", (int)(slash - file), file, *field);
  free(*field);
  *field = full;
  return STATUS_OK;
}

enum status job_file_load(const char *path, const struct job_overrides *ov, struct job **jobs, int *n) {
  *jobs = NULL;
  *n = 0;
  int cap = 0;
  size_t len, skip;
  char *buf;
  enum status st = file_read(path, JOB_FILE_MAX_BYTES, &buf, &len);
  if (st) return st;
  /* UTF-8 only (a byte-order mark is skipped); UTF-16, NUL bytes and invalid UTF-8 are refused */
  if ((st = text_check(path, buf, len, &skip))) {
    free(buf);
    return st;
  }
  const char *text = buf + skip;
  len -= skip;
  size_t i = 0;
  while (i < len && strchr(" \t\r\n", text[i])) i++;
  bool json_name = ends_with(path, ".json") || ends_with(path, ".jsonl");
  bool is_json = !ends_with(path, ".txt") && i < len && (text[i] == '{' || text[i] == '[');
  if (json_name && !is_json && i < len) {
    free(buf);
    return status_set(STATUS_FORMAT, "%s: a .json file must hold a JSON object, an array of jobs or JSON Lines", path);
  }
  if (!is_json) {
    st = load_text(path, text, len, ov, jobs, n, &cap);
  } else {
    cJSON *root = NULL;
    size_t end = 0;
    enum status ps = json_parse_prefix(text, len, path, &root, &end);
    while (!ps && end < len && strchr(" \t\r\n", text[end])) end++;
    bool whole = !ps && end == len;
    if (text[i] == '[' && !whole) { /* an array is the whole file: anything else is an error that says where */
      if (!ps) {
        char where[64];
        json_position(text, end, where, sizeof where);
        ps = status_set(STATUS_FORMAT, "%s: unexpected data after the JSON array at %s", path, where);
      }
      cJSON_Delete(root);
      free(buf);
      return ps;
    }
    if (ps && strstr(status_message(), "nested too deeply")) {
      free(buf);
      return ps;
    }
    status_clear();
    if (whole) {
      bool array = cJSON_IsArray(root);
      int idx = 0;
      for (const cJSON *e = array ? root->child : root; e && !st; e = array ? e->next : NULL, idx++) {
        struct job *j = add_job(jobs, n, &cap, ov, &st);
        if (!j) break;
        if (array) snprintf(j->where, sizeof j->where, "%s, job %d", path, idx + 1);
        else snprintf(j->where, sizeof j->where, "%s", path);
        if (cJSON_IsString(e)) set_str(&j->prompt, e->valuestring);
        else job_from_json(e, j);
        finish_job(j, ov);
      }
    } else { /* more after the first object: JSON Lines */
      bool any = false;
      st = load_json_lines(path, text, len, ov, jobs, n, &cap, &any);
      if (!any && !st) {
        for (int k = 0; k < *n; k++) job_free(&(*jobs)[k]);
        free(*jobs);
        *jobs = NULL;
        *n = 0;
        st = status_set(STATUS_FORMAT, "%s: not valid JSON (an object, an array of jobs, or JSON Lines)", path);
      }
    }
    cJSON_Delete(root);
  }
  free(buf);
  if (!st && *n == 0) st = status_set(STATUS_FORMAT, "%s: no jobs in the file", path);
  /* init_image, taesd, mask and "loras" paths in the file are relative to the file's folder (the
   * command-line ones: to the current one) */
  const char *slash = strrchr(path, '/');
  for (int k = 0; !st && slash && k < *n; k++) {
    struct job *j = &(*jobs)[k];
    char **fields[3] = {&j->init_image, &j->taesd, &j->mask};
    const char *given[3] = {ov ? ov->init_image : NULL, ov ? ov->taesd : NULL, ov ? ov->mask : NULL};
    for (int f = 0; f < 3 && !st; f++)
      if (!given[f]) st = beside(path, slash, fields[f]);
    for (int l = 0; l < j->n_loras && !st; l++) st = beside(path, slash, &j->loras[l].path);
  }
  return st;
}

enum status job_from_text(const char *text, const struct job_overrides *ov, struct job *out) {
  job_defaults(out, ov);
  snprintf(out->where, sizeof out->where, "--prompt");
  out->prompt = strdup(text);
  if (!out->prompt) return status_set(STATUS_OUT_OF_MEMORY, "out of host memory");
  apply_overrides(out, ov);
  job_validate(out);
  return STATUS_OK;
}
