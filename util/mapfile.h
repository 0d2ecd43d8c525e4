/* Read-only memory maps of whole files (model weights: GGUF, safetensors).
 * The pages are the page cache's, so several processes on one host share one
 * copy of a model, and a file larger than memory still opens. */
#ifndef SLUICE_MAPFILE_H
#define SLUICE_MAPFILE_H

#include <stddef.h>

#include "util/err.h"

/* Maps the regular file at path. An empty file gives *data NULL and *size 0
 * (mmap cannot map nothing): the caller says what an empty file means for
 * its format. Errors name the path and the system's reason. */
int sl_map_file(const char *path, const void **data, size_t *size, sl_err *err);

/* Releases a map from sl_map_file; NULL is a no-op. */
void sl_unmap_file(const void *data, size_t size);

#endif
