/* dump_logits: runs a scripted prefill/decode scenario through the forward
 * pass and writes the logits of every token it evaluates, for comparison
 * with the numpy reference (tests/test_ref.py).
 *
 *   dump_logits -m MODEL -o OUT -p0 IDS [-d0 IDS] [-p1 IDS -d1 IDS]
 *               [--chunks N,N,...] [--interleave] [-v]
 *
 * IDS are comma-separated token ids. -p0/-p1 are the prompts of sequences 0
 * and 1 (sequence 1 is optional), -d0/-d1 the tokens fed afterwards one
 * decode step at a time.
 *
 * Prefill: batch k holds the k-th chunk of every sequence's prompt; chunk
 * sizes come from --chunks, and once they are used up one more batch takes
 * whatever remains (so no --chunks means the whole prompt in one batch, and
 * "--chunks 5,3" on 12 tokens gives batches of 5, 3 and 4). Within a prefill batch the sequences'
 * tokens are concatenated (seq 0's first) or, with --interleave, alternate
 * token by token. Decode: step i is one batch holding d0[i] and d1[i]
 * (whichever exist).
 *
 * OUT receives float32 little-endian rows of n_vocab logits: sequence 0 at
 * positions 0 .. len(p0)+len(d0)-1, then sequence 1 likewise, whatever order
 * the tokens were evaluated in. The first line of stdout is "n_vocab N".
 * -v prints each batch as seq:pos entries to stderr. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"

#define MAX_SEQS 2
#define MAX_CHUNKS 64

typedef struct ids {
    int32_t *v;
    int n;
} ids;

typedef struct scenario {
    const char *model_path, *out_path;
    ids prompt[MAX_SEQS], decode[MAX_SEQS];
    int n_seqs;
    int chunk[MAX_CHUNKS];
    int n_chunks;
    int interleave;
    int verbose;
} scenario;

/* The run's state: what each sequence has evaluated so far and where its
 * logits go. */
typedef struct runner {
    sl_model *model;
    sl_fwd *fwd;
    sl_kv *kv;
    int n_vocab, d_model, max_tokens;
    int32_t *tok, *seq, *pos;
    float *x, *logits;
    float *out[MAX_SEQS]; /* [seq length][n_vocab] */
    int done[MAX_SEQS];   /* tokens evaluated */
    int verbose;
} runner;

static void die(const char *msg)
{
    fprintf(stderr, "dump_logits: %s\n", msg);
    exit(2);
}

static int parse_ids(const char *s, int32_t **out)
{
    int cap = 16, n = 0;
    int32_t *v = malloc(sizeof *v * (size_t)cap);
    while (v && *s) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 0 || x > INT32_MAX)
            die("bad id list (want comma-separated non-negative integers)");
        if (n == cap)
            v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        if (!v)
            break;
        v[n++] = (int32_t)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            die("bad id list (want comma-separated non-negative integers)");
    }
    if (!v)
        die("out of memory");
    *out = v;
    return n;
}

static void parse_args(int argc, char **argv, scenario *sc)
{
    memset(sc, 0, sizeof *sc);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool flag = strcmp(a, "--interleave") == 0 || strcmp(a, "-v") == 0;
        if (i + 1 >= argc && !flag)
            die("option without a value");
        if (strcmp(a, "-m") == 0)
            sc->model_path = argv[++i];
        else if (strcmp(a, "-o") == 0)
            sc->out_path = argv[++i];
        else if (strcmp(a, "-p0") == 0 || strcmp(a, "-p1") == 0) {
            int s = a[2] - '0';
            sc->prompt[s].n = parse_ids(argv[++i], &sc->prompt[s].v);
        } else if (strcmp(a, "-d0") == 0 || strcmp(a, "-d1") == 0) {
            int s = a[2] - '0';
            sc->decode[s].n = parse_ids(argv[++i], &sc->decode[s].v);
        } else if (strcmp(a, "--chunks") == 0) {
            int32_t *c;
            int n = parse_ids(argv[++i], &c);
            if (n > MAX_CHUNKS)
                die("too many chunks");
            for (int k = 0; k < n; k++) {
                if (c[k] <= 0)
                    die("chunk sizes must be positive");
                sc->chunk[k] = c[k];
            }
            sc->n_chunks = n;
            free(c);
        } else if (strcmp(a, "--interleave") == 0)
            sc->interleave = 1;
        else if (strcmp(a, "-v") == 0)
            sc->verbose = 1;
        else
            die("unknown option (see the comment at the top of dump_logits.c)");
    }
    if (!sc->model_path || !sc->out_path || sc->prompt[0].n == 0)
        die("need -m MODEL -o OUT -p0 IDS");
    sc->n_seqs = sc->prompt[1].n > 0 ? 2 : 1;
}

static void check(int rc, const sl_err *err)
{
    if (rc) {
        fprintf(stderr, "dump_logits: %s\n", err->msg);
        exit(1);
    }
}

static int seq_len(const scenario *sc, int s)
{
    return sc->prompt[s].n + sc->decode[s].n;
}

static int32_t seq_token(const scenario *sc, int s, int p)
{
    return p < sc->prompt[s].n ? sc->prompt[s].v[p] : sc->decode[s].v[p - sc->prompt[s].n];
}

