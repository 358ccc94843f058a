/* Text the project reads from files and command lines: its encoding checked (UTF-8 only; a UTF-8
 * byte-order mark is skipped, UTF-16 and NUL bytes are refused with what to do), and split into
 * lines whatever their ending (LF, CRLF, CR LF at the end of the file, no ending at all). */
#ifndef VKD_TEXT_H
#define VKD_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

/* Whether s[0, n) is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
 * *bad receives the offset of the first invalid byte. */
bool text_utf8_valid(const char *s, size_t n, size_t *bad);
/* A file's text: UTF-16 (by its byte-order mark or its NUL pattern), a NUL byte or invalid UTF-8
 * is an error naming the file and the line; *skip is 3 for a UTF-8 byte-order mark, else 0. */
enum status text_check(const char *what, const char *text, size_t len, size_t *skip);
/* The line at *pos of text[0, len): *line, *n without its ending (\n, \r\n, or a lone \r at the
 * end of the file); *pos moves past the ending. False at the end of the text. */
bool text_next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *n);
/* Trims spaces and tabs (and a trailing \r) from both ends of [*s, *s + *n). */
void text_trim(const char **s, size_t *n);

#endif
