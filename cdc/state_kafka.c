/* state_kafka.c - see state_kafka.h.
 *
 * A save is one record (key = the slot, value = the document) from an idempotent producer
 * with acks=all; its done runs when the delivery report says the record is on every in-sync
 * replica.  librdkafka writes a byte to a pipe when its main queue has something, and the
 * pipe's read end is a libevent event that serves the queue with rd_kafka_poll(rk, 0): the
 * loop wakes for reports and never waits for the broker.
 *
 * A load reads the topic once, from the beginning to the end it has when the load starts,
 * with a consumer of its own that belongs to no group (the legacy per-partition API:
 * rd_kafka_assign needs a group.id) and commits nothing.  It runs before the loop, so it may
 * wait, bounded. */
#include "cdc/state_kafka.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sinks/kafka_conf.h"

#include "common/log.h"

/* How long open and load may wait for the brokers. */
#define STATE_KAFKA_WAIT_MS 30000

/* A save whose delivery report has not come yet: the record's opaque, and a link in the
 * store's list so close can answer it. */
struct pending_save {
    struct pending_save *prev, *next;
    pgf_state_saved_cb done;
    void *arg;
};

struct kafka_store {
    struct pgf_state_store base;
    char *brokers; /* for messages only; NULL when kafka.conf sets bootstrap.servers */
    char *topic, *key;
    rd_kafka_conf_t *consumer_conf; /* built (and so checked) at open; each load takes a copy */
    rd_kafka_t *rk;                 /* the producer */
    rd_kafka_topic_t *rkt;
    rd_kafka_queue_t *mainq;
    int pipe_rd, pipe_wr;
    struct event *wake;
    struct pending_save pending; /* sentinel of the circular list of saves under way */
    size_t npending;
    int opened;  /* open has returned: client errors are logged too (open's message names them) */
    int closing; /* purged saves are answered with "closed", not librdkafka's purge error */
    char fatal[1024];     /* set once the producer failed for good: every later save fails */
    char last_error[512]; /* the newest client error, to say why a wait ran out */
    int64_t last_warn_ms;
};

/* Returns a monotonic clock in milliseconds. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the milliseconds left until deadline, at least 0. */
static int left_ms(int64_t deadline)
{
    int64_t left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

/* Sleeps ms milliseconds: only between retries before the loop runs. */
static void pause_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (long)(ms % 1000) * 1000000L}, NULL);
}

/* librdkafka's log lines go through ours.  Setting warnings (a producer property ignored by
 * the consumer, and so on) go to debug: the sink's producer, built from the same
 * kafka.conf, already reports them. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    enum pgf_log_level l = level <= 3 ? PGF_LOG_ERROR : level <= 4 ? PGF_LOG_WARN : level <= 6 ? PGF_LOG_INFO
                                                                                             : PGF_LOG_DEBUG;
    if (strcmp(fac, "CONFWARN") == 0)
        l = PGF_LOG_DEBUG;
    pgf_log(l, "kafka state %s: %s", fac, buf);
}

/* The producer's errors: a fatal one fails every later save; the others (a broker down, a
 * failed login) librdkafka retries, so they are kept for open's message, then logged at
 * most every 10 s. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct kafka_store *ks = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof why);
        if (!ks->fatal[0]) {
            snprintf(ks->fatal, sizeof ks->fatal,
                     "the Kafka producer of the state (%s) failed for good: %s; restart pgfanout", ks->base.where,
                     why);
            pgf_error("%s", ks->fatal);
        }
        return;
    }
    snprintf(ks->last_error, sizeof ks->last_error, "%s", reason);
    int64_t now = now_ms();
    if (ks->opened && now - ks->last_warn_ms >= 10000) {
        ks->last_warn_ms = now;
        pgf_warn("kafka state (%s): %s (%s); retrying", ks->base.where, reason,
                 rd_kafka_err2name((rd_kafka_resp_err_t)err));
    }
}

/* The consumer's errors while a load runs: kept to say why it could not finish. */
static void on_read_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    struct kafka_store *ks = opaque;
    snprintf(ks->last_error, sizeof ks->last_error, "%s", reason);
}

/* Takes ps off the list of saves under way. */
static void unlink_save(struct kafka_store *ks, struct pending_save *ps)
{
    ps->prev->next = ps->next;
    ps->next->prev = ps->prev;
    ks->npending--;
}

