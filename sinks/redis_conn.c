/* redis_conn.c - the Redis connection's state machine: down, handshake, ready.  See redis_conn.h. */
#include "sinks/redis_conn.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/lsn.h"
#include "sinks/redis_scripts.h"

/* Reconnect backoff bounds. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

enum conn_state { C_DOWN, C_HANDSHAKE, C_READY };

struct redis_conn {
    const struct pgf_redis_cfg *cfg;
    const struct redis_conn_handler *h;
    struct event_base *evbase;
    char *password;
    char where[300];

    redisAsyncContext *ac;
    enum conn_state state;
    int backoff_ms;
    int attempts;     /* failed attempts since the connection was last up */
    int64_t state_since_us, last_reply_us;
    size_t outstanding; /* commands sent, not yet answered */
    struct event *ev_reconnect, *ev_watchdog;
};

static void on_connect(const redisAsyncContext *ac, int status);
static void on_disconnect(const redisAsyncContext *ac, int status);

/* Reads the password from PGFANOUT_REDIS_PASSWORD or redis.password_file; returns 0 with
 * *out set (NULL when there is none), or -1 with err set.  The value is never logged. */
static int load_password(const struct pgf_redis_cfg *cfg, char **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *env = getenv("PGFANOUT_REDIS_PASSWORD");
    if (env && env[0]) {
        *out = strdup(env);
    } else if (cfg->password_file) {
        FILE *f = fopen(cfg->password_file, "r");
        char line[1024];
        if (f == NULL || fgets(line, sizeof line, f) == NULL) {
            snprintf(err, errlen, "cannot read redis.password_file %s: %s", cfg->password_file,
                     f ? "it is empty" : strerror(errno));
            if (f)
                fclose(f);
            return -1;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        *out = strdup(line);
        memset(line, 0, sizeof line);
    } else {
        if (cfg->username) {
            snprintf(err, errlen, "redis.username is set but no password is: set PGFANOUT_REDIS_PASSWORD or "
                                  "redis.password_file");
            return -1;
        }
        return 0;
    }
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Wipes and frees a password; NULL is fine. */
static void free_password(char *password)
{
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
}

/* Refuses redis.tls, which this hiredis cannot do; returns 0, or -1 with err set. */
static int check_tls(const struct pgf_redis_cfg *cfg, char *err, size_t errlen)
{
    if (!cfg->tls)
        return 0;
    /* hiredis gained TLS (hiredis_ssl) in 1.0; CMake reports which one it found. */
    snprintf(err, errlen, "redis.tls is set, but this build uses hiredis %d.%d, which has no TLS (Debian 12 "
                          "ships 0.14). Reach Redis over a TLS tunnel such as stunnel, or a unix socket",
             HIREDIS_MAJOR, HIREDIS_MINOR);
    return -1;
}

/* Checks what can be checked before connecting; see redis_conn.h. */
int redis_conn_check(const struct pgf_redis_cfg *cfg, char *err, size_t errlen)
{
    char *password = NULL;
    if (check_tls(cfg, err, errlen) != 0 || load_password(cfg, &password, err, errlen) != 0)
        return -1;
    free_password(password);
    return 0;
}

/* True for errors that go away by themselves (a restarting or failing-over server).  NOSCRIPT
 * too: the server lost our scripts (a restart, SCRIPT FLUSH), and the handshake of the next
 * connection loads them again before anything is resent. */
static int transient_error(const char *s)
{
    static const char *const words[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "CLUSTERDOWN",
                                        "NOSCRIPT"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strncmp(s, words[i], strlen(words[i])) == 0)
            return 1;
    return 0;
}

/* Forgets a broken connection, tells the owner, and arms the reconnect timer with the current
 * backoff, which then doubles. */
static void connection_lost(struct redis_conn *c, const char *why)
{
    c->attempts++;
    c->outstanding = 0; /* their replies died with the connection */
    c->state = C_DOWN;
    c->state_since_us = pgf_pgtime_now();
    int retry_ms = c->backoff_ms;
    c->h->down(c->h->ctx, why, c->attempts, retry_ms);
    struct timeval tv = {retry_ms / 1000, (retry_ms % 1000) * 1000};
    evtimer_add(c->ev_reconnect, &tv);
    c->backoff_ms = retry_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : retry_ms * 2;
}

/* Closes the connection ourselves (a timeout or a transient error) and retries. */
static void drop_connection(struct redis_conn *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL; /* on_disconnect sees a context that is no longer ours and ignores it */
    if (ac)
        redisAsyncFree(ac);
    connection_lost(c, why);
}

/* Handshake replies: AUTH, SELECT, then PING, after which the connection is ready. */
static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_conn *c = ac->data;
    redisReply *rep = reply;
    const char *step = privdata;
    if (rep == NULL || c == NULL || ac != c->ac)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (transient_error(rep->str)) {
            drop_connection(c, rep->str);
            return;
        }
        char detail[300], msg[512];
        snprintf(detail, sizeof detail, "%s: %s", step, rep->str);
        if (strcmp(step, "AUTH") == 0)
            snprintf(msg, sizeof msg, "Redis refused AUTH (%s); check redis.username and the password "
                                      "(PGFANOUT_REDIS_PASSWORD or redis.password_file)", detail);
        else if (strcmp(step, "SELECT") == 0)
            snprintf(msg, sizeof msg, "Redis refused the database number (%s); check redis.db", detail);
        else if (strncmp(step, "SCRIPT", 6) == 0)
            snprintf(msg, sizeof msg, "Redis refused to load pgfanout's Lua script (%s); the ACL of "
                                      "redis.username must allow SCRIPT LOAD and EVALSHA, or turn off what runs "
                                      "scripts (redis.ryw_key: \"\", no cacheops preset, no second pass)", detail);
        else
            snprintf(msg, sizeof msg, "Redis refused the connection (%s); check the password and ACLs", detail);
        c->h->refused(c->h->ctx, msg);
        return;
    }
    if (strncmp(step, "SCRIPT", 6) == 0) {
        int s = step[6] - '0';
        if (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, redis_script_sha((enum redis_script)s)) != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "Redis answered SCRIPT LOAD with something other than the script's SHA1 "
                                      "%s; is this a Redis server (2.6 or later)?", redis_script_sha((enum redis_script)s));
            c->h->refused(c->h->ctx, msg);
        }
        return;
    }
    if (strcmp(step, "PING") == 0) {
        int attempts = c->attempts;
        c->state = C_READY;
        c->attempts = 0;
        c->backoff_ms = BACKOFF_MIN_MS;
        c->h->up(c->h->ctx, attempts);
    }
}

