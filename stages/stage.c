/* The stage kinds, and making a stage of one. Adding a kind: its file
 * (with a constructor in kinds.h), a row here, and its settings in
 * msg/assign.h's codec. */
#include <stdio.h>
#include <stdlib.h>

#include "stages/kinds.h"

typedef struct stage_kind_row {
    pl_stage_kind kind;
    const char *name;        /* the stage's name; a kind may make it more precise */
    int (*create)(sl_stage *s, const sl_stage_spec *spec, sl_err *err);
} stage_kind_row;

static const stage_kind_row kinds[] = {
    {PL_STAGE_EMBED, "embed", sl_embed_stage_new},
    {PL_STAGE_LAYERS, "layers", sl_layers_stage_new},
    {PL_STAGE_HEAD, "head", sl_head_stage_new},
    {PL_STAGE_SAMPLE, "sample", sl_sample_stage_new},
    {PL_STAGE_DRAFT, "draft", sl_draft_stage_new},
    {PL_STAGE_MTP, "mtp", sl_mtp_stage_new},
};

static const stage_kind_row *find_kind(pl_stage_kind kind)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i].kind == kind)
            return &kinds[i];
    return NULL;
}

static void destroy_plain(sl_stage *s)
{
    free(s);
}

int sl_stage_create(sl_stage **out, const sl_stage_spec *spec, sl_err *err)
{
    *out = NULL;
    if (spec->max_batch_tokens < 1 || spec->max_sequences < 1 || spec->context < 1)
        return sl_fail(err, "stage %d: limits must be positive", spec->index);
    const stage_kind_row *row = find_kind(spec->kind);
    if (!row) {
        sl_fail(err, "stage %d: unknown kind %d", spec->index, (int)spec->kind);
        return sl_wrap(err, "stage %d (%s)", spec->index, pl_stage_kind_name(spec->kind));
    }
    sl_stage *s = calloc(1, sizeof *s);
    if (!s)
        return sl_fail(err, "out of memory");
    snprintf(s->name, sizeof s->name, "%s", row->name);
    s->kind = spec->kind;
    s->destroy = destroy_plain;
    s->index = spec->index;
    s->max_sequences = spec->max_sequences;
    s->context = spec->context;
    s->max_batch_tokens = spec->max_batch_tokens;
    if (row->create(s, spec, err)) {
        sl_stage_destroy(s);
        return sl_wrap(err, "stage %d (%s)", spec->index, pl_stage_kind_name(spec->kind));
    }
    *out = s;
    return 0;
}

void sl_stage_destroy(sl_stage *s)
{
    if (s)
        s->destroy(s);
}

sl_kv *sl_stage_kv(sl_stage *s)
{
    return s->kv;
}
