/* main.c - pgfanout: the only place that decides to exit. */
#include <event2/event.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdc/catalog.h"
#include "cdc/cli.h"
#include "cdc/config.h"
#include "cdc/heartbeat.h"
#include "cdc/replicas.h"
#include "cdc/http.h"
#include "cdc/keys.h"
#include "cdc/layers.h"
#include "cdc/metrics.h"
#include "common/log.h"
#include "common/lsn.h"
#include "cdc/options.h"
#include "cdc/print_config.h"
#include "cdc/replconn.h"
#include "cdc/settings.h"
#include "cdc/snapshot.h"
#include "cdc/state.h"
#include "cdc/state_kafka.h"
#include "cdc/stream.h"
#include "sinks/kafka_sink.h"
#include "sinks/redis_sink.h"
#include "sinks/null_sink.h"
#include "sinks/stdout_sink.h"
#include "sinks/sink.h"

#ifndef PGFANOUT_VERSION
#define PGFANOUT_VERSION "dev"
#endif

/* Set by SIGINT/SIGTERM between streams (during connects and backoff); the stream's own
 * libevent handlers set it too, so one flag says "stop" everywhere. */
static volatile sig_atomic_t stop_signal;

/* Records the signal; nothing else is safe here. */
static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

/* libevent's own warnings (evhttp, DNS) through our logger, in its format. */
static void on_libevent_log(int severity, const char *msg)
{
    pgf_log(severity >= EVENT_LOG_ERR ? PGF_LOG_ERROR : severity >= EVENT_LOG_WARN ? PGF_LOG_WARN : PGF_LOG_DEBUG,
            "libevent: %s", msg);
}

/* A stop signal while main waits on the loop (connecting, backing off): the loop returns. */
static void on_stop_event(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    stop_signal = (int)sig;
}

/* Sets *fired (for waits on the loop). */
static void on_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

/* SIGINT and SIGTERM on the loop, for main's own waits; the stream has its own while it runs. */
static struct event *stop_events[2];

/* Runs the loop until *done is set or a stop signal arrives; the loop's own wait is the only
 * one, and each event that ends it (a timer, a socket, a signal) is on the loop. */
static void run_until(struct event_base *base, const int *done)
{
    for (int i = 0; i < 2; i++)
        event_add(stop_events[i], NULL);
    while (!*done && !stop_signal)
        if (event_base_loop(base, EVLOOP_ONCE) != 0)
            break; /* nothing left to wait for: cannot happen while *done is pending */
    for (int i = 0; i < 2; i++)
        event_del(stop_events[i]);
}

/* Frees main's signal events and the loop. */
static void free_loop(struct event_base *base)
{
    for (int i = 0; i < 2; i++)
        if (stop_events[i])
            event_free(stop_events[i]);
    event_base_free(base);
}

/* Waits ms on the loop, returning early on a stop signal; sinks keep delivering (and Redis
 * keeps reconnecting) meanwhile. */
static void wait_on_loop(struct event_base *base, int ms)
{
    int fired = 0;
    struct event *timer = evtimer_new(base, on_fired, &fired);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (timer == NULL || evtimer_add(timer, &tv) != 0)
        fired = 1;
    run_until(base, &fired);
    if (timer)
        event_free(timer);
}

/* One start attempt as main waits for it on the loop. */
struct start_wait {
    int finished;
    PGconn *conn;
    int result;
    char *err;
    size_t errlen;
    struct pgf_server_info *info;
};

/* The attempt ended: note how. */
static void on_start_done(void *arg, PGconn *conn, int result, const char *err, const struct pgf_server_info *info)
{
    struct start_wait *w = arg;
    w->finished = 1;
    w->conn = conn;
    w->result = result;
    snprintf(w->err, w->errlen, "%s", err);
    *w->info = *info;
}

/* The state has recorded what the new slot is for: create it. */
static void on_prepared(void *arg)
{
    pgf_replconn_proceed(arg);
}

/* Before the start attempt creates the slot: the snapshot records the job it is for. */
static void on_before_create(void *arg, const char *system_id, int slot_lost, struct pgf_replstart *st)
{
    pgf_snapshot_prepare(arg, system_id, slot_lost, on_prepared, st);
}

/* Connects, prepares and starts streaming on the loop; resume is NULL at startup.  snap (or
 * NULL) records, before a slot is created, what it is for.  Returns the connection, or NULL
 * with err set and *result saying whether a retry can help (a stop signal abandons the
 * attempt: RETRY). */
