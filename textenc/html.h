/* Python's html.unescape (html module, Python 3.11) on code points: numeric references with
 * its replacement rules, and named references with the longest-prefix rule for the legacy names
 * that may omit ';'. Named references known: the 106 legacy (Latin-1) names and common HTML5
 * typographic ones; an unknown name is left as text, as Python leaves names it does not know. */
#ifndef VKD_HTML_H
#define VKD_HTML_H
#include <stddef.h>
#include <stdint.h>

/* Unescapes s[0..n) into out (capacity n: unescaping never grows the text); returns the length. */
size_t html_unescape(const uint32_t *s, size_t n, uint32_t *out);

#endif
