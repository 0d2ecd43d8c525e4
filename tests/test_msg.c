/* msg/: the stage-assignment codec (round trip, the bytes a coordinator has
 * always sent, refusals), frames released through the callback, header
 * setters and views; and the stage table in stages/stage.c. */
#include <stdint.h>
#include <string.h>

#include "kernels/types.h"
#include "model/ple.h"
#include "msg/assign.h"
#include "msg/msg.h"
#include "stages/stage.h"
#include "tests/test.h"

static sl_stage_spec draft_spec(void)
{
    return (sl_stage_spec){
        .kind = PL_STAGE_DRAFT, .model = "/m/target.gguf", .l0 = 0, .l1 = 0, .max_sequences = 8,
        .context = 2048, .max_batch_tokens = 512, .index = 0, .kv_type = SL_TYPE_Q8_0,
        .ple_at_embed = false, .draft_model = "/m/draft.gguf", .spec_k = 6, .spec_auto = true,
        .spec_lookup = false, .spec_pipelined = true,
    };
}

static const pl_stage_place place = {
    .input = "ipc:///tmp/x-s0", .output = "tcp://10.0.0.2:7101", .threads = 3, .numa = 1,
    .output_key = "", .input_peer_key = "", .max_frame_bytes = 1u << 20, .max_message_bytes = 2u << 20,
};

static void test_round_trip(void)
{
    sl_stage_spec in = draft_spec(), out;
    in.kv_full = true;
    pl_stage_place p;
    Sluice__StageAssign sa;
    sl_err err;
    pl_assign_encode(&sa, &in, &place);
    /* through the bytes, as a worker gets it */
    uint8_t buf[1024];
    size_t n = sluice__stage_assign__pack(&sa, buf);
    Sluice__StageAssign *back = sluice__stage_assign__unpack(NULL, n, buf);
    CHECK(back != NULL);
    CHECKF(pl_assign_decode(back, 0, &out, &p, &err) == 0, "%s", err.msg);
    CHECK(out.kind == in.kind && strcmp(out.model, in.model) == 0 && out.l0 == in.l0 && out.l1 == in.l1);
    CHECK(out.max_sequences == 8 && out.context == 2048 && out.max_batch_tokens == 512 && out.index == 0);
    CHECK(out.kv_type == SL_TYPE_Q8_0 && out.kv_full && !out.ple_at_embed);
    CHECK(strcmp(out.draft_model, "/m/draft.gguf") == 0 && out.spec_k == 6 && out.spec_auto &&
          !out.spec_lookup && out.spec_pipelined);
    CHECK(strcmp(p.input, place.input) == 0 && strcmp(p.output, place.output) == 0);
    CHECK(p.threads == 3 && p.numa == 1 && p.max_frame_bytes == 1u << 20 && p.max_message_bytes == 2u << 20);
    CHECK(p.output_key && !*p.output_key && p.input_peer_key && !*p.input_peer_key);
    sluice__stage_assign__free_unpacked(back, NULL);

    /* a layers stage of a per-layer-embedding model: no draft fields travel */
    in = (sl_stage_spec){.kind = PL_STAGE_EMBED, .model = "/m/t.gguf", .max_sequences = 2, .context = 64,
                         .max_batch_tokens = 16, .index = 1, .ple_at_embed = true,
                         .draft_model = "/m/draft.gguf", .spec_k = 4};
    pl_assign_encode(&sa, &in, &place);
    CHECK(sa.ple == PLE_AT_EMBED);
    CHECK(sa.spec_k == 0 && (!sa.draft_model || !*sa.draft_model));
    CHECKF(pl_assign_decode(&sa, 1, &out, &p, &err) == 0, "%s", err.msg);
    CHECK(out.ple_at_embed && out.draft_model == NULL && out.index == 1);
}

/* What a coordinator put on the wire before the codec, field by field:
 * the codec's bytes must be the same. */
