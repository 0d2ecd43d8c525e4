#include "util/mem.h"

#include <pthread.h>
#include <stdlib.h>

void sl_free_cb(void *data, void *hint)
{
    (void)hint;
    free(data);
}

typedef struct scratch_set {
    void *mem[SL_SCRATCH_SLOTS];
    size_t bytes[SL_SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p)
{
    scratch_set *s = p;
    for (int i = 0; i < SL_SCRATCH_SLOTS; i++)
        free(s->mem[i]);
    free(s);
}

static void scratch_key_make(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

void *sl_thread_scratch(int slot, size_t bytes)
{
    if (slot < 0 || slot >= SL_SCRATCH_SLOTS)
        return NULL;
    pthread_once(&scratch_once, scratch_key_make);
    if (!scratch_key_ok)
        return NULL;
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (pthread_setspecific(scratch_key, s)) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes[slot] < bytes) {
        free(s->mem[slot]);
        size_t rounded = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
        s->mem[slot] = aligned_alloc(64, rounded);
        s->bytes[slot] = s->mem[slot] ? rounded : 0;
    }
    return s->mem[slot];
}