/* A save's delivery report, served by rd_kafka_poll (from the loop, or from flush or close):
 * err 0 with acks=all means every in-sync replica has the record.  ps is freed before done
 * runs, since done may start the next save. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct kafka_store *ks = opaque;
    struct pending_save *ps = m->_private;
    if (ps == NULL)
        return;
    unlink_save(ks, ps);
    pgf_state_saved_cb done = ps->done;
    void *arg = ps->arg;
    free(ps);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        done(arg, NULL);
        return;
    }
    char why[768];
    if (ks->closing)
        snprintf(why, sizeof why, "the state store (%s) was closed before Kafka acknowledged the save", ks->base.where);
    else
        snprintf(why, sizeof why, "Kafka did not store the state (%s): %s", ks->base.where, rd_kafka_err2str(m->err));
    done(arg, why);
}

/* Serves the producer's main queue (delivery reports, errors) on the loop, without waiting:
 * librdkafka wrote to the pipe because the queue has something.  The pipe is drained first,
 * so a report that comes during the poll wakes us again. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct kafka_store *ks = arg;
    char drain[64];
    while (read(fd, drain, sizeof drain) > 0)
        ;
    rd_kafka_poll(ks->rk, 0);
}

/* Says why a wait for the brokers ran out into err: what was being done, librdkafka's error
 * for it, the newest client error (the cause, often: a refused connection, a failed TLS
 * handshake or login), and what to check. */
static void no_answer(const struct kafka_store *ks, const char *doing, const char *why, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "%s (%s): no answer from the Kafka brokers (%s) in %d s: %s%s%s; check that they are up and reachable "
             "and that kafka.brokers and kafka.conf (TLS, SASL) are right",
             doing, ks->base.where, ks->brokers ? ks->brokers : "bootstrap.servers of kafka.conf",
             STATE_KAFKA_WAIT_MS / 1000, why, ks->last_error[0] ? "; last error: " : "", ks->last_error);
}

/* Errors a wait for the cluster outlives: a broker down or moving, a leader being elected, a
 * topic just created that not every broker knows yet. */
static int transient(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR__NODE_UPDATE:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR:
    case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE:
        return 1;
    default:
        return 0;
    }
}

/* Runs one Admin request started by start(ks, opts, q) and waits for its result event, up
 * to deadline.  Returns the event (the caller destroys it), or NULL when none came. */
static rd_kafka_event_t *admin_run(struct kafka_store *ks, rd_kafka_admin_op_t op, int64_t deadline,
                                   void (*start)(struct kafka_store *ks, rd_kafka_AdminOptions_t *opts,
                                                 rd_kafka_queue_t *q, void *arg),
                                   void *arg)
{
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(ks->rk, op);
    rd_kafka_queue_t *q = rd_kafka_queue_new(ks->rk);
    char why[256];
    int left = left_ms(deadline);
    /* Both timeouts end within the bound: the request's (brokers unreachable, no controller)
     * and the broker's own wait for the new topic to reach every broker. */
    rd_kafka_AdminOptions_set_request_timeout(opts, left > 0 ? left : 1, why, sizeof why);
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
        rd_kafka_AdminOptions_set_operation_timeout(opts, left > 0 ? left : 1, why, sizeof why);
    start(ks, opts, q, arg);
    /* The request timeout ends the request; the margin only covers librdkafka's own timer. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, left + 2000);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_poll(ks->rk, 0); /* the client errors of the wait, for the message */
    return ev;
}

/* Starts CreateTopics for the NewTopic arg. */
static void start_create(struct kafka_store *ks, rd_kafka_AdminOptions_t *opts, rd_kafka_queue_t *q, void *arg)
{
    rd_kafka_NewTopic_t *nt = arg;
    rd_kafka_CreateTopics(ks->rk, &nt, 1, opts, q);
}

/* Starts DescribeConfigs for the ConfigResource arg. */
static void start_describe(struct kafka_store *ks, rd_kafka_AdminOptions_t *opts, rd_kafka_queue_t *q, void *arg)
{
    rd_kafka_ConfigResource_t *res = arg;
    rd_kafka_DescribeConfigs(ks->rk, &res, 1, opts, q);
}

