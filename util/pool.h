/* One worker pool per process, shared by every stage in it (replaces
 * OpenMP). A parallel-for cuts [0, n) into chunks that threads claim one at
 * a time; the caller works too and returns when every chunk is done (one
 * barrier per call). Callers must make each element's arithmetic independent
 * of the chunk it lands in, so results are bit-identical whatever the thread
 * count: split reductions by rows or outputs, never inside a sum.
 *
 * Waiting workers spin briefly, then sleep on a futex: a stage idle between
 * micro-batches costs no core. Claiming chunks (instead of owning a static
 * share) means a worker whose core another process took holds back at most
 * the chunk it is in. While running, the pool measures how long the caller
 * waits at the barrier; when waits grow it uses fewer threads for the next
 * calls and probes more again later.
 *
 * A call from inside a pool task, or while another thread's call holds the
 * pool, runs serially on the calling thread.
 *
 * A region (sl_pool_region) holds the pool across several parallel-fors,
 * such as the ops of one layer step: the workers are woken once and stay
 * in it, and each parallel-for inside costs one barrier (publish the op,
 * everyone claims its chunks, the caller waits for the last) instead of a
 * lock, a wake-up and a join. Each op is split exactly as outside a region,
 * so results stay bit-identical; the adaptation decides once per region.
 * The workers are woken at the region's first op that runs on more than
 * one thread: a region of small ops never wakes them. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Processes [i0, i1) of the range. */
typedef void (*sl_pool_fn)(void *arg, int64_t i0, int64_t i1);

/* Runs fn over [0, n) on up to the calling thread's thread count; chunks
 * hold at least grain items (ranges of at most grain items run serially). */
void sl_pool_for(int64_t n, int64_t grain, sl_pool_fn fn, void *arg);
/* sl_pool_for with chunks of exactly `chunk` items (the last may hold
 * fewer), however many that makes: for calls of many large, even items
 * (a prefill's matmul units), where claiming each costs little against
 * it and the threads' last chunks then end within one item of each other
 * (sl_pool_for's four chunks a thread left one thread a whole chunk of a
 * call behind the other). */
void sl_pool_for_each(int64_t n, int64_t chunk, sl_pool_fn fn, void *arg);

/* Work below which an op runs on the calling thread alone: joining a
 * second thread costs more than it saves. Work is counted as the bytes the
 * whole call reads from memory or L3 plus an eighth of its multiply-adds
 * (sl_pool_work: a one-token matmul streams its weights, a batch's int8
 * dot products run at about 8 a byte of such a stream). An op's split never
 * changes its results, so the decision changes only where it runs.
 * bench/pool_cost.sh measures where a second thread starts to pay: on Zen 5
 * (2 cores of a VM) one-token matmuls of bf16 and Q4_0 both cross at 0.4-0.6
 * MB of weights (about 15 us on one thread). SLUICE_POOL_MIN_WORK in the
 * environment overrides the default (read once). */
#define SL_POOL_MIN_WORK_DEFAULT ((int64_t)512 << 10)
static inline int64_t sl_pool_work(int64_t bytes, int64_t macs) { return bytes + macs / 8; }
int64_t sl_pool_min_work(void);
void sl_pool_set_min_work(int64_t work); /* < 0: back to the default */
/* Whether a call of this much work is worth more than one thread. */
bool sl_pool_worth(int64_t work);
/* sl_pool_for, run on the calling thread alone unless sl_pool_worth(work). */
void sl_pool_for_work(int64_t n, int64_t grain, int64_t work, sl_pool_fn fn, void *arg);

/* Runs fn(arg) on the calling thread while holding the pool: every
 * sl_pool_for fn makes runs on the region's threads. Nested in a task, or
 * while another thread holds the pool, fn runs with ordinary calls (serial
 * in a task, each call trying the pool otherwise). */
typedef void (*sl_pool_region_fn)(void *arg);
void sl_pool_region(sl_pool_region_fn fn, void *arg);
/* Whether sl_pool_for here runs as an op of a region (not in a task). */
bool sl_pool_in_region(void);

/* The process's thread count (the caller included): what threads calling
 * sl_pool_for use unless they set their own. n <= 0: the cores available
 * (util/cpus.h). Workers start lazily on the first parallel call. */
void sl_pool_set_threads(int n);
int sl_pool_threads(void);
/* The calling thread's own limit (a stage host's team size); 0: the
 * process's count. */
void sl_pool_set_thread_limit(int n);
/* The thread count the calling thread's next call would use (its limit and
 * the pool's current adaptation); 1 inside a pool task. */
int sl_pool_current_threads(void);
bool sl_pool_in_task(void);

/* The calling thread's index in the pool's teams: 0 for a caller (the
 * thread that makes a call or holds a region), i + 1 for worker i. A call
 * of threads threads runs on the caller and workers 0 .. threads - 2, so a
 * split that gives part t to index t (the decode split, kernels/matmul.c)
 * knows beforehand which thread starts where. */
