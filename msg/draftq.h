/* Draft distributions on the wire (speculative sampling): for each drafted
 * row the distribution its token was drawn from, as its support only.
 * Three payloads (proto/sluice.proto): DRAFT_Q_COUNT, entries a row has
 * (0: one-hot on the drafted token, n_vocab: a dense row of every token,
 * else a sparse row); DRAFT_PROBS, the entries' probabilities row after
 * row; DRAFT_Q_ID, the token ids of the sparse rows' entries. A drafter
 * with filters (top-k, top-p, min-p) sends tens of entries a row instead
 * of n_vocab floats; one without sends a dense row, never more. */
#ifndef SLUICE_MSG_DRAFTQ_H
#define SLUICE_MSG_DRAFTQ_H

#include <stdint.h>

#include "msg/msg.h"

/* A validated view of a message's draft distributions. */
typedef struct pl_draftq {
    uint32_t n_rows;        /* drafted rows; 0: none sent (all one-hot) */
    int n_vocab;
    const int32_t *count;   /* per row */
    const float *prob;      /* every row's entries */
    const int32_t *id;      /* the sparse rows' ids */
    /* where each row starts, filled by pl_draftq_view */
    uint64_t *prob_at, *id_at;
} pl_draftq;

/* Reads and checks m's draft distributions for n_drafted drafted rows of
 * a vocabulary of n_vocab: counts in 0..n_vocab summing to the entries
 * sent, ids ascending without repeats and inside the vocabulary,
 * probabilities finite, in [0, 1] and summing to 1 within 1e-3 per row.
 * starts: scratch of 2 * n_drafted entries (the row offsets). A message
 * without them gives n_rows 0. Errors name the row and entry at fault. */
int pl_draftq_view(const pl_msg *m, uint32_t n_drafted, int n_vocab, uint64_t *starts,
                   pl_draftq *q, sl_err *err);

/* Writes row r of q as a dense distribution over n_vocab (one-hot on
 * drafted when the row has no entries). */
void pl_draftq_dense(const pl_draftq *q, uint32_t r, int32_t drafted, float *dense);

/* The probability row r gives token t. */
float pl_draftq_prob(const pl_draftq *q, uint32_t r, int32_t drafted, int32_t t);

/* Entries a row with a support of n tokens is sent as: n, or n_vocab
 * (dense) when that is no larger on the wire. */
int pl_draftq_entries(int n, int n_vocab);

#endif
