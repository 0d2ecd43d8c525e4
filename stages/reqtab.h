/* Per-request state of a stage (the sampler state of the sample stage, the
 * text and cache slot of the draft stage), found by request id: open
 * addressing over a power-of-two array of fixed-size entries, each starting
 * with an sl_reqtab_key. Dropping an entry re-inserts the rest of its
 * cluster, so entries move: pointers into the table last only until the
 * next drop. */
#ifndef SLUICE_REQTAB_H
#define SLUICE_REQTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_reqtab_key {
    uint64_t id;
    bool used;
} sl_reqtab_key;

typedef struct sl_reqtab {
    unsigned char *entries;
    size_t entry_size;         /* sizeof the entry struct, which starts with a key */
    int cap;                   /* power of two */
} sl_reqtab;

/* Room for 4 x max_requests entries (at least 16). Returns -1 out of memory. */
int sl_reqtab_init(sl_reqtab *t, size_t entry_size, int max_requests);
/* free_entry (may be NULL) releases what each used entry owns. */
void sl_reqtab_free(sl_reqtab *t, void (*free_entry)(void *entry));

/* The entry of id; with create, a zeroed one (key set, *created true) when
 * there is none. NULL when absent, or when the table is full. */
void *sl_reqtab_find(sl_reqtab *t, uint64_t id, bool create, bool *created);
/* Releases (free_entry) and removes id's entry, if any. */
void sl_reqtab_drop(sl_reqtab *t, uint64_t id, void (*free_entry)(void *entry));
/* Entry i of the array when used, else NULL (for walking all entries). */
void *sl_reqtab_at(sl_reqtab *t, int i);

#endif
