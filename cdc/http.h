/* http.h - the HTTP listener for /metrics, /healthz and /readyz (libevent's evhttp, on the
 * process's one event loop, so handlers read the metrics without locks). */
#ifndef PGFANOUT_HTTP_H
#define PGFANOUT_HTTP_H

#include <stddef.h>

struct event_base;
struct pgf_http;

/* Listens on addr ("HOST:PORT", or "PORT" for 127.0.0.1).  Returns the listener, or NULL
 * with the reason in err (a bad address, or the port in use). */
struct pgf_http *pgf_http_start(struct event_base *base, const char *addr, char *err, size_t errlen);

/* Called when a POST request's reply is ready: status is an HTTP status, body one line. */
typedef void (*pgf_http_reply_fn)(void *req, int status, const char *body);

/* Handles a POST to /backfill: body (len bytes) is the request; the handler answers later by
 * calling reply(req, ...) exactly once, from the loop. */
typedef void (*pgf_http_post_fn)(void *arg, const char *body, size_t len, pgf_http_reply_fn reply, void *req);

/* Routes POST /backfill to fn(arg, ...); until then such a request gets 503. */
void pgf_http_on_backfill(struct pgf_http *h, pgf_http_post_fn fn, void *arg);

/* Returns 1 when addr has the form HOST:PORT, [IPv6]:PORT or PORT with a port of 1 to 65535. */
int pgf_http_addr_valid(const char *addr);

/* Stops listening and frees; NULL is fine. */
void pgf_http_stop(struct pgf_http *h);

/* Probes url ("HOST:PORT/path") with a GET and returns 0 when it answers 200 within
 * timeout_s, else 1 after printing why; for the container's HEALTHCHECK. */
int pgf_http_probe(const char *url, int timeout_s);

#endif
