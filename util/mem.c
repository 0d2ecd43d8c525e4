#include "util/mem.h"

#include <stdlib.h>

void sl_free_cb(void *data, void *hint)
{
    (void)hint;
    free(data);
}
