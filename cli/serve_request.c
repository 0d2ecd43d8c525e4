/* Request bodies of sluice serve (json-c) into generation parameters, with
 * OpenAI's field names; every refusal names the field (see serve.h). */
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/serve.h"

int sv_fail(sv_error *err, int status, const char *type, const char *param, const char *code, const char *fmt,
            ...)
{
    err->status = status;
    err->type = type;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *sv_error_json(const sv_error *err)
{
    json_object *root = json_object_new_object(), *e = json_object_new_object();
    json_object_object_add(e, "message", json_object_new_string(err->message));
    json_object_object_add(e, "type", json_object_new_string(err->type ? err->type : "server_error"));
    json_object_object_add(e, "param", err->param[0] ? json_object_new_string(err->param) : NULL);
    json_object_object_add(e, "code", err->code ? json_object_new_string(err->code) : NULL);
    json_object_object_add(root, "error", e);
    char *s = strdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return s;
}

static int bad(sv_error *err, const char *param, const char *fmt, const char *detail)
{
    return sv_fail(err, 400, "invalid_request_error", param, NULL, fmt, param, detail);
}

/* A number field within [lo, hi]; absent or null leaves *out as it is. */
static int get_number(json_object *o, const char *key, double lo, double hi, double *out, sv_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v)
        return 0;
    enum json_type t = json_object_get_type(v);
    if (t != json_type_double && t != json_type_int)
        return bad(err, key, "%s: must be a number%s", "");
    double d = json_object_get_double(v);
    if (!isfinite(d) || d < lo || d > hi) {
        char range[96];
        snprintf(range, sizeof range, " in [%g, %g]", lo, hi);
        return bad(err, key, "%s: must be a number%s", range);
    }
    *out = d;
    return 0;
}

static int get_int(json_object *o, const char *key, int64_t lo, int64_t hi, int64_t *out, sv_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v)
        return 0;
    if (json_object_get_type(v) != json_type_int) {
        /* 3.0 is an integer to JavaScript clients */
        double d = json_object_get_type(v) == json_type_double ? json_object_get_double(v) : NAN;
        if (!(d == floor(d) && d >= (double)lo && d <= (double)hi))
            return bad(err, key, "%s: must be an integer%s", "");
        *out = (int64_t)d;
        return 0;
    }
    int64_t i = json_object_get_int64(v);
    if (i < lo || i > hi) {
        char range[96];
        snprintf(range, sizeof range, " in [%lld, %lld]", (long long)lo, (long long)hi);
        return bad(err, key, "%s: must be an integer%s", range);
    }
    *out = i;
    return 0;
}

static int get_bool(json_object *o, const char *key, bool *out, sv_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !v)
        return 0;
    if (json_object_get_type(v) != json_type_boolean)
        return bad(err, key, "%s: must be true or false%s", "");
    *out = json_object_get_boolean(v);
    return 0;
}

static int get_sampling(json_object *o, sl_sampling *s, sv_error *err)
{
    double d;
    int64_t i;
    d = s->temperature;
    if (get_number(o, "temperature", 0, 100, &d, err))
        return -1;
    s->temperature = (float)d;
    d = s->top_p;
    if (get_number(o, "top_p", 1e-9, 1, &d, err))
        return -1;
    s->top_p = (float)d;
    d = s->min_p;
    if (get_number(o, "min_p", 0, 1, &d, err))
        return -1;
    s->min_p = (float)d;
    d = s->repeat_penalty;
    if (get_number(o, "repeat_penalty", 1e-3, 1e3, &d, err))
        return -1;
    s->repeat_penalty = (float)d;
    i = s->top_k;
    if (get_int(o, "top_k", 0, 1 << 30, &i, err))
        return -1;
    s->top_k = (int)i;
    i = s->repeat_last_n;
    if (get_int(o, "repeat_last_n", 0, 1 << 24, &i, err))
        return -1;
    s->repeat_last_n = (int)i;
    i = (int64_t)(s->seed & INT64_MAX);
    if (get_int(o, "seed", INT64_MIN, INT64_MAX, &i, err))
        return -1;
    s->seed = (uint64_t)i;
    /* OpenAI's penalties are additive: only their no-op value maps onto
     * the multiplicative repeat_penalty the sampler has */
    static const char *const additive[] = {"frequency_penalty", "presence_penalty"};
    for (int k = 0; k < 2; k++) {
        d = 0;
        if (get_number(o, additive[k], -2, 2, &d, err))
            return -1;
        if (d != 0)
            return sv_fail(err, 400, "invalid_request_error", additive[k], "unsupported_parameter",
                           "%s: only 0 is supported (the sampler's penalty is llama.cpp's multiplicative "
                           "repeat_penalty: give that instead)", additive[k]);
    }
    return 0;
}