static PGconn *start_stream(struct event_base *base, const struct pgf_options *opts, const struct pgf_resume *resume,
                            struct pgf_snapshot *snap, struct pgf_server_info *info, char *err, size_t errlen,
                            int *result)
{
    struct start_wait w = {.err = err, .errlen = errlen, .info = info, .result = PGF_REPLCONN_RETRY};
    struct pgf_replstart *st = pgf_replconn_start(base, opts, resume, on_start_done, &w);
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        *result = PGF_REPLCONN_FATAL;
        return NULL;
    }
    if (snap)
        pgf_replconn_before_create(st, on_before_create, snap);
    run_until(base, &w.finished);
    if (!w.finished) {
        if (snap)
            pgf_snapshot_prepare_cancel(snap);
        pgf_replconn_cancel(st);
        snprintf(err, errlen, "stopped while connecting");
    }
    *result = w.result;
    /* Until the first status update, the slot's own position is what the server has. */
    if (w.conn && info->confirmed_flush > pgf_metrics.confirmed_lsn)
        pgf_metrics.confirmed_lsn = info->confirmed_flush;
    return w.conn;
}

/* What the slot position lookup found. */
struct slot_position {
    int done, found;
    uint64_t lsn;
};

/* The slot position lookup ended. */
static void on_slot_position(void *arg, int found, uint64_t lsn)
{
    struct slot_position *p = arg;
    p->done = 1;
    p->found = found;
    p->lsn = lsn;
}

/* After a failure, says where the slot stands as PostgreSQL itself reports it: what was sent
 * last may not have reached the server. */
static void report_slot_position(struct event_base *base, const struct pgf_options *opts)
{
    /* Static: a stop signal may end the wait before the lookup reports, just before exit. */
    static struct slot_position p;
    if (pgf_replconn_slot_position(base, opts->dsn, opts->slot, on_slot_position, &p) != 0)
        return;
    run_until(base, &p.done);
    char lsn[PGF_LSN_BUFSZ];
    if (p.found)
        pgf_info("replication slot \"%s\" is confirmed up to %s, as PostgreSQL reports it; a restart resumes "
                 "there", opts->slot, pgf_lsn_format(p.lsn, lsn));
}

/* Logs the progress line (the timer's interval is the line's period). */
/* Hands the standbys' horizon to the Redis sink (arg), whose second pass waits for it. */
static void on_replay_horizon(void *arg, uint64_t horizon, int64_t observed_at_us)
{
    redis_sink_replay_horizon(arg, horizon, observed_at_us);
}

static void on_progress(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    const struct pgf_options *opts = arg;
    char line[1024];
    pgf_metrics_progress(line, sizeof line, opts->progress_interval_ms / 1000.0, pgf_pgtime_now());
    pgf_info("%s", line);
}