static void test_same_bytes(void)
{
    sl_stage_spec spec = draft_spec();
    Sluice__StageAssign sa, old = SLUICE__STAGE_ASSIGN__INIT;
    pl_assign_encode(&sa, &spec, &place);
    old.kind = PL_STAGE_DRAFT;
    old.model = "/m/target.gguf";
    old.input = "ipc:///tmp/x-s0";
    old.output = "tcp://10.0.0.2:7101";
    old.threads = 3;
    old.numa = 1;
    old.max_sequences = 8;
    old.context = 2048;
    old.max_batch_tokens = 512;
    old.kv_type = SL_TYPE_Q8_0;
    old.max_frame_bytes = 1u << 20;
    old.max_message_bytes = 2u << 20;
    old.ple = 0;
    old.stage_index = 0;
    old.draft_model = "/m/draft.gguf";
    old.spec_k = 6;
    old.spec_auto = true;
    old.spec_pipelined = true;
    old.output_key = "";
    old.input_peer_key = "";
    uint8_t a[1024], b[1024];
    size_t na = sluice__stage_assign__pack(&sa, a), nb = sluice__stage_assign__pack(&old, b);
    CHECK(na == nb && memcmp(a, b, na) == 0);
}

static void test_refusals(void)
{
    sl_stage_spec spec = draft_spec(), out;
    pl_stage_place p;
    Sluice__StageAssign sa;
    sl_err err;
    pl_assign_encode(&sa, &spec, &place);
    sa.kind = PL_STAGE_KIND_COUNT_;
    CHECK(pl_assign_decode(&sa, 2, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "assignment 2: unknown stage kind 7");
    pl_assign_encode(&sa, &spec, &place);
    sa.spec_k = PL_SPEC_K_MAX + 1;
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "speculative k 33 outside 0..32");
    pl_assign_encode(&sa, &spec, &place);
    sa.draft_model = "";
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "a draft stage without a draft model");
    spec.kind = PL_STAGE_LAYERS;
    spec.l0 = 3;
    spec.l1 = 3;
    pl_assign_encode(&sa, &spec, &place);
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "bad layer range [3, 3)");
    spec.l1 = 5;
    spec.kv_type = 77;
    pl_assign_encode(&sa, &spec, &place);
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "KV cache type 77");
    spec.kv_type = 0;
    spec.context = 0;
    pl_assign_encode(&sa, &spec, &place);
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "limits out of range");
    spec.context = 16;
    pl_stage_place no_out = place;
    no_out.output = NULL;
    pl_assign_encode(&sa, &spec, &no_out);
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "missing input or output address");
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_LAYERS), "layers") == 0);
    CHECK(strcmp(pl_stage_kind_name((pl_stage_kind)-1), "unknown") == 0);
}

/* The assistant drafter's settings: an mtp stage and the stages feeding
 * it carry the assistant's path, the feed flag travels. */
