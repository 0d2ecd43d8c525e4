/* The stage kinds' constructors, one per file; stage.c's table is their
 * only caller. Each fills s (process, destroy, impl, ...) from spec; on
 * failure sl_stage_create destroys what it made. */
#ifndef SLUICE_STAGES_KINDS_H
#define SLUICE_STAGES_KINDS_H

#include "stages/stage.h"

int sl_embed_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err);
int sl_layers_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err);
int sl_head_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err);
int sl_sample_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err);
int sl_draft_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err);
int sl_mtp_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err);

#endif
