/* JSON, parsed defensively: one checked parse for every JSON the project reads (configs,
 * safetensors headers, vocabularies, prompt files, id lists). Nesting is limited before cJSON sees
 * the text (valid JSON deeper than the limit is "nested too deeply", not "invalid"), and anything
 * but white space after the value is an error that says where. */
#ifndef VKD_JSON_FILE_H
#define VKD_JSON_FILE_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "status.h"

#define JSON_MAX_DEPTH 64 /* the deepest JSON this project reads needs 4 */

/* Parses text[0, len) (NULs inside are an error) into *out (cJSON_Delete it). what names the
 * source in messages ("x.json", "x.safetensors: header"). */
enum status json_parse(const char *text, size_t len, const char *what, cJSON **out);
/* As json_parse, the value after position *end may follow (JSON Lines); *end receives where the
 * value ended. */
enum status json_parse_prefix(const char *text, size_t len, const char *what, cJSON **out, size_t *end);
/* *out: the file's top-level JSON object (cJSON_Delete it); an error names the file when it
 * cannot be read, is not JSON, or is not an object. */
enum status json_file_read_object(const char *path, cJSON **out);
/* "line L, column C" of byte offset at in text, for messages. */
void json_position(const char *text, size_t at, char *buf, size_t n);

#endif
