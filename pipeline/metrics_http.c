/* GET /metrics over libmicrohttpd (see metrics_http.h). */
#include "pipeline/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct pl_metrics_http {
    struct MHD_Daemon *daemon;
    char url[96];
    pl_metrics_source source;
    void *ctx;
};

#define PROM_TYPE "text/plain; version=0.0.4; charset=utf-8"

int pl_metrics_http_parse(const char *spec, char *ip, unsigned long ip_size, int *port, sl_err *err)
{
    const char *colon = strrchr(spec, ':');
    const char *num = colon ? colon + 1 : spec;
    size_t host_len = colon ? (size_t)(colon - spec) : 0;
    char *end;
    errno = 0;
    long p = strtol(num, &end, 10);
    if (!*num || *end || errno || p < 1 || p > 65535)
        return sl_fail(err, "metrics address '%s': the port must be a number in [1, 65535]", spec);
    if (host_len + 1 > ip_size)
        return sl_fail(err, "metrics address '%s': the host part is too long", spec);
    if (colon) {
        memcpy(ip, spec, host_len);
        ip[host_len] = '\0';
    } else {
        snprintf(ip, ip_size, "127.0.0.1");
    }
    struct in_addr a;
    if (inet_pton(AF_INET, ip, &a) != 1)
        return sl_fail(err, "metrics address '%s': '%s' is not an IPv4 address", spec, ip);
    *port = (int)p;
    return 0;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned int code, char *body, const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)version;
    (void)upload;
    pl_metrics_http *h = cls;
    /* the first call of a request only announces its headers */
    static int started;
    if (!*state) {
        *state = &started;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* a body we do not want: read past it */
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("only GET\n"), "text/plain");
    if (strcmp(url, "/metrics") != 0)
        return answer(c, MHD_HTTP_NOT_FOUND, strdup("not found: try /metrics\n"), "text/plain");
    char *text = h->source(h->ctx);
    if (!text)
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, strdup("out of memory\n"), "text/plain");
    return answer(c, MHD_HTTP_OK, text, PROM_TYPE);
}

static int listen_on(const struct sockaddr_in *sa, sl_err *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sl_fail(err, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 || listen(fd, 16) != 0) {
        int e = errno;
        close(fd);
        return sl_fail(err, "%s%s", strerror(e), e == EADDRINUSE ? " (another process serves that port)" : "");
    }
    return fd;
}

const char *pl_metrics_http_url(const pl_metrics_http *h)
{
    return h ? h->url : "";
}

int pl_metrics_http_start(pl_metrics_http **out, const char *spec, pl_metrics_source source, void *ctx,
                          sl_err *err)
{
    *out = NULL;
    char ip[64];
    int port;
    if (pl_metrics_http_parse(spec, ip, sizeof ip, &port, err))
        return -1;
    pl_metrics_http *h = calloc(1, sizeof *h);
    if (!h)
        return sl_fail(err, "out of memory");
    h->source = source;
    h->ctx = ctx;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    /* bound here, not by libmicrohttpd, so a failure reports its real cause */
    int fd = listen_on(&sa, err);
    if (fd < 0) {
        free(h);
        return sl_wrap(err, "cannot serve metrics on http://%s:%d", ip, port);
    }
    h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
                                 on_request, h, MHD_OPTION_LISTEN_SOCKET, fd,
                                 MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                 MHD_OPTION_END);
    if (!h->daemon) {
        close(fd);
        free(h);
        return sl_fail(err, "cannot serve metrics on http://%s:%d: the HTTP server did not start", ip, port);
    }
    snprintf(h->url, sizeof h->url, "http://%s:%d/metrics", ip, port);
    *out = h;
    return 0;
}

void pl_metrics_http_stop(pl_metrics_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