static int get_stop(json_object *o, sv_params *p, sv_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, "stop", &v) || !v)
        return 0;
    json_object *one[1] = {v};
    json_object **items = one;
    size_t n = 1;
    bool array = json_object_get_type(v) == json_type_array;
    if (array && (n = json_object_array_length(v)) > SV_MAX_STOP)
        return bad(err, "stop", "%s: at most 4 stop strings%s", "");
    for (size_t k = 0; k < n; k++) {
        json_object *s = array ? json_object_array_get_idx(v, k) : items[0];
        if (json_object_get_type(s) != json_type_string)
            return bad(err, "stop", "%s: must be a string or an array of strings%s", "");
        int len = json_object_get_string_len(s);
        if (len == 0 || len > SV_STOP_MAX_LEN)
            return bad(err, "stop", "%s: each stop string must have 1 to 256 bytes%s", "");
        if (!(p->stop[p->n_stop++] = strdup(json_object_get_string(s))))
            return sv_fail(err, 500, "server_error", "", NULL, "out of memory");
    }
    return 0;
}

static int get_max_tokens(json_object *o, int context, sv_params *p, sv_error *err)
{
    static const char *const keys[] = {"max_completion_tokens", "max_tokens", "n_predict"};
    for (int k = 0; k < 3; k++) {
        int64_t i = 0;
        json_object *v;
        if (!json_object_object_get_ex(o, keys[k], &v) || !v)
            continue;
        if (get_int(o, keys[k], 1, INT32_MAX, &i, err))
            return -1;
        if (i > context - 1)
            return sv_fail(err, 400, "invalid_request_error", keys[k], "context_length_exceeded",
                           "%s: %lld is past the context: at most %d tokens fit (the prompt's included)",
                           keys[k], (long long)i, context - 1);
        p->max_tokens = (int)i;
        return 0;
    }
    return 0;
}

/* A message's content: a string, or an array of {"type":"text","text":...}
 * parts (joined), as OpenAI's API allows. */
static int get_content(json_object *m, const char *param, char **out, sv_error *err)
{
    json_object *c;
    if (!json_object_object_get_ex(m, "content", &c) || !c)
        return bad(err, param, "%s: missing%s", "");
    if (json_object_get_type(c) == json_type_string)
        return (*out = strdup(json_object_get_string(c))) ? 0 : sv_fail(err, 500, "server_error", "", NULL,
                                                                         "out of memory");
    if (json_object_get_type(c) != json_type_array)
        return bad(err, param, "%s: must be a string or an array of text parts%s", "");
    size_t n = json_object_array_length(c), total = 1;
    for (size_t k = 0; k < n; k++) {
        json_object *part = json_object_array_get_idx(c, k), *type, *text;
        if (json_object_get_type(part) != json_type_object || !json_object_object_get_ex(part, "type", &type) ||
            json_object_get_type(type) != json_type_string || strcmp(json_object_get_string(type), "text") != 0 ||
            !json_object_object_get_ex(part, "text", &text) || json_object_get_type(text) != json_type_string)
            return bad(err, param, "%s: every part must be {\"type\": \"text\", \"text\": STRING}%s", "");
        total += (size_t)json_object_get_string_len(text);
    }
    char *s = malloc(total);
    if (!s)
        return sv_fail(err, 500, "server_error", "", NULL, "out of memory");
    s[0] = 0;
    for (size_t k = 0; k < n; k++) {
        json_object *text;
        json_object_object_get_ex(json_object_array_get_idx(c, k), "text", &text);
        strcat(s, json_object_get_string(text));
    }
    *out = s;
    return 0;
}

static int get_messages(json_object *o, sv_params *p, sv_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, "messages", &v) || !v)
        return bad(err, "messages", "%s: missing%s", "");
    if (json_object_get_type(v) != json_type_array || json_object_array_length(v) == 0)
        return bad(err, "messages", "%s: must be a non-empty array%s", "");
    size_t n = json_object_array_length(v);
    if (n > 4096)
        return bad(err, "messages", "%s: at most 4096 messages%s", "");
    if (!(p->msgs = calloc(n, sizeof *p->msgs)))
        return sv_fail(err, 500, "server_error", "", NULL, "out of memory");
    for (size_t k = 0; k < n; k++) {
        json_object *m = json_object_array_get_idx(v, k), *role;
        char param[48];
        snprintf(param, sizeof param, "messages[%zu]", k);
        if (json_object_get_type(m) != json_type_object)
            return bad(err, param, "%s: must be an object%s", "");
        snprintf(param, sizeof param, "messages[%zu].role", k);
        if (!json_object_object_get_ex(m, "role", &role) || json_object_get_type(role) != json_type_string)
            return bad(err, param, "%s: must be a string%s", "");
        const char *r = json_object_get_string(role);
        if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0)
            p->msgs[k].role = SV_ROLE_SYSTEM;
        else if (strcmp(r, "user") == 0)
            p->msgs[k].role = SV_ROLE_USER;
        else if (strcmp(r, "assistant") == 0)
            p->msgs[k].role = SV_ROLE_ASSISTANT;
        else
            return bad(err, param, "%s: unknown role (system, user or assistant)%s", "");
        p->n_msgs = (int)k + 1;
        snprintf(param, sizeof param, "messages[%zu].content", k);
        if (get_content(m, param, &p->msgs[k].content, err))
            return -1;
    }
    return 0;
}