/* Warns when the topic, made by someone else, is not compacted: deleted by age alone, the
 * newest document would one day be gone and the next start would find no state at all.
 * Best effort: a topic we cannot describe is only noted at debug level. */
static void check_compacted(struct kafka_store *ks, int64_t deadline)
{
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, ks->topic);
    rd_kafka_event_t *ev = admin_run(ks, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, deadline, start_describe, res);
    rd_kafka_ConfigResource_destroy(res);
    const rd_kafka_DescribeConfigs_result_t *result = ev ? rd_kafka_event_DescribeConfigs_result(ev) : NULL;
    size_t nres = 0, nconf = 0;
    const rd_kafka_ConfigResource_t **rs = result ? rd_kafka_DescribeConfigs_result_resources(result, &nres) : NULL;
    const rd_kafka_ConfigEntry_t **entries = NULL;
    if (nres == 1 && rd_kafka_ConfigResource_error(rs[0]) == RD_KAFKA_RESP_ERR_NO_ERROR)
        entries = rd_kafka_ConfigResource_configs(rs[0], &nconf);
    const char *policy = NULL;
    for (size_t i = 0; i < nconf; i++)
        if (strcmp(rd_kafka_ConfigEntry_name(entries[i]), "cleanup.policy") == 0)
            policy = rd_kafka_ConfigEntry_value(entries[i]);
    const char *why = ev && rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev) : NULL;
    if (policy == NULL)
        pgf_debug("state: could not read the cleanup.policy of Kafka topic \"%s\"%s%s", ks->topic, why ? ": " : "",
                  why ? why : "");
    else if (strstr(policy, "compact") == NULL)
        pgf_warn("state: Kafka topic \"%s\" has cleanup.policy=%s, so the broker may delete pgfanout's newest state "
                 "once it is older than the topic's retention, and a restart would then find none; set "
                 "cleanup.policy=compact on it",
                 ks->topic, policy);
    if (ev)
        rd_kafka_event_destroy(ev);
}

/* Returns whether the brokers' metadata lists the topic with partitions (waiting at most
 * until deadline). */
static int topic_exists(struct kafka_store *ks, int64_t deadline)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(ks->rk, ks->topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int found = rkt && rd_kafka_metadata(ks->rk, 0, rkt, &md, left_ms(deadline)) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                md->topics[0].partition_cnt > 0;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return found;
}

/* Makes sure the topic exists: creates it compacted with one partition and the broker's
 * replication factor, or finds it there (then checks it is compacted).  Returns 0, or -1
 * with err set. */
static int ensure_topic(struct kafka_store *ks, int64_t deadline, char *err, size_t errlen)
{
    char why[512];
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(ks->topic, 1, -1, why, sizeof why);
    if (nt == NULL || rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact") != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "cannot create Kafka topic \"%s\" for pgfanout's state: %s", ks->topic,
                 nt ? "cannot set cleanup.policy" : why);
        if (nt)
            rd_kafka_NewTopic_destroy(nt);
        return -1;
    }
    rd_kafka_event_t *ev = admin_run(ks, RD_KAFKA_ADMIN_OP_CREATETOPICS, deadline, start_create, nt);
    rd_kafka_NewTopic_destroy(nt);
    if (ev == NULL) {
        no_answer(ks, "cannot create the state's topic", "the request got no result", err, errlen);
        return -1;
    }
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    snprintf(why, sizeof why, "%s", e ? rd_kafka_event_error_string(ev) : "");
    const rd_kafka_CreateTopics_result_t *result = rd_kafka_event_CreateTopics_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t **tr = result ? rd_kafka_CreateTopics_result_topics(result, &n) : NULL;
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && n == 1 && (e = rd_kafka_topic_result_error(tr[0])) != 0)
        snprintf(why, sizeof why, "%s",
                 rd_kafka_topic_result_error_string(tr[0]) ? rd_kafka_topic_result_error_string(tr[0])
                                                           : rd_kafka_err2str(e));
    rd_kafka_event_destroy(ev);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        pgf_info("state: created Kafka topic \"%s\" (compacted, 1 partition)", ks->topic);
        return 0;
    }
    if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        check_compacted(ks, deadline);
        return 0;
    }
    if (transient(e)) {
        no_answer(ks, "cannot create the state's topic", why, err, errlen);
        return -1;
    }
    /* Refused (no Create ACL, a policy, too few brokers for the default replication): fine
     * when someone made the topic already. */
    if (topic_exists(ks, deadline)) {
        pgf_info("state: Kafka topic \"%s\" exists; creating it was refused (%s)", ks->topic, why);
        check_compacted(ks, deadline);
        return 0;
    }
    snprintf(err, errlen,
             "cannot create Kafka topic \"%s\" for pgfanout's state: %s; create it yourself (1 partition, "
             "cleanup.policy=compact) or allow this client to create it",
             ks->topic, why);
    return -1;
}

