/* Small JSON files (configs): read whole, size-limited, parsed with cJSON. */
#ifndef VKD_JSON_FILE_H
#define VKD_JSON_FILE_H

#include <cjson/cJSON.h>

#include "status.h"

/* *out: the file's top-level JSON object (cJSON_Delete it); an error names the file when it
 * cannot be read, is not JSON, or is not an object. */
enum status json_file_read_object(const char *path, cJSON **out);

#endif