/* True when a setting in use runs pgfanout's scripts: the read-your-writes key (on unless
 * redis.ryw_key is ""), the second pass's generation raise, the cacheops preset.  Without
 * them, an ACL that forbids scripting keeps working. */
static int needs_scripts(const struct pgf_redis_cfg *cfg)
{
    return cfg->ryw_key == NULL || cfg->ryw_key[0] != '\0' || cfg->cacheops != NULL || cfg->replicas != NULL ||
           cfg->replica_names != NULL || cfg->second_pass;
}

/* Starts a connection: hiredis queues AUTH, SELECT and PING until the socket is up. */
static void connect_redis(struct redis_conn *c)
{
    const char *host = c->cfg->host ? c->cfg->host : "127.0.0.1";
    redisAsyncContext *ac = host[0] == '/' ? redisAsyncConnectUnix(host)
                                           : redisAsyncConnect(host, (int)(c->cfg->port ? c->cfg->port : 6379));
    if (ac == NULL || ac->err) {
        char why[256];
        snprintf(why, sizeof why, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        connection_lost(c, why);
        return;
    }
    ac->data = c;
    c->ac = ac;
    c->state = C_HANDSHAKE;
    c->state_since_us = pgf_pgtime_now();
    redisLibeventAttach(ac, c->evbase);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (c->password) {
        if (c->cfg->username)
            redisAsyncCommand(ac, on_handshake, (void *)"AUTH", "AUTH %s %s", c->cfg->username, c->password);
        else
            redisAsyncCommand(ac, on_handshake, (void *)"AUTH", "AUTH %s", c->password);
    }
    if (c->cfg->db)
        redisAsyncCommand(ac, on_handshake, (void *)"SELECT", "SELECT %u", c->cfg->db);
    /* The step names carry the script's number; REDIS_SCRIPT_COUNT stays below 10. */
    static const char *const loads[] = {"SCRIPT0", "SCRIPT1", "SCRIPT2", "SCRIPT3", "SCRIPT4",
                                        "SCRIPT5", "SCRIPT6", "SCRIPT7", "SCRIPT8", "SCRIPT9"};
    _Static_assert(REDIS_SCRIPT_COUNT <= 10, "one handshake step name per script");
    for (int s = 0; needs_scripts(c->cfg) && s < REDIS_SCRIPT_COUNT; s++)
        redisAsyncCommand(ac, on_handshake, (void *)loads[s], "SCRIPT LOAD %s", redis_script_text((enum redis_script)s));
    redisAsyncCommand(ac, on_handshake, (void *)"PING", "PING");
}

/* The socket connected, or could not. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *c = ac->data;
    if (c == NULL || ac != c->ac || status == REDIS_OK)
        return;
    char why[256];
    snprintf(why, sizeof why, "cannot connect: %s", ac->errstr);
    c->ac = NULL; /* hiredis frees the context after this callback */
    connection_lost(c, why);
}

