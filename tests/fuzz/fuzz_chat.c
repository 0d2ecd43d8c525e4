/* libFuzzer target: any byte string as a chat template is recognised as a
 * known format or refused with a message naming its first line; split into
 * messages with fuzzed roles, it renders in every format or is refused
 * naming the message at fault. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat.h"

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

#define MAX_MSGS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sl_err err = {{0}};
    const sl_chat_format *fmt = NULL;
    if (sl_chat_from_template(&fmt, text, &err) == 0)
        require(fmt != NULL && sl_chat_end_of_turn(fmt)[0] != '\0');
    else
        require(strstr(err.msg, "unknown chat template (first line: '") != NULL);
    /* messages: the text cut at 0x01 bytes, each first byte choosing the role */
    sl_chat_msg msgs[MAX_MSGS];
    int n = 0;
    for (char *s = text; s && n < MAX_MSGS; n++) {
        char *next = strchr(s, '\x01');
        if (next)
            *next++ = '\0';
        msgs[n].role = (sl_chat_role)((unsigned char)s[0] % 3);
        msgs[n].content = s;
        s = next;
    }
    static const char *const names[] = {"gemma", "gemma4", "gemma4-no-thinking"};
    for (int i = 0; i < 3; i++) {
        require(sl_chat_by_name(&fmt, names[i], &err) == 0);
        char *out = NULL;
        if (sl_chat_apply(fmt, msgs, n, i == 1, &out, &err) == 0) {
            require(out != NULL && strstr(out, sl_chat_end_of_turn(fmt)) != NULL);
            free(out);
        } else {
            require(out == NULL && strstr(err.msg, "message") != NULL);
        }
    }
    free(text);
    return 0;
}
