/* Resolving `layers: auto` in a pipeline config before it runs. */
#ifndef SLUICE_SCHED_AUTO_H
#define SLUICE_SCHED_AUTO_H

#include "pipeline/config.h"

/* Fills l0/l1 of the layers stages when they say `layers: auto` (from the
 * model's tensor table); leaves other configs alone. */
int sl_sched_resolve_auto(pl_config *c, sl_err *err);

#endif
