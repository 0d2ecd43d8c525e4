/* Resolving `layers: auto` in a pipeline config before it runs. */
#ifndef SLUICE_PIPELINE_AUTOPLACE_H
#define SLUICE_PIPELINE_AUTOPLACE_H

#include "pipeline/config.h"

/* Fills l0/l1 of the layers stages when they say `layers: auto` (from the
 * model's tensor table); leaves other configs alone. */
int pl_config_resolve_auto(pl_config *c, sl_err *err);

#endif
