/* PNG output with the generation settings in a `parameters` text chunk (AUTOMATIC1111's
 * convention, so other tools read them back), written to a temporary file and renamed. */
#ifndef VKD_PNG_H
#define VKD_PNG_H

#include "status.h"

/* rgb: H x W x 3 bytes. parameters: UTF-8 text (tEXt when ASCII, iTXt otherwise) or NULL. */
enum status png_write(const char *path, const unsigned char *rgb, int W, int H, const char *parameters);
/* Reads the `parameters` text of a PNG into a new string (*out NULL when there is none). */
enum status png_read_parameters(const char *path, char **out);

#endif
