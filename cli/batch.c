/* sluice run's requests (see batch.h). */
#include "cli/batch.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

/* ---- prompts ---- */

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t')
            return false;
    return true;
}

static int prompts_add(cli_prompts *p, const char *text, int line)
{
    char **t = realloc(p->text, (size_t)(p->n + 1) * sizeof *t);
    if (t)
        p->text = t;
    int *l = realloc(p->line, (size_t)(p->n + 1) * sizeof *l);
    if (l)
        p->line = l;
    if (!t || !l || !(p->text[p->n] = strdup(text)))
        return -1;
    p->line[p->n++] = line;
    return 0;
}

int cli_prompts_read(cli_prompts *p, const char *path, sl_err *err)
{
    memset(p, 0, sizeof *p);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return sl_fail(err, "%s: cannot open", path);
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    int line = 0, rc = 0;
    while (rc == 0 && (len = getline(&buf, &cap, fp)) >= 0) {
        line++;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            buf[--len] = 0;
        /* a blank line is no prompt, but the next prompt keeps its own line number */
        if (is_blank(buf))
            p->n_blank++;
        else if (prompts_add(p, buf, line))
            rc = sl_fail(err, "out of memory");
    }
    free(buf);
    fclose(fp);
    if (rc == 0 && p->n == 0)
        rc = sl_fail(err, "%s: no prompts (%d blank line%s)", path, p->n_blank, p->n_blank == 1 ? "" : "s");
    if (rc)
        cli_prompts_free(p, true);
    return rc;
}

int cli_prompts_single(cli_prompts *p, const char *text, sl_err *err)
{
    memset(p, 0, sizeof *p);
    p->text = malloc(sizeof *p->text);
    p->line = calloc(1, sizeof *p->line);
    if (!p->text || !p->line) {
        cli_prompts_free(p, false);
        return sl_fail(err, "out of memory");
    }
    p->text[0] = (char *)text;
    p->n = 1;
    return 0;
}

void cli_prompts_free(cli_prompts *p, bool owned)
{
    for (int i = 0; owned && p->text && i < p->n; i++)
        free(p->text[i]);
    free(p->text);
    free(p->line);
    memset(p, 0, sizeof *p);
}

/* ---- answers ---- */

typedef struct answer {
    char *text;
    size_t len, cap;
    int32_t *ids;
    int n_ids, cap_ids;
    bool done, failed;
    char *error;
    sl_event last;
} answer;

typedef struct cause {
    char *text;
    int count, first_line;
} cause;

typedef struct batch {
    sl_pipeline *p;
    const cli_prompts *pr;
    const cli_batch_opts *o;
    answer *ans;
    uint64_t *sub_id;   /* ids of the submitted requests, increasing ... */
    int *sub_index;     /* ... and their prompts */
    int n_sub;
    int next, in_flight;
    bool stream, cancelling;
    cause *causes;
    int n_causes;
    double t0, last_progress;
    cli_batch_result *res;
} batch;

static void append(answer *a, const sl_event *ev, bool keep_text)
{
    if (keep_text && a->len + (size_t)ev->text_len + 1 > a->cap) {
        size_t cap = (a->cap + (size_t)ev->text_len + 1) * 2;
        char *t = realloc(a->text, cap);
        if (!t)
            return;
        a->text = t;
        a->cap = cap;
    }
    if (keep_text) {
        memcpy(a->text + a->len, ev->text, (size_t)ev->text_len);
        a->len += (size_t)ev->text_len;
        a->text[a->len] = 0;
    }
    if (a->n_ids == a->cap_ids) {
        int cap = a->cap_ids ? 2 * a->cap_ids : 64;
        int32_t *t = realloc(a->ids, (size_t)cap * sizeof *t);
        if (!t)
            return;
        a->ids = t;
        a->cap_ids = cap;
    }
    a->ids[a->n_ids++] = ev->token;
}

