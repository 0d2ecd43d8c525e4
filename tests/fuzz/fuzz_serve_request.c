/* libFuzzer target for what `sluice serve` takes from outside: a request
 * body (JSON) into generation parameters, then a chat's messages into the
 * prompt in Gemma's turn format. The input's first byte picks the endpoint
 * (chat or completion); the rest is the body.
 *
 * An accepted request has sane parameters (max_tokens within the context,
 * top_p in (0, 1], at most 4 stop strings of 1 to 256 bytes, a chat with
 * messages or a completion with a non-empty prompt); a refused one is a 400
 * or 500 naming a message, and its error renders as JSON. A formatted chat
 * prompt ends opening the model's turn. Broken invariants trap. */
#include "cli/serve.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The parser and the chat formatting live in the sluice command's sources,
 * not the core library: compiled in here. */
#include "../../cli/serve_chat.c"
#include "../../cli/serve_request.c"

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_accepted(const sv_params *p, int context)
{
    require(p->max_tokens >= 0 && p->max_tokens <= context - 1);
    require(p->sampling.top_p > 0 && p->sampling.top_p <= 1);
    require(p->sampling.temperature >= 0 && p->sampling.min_p >= 0 && p->sampling.min_p <= 1);
    require(p->n_stop >= 0 && p->n_stop <= SV_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++)
        require(strlen(p->stop[i]) >= 1 && strlen(p->stop[i]) <= SV_STOP_MAX_LEN);
    if (!p->chat) {
        require(p->prompt && p->prompt[0]);
        return;
    }
    require(p->n_msgs > 0 && p->msgs);
    char *prompt = NULL;
    sv_error err = {0};
    const sl_chat_format *gemma = NULL;
    sl_err none;
    require(sl_chat_by_name(&gemma, "gemma", &none) == 0);
    if (sv_chat_prompt(gemma, NULL, p->msgs, p->n_msgs, &prompt, &err) == 0) {
        size_t n = strlen(prompt);
        require(n >= 21 && memcmp(prompt + n - 21, "<start_of_turn>model\n", 21) == 0);
        free(prompt);
    } else {
        require(err.status == 400 && err.message[0] && !prompt);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool chat = data[0] & 1;
    const int context = 512;
    sl_sampling defaults;
    sl_sampling_defaults(&defaults);
    sv_params p;
    sv_error err = {0};
    if (sv_parse_request((const char *)data + 1, size - 1, chat, &defaults, context, &p, &err) == 0) {
        check_accepted(&p, context);
    } else {
        require((err.status == 400 || err.status == 500) && err.message[0]);
        char *json = sv_error_json(&err);
        require(json != NULL);
        json_object *back = json_tokener_parse(json);
        require(back != NULL);
        json_object_put(back);
        free(json);
    }
    sv_params_free(&p);
    return 0;
}
