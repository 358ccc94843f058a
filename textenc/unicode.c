#include "unicode.h"

#include <stdlib.h>

#include "unicode_table.inc"

enum uc_class uc_class(uint32_t cp) {
  size_t lo = 0, hi = sizeof uc_class_ranges / sizeof *uc_class_ranges;
  while (hi - lo > 1) { /* last range starting at or before cp */
    size_t mid = (lo + hi) / 2;
    if (uc_class_ranges[mid][0] <= cp) lo = mid;
    else hi = mid;
  }
  return (enum uc_class)uc_class_ranges[lo][1];
}

bool uc_is_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

bool uc_is_strip_space(uint32_t c) { return uc_is_space(c) || (c >= 0x1c && c <= 0x1f); }

int uc_lower(uint32_t cp, uint32_t out[2]) {
  if (cp == 0x130) { /* the one unconditional full mapping in SpecialCasing.txt */
    out[0] = 0x69;
    out[1] = 0x307;
    return 2;
  }
  out[0] = cp;
  if (cp < 0x80) {
    if (cp >= 'A' && cp <= 'Z') out[0] = cp + 32;
    return 1;
  }
  size_t lo = 0, hi = sizeof uc_lower_map / sizeof *uc_lower_map;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (uc_lower_map[mid][0] == cp) {
      out[0] = uc_lower_map[mid][1];
      break;
    }
    if (uc_lower_map[mid][0] < cp) lo = mid + 1;
    else hi = mid;
  }
  return 1;
}

uint32_t *utf8_decode(const char *str, size_t len, size_t *n) {
  const unsigned char *s = (const unsigned char *)str;
  uint32_t *out = malloc((len + 1) * sizeof *out);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    unsigned c = s[i];
    int need = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
    uint32_t cp = need == 0 ? c : need == 1 ? c & 0x1f : need == 2 ? c & 0x0f : c & 0x07;
    bool ok = need >= 0 && i + (size_t)need < len;
    for (int k = 1; ok && k <= need; k++) {
      if ((s[i + k] & 0xc0) != 0x80) ok = false;
      else cp = cp << 6 | (s[i + k] & 0x3f);
    }
    /* overlong forms, surrogates and values past U+10FFFF are invalid */
    if (ok && ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
               (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff))
      ok = false;
    if (ok) {
      out[o++] = cp;
      i += (size_t)need + 1;
    } else {
      out[o++] = 0xfffd; /* one replacement per invalid byte */
      i++;
    }
  }
  *n = o;
  return out;
}

int utf8_encode(uint32_t cp, char out[4]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18);
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}
