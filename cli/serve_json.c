/* Response bodies of sluice serve (json-c), shaped as OpenAI's API and
 * llama-server answer them. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/serve.h"

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none:
 * no overlong forms, surrogates or code points past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return len;
}

/* A JSON string of text whose bytes that are not UTF-8 (a character a
 * token limit cut in two, byte-fallback pieces) become U+FFFD: JSON text is
 * UTF-8, and strict clients refuse anything else. */
static json_object *text_json(const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)(text ? text : "");
    char *clean = malloc(n * 3 + 1);
    if (!clean)
        return json_object_new_string("");
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(s + i, n - i);
        if (len) {
            memcpy(clean + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(clean + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_object *j = json_object_new_string_len(clean, (int)o);
    free(clean);
    return j;
}

static char *finish_json(json_object *root)
{
    char *s = root ? strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE))
                   : NULL;
    json_object_put(root);
    return s;
}

static json_object *usage_json(const sv_job *j)
{
    json_object *u = json_object_new_object(), *details = json_object_new_object();
    json_object_object_add(u, "prompt_tokens", json_object_new_int(j->n_prompt));
    json_object_object_add(u, "completion_tokens", json_object_new_int(j->n_tokens));
    json_object_object_add(u, "total_tokens", json_object_new_int(j->n_prompt + j->n_tokens));
    json_object_object_add(details, "cached_tokens", json_object_new_int(j->n_cached));
    json_object_object_add(u, "prompt_tokens_details", details);
    return u;
}

static json_object *head_json(const sv_server *s, const sv_job *j, const char *object)
{
    json_object *root = json_object_new_object();
    json_object_object_add(root, "id", json_object_new_string(j->id));
    json_object_object_add(root, "object", json_object_new_string(object));
    json_object_object_add(root, "created", json_object_new_int64(j->created));
    json_object_object_add(root, "model", json_object_new_string(s->model_name));
    json_object_object_add(root, "system_fingerprint", json_object_new_string("sluice"));
    return root;
}

char *sv_json_final(const sv_server *s, const sv_job *j)
{
    json_object *root = head_json(s, j, j->chat ? "chat.completion" : "text_completion");
    json_object *choices = json_object_new_array(), *c = json_object_new_object();
    json_object_object_add(c, "index", json_object_new_int(0));
    json_object *text = text_json(j->text, j->len);
    if (j->chat) {
        json_object *msg = json_object_new_object();
        json_object_object_add(msg, "role", json_object_new_string("assistant"));
        json_object_object_add(msg, "content", text);
        json_object_object_add(c, "message", msg);
    } else {
        json_object_object_add(c, "text", text);
    }
    json_object_object_add(c, "logprobs", NULL);
    json_object_object_add(c, "finish_reason", json_object_new_string(j->finish ? j->finish : "stop"));
    json_object_array_add(choices, c);
    json_object_object_add(root, "choices", choices);
    json_object_object_add(root, "usage", usage_json(j));
    return finish_json(root);
}

char *sv_sse_chunk(const sv_server *s, const sv_job *j, const char *delta, size_t n, bool role_first,
                   const char *finish, bool usage)
{
    json_object *root = head_json(s, j, j->chat ? "chat.completion.chunk" : "text_completion");
    json_object *choices = json_object_new_array();
    if (!usage) {
        json_object *c = json_object_new_object();
        json_object_object_add(c, "index", json_object_new_int(0));
        json_object *text = text_json(delta, n);
        if (j->chat) {
            json_object *d = json_object_new_object();
            if (role_first)
                json_object_object_add(d, "role", json_object_new_string("assistant"));
            if (n || !finish)
                json_object_object_add(d, "content", text);
            else
                json_object_put(text);
            json_object_object_add(c, "delta", d);
        } else {
            json_object_object_add(c, "text", text);
        }
        json_object_object_add(c, "logprobs", NULL);
        json_object_object_add(c, "finish_reason", finish ? json_object_new_string(finish) : NULL);
        json_object_array_add(choices, c);
    }
    json_object_object_add(root, "choices", choices);
    /* with include_usage every chunk has the field, null but on the last */
    if (j->include_usage)
        json_object_object_add(root, "usage", usage ? usage_json(j) : NULL);
    char *body = finish_json(root);
    if (!body)
        return NULL;
    size_t len = strlen(body) + 16;
    char *ev = malloc(len);
    if (ev)
        snprintf(ev, len, "data: %s\n\n", body);
    free(body);
    return ev;
}

char *sv_json_models(const sv_server *s)
{
    json_object *root = json_object_new_object(), *data = json_object_new_array(), *m = json_object_new_object();
    json_object_object_add(m, "id", json_object_new_string(s->model_name));
    json_object_object_add(m, "object", json_object_new_string("model"));
    json_object_object_add(m, "created", json_object_new_int64(0));
    json_object_object_add(m, "owned_by", json_object_new_string("sluice"));
    json_object *meta = json_object_new_object();
    json_object_object_add(meta, "n_ctx", json_object_new_int(s->cfg->limits.context));
    json_object_object_add(meta, "max_sequences", json_object_new_int(s->cfg->limits.max_sequences));
    json_object_object_add(meta, "stages", json_object_new_int(s->cfg->n_stages));
    /* the pipeline's layout, for the chat page's drawing */
    json_object *stages = json_object_new_array();
    for (int i = 0; i < s->cfg->n_stages; i++) {
        const pl_stage *st = &s->cfg->stages[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "index", json_object_new_int(i));
        json_object_object_add(o, "kind", json_object_new_string(pl_stage_kind_name(st->kind)));
        json_object_object_add(o, "node", json_object_new_string(s->cfg->nodes[st->node].name));
        json_object_object_add(o, "local", json_object_new_boolean(st->node == 0));
        if (st->kind == PL_STAGE_LAYERS) {
            json_object_object_add(o, "l0", json_object_new_int(st->l0));
            json_object_object_add(o, "l1", json_object_new_int(st->l1));
        }
        json_object_array_add(stages, o);
    }
    json_object_object_add(meta, "pipeline", stages);
    json_object_object_add(m, "meta", meta);
    json_object_array_add(data, m);
    json_object_object_add(root, "object", json_object_new_string("list"));
    json_object_object_add(root, "data", data);
    return finish_json(root);
}
