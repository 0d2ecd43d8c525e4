/* A stage's output caught in a test: an sl_emit whose function is
 * catch_msg and whose context a catcher keeps the last message it was sent
 * (closing the one before), moved in as a socket would deliver it: the
 * message's pointers into itself re-aimed, the error text and the frames
 * the sender still owns copied (the sender frees them once its send
 * returns). Included by the tests that drive stages by hand. */
#ifndef SLUICE_TEST_CATCH_MSG_H
#define SLUICE_TEST_CATCH_MSG_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg/msg.h"

typedef struct catcher {
    pl_msg msg;
    bool have;
    char error[1024]; /* an ERROR's text (the sender's buffer is gone after the send) */
} catcher;

static inline int catch_msg(void *ctx, pl_msg *m, sl_err *err)
{
    (void)err;
    catcher *c = ctx;
    if (c->have)
        pl_msg_close(&c->msg);
    c->msg = *m;
    c->msg.hdr = &c->msg.hdr_store; /* a built message points into itself */
    for (int i = 0; i < c->msg.n_frames; i++) {
        c->msg.pay_ptrs[i] = &c->msg.pay_store[i];
        c->msg.pay_store[i].shape = c->msg.shape_store[i];
    }
    c->msg.hdr_store.payloads = c->msg.pay_ptrs;
    if (c->msg.hdr_store.error) {
        snprintf(c->error, sizeof c->error, "%s", c->msg.hdr_store.error);
        c->msg.hdr_store.error = c->error;
    }
    /* frames the sender still owns are copied, as a socket would: the
     * sender frees them once its send returns */
    for (int i = 0; i < c->msg.n_frames; i++) {
        size_t bytes;
        int kind;
        const void *data = pl_msg_frame(&c->msg, i, &bytes, &kind);
        if (c->msg.free_fn[i])
            continue;
        void *copy = malloc(bytes + 1);
        memcpy(copy, data, bytes);
        c->msg.data[kind] = copy;
        c->msg.free_fn[i] = sl_free_cb;
        c->msg.free_hint[i] = NULL;
    }
    c->have = true;
    return 0;
}

/* The five payloads every BATCH carries (request, slot, position, token,
 * flags), n rows each, added to m without copying. */
static inline int add_batch_rows(pl_msg *m, uint32_t n, const uint64_t *req, const int32_t *seq, const int32_t *pos,
                                 const int32_t *tok, const uint8_t *flags, sl_err *err)
{
    return pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0, req, NULL, NULL, err) ||
           pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, n, 0, seq, NULL, NULL, err) ||
           pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, n, 0, pos, NULL, NULL, err) ||
           pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, n, 0, tok, NULL, NULL, err) ||
           pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, n, 0, flags, NULL, NULL, err)
               ? -1
               : 0;
}

#endif
