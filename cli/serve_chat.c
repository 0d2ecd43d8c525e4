/* Chat formatting for sluice serve: ALL of the server's turn formatting is
 * sv_chat_prompt, so it can be pointed at the model layer's chat formats in
 * one place. Gemma's format: a system message is folded into the first user
 * turn (Gemma has no system role), contents are trimmed, user and model
 * turns alternate, and the prompt ends opening the model's turn. For one
 * user message this is exactly the text `sluice run --chat` feeds. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/serve.h"

bool sv_chat_format_known(const char *name) { return strcmp(name, "gemma") == 0; }

typedef struct strbuf {
    char *s;
    size_t len, cap;
    bool oom;
} strbuf;

static void put(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *t = realloc(b->s, cap);
        if (!t) {
            b->oom = true;
            return;
        }
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void put_trimmed(strbuf *b, const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    put(b, s, n);
}

static int known_template(const char *tmpl, const char *forced, sv_error *err)
{
    if (forced)
        return sv_chat_format_known(forced) ? 0 : sv_fail(err, 500, "server_error", "", NULL,
                                                          "unknown chat format '%s' (known: gemma)", forced);
    if (!tmpl || strstr(tmpl, "<start_of_turn>"))
        return 0;
    size_t line = strcspn(tmpl, "\n");
    return sv_fail(err, 400, "invalid_request_error", "messages", "unsupported_chat_template",
                   "the model's chat template is not one sluice knows (first line: '%.*s'); start the server "
                   "with --chat-format gemma to force Gemma's turn format", (int)(line < 120 ? line : 120), tmpl);
}

int sv_chat_prompt(const char *tmpl, const char *forced, const sv_msg *msgs, int n, char **out, sv_error *err)
{
    *out = NULL;
    if (known_template(tmpl, forced, err))
        return -1;
    int first = n > 0 && msgs[0].role == SV_ROLE_SYSTEM ? 1 : 0;
    if (first == n)
        return sv_fail(err, 400, "invalid_request_error", "messages", NULL,
                       "messages: needs at least one user message");
    strbuf b = {0};
    for (int i = first; i < n; i++) {
        sv_role want = (i - first) % 2 == 0 ? SV_ROLE_USER : SV_ROLE_ASSISTANT;
        if (msgs[i].role != want) {
            char param[32];
            snprintf(param, sizeof param, "messages[%d].role", i);
            free(b.s);
            return sv_fail(err, 400, "invalid_request_error", param, NULL,
                           "%s: Gemma's turns must alternate user/assistant after an optional first system "
                           "message; expected '%s'", param, want == SV_ROLE_USER ? "user" : "assistant");
        }
        put(&b, want == SV_ROLE_USER ? "<start_of_turn>user\n" : "<start_of_turn>model\n", 20 + (want != SV_ROLE_USER));
        if (i == first && first) {
            put_trimmed(&b, msgs[0].content);
            put(&b, "\n\n", 2);
        }
        put_trimmed(&b, msgs[i].content);
        put(&b, "<end_of_turn>\n", 14);
    }
    if (msgs[n - 1].role != SV_ROLE_USER) {
        free(b.s);
        return sv_fail(err, 400, "invalid_request_error", "messages", NULL,
                       "messages: the last message must be the user's");
    }
    put(&b, "<start_of_turn>model\n", 21);
    if (b.oom) {
        free(b.s);
        return sv_fail(err, 500, "server_error", "", NULL, "out of memory");
    }
    *out = b.s;
    return 0;
}
