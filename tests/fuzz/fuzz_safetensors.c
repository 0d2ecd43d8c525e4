/* libFuzzer target: the safetensors header parser must reject any input
 * with an error, never crash, and every tensor it accepts must lie inside
 * the buffer. */
#include <stdint.h>
#include <stdlib.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file *f;
    sl_err err;
    if (st_open_mem(&f, data, size, "fuzz", &err))
        return 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        const uint8_t *p = t->data;
        if (p < data || p + t->size > data + size)
            abort();
        if (t->n_elems > 0) {
            float first, last;
            st_read_f32(t, 0, 1, &first);
            st_read_f32(t, t->n_elems - 1, 1, &last);
            (void)first;
            (void)last;
        }
    }
    st_close(f);
    return 0;
}
