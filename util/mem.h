/* Memory helpers shared by every module. */
#ifndef SLUICE_MEM_H
#define SLUICE_MEM_H

/* free(data), in the shape of a release callback that also gets a hint
 * (ZeroMQ's zmq_free_fn, a message frame's release): for buffers that were
 * malloc'ed and handed over whole. */
void sl_free_cb(void *data, void *hint);

#endif
