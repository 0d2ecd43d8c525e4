/* Machine probes with the project's own code: read bandwidth and matmul
 * throughput, for `sluice bench` (roofline) and the scheduler's node
 * calibration. */
#ifndef SLUICE_PROBE_H
#define SLUICE_PROBE_H

#include <stddef.h>
#include <stdint.h>

/* Best-of-reps read bandwidth in bytes/s over a buffer of `bytes` (large
 * enough to miss every cache: 256 MB and up), with the calling thread's
 * share of the worker pool. Returns 0 if the buffer cannot be allocated. */
double sl_probe_read_bw(size_t bytes, int reps);

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