/* The Kafka sink's settings from the options. */
static struct kafka_sink_config kafka_settings(const struct pgf_options *opts, const char *database)
{
    /* Derived from the slot: a second instance on the slot fences the first, and the
     * checkpoint sits next to the slot's state document. */
    static char txn_id[300], checkpoint_key[300];
    snprintf(txn_id, sizeof txn_id, "pgfanout-%s", opts->slot ? opts->slot : "");
    snprintf(checkpoint_key, sizeof checkpoint_key, "%s:kafka-txn", opts->slot ? opts->slot : "");
    struct kafka_sink_config kc = {
        .brokers = opts->kafka_brokers,
        .topic_template = opts->topic_template,
        .topic_prefix = opts->topic_prefix,
        .message_topic = opts->message_topic,
        .tombstones = opts->tombstones,
        .on_oversize = strcmp(opts->on_oversize, "skip") == 0          ? KAFKA_OVERSIZE_SKIP
                       : strcmp(opts->on_oversize, "dead_letter") == 0 ? KAFKA_OVERSIZE_DEAD_LETTER
                                                                       : KAFKA_OVERSIZE_FAIL,
        .dead_letter_topic = opts->dead_letter_topic,
        .conf = opts->kafka_conf.item,
        .nconf = opts->kafka_conf.n,
        .database = database,
        .exactly_once = opts->exactly_once,
        .transactional_id = txn_id,
        .checkpoint_key = checkpoint_key,
        .state_topic = opts->state_topic,
        .txn_max_records = opts->txn_max_records,
        .txn_max_bytes = opts->txn_max_bytes,
        .txn_max_ms = (int)opts->txn_max_ms,
        .format = strcmp(opts->kafka_format, "debezium-json") == 0 ? KAFKA_FORMAT_DEBEZIUM_JSON : KAFKA_FORMAT_PROTOBUF,
        .dbz = {.decimal = strcmp(opts->dbz_decimal, "string") == 0   ? PGF_DBZ_DECIMAL_STRING
                           : strcmp(opts->dbz_decimal, "double") == 0 ? PGF_DBZ_DECIMAL_DOUBLE
                                                                      : PGF_DBZ_DECIMAL_PRECISE,
                .time = strcmp(opts->dbz_time, "connect") == 0                      ? PGF_DBZ_TIME_CONNECT
                        : strcmp(opts->dbz_time, "adaptive_time_microseconds") == 0 ? PGF_DBZ_TIME_ADAPTIVE_MICROS
                                                                                    : PGF_DBZ_TIME_ADAPTIVE,
                .binary = strcmp(opts->dbz_binary, "hex") == 0      ? PGF_DBZ_BINARY_HEX
                          : strcmp(opts->dbz_binary, "base64") == 0 ? PGF_DBZ_BINARY_BASE64
                                                                    : PGF_DBZ_BINARY_BYTES,
                .name = opts->dbz_name ? opts->dbz_name : opts->topic_prefix,
                .database = database,
                .version = PGFANOUT_VERSION},
        .dbz_truncates = strcmp(opts->dbz_truncates, "emit") == 0,
    };
    return kc;
}

/* The Kafka sink's string settings that kafka_sink_check judges, by name, with harmless
 * stand-ins for kafka_culprit. */
static const struct {
    const char *key;
    const char *stand_in;
} kafka_parts[] = {
    {"kafka.topic_template", "t"},
    {"kafka.message_topic", "m"},
    {"kafka.dead_letter_topic", "d"},
    {"kafka.brokers", NULL},
};

/* Returns the field of kc that holds kafka_parts[i]. */
static const char **kafka_part(struct kafka_sink_config *kc, size_t i)
{
    switch (i) {
    case 0: return &kc->topic_template;
    case 1: return &kc->message_topic;
    case 2: return &kc->dead_letter_topic;
    default: return &kc->brokers;
    }
}

/* Finds the setting whose value makes kafka_sink_check fail, without reading its message:
 * checks the settings one more at a time (each of kafka_parts, with stand-ins for those not
 * reached yet, then each kafka.conf entry in order) and returns the origin of the first one
 * that fails, or NULL.  *key gets its name. */
static const struct pgf_origin *kafka_culprit(const struct pgf_options *opts, const char **key)
{
    const size_t nparts = sizeof kafka_parts / sizeof *kafka_parts;
    struct kafka_sink_config all = kafka_settings(opts, ""), kc = all;
    for (size_t i = 0; i < nparts; i++)
        *kafka_part(&kc, i) = kafka_parts[i].stand_in;
    kc.nconf = 0;
    char err[512];
    for (size_t step = 0; step < nparts + all.nconf; step++) {
        if (step < nparts)
            *kafka_part(&kc, step) = *kafka_part(&all, step);
        else
            kc.nconf = step - nparts + 1;
        if (kafka_sink_check(&kc, err, sizeof err) == 0)
            continue;
        *key = step < nparts ? kafka_parts[step].key : "kafka.conf";
        return step < nparts ? pgf_options_origin(opts, kafka_parts[step].key)
                             : &opts->kafka_conf.origin[step - nparts];
    }
    return NULL;
}

/* Reads the exactly-once checkpoint (after the sink's producer fenced older ones, so nothing
 * they left open holds read_committed back) and tells the sink what Kafka holds.  Returns 0,
 * or -1 with err set. */