static void test_mtp_assign(void)
{
    sl_stage_spec in = draft_spec(), out;
    pl_stage_place p;
    Sluice__StageAssign sa;
    sl_err err;
    in.kind = PL_STAGE_MTP;
    in.spec_pipelined = false;
    in.draft_model = "/m/assistant.gguf";
    pl_assign_encode(&sa, &in, &place);
    uint8_t buf[1024];
    size_t n = sluice__stage_assign__pack(&sa, buf);
    Sluice__StageAssign *back = sluice__stage_assign__unpack(NULL, n, buf);
    CHECK(back != NULL);
    CHECKF(back && pl_assign_decode(back, 0, &out, &p, &err) == 0, "%s", err.msg);
    CHECK(out.kind == PL_STAGE_MTP && strcmp(out.draft_model, "/m/assistant.gguf") == 0 && out.spec_k == 6 &&
          out.spec_auto && !out.mtp_feed);
    CHECK(strcmp(pl_stage_kind_name(PL_STAGE_MTP), "mtp") == 0);
    sluice__stage_assign__free_unpacked(back, NULL);
    in = (sl_stage_spec){.kind = PL_STAGE_LAYERS, .model = "/m/t.gguf", .l0 = 0, .l1 = 4, .max_sequences = 2,
                         .context = 64, .max_batch_tokens = 16, .draft_model = "/m/assistant.gguf",
                         .mtp_feed = true};
    pl_assign_encode(&sa, &in, &place);
    CHECKF(pl_assign_decode(&sa, 0, &out, &p, &err) == 0, "%s", err.msg);
    CHECK(out.mtp_feed && strcmp(out.draft_model, "/m/assistant.gguf") == 0 && out.spec_k == 0);
    sa.draft_model = "";
    CHECK(pl_assign_decode(&sa, 3, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "assignment 3: mtp_feed without the assistant's file");
    in.kind = PL_STAGE_MTP;
    in.mtp_feed = false;
    in.draft_model = NULL;
    pl_assign_encode(&sa, &in, &place);
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "an mtp stage without the assistant's file");
    in.draft_model = "/m/assistant.gguf";
    in.spec_lookup = true;
    pl_assign_encode(&sa, &in, &place);
    CHECK(pl_assign_decode(&sa, 0, &out, &p, &err) == -1);
    CHECK_ERR_HAS(err, "an mtp stage cannot do prompt lookup");
}

static int released;
static void count_release(void *ctx)
{
    (*(int *)ctx)++;
}

/* A built message as a receiver decodes it: header packed, frames in place. */
static int loop_back(pl_msg *m, pl_msg *in, uint8_t *hbuf, size_t cap, sl_err *err)
{
    if (pl_msg_seal(m, err))
        return -1;
    size_t hb = pl_msg_header_size(m);
    CHECK(hb <= cap);
    pl_msg_pack_header(m, hbuf);
    const void *frames[PL_MAX_FRAMES + 1] = {hbuf};
    size_t sizes[PL_MAX_FRAMES + 1] = {hb};
    for (int i = 0; i < m->n_frames; i++)
        frames[i + 1] = pl_msg_frame(m, i, &sizes[i + 1], NULL);
    released = 0;
    return pl_msg_decode_owned(in, frames, sizes, m->n_frames + 1, NULL, count_release, &released, err);
}