int sl_pool_thread_index(void);

/* A prefetch hint for the next op: thread t of the team (its index above)
 * will start by reading spans[t]. Each thread prefetches its own span into
 * L2 while it would otherwise wait, never in the foreground: a worker
 * waiting for the next op of a region (or the next call), the caller at a
 * barrier after its last chunk; a thread stops when its wait ends and goes
 * on from there at its next wait, until the span is done or a new hint
 * comes (n = 0: none, e.g. once the op has started). Only the first
 * SL_POOL_PF_THREADS threads take one. A hint never changes what an op
 * computes; a stale or wrong span costs only the lines read. */
#define SL_POOL_PF_THREADS 8
typedef struct sl_pool_span {
    const void *p;
    size_t bytes;
} sl_pool_span;
void sl_pool_prefetch(const sl_pool_span *spans, int n);

/* Counters of the ops (sl_pool_for calls; a region's ops each count) made
 * by the threads that point at one (a stage host's), outside of tasks:
 * every op and its wall time, and of those the ops split over more than one
 * thread, their wall time and the threads they used (sum; the last split
 * op's count), the caller's wait at their barriers after it ran out of
 * chunks and every thread's time in their chunks; regions entered. An op
 * that ran on the caller alone (too small to split, the pool busy
 * elsewhere) counts in calls and op_ns only, so the share of op time that
 * ran split is split_ns / op_ns and the threads a split op used
 * thread_sum / split_calls. */
typedef struct sl_pool_stats {
    _Atomic uint64_t calls, op_ns;
    _Atomic uint64_t split_calls, split_ns, thread_sum, wait_ns, busy_ns;
    _Atomic uint64_t regions;
    _Atomic uint32_t last_threads; /* the last split op's; 0: none yet */
} sl_pool_stats;
/* Where the calling thread's calls count (NULL: nowhere). */
void sl_pool_set_stats(sl_pool_stats *st);
/* The calling thread's own running totals as a caller (for profiles such as
 * `sluice bench --profile`): parallel calls, its wait at their barriers
 * after it ran out of chunks, and every thread's time in their chunks. */
typedef struct sl_pool_counters {
    uint64_t calls, wait_ns, busy_ns;
} sl_pool_counters;
sl_pool_counters sl_pool_thread_counters(void);

/* Adaptation (each calling thread adapts its own count): a pure decision
 * on (time, measurements), unit tested. Over windows of calls that used
 * `threads` threads it sums the caller's barrier wait, the time threads
 * spent in chunks and the calls' wall time. A window drops a thread when
 * its waits exceed SL_POOL_WAIT_HIGH of the time (a thread lost its core
 * mid-chunk), or when the threads did not earn their keep: less than
 * 1 + SL_POOL_GAIN_MIN per extra thread of work per unit of wall time (a
 * woken thread arrived too late to take chunks). After a back-off, longer
 * after each failed trial, a thread is added back on trial. */
#define SL_POOL_WAIT_HIGH 0.25
#define SL_POOL_GAIN_MIN 0.25
#define SL_POOL_WINDOW 16           /* parallel calls per decision */
#define SL_POOL_PROBE0_NS 20000000u /* first back-off: 20 ms */
#define SL_POOL_PROBE_MAX_NS 1000000000u

typedef struct sl_pool_adapt {
    int threads, max;
    int win_calls;
    uint64_t win_wait_ns, win_busy_ns, win_total_ns;
    uint64_t backoff_ns, probe_at_ns;
    bool probing; /* threads was raised on trial */
} sl_pool_adapt;

void sl_pool_adapt_init(sl_pool_adapt *a, int max);
/* Sets the ceiling (threads follows it down at once, up by probing). */
void sl_pool_adapt_set_max(sl_pool_adapt *a, int max, uint64_t now_ns);
/* Records one parallel call made with a->threads threads: its wall time,
 * the caller's barrier wait and the threads' time in chunks (summed);
 * returns the thread count for the next. */
int sl_pool_adapt_record(sl_pool_adapt *a, uint64_t now_ns, uint64_t wait_ns, uint64_t busy_ns,
                         uint64_t call_ns);
/* Before a call: raises threads on trial when the back-off has passed. */
int sl_pool_adapt_before(sl_pool_adapt *a, uint64_t now_ns);

/* Turns adaptation off (tests of a fixed thread count) or on. */
void sl_pool_set_adaptive(bool on);

uint64_t sl_pool_now_ns(void);
/* Workers started, and how many of them sleep on their futex now. */
int sl_pool_workers(void);
/* Regions (of more than one thread) that woke their workers, since start. */
uint64_t sl_pool_regions_opened(void);
int sl_pool_workers_asleep(void);

#endif