/* What a load found: the newest record of the key so far. */
struct found {
    int any;        /* a record of the key was seen */
    char *value;    /* its value (malloc'd, NUL-terminated), NULL for a tombstone */
    size_t len;
    int32_t partition;
    int64_t timestamp;
};

/* Keeps m when it is newer than what was found: later in the same partition, or, in another
 * partition (only when the partition count changed, which moves the key), later by time.
 * Returns 0, or -1 when out of memory. */
static int consider(struct found *f, const rd_kafka_message_t *m)
{
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    if (f->any && f->partition != m->partition && ts < f->timestamp)
        return 0;
    char *value = NULL;
    if (m->payload) {
        if ((value = malloc(m->len + 1)) == NULL)
            return -1;
        memcpy(value, m->payload, m->len);
        value[m->len] = '\0';
    }
    free(f->value);
    f->any = 1;
    f->value = value;
    f->len = m->len;
    f->partition = m->partition;
    f->timestamp = ts;
    return 0;
}

/* Finds the topic's partition count with consumer c, waiting until deadline while the
 * brokers cannot be reached or do not know the topic yet.  Returns it, or 0 with err set. */
static int32_t partition_count(struct kafka_store *ks, rd_kafka_t *c, rd_kafka_topic_t *rkt, int64_t deadline,
                               char *err, size_t errlen)
{
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR__TIMED_OUT;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        e = rd_kafka_metadata(c, 0, rkt, &md, left_ms(deadline) > 0 ? left_ms(deadline) : 1);
        int32_t n = 0;
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR && (n = md->topics[0].partition_cnt) == 0)
                e = RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE;
        }
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_poll(c, 0); /* the client errors, for the message */
        if (n > 0)
            return n;
        if (!transient(e)) {
            snprintf(err, errlen, "cannot read the state from %s: %s; check that this client may describe and read "
                                  "the topic (Describe and Read ACLs)",
                     ks->base.where, rd_kafka_err2str(e));
            return 0;
        }
        if (left_ms(deadline) == 0)
            break;
        pause_ms(200);
    }
    if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
        /* Never "no state": it was there at open, and losing it silently would restart from
         * scratch. */
        snprintf(err, errlen, "cannot read the state from %s: the brokers do not know the topic after %d s (it "
                              "existed when pgfanout started: was it deleted?)",
                 ks->base.where, STATE_KAFKA_WAIT_MS / 1000);
    else
        no_answer(ks, "cannot read the state", rd_kafka_err2str(e), err, errlen);
    return 0;
}

/* Reads the state; see pgf_state_store_ops.  The end of each partition is its offset when the
 * load starts (for read_committed, the last stable one); a partition is done once a record
 * at or past its end-1 came, or the consumer says it reached the end past it. */