static int get_prompt(json_object *o, sv_params *p, sv_error *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, "prompt", &v) || !v)
        return bad(err, "prompt", "%s: missing%s", "");
    /* an array of one string is the same prompt; more are several
     * completions, which one request does not do here */
    if (json_object_get_type(v) == json_type_array && json_object_array_length(v) == 1)
        v = json_object_array_get_idx(v, 0);
    if (json_object_get_type(v) != json_type_string)
        return bad(err, "prompt", "%s: must be a string%s", "");
    if (json_object_get_string_len(v) == 0)
        return bad(err, "prompt", "%s: must not be empty%s", "");
    return (p->prompt = strdup(json_object_get_string(v))) ? 0
                                                         : sv_fail(err, 500, "server_error", "", NULL, "out of memory");
}

static int get_stream(json_object *o, sv_params *p, sv_error *err)
{
    if (get_bool(o, "stream", &p->stream, err))
        return -1;
    json_object *so;
    if (!json_object_object_get_ex(o, "stream_options", &so) || !so)
        return 0;
    if (json_object_get_type(so) != json_type_object)
        return bad(err, "stream_options", "%s: must be an object%s", "");
    json_object *v;
    if (json_object_object_get_ex(so, "include_usage", &v) && v) {
        if (json_object_get_type(v) != json_type_boolean)
            return bad(err, "stream_options.include_usage", "%s: must be true or false%s", "");
        p->include_usage = json_object_get_boolean(v);
    }
    return 0;
}

static int parse_fields(json_object *root, bool chat, int context, sv_params *out, sv_error *err)
{
    int64_t n = 1;
    if (get_int(root, "n", 1, 1, &n, err))
        return sv_fail(err, 400, "invalid_request_error", "n", NULL, "n: only 1 choice a request is supported");
    json_object *model;
    if (json_object_object_get_ex(root, "model", &model) && model && json_object_get_type(model) != json_type_string)
        return bad(err, "model", "%s: must be a string%s", "");
    if (chat ? get_messages(root, out, err) : get_prompt(root, out, err))
        return -1;
    return get_max_tokens(root, context, out, err) || get_sampling(root, &out->sampling, err) ||
           get_stop(root, out, err) || get_stream(root, out, err) ? -1 : 0;
}

int sv_parse_request(const char *body, size_t len, bool chat, const sl_sampling *defaults, int context,
                     sv_params *out, sv_error *err)
{
    memset(out, 0, sizeof *out);
    out->chat = chat;
    out->sampling = *defaults;
    if (len > SV_BODY_MAX)
        return sv_fail(err, 400, "invalid_request_error", "", "request_too_large",
                       "the request body has %zu bytes; at most %d are accepted", len, SV_BODY_MAX);
    json_tokener *tok = json_tokener_new();
    if (!tok)
        return sv_fail(err, 500, "server_error", "", NULL, "out of memory");
    json_object *root = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    /* the whole body must be the one value (trailing bytes are an error) */
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    int rc;
    if (!root || jerr != json_tokener_success)
        rc = sv_fail(err, 400, "invalid_request_error", "", "invalid_json", "the body is not valid JSON: %s",
                     jerr == json_tokener_continue ? "it ends too early" : json_tokener_error_desc(jerr));
    else if (used < len && strspn(body + used, " \t\r\n") != len - used)
        rc = sv_fail(err, 400, "invalid_request_error", "", "invalid_json",
                     "the body is not valid JSON: bytes after the object (at %zu)", used);
    else if (json_object_get_type(root) != json_type_object)
        rc = sv_fail(err, 400, "invalid_request_error", "", "invalid_json", "the body must be a JSON object");
    else
        rc = parse_fields(root, chat, context, out, err);
    json_object_put(root);
    return rc;
}

void sv_params_free(sv_params *p)
{
    for (int i = 0; i < p->n_msgs; i++)
        free(p->msgs[i].content);
    free(p->msgs);
    free(p->prompt);
    for (int i = 0; i < p->n_stop; i++)
        free(p->stop[i]);
    memset(p, 0, sizeof *p);
}