static void test_msg(void)
{
    pl_msg m, in, m2;
    sl_err err;
    uint8_t hbuf[512];
    uint64_t req[2] = {7, 9};
    int32_t seqs[1] = {3};
    float logits[2][3] = {{1, 2, 3}, {4, 5, 6}};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 11, 2);
    pl_msg_set_error(&m, "", "head");
    pl_msg_set_slots(&m, seqs, 1, req, 2, 5);
    pl_msg_set_sent_ns(&m, 1234);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL,
                     &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, 2, 3, logits, NULL, NULL,
                     &err) == 0);
    CHECKF(loop_back(&m, &in, hbuf, sizeof hbuf, &err) == 0, "%s", err.msg);
    CHECK(in.hdr->batch_id == 11 && in.hdr->sent_ns == 1234 && in.hdr->length == 5);
    CHECK(in.hdr->n_seqs == 1 && in.hdr->seqs[0] == 3 && in.hdr->n_requests == 2 && in.hdr->requests[1] == 9);
    CHECK(strcmp(in.hdr->origin, "head") == 0);
    CHECK(pl_msg_has(&in, SLUICE__PAYLOAD_KIND__PL_LOGITS) && !pl_msg_has(&in, SLUICE__PAYLOAD_KIND__PL_TOKEN));
    const float *v = pl_msg_f32_view(&in, SLUICE__PAYLOAD_KIND__PL_LOGITS, 2, 3, &err);
    CHECK(v && v[5] == 6.0f);
    CHECK(pl_msg_f32_view(&in, SLUICE__PAYLOAD_KIND__PL_LOGITS, 2, 4, &err) == NULL);
    CHECK_ERR_HAS(err, "has 3 columns, expected 4");
    CHECK(pl_msg_f32_view(&in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, 2, 0, &err) == NULL);

    /* passed on by reference, extras copied */
    pl_msg_init(&m2, SLUICE__MSG_KIND__MSG_LOGITS, 11, 2);
    pl_msg_copy_extras(&m2, &in);
    CHECK(pl_msg_pass(&m2, &in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, &err) == 0);
    CHECK(pl_msg_pass(&m2, &in, SLUICE__PAYLOAD_KIND__PL_LOGITS, &err) == 0);
    CHECK(pl_msg_pass(&m2, &in, SLUICE__PAYLOAD_KIND__PL_TOKEN, &err) == 0); /* absent: nothing */
    CHECK(m2.n_frames == 2 && m2.hdr_store.sent_ns == 1234 && m2.hdr_store.length == 5);
    pl_msg_close(&m2);

    CHECK(released == 0);
    pl_msg_close(&in);
    CHECK(released == 1); /* the frames' owner is told once, at close */
    pl_msg_close(&m);

    /* a message that fails to decode releases its frames at once */
    const void *frames[1] = {"\xff\xff"};
    size_t sizes[1] = {2};
    released = 0;
    CHECK(pl_msg_decode_owned(&in, frames, sizes, 1, NULL, count_release, &released, &err) == -1);
    CHECK(released == 1 && in.hdr == NULL && in.store == NULL);

    /* a spent message cannot be sealed again */
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_RELEASE, 0, 0);
    pl_msg_set_slots(&m, seqs, 1, req, 1, 0);
    CHECK(pl_msg_seal(&m, &err) == 0);
    pl_msg_mark_sent(&m);
    CHECK(pl_msg_seal(&m, &err) == -1);
    pl_msg_close(&m);
}

/* The assistant's payloads: K/V rows counted by the batch's rows (more
 * than the message's), each with its (slot, position); both or neither. */
static void test_mtp_payloads(void)
{
    pl_msg m, in;
    sl_err err;
    uint8_t hbuf[512];
    uint64_t req[1] = {7};
    int32_t tok[1] = {3}, rows[4][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}}, next[1][2] = {{5, -1}};
    float kv[4][6] = {{0}}, hidden[1][4] = {{1, 2, 3, 4}};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_HIDDEN, SLUICE__DTYPE__DT_F32, 1, 4, hidden, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 4, 6, kv, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 4, 2, rows, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT, SLUICE__DTYPE__DT_I32, 1, 2, next, NULL, NULL, &err) == 0);
    CHECKF(loop_back(&m, &in, hbuf, sizeof hbuf, &err) == 0, "%s", err.msg);
    CHECK(in.shape[SLUICE__PAYLOAD_KIND__PL_MTP_KV][0] == 4 && in.shape[SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT][1] == 2);
    const int32_t *r = pl_msg_i32(&in, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, 4, &err);
    CHECK(r && r[7] == 3);
    pl_msg_close(&in);
    pl_msg_close(&m);
    CHECK(strcmp(pl_msg_payload_name(SLUICE__PAYLOAD_KIND__PL_MTP_KV), "MTP_KV") == 0);
    CHECK(strcmp(pl_msg_payload_name(15), "unknown") == 0);

    /* K/V rows without their (slot, position), or rows that disagree */
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 4, 6, kv, NULL, NULL, &err) == 0);
    CHECK(pl_msg_seal(&m, &err) == -1);
    CHECK_ERR_HAS(err, "payload MTP_KV without MTP_ROW");
    pl_msg_close(&m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 4, 6, kv, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 3, 2, rows, NULL, NULL, &err) == 0);
    CHECK(pl_msg_seal(&m, &err) == -1);
    CHECK_ERR_HAS(err, "MTP_KV has 4 rows, MTP_ROW is [3, 2] (expected [4, 2])");
    pl_msg_close(&m);
    /* a hidden state per row: not more */
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_HIDDEN, SLUICE__DTYPE__DT_F32, 2, 2, hidden, NULL, NULL, &err) == 0);
    CHECK(pl_msg_seal(&m, &err) == -1);
    CHECK_ERR_HAS(err, "(HIDDEN) has 2 rows, but n_rows is 1");
    pl_msg_close(&m);
    /* past the row limit on receipt */
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 4, 6, kv, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 4, 2, rows, NULL, NULL, &err) == 0);
    CHECK(pl_msg_seal(&m, &err) == 0);
    size_t hb = pl_msg_header_size(&m);
    pl_msg_pack_header(&m, hbuf);
    const void *frames[PL_MAX_FRAMES + 1] = {hbuf};
    size_t sizes[PL_MAX_FRAMES + 1] = {hb};
    for (int i = 0; i < m.n_frames; i++)
        frames[i + 1] = pl_msg_frame(&m, i, &sizes[i + 1], NULL);
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    lim.max_rows = 3;
    CHECK(pl_msg_decode(&in, frames, sizes, m.n_frames + 1, &lim, &err) == -1);
    CHECK_ERR_HAS(err, "MTP_KV has 4 rows, which exceeds the limit max_rows (3)");
    CHECK(pl_wire_err_is_limit(&err));
    pl_msg_close(&m);
}

