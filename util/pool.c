#define _GNU_SOURCE /* syscall */
#include "util/pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "util/cpus.h"

#define MAX_WORKERS 255
/* Chunks a call is cut into per thread: a worker that loses its core holds
 * back one of these, not a whole share. */
#define CHUNKS_PER_THREAD 4
/* A worker spins this long for the next call before it sleeps: long enough
 * to cover the gap between the kernels of one layer step, short enough that
 * a stage idle between micro-batches gives its core away. */
#define WORKER_SPIN_NS 50000
#define CALLER_SPIN_NS 50000
#define CLOSED UINT32_MAX /* chunk index of a call being set up */

typedef struct worker {
    _Alignas(64) _Atomic uint32_t seq; /* the call to join (its generation) */
    _Atomic int sleeping;
} worker;

static struct {
    pthread_mutex_t lock; /* held by the thread whose call runs */
    _Atomic int n_threads; /* the process's count; 0 until first asked */
    _Atomic int n_workers; /* started */
    _Atomic bool adaptive;
    _Atomic int64_t min_work; /* < 0 until first asked */
    _Atomic uint64_t regions_opened;
    worker workers[MAX_WORKERS];
    /* the current call: generation << 32 | next chunk to claim */
    _Alignas(64) _Atomic uint64_t state;
    _Alignas(64) _Atomic uint32_t done; /* chunks finished */
    _Atomic int caller_sleeping;
    _Atomic uint64_t busy_ns;
    /* a region: its id (the generation that opened it; 0 outside one), and
     * the generation of its latest op, which its workers wait on */
    _Alignas(64) _Atomic uint32_t region;
    _Atomic uint32_t op;
    _Atomic int op_sleepers;
    /* the call's description, written while state says CLOSED */
    _Atomic(sl_pool_fn) fn;
    _Atomic(void *) arg;
    _Atomic int64_t n, chunk;
    _Atomic uint32_t n_chunks;
    uint32_t gen;
    /* the prefetch hint (sl_pool_prefetch): its generation and each
     * thread's span; read without a lock (a torn span only prefetches the
     * wrong lines, which never faults) */
    _Alignas(64) _Atomic uint32_t pf_seq;
    _Atomic uintptr_t pf_addr[SL_POOL_PF_THREADS];
    _Atomic size_t pf_bytes[SL_POOL_PF_THREADS];
} P = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .adaptive = true,
       .min_work = -1};

static _Thread_local bool tls_in_task;
static _Thread_local int tls_limit;
static _Thread_local sl_pool_stats *tls_stats;
static _Thread_local sl_pool_adapt tls_adapt; /* this thread's calls' count */
static _Thread_local sl_pool_counters tls_counters;
static _Thread_local bool tls_in_op; /* inside an op counted in tls_stats */
static _Thread_local int tls_index;     /* 0: a caller; worker i: i + 1 */
static _Thread_local uint32_t tls_pf_seen; /* the last prefetch hint taken */
static _Thread_local uintptr_t tls_pf_at, tls_pf_end; /* what is left of its span */

/* The region the calling thread holds: its thread count and what its ops
 * cost, summed for one adaptation decision. */
typedef struct region_acc {
    int threads;
    bool adapting, open; /* open: its workers were woken */
    uint64_t excess_ns, busy_ns, wall_ns;
} region_acc;
static _Thread_local region_acc *tls_region;

