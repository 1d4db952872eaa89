/* http.c - see http.h. */
#include "cdc/http.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/lsn.h"
#include "cdc/metrics.h"

struct pgf_http {
    struct evhttp *http;
    pgf_http_post_fn backfill; /* POST /backfill, once there is something to take it */
    void *backfill_arg;
};

/* Sends a plain-text reply. */
static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

/* A POST whose answer comes later; req is NULL once the client has gone. */
struct pending {
    struct evhttp_request *req;
};

/* The client went away before the answer: forget its request. */
static void on_client_closed(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    ((struct pending *)arg)->req = NULL;
}

/* Sends a POST's answer, if its client is still there. */
static void reply_later(void *arg, int status, const char *body)
{
    struct pending *p = arg;
    if (p->req) {
        evhttp_connection_set_closecb(evhttp_request_get_connection(p->req), NULL, NULL);
        char line[8192];
        snprintf(line, sizeof line, "%s\n", body);
        reply_text(p->req, status, status == 202 ? "Accepted" : status == 400 ? "Bad Request" : "Service Unavailable",
                   line);
    }
    free(p);
}

/* POST /backfill: hands the body to the handler, which answers later. */
static void on_backfill(struct pgf_http *h, struct evhttp_request *req)
{
    if (h->backfill == NULL) {
        reply_text(req, 503, "Service Unavailable", "{\"error\":\"not streaming yet: try again shortly\"}\n");
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > 1 << 20) {
        reply_text(req, 400, "Bad Request", "{\"error\":\"the request is larger than 1 MiB\"}\n");
        return;
    }
    struct pending *p = calloc(1, sizeof *p);
    char *body = malloc(len + 1);
    if (p == NULL || body == NULL) {
        free(p);
        free(body);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_copyout(in, body, len);
    body[len] = '\0';
    p->req = req;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_client_closed, p);
    h->backfill(h->backfill_arg, body, len, reply_later, p);
    free(body);
}

/* Routes GET /metrics, /healthz and /readyz, and POST /backfill; anything else is 404. */
static void on_request(struct evhttp_request *req, void *arg)
{
    struct pgf_http *h = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
        if (path && strcmp(path, "/backfill") == 0)
            on_backfill(h, req);
        else
            evhttp_send_error(req, 405, "POST only to /backfill");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        evhttp_send_error(req, 405, "only GET, and POST to /backfill");
        return;
    }
    if (path && strcmp(path, "/healthz") == 0) {
        reply_text(req, 200, "OK", "ok\n"); /* answering at all is the proof of life */
    } else if (path && strcmp(path, "/readyz") == 0) {
        char why[600], body[640];
        int ready = pgf_metrics_ready(why, sizeof why);
        snprintf(body, sizeof body, "%s\n", why);
        reply_text(req, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", body);
    } else if (path && strcmp(path, "/metrics") == 0) {
        char *text;
        size_t len;
        if (pgf_metrics_render(&text, &len, pgf_pgtime_now()) != 0) {
            evhttp_send_error(req, 500, "out of memory");
            return;
        }
        struct evbuffer *b = evbuffer_new();
        if (b) {
            evbuffer_add(b, text, len);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                              "text/plain; version=0.0.4; charset=utf-8");
            evhttp_send_reply(req, 200, "OK", b);
            evbuffer_free(b);
        } else {
            evhttp_send_error(req, 500, "out of memory");
        }
        free(text);
    } else {
        evhttp_send_error(req, 404, "try /metrics, /healthz or /readyz");
    }
}

/* Splits "HOST:PORT" or "PORT" (host 127.0.0.1); returns 0, or -1 when malformed. */
static int split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    const char *p = colon ? colon + 1 : addr;
    char *end;
    long v = strtol(p, &end, 10);
    if (*p == '\0' || *end != '\0' || v <= 0 || v > 65535)
        return -1;
    *port = (int)v;
    if (colon == NULL)
        snprintf(host, hostlen, "127.0.0.1");
    else if (colon == addr)
        return -1;
    else if (addr[0] == '[' && colon[-1] == ']') /* [::1]:9187 */
        snprintf(host, hostlen, "%.*s", (int)(colon - addr - 2), addr + 1);
    else
        snprintf(host, hostlen, "%.*s", (int)(colon - addr), addr);
    return 0;
}

/* Checks an address's form; see http.h. */
int pgf_http_addr_valid(const char *addr)
{
    char host[256];
    int port;
    return split_addr(addr, host, sizeof host, &port) == 0;
}

/* Binds and registers the handler; see http.h. */
struct pgf_http *pgf_http_start(struct event_base *base, const char *addr, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (split_addr(addr, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "invalid HTTP listen address '%s': expected HOST:PORT or PORT", addr);
        return NULL;
    }
    struct pgf_http *h = calloc(1, sizeof *h);
    if (h == NULL || (h->http = evhttp_new(base)) == NULL) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_gencb(h->http, on_request, h);
    evhttp_set_timeout(h->http, 10);
    if (evhttp_bind_socket(h->http, host, (ev_uint16_t)port) != 0) {
        snprintf(err, errlen, "cannot listen for HTTP on %s:%d (in use, or not an address of this host); "
                              "choose another with --http-listen", host, port);
        pgf_http_stop(h);
        return NULL;
    }
    pgf_info("http: /metrics, /healthz, /readyz and POST /backfill on %s:%d", host, port);
    return h;
}

/* Sets the /backfill handler; see http.h. */
void pgf_http_on_backfill(struct pgf_http *h, pgf_http_post_fn fn, void *arg)
{
    if (h == NULL)
        return;
    h->backfill = fn;
    h->backfill_arg = arg;
}

/* Frees the listener. */
void pgf_http_stop(struct pgf_http *h)
{
    if (h == NULL)
        return;
    if (h->http)
        evhttp_free(h->http);
    free(h);
}

/* The probe's outcome, filled by its callback. */
struct probe {
    int code;
    struct event_base *base;
};

/* Records the status of the probe's response and ends the loop. */
static void on_probe_done(struct evhttp_request *req, void *arg)
{
    struct probe *p = arg;
    p->code = req ? evhttp_request_get_response_code(req) : -1;
    event_base_loopexit(p->base, NULL);
}

/* GETs url once; see http.h. */
int pgf_http_probe(const char *url, int timeout_s)
{
    char addr[256], host[256];
    const char *slash = strchr(url, '/');
    snprintf(addr, sizeof addr, "%.*s", (int)(slash ? slash - url : (long)strlen(url)), url);
    int port;
    if (split_addr(addr, host, sizeof host, &port) != 0) {
        fprintf(stderr, "pgfanout: invalid --probe '%s': expected HOST:PORT/path\n", url);
        return 1;
    }
    struct probe p = {.code = 0, .base = event_base_new()};
    struct evhttp_connection *conn = p.base ? evhttp_connection_base_new(p.base, NULL, host, (ev_uint16_t)port) : NULL;
    struct evhttp_request *req = conn ? evhttp_request_new(on_probe_done, &p) : NULL;
    if (req == NULL) {
        fprintf(stderr, "pgfanout: out of memory\n");
        return 1;
    }
    evhttp_connection_set_timeout(conn, timeout_s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
    if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, slash ? slash : "/healthz") != 0)
        p.code = -1;
    else
        event_base_dispatch(p.base);
    evhttp_connection_free(conn);
    event_base_free(p.base);
    if (p.code != 200) {
        fprintf(stderr, "pgfanout: probe of %s failed: %s\n", url,
                p.code <= 0 ? "no answer" : p.code == 503 ? "503, not ready" : "unexpected status");
        return 1;
    }
    return 0;
}
