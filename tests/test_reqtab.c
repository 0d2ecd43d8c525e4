/* The per-request table the sample and draft stages share: every id stays
 * findable through drops that move entries of its cluster, dropped ids are
 * gone and their entries released, a full table refuses new ids. */
#include "stages/reqtab.h"
#include "tests/test.h"

typedef struct entry {
    sl_reqtab_key key;
    int payload;
    int *freed;
} entry;

static void release(void *p)
{
    entry *e = p;
    (*e->freed)++;
}

int main(void)
{
    sl_reqtab t;
    CHECK(sl_reqtab_init(&t, sizeof(entry), 8) == 0 && t.cap == 32);
    int freed = 0;
    /* ids chosen to collide: many share a home slot */
    for (uint64_t id = 1; id <= 24; id++) {
        bool created = false;
        entry *e = sl_reqtab_find(&t, id * 1024, true, &created);
        CHECKF(e && created && e->key.id == id * 1024 && e->payload == 0, "id %llu", (unsigned long long)id);
        e->payload = (int)id;
        e->freed = &freed;
        bool again = true;
        CHECK(sl_reqtab_find(&t, id * 1024, true, &again) == e && !again);
    }
    for (uint64_t id = 1; id <= 24; id += 2)
        sl_reqtab_drop(&t, id * 1024, release);
    CHECK(freed == 12);
    sl_reqtab_drop(&t, 99, release); /* absent: nothing */
    CHECK(freed == 12);
    for (uint64_t id = 1; id <= 24; id++) {
        entry *e = sl_reqtab_find(&t, id * 1024, false, NULL);
        if (id % 2)
            CHECKF(e == NULL, "dropped id %llu still found", (unsigned long long)id);
        else
            CHECKF(e && e->payload == (int)id, "id %llu lost after drops", (unsigned long long)id);
    }
    int used = 0;
    for (int i = 0; i < t.cap; i++)
        used += sl_reqtab_at(&t, i) != NULL;
    CHECK(used == 12 && sl_reqtab_at(&t, -1) == NULL && sl_reqtab_at(&t, t.cap) == NULL);
    for (uint64_t id = 100; id < 120; id++)
        CHECK(sl_reqtab_find(&t, id, true, NULL) != NULL);
    CHECK(sl_reqtab_find(&t, 500, true, NULL) == NULL); /* 32 of 32 used */
    for (int i = 0; i < t.cap; i++) {
        entry *e = sl_reqtab_at(&t, i);
        if (e && !e->freed)
            e->freed = &freed;
    }
    sl_reqtab_free(&t, release);
    CHECK(freed == 12 + 32 && t.entries == NULL);
    return test_finish("test_reqtab");
}
