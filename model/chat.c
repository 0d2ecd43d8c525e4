#include "model/chat.h"

#include <stdlib.h>
#include <string.h>

/* Sources for the strings: the chat templates Google ships in
 * tokenizer_config.json / chat_template.jinja (Gemma 1-3: <start_of_turn>,
 * role "model" for the assistant, system folded into the first user turn by
 * Gemma 3; Gemma 4: <|turn>ROLE\n ... <turn|>\n with a system role of its
 * own, and in the larger models' templates the empty thought channel after
 * the generation prompt when thinking is off). */
struct sl_chat_format {
    const char *name;
    const char *open, *close; /* turn markers: pieces of the vocabulary */
    bool fold_system;         /* a leading system message prefixes the first user turn */
    bool alternate;           /* user, assistant, user, ... */
    const char *gen_suffix;   /* after the generation prompt's "<open>model\n" */
};

static const sl_chat_format FORMATS[] = {
    {"gemma", "<start_of_turn>", "<end_of_turn>", true, true, ""},
    {"gemma4", "<|turn>", "<turn|>", false, false, ""},
    {"gemma4-no-thinking", "<|turn>", "<turn|>", false, false, "<|channel>thought\n<channel|>"},
};
#define N_FORMATS (int)(sizeof FORMATS / sizeof FORMATS[0])
#define FMT_GEMMA (&FORMATS[0])
#define FMT_GEMMA4 (&FORMATS[1])
#define FMT_GEMMA4_NO_THINKING (&FORMATS[2])

static const char *const ROLE_NAMES[] = {"system", "user", "assistant"};

int sl_chat_role_parse(const char *name, sl_chat_role *role, sl_err *err)
{
    for (int r = 0; r < 3; r++)
        if (strcmp(name, ROLE_NAMES[r]) == 0) {
            *role = (sl_chat_role)r;
            return 0;
        }
    return sl_fail(err, "unknown chat role '%.64s' (expected system, user or assistant)", name);
}

int sl_chat_by_name(const sl_chat_format **out, const char *name, sl_err *err)
{
    for (int i = 0; i < N_FORMATS; i++)
        if (strcmp(name, FORMATS[i].name) == 0) {
            *out = &FORMATS[i];
            return 0;
        }
    return sl_fail(err, "unknown chat format '%.64s' (known: gemma, gemma4, gemma4-no-thinking)", name);
}

/* The template's first non-blank line, trimmed and cut to fit a message. */
static void first_line(const char *tmpl, char *buf, size_t cap)
{
    const char *s = tmpl;
    while (*s == '\n' || *s == '\r' || *s == ' ' || *s == '\t')
        s++;
    size_t n = strcspn(s, "\r\n");
    if (n > cap - 1)
        n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
}

int sl_chat_from_template(const sl_chat_format **out, const char *tmpl, sl_err *err)
{
    if (strstr(tmpl, "<|turn>")) {
        /* in the template the newline is a Jinja string escape; a template
         * written out with a real newline is accepted too */
        bool empty_thought = strstr(tmpl, "<|channel>thought\\n<channel|>") ||
                             strstr(tmpl, "<|channel>thought\n<channel|>");
        *out = empty_thought ? FMT_GEMMA4_NO_THINKING : FMT_GEMMA4;
        return 0;
    }
    if (strstr(tmpl, "<start_of_turn>")) {
        *out = FMT_GEMMA;
        return 0;
    }
    char line[96];
    first_line(tmpl, line, sizeof line);
    return sl_fail(err, "unknown chat template (first line: '%s'); known formats: gemma, gemma4, "
                   "gemma4-no-thinking", line);
}

static bool has_markers(const sl_chat_format *fmt, const sl_tokenizer *tok)
{
    return sl_tok_piece_id(tok, fmt->open) >= 0 && sl_tok_piece_id(tok, fmt->close) >= 0;
}

int sl_chat_from_gguf(const sl_chat_format **out, const gguf_file *f, const sl_tokenizer *tok,
                      sl_err *err)
{
    char *tmpl = NULL, *arch = NULL;
    if (gguf_get_str(f, "tokenizer.chat_template", &tmpl, err) < 0)
        return -1;
    if (tmpl) {
        int rc = sl_chat_from_template(out, tmpl, err);
        free(tmpl);
        return rc < 0 ? sl_wrap(err, "%s", f->path) : 0;
    }
    if (gguf_get_str(f, "general.architecture", &arch, err) < 0)
        return -1;
    bool g4 = arch && strcmp(arch, "gemma4") == 0;
    free(arch);
    const sl_chat_format *own = g4 ? FMT_GEMMA4 : FMT_GEMMA, *other = g4 ? FMT_GEMMA : FMT_GEMMA4;
    *out = tok && !has_markers(own, tok) && has_markers(other, tok) ? other : own;
    return 0;
}