static void runner_open(runner *r, const scenario *sc)
{
    sl_err err = {{0}};
    memset(r, 0, sizeof *r);
    check(sl_model_load(&r->model, sc->model_path, NULL, &err), &err);
    r->verbose = sc->verbose;
    r->n_vocab = r->model->cfg.n_vocab;
    r->d_model = r->model->cfg.d_model;
    int n_ctx = 0;
    for (int s = 0; s < sc->n_seqs; s++) {
        r->max_tokens += sc->prompt[s].n + 1;
        n_ctx = seq_len(sc, s) > n_ctx ? seq_len(sc, s) : n_ctx;
        r->out[s] = calloc((size_t)seq_len(sc, s) * (size_t)r->n_vocab, sizeof(float));
    }
    check(sl_fwd_new(&r->fwd, r->model, r->max_tokens, &err), &err);
    check(sl_kv_new(&r->kv, &r->model->cfg, 0, r->model->cfg.n_layer, sc->n_seqs, n_ctx, &err), &err);
    size_t n = (size_t)r->max_tokens;
    r->tok = malloc(n * sizeof(int32_t));
    r->seq = malloc(n * sizeof(int32_t));
    r->pos = malloc(n * sizeof(int32_t));
    r->x = malloc(n * (size_t)r->d_model * sizeof(float));
    r->logits = malloc(n * (size_t)r->n_vocab * sizeof(float));
    if (!r->tok || !r->seq || !r->pos || !r->x || !r->logits || !r->out[0] ||
        (sc->n_seqs > 1 && !r->out[1]))
        die("out of memory");
}

static void runner_close(runner *r)
{
    for (int s = 0; s < MAX_SEQS; s++)
        free(r->out[s]);
    free(r->tok), free(r->seq), free(r->pos), free(r->x), free(r->logits);
    sl_kv_free(r->kv);
    sl_fwd_free(r->fwd);
    sl_model_free(r->model);
}

/* Appends the next token of sequence s to the batch being built. */
static void push(runner *r, const scenario *sc, int *n, int s)
{
    int p = r->done[s]++;
    r->tok[*n] = seq_token(sc, s, p);
    r->seq[*n] = s;
    r->pos[*n] = p;
    (*n)++;
}

static void run_batch(runner *r, int n)
{
    sl_err err = {{0}};
    sl_batch b = {.n_tokens = n, .token = r->tok, .seq = r->seq, .pos = r->pos};
    if (r->verbose) {
        fprintf(stderr, "batch:");
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %d:%d", r->seq[i], r->pos[i]);
        fputc('\n', stderr);
    }
    check(sl_embed(r->model, r->tok, n, r->x, &err), &err);
    check(sl_forward_layers(r->fwd, r->kv, &b, r->x, &err), &err);
    check(sl_head(r->fwd, r->x, n, r->logits, &err), &err);
    for (int i = 0; i < n; i++)
        memcpy(r->out[r->seq[i]] + (size_t)r->pos[i] * (size_t)r->n_vocab,
               r->logits + (size_t)i * (size_t)r->n_vocab, sizeof(float) * (size_t)r->n_vocab);
}

/* Tokens of sequence s that chunk k of its prompt holds. */
static int chunk_len(const scenario *sc, const runner *r, int s, int k)
{
    int left = sc->prompt[s].n - r->done[s];
    if (k >= sc->n_chunks)
        return left;
    return sc->chunk[k] < left ? sc->chunk[k] : left;
}

static void prefill(runner *r, const scenario *sc)
{
    for (int k = 0;; k++) {
        int want[MAX_SEQS] = {0}, total = 0, n = 0;
        for (int s = 0; s < sc->n_seqs; s++)
            total += want[s] = chunk_len(sc, r, s, k);
        if (total == 0)
            return;
        if (sc->interleave) {
            for (int i = 0; n < total; i++)
                for (int s = 0; s < sc->n_seqs; s++)
                    if (i < want[s])
                        push(r, sc, &n, s);
        } else {
            for (int s = 0; s < sc->n_seqs; s++)
                for (int i = 0; i < want[s]; i++)
                    push(r, sc, &n, s);
        }
        run_batch(r, n);
    }
}

static void decode(runner *r, const scenario *sc)
{
    for (;;) {
        int n = 0;
        for (int s = 0; s < sc->n_seqs; s++)
            if (r->done[s] < seq_len(sc, s))
                push(r, sc, &n, s);
        if (n == 0)
            return;
        run_batch(r, n);
    }
}

static void write_out(const runner *r, const scenario *sc)
{
    FILE *fh = fopen(sc->out_path, "wb");
    if (!fh)
        die("cannot open the output file");
    for (int s = 0; s < sc->n_seqs; s++) {
        size_t n = (size_t)seq_len(sc, s) * (size_t)r->n_vocab;
        if (fwrite(r->out[s], sizeof(float), n, fh) != n)
            die("short write");
    }
    if (fclose(fh))
        die("cannot close the output file");
}

int main(int argc, char **argv)
{
    scenario sc;
    runner r;
    parse_args(argc, argv, &sc);
    runner_open(&r, &sc);
    printf("n_vocab %d\n", r.n_vocab);
    prefill(&r, &sc);
    decode(&r, &sc);
    write_out(&r, &sc);
    runner_close(&r);
    for (int s = 0; s < MAX_SEQS; s++)
        free(sc.prompt[s].v), free(sc.decode[s].v);
    return 0;
}