static int resume_exactly_once(struct event_base *base, const struct pgf_options *opts,
                               const struct pgf_server_info *info, const struct kafka_sink_config *kc,
                               struct sink *sink, char *err, size_t errlen)
{
    char why[2048];
    struct pgf_state_store *store = pgf_state_kafka_open(base, opts->kafka_brokers, opts->kafka_conf.item,
                                                         opts->kafka_conf.n, opts->state_topic, kc->checkpoint_key,
                                                         why, sizeof why);
    if (store == NULL) {
        snprintf(err, errlen, "kafka.exactly_once: cannot open the checkpoint's topic: %s", why);
        return -1;
    }
    char *json = NULL;
    size_t len = 0;
    int rc = store->ops->load(store, &json, &len, why, sizeof why);
    if (rc == 1) {
        pgf_info("kafka: no exactly-once checkpoint in %s yet: starting from the slot", store->where);
    } else if (rc == 0 && (info->slot_created || info->slot_lost)) {
        /* A new slot starts at today's WAL: nothing it sends is in Kafka, and LSNs of another
         * history (a restore, a rebuilt cluster) must not make it skip anything. */
        pgf_warn("kafka: the exactly-once checkpoint in %s (%.*s) is not used: the slot is new, so everything it "
                 "sends is new to Kafka", store->where, (int)len, json);
    } else if (rc == 0) {
        int used = kafka_sink_resume(sink, json, len, why, sizeof why);
        if (used < 0) {
            rc = -1;
        } else if (used > 0) {
            pgf_warn("kafka: the exactly-once checkpoint in %s is not used: %s", store->where, why);
        } else {
            pgf_info("kafka: exactly-once checkpoint %.*s; Kafka already holds what it covers, which is skipped",
                     (int)len, json);
        }
    }
    if (rc < 0)
        snprintf(err, errlen, "kafka.exactly_once: cannot read the checkpoint from %s: %s. pgfanout stops rather "
                 "than write duplicates", store->where, why);
    free(json);
    pgf_state_store_close(store);
    return rc < 0 ? -1 : 0;
}

/* Opens the sinks the options name, after out (the stdout sink, opened before anything was
 * created on the server, or NULL); returns how many, or 0 with err set.  Takes ownership of
 * rules and out, whatever happens. */
static size_t open_sinks(const struct pgf_options *opts, const struct pgf_server_info *info,
                         const struct pgf_redis_cfg *redis,
                         struct pgf_redis_rules *rules, struct sink *out, struct event_base *base, struct sink **sinks,
                         char *err, size_t errlen)
{
    size_t n = 0;
    if (out)
        sinks[n++] = out;
    if (opts->sinks & PGF_SINK_KAFKA) {
        struct kafka_sink_config kc = kafka_settings(opts, info->database);
        kc.system_id = info->system_id;
        struct sink *kafka = kafka_sink_open(&kc, err, errlen);
        if (kafka)
            sinks[n++] = kafka;
        if (kafka == NULL ||
            (opts->exactly_once && resume_exactly_once(base, opts, info, &kc, kafka, err, errlen) != 0)) {
            pgf_redis_rules_free(rules);
            while (n > 0)
                sink_close(sinks[--n]);
            return 0;
        }
    }
    if (opts->sinks & PGF_SINK_REDIS) {
        /* Warnings only, but before streaming starts, where a reader of the log expects them. */
        int checked;
        struct pgf_catalog_check *check = pgf_catalog_check_rules(base, opts->dsn, opts->publication, rules,
                                                                    redis->cacheops != NULL, &checked);
        run_until(base, &checked);
        if (!checked)
            pgf_catalog_check_cancel(check);
        if (pgf_redis_rules_count(rules) == 0 && redis->cachalot == NULL && redis->cacheops == NULL)
            pgf_warn("redis: no rules (redis.rules is empty and the cachalot and cacheops presets are off), so no row change "
                     "invalidates anything; only pg_logical_emit_message(true, '%s', 'key ...') messages will. "
                     "Add rules to the redis section of the config file (see pgfanout.example.yaml)",
                     redis->message_prefix ? redis->message_prefix : "pgfanout.invalidate");
        int standbys = pgf_replicas_count(redis, err, errlen);
        if (standbys < 0 || (standbys > 0 && pgf_replicas_check(redis, opts->dsn, err, errlen) != 0)) {
            pgf_redis_rules_free(rules);
            while (n > 0)
                sink_close(sinks[--n]);
            return 0;
        }
        struct redis_sink_config rc = {.cfg = redis, .rules = rules, .base = base, .slot = opts->slot,
                                       .second_pass = standbys > 0 ? 2 : redis->second_pass ? 1 : 0};
        if ((sinks[n] = redis_sink_open(&rc, err, errlen)) == NULL) {
            while (n > 0)
                sink_close(sinks[--n]);
            return 0;
        }
        n++;
    }
    if (opts->sinks & PGF_SINK_NULL) {
        /* Named by the database, as the Kafka sink's records are, so it encodes the same bytes. */
        if ((sinks[n] = null_sink_open(info->database, err, errlen)) == NULL) {
            while (n > 0)
                sink_close(sinks[--n]);
            return 0;
        }
        n++;
    }
    return n;
}

