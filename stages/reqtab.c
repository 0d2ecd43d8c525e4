#include "stages/reqtab.h"

#include <stdlib.h>
#include <string.h>

static sl_reqtab_key *key_at(const sl_reqtab *t, uint32_t i)
{
    return (sl_reqtab_key *)(t->entries + (size_t)i * t->entry_size);
}

int sl_reqtab_init(sl_reqtab *t, size_t entry_size, int max_requests)
{
    t->entry_size = entry_size;
    t->cap = 16;
    while (t->cap < 4 * max_requests)
        t->cap *= 2;
    t->entries = calloc((size_t)t->cap, entry_size);
    return t->entries ? 0 : -1;
}

void sl_reqtab_free(sl_reqtab *t, void (*free_entry)(void *entry))
{
    for (int i = 0; t->entries && free_entry && i < t->cap; i++)
        if (key_at(t, (uint32_t)i)->used)
            free_entry(key_at(t, (uint32_t)i));
    free(t->entries);
    t->entries = NULL;
}

void *sl_reqtab_find(sl_reqtab *t, uint64_t id, bool create, bool *created)
{
    if (created)
        *created = false;
    uint32_t mask = (uint32_t)t->cap - 1, i = (uint32_t)(id * 0x9E3779B97F4A7C15ull >> 32) & mask;
    for (int probe = 0; probe < t->cap; probe++, i = (i + 1) & mask) {
        sl_reqtab_key *k = key_at(t, i);
        if (k->used && k->id == id)
            return k;
        if (!k->used) {
            if (!create)
                return NULL;
            memset(k, 0, t->entry_size);
            k->used = true;
            k->id = id;
            if (created)
                *created = true;
            return k;
        }
    }
    return NULL;
}

void sl_reqtab_drop(sl_reqtab *t, uint64_t id, void (*free_entry)(void *entry))
{
    sl_reqtab_key *k = sl_reqtab_find(t, id, false, NULL);
    if (!k)
        return;
    if (free_entry)
        free_entry(k);
    uint32_t mask = (uint32_t)t->cap - 1;
    uint32_t i = (uint32_t)(((unsigned char *)k - t->entries) / t->entry_size);
    memset(k, 0, t->entry_size);
    /* re-insert the rest of the cluster so lookups stay correct */
    unsigned char moved[t->entry_size];
    for (i = (i + 1) & mask; key_at(t, i)->used; i = (i + 1) & mask) {
        memcpy(moved, key_at(t, i), t->entry_size);
        memset(key_at(t, i), 0, t->entry_size);
        uint64_t moved_id; /* the key's id is the entry's first member */
        memcpy(&moved_id, moved, sizeof moved_id);
        void *dst = sl_reqtab_find(t, moved_id, true, NULL);
        memcpy(dst, moved, t->entry_size);
    }
}

void *sl_reqtab_at(sl_reqtab *t, int i)
{
    return i >= 0 && i < t->cap && key_at(t, (uint32_t)i)->used ? key_at(t, (uint32_t)i) : NULL;
}
