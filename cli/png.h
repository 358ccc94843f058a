/* PNG output with the generation settings in a `parameters` text chunk (AUTOMATIC1111's
 * convention, so other tools read them back), written to a temporary file created exclusively and
 * committed under its name (core/fileio.h): never half-written, and never replacing a file unless
 * asked to. */
#ifndef VKD_PNG_H
#define VKD_PNG_H

#include <stdbool.h>

#include "status.h"

/* rgb: H x W x 3 bytes. parameters: valid UTF-8 text (tEXt when ASCII, iTXt otherwise) or NULL;
 * text that is not valid UTF-8 is refused (iTXt must be UTF-8). Without overwrite an existing
 * file is an error ("exists (not replaced)"). */
enum status png_write(const char *path, const unsigned char *rgb, int W, int H, const char *parameters, bool overwrite);
/* Reads the `parameters` text of a PNG into a new string (*out NULL when there is none). */
enum status png_read_parameters(const char *path, char **out);
/* A complete, undamaged PNG: the signature, IHDR first, every chunk's CRC right, IEND last and nothing
 * after it (a file cut short or overwritten in part fails). *parameters: its parameters text or NULL. */
enum status png_check_complete(const char *path, char **parameters);

#endif