uint64_t sl_pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void cpu_relax(void)
{
#if defined(__x86_64__)
    _mm_pause();
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* ---- prefetch hints ---- */

#define PF_LINE 64
#define PF_BATCH 16 /* lines between looks at the word a waiting thread watches */

/* This thread's span of the latest hint, into L2, from where it left off:
 * a waiting thread stops when *word leaves seen (its next op has come, or
 * at the caller's barrier a chunk finished) and goes on at its next wait;
 * the op's own reads take over from where it stopped. */
static void pf_take(const _Atomic uint32_t *word, uint32_t seen)
{
    uint32_t seq = atomic_load_explicit(&P.pf_seq, memory_order_acquire);
    if (seq != tls_pf_seen) {
        tls_pf_seen = seq;
        tls_pf_at = tls_pf_end = 0;
        if (tls_index < SL_POOL_PF_THREADS) {
            uintptr_t a = atomic_load_explicit(&P.pf_addr[tls_index], memory_order_relaxed);
            size_t bytes = atomic_load_explicit(&P.pf_bytes[tls_index], memory_order_relaxed);
            tls_pf_at = a & ~(uintptr_t)(PF_LINE - 1);
            tls_pf_end = a + bytes;
        }
    }
    while (tls_pf_at < tls_pf_end) {
        for (int i = 0; i < PF_BATCH && tls_pf_at < tls_pf_end; i++, tls_pf_at += PF_LINE) {
#if defined(__x86_64__)
            _mm_prefetch((const char *)tls_pf_at, _MM_HINT_T1);
#else
            __builtin_prefetch((const void *)tls_pf_at, 0, 2);
#endif
        }
        if (atomic_load_explicit(word, memory_order_relaxed) != seen)
            return;
    }
}

void sl_pool_prefetch(const sl_pool_span *spans, int n)
{
    if (n > SL_POOL_PF_THREADS)
        n = SL_POOL_PF_THREADS;
    if (n < 0)
        n = 0;
    for (int t = 0; t < SL_POOL_PF_THREADS; t++) {
        atomic_store_explicit(&P.pf_addr[t], t < n ? (uintptr_t)spans[t].p : 0,
                              memory_order_relaxed);
        atomic_store_explicit(&P.pf_bytes[t], t < n ? spans[t].bytes : 0, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&P.pf_seq, 1, memory_order_release);
}

int sl_pool_thread_index(void) { return tls_index; }

/* ---- adaptation (pure) ---- */

void sl_pool_adapt_init(sl_pool_adapt *a, int max)
{
    *a = (sl_pool_adapt){.threads = max, .max = max, .backoff_ns = SL_POOL_PROBE0_NS};
}

static void window_reset(sl_pool_adapt *a)
{
    a->win_calls = 0;
    a->win_wait_ns = a->win_busy_ns = a->win_total_ns = 0;
}

void sl_pool_adapt_set_max(sl_pool_adapt *a, int max, uint64_t now_ns)
{
    if (max == a->max)
        return;
    if (a->threads > max || a->threads == a->max)
        a->threads = max; /* follow a ceiling we were at */
    a->max = max;
    a->probing = false;
    a->probe_at_ns = now_ns;
    window_reset(a);
}

int sl_pool_adapt_before(sl_pool_adapt *a, uint64_t now_ns)
{
    if (a->threads < a->max && !a->probing && now_ns >= a->probe_at_ns) {
        a->threads++;
        a->probing = true;
        window_reset(a);
    }
    return a->threads;
}

int sl_pool_adapt_record(sl_pool_adapt *a, uint64_t now_ns, uint64_t wait_ns, uint64_t busy_ns,
                         uint64_t call_ns)
{
    a->win_wait_ns += wait_ns;
    a->win_busy_ns += busy_ns;
    a->win_total_ns += call_ns;
    if (++a->win_calls < SL_POOL_WINDOW)
        return a->threads;
    double total = (double)a->win_total_ns;
    bool bad = (double)a->win_wait_ns > SL_POOL_WAIT_HIGH * total ||
               (double)a->win_busy_ns < (1 + SL_POOL_GAIN_MIN * (a->threads - 1)) * total;
    window_reset(a);
    if (bad && a->threads > 1) {
        /* a failed trial backs off longer each time; a fresh loss of a core
         * tries again soon */
        a->backoff_ns = a->probing ? a->backoff_ns * 2 : SL_POOL_PROBE0_NS;
        if (a->backoff_ns > SL_POOL_PROBE_MAX_NS)
            a->backoff_ns = SL_POOL_PROBE_MAX_NS;
        a->threads--;
        a->probing = false;
        a->probe_at_ns = now_ns + a->backoff_ns;
    } else if (a->probing) {
        a->probing = false; /* the trial held: keep it, and try one more soon */
        a->backoff_ns = SL_POOL_PROBE0_NS;
        a->probe_at_ns = now_ns + a->backoff_ns;
    }
    return a->threads;
}

/* ---- the pool ---- */

/* A split op (threads > 1) of the calling thread, wall_ns long. */
static void stats_split(int threads, uint64_t wait_ns, uint64_t busy_ns, uint64_t wall_ns)
{
    tls_counters.calls++;
    tls_counters.wait_ns += wait_ns;
    tls_counters.busy_ns += busy_ns;
    sl_pool_stats *st = tls_stats;
    if (!st || tls_in_op)
        return;
    atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->op_ns, wall_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->split_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->split_ns, wall_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->thread_sum, (uint64_t)threads, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->wait_ns, wait_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->busy_ns, busy_ns, memory_order_relaxed);
    atomic_store_explicit(&st->last_threads, (uint32_t)threads, memory_order_relaxed);
}

/* An op run on the calling thread alone: fn over [0, n), timed when the
 * thread's ops are counted (an op nested in a counted one is not: its time
 * is the outer op's). in_task: as a task (nested calls run serially). */
static void run_alone(int64_t n, sl_pool_fn fn, void *arg, bool in_task)
{
    sl_pool_stats *st = tls_in_task || tls_in_op ? NULL : tls_stats;
    uint64_t t0 = st ? sl_pool_now_ns() : 0;
    bool was_task = tls_in_task, was_op = tls_in_op;
    tls_in_op = was_op || st != NULL;
    tls_in_task = was_task || in_task;
    fn(arg, 0, n);
    tls_in_task = was_task;
    tls_in_op = was_op;
    if (st) {
        atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&st->op_ns, sl_pool_now_ns() - t0, memory_order_relaxed);
    }
}