/* Opens the state store (the Kafka topic when Kafka is a sink, else the state file, else
 * none) and reads the state into *state.  Returns 0 (with *store NULL when none is set up),
 * or -1 with err set: a store that cannot be read stops pgfanout, so no state is ignored. */
static int open_state(struct event_base *base, const struct pgf_options *opts, struct pgf_state_store **store,
                      struct pgf_state *state, char *err, size_t errlen)
{
    *store = NULL;
    memset(state, 0, sizeof *state);
    char why[2048];
    if (opts->sinks & PGF_SINK_KAFKA)
        *store = pgf_state_kafka_open(base, opts->kafka_brokers, opts->kafka_conf.item, opts->kafka_conf.n,
                                      opts->state_topic, opts->slot, why, sizeof why);
    else if (opts->state_dir)
        *store = pgf_state_file_open(base, opts->state_dir, opts->slot, why, sizeof why);
    else
        return 0;
    if (*store == NULL) {
        snprintf(err, errlen, "cannot open pgfanout's state store: %s", why);
        return -1;
    }
    char *json = NULL;
    size_t len = 0;
    int rc = (*store)->ops->load(*store, &json, &len, why, sizeof why);
    if (rc == 0 && pgf_state_from_json(json, len, state, why, sizeof why) != 0)
        rc = -1;
    free(json);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read pgfanout's state from %s: %s. pgfanout stops rather than go on without "
                 "it: it holds snapshot progress and the slot's last confirmed position, which guard against "
                 "silent gaps. Fix the store, or, to start afresh, remove the state (a snapshot under way then "
                 "starts over, and a lost slot goes unnoticed once)", (*store)->where, why);
        pgf_state_store_close(*store);
        *store = NULL;
        return -1;
    }
    if (rc == 0 && strcmp(state->slot, opts->slot) != 0) {
        pgf_warn("pgfanout's state in %s is for slot \"%s\", not \"%s\"; it is not used", (*store)->where,
                 state->slot, opts->slot);
        pgf_state_clear(state);
    }
    return 0;
}

/* POST /backfill: hands the request to the snapshot. */
static void on_http_backfill(void *arg, const char *body, size_t len, pgf_http_reply_fn reply, void *req)
{
    pgf_snapshot_request(arg, body, len, "HTTP POST /backfill", 1, reply, req);
}

/* Parses flags, prepares the server, streams, reconnects with backoff when PostgreSQL goes
 * away; returns the process exit status. */
