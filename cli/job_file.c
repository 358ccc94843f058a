#define _POSIX_C_SOURCE 200809L
#include "job_file.h"

#include "fileio.h"

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
  j->width = ov && ov->default_width ? ov->default_width : 512;
  j->height = ov && ov->default_height ? ov->default_height : 512;
  j->sampler = SAMPLER_EULER_A;
  j->schedule = SCHEDULE_DISCRETE;
  j->clip_skip = 1;
  j->batch_count = 1;
}

void job_free(struct job *j) {
  free(j->prompt), free(j->negative_prompt), free(j->output);
  j->prompt = j->negative_prompt = j->output = NULL;
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
  if (j->steps < 1 || j->steps > 1000) snprintf(buf, sizeof buf, "\"steps\" %d is outside 1..1000", j->steps), fail(j, "%s", buf);
  if (j->width < 8 || j->width > 8192 || j->width % 8)
    snprintf(buf, sizeof buf, "\"width\" %d must be a multiple of 8 from 8 to 8192", j->width), fail(j, "%s", buf);
  if (j->height < 8 || j->height > 8192 || j->height % 8)
    snprintf(buf, sizeof buf, "\"height\" %d must be a multiple of 8 from 8 to 8192", j->height), fail(j, "%s", buf);
  if (!isfinite(j->cfg_scale) || j->cfg_scale < 0 || j->cfg_scale > 100)
    snprintf(buf, sizeof buf, "\"cfg_scale\" %g must be a finite number from 0 to 100", j->cfg_scale), fail(j, "%s", buf);
  if (j->clip_skip < 1 || j->clip_skip > 12)
    snprintf(buf, sizeof buf, "\"clip_skip\" %d is outside 1..12", j->clip_skip), fail(j, "%s", buf);
  if (j->batch_count < 1 || j->batch_count > 1000)
    snprintf(buf, sizeof buf, "\"batch_count\" %d is outside 1..1000", j->batch_count), fail(j, "%s", buf);
  if (j->seed < -1 || j->seed > 0xffffffffll)
    snprintf(buf, sizeof buf, "\"seed\" %lld is outside -1..4294967295", (long long)j->seed), fail(j, "%s", buf);
}

static void apply_overrides(struct job *j, const struct job_overrides *ov) {
  if (!ov) return;
  if (ov->negative_prompt) set_str(&j->negative_prompt, ov->negative_prompt);
  if (ov->output) set_str(&j->output, ov->output);
  if (ov->has_seed) j->seed = ov->values.seed;
  if (ov->has_steps) j->steps = ov->values.steps;
  if (ov->has_width) j->width = ov->values.width;
  if (ov->has_height) j->height = ov->values.height;
  if (ov->has_clip_skip) j->clip_skip = ov->values.clip_skip;
  if (ov->has_batch_count) j->batch_count = ov->values.batch_count;
  if (ov->has_cfg_scale) j->cfg_scale = ov->values.cfg_scale;
  if (ov->has_sampler) j->sampler = ov->values.sampler;
  if (ov->has_schedule) j->schedule = ov->values.schedule;
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
        !strcmp(k, "schedule")) {
      if (!cJSON_IsString(f)) {
        fail(j, "field \"%s\" must be a string", k);
        continue;
      }
      if (!strcmp(k, "prompt")) set_str(&j->prompt, f->valuestring);
      else if (!strcmp(k, "negative_prompt")) set_str(&j->negative_prompt, f->valuestring);
      else if (!strcmp(k, "output")) set_str(&j->output, f->valuestring);
      else if (!strcmp(k, "sampler")) {
        int s = sampler_parse(f->valuestring);
        if (s < 0) fail(j, "%s", "field \"sampler\" must be one of euler, euler_a, ddim, dpmpp_2m");
        else j->sampler = (enum sampler_kind)s;
      } else {
        int s = schedule_parse(f->valuestring);
        if (s < 0) fail(j, "%s", "field \"schedule\" must be discrete or karras");
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
    } else if (!strcmp(k, "cfg_scale")) {
      if (!cJSON_IsNumber(f)) fail(j, "field \"%s\" must be a number", k);
      else j->cfg_scale = f->valuedouble;
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

enum status job_file_load(const char *path, const struct job_overrides *ov, struct job **jobs, int *n) {
  *jobs = NULL;
  *n = 0;
  int cap = 0;
  size_t len;
  char *text;
  enum status st = file_read(path, 64u << 20, &text, &len);
  if (st) return st;
  size_t i = 0;
  while (i < len && strchr(" \t\r\n", text[i])) i++;
  bool is_txt = ends_with(path, ".txt") || (i < len && text[i] != '{' && text[i] != '[');
  if (is_txt) { /* one prompt a line, # comments, blank lines skipped */
    int line = 0;
    for (char *p = text; *p && !st;) {
      char *e = strchr(p, '\n');
      size_t l = e ? (size_t)(e - p) : strlen(p);
      line++;
      while (l && (p[l - 1] == '\r' || p[l - 1] == ' ' || p[l - 1] == '\t')) l--;
      size_t s0 = 0;
      while (s0 < l && (p[s0] == ' ' || p[s0] == '\t')) s0++;
      if (l > s0 && p[s0] != '#' && !(st = grow(jobs, n, &cap))) {
        struct job *j = &(*jobs)[(*n)++];
        job_defaults(j, ov);
        snprintf(j->where, sizeof j->where, "%s, line %d", path, line);
        j->prompt = strndup(p + s0, l - s0);
        apply_overrides(j, ov);
        job_validate(j);
      }
      p = e ? e + 1 : p + l;
    }
  } else {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
    while (root && end && *end && strchr(" \t\r\n", *end)) end++;
    if (root && end && *end) { /* more after the first value: JSON Lines */
      cJSON_Delete(root);
      root = NULL;
    }
    if (root && (cJSON_IsObject(root) || cJSON_IsArray(root))) {
      bool array = cJSON_IsArray(root);
      int idx = 0;
      for (const cJSON *e = array ? root->child : root; e && !st; e = array ? e->next : NULL, idx++) {
        if ((st = grow(jobs, n, &cap))) break;
        struct job *j = &(*jobs)[(*n)++];
        job_defaults(j, ov);
        if (array) snprintf(j->where, sizeof j->where, "%s, job %d", path, idx + 1);
        else snprintf(j->where, sizeof j->where, "%s", path);
        if (cJSON_IsString(e)) j->prompt = strdup(e->valuestring);
        else job_from_json(e, j);
        apply_overrides(j, ov);
        job_validate(j);
      }
    } else { /* JSON Lines: one object a line */
      int line = 0;
      bool any = false;
      for (char *p = text; *p && !st;) {
        char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        line++;
        size_t s0 = 0;
        while (s0 < l && strchr(" \t\r", p[s0])) s0++;
        if (l > s0 && !(st = grow(jobs, n, &cap))) {
          struct job *j = &(*jobs)[(*n)++];
          job_defaults(j, ov);
          snprintf(j->where, sizeof j->where, "%s, line %d", path, line);
          cJSON *o = cJSON_ParseWithLength(p + s0, l - s0);
          if (!o) fail(j, "%s", "not valid JSON");
          else job_from_json(o, j), any = true;
          cJSON_Delete(o);
          apply_overrides(j, ov);
          job_validate(j);
        }
        p = e ? e + 1 : p + l;
      }
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
  free(text);
  if (!st && *n == 0) st = status_set(STATUS_FORMAT, "%s: no jobs in the file", path);
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
