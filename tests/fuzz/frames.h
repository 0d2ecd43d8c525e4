/* The framing fuzz_wire and fuzz_stage read their input in (so one corpus
 * serves both): byte 0 is the frame count (mod FZ_MAX_FRAMES), byte 1 a
 * mask of frames placed one byte off alignment, then one little-endian u16
 * length per frame, then the frames' bytes (cut short where the input
 * ends). Each frame sits at the end of its own allocation, slack bytes
 * before the end, so ASan sees a read past it. */
#ifndef SLUICE_FUZZ_FRAMES_H
#define SLUICE_FUZZ_FRAMES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FZ_MAX_FRAMES 20

typedef struct fz_frames {
    int n;
    size_t sizes[FZ_MAX_FRAMES];
    const void *frames[FZ_MAX_FRAMES];
    uint8_t *blocks[FZ_MAX_FRAMES];
} fz_frames;

static inline void fz_free(fz_frames *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->blocks[i]);
    f->n = 0;
}

/* 0, or -1 when the input is too short to frame or out of memory (nothing
 * left to free then). */
static inline int fz_split(fz_frames *f, const uint8_t *data, size_t size, size_t slack)
{
    f->n = 0;
    if (size < 2)
        return -1;
    int n = data[0] % FZ_MAX_FRAMES;
    unsigned shift_mask = data[1];
    size_t at = 2;
    for (int i = 0; i < n; i++) {
        f->sizes[i] = at + 2 <= size ? (size_t)data[at] | (size_t)data[at + 1] << 8 : 0;
        at += 2;
    }
    for (int i = 0; i < n; i++) {
        size_t left = at < size ? size - at : 0;
        if (f->sizes[i] > left)
            f->sizes[i] = left;
        size_t off = (shift_mask >> (i & 7)) & 1, bytes = off + f->sizes[i] + slack;
        f->blocks[i] = malloc(bytes ? bytes : 1);
        if (!f->blocks[i]) {
            fz_free(f);
            return -1;
        }
        f->n = i + 1;
        if (f->sizes[i])
            memcpy(f->blocks[i] + off, data + at, f->sizes[i]);
        f->frames[i] = f->blocks[i] + off;
        at += f->sizes[i];
    }
    f->n = n;
    return 0;
}

#endif
