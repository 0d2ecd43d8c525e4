/* The worker pool (util/pool.h): every index of a range runs exactly once
 * whatever the thread count and grain; workers really join a call; a call
 * from inside a task runs serially on its thread; idle workers sleep and a
 * sleeping pool still finishes the next call; two threads calling at once
 * both get their work done; regions: every write before a barrier seen
 * after it (1-5 threads), workers in them, nesting, two callers; the
 * adaptation's decisions on injected
 * measurements; the minimum work: a call below it runs on the caller alone,
 * a region of such calls never wakes its workers, a matmul weighs its
 * weights' bytes and multiply-adds against it; and the forward pass of the shipped tiny model (embedding,
 * norms, q/k preparation, attention spans and their combination, FFN
 * activation, residuals, matmuls, head) bit-identical with 1, 2 and 3
 * threads, every op split (no minimum work) and with the default minimum. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "tests/test.h"
#include "util/mem.h"
#include "util/pool.h"

/* ---- range coverage ---- */

typedef struct cover {
    _Atomic int *hits;
    int64_t n;
    _Atomic int bad_range;
    int64_t each; /* sl_pool_for_each's chunk: ranges of exactly it, or 0 */
} cover;

static void cover_range(void *arg, int64_t i0, int64_t i1)
{
    cover *c = arg;
    if (i0 < 0 || i1 > c->n || i0 >= i1)
        atomic_store(&c->bad_range, 1);
    /* a chunk of exactly `each` from a multiple of it, or the tail (one
     * thread runs the whole range as its tail) */
    if (c->each && (i0 % c->each != 0 || (i1 - i0 != c->each && i1 != c->n)))
        atomic_store(&c->bad_range, 1);
    for (int64_t i = i0; i < i1 && i >= 0 && i < c->n; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

static void test_coverage(void)
{
    static const int64_t sizes[] = {1, 2, 3, 7, 64, 100, 1001, 40000};
    static const int64_t grains[] = {1, 3, 16, 5000};
    sl_pool_set_adaptive(false);
    for (int threads = 1; threads <= 5; threads++) {
        sl_pool_set_threads(threads);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
                int64_t n = sizes[s];
                for (int each = 0; each < 2; each++) {
                    cover c = {calloc((size_t)n, sizeof(_Atomic int)), n, 0, each ? grains[g] : 0};
                    if (each)
                        sl_pool_for_each(n, grains[g], cover_range, &c);
                    else
                        sl_pool_for(n, grains[g], cover_range, &c);
                    int wrong = 0;
                    for (int64_t i = 0; i < n; i++)
                        wrong += atomic_load(&c.hits[i]) != 1;
                    CHECKF(wrong == 0 && !atomic_load(&c.bad_range),
                           "%d threads, n %lld, %s %lld: %d indices not run exactly once, or "
                           "a range of the wrong size", threads, (long long)n,
                           each ? "each chunk" : "grain", (long long)grains[g], wrong);
                    free((void *)c.hits);
                }
            }
    }
    sl_pool_for(0, 1, cover_range, NULL); /* an empty range calls nothing */
    CHECK(1);
}

/* ---- a count below the workers started ---- */

typedef struct distinct {
    pthread_mutex_t lock;
    pthread_t seen[16];
    int n;
} distinct;

static void distinct_range(void *arg, int64_t i0, int64_t i1)
{
    distinct *d = arg;
    (void)i0, (void)i1;
    pthread_mutex_lock(&d->lock);
    int k = 0;
    while (k < d->n && !pthread_equal(d->seen[k], pthread_self()))
        k++;
    if (k == d->n && d->n < 16)
        d->seen[d->n++] = pthread_self();
    pthread_mutex_unlock(&d->lock);
    usleep(200);
}

static void test_fewer_than_started(void)
{
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(5);
    cover c = {calloc(100, sizeof(_Atomic int)), 100, 0, 0};
    sl_pool_for(100, 1, cover_range, &c); /* 4 workers started */
    free((void *)c.hits);
    sl_pool_set_threads(2);
    distinct d = {.lock = PTHREAD_MUTEX_INITIALIZER};
    sl_pool_for(64, 1, distinct_range, &d);
    CHECKF(d.n <= 2, "a 2-thread call ran on %d threads", d.n);
}

/* ---- workers join ---- */

typedef struct join_probe {
    _Atomic int entered;
    pthread_t first;
    _Atomic int distinct;
} join_probe;

/* Chunk 0 waits (up to 10 s) until another chunk has started: only another
 * thread can start one while chunk 0 holds the caller. */
static void join_range(void *arg, int64_t i0, int64_t i1)
{
    join_probe *p = arg;
    (void)i1;
    if (i0 == 0) {
        for (int i = 0; i < 10000 && atomic_load(&p->entered) == 0; i++)
            usleep(1000);
        atomic_store(&p->distinct, atomic_load(&p->entered) > 0);
    } else {
        atomic_fetch_add(&p->entered, 1);
    }
}

static void test_workers_join(void)
{
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(3);
    join_probe p = {0};
    sl_pool_for(12, 1, join_range, &p);
    CHECKF(atomic_load(&p.distinct) == 1, "no other thread took a chunk while the first ran");
    CHECK(sl_pool_workers() >= 2);
}

/* ---- nesting ---- */

typedef struct nest {
    _Atomic int inner_serial, inner_ran, inner_threads_one;
} nest;

typedef struct inner_arg {
    pthread_t outer;
    _Atomic int other_thread;
    _Atomic int64_t count;
} inner_arg;

static void inner_range(void *arg, int64_t i0, int64_t i1)
{
    inner_arg *a = arg;
    if (!pthread_equal(pthread_self(), a->outer))
        atomic_store(&a->other_thread, 1);
    atomic_fetch_add(&a->count, i1 - i0);
}

static void outer_range(void *arg, int64_t i0, int64_t i1)
{
    nest *n = arg;
    for (int64_t i = i0; i < i1; i++) {
        inner_arg a = {pthread_self(), 0, 0};
        atomic_fetch_add(&n->inner_threads_one, sl_pool_current_threads() == 1 && sl_pool_in_task());
        sl_pool_for(1000, 1, inner_range, &a);
        atomic_fetch_add(&n->inner_serial, !atomic_load(&a.other_thread));
        atomic_fetch_add(&n->inner_ran, atomic_load(&a.count) == 1000);
    }
}

static void test_nested(void)
{
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(3);
    nest n = {0};
    sl_pool_for(24, 1, outer_range, &n);
    CHECK(atomic_load(&n.inner_serial) == 24);
    CHECK(atomic_load(&n.inner_ran) == 24);
    CHECK(atomic_load(&n.inner_threads_one) == 24);
    CHECK(!sl_pool_in_task());
}

/* ---- sleep and wake ---- */

static void test_sleep_wake(void)
{
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(3);
    cover c = {calloc(5000, sizeof(_Atomic int)), 5000, 0, 0};
    sl_pool_for(5000, 1, cover_range, &c);
    int asleep = 0;
    for (int i = 0; i < 200 && asleep < sl_pool_workers(); i++) { /* up to 2 s */
        usleep(10000);
        asleep = sl_pool_workers_asleep();
    }
    CHECKF(asleep == sl_pool_workers() && asleep >= 2, "%d of %d workers asleep when idle", asleep,
           sl_pool_workers());
    /* woken by the next call: it completes, every index once more */
    join_probe p = {0};
    sl_pool_for(12, 1, join_range, &p);
    CHECK(atomic_load(&p.distinct) == 1);
    sl_pool_for(5000, 1, cover_range, &c);
    int wrong = 0;
    for (int i = 0; i < 5000; i++)
        wrong += atomic_load(&c.hits[i]) != 2;
    CHECK(wrong == 0);
    free((void *)c.hits);
}

/* ---- two callers ---- */

typedef struct caller {
    cover c;
    int rounds;
} caller;

static void *caller_main(void *arg)
{
    caller *k = arg;
    sl_pool_set_thread_limit(3);
    for (int r = 0; r < k->rounds; r++)
        sl_pool_for(k->c.n, 1, cover_range, &k->c);
    return NULL;
}

static void test_two_callers(void)
{
    sl_pool_set_adaptive(false);
    caller k[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        k[i] = (caller){{calloc(3000, sizeof(_Atomic int)), 3000, 0, 0}, 200};
        CHECK(pthread_create(&t[i], NULL, caller_main, &k[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        int wrong = 0;
        for (int j = 0; j < 3000; j++)
            wrong += atomic_load(&k[i].c.hits[j]) != 200;
        CHECKF(wrong == 0, "caller %d: %d indices not run 200 times", i, wrong);
        free((void *)k[i].c.hits);
    }
}

/* ---- regions ---- */

#define REGION_N 997 /* not a multiple of any chunk count */
#define REGION_OPS 8

/* Op k of a region writes a[k][i] from a[k-1] read at the mirrored index,
 * which another thread's chunk wrote: wrong unless the barrier between ops
 * made every write before it visible. */
typedef struct chain {
    int32_t a[REGION_OPS + 1][REGION_N];
    int k;
    _Atomic int bad;
    _Atomic int not_threads;
    int threads;
} chain;

static int32_t chain_value(int k, int64_t i, int round)
{
    return (int32_t)(k * 7919 + i * 31 + round * 104729);
}

typedef struct chain_op {
    chain *c;
    int k, round;
} chain_op;

static void chain_range(void *arg, int64_t i0, int64_t i1)
{
    const chain_op *o = arg;
    chain *c = o->c;
    for (int64_t i = i0; i < i1; i++) {
        int32_t prev = c->a[o->k - 1][REGION_N - 1 - i];
        if (prev != chain_value(o->k - 1, REGION_N - 1 - i, o->round))
            atomic_store(&c->bad, 1);
        c->a[o->k][i] = chain_value(o->k, i, o->round);
    }
}

typedef struct chain_run {
    chain *c;
    int round;
} chain_run;

static void chain_region(void *arg)
{
    chain_run *r = arg;
    chain *c = r->c;
    /* one thread needs no region */
    if (sl_pool_in_region() != (c->threads > 1) || sl_pool_current_threads() != c->threads)
        atomic_store(&c->not_threads, 1);
    for (int64_t i = 0; i < REGION_N; i++)
        c->a[0][i] = chain_value(0, i, r->round);
    for (int k = 1; k <= REGION_OPS; k++) {
        chain_op o = {c, k, r->round};
        /* grains vary so some ops run on fewer threads or serially */
        sl_pool_for(REGION_N, k == 3 ? REGION_N : k == 5 ? 400 : 1, chain_range, &o);
    }
}

static void test_region_barrier(void)
{
    sl_pool_set_adaptive(false);
    chain *c = calloc(1, sizeof *c);
    for (int threads = 1; threads <= 5; threads++) {
        sl_pool_set_threads(threads);
        c->threads = threads;
        atomic_store(&c->bad, 0);
        atomic_store(&c->not_threads, 0);
        for (int round = 0; round < 300; round++) {
            chain_run r = {c, round};
            sl_pool_region(chain_region, &r);
            if (round % 100 == 99)
                usleep(3000); /* workers asleep between regions too */
        }
        CHECKF(!atomic_load(&c->bad), "%d threads: an op read a write from before the barrier "
               "that it could not see", threads);
        CHECKF(!atomic_load(&c->not_threads), "%d threads: the region did not report its count",
               threads);
        CHECK(!sl_pool_in_region());
    }
    free(c);
}

/* A chunk of an op in a region waits until another thread starts one. */
static void join_region(void *arg)
{
    join_probe *p = arg;
    sl_pool_for(12, 1, join_range, p);
}

static void test_region_workers(void)
{
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(3);
    for (int round = 0; round < 3; round++) {
        join_probe p = {0};
        sl_pool_region(join_region, &p);
        CHECKF(atomic_load(&p.distinct) == 1, "round %d: no other thread took a chunk in the "
               "region", round);
        usleep(round == 1 ? 5000 : 0);
    }
    /* a region's ops count as calls, and the region once */
    sl_pool_stats st = {0};
    sl_pool_set_stats(&st);
    chain *c = calloc(1, sizeof *c);
    c->threads = 3;
    chain_run r = {c, 0};
    sl_pool_region(chain_region, &r);
    sl_pool_set_stats(NULL);
    CHECK(atomic_load(&st.regions) == 1);
    CHECKF(atomic_load(&st.calls) == REGION_OPS, "%llu calls counted for %d ops",
           (unsigned long long)atomic_load(&st.calls), REGION_OPS);
    CHECK(!atomic_load(&c->bad));
    free(c);
}

/* Nesting: a region or a parallel-for inside a task runs serially on the
 * task's thread; a region inside a region runs in the outer one. */
static void inner_region(void *arg)
{
    inner_arg *a = arg;
    sl_pool_for(1000, 1, inner_range, a);
}

static void outer_region_range(void *arg, int64_t i0, int64_t i1)
{
    nest *n = arg;
    for (int64_t i = i0; i < i1; i++) {
        inner_arg a = {pthread_self(), 0, 0};
        sl_pool_region(inner_region, &a);
        atomic_fetch_add(&n->inner_serial, !atomic_load(&a.other_thread));
        atomic_fetch_add(&n->inner_ran, atomic_load(&a.count) == 1000);
        atomic_fetch_add(&n->inner_threads_one, !sl_pool_in_region());
    }
}

static void nested_region(void *arg)
{
    nest *n = arg;
    sl_pool_for(24, 1, outer_region_range, n);
    /* a region inside this one: its ops still run on this region's threads */
    join_probe p = {0};
    sl_pool_region(join_region, &p);
    atomic_store(&n->inner_threads_one, atomic_load(&n->inner_threads_one) +
                 100 * (atomic_load(&p.distinct) == 1 && sl_pool_in_region()));
}

static void test_region_nested(void)
{
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(3);
    nest n = {0};
    sl_pool_for(24, 1, outer_region_range, &n); /* regions in tasks of a call */
    CHECK(atomic_load(&n.inner_serial) == 24);
    CHECK(atomic_load(&n.inner_ran) == 24);
    CHECK(atomic_load(&n.inner_threads_one) == 24);
    n = (nest){0};
    sl_pool_region(nested_region, &n); /* and in tasks of a region's op */
    CHECK(atomic_load(&n.inner_serial) == 24);
    CHECK(atomic_load(&n.inner_ran) == 24);
    CHECKF(atomic_load(&n.inner_threads_one) == 124, "nested region: %d",
           atomic_load(&n.inner_threads_one));
    CHECK(!sl_pool_in_region() && !sl_pool_in_task());
}

/* Two threads running regions at once: one holds the pool, the other's
 * ops run serially (or take the pool between the first one's regions);
 * every barrier holds in both. */
typedef struct region_caller {
    chain *c;
    int rounds;
} region_caller;

static void *region_caller_main(void *arg)
{
    region_caller *k = arg;
    sl_pool_set_thread_limit(3);
    for (int r = 0; r < k->rounds; r++) {
        chain_run run = {k->c, r};
        sl_pool_region(chain_region, &run);
    }
    return NULL;
}

static void test_region_two_callers(void)
{
    sl_pool_set_adaptive(true);
    region_caller k[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        k[i] = (region_caller){calloc(1, sizeof(chain)), 300};
        CHECK(pthread_create(&t[i], NULL, region_caller_main, &k[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECKF(!atomic_load(&k[i].c->bad), "caller %d: a barrier did not hold", i);
        free(k[i].c);
    }
    sl_pool_set_adaptive(false);
}

/* ---- adaptation decisions ---- */

#define MS 1000000ull

/* n calls of 100 us each with the given wait and busy (per call). */
static int feed(sl_pool_adapt *a, uint64_t now, int n, uint64_t wait, uint64_t busy)
{
    int t = a->threads;
    for (int i = 0; i < n; i++)
        t = sl_pool_adapt_record(a, now, wait, busy, 100000);
    return t;
}

static void test_adapt(void)
{
    sl_pool_adapt a;
    sl_pool_adapt_init(&a, 3);
    uint64_t now = 1000 * MS;
    CHECK(sl_pool_adapt_before(&a, now) == 3);
    /* all threads working, little waiting: keep 3 */
    CHECK(feed(&a, now, 3 * SL_POOL_WINDOW, 5000, 280000) == 3);
    /* a decision needs a whole window */
    CHECK(feed(&a, now, SL_POOL_WINDOW - 1, 60000, 280000) == 3);
    CHECK(feed(&a, now, 1, 60000, 280000) == 2); /* waits 60% of the time: one thread fewer */
    CHECK(sl_pool_adapt_before(&a, now + SL_POOL_PROBE0_NS - 1) == 2); /* backing off */
    now += SL_POOL_PROBE0_NS;
    CHECK(sl_pool_adapt_before(&a, now) == 3); /* trial */
    CHECK(a.probing);
    CHECK(feed(&a, now, SL_POOL_WINDOW, 60000, 280000) == 2); /* the trial fails */
    CHECK(a.backoff_ns == 2 * SL_POOL_PROBE0_NS);            /* and backs off longer */
    CHECK(sl_pool_adapt_before(&a, now + SL_POOL_PROBE0_NS) == 2);
    now += 2 * SL_POOL_PROBE0_NS;
    CHECK(sl_pool_adapt_before(&a, now) == 3);
    CHECK(feed(&a, now, SL_POOL_WINDOW, 1000, 290000) == 3); /* the trial holds */
    CHECK(!a.probing && a.backoff_ns == SL_POOL_PROBE0_NS);
    /* threads that take no work (busy = one thread's time): not worth it */
    CHECK(feed(&a, now, SL_POOL_WINDOW, 0, 100000) == 2);
    CHECK(feed(&a, now, SL_POOL_WINDOW, 0, 100000) == 1);
    CHECK(sl_pool_adapt_before(&a, now) == 1);
    /* failed trials back off to at most the cap */
    for (int i = 0; i < 20; i++) {
        now += a.backoff_ns;
        CHECK(sl_pool_adapt_before(&a, now) == 2);
        CHECK(feed(&a, now, SL_POOL_WINDOW, 0, 100000) == 1);
    }
    CHECK(a.backoff_ns == SL_POOL_PROBE_MAX_NS);
    /* a lower ceiling applies at once; a raised one is reached by trials */
    sl_pool_adapt_init(&a, 4);
    sl_pool_adapt_set_max(&a, 2, now);
    CHECK(a.threads == 2);
    sl_pool_adapt_set_max(&a, 4, now);
    CHECK(a.threads == 4); /* it was at its ceiling: follows it */
    CHECK(feed(&a, now, SL_POOL_WINDOW, 80000, 300000) == 3);
    sl_pool_adapt_set_max(&a, 4, now); /* unchanged: nothing moves */
    CHECK(a.threads == 3);
}

/* ---- minimum work ---- */

typedef struct on_caller {
    pthread_t caller;
    _Atomic int calls, elsewhere;
} on_caller;

static void on_caller_range(void *arg, int64_t i0, int64_t i1)
{
    on_caller *o = arg;
    (void)i0, (void)i1;
    atomic_fetch_add(&o->calls, 1);
    if (!pthread_equal(pthread_self(), o->caller))
        atomic_store(&o->elsewhere, 1);
}

typedef struct small_ops {
    on_caller o;
    join_probe p;
    bool big; /* end with an op at the minimum */
} small_ops;

static void small_ops_region(void *arg)
{
    small_ops *r = arg;
    for (int k = 0; k < 20; k++)
        sl_pool_for_work(64, 1, sl_pool_min_work() - 1, on_caller_range, &r->o);
    if (r->big)
        sl_pool_for_work(12, 1, sl_pool_min_work(), join_range, &r->p);
}

static void test_min_work(void)
{
    unsetenv("SLUICE_POOL_MIN_WORK");
    sl_pool_set_min_work(-1);
    CHECK(sl_pool_min_work() == SL_POOL_MIN_WORK_DEFAULT);
    CHECK(sl_pool_work(800, 80) == 810);
    sl_pool_set_min_work(1000);
    CHECK(!sl_pool_worth(999) && sl_pool_worth(1000));
    sl_pool_set_adaptive(false);
    sl_pool_set_threads(3);
    /* below the minimum: one call, on the caller, counted as an op that did
     * not split (its time in op_ns only) */
    sl_pool_stats st = {0};
    sl_pool_set_stats(&st);
    on_caller o = {pthread_self(), 0, 0};
    sl_pool_for_work(64, 1, 999, on_caller_range, &o);
    CHECKF(atomic_load(&o.calls) == 1 && !atomic_load(&o.elsewhere),
           "a call below the minimum work ran as %d chunks, elsewhere %d", atomic_load(&o.calls),
           atomic_load(&o.elsewhere));
    CHECK(atomic_load(&st.calls) == 1 && atomic_load(&st.split_calls) == 0 && atomic_load(&st.split_ns) == 0 &&
          atomic_load(&st.thread_sum) == 0 && atomic_load(&st.last_threads) == 0);
    uint64_t alone_ns = atomic_load(&st.op_ns);
    /* at it: split, and another thread joins */
    join_probe p = {0};
    sl_pool_for_work(12, 1, 1000, join_range, &p);
    CHECKF(atomic_load(&p.distinct) == 1, "a call at the minimum work ran on one thread");
    CHECK(atomic_load(&st.calls) == 2 && atomic_load(&st.split_calls) == 1 && atomic_load(&st.thread_sum) == 3 &&
          atomic_load(&st.last_threads) == 3);
    /* the split op's wall time counts in both, the lone op's in op_ns only */
    CHECKF(atomic_load(&st.split_ns) > 0 && atomic_load(&st.op_ns) == alone_ns + atomic_load(&st.split_ns),
           "op time %llu = alone %llu + split %llu", (unsigned long long)atomic_load(&st.op_ns),
           (unsigned long long)alone_ns, (unsigned long long)atomic_load(&st.split_ns));
    sl_pool_set_stats(NULL);

    /* a region of small ops wakes no worker; its ops count as ops that did
     * not split, and the region once */
    small_ops r = {{pthread_self(), 0, 0}, {0}, false};
    uint64_t opened = sl_pool_regions_opened();
    st = (sl_pool_stats){0};
    sl_pool_set_stats(&st);
    sl_pool_region(small_ops_region, &r);
    CHECKF(sl_pool_regions_opened() == opened, "a region of small ops woke its workers");
    CHECK(atomic_load(&r.o.calls) == 20 && !atomic_load(&r.o.elsewhere));
    CHECK(atomic_load(&st.calls) == 20 && atomic_load(&st.split_calls) == 0 && atomic_load(&st.thread_sum) == 0 &&
          atomic_load(&st.split_ns) == 0 && atomic_load(&st.op_ns) > 0);
    CHECK(atomic_load(&st.regions) == 1);
    /* one op at the minimum opens it, once, and the workers join that op */
    r = (small_ops){{pthread_self(), 0, 0}, {0}, true};
    sl_pool_region(small_ops_region, &r);
    CHECKF(sl_pool_regions_opened() == opened + 1, "%llu regions opened for one",
           (unsigned long long)(sl_pool_regions_opened() - opened));
    CHECK(atomic_load(&r.p.distinct) == 1 && !atomic_load(&r.o.elsewhere));
    sl_pool_set_stats(NULL);

    /* a matmul's work: its weights' bytes and an eighth of its
     * multiply-adds (Q4_0, 64 x 256, 2 tokens: 9216 + 32768 / 8); the same
     * bits whether or not it splits */
    enum { OUT = 64, IN = 256, TOK = 2 };
    size_t rb = sl_row_bytes(SL_TYPE_Q4_0, IN);
    uint8_t *w = malloc(rb * OUT);
    float row[IN], x[TOK * IN], y1[TOK * OUT], y2[TOK * OUT];
    for (int i = 0; i < OUT; i++) {
        for (int c = 0; c < IN; c++)
            row[c] = (float)((i * 31 + c * 7) % 23) / 23.0f - 0.5f;
        sl_quantize_row(SL_TYPE_Q4_0, row, w + (size_t)i * rb, IN);
    }
    for (int c = 0; c < TOK * IN; c++)
        x[c] = (float)(c % 13) / 13.0f - 0.4f;
    int64_t work = (int64_t)rb * OUT + (int64_t)OUT * IN * TOK / 8;
    CHECK(work == 9216 + 4096);
    for (int at = 0; at < 2; at++) {
        sl_pool_set_min_work(at ? work : work + 1);
        st = (sl_pool_stats){0};
        sl_pool_set_stats(&st);
        sl_matmul(SL_TYPE_Q4_0, w, OUT, IN, x, TOK, at ? y2 : y1, OUT);
        sl_pool_set_stats(NULL);
        CHECKF(atomic_load(&st.split_calls) == (uint64_t)at && atomic_load(&st.calls) > (uint64_t)at,
               "a matmul of work %lld with the minimum at %lld: %llu split of %llu ops",
               (long long)work, (long long)sl_pool_min_work(),
               (unsigned long long)atomic_load(&st.split_calls), (unsigned long long)atomic_load(&st.calls));
    }
    CHECK(memcmp(y1, y2, sizeof y1) == 0);
    free(w);
    sl_pool_set_min_work(-1);
}

/* ---- the tiny model's forward pass, 1, 2 and 3 threads ---- */

#define N_TOK 300
#define BATCH 100

static float *forward_logits(sl_model *m, sl_fwd *f, const int32_t *tokens, int threads)
{
    const sl_config *c = &m->cfg;
    sl_pool_set_threads(threads);
    sl_err err = {{0}};
    sl_kv *kv = NULL;
    float *x = malloc(sizeof(float) * BATCH * (size_t)c->d_model);
    float *logits = malloc(sizeof(float) * (N_TOK + 1) * (size_t)c->n_vocab);
    int rc = sl_kv_new(&kv, c, 0, c->n_layer, 1, N_TOK + 1, &err);
    int32_t seq[BATCH] = {0}, pos[BATCH];
    /* batches of 100 (prefill), then one token (decode) */
    for (int start = 0; !rc && start <= N_TOK; start += BATCH) {
        int nb = start == N_TOK ? 1 : BATCH;
        for (int i = 0; i < nb; i++)
            pos[i] = start + i;
        sl_batch b = {.n_tokens = nb, .token = tokens + start, .seq = seq, .pos = pos};
        rc = sl_embed(m, tokens + start, nb, x, &err) || sl_forward_layers(f, kv, &b, x, &err) ||
             sl_head(f, x, nb, logits + (size_t)start * c->n_vocab, &err);
    }
    CHECKF(rc == 0, "%s", err.msg);
    sl_kv_free(kv);
    free(x);
    return logits;
}

static void forward_threads(const char *path)
{
    sl_err err = {{0}};
    sl_model *m = NULL;
    sl_fwd *f = NULL;
    if (sl_model_load(&m, path, NULL, &err) || sl_fwd_new(&f, m, BATCH, &err)) {
        CHECKF(0, "%s", err.msg);
        return;
    }
    int32_t tokens[N_TOK + 1];
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i <= N_TOK; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        tokens[i] = 7 + (int32_t)(r % (uint64_t)(m->cfg.n_vocab - 7));
    }
    sl_pool_set_adaptive(false);
    size_t bytes = sizeof(float) * (N_TOK + 1) * (size_t)m->cfg.n_vocab;
    float *one = forward_logits(m, f, tokens, 1);
    /* every op split, then small ones on the caller (the default) */
    for (int min = 0; min < 2; min++) {
        sl_pool_set_min_work(min ? -1 : 0);
        for (int threads = 2; threads <= 3; threads++) {
            float *many = forward_logits(m, f, tokens, threads);
            CHECKF(memcmp(one, many, bytes) == 0,
                   "forward of %s: 1 and %d threads differ (minimum work %lld)", path, threads,
                   (long long)sl_pool_min_work());
            free(many);
        }
    }
    free(one);
    sl_fwd_free(f);
    sl_model_free(m);
}

/* The tiny Gemma 3, and a synth Gemma 4 (per-layer inputs, KV sharing). */
static void test_forward_threads(void)
{
    const char *src = getenv("SLUICE_SRC"), *sluice = getenv("SLUICE");
    char path[4096], cmd[8192];
    snprintf(path, sizeof path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    forward_threads(path);
    if (!sluice) {
        fprintf(stderr, "test_pool: SLUICE not set; the Gemma 4 forward is not checked\n");
        return;
    }
    snprintf(path, sizeof path, "/tmp/test_pool_g4_%d.gguf", (int)getpid());
    snprintf(cmd, sizeof cmd, "'%s' synth --arch gemma4 --size test -o '%s' >/dev/null", sluice,
             path);
    CHECK(system(cmd) == 0);
    forward_threads(path);
    unlink(path);
}

/* sl_thread_scratch: a buffer a slot and a thread, 64-byte aligned, kept
 * while it is big enough, grown when asked for more; another slot or
 * another thread has its own. */
static void *scratch_other_thread(void *arg)
{
    return sl_thread_scratch(SL_SCRATCH_Q8ACT, (size_t)(uintptr_t)arg);
}

static void test_thread_scratch(void)
{
    uint8_t *a = sl_thread_scratch(SL_SCRATCH_Q8ACT, 100);
    CHECK(a && ((uintptr_t)a & 63) == 0);
    memset(a, 0x5a, 100);
    CHECK(sl_thread_scratch(SL_SCRATCH_Q8ACT, 64) == a); /* smaller: the same buffer */
    uint8_t *b = sl_thread_scratch(SL_SCRATCH_Q6UNPACK, 100);
    CHECK(b && b != a && ((uintptr_t)b & 63) == 0);
    uint8_t *c = sl_thread_scratch(SL_SCRATCH_Q8ACT, 1 << 20);
    CHECK(c && ((uintptr_t)c & 63) == 0);
    memset(c, 1, 1 << 20); /* all of it is ours (ASan checks) */
    CHECK(sl_thread_scratch(SL_SCRATCH_Q8ACT, 1 << 20) == c);
    pthread_t t;
    void *other = NULL;
    CHECK(pthread_create(&t, NULL, scratch_other_thread, (void *)(uintptr_t)4096) == 0);
    pthread_join(t, &other);
    CHECK(other && other != c && other != b);
    CHECK(sl_thread_scratch(-1, 8) == NULL && sl_thread_scratch(SL_SCRATCH_SLOTS, 8) == NULL);
}

int main(void)
{
    test_adapt();
    test_coverage();
    test_fewer_than_started();
    test_workers_join();
    test_nested();
    test_sleep_wake();
    test_two_callers();
    test_region_barrier();
    test_region_workers();
    test_region_nested();
    test_region_two_callers();
    test_min_work();
    test_forward_threads();
    test_thread_scratch();
    return test_finish("test_pool");
}
