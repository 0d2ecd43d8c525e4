/* Chat turn formats: a conversation of {role, content} messages rendered as
 * the prompt text a model was trained on, and the piece that ends its turn.
 *
 * Formats (names for sl_chat_by_name, a later --chat-format):
 *   gemma               Gemma 1, 2 and 3: <start_of_turn>user\n...<end_of_turn>\n
 *                       and <start_of_turn>model\n; a leading system message
 *                       prefixes the first user turn (its text + "\n\n"), as
 *                       Gemma 3's template does; user and assistant alternate,
 *                       starting with user.
 *   gemma4              Gemma 4: <|turn>ROLE\n...<turn|>\n with ROLE system,
 *                       user or model; the generation prompt <|turn>model\n.
 *   gemma4-no-thinking  Gemma 4 as its larger models' templates render it with
 *                       thinking off: the generation prompt adds the empty
 *                       thought channel <|channel>thought\n<channel|>.
 * Message text is trimmed of surrounding whitespace as the templates' `trim`
 * does (not Gemma's folded system text, which its template keeps as is).
 * BOS is not part of the text: the tokenizer adds it. */
#ifndef SLUICE_CHAT_H
#define SLUICE_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "util/err.h"

typedef enum sl_chat_role {
    SL_CHAT_SYSTEM,
    SL_CHAT_USER,
    SL_CHAT_ASSISTANT,
} sl_chat_role;

typedef struct sl_chat_msg {
    sl_chat_role role;
    const char *content;
} sl_chat_msg;

typedef struct sl_chat_format sl_chat_format;

/* "system", "user" or "assistant"; fails naming the role otherwise. */
int sl_chat_role_parse(const char *name, sl_chat_role *role, sl_err *err);

/* The format called name; fails listing the known names. */
int sl_chat_by_name(const sl_chat_format **out, const char *name, sl_err *err);
/* The format a chat template (tokenizer.chat_template) renders, recognised
 * by its markers; an unknown template fails naming its first line. */
int sl_chat_from_template(const sl_chat_format **out, const char *tmpl, sl_err *err);
/* The format of a model file: its tokenizer.chat_template when it has one;
 * otherwise its architecture's (gemma4: gemma4; others: gemma), unless the
 * vocabulary (tok, NULL: not consulted) lacks that format's markers and
 * holds the other's (the small test vocabularies keep Gemma's markers for
 * every architecture). */
int sl_chat_from_gguf(const sl_chat_format **out, const gguf_file *f, const sl_tokenizer *tok,
                      sl_err *err);

const char *sl_chat_name(const sl_chat_format *fmt);
/* The piece that ends a turn ("<end_of_turn>", "<turn|>"): generation stops there. */
const char *sl_chat_end_of_turn(const sl_chat_format *fmt);
/* Checks that tok holds the format's turn markers as pieces; *end_id gets
 * the end-of-turn piece's id. */
int sl_chat_check_vocab(const sl_chat_format *fmt, const sl_tokenizer *tok, int32_t *end_id,
                        sl_err *err);

/* Renders n messages (then the model's turn opening when
 * add_generation_prompt) into a malloc'd string *out. Fails naming the
 * message at fault for an order the format does not allow. */
int sl_chat_apply(const sl_chat_format *fmt, const sl_chat_msg *msgs, int n,
                  bool add_generation_prompt, char **out, sl_err *err);

#endif