static int kafka_load(struct pgf_state_store *st, char **json, size_t *len, char *err, size_t errlen)
{
    struct kafka_store *ks = (struct kafka_store *)st;
    int64_t deadline = now_ms() + STATE_KAFKA_WAIT_MS;
    int rc = -1;
    struct found f = {0};
    int64_t *end = NULL;
    int *reading = NULL; /* 1 while a partition is started and not at its end */
    int *started = NULL; /* 1 once rd_kafka_consume_start_queue took a partition */
    int32_t nparts = 0;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_topic_t *rkt = NULL;
    ks->last_error[0] = '\0';

    rd_kafka_conf_t *conf = rd_kafka_conf_dup(ks->consumer_conf);
    rd_kafka_conf_set_opaque(conf, ks);
    rd_kafka_conf_set_error_cb(conf, on_read_error);
    char why[512];
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (c == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "cannot create the Kafka consumer that reads the state (%s): %s", ks->base.where, why);
        return -1;
    }
    if ((rkt = rd_kafka_topic_new(c, ks->topic, NULL)) == NULL) {
        snprintf(err, errlen, "cannot read the state from %s: %s", ks->base.where,
                 rd_kafka_err2str(rd_kafka_last_error()));
        goto out;
    }
    if ((nparts = partition_count(ks, c, rkt, deadline, err, errlen)) == 0)
        goto out;
    end = calloc((size_t)nparts, sizeof *end);
    reading = calloc((size_t)nparts, sizeof *reading);
    started = calloc((size_t)nparts, sizeof *started);
    q = rd_kafka_queue_new(c);
    if (end == NULL || reading == NULL || started == NULL || q == NULL) {
        snprintf(err, errlen, "out of memory reading the state from %s", ks->base.where);
        goto out;
    }
    int nreading = 0;
    for (int32_t p = 0; p < nparts; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_query_watermark_offsets(c, ks->topic, p, &lo, &hi, left_ms(deadline) ? left_ms(deadline)
                                                                                                   : 1)) != 0 &&
               transient(e) && left_ms(deadline) > 0) {
            rd_kafka_poll(c, 0);
            pause_ms(200);
        }
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_poll(c, 0);
            if (transient(e))
                no_answer(ks, "cannot read the state", rd_kafka_err2str(e), err, errlen);
            else
                snprintf(err, errlen, "cannot read the state from %s: partition %" PRId32 ": %s", ks->base.where, p,
                         rd_kafka_err2str(e));
            goto out;
        }
        end[p] = hi;
        if (hi <= lo)
            continue; /* empty */
        if (rd_kafka_consume_start_queue(rkt, p, RD_KAFKA_OFFSET_BEGINNING, q) != 0) {
            snprintf(err, errlen, "cannot read the state from %s: partition %" PRId32 ": %s", ks->base.where, p,
                     rd_kafka_err2str(rd_kafka_last_error()));
            goto out;
        }
        started[p] = reading[p] = 1;
        nreading++;
    }
    size_t keylen = strlen(ks->key);
    while (nreading > 0) {
        int left = left_ms(deadline);
        if (left == 0) {
            int32_t p = 0;
            while (!reading[p])
                p++;
            rd_kafka_poll(c, 0);
            snprintf(err, errlen,
                     "cannot read the state from %s: did not reach the end of partition %" PRId32 " (offset %" PRId64
                     ") in %d s%s%s; check that the brokers are up and reachable and that kafka.conf (TLS, SASL) is "
                     "right",
                     ks->base.where, p, end[p], STATE_KAFKA_WAIT_MS / 1000, ks->last_error[0] ? "; last error: " : "",
                     ks->last_error);
            goto out;
        }
        rd_kafka_message_t *m = rd_kafka_consume_queue(q, left < 500 ? left : 500);
        if (m == NULL) {
            rd_kafka_poll(c, 0);
            continue;
        }
        int32_t p = m->partition;
        if (p < 0 || p >= nparts || !reading[p]) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (m->offset >= end[p]) {
                reading[p] = 0;
                nreading--;
            }
        } else if (m->err) {
            if (!transient(m->err)) {
                snprintf(err, errlen, "cannot read the state from %s: partition %" PRId32 ": %s", ks->base.where, p,
                         rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                goto out;
            }
            snprintf(ks->last_error, sizeof ks->last_error, "%s", rd_kafka_message_errstr(m));
        } else if (m->offset < end[p]) {
            /* Records past the end were written after the load began: not ours to return. */
            if (m->key_len == keylen && memcmp(m->key, ks->key, keylen) == 0 && consider(&f, m) != 0) {
                snprintf(err, errlen, "out of memory reading the state from %s", ks->base.where);
                rd_kafka_message_destroy(m);
                goto out;
            }
            if (m->offset >= end[p] - 1) {
                reading[p] = 0;
                nreading--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (f.any && f.value) {
        *json = f.value;
        *len = f.len;
        f.value = NULL;
        rc = 0;
    } else {
        rc = 1;
    }
    pgf_debug("state: read %s: %s", ks->base.where, rc == 0 ? "found" : f.any ? "deleted (a tombstone)" : "none");
out:
    for (int32_t p = 0; started && p < nparts; p++)
        if (started[p])
            rd_kafka_consume_stop(rkt, p);
    if (q)
        rd_kafka_queue_destroy(q);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(c);
    free(end);
    free(reading);
    free(started);
    free(f.value);
    return rc;
}

/* Starts producing the document; see pgf_state_store_ops. */
static int kafka_save(struct pgf_state_store *st, const char *json, size_t len, pgf_state_saved_cb done, void *arg,
                      char *err, size_t errlen)
{
    struct kafka_store *ks = (struct kafka_store *)st;
    if (ks->fatal[0]) {
        snprintf(err, errlen, "%s", ks->fatal);
        return -1;
    }
    struct pending_save *ps = malloc(sizeof *ps);
    if (ps == NULL) {
        snprintf(err, errlen, "out of memory saving the state to %s", ks->base.where);
        return -1;
    }
    ps->done = done;
    ps->arg = arg;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        ks->rk, RD_KAFKA_V_RKT(ks->rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(ks->key, strlen(ks->key)), RD_KAFKA_V_VALUE((void *)json, len), RD_KAFKA_V_OPAQUE(ps),
        RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        free(ps);
        if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
            snprintf(err, errlen, "cannot save the state to %s: the document (%zu bytes) is larger than the "
                                  "producer's message.max.bytes; raise it in kafka.conf (and the topic's "
                                  "max.message.bytes)",
                     ks->base.where, len);
        else
            snprintf(err, errlen, "cannot save the state to %s: %s", ks->base.where, rd_kafka_err2str(e));
        return -1;
    }
    ps->next = &ks->pending;
    ps->prev = ks->pending.prev;
    ks->pending.prev->next = ps;
    ks->pending.prev = ps;
    ks->npending++;
    return 0;
}

/* Waits up to timeout_ms for the saves under way; their done runs in here. */
static int kafka_flush(struct pgf_state_store *st, int timeout_ms)
{
    struct kafka_store *ks = (struct kafka_store *)st;
    rd_kafka_flush(ks->rk, timeout_ms);
    rd_kafka_poll(ks->rk, 0);
    return ks->npending ? 1 : 0;
}

/* Purges what is still pending (its done says the store was closed) and frees all. */
static void kafka_close(struct pgf_state_store *st)
{
    struct kafka_store *ks = (struct kafka_store *)st;
    ks->closing = 1;
    if (ks->wake)
        event_free(ks->wake);
    if (ks->rk) {
        rd_kafka_purge(ks->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(ks->rk, 0);
        if (ks->rkt)
            rd_kafka_topic_destroy(ks->rkt);
        if (ks->mainq)
            rd_kafka_queue_destroy(ks->mainq);
        rd_kafka_destroy(ks->rk);
    }
    /* A report the purge did not bring still gets its answer. */
    while (ks->pending.next && ks->pending.next != &ks->pending) {
        struct pending_save *ps = ks->pending.next;
        unlink_save(ks, ps);
        char why[600];
        snprintf(why, sizeof why, "the state store (%s) was closed before Kafka acknowledged the save",
                 ks->base.where);
        ps->done(ps->arg, why);
        free(ps);
    }
    if (ks->pipe_rd >= 0)
        close(ks->pipe_rd);
    if (ks->pipe_wr >= 0)
        close(ks->pipe_wr);
    if (ks->consumer_conf)
        rd_kafka_conf_destroy(ks->consumer_conf);
    free(ks->brokers);
    free(ks->topic);
    free(ks->key);
    free(ks);
}

static const struct pgf_state_store_ops kafka_store_ops = {
    .name = "kafka",
    .load = kafka_load,
    .save = kafka_save,
    .flush = kafka_flush,
    .close = kafka_close,
};

/* Opens the store; see state_kafka.h. */
struct pgf_state_store *pgf_state_kafka_open(struct event_base *base, const char *brokers, const char *const *conf,
                                             size_t nconf, const char *topic, const char *key, char *err,
                                             size_t errlen)
{
    if (base == NULL || topic == NULL || !topic[0] || key == NULL || !key[0]) {
        snprintf(err, errlen, "the Kafka state store needs an event base, a topic and a key");
        return NULL;
    }
    struct kafka_store *ks = calloc(1, sizeof *ks);
    if (ks == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int64_t deadline = now_ms() + STATE_KAFKA_WAIT_MS;
    ks->base.ops = &kafka_store_ops;
    ks->pipe_rd = ks->pipe_wr = -1;
    ks->pending.next = ks->pending.prev = &ks->pending;
    snprintf(ks->base.where, sizeof ks->base.where, "Kafka topic \"%s\", key \"%s\"", topic, key);
    ks->topic = strdup(topic);
    ks->key = strdup(key);
    ks->brokers = brokers ? strdup(brokers) : NULL;
    if (ks->topic == NULL || ks->key == NULL || (brokers && ks->brokers == NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    static const char *const producer_defaults[][2] = {
        {"client.id", "pgfanout-state"},
    };
    static const char *const producer_required[][2] = {
        /* One small record at a time, and the snapshot's next chunk waits for it: kafka.conf's
         * linger for the sink's batches must not delay it (linger.ms=50 made a snapshot 3x slower). */
        {"linger.ms", "0"},
        {"enable.idempotence", "true"}, /* a retry cannot reorder an older document after a newer one */
        {"acks", "all"},                /* done(NULL) means on every in-sync replica */
    };
    static const char *const consumer_defaults[][2] = {
        {"client.id", "pgfanout-state"},
    };
    static const char *const consumer_required[][2] = {
        {"isolation.level", "read_committed"},
        {"enable.auto.commit", "false"}, /* no group: nothing to commit to */
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"}, /* how load knows a partition's end when its last offsets are
                                           * transaction markers, which are never delivered */
    };
    ks->consumer_conf = kafka_conf_build(consumer_defaults, sizeof consumer_defaults / sizeof *consumer_defaults, brokers,
                                  conf, nconf, consumer_required,
                                  sizeof consumer_required / sizeof *consumer_required, err, errlen);
    if (ks->consumer_conf == NULL)
        goto fail;
    rd_kafka_conf_set_log_cb(ks->consumer_conf, on_log);
    rd_kafka_conf_t *pconf = kafka_conf_build(producer_defaults, sizeof producer_defaults / sizeof *producer_defaults,
                                       brokers, conf, nconf, producer_required,
                                       sizeof producer_required / sizeof *producer_required, err, errlen);
    if (pconf == NULL)
        goto fail;
    rd_kafka_conf_set_opaque(pconf, ks);
    rd_kafka_conf_set_dr_msg_cb(pconf, on_delivery);
    rd_kafka_conf_set_error_cb(pconf, on_error);
    rd_kafka_conf_set_log_cb(pconf, on_log);
    char why[512];
    if ((ks->rk = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, why, sizeof why)) == NULL) {
        rd_kafka_conf_destroy(pconf);
        snprintf(err, errlen, "cannot create the Kafka producer of the state (%s): %s", ks->base.where, why);
        goto fail;
    }
    if (ensure_topic(ks, deadline, err, errlen) != 0)
        goto fail;
    if ((ks->rkt = rd_kafka_topic_new(ks->rk, topic, NULL)) == NULL) {
        snprintf(err, errlen, "cannot use %s: %s", ks->base.where, rd_kafka_err2str(rd_kafka_last_error()));
        goto fail;
    }
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(err, errlen, "cannot set up the Kafka state store: pipe: %s", strerror(errno));
        goto fail;
    }
    ks->pipe_rd = fds[0];
    ks->pipe_wr = fds[1];
    for (int i = 0; i < 2; i++) {
        /* Neither end may block: librdkafka writes from its threads, the loop drains. */
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    ks->wake = event_new(base, ks->pipe_rd, EV_READ | EV_PERSIST, on_wake, ks);
    if (ks->wake == NULL || event_add(ks->wake, NULL) != 0) {
        snprintf(err, errlen, "cannot set up the Kafka state store: cannot watch its pipe");
        goto fail;
    }
    ks->mainq = rd_kafka_queue_get_main(ks->rk);
    rd_kafka_queue_io_event_enable(ks->mainq, ks->pipe_wr, "1", 1);
    ks->opened = 1;
    pgf_info("state: kept in %s", ks->base.where);
    return &ks->base;
fail:
    kafka_close(&ks->base);
    return NULL;
}
