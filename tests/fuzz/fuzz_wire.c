/* libFuzzer target for pl_msg_decode. The input is split into frames
 * (tests/fuzz/frames.h, shared with fuzz_stage):
 * byte 0 is the frame count (mod 20), byte 1 a mask of frames placed one
 * byte off alignment, then one little-endian u16 length per frame, then the
 * frames' bytes (cut short where the input ends). Each frame sits at the
 * end of its own allocation so ASan sees any read past it.
 *
 * A rejected message must leave an error naming the wire layer and an
 * empty pl_msg; an accepted one must have views that hold exactly the bytes
 * of their frames, aligned for their type, and the required payloads of its
 * kind. Broken invariants trap. */
#include "pipeline/wire.h"
#include "tests/fuzz/frames.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static size_t elem_bytes(int dtype)
{
    switch (dtype) {
    case SLUICE__DTYPE__DT_F32: return 4;
    case SLUICE__DTYPE__DT_BF16: return 2;
    case SLUICE__DTYPE__DT_I32: return 4;
    case SLUICE__DTYPE__DT_U64: return 8;
    case SLUICE__DTYPE__DT_U8: return 1;
    default: return 0;
    }
}

/* Payload kind k of an accepted message against the frame it came from. */
static void check_view(const pl_msg *m, int k, const void *frame, size_t frame_size)
{
    size_t esize = elem_bytes(m->dtype[k]);
    require(esize != 0);
    uint64_t cols = m->shape[k][1] ? m->shape[k][1] : 1;
    require(m->size[k] == frame_size);
    require(m->size[k] / esize / cols == m->shape[k][0] && m->size[k] % (esize * cols) == 0);
    require(m->data[k] != NULL && (uintptr_t)m->data[k] % esize == 0);
    /* the view holds the frame's bytes, whether read in place or copied */
    require(frame_size == 0 || memcmp(m->data[k], frame, frame_size) == 0);
    sl_err err;
    uint64_t rows = m->shape[k][0];
    switch (m->dtype[k]) {
    case SLUICE__DTYPE__DT_I32: require(pl_msg_i32(m, k, rows, &err) == m->data[k] || frame_size == 0); break;
    case SLUICE__DTYPE__DT_U64: require(pl_msg_u64(m, k, rows, &err) == m->data[k] || frame_size == 0); break;
    case SLUICE__DTYPE__DT_U8: require(pl_msg_u8(m, k, rows, &err) == m->data[k] || frame_size == 0); break;
    default: {
        float *out = malloc(m->size[k] / esize * sizeof(float) + 1);
        require(out && pl_msg_f32(m, k, rows, m->shape[k][1], out, &err) == 0);
        free(out);
    }
    }
}

static int has(const pl_msg *m, int k) { return m->dtype[k] != SLUICE__DTYPE__DT_NONE; }

static void check_kind(const pl_msg *m)
{
    const Sluice__Header *h = m->hdr;
    require(h->version == PL_WIRE_VERSION && strcmp(pl_msg_kind_name(h->kind), "unknown") != 0 &&
            h->kind != SLUICE__MSG_KIND__MSG_NONE);
    if (h->kind == SLUICE__MSG_KIND__MSG_BATCH)
        require(has(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID) && has(m, SLUICE__PAYLOAD_KIND__PL_SEQ) &&
                has(m, SLUICE__PAYLOAD_KIND__PL_POS) && has(m, SLUICE__PAYLOAD_KIND__PL_FLAGS) &&
                (has(m, SLUICE__PAYLOAD_KIND__PL_TOKEN) || has(m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION)));
    if (h->kind == SLUICE__MSG_KIND__MSG_ERROR)
        require(h->error && h->error[0]);
    if (h->kind == SLUICE__MSG_KIND__MSG_RELEASE || h->kind == SLUICE__MSG_KIND__MSG_TRUNCATE)
        require(h->n_seqs > 0);
    for (int k = SLUICE__PAYLOAD_KIND__PL_REQUEST_ID; k <= SLUICE__PAYLOAD_KIND__PL_ACTIVATION; k++)
        require(!has(m, k) || m->shape[k][0] == h->n_rows);
    for (int k = SLUICE__PAYLOAD_KIND__PL_LOGITS; k <= SLUICE__PAYLOAD_KIND__PL_TOPK_VAL; k++)
        require(!has(m, k) || m->shape[k][0] <= h->n_rows);
    /* the assistant drafter's: hidden states and drafts a row each, K/V rows
     * (the batch's, any count) each with its (slot, position) */
    require(!has(m, SLUICE__PAYLOAD_KIND__PL_HIDDEN) || m->shape[SLUICE__PAYLOAD_KIND__PL_HIDDEN][0] == h->n_rows);
    require(!has(m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P) || m->shape[SLUICE__PAYLOAD_KIND__PL_TOKEN_P][0] == h->n_rows);
    require(!has(m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT) ||
            m->shape[SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT][0] == h->n_rows);
    require(has(m, SLUICE__PAYLOAD_KIND__PL_MTP_KV) == has(m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW));
    require(!has(m, SLUICE__PAYLOAD_KIND__PL_MTP_KV) ||
            (m->shape[SLUICE__PAYLOAD_KIND__PL_MTP_KV][0] == m->shape[SLUICE__PAYLOAD_KIND__PL_MTP_ROW][0] &&
             m->shape[SLUICE__PAYLOAD_KIND__PL_MTP_ROW][1] == 2 && m->shape[SLUICE__PAYLOAD_KIND__PL_MTP_KV][0] <= 65536));
}

static void check_accepted(const pl_msg *m, const void *const *frames, const size_t *sizes, int n)
{
    require(m->hdr != NULL && m->n_frames == n - 1 && m->hdr->n_payloads == (size_t)(n - 1));
    check_kind(m);
    uint32_t seen = 0; /* a bit a payload kind: PL_N_KINDS <= 32 */
    for (int i = 0; i < m->n_frames; i++) {
        int k = m->hdr->payloads[i]->kind;
        require(k > 0 && k < PL_N_KINDS && !(seen & (1u << k)));
        seen |= 1u << k;
        require(m->dtype[k] == m->hdr->payloads[i]->dtype);
        check_view(m, k, frames[i + 1], sizes[i + 1]);
    }
    for (int k = 0; k < PL_N_KINDS; k++)
        require((seen & (1u << k)) ? m->data[k] != NULL : m->data[k] == NULL && m->dtype[k] == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_frames f;
    if (fz_split(&f, data, size, 0))
        return 0;
    int n = f.n;
    const void *const *frames = f.frames;
    const size_t *sizes = f.sizes;
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    pl_msg m;
    sl_err err;
    memset(err.msg, 0x55, sizeof err.msg);
    int rc = pl_msg_decode(&m, frames, sizes, n, &lim, &err);
    require(rc == 0 || rc == -1);
    if (rc) {
        require(memchr(err.msg, '\0', sizeof err.msg) != NULL && strncmp(err.msg, "wire: ", 6) == 0);
        require(m.hdr == NULL && m.n_frames == 0 && m.store == NULL);
    } else {
        check_accepted(&m, frames, sizes, n);
        pl_msg_close(&m);
    }
    fz_free(&f);
    return 0;
}