int main(int argc, char **argv)
{
    /* First thing, so a SIGTERM during startup is a clean stop (exit 0), not death by signal;
     * a closed stdout must surface as a write error, not kill us before we can report it. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
#if defined(M_TRIM_THRESHOLD) && !defined(PGFANOUT_JEMALLOC)
    /* glibc's malloc only (common/jemalloc_conf.c keeps jemalloc's pages for a second).  Each
     * snapshot chunk (a few MB of rows) is allocated and freed again: keep that memory rather
     * than hand it back and fault it in anew (a snapshot took 220k page faults per 1M rows;
     * 14-23% faster without).  RSS stays at its peak, which the chunk size bounds. */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
#endif
    struct pgf_options opts;
    struct pgf_config *cfg = NULL;
    if (pgf_options_parse(argc, argv, &opts, &cfg) != 0) {
        pgf_config_free(cfg);
        return 2;
    }
    if (opts.show_help) {
        pgf_cli_usage(stdout);
        return 0;
    }
    if (opts.show_version) {
        printf("pgfanout %s\n", PGFANOUT_VERSION);
        return 0;
    }
    event_set_log_callback(on_libevent_log);
    if (opts.probe_url)
        return pgf_http_probe(opts.probe_url, 5);
    char err[8192], from[512];
    const struct pgf_redis_cfg *redis = &opts.redis;
    struct pgf_redis_rules *rules = NULL;
    /* Rules are checked before anything connects, so a typo never touches the server. */
    struct pgf_setting_locator locator = {opts.config_path, pgf_config_line_of};
    if (((opts.sinks & PGF_SINK_REDIS) || opts.check_config) &&
        (redis_sink_validate(redis, err, sizeof err) != 0 ||
         (rules = pgf_redis_rules_new(redis, opts.config_path ? &locator : NULL, err, sizeof err)) == NULL)) {
        pgf_error("%s", err);
        pgf_config_free(cfg);
        return 2;
    }
    /* Everything that can be checked without a server is checked before connecting; the
     * error says which layer the value came from, as every other settings error does. */
    struct kafka_sink_config kc = kafka_settings(&opts, "");
    const struct pgf_origin *culprit = NULL;
    const char *key = "source.dsn";
    int bad_dsn = pgf_dsn_check(opts.dsn, err, sizeof err) != 0, bad_kafka = 0;
    if (bad_dsn)
        culprit = pgf_options_origin(&opts, key);
    else if ((opts.sinks & PGF_SINK_KAFKA) || opts.check_config)
        bad_kafka = kafka_sink_check(&kc, err, sizeof err) != 0;
    if (bad_kafka && kc.exactly_once && kc.on_oversize != KAFKA_OVERSIZE_FAIL) {
        key = "kafka.on_oversize"; /* the combination, checked before anything else */
        culprit = pgf_options_origin(&opts, key);
    } else if (bad_kafka) {
        culprit = kafka_culprit(&opts, &key);
    }
    if (!bad_dsn && !bad_kafka && pgf_keys_check(opts.key_columns, err, sizeof err) != 0) {
        bad_kafka = 1;
        key = "kafka.key_columns";
        culprit = pgf_options_origin(&opts, key);
    }
    if (bad_dsn || bad_kafka) {
        if (culprit)
            pgf_error("%s (%s from %s)", err, key, pgf_origin_describe(culprit, from, sizeof from));
        else
            pgf_error("%s", err);
        pgf_redis_rules_free(rules);
        pgf_config_free(cfg);
        return 2;
    }
    if (opts.check_config) {
        pgf_options_print(stdout, &opts, rules ? pgf_redis_rules_count(rules) : 0);
        pgf_redis_rules_free(rules);
        pgf_config_free(cfg);
        return 0;
    }
    struct pgf_server_info info;
    struct event_base *base = event_base_new();
    if (base == NULL || (stop_events[0] = evsignal_new(base, SIGINT, on_stop_event, NULL)) == NULL ||
        (stop_events[1] = evsignal_new(base, SIGTERM, on_stop_event, NULL)) == NULL) {
        pgf_error("out of memory");
        return 1;
    }
    /* Listen before connecting: /healthz answers while the server is slow to accept. */
    struct pgf_http *http = NULL;
    if (opts.http_listen && (http = pgf_http_start(base, opts.http_listen, err, sizeof err)) == NULL) {
        pgf_error("%s", err);
        free_loop(base);
        pgf_redis_rules_free(rules);
        pgf_config_free(cfg);
        return 1;
    }
    /* A bad output path is found before a slot is created that would then pin WAL. */
    struct sink *out = NULL;
    if ((opts.sinks & PGF_SINK_STDOUT) && (out = stdout_sink_open(opts.output, err, sizeof err)) == NULL) {
        pgf_error("%s", err);
        pgf_http_stop(http);
        free_loop(base);
        pgf_redis_rules_free(rules);
        pgf_config_free(cfg);
        return 1;
    }
    /* The state comes first: it says whether a missing slot is a gap. */
    struct pgf_state_store *store = NULL;
    struct pgf_state state;
    if (open_state(base, &opts, &store, &state, err, sizeof err) != 0) {
        pgf_error("%s", err);
        sink_close(out);
        pgf_http_stop(http);
        free_loop(base);
        pgf_redis_rules_free(rules);
        pgf_config_free(cfg);
        return 1;
    }
    /* Copied: the snapshot takes the state over (and clears this struct) below. */
    char state_system[sizeof state.system_id];
    memcpy(state_system, state.system_id, sizeof state_system);
    struct pgf_resume from_state = {.confirmed = state.confirmed_lsn, .from_state = 1, .system_id = state_system,
                                    .state_where = store ? store->where : ""};
    const struct pgf_resume *first = state.slot[0] ? &from_state : NULL;
    struct pgf_snapshot *snap = pgf_snapshot_new(base, &opts, store, &state);
    if (snap == NULL) {
        pgf_error("out of memory");
        return 1;
    }
    /* The first connection must work: a wrong DSN or setup is reported, not retried.  A slot
     * held by another walsender is the standby case: wait for it, as /readyz says. */
    int started;
    PGconn *conn = start_stream(base, &opts, first, snap, &info, err, sizeof err, &started);
    for (int attempt = 1; conn == NULL && started == PGF_REPLCONN_BUSY && !stop_signal; attempt++) {
        if (attempt == 1 || attempt % 60 == 0)
            pgf_info("waiting for replication slot \"%s\", which another walsender holds (%s); this instance "
                     "takes over when it is released, retrying every second", opts.slot, err);
        snprintf(pgf_metrics.waiting, sizeof pgf_metrics.waiting, "standby: %.480s", err);
        /* Every second, not with a growing backoff: a standby instance must take over within
         * seconds of the active one's death, and one failed START_REPLICATION a second costs
         * the server nothing worth saving. */
        wait_on_loop(base, 1000);
        if (!stop_signal)
            conn = start_stream(base, &opts, first, snap, &info, err, sizeof err, &started);
    }
    pgf_metrics.waiting[0] = '\0';
    if (conn == NULL) {
        /* A signal while connecting or waiting as a standby is a clean stop. */
        if (stop_signal)
            pgf_info("stopped before streaming from slot \"%s\"", opts.slot);
        else
            pgf_error("%s", err);
        sink_close(out);
        pgf_snapshot_free(snap);
        pgf_state_store_close(store);
        pgf_http_stop(http);
        free_loop(base);
        pgf_redis_rules_free(rules);
        pgf_config_free(cfg);
        return stop_signal ? 0 : 1;
    }
    struct sink *sinks[4]; /* stdout, kafka, redis, null */
    size_t nsinks = open_sinks(&opts, &info, redis, rules, out, base, sinks, err, sizeof err);
    if (nsinks == 0) {
        pgf_error("%s", err);
        pgf_snapshot_free(snap);
        pgf_state_store_close(store);
        PQfinish(conn);
        pgf_http_stop(http);
        free_loop(base);
        pgf_config_free(cfg);
        return 1;
    }
    pgf_metrics.sinks = sinks;
    pgf_metrics.nsinks = nsinks;
    /* The periodic progress line: streaming says nothing at info level otherwise. */
    struct event *progress = NULL;
    if (opts.progress_interval_ms > 0 && (progress = event_new(base, -1, EV_PERSIST, on_progress, &opts)) != NULL) {
        struct timeval tv = {opts.progress_interval_ms / 1000, (opts.progress_interval_ms % 1000) * 1000};
        event_add(progress, &tv);
    }
    struct pgf_heartbeat *heartbeat =
        opts.heartbeat_interval_ms ? pgf_heartbeat_start(base, opts.dsn, opts.heartbeat_interval_ms) : NULL;
    /* The standbys' replay positions drive the Redis sink's second pass. */
    struct pgf_replicas *replicas = NULL;
    for (size_t i = 0; i < nsinks; i++)
        if ((opts.sinks & PGF_SINK_REDIS) && strcmp(sinks[i]->ops->name, "redis") == 0 &&
            pgf_replicas_count(redis, err, sizeof err) > 0 &&
            (replicas = pgf_replicas_start(base, redis, opts.dsn, on_replay_horizon, sinks[i])) == NULL)
            pgf_warn("cannot start polling the standbys (out of memory): second passes go after "
                     "redis.replica_max_wait");
    pgf_metrics.replicas = replicas;
    pgf_info("streaming slot \"%s\", publication \"%s\"", opts.slot, opts.publication);
    if (store == NULL && (opts.snapshot || info.slot_created))
        pgf_warn("no state store (Kafka is not a sink and state_dir is not set): a snapshot cannot resume after "
                 "a crash, and a lost slot is not noticed at a restart. Set state_dir (--state-dir) to a directory "
                 "on a volume");
    struct pgf_snapshot_start begin = {.system_id = info.system_id, .confirmed = info.confirmed_flush,
                                       .slot_created = info.slot_created, .slot_lost = info.slot_lost};
    pgf_snapshot_begin(snap, &begin);
    pgf_http_on_backfill(http, on_http_backfill, snap);

    int rc = 0, backoff_ms = 1000, attempt = 0;
    for (;;) {
        enum pgf_stream_result r =
            pgf_stream_run(conn, &opts, sinks, nsinks, info.confirmed_flush, &stop_signal, base, snap);
        PQfinish(conn);
        conn = NULL;
        if (r != PGF_STREAM_LOST) {
            rc = r == PGF_STREAM_DONE ? 0 : 1;
            break;
        }
        /* Reconnect with capped exponential backoff; one log line per attempt. */
        while (conn == NULL && !stop_signal) {
            attempt++;
            pgf_warn("reconnecting to PostgreSQL in %d ms (attempt %d)", backoff_ms, attempt);
            /* The sinks go on meanwhile (acks, a Kafka transaction to commit), every 100 ms;
             * one that fails (a fenced Kafka producer, say) ends the run here. */
            for (int waited = 0; waited < backoff_ms && rc == 0 && !stop_signal; waited += 100) {
                wait_on_loop(base, backoff_ms - waited < 100 ? backoff_ms - waited : 100);
                for (size_t i = 0; i < nsinks && rc == 0; i++)
                    if (sink_poll(sinks[i]) != 0) {
                        pgf_error("%s sink: %s", sinks[i]->ops->name, sinks[i]->errstr);
                        rc = 1;
                    }
            }
            if (rc != 0)
                break;
            if (stop_signal)
                break;
            struct pgf_resume resume = {.confirmed = pgf_metrics.confirmed_lsn};
            conn = start_stream(base, &opts, &resume, NULL, &info, err, sizeof err, &started);
            if (conn == NULL && started == PGF_REPLCONN_FATAL) {
                /* Reachable but refusing (slot lost, publication gone): retrying won't help. */
                pgf_error("%s", err);
                rc = 1;
                break;
            }
            if (conn == NULL && !stop_signal) {
                /* A busy slot is usually our old walsender, not yet gone: it lets go soon. */
                pgf_warn("reconnect failed: %s%s", err,
                         started == PGF_REPLCONN_BUSY
                             ? " (the previous connection's walsender may not have exited yet)"
                             : "");
                if (backoff_ms < 30000)
                    backoff_ms = backoff_ms * 2 > 30000 ? 30000 : backoff_ms * 2;
            }
        }
        if (rc != 0)
            break;
        if (conn == NULL) {
            /* Stopped while disconnected: deliver what is in flight; the slot keeps the rest. */
            for (size_t i = 0; i < nsinks; i++)
                if (sink_flush(sinks[i], opts.shutdown_timeout_ms) != 0)
                    pgf_warn("%s sink: %s", sinks[i]->ops->name, sinks[i]->errstr);
            break;
        }
        pgf_info("reconnected after %d attempt%s; resuming from the slot", attempt, attempt == 1 ? "" : "s");
        pgf_metrics.reconnects++;
        backoff_ms = 1000;
        attempt = 0;
    }
    if (rc != 0 && !stop_signal)
        report_slot_position(base, &opts);
    pgf_heartbeat_stop(heartbeat);
    pgf_metrics.replicas = NULL;
    pgf_replicas_stop(replicas);
    if (progress)
        event_free(progress);
    /* The last confirmed position goes into the state, which is saved a last time. */
    pgf_http_on_backfill(http, NULL, NULL);
    pgf_snapshot_acked(snap, 0, pgf_metrics.confirmed_lsn);
    pgf_snapshot_free(snap);
    pgf_state_store_close(store);
    /* Dropping the slot throws away what it still holds: only when every sink has acked all. */
    int all_acked = 1;
    for (size_t i = 0; i < nsinks; i++)
        if (sink_flush(sinks[i], 0) != 0)
            all_acked = 0;
    for (size_t i = 0; i < nsinks; i++)
        sink_close(sinks[i]);
    pgf_metrics.nsinks = 0;
    if (rc == 0 && opts.drop_slot_on_exit && !opts.temporary_slot && !all_acked)
        pgf_warn("kept replication slot \"%s\" despite --drop-slot-on-exit: it still holds changes a sink "
                 "has not acknowledged", opts.slot);
    else if (rc == 0 && opts.drop_slot_on_exit && !opts.temporary_slot) {
        if (pgf_replconn_drop_slot(opts.dsn, opts.slot, err, sizeof err) == 0)
            pgf_info("dropped replication slot \"%s\" (--drop-slot-on-exit)", opts.slot);
        else
            pgf_warn("could not drop replication slot \"%s\": %s", opts.slot, err);
    }
    pgf_http_stop(http);
    pgf_metrics_free();
    free_loop(base);
    pgf_config_free(cfg);
    return rc;
}
