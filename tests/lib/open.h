/* A pipeline opened for a C test on real sockets between its local stages.
 * Include after tests/test.h (its failed check is one of the test's). */
#ifndef SLUICE_TEST_OPEN_H
#define SLUICE_TEST_OPEN_H

#include <stdio.h>

#include "pipeline/client.h"

/* Opens config c's pipeline with its local hops on hops (sl_pipeline_opts
 * .local_hops: "ipc:DIR" or "tcp:PORT", NULL for the default; the string
 * must outlive the pipeline) and every other option at its default. NULL,
 * with a failed check saying why, when it does not open. */
static inline sl_pipeline *test_open_on_hops(const pl_config *c, const char *hops)
{
    sl_pipeline_opts o;
    sl_pipeline_opts_default(&o);
    o.local_hops = hops;
    sl_pipeline *p;
    sl_err err;
    if (sl_pipeline_open(&p, c, &o, &err)) {
        CHECKF(0, "open on %s: %s", hops ? hops : "the default hops", err.msg);
        return NULL;
    }
    return p;
}

#endif
