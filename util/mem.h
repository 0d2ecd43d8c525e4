/* Memory helpers shared by every module. */
#ifndef SLUICE_MEM_H
#define SLUICE_MEM_H

#include <stddef.h>

/* free(data), in the shape of a release callback that also gets a hint
 * (ZeroMQ's zmq_free_fn, a message frame's release): for buffers that were
 * malloc'ed and handed over whole. */
void sl_free_cb(void *data, void *hint);

/* The calling thread's scratch buffers: one a slot, kept between calls,
 * grown to the largest size asked (what it held is not kept when it grows),
 * 64-byte aligned, freed when the thread ends. Kept rather than allocated
 * per call: fresh buffers come back as fresh pages, and their first writes
 * (page faults, in a VM exits to the hypervisor) cost as much as a third of
 * a prefill's matmuls. NULL when the memory cannot be had. */
enum {
    SL_SCRATCH_Q8ACT,    /* quantised activations of a matmul call */
    SL_SCRATCH_Q6UNPACK, /* a pair of Q6_K groups' codes, put together */
    SL_SCRATCH_SLOTS
};
void *sl_thread_scratch(int slot, size_t bytes);

#endif