/* The prompt a request id belongs to (ids increase with submission). */
static int index_of(const batch *b, uint64_t id)
{
    int lo = 0, hi = b->n_sub - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (b->sub_id[mid] == id)
            return b->sub_index[mid];
        if (b->sub_id[mid] < id)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static void count_cause(batch *b, const char *text, int line)
{
    for (int i = 0; i < b->n_causes; i++)
        if (strcmp(b->causes[i].text, text) == 0) {
            b->causes[i].count++;
            return;
        }
    cause *c = realloc(b->causes, (size_t)(b->n_causes + 1) * sizeof *c);
    if (!c)
        return;
    b->causes = c;
    c[b->n_causes] = (cause){.text = strdup(text), .count = 1, .first_line = line};
    if (c[b->n_causes].text)
        b->n_causes++;
}

/* ---- printing ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n || (len == 2 && s[0] < 0xc2) || (len == 4 && s[0] > 0xf4))
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((len == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (len == 3 && s[0] == 0xed && s[1] >= 0xa0) ||
        (len == 4 && s[0] == 0xf0 && s[1] < 0x90) || (len == 4 && s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return len;
}

/* JSON strings must be UTF-8, but a token limit can cut a character and a
 * byte-fallback piece can stand alone: each invalid byte becomes U+FFFD. */
static json_object *json_utf8(const char *text, size_t n)
{
    char *out = malloc(3 * n + 1);
    if (!out)
        return json_object_new_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len((const unsigned char *)text + i, n - i);
        if (len) {
            memcpy(out + o, text + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    json_object *j = json_object_new_string_len(out, (int)o);
    free(out);
    return j;
}

static void print_jsonl(const batch *b, int i)
{
    const answer *a = &b->ans[i];
    const sl_event *d = &a->last;
    json_object *j = json_object_new_object();
    json_object_object_add(j, "id", json_object_new_int(i + 1));
    json_object_object_add(j, "line", json_object_new_int(b->pr->line[i]));
    json_object_object_add(j, "prompt", json_utf8(b->pr->text[i], strlen(b->pr->text[i])));
    json_object_object_add(j, "text", json_utf8(a->text ? a->text : "", a->len));
    json_object_object_add(j, "tokens", json_object_new_int(a->n_ids));
    if (a->failed) {
        json_object_object_add(j, "error", json_object_new_string(a->error ? a->error : "?"));
    } else {
        json_object_object_add(j, "prompt_tokens", json_object_new_int(d->n_prompt));
        json_object_object_add(j, "stop", json_object_new_string(d->stop ? d->stop : "?"));
        json_object *t = json_object_new_object();
        json_object_object_add(t, "prefill_s", json_object_new_double(d->prefill_s));
        json_object_object_add(t, "decode_s", json_object_new_double(d->decode_s));
        /* the first token comes out of the prefill: one token has no decode rate */
        json_object_object_add(t, "decode_tok_s", d->n_generated > 1 && d->decode_s > 0
                                                      ? json_object_new_double((d->n_generated - 1) / d->decode_s)
                                                      : NULL);
        json_object_object_add(j, "timings", t);
    }
    printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
}

/* An answer is printed the moment it is complete; its text is then freed
 * (a batch may be any size), its ids kept for --print-ids. */
static void print_answer(batch *b, int i)
{
    answer *a = &b->ans[i];
    if (b->o->report && b->o->jsonl)
        print_jsonl(b, i);
    else if (b->o->report && b->stream)
        putchar('\n');
    else if (b->o->report && !a->failed)
        printf("[line %d] %s\n", b->pr->line[i], a->text ? a->text : "");
    fflush(stdout);
    if (!b->stream) {
        free(a->text);
        a->text = NULL;
        a->len = a->cap = 0;
    }
}

static void progress(batch *b, bool last)
{
    if (!b->o->report || b->stream)
        return;
    double t = cli_now();
    if (!last && t - b->last_progress < 1.0)
        return;
    b->last_progress = t;
    double el = t - b->t0;
    bool tty = isatty(STDERR_FILENO);
    fprintf(stderr, "%sprogress: %d/%d done, %d in flight, %.1f tok/s%s", tty ? "\r\033[K" : "",
            b->res->n_done, b->pr->n, b->in_flight, el > 0 ? b->res->tokens / el : 0.0,
            tty && !last ? "" : "\n");
}

/* ---- the loop ---- */

static void finish(batch *b, int i, bool failed, const char *error)
{
    answer *a = &b->ans[i];
    a->done = true;
    a->failed = failed;
    b->res->n_done++;
    if (failed) {
        if (!b->res->first_error[0])
            snprintf(b->res->first_error, sizeof b->res->first_error, "line %d: %s", b->pr->line[i], error);
        a->error = strdup(error);
        b->res->n_failed++;
        count_cause(b, error, b->pr->line[i]);
    }
    print_answer(b, i);
}

/* Submits prompts while there is room in flight. */
static void fill(batch *b)
{
    while (b->next < b->pr->n && b->in_flight < b->o->max_in_flight && !b->cancelling) {
        int i = b->next++;
        sl_gen_params gp = *b->o->gp;
        gp.prompt = b->pr->text[i];
        uint64_t id;
        sl_err why = {{0}};
        if (sl_pipeline_submit(b->p, &gp, &id, &why)) {
            /* this prompt's problem (too long, ...), not the batch's */
            finish(b, i, true, why.msg);
            continue;
        }
        b->sub_id[b->n_sub] = id;
        b->sub_index[b->n_sub++] = i;
        b->in_flight++;
    }
}

static void cancel_all(batch *b)
{
    b->cancelling = true;
    for (int k = 0; k < b->n_sub; k++)
        if (!b->ans[b->sub_index[k]].done)
            sl_pipeline_cancel(b->p, b->sub_id[k]);
}

static void on_event(batch *b, const sl_event *ev)
{
    int i = index_of(b, ev->request);
    if (i < 0 || b->ans[i].done)
        return;
    answer *a = &b->ans[i];
    if (ev->kind == SL_EV_TOKEN) {
        append(a, ev, b->o->report);
        b->res->tokens++;
        if (b->stream && b->o->report && !b->o->jsonl) {
            fwrite(ev->text, 1, (size_t)ev->text_len, stdout);
            fflush(stdout);
        }
        return;
    }
    a->last = *ev;
    b->in_flight--;
    finish(b, i, ev->kind == SL_EV_ERROR, ev->error);
}

static int loop(batch *b, sl_err *err)
{
    while (b->next < b->pr->n || b->in_flight > 0) {
        if (b->o->stop_signal && *b->o->stop_signal && !b->cancelling)
            cancel_all(b);
        fill(b);
        if (b->in_flight == 0)
            break;
        sl_event ev;
        int rc = sl_pipeline_next(b->p, &ev, 200, err);
        if (rc < 0)
            return -1;
        if (rc > 0)
            on_event(b, &ev);
        progress(b, false);
    }
    return 0;
}

static void summarise(batch *b)
{
    progress(b, true);
    if (b->o->print_ids)
        for (int i = 0; i < b->pr->n; i++) {
            const answer *a = &b->ans[i];
            fprintf(stderr, b->stream ? "ids:" : "ids[%d]:", i);
            for (int k = 0; k < a->n_ids; k++)
                fprintf(stderr, " %d", a->ids[k]);
            fputc('\n', stderr);
        }
    for (int i = 0; i < b->n_causes; i++) {
        const cause *c = &b->causes[i];
        /* after a signal the caller's one line counts what was cancelled */
        if (b->cancelling && strcmp(c->text, "cancelled") == 0)
            continue;
        if (b->stream)
            fprintf(stderr, "sluice run: the request failed: %s\n", c->text);
        else
            fprintf(stderr, "sluice run: %d request%s failed: %s (the first on line %d)\n", c->count,
                    c->count == 1 ? "" : "s", c->text, c->first_line);
    }
    if (b->res->n_unstarted)
        fprintf(stderr, "sluice run: %d prompt%s not started\n", b->res->n_unstarted,
                b->res->n_unstarted == 1 ? "" : "s");
}

static void batch_free(batch *b)
{
    for (int i = 0; b->ans && i < b->pr->n; i++) {
        free(b->ans[i].text);
        free(b->ans[i].ids);
        free(b->ans[i].error);
    }
    for (int i = 0; i < b->n_causes; i++)
        free(b->causes[i].text);
    free(b->causes);
    free(b->ans);
    free(b->sub_id);
    free(b->sub_index);
}

int cli_batch_run(sl_pipeline *p, const cli_prompts *pr, const cli_batch_opts *o, cli_batch_result *res,
                  sl_err *err)
{
    memset(res, 0, sizeof *res);
    batch b = {.p = p, .pr = pr, .o = o, .res = res, .stream = pr->n == 1 && pr->line[0] == 0};
    b.ans = calloc((size_t)pr->n, sizeof *b.ans);
    b.sub_id = calloc((size_t)pr->n, sizeof *b.sub_id);
    b.sub_index = calloc((size_t)pr->n, sizeof *b.sub_index);
    int rc = -1;
    if (!b.ans || !b.sub_id || !b.sub_index) {
        sl_fail(err, "out of memory");
        goto out;
    }
    b.t0 = b.last_progress = cli_now();
    if (loop(&b, err))
        goto out;
    res->t_total = cli_now() - b.t0;
    res->n_unstarted = pr->n - b.next;
    if (pr->n == 1) {
        res->last = b.ans[0].last;
        const sl_event *d = &res->last;
        res->decode_tok_s = d->decode_s > 0 && d->n_generated > 1 ? (d->n_generated - 1) / d->decode_s : 0.0;
    } else {
        res->decode_tok_s = res->t_total > 0 ? res->tokens / res->t_total : 0.0;
    }
    if (o->report)
        summarise(&b);
    rc = 0;
out:
    batch_free(&b);
    return rc;
}
