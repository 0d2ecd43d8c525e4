#include "msg/assign.h"

#include "kernels/types.h"
#include "model/ple.h"

static const char *const kind_names[PL_STAGE_KIND_COUNT_] = {
    NULL, "embed", "layers", "head", "sample", "draft", "mtp",
};

const char *pl_stage_kind_name(pl_stage_kind k)
{
    if ((int)k < 0 || k >= PL_STAGE_KIND_COUNT_ || !kind_names[k])
        return "unknown";
    return kind_names[k];
}

static char *text_or_empty(const char *s)
{
    return (char *)(s ? s : "");
}

void pl_assign_encode(Sluice__StageAssign *sa, const sl_stage_spec *spec, const pl_stage_place *place)
{
    sluice__stage_assign__init(sa);
    sa->kind = (uint32_t)spec->kind;
    sa->l0 = spec->l0;
    sa->l1 = spec->l1;
    sa->model = text_or_empty(spec->model);
    sa->input = text_or_empty(place->input);
    sa->output = text_or_empty(place->output);
    sa->threads = place->threads;
    sa->numa = place->numa;
    sa->max_sequences = (uint32_t)spec->max_sequences;
    sa->context = (uint32_t)spec->context;
    sa->max_batch_tokens = (uint32_t)spec->max_batch_tokens;
    sa->kv_type = (uint32_t)spec->kv_type;
    sa->kv_full = spec->kv_full;
    sa->max_frame_bytes = place->max_frame_bytes;
    sa->max_message_bytes = place->max_message_bytes;
    sa->ple = spec->ple_at_embed ? PLE_AT_EMBED : PLE_AT_LAYERS;
    sa->stage_index = (uint32_t)spec->index;
    sa->mtp_feed = spec->mtp_feed;
    if (spec->mtp_feed || spec->kind == PL_STAGE_DRAFT || spec->kind == PL_STAGE_MTP)
        sa->draft_model = text_or_empty(spec->draft_model);
    if (spec->kind == PL_STAGE_DRAFT || spec->kind == PL_STAGE_MTP) {
        sa->spec_k = spec->spec_k;
        sa->spec_auto = spec->spec_auto;
        sa->spec_lookup = spec->spec_lookup;
        sa->spec_pipelined = spec->spec_pipelined;
    }
    sa->output_key = text_or_empty(place->output_key);
    sa->input_peer_key = text_or_empty(place->input_peer_key);
}

static bool has_text(const char *s)
{
    return s && *s;
}

static int check_assign(const Sluice__StageAssign *sa, size_t i, sl_err *err)
{
    if (sa->kind >= PL_STAGE_KIND_COUNT_)
        return sl_fail(err, "assignment %zu: unknown stage kind %u", i, sa->kind);
    if (!has_text(sa->model))
        return sl_fail(err, "assignment %zu: no model path", i);
    if (!has_text(sa->input) || !has_text(sa->output))
        return sl_fail(err, "assignment %zu: missing input or output address", i);
    if (sa->kind == PL_STAGE_LAYERS && (sa->l0 < 0 || sa->l1 <= sa->l0))
        return sl_fail(err, "assignment %zu: bad layer range [%d, %d)", i, sa->l0, sa->l1);
    if (sa->max_sequences < 1 || sa->context < 1 || sa->max_batch_tokens < 1 ||
        sa->max_sequences > 1u << 20 || sa->context > 1u << 24 || sa->max_batch_tokens > 1u << 20)
        return sl_fail(err, "assignment %zu: limits out of range", i);
    if (sa->numa < -1 || sa->numa > 4096)
        return sl_fail(err, "assignment %zu: NUMA node %d out of range", i, sa->numa);
    if (sa->threads < 0 || sa->threads > 4096)
        return sl_fail(err, "assignment %zu: threads %d out of range", i, sa->threads);
    if (sa->kv_type != SL_TYPE_F32 && sa->kv_type != SL_TYPE_F16 && sa->kv_type != SL_TYPE_BF16 &&
        sa->kv_type != SL_TYPE_Q8_0)
        return sl_fail(err, "assignment %zu: KV cache type %u is not f32, f16, bf16 or q8_0", i,
                       sa->kv_type);
    bool drafts = sa->kind == PL_STAGE_DRAFT || sa->kind == PL_STAGE_MTP;
    if (drafts && (sa->spec_k < 0 || sa->spec_k > PL_SPEC_K_MAX))
        return sl_fail(err, "assignment %zu: speculative k %d outside 0..%d", i, sa->spec_k,
                       PL_SPEC_K_MAX);
    if (sa->kind == PL_STAGE_DRAFT && !sa->spec_lookup && !has_text(sa->draft_model))
        return sl_fail(err, "assignment %zu: a draft stage without a draft model", i);
    if ((sa->kind == PL_STAGE_MTP || sa->mtp_feed) && !has_text(sa->draft_model))
        return sl_fail(err, "assignment %zu: %s without the assistant's file (draft_model)", i,
                       sa->kind == PL_STAGE_MTP ? "an mtp stage" : "mtp_feed");
    if (sa->kind == PL_STAGE_MTP && sa->spec_lookup)
        return sl_fail(err, "assignment %zu: an mtp stage cannot do prompt lookup", i);
    return 0;
}

int pl_assign_decode(const Sluice__StageAssign *sa, size_t i, sl_stage_spec *spec, pl_stage_place *place,
                     sl_err *err)
{
    if (check_assign(sa, i, err))
        return -1;
    *spec = (sl_stage_spec){
        .kind = (pl_stage_kind)sa->kind, .model = sa->model, .l0 = sa->l0, .l1 = sa->l1,
        .max_sequences = (int)sa->max_sequences, .context = (int)sa->context,
        .max_batch_tokens = (int)sa->max_batch_tokens, .index = (int)sa->stage_index,
        .kv_type = (int)sa->kv_type, .kv_full = sa->kv_full, .ple_at_embed = sa->ple == PLE_AT_EMBED,
        .draft_model = has_text(sa->draft_model) ? sa->draft_model : NULL,
        .spec_k = sa->spec_k, .spec_auto = sa->spec_auto, .spec_lookup = sa->spec_lookup,
        .spec_pipelined = sa->spec_pipelined, .mtp_feed = sa->mtp_feed,
    };
    *place = (pl_stage_place){
        .input = sa->input, .output = sa->output, .threads = sa->threads, .numa = sa->numa,
        .output_key = sa->output_key ? sa->output_key : "",
        .input_peer_key = sa->input_peer_key ? sa->input_peer_key : "",
        .max_frame_bytes = sa->max_frame_bytes, .max_message_bytes = sa->max_message_bytes,
    };
    return 0;
}
