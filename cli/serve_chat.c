/* Chat formatting for sluice serve: the turn formats themselves are
 * model/chat.c's (every Gemma generation's, recognised from the model's
 * tokenizer.chat_template or architecture, or forced by --chat-format; the
 * pipeline resolves it once, as for `sluice run`); this file maps the
 * server's messages onto them and their errors onto OpenAI-style ones
 * naming the field. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/serve.h"
#include "model/chat.h"

bool sv_chat_format_known(const char *name)
{
    const sl_chat_format *fmt;
    sl_err ignore;
    return sl_chat_by_name(&fmt, name, &ignore) == 0;
}

int sv_chat_prompt(const sl_chat_format *fmt, const char *why_none, const sv_msg *msgs, int n, char **out,
                   sv_error *err)
{
    *out = NULL;
    if (!fmt)
        return sv_fail(err, 400, "invalid_request_error", "messages", "unsupported_chat_template",
                       "%s; start the server with --chat-format NAME to force one",
                       why_none && why_none[0] ? why_none : "the model has no chat format sluice knows");
    if (n > 0 && msgs[n - 1].role != SV_ROLE_USER)
        return sv_fail(err, 400, "invalid_request_error", "messages", NULL,
                       "messages: the last message must be the user's");
    sl_chat_msg *cm = malloc((size_t)(n > 0 ? n : 1) * sizeof *cm);
    if (!cm)
        return sv_fail(err, 500, "server_error", "", NULL, "out of memory");
    static const sl_chat_role roles[] = {
        [SV_ROLE_SYSTEM] = SL_CHAT_SYSTEM, [SV_ROLE_USER] = SL_CHAT_USER, [SV_ROLE_ASSISTANT] = SL_CHAT_ASSISTANT};
    for (int i = 0; i < n; i++)
        cm[i] = (sl_chat_msg){roles[msgs[i].role], msgs[i].content};
    sl_err e;
    int rc = sl_chat_apply(fmt, cm, n, true, out, &e);
    free(cm);
    if (rc == 0)
        return 0;
    int at;
    char param[32] = "messages";
    if (sscanf(e.msg, "message %d", &at) == 1 && at >= 0 && at < n)
        snprintf(param, sizeof param, "messages[%d].role", at);
    return sv_fail(err, 400, "invalid_request_error", param, NULL, "%s: %s", param, e.msg);
}