/* The server closed the connection or it broke. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_conn *c = ac->data;
    if (c == NULL || ac != c->ac)
        return;
    char why[256];
    snprintf(why, sizeof why, "connection lost: %s", ac->err ? ac->errstr : "closed by the server");
    c->ac = NULL;
    connection_lost(c, why);
}

/* The reconnect timer fired. */
static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis_conn *c = arg;
    if (c->state == C_DOWN) {
        c->h->retrying(c->h->ctx);
        connect_redis(c);
    }
}

/* Drops a connection that stopped answering, which hiredis 0.14 itself never notices. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis_conn *c = arg;
    int64_t now = pgf_pgtime_now(), limit = (int64_t)(c->cfg->command_timeout_ms ? c->cfg->command_timeout_ms
                                                                                 : 10000) * 1000;
    if (c->state == C_HANDSHAKE && now - c->state_since_us > limit)
        drop_connection(c, "no answer to the connection handshake within redis.command_timeout_ms");
    else if (c->state == C_READY && c->outstanding > 0 && now - c->last_reply_us > limit)
        drop_connection(c, "no reply within redis.command_timeout_ms");
}

/* A reply to a command sent with redis_conn_send. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_conn *c = ac->data;
    redisReply *rep = reply;
    if (rep == NULL || c == NULL || ac != c->ac)
        return; /* the connection is going away; the owner resends after down */
    c->last_reply_us = pgf_pgtime_now();
    if (c->outstanding)
        c->outstanding--;
    if (rep->type == REDIS_REPLY_ERROR && transient_error(rep->str)) {
        drop_connection(c, rep->str);
        return;
    }
    c->h->reply(c->h->ctx, (uint64_t)(uintptr_t)privdata, rep->type == REDIS_REPLY_ERROR ? rep->str : NULL);
}

/* Makes the connection; see redis_conn.h. */
struct redis_conn *redis_conn_new(const struct pgf_redis_cfg *cfg, struct event_base *base,
                                  const struct redis_conn_handler *handler, char *err, size_t errlen)
{
    if (check_tls(cfg, err, errlen) != 0)
        return NULL;
    struct redis_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->h = handler;
    c->evbase = base;
    c->backoff_ms = BACKOFF_MIN_MS;
    const char *host = cfg->host ? cfg->host : "127.0.0.1";
    if (host[0] == '/')
        snprintf(c->where, sizeof c->where, "%s", host);
    else
        snprintf(c->where, sizeof c->where, "%s:%u", host, cfg->port ? cfg->port : 6379);
    if (load_password(cfg, &c->password, err, errlen) != 0) {
        redis_conn_close(c);
        return NULL;
    }
    c->ev_reconnect = evtimer_new(base, on_reconnect_timer, c);
    c->ev_watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, c);
    if (!c->ev_reconnect || !c->ev_watchdog) {
        snprintf(err, errlen, "out of memory");
        redis_conn_close(c);
        return NULL;
    }
    return c;
}

/* Connects for the first time; see redis_conn.h. */
void redis_conn_start(struct redis_conn *c)
{
    struct timeval second = {1, 0};
    event_add(c->ev_watchdog, &second);
    connect_redis(c);
}

/* Frees everything; see redis_conn.h. */
void redis_conn_close(struct redis_conn *c)
{
    if (c == NULL)
        return;
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL; /* the callbacks hiredis makes while freeing see a context not ours */
        redisAsyncFree(ac);
    }
    if (c->ev_reconnect)
        event_free(c->ev_reconnect);
    if (c->ev_watchdog)
        event_free(c->ev_watchdog);
    free_password(c->password);
    free(c);
}

/* See redis_conn.h. */
int redis_conn_ready(const struct redis_conn *c)
{
    return c->state == C_READY;
}

/* See redis_conn.h. */
size_t redis_conn_outstanding(const struct redis_conn *c)
{
    return c->outstanding;
}

/* See redis_conn.h. */
const char *redis_conn_where(const struct redis_conn *c)
{
    return c->where;
}

/* Queues a command; see redis_conn.h. */
int redis_conn_send(struct redis_conn *c, uint64_t tag, int argc, const char **argv, const size_t *argl, char *err,
                    size_t errlen)
{
    if (redisAsyncCommandArgv(c->ac, on_reply, (void *)(uintptr_t)tag, argc, argv, argl) != REDIS_OK) {
        snprintf(err, errlen, "cannot queue a Redis command: %s", c->ac->errstr);
        return -1;
    }
    if (c->outstanding++ == 0)
        c->last_reply_us = pgf_pgtime_now(); /* the reply clock starts with the first command */
    return 0;
}