/* PL_TOKEN_P (the target's probability of each token a plain step sampled):
 * f32, one a row, round trips; another dtype or row count is refused. */
static void test_token_p(void)
{
    pl_msg m, in;
    sl_err err;
    uint8_t hbuf[512];
    uint64_t req[2] = {7, 8};
    int32_t tok[2] = {3, 4}, bad[2] = {1, 1};
    float p[2] = {0.25f, -1.0f};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 2);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 2, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, SLUICE__DTYPE__DT_F32, 2, 0, p, NULL, NULL, &err) == 0);
    CHECKF(loop_back(&m, &in, hbuf, sizeof hbuf, &err) == 0, "%s", err.msg);
    const float *got = pl_msg_f32_view(&in, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, 2, 0, &err);
    CHECK(got && got[0] == 0.25f && got[1] == -1.0f);
    CHECK(strcmp(pl_msg_payload_name(SLUICE__PAYLOAD_KIND__PL_TOKEN_P), "TOKEN_P") == 0);
    pl_msg_close(&in);
    pl_msg_close(&m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 2);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 2, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, SLUICE__DTYPE__DT_I32, 2, 0, bad, NULL, NULL, &err) == -1);
    CHECK_ERR_HAS(err, "(TOKEN_P) has dtype i32, expected f32");
    pl_msg_close(&m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 3, 2);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 2, 0, tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, SLUICE__DTYPE__DT_F32, 1, 0, p, NULL, NULL, &err) == 0);
    CHECK(pl_msg_seal(&m, &err) == -1);
    CHECK_ERR_HAS(err, "(TOKEN_P) has 1 rows, but n_rows is 2");
    pl_msg_close(&m);
}

/* A message handed over in one thread (a chain's members) reads as the
 * same message decoded from its packed frames, and meets the same limits. */
