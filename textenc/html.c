#include "html.h"

#include <stdbool.h>
#include <string.h>

/* Latin-1 names for U+00A0..U+00FF, all of which may appear without ';' */
static const char *const latin1[96] = {
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect", "uml", "copy", "ordf", "laquo",
    "not", "shy", "reg", "macr", "deg", "plusmn", "sup2", "sup3", "acute", "micro", "para", "middot",
    "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest", "Agrave", "Aacute", "Acirc",
    "Atilde", "Auml", "Aring", "AElig", "Ccedil", "Egrave", "Eacute", "Ecirc", "Euml", "Igrave", "Iacute",
    "Icirc", "Iuml", "ETH", "Ntilde", "Ograve", "Oacute", "Ocirc", "Otilde", "Ouml", "times", "Oslash",
    "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute", "THORN", "szlig", "agrave", "aacute", "acirc", "atilde",
    "auml", "aring", "aelig", "ccedil", "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc",
    "iuml", "eth", "ntilde", "ograve", "oacute", "ocirc", "otilde", "ouml", "divide", "oslash", "ugrave",
    "uacute", "ucirc", "uuml", "yacute", "thorn", "yuml"};

struct entity {
  const char *name;
  uint32_t cp;
  bool legacy; /* also valid without ';' */
};

static const struct entity named[] = {
    {"amp", '&', true}, {"AMP", '&', true}, {"lt", '<', true}, {"LT", '<', true}, {"gt", '>', true},
    {"GT", '>', true}, {"quot", '"', true}, {"QUOT", '"', true}, {"COPY", 0xa9, true}, {"REG", 0xae, true},
    {"apos", '\'', false}, {"hellip", 0x2026, false}, {"mdash", 0x2014, false}, {"ndash", 0x2013, false},
    {"lsquo", 0x2018, false}, {"rsquo", 0x2019, false}, {"ldquo", 0x201c, false}, {"rdquo", 0x201d, false},
    {"sbquo", 0x201a, false}, {"bdquo", 0x201e, false}, {"euro", 0x20ac, false}, {"trade", 0x2122, false},
    {"bull", 0x2022, false}, {"dagger", 0x2020, false}, {"Dagger", 0x2021, false}, {"permil", 0x2030, false},
    {"lsaquo", 0x2039, false}, {"rsaquo", 0x203a, false}, {"prime", 0x2032, false}, {"Prime", 0x2033, false},
    {"larr", 0x2190, false}, {"uarr", 0x2191, false}, {"rarr", 0x2192, false}, {"darr", 0x2193, false},
    {"harr", 0x2194, false}, {"hearts", 0x2665, false}, {"spades", 0x2660, false}, {"clubs", 0x2663, false},
    {"diams", 0x2666, false}, {"infin", 0x221e, false}, {"ne", 0x2260, false}, {"le", 0x2264, false},
    {"ge", 0x2265, false}, {"minus", 0x2212, false}, {"sum", 0x2211, false}, {"radic", 0x221a, false},
    {"asymp", 0x2248, false}, {"equiv", 0x2261, false}, {"ensp", 0x2002, false}, {"emsp", 0x2003, false},
    {"thinsp", 0x2009, false}, {"zwj", 0x200d, false}, {"zwnj", 0x200c, false}, {"Tab", '\t', false},
    {"NewLine", '\n', false}, {"star", 0x2606, false}, {"starf", 0x2605, false}, {"check", 0x2713, false},
    {"deg", 0xb0, true}};

/* Looks up name[0..len) (without ';'); with_semicolon: the reference ended in ';'. */
static bool lookup(const uint32_t *name, size_t len, bool with_semicolon, uint32_t *cp) {
  char buf[40];
  if (len == 0 || len >= sizeof buf) return false;
  for (size_t i = 0; i < len; i++) {
    if (name[i] > 0x7f) return false;
    buf[i] = (char)name[i];
  }
  buf[len] = 0;
  for (int i = 0; i < 96; i++)
    if (!strcmp(buf, latin1[i])) {
      *cp = 0xa0 + (uint32_t)i;
      return true;
    }
  for (size_t i = 0; i < sizeof named / sizeof *named; i++)
    if (!strcmp(buf, named[i].name) && (with_semicolon || named[i].legacy)) {
      *cp = named[i].cp;
      return true;
    }
  return false;
}

static const uint16_t cp1252[32] = {0x20ac, 0x81,   0x201a, 0x192,  0x201e, 0x2026, 0x2020, 0x2021,
                                    0x2c6,  0x2030, 0x160,  0x2039, 0x152,  0x8d,   0x17d,  0x8f,
                                    0x90,   0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
                                    0x2dc,  0x2122, 0x161,  0x203a, 0x153,  0x9d,   0x17e,  0x178};

static bool invalid_codepoint(uint32_t c) {
  return (c >= 0x1 && c <= 0x8) || c == 0xb || (c >= 0xe && c <= 0x1f) || (c >= 0x7f && c <= 0x9f) ||
         (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) == 0xfffe;
}

static bool is_hex(uint32_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }

size_t html_unescape(const uint32_t *s, size_t n, uint32_t *out) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    if (s[i] != '&' || i + 1 >= n) {
      out[o++] = s[i++];
      continue;
    }
    size_t j = i + 1;
    if (s[j] == '#') { /* numeric */
      bool hex = j + 1 < n && (s[j + 1] == 'x' || s[j + 1] == 'X');
      size_t k = j + (hex ? 2 : 1), start = k;
      uint64_t num = 0;
      while (k < n && (hex ? is_hex(s[k]) : (s[k] >= '0' && s[k] <= '9'))) {
        uint32_t c = s[k] | 0x20;
        uint32_t d = c <= '9' ? c - '0' : c - 'a' + 10;
        if (num <= 0x10ffff) num = num * (hex ? 16 : 10) + d;
        k++;
      }
      if (k == start) { /* "&#" with no digits: not a reference */
        out[o++] = s[i++];
        continue;
      }
      if (k < n && s[k] == ';') k++;
      uint32_t c;
      if (num == 0) c = 0xfffd;
      else if (num == 0x0d) c = '\r';
      else if (num >= 0x80 && num <= 0x9f) c = cp1252[num - 0x80];
      else if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) c = 0xfffd;
      else if (invalid_codepoint((uint32_t)num)) c = 0; /* removed */
      else c = (uint32_t)num;
      if (c) out[o++] = c;
      i = k;
      continue;
    }
    /* named: [^\t\n\f <&#;]{1,32};? */
    size_t k = j;
    while (k < n && k - j < 32 && s[k] != '\t' && s[k] != '\n' && s[k] != '\f' && s[k] != ' ' && s[k] != '<' &&
           s[k] != '&' && s[k] != '#' && s[k] != ';')
      k++;
    if (k == j) {
      out[o++] = s[i++];
      continue;
    }
    bool semi = k < n && s[k] == ';';
    uint32_t c;
    if (lookup(s + j, k - j, semi, &c)) {
      out[o++] = c;
      i = k + (semi ? 1 : 0);
      continue;
    }
    /* longest legacy prefix: &notit; -> "¬it;" */
    size_t len = k - j + (semi ? 1 : 0), prefix = 0;
    for (size_t x = len - 1; x >= 2 && !prefix; x--)
      if (x <= k - j && lookup(s + j, x, false, &c)) prefix = x;
    if (prefix) {
      out[o++] = c;
      i = j + prefix;
      continue;
    }
    out[o++] = s[i++]; /* not a reference: '&' stays, the rest is copied as text */
  }
  return o;
}
