#include "text.h"

#include <string.h>

bool text_utf8_valid(const char *str, size_t n, size_t *bad) {
  const unsigned char *s = (const unsigned char *)str;
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    unsigned cp = k == 2 ? c & 0x1f : k == 3 ? c & 0x0f : c & 0x07;
    bool ok = k > 0 && i + k <= n;
    for (size_t j = 1; ok && j < k; j++) {
      ok = (s[i + j] & 0xc0) == 0x80;
      cp = cp << 6 | (s[i + j] & 0x3f);
    }
    if (ok && k > 1) /* shortest form, no surrogates, at most U+10FFFF */
      ok = !(k == 2 && cp < 0x80) && !(k == 3 && cp < 0x800) && !(k == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
           !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok) {
      if (bad) *bad = i;
      return false;
    }
    i += k;
  }
  return true;
}

static size_t line_of(const char *text, size_t at) {
  size_t line = 1;
  for (size_t i = 0; i < at; i++) line += text[i] == '\n';
  return line;
}

enum status text_check(const char *what, const char *text, size_t len, size_t *skip) {
  const unsigned char *u = (const unsigned char *)text;
  *skip = 0;
  bool bom16 = len >= 2 && ((u[0] == 0xff && u[1] == 0xfe) || (u[0] == 0xfe && u[1] == 0xff));
  bool nul_pattern = len >= 4 && ((u[0] && !u[1] && u[2] && !u[3]) || (!u[0] && u[1] && !u[2] && u[3]));
  if (bom16 || nul_pattern)
    return status_set(STATUS_FORMAT, "%s: UTF-16 text: save it as UTF-8", what);
  if (len >= 3 && u[0] == 0xef && u[1] == 0xbb && u[2] == 0xbf) *skip = 3;
  const char *nul = memchr(text, 0, len);
  if (nul)
    return status_set(STATUS_FORMAT, "%s: a NUL byte on line %zu: not a text file", what, line_of(text, (size_t)(nul - text)));
  size_t bad;
  if (!text_utf8_valid(text + *skip, len - *skip, &bad))
    return status_set(STATUS_FORMAT, "%s: invalid UTF-8 on line %zu (byte %zu): save it as UTF-8", what,
                      line_of(text, *skip + bad), *skip + bad);
  return STATUS_OK;
}

bool text_next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *n) {
  if (*pos >= len) return false;
  const char *s = text + *pos, *e = memchr(s, '\n', len - *pos);
  size_t raw = e ? (size_t)(e - s) : len - *pos; /* the line without its \n */
  *line = s;
  *n = raw && s[raw - 1] == '\r' ? raw - 1 : raw;
  *pos += raw + (e ? 1 : 0); /* always forward by the whole line: no ending can stall it */
  return true;
}

void text_trim(const char **s, size_t *n) {
  while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r')) (*n)--;
  while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
}