static void test_hand_over(void)
{
    pl_msg m, in, dec;
    sl_err err;
    uint8_t hbuf[512];
    uint64_t req[2] = {7, 9};
    int32_t seqs[1] = {3}, rows[4][2] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}};
    float logits[2][3] = {{1, 2, 3}, {4, 5, 6}}, kv[4][6] = {{0}};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 11, 2);
    pl_msg_set_error(&m, "", "head");
    pl_msg_set_slots(&m, seqs, 1, req, 2, 5);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL,
                     &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, 2, 3, logits, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 4, 6, kv, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 4, 2, rows, NULL, NULL, &err) == 0);
    CHECK(pl_msg_hand_over(&in, &m, NULL, &err) == -1); /* not sealed yet */
    CHECK(in.hdr == NULL);
    CHECKF(loop_back(&m, &dec, hbuf, sizeof hbuf, &err) == 0, "%s", err.msg);
    CHECKF(pl_msg_hand_over(&in, &m, NULL, &err) == 0, "%s", err.msg);
    CHECK(in.received && in.n_frames == dec.n_frames && in.hdr->kind == dec.hdr->kind);
    CHECK(in.hdr->batch_id == 11 && in.hdr->length == 5 && in.hdr->n_seqs == 1 && in.hdr->seqs[0] == 3);
    CHECK(in.hdr->n_requests == 2 && in.hdr->requests[1] == 9 && strcmp(in.hdr->origin, "head") == 0);
    for (int k = 0; k < PL_N_KINDS; k++) {
        CHECKF(in.size[k] == dec.size[k] && in.dtype[k] == dec.dtype[k] && in.shape[k][0] == dec.shape[k][0] &&
               in.shape[k][1] == dec.shape[k][1], "payload kind %d differs", k);
        CHECK((in.data[k] == NULL) == (dec.data[k] == NULL));
    }
    const float *v = pl_msg_f32_view(&in, SLUICE__PAYLOAD_KIND__PL_LOGITS, 2, 3, &err);
    CHECK(v == &logits[0][0]); /* in place, not copied */
    pl_msg_close(&in);
    pl_msg_close(&dec);
    CHECK(m.hdr == &m.hdr_store && m.hdr_store.batch_id == 11); /* the sender's header is left alone */
    /* the receiver's limits, as decoding applies them */
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    lim.max_rows = 3;
    CHECK(pl_msg_hand_over(&in, &m, &lim, &err) == -1);
    CHECK(pl_msg_hand_over(&in, &m, &lim, &err) == -1);
    CHECK_ERR_HAS(err, "MTP_KV has 4 rows, which exceeds the limit max_rows (3)");
    CHECK(pl_wire_err_is_limit(&err) && in.hdr == NULL);
    pl_wire_limits_default(&lim);
    lim.max_header_bytes = pl_msg_header_size(&m) - 1;
    CHECK(pl_msg_hand_over(&in, &m, &lim, &err) == -1);
    CHECK_ERR_HAS(err, "exceeds max_header_bytes");
    pl_wire_limits_default(&lim);
    lim.max_frame_bytes = sizeof kv - 1;
    CHECK(pl_msg_hand_over(&in, &m, &lim, &err) == -1);
    CHECK_ERR_HAS(err, "exceeds max_frame_bytes");
    pl_msg_close(&m);
}

static void test_stage_table(void)
{
    sl_stage *s = NULL;
    sl_err err;
    /* kind 0 (the old pass-through tokenize stage) is out of use */
    sl_stage_spec spec = {.kind = (pl_stage_kind)0, .max_sequences = 1, .context = 8, .max_batch_tokens = 4,
                          .index = 2};
    CHECK(sl_stage_create(&s, &spec, &err) == -1 && s == NULL);
    CHECK_ERR_HAS(err, "stage 2: unknown kind 0");
    CHECK(strcmp(pl_stage_kind_name((pl_stage_kind)0), "unknown") == 0);
    spec.kind = (pl_stage_kind)9;
    CHECK(sl_stage_create(&s, &spec, &err) == -1 && s == NULL);
    CHECK_ERR_HAS(err, "stage 2: unknown kind 9");
    spec.kind = PL_STAGE_HEAD;
    spec.model = "/nonexistent/model.gguf";
    CHECK(sl_stage_create(&s, &spec, &err) == -1 && s == NULL);
    CHECK_ERR_HAS(err, "stage 2 (head)");
}

int main(void)
{
    test_round_trip();
    test_same_bytes();
    test_refusals();
    test_msg();
    test_mtp_assign();
    test_mtp_payloads();
    test_token_p();
    test_hand_over();
    test_stage_table();
    return test_finish("test_msg");
}
