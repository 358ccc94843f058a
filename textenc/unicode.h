/* Unicode helpers for the tokenizer: UTF-8 decoding (invalid bytes become U+FFFD, as Python's
 * errors="replace"), character classes as Python's `regex` module sees them, and str.lower(). */
#ifndef VKD_UNICODE_H
#define VKD_UNICODE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum uc_class { UC_OTHER, UC_LETTER, UC_NUMBER };

enum uc_class uc_class(uint32_t cp);
/* \s in the `regex` module: the White_Space property. */
bool uc_is_space(uint32_t cp);
/* str.isspace() (used by str.strip()): White_Space plus U+001C..U+001F. */
bool uc_is_strip_space(uint32_t cp);
/* str.lower(): writes 1 or 2 code points to out, returns the count. */
int uc_lower(uint32_t cp, uint32_t out[2]);

/* Decodes UTF-8 into a new array of code points (*n set); NULL when out of memory. */
uint32_t *utf8_decode(const char *s, size_t len, size_t *n);
/* Encodes one code point; returns the byte count (1-4). */
int utf8_encode(uint32_t cp, char out[4]);

#endif