const char *sl_chat_name(const sl_chat_format *fmt) { return fmt->name; }
const char *sl_chat_end_of_turn(const sl_chat_format *fmt) { return fmt->close; }

int sl_chat_check_vocab(const sl_chat_format *fmt, const sl_tokenizer *tok, int32_t *end_id,
                        sl_err *err)
{
    if (!has_markers(fmt, tok))
        return sl_fail(err, "chat mode needs %s/%s in the vocabulary (chat format %s)", fmt->open,
                       fmt->close, fmt->name);
    *end_id = sl_tok_piece_id(tok, fmt->close);
    return 0;
}

/* ---- rendering ---- */

typedef struct text_buf {
    char *s;
    size_t len, cap;
    bool oom;
} text_buf;

static void put(text_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void puts_(text_buf *b, const char *s) { put(b, s, strlen(s)); }

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Appends s without its leading and trailing whitespace (Jinja's trim). */
static void put_trimmed(text_buf *b, const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && is_space(*s))
        s++, n--;
    while (n > 0 && is_space(s[n - 1]))
        n--;
    put(b, s, n);
}

static void put_turn(text_buf *b, const sl_chat_format *fmt, const char *role, const char *prefix,
                     const char *content)
{
    puts_(b, fmt->open);
    puts_(b, role);
    puts_(b, "\n");
    if (prefix) {
        puts_(b, prefix);
        puts_(b, "\n\n");
    }
    put_trimmed(b, content);
    puts_(b, fmt->close);
    puts_(b, "\n");
}

/* Whether message i (of the turns after a folded system message, j-th of
 * them) may come where it is. */
static int check_order(const sl_chat_format *fmt, const sl_chat_msg *m, int i, int j, sl_err *err)
{
    if ((int)m->role < 0 || (int)m->role > SL_CHAT_ASSISTANT)
        return sl_fail(err, "message %d: unknown role %d", i, (int)m->role);
    if (!fmt->alternate)
        return 0;
    if (m->role == SL_CHAT_SYSTEM)
        return sl_fail(err, "message %d: a system message may only come first (chat format %s)", i,
                       fmt->name);
    sl_chat_role want = j % 2 == 0 ? SL_CHAT_USER : SL_CHAT_ASSISTANT;
    if (m->role != want)
        return sl_fail(err, "message %d is %s: roles must alternate user/assistant/user/... "
                       "(chat format %s)", i, ROLE_NAMES[m->role], fmt->name);
    return 0;
}

int sl_chat_apply(const sl_chat_format *fmt, const sl_chat_msg *msgs, int n,
                  bool add_generation_prompt, char **out, sl_err *err)
{
    *out = NULL;
    if (n < 1)
        return sl_fail(err, "a chat needs at least one message");
    int first = 0;
    const char *prefix = NULL;
    if (fmt->fold_system && msgs[0].role == SL_CHAT_SYSTEM) {
        if (n < 2)
            return sl_fail(err, "a system message needs a user message after it (chat format %s)",
                           fmt->name);
        prefix = msgs[0].content ? msgs[0].content : "";
        first = 1;
    }
    text_buf b = {0};
    for (int i = first; i < n; i++) {
        if (check_order(fmt, &msgs[i], i, i - first, err)) {
            free(b.s);
            return -1;
        }
        const char *role = msgs[i].role == SL_CHAT_ASSISTANT ? "model" : ROLE_NAMES[msgs[i].role];
        put_turn(&b, fmt, role, i == first ? prefix : NULL, msgs[i].content ? msgs[i].content : "");
    }
    if (add_generation_prompt) {
        puts_(&b, fmt->open);
        puts_(&b, "model\n");
        puts_(&b, fmt->gen_suffix);
    }
    if (b.oom) {
        free(b.s);
        return sl_fail(err, "out of memory formatting a chat of %d messages", n);
    }
    *out = b.s;
    return 0;
}