/* Claims and runs chunks of call gen until none is left. A claim succeeds
 * only while the state still names gen, so the description read before it
 * is gen's (a new call closes the state before rewriting it). */
static void run_chunks(uint32_t gen)
{
    uint64_t v = atomic_load_explicit(&P.state, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(v >> 32) != gen)
            return;
        uint32_t c = (uint32_t)v;
        uint32_t n_chunks = atomic_load_explicit(&P.n_chunks, memory_order_relaxed);
        if (c == CLOSED || c >= n_chunks)
            return;
        sl_pool_fn fn = atomic_load_explicit(&P.fn, memory_order_relaxed);
        void *arg = atomic_load_explicit(&P.arg, memory_order_relaxed);
        int64_t n = atomic_load_explicit(&P.n, memory_order_relaxed);
        int64_t chunk = atomic_load_explicit(&P.chunk, memory_order_relaxed);
        if (!atomic_compare_exchange_weak_explicit(&P.state, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        int64_t i0 = (int64_t)c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        uint64_t t0 = sl_pool_now_ns();
        fn(arg, i0, i1);
        atomic_fetch_add_explicit(&P.busy_ns, sl_pool_now_ns() - t0, memory_order_relaxed);
        if (atomic_fetch_add(&P.done, 1) + 1 == n_chunks && atomic_load(&P.caller_sleeping))
            futex_wake(&P.done);
        v = atomic_load_explicit(&P.state, memory_order_acquire);
    }
}

/* Spins up to WORKER_SPIN_NS for *word to leave seen; true with its new
 * value in *now, false when the caller should sleep on it. */
static bool spin_until_changed(_Atomic uint32_t *word, uint32_t seen, uint32_t *now)
{
    uint64_t t0 = sl_pool_now_ns();
    for (int i = 0;; i++) {
        *now = atomic_load_explicit(word, memory_order_acquire);
        if (*now != seen)
            return true;
        pf_take(word, seen);
        if ((i & 63) == 63 && sl_pool_now_ns() - t0 > WORKER_SPIN_NS)
            return false;
        cpu_relax();
    }
}

/* Waits for *seq to leave seen: spinning first, then asleep. */
static uint32_t worker_wait(worker *w, uint32_t seen)
{
    uint32_t now;
    if (spin_until_changed(&w->seq, seen, &now))
        return now;
    for (;;) {
        atomic_store(&w->sleeping, 1);
        uint32_t s = atomic_load(&w->seq);
        if (s == seen)
            futex_wait(&w->seq, seen);
        atomic_store(&w->sleeping, 0);
        s = atomic_load_explicit(&w->seq, memory_order_acquire);
        if (s != seen)
            return s;
    }
}

/* Waits for the region's next op (or its end) after op seen: spinning
 * covers the caller's serial work between two ops, sleeping a long gap. */
static uint32_t op_wait(uint32_t seen)
{
    uint32_t now;
    if (spin_until_changed(&P.op, seen, &now))
        return now;
    for (;;) {
        atomic_fetch_add(&P.op_sleepers, 1);
        if (atomic_load(&P.op) == seen)
            futex_wait(&P.op, seen);
        atomic_fetch_sub(&P.op_sleepers, 1);
        uint32_t op = atomic_load_explicit(&P.op, memory_order_acquire);
        if (op != seen)
            return op;
    }
}

/* A worker in region id: joins each op until the region closes. The op is
 * read before the region is checked, so an op of a later region is never
 * taken for one of this one (its opening is published before its ops). A
 * worker that arrives late joins the op running then. */
static void region_worker(uint32_t id)
{
    uint32_t op = atomic_load_explicit(&P.op, memory_order_acquire);
    while (atomic_load(&P.region) == id) {
        run_chunks(op);
        op = op_wait(op);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    tls_in_task = true; /* kernels called from a task run serially */
    tls_index = (int)(w - P.workers) + 1;
    uint32_t seen = atomic_load(&w->seq);
    for (;;) {
        seen = worker_wait(w, seen);
        if (atomic_load(&P.region) == seen)
            region_worker(seen);
        else
            run_chunks(seen);
    }
    return NULL;
}

/* Starts workers up to n (the caller holds P.lock). Workers block signals:
 * the process's handlers run on its own threads. */
static int start_workers(int n)
{
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    int have = atomic_load(&P.n_workers);
    if (have >= n)
        return have;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (; have < n; have++) {
        pthread_t tid;
        worker *w = &P.workers[have];
        atomic_store(&w->seq, P.gen);
        if (pthread_create(&tid, NULL, worker_main, w)) {
            fprintf(stderr, "sluice: could not start pool thread %d; using %d\n", have + 1,
                    have);
            break;
        }
        pthread_detach(tid);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    atomic_store(&P.n_workers, have);
    return have;
}

/* A forked child has none of the parent's threads. */
static void after_fork_child(void)
{
    pthread_mutex_init(&P.lock, NULL);
    atomic_store(&P.n_workers, 0);
    atomic_store(&P.region, 0);
    atomic_store(&P.op_sleepers, 0);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void register_fork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

void sl_pool_set_threads(int n)
{
    atomic_store(&P.n_threads, n > 0 ? n : sl_cpus_threads(0));
}

int sl_pool_threads(void)
{
    int n = atomic_load(&P.n_threads);
    if (n <= 0) {
        n = sl_cpus_threads(0);
        atomic_store(&P.n_threads, n);
    }
    return n;
}

void sl_pool_set_thread_limit(int n) { tls_limit = n > 0 ? n : 0; }
bool sl_pool_in_task(void) { return tls_in_task; }
void sl_pool_set_stats(sl_pool_stats *st) { tls_stats = st; }
sl_pool_counters sl_pool_thread_counters(void) { return tls_counters; }
void sl_pool_set_adaptive(bool on) { atomic_store(&P.adaptive, on); }
int sl_pool_workers(void) { return atomic_load(&P.n_workers); }

int sl_pool_workers_asleep(void)
{
    int n = 0, have = atomic_load(&P.n_workers);
    for (int i = 0; i < have; i++)
        n += atomic_load(&P.workers[i].sleeping);
    return n;
}

static int wanted_threads(void)
{
    int n = tls_limit > 0 ? tls_limit : sl_pool_threads();
    return n > MAX_WORKERS + 1 ? MAX_WORKERS + 1 : n;
}

bool sl_pool_in_region(void) { return tls_region && !tls_in_task; }
uint64_t sl_pool_regions_opened(void) { return atomic_load(&P.regions_opened); }

int64_t sl_pool_min_work(void)
{
    int64_t w = atomic_load_explicit(&P.min_work, memory_order_relaxed);
    if (w >= 0)
        return w;
    w = SL_POOL_MIN_WORK_DEFAULT;
    const char *e = getenv("SLUICE_POOL_MIN_WORK");
    if (e && *e) {
        char *end;
        long long v = strtoll(e, &end, 10);
        if (*end == '\0' && v >= 0)
            w = v;
        else
            fprintf(stderr, "sluice: SLUICE_POOL_MIN_WORK=%s is not a count; using %lld\n", e,
                    (long long)w);
    }
    atomic_store_explicit(&P.min_work, w, memory_order_relaxed);
    return w;
}

void sl_pool_set_min_work(int64_t work)
{
    atomic_store(&P.min_work, work < 0 ? -1 : work);
}

bool sl_pool_worth(int64_t work) { return work >= sl_pool_min_work(); }

int sl_pool_current_threads(void)
{
    if (tls_in_task)
        return 1;
    if (tls_region)
        return tls_region->threads;
    int want = wanted_threads();
    if (!atomic_load(&P.adaptive) || tls_adapt.max != want)
        return want;
    return tls_adapt.threads < want ? tls_adapt.threads : want;
}

/* Sets workers [0, threads-1) to join generation gen. */
static void wake_workers(uint32_t gen, int threads)
{
    for (int i = 0; i < threads - 1; i++) {
        worker *w = &P.workers[i];
        atomic_store(&w->seq, gen);
        if (atomic_load(&w->sleeping))
            futex_wake(&w->seq);
    }
}

/* Publishes the call (the caller holds P.lock): to threads-1 workers woken
 * for it, or in a region to the workers already in it. */
static uint32_t post(int64_t n, int64_t chunk, uint32_t n_chunks, sl_pool_fn fn, void *arg,
                     int threads)
{
    uint32_t gen = ++P.gen;
    if (gen == 0)
        gen = ++P.gen; /* 0 means no region */
    atomic_store(&P.state, (uint64_t)gen << 32 | CLOSED);
    atomic_store_explicit(&P.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&P.arg, arg, memory_order_relaxed);
    atomic_store_explicit(&P.n, n, memory_order_relaxed);
    atomic_store_explicit(&P.chunk, chunk, memory_order_relaxed);
    atomic_store_explicit(&P.n_chunks, n_chunks, memory_order_relaxed);
    atomic_store(&P.done, 0);
    atomic_store(&P.busy_ns, 0);
    atomic_store(&P.state, (uint64_t)gen << 32);
    if (tls_region) {
        atomic_store(&P.op, gen);
        if (atomic_load(&P.op_sleepers))
            futex_wake_all(&P.op);
    } else {
        wake_workers(gen, threads);
    }
    return gen;
}

/* The caller's barrier: spins, then sleeps until every chunk is done. */
static void join(uint32_t n_chunks)
{
    uint64_t t0 = sl_pool_now_ns();
    for (int i = 0;; i++) {
        uint32_t d = atomic_load_explicit(&P.done, memory_order_acquire);
        if (d >= n_chunks)
            break;
        pf_take(&P.done, d); /* the caller's part of the next op, while it waits */
        if ((i & 63) == 63 && sl_pool_now_ns() - t0 > CALLER_SPIN_NS) {
            atomic_store(&P.caller_sleeping, 1);
            d = atomic_load(&P.done);
            if (d < n_chunks)
                futex_wait(&P.done, d);
            atomic_store(&P.caller_sleeping, 0);
        } else {
            cpu_relax();
        }
    }
}

/* One parallel call with threads threads (the caller holds P.lock). */
static void run_parallel(int64_t n, int64_t grain, sl_pool_fn fn, void *arg, int threads,
                         bool adapting, bool exact)
{
    int64_t chunk = (n + (int64_t)threads * CHUNKS_PER_THREAD - 1) /
                    ((int64_t)threads * CHUNKS_PER_THREAD);
    if (chunk < grain || exact)
        chunk = grain;
    uint32_t n_chunks = (uint32_t)((n + chunk - 1) / chunk);
    uint64_t t0 = sl_pool_now_ns();
    uint32_t gen = post(n, chunk, n_chunks, fn, arg, threads);
    tls_in_task = true;
    run_chunks(gen);
    uint64_t t_out = sl_pool_now_ns();
    join(n_chunks);
    tls_in_task = false;
    uint64_t t1 = sl_pool_now_ns();
    uint64_t busy = atomic_load(&P.busy_ns);
    /* waiting up to one chunk's time is the split's granularity, not a
     * thread that lost its core */
    uint64_t wait = t1 - t_out, chunk_ns = busy / n_chunks;
    uint64_t excess = wait > chunk_ns ? wait - chunk_ns : 0;
    region_acc *r = tls_region;
    if (r && adapting) {
        r->excess_ns += excess;
        r->busy_ns += busy;
        r->wall_ns += t1 - t0;
    } else if (adapting) {
        sl_pool_adapt_record(&tls_adapt, t1, excess, busy, t1 - t0);
    }
    stats_split(threads, wait, busy, t1 - t0);
}

/* Opens a region for threads threads (the caller holds P.lock). */
static void region_open(int threads)
{
    uint32_t gen = ++P.gen;
    if (gen == 0)
        gen = ++P.gen;
    atomic_store(&P.state, (uint64_t)gen << 32 | CLOSED);
    atomic_store(&P.op, gen);
    atomic_store(&P.region, gen);
    wake_workers(gen, threads);
    atomic_fetch_add_explicit(&P.regions_opened, 1, memory_order_relaxed);
}

/* Sends the region's workers back to waiting for the next call. */
static void region_close(void)
{
    atomic_store(&P.region, 0);
    uint32_t gen = ++P.gen;
    if (gen == 0)
        gen = ++P.gen;
    atomic_store(&P.state, (uint64_t)gen << 32 | CLOSED);
    atomic_store(&P.op, gen);
    if (atomic_load(&P.op_sleepers))
        futex_wake_all(&P.op);
}

/* An op of the calling thread's region: split as a call of its own would
 * be, run by the threads in the region. */
static void region_op(int64_t n, int64_t grain, sl_pool_fn fn, void *arg, bool exact)
{
    region_acc *r = tls_region;
    int threads = r->threads;
    int64_t max_chunks = (n + grain - 1) / grain;
    bool whole = threads <= max_chunks; /* only then it says something about the count */
    if (!whole)
        threads = (int)max_chunks;
    if (threads <= 1) {
        run_alone(n, fn, arg, true);
        return;
    }
    if (!r->open) {
        region_open(r->threads); /* all of them: later ops may use more */
        r->open = true;
    }
    run_parallel(n, grain, fn, arg, threads, r->adapting && whole, exact);
}

/* Takes the pool for a call or region of up to want threads: the thread
 * count to use (adapted when *adapting), or 0 when the pool is busy. */
static int take_pool(int want, bool *adapting)
{
    if (pthread_mutex_trylock(&P.lock))
        return 0;
    pthread_once(&fork_once, register_fork);
    int started = start_workers(want - 1) + 1; /* more may run for other callers */
    int threads = started < want ? started : want;
    uint64_t now = sl_pool_now_ns();
    if (tls_adapt.max == 0)
        sl_pool_adapt_init(&tls_adapt, threads);
    sl_pool_adapt_set_max(&tls_adapt, threads, now);
    *adapting = atomic_load(&P.adaptive);
    if (*adapting)
        threads = sl_pool_adapt_before(&tls_adapt, now);
    return threads;
}

void sl_pool_region(sl_pool_region_fn fn, void *arg)
{
    int want = tls_in_task || tls_region ? 1 : wanted_threads();
    bool adapting = false;
    int threads = want > 1 ? take_pool(want, &adapting) : 0;
    if (threads == 0) {
        fn(arg); /* nested, one thread, or the pool is busy elsewhere */
        return;
    }
    region_acc r = {threads, adapting, false, 0, 0, 0};
    tls_region = &r; /* opened by its first op that runs in parallel */
    fn(arg);
    tls_region = NULL;
    if (r.open)
        region_close();
    if (r.adapting && r.wall_ns > 0)
        sl_pool_adapt_record(&tls_adapt, sl_pool_now_ns(), r.excess_ns, r.busy_ns, r.wall_ns);
    if (tls_stats)
        atomic_fetch_add_explicit(&tls_stats->regions, 1, memory_order_relaxed);
    pthread_mutex_unlock(&P.lock);
}

void sl_pool_for_work(int64_t n, int64_t grain, int64_t work, sl_pool_fn fn, void *arg)
{
    if (n <= 0)
        return;
    if (sl_pool_worth(work)) {
        sl_pool_for(n, grain, fn, arg);
        return;
    }
    /* as a call too small to split: in a region it counts as one-thread
     * op, as sl_pool_for's own serial ops do */
    sl_pool_for(n, n, fn, arg);
}

static void pool_for(int64_t n, int64_t grain, sl_pool_fn fn, void *arg, bool exact)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    if (tls_region && !tls_in_task) {
        region_op(n, grain, fn, arg, exact);
        return;
    }
    int want = n > grain && !tls_in_task ? wanted_threads() : 1;
    bool adapting = false;
    int threads = want > 1 ? take_pool(want, &adapting) : 0;
    if (threads == 0) {
        run_alone(n, fn, arg, false); /* nested, too small, or the pool is busy elsewhere */
        return;
    }
    int64_t max_chunks = (n + grain - 1) / grain;
    if (threads > max_chunks) {
        threads = (int)max_chunks;
        adapting = false; /* the call says nothing about the count chosen */
    }
    if (threads <= 1) {
        run_alone(n, fn, arg, true);
    } else {
        run_parallel(n, grain, fn, arg, threads, adapting, exact);
    }
    pthread_mutex_unlock(&P.lock);
}

void sl_pool_for(int64_t n, int64_t grain, sl_pool_fn fn, void *arg)
{
    pool_for(n, grain, fn, arg, false);
}

void sl_pool_for_each(int64_t n, int64_t chunk, sl_pool_fn fn, void *arg)
{
    pool_for(n, chunk, fn, arg, true);
}
