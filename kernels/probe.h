/* Machine probes with the project's own code: read bandwidth and matmul
 * throughput, for `sluice bench` (roofline) and the scheduler's node
 * calibration. */
#ifndef SLUICE_PROBE_H
#define SLUICE_PROBE_H

#include <stddef.h>
#include <stdint.h>

/* Read bandwidth: passes over a buffer of `bytes` (large enough to miss
 * every cache: 256 MB and up, ~5 ms a pass at 50 GB/s), each read by the
 * calling thread's share of the worker pool with 64-byte vector loads where
 * the CPU has them and no software prefetch (on a Zen 5 core both cost a
 * plain stream a quarter or more of its rate), timed one by one. A pass is
 * short, so the passes can be spread over a benchmark's runs and see the
 * same machine the runs do. */
typedef struct sl_bw_probe sl_bw_probe;
/* NULL if the buffer cannot be allocated. */
sl_bw_probe *sl_bw_probe_open(size_t bytes);
/* Times `passes` more passes (after one untimed warm-up pass on the first
 * call). */
void sl_bw_probe_run(sl_bw_probe *p, int passes);
/* Over every pass so far, bytes/s: the fastest pass (the rate the machine
 * gives when its other tenants leave the memory alone: the roofline) and
 * the median. 0 before any pass. */
double sl_bw_probe_best(const sl_bw_probe *p);
double sl_bw_probe_median(const sl_bw_probe *p);
int sl_bw_probe_passes(const sl_bw_probe *p);
void sl_bw_probe_close(sl_bw_probe *p);

/* The fastest of `reps` passes (sl_bw_probe above) in bytes/s; 0 if the
 * buffer cannot be allocated. */
double sl_probe_read_bw(size_t bytes, int reps);

/* Xor of the 64-bit words of [p, p + bytes) (bytes a multiple of 256,
 * p 64-byte aligned) with AVX-512 loads: the probe's read loop. */
uint64_t sl_probe_read_avx512(const void *p, size_t bytes);

/* Best-of-reps matmul throughput in FLOP/s of a Q4_0 (packed where the CPU
 * has it) n_out x n_in matrix against n_tok tokens: GEMV when n_tok is 1. */
double sl_probe_matmul(int n_out, int n_in, int n_tok, int reps);

/* Int8 multiply-adds a second (2 ops each, as GOP/s are counted) of AVX-512
 * VNNI's vpdpbusd on `threads` threads at once, each running independent
 * chains for about `secs` seconds; 0 when the CPU has no AVX-512 VNNI. */
double sl_probe_vnni_peak(int threads, double secs);
/* Int8 multiply-adds per call of the loop below, per iteration. */
#define SL_PROBE_VNNI_MACS_PER_ITER (16 * 64)
/* iters iterations of the peak loop (kernels/probe_avx512.c); the result
 * only keeps the work from being optimised away. */
int64_t sl_probe_vnni_loop(int64_t iters, uint32_t seed);

/* The same for AMX int8 (TDPBSSD on full tiles); 0 when the CPU or the OS
 * offers no AMX int8 tiles. */
double sl_probe_amx_peak(int threads, double secs);
#define SL_PROBE_AMX_MACS_PER_ITER (4 * 16 * 16 * 64)
int64_t sl_probe_amx_loop(int64_t iters, uint32_t seed);

#endif
