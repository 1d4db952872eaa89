/* redis_conn.h - one connection to Redis through hiredis's async API on our libevent loop:
 * connect, AUTH, SELECT, then PING; reconnect with a doubling backoff; a watchdog for replies
 * that never come (hiredis 0.14 has no command timeout of its own); and the split between
 * errors that pass by themselves (LOADING, READONLY, ...: reconnect and resend) and errors that
 * do not (refused AUTH, a command Redis rejects: the caller stops).  It knows nothing of
 * transactions: it reports what happened and the caller decides what to resend. */
#ifndef PGFANOUT_REDIS_CONN_H
#define PGFANOUT_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/redis_config.h"

struct event_base;
struct redis_conn;

/* What the connection tells its owner; every callback runs on the event loop. */
struct redis_conn_handler {
    /* The handshake finished and commands can be sent; attempts counts the failed attempts
     * since the connection was last up (0 on the first connect). */
    void (*up)(void *ctx, int attempts);
    /* The connection is gone (why says how) and no reply will come for anything sent on it.
     * Attempt attempt failed; the next one starts in retry_ms. */
    void (*down)(void *ctx, const char *why, int attempt, int retry_ms);
    /* A reconnection attempt starts now (for the retries metric). */
    void (*retrying)(void *ctx);
    /* Redis answered the command sent with tag: error is NULL, or the text of an error that
     * resending cannot cure (the connection stays up). */
    void (*reply)(void *ctx, uint64_t tag, const char *error);
    /* The handshake was refused for good (AUTH, SELECT); msg says what to check.  Nothing
     * more happens on this connection until it is closed. */
    void (*refused)(void *ctx, const char *msg);
    void *ctx;
};

/* Checks what can be checked before connecting: TLS (refused with hiredis 0.14) and the
 * password's source.  Returns 0, or -1 with a reason in err. */
int redis_conn_check(const struct pgf_redis_cfg *cfg, char *err, size_t errlen);

/* Makes a connection that has not connected yet; cfg and handler are borrowed for its lifetime,
 * the password (PGFANOUT_REDIS_PASSWORD or redis.password_file) is read now and never logged.
 * Returns it, or NULL with a reason in err.  Free it with redis_conn_close. */
struct redis_conn *redis_conn_new(const struct pgf_redis_cfg *cfg, struct event_base *base,
                                  const struct redis_conn_handler *handler, char *err, size_t errlen);

/* Starts connecting, and keeps retrying until Redis answers.  Callbacks may run from here on,
 * down among them (a refused socket is reported at once), so call it once the caller is ready. */
void redis_conn_start(struct redis_conn *c);

/* Closes the connection without calling back; replies still owed are dropped.  NULL is fine. */
void redis_conn_close(struct redis_conn *c);

/* Returns 1 when the handshake is done and commands can be sent, else 0. */
int redis_conn_ready(const struct redis_conn *c);

/* Returns the commands sent and not answered yet on this connection. */
size_t redis_conn_outstanding(const struct redis_conn *c);

/* Returns where the connection goes ("host:port" or the socket path), for messages; valid
 * until redis_conn_close. */
const char *redis_conn_where(const struct redis_conn *c);

/* Queues one command (argv/argl are copied by hiredis); its reply comes to handler->reply with
 * tag.  Only while redis_conn_ready.  Returns 0, or -1 with a reason in err. */
int redis_conn_send(struct redis_conn *c, uint64_t tag, int argc, const char **argv, const size_t *argl, char *err,
                    size_t errlen);

#endif
