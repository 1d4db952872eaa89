/* kafka_sink.c - protobuf events to Kafka with an idempotent librdkafka producer.
 *
 * Each transaction gets an entry in an ordered ring and counts its records still in flight;
 * the delivery report counts them down.  acked_lsn moves only across a prefix of fully
 * delivered transactions, so the slot never passes a record Kafka has not acknowledged
 * (the lesson of Bottled Water).  A failed delivery is never counted as an ack. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdc/log.h"
#include "cdc/lsn.h"
#include "decoders/event.h"
#include "sinks/proto_event.h"
#include "sinks/sink.h"
#include "sinks/txn_ring.h"
#include "cdc/histogram.h"

/* What librdkafka holds per queued record beyond its key and value (message struct, headers,
 * batching), measured at about 600 bytes with our four headers.  Counting it makes
 * --max-inflight-bytes bound real memory, not just payload. */
#define KAFKA_RECORD_OVERHEAD 640


/* A relation's topic, cached so the template is expanded once per relation. */
struct ktopic {
    uint32_t oid;
    char *nspname, *relname;
    rd_kafka_topic_t *rkt;
    int partitions; /* 0 until a truncate needs it */
};

struct kafka_sink {
    struct sink base;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipe_wr;
    struct kafka_sink_config cfg;
    struct pgf_proto *proto;

    struct txn_ring ring; /* one txn_head per transaction; pending counts records in flight */
    int open; /* ring.tail - 1 is the transaction being emitted */
    uint32_t txn_index;

    struct ktopic *topics;
    size_t ntopics, topics_cap;
    rd_kafka_topic_t *msg_rkt;

    char failure[400]; /* the first delivery failure, set from the delivery callback */
    struct pgf_hist latency;
    int64_t last_broker_warn_us;
};

/* One transaction in the ring: pending counts its records in flight. */
struct ktxn {
    struct txn_head h;
    int64_t commit_time; /* for the commit-to-ack latency; 0 for a non-transactional message */
};

/* Returns the ring entry of sequence seq. */
static struct txn_head *txn_at(struct kafka_sink *k, uint64_t seq)
{
    return txn_ring_at(&k->ring, seq);
}

/* Opens a new transaction entry; returns 0 or -1 when out of memory. */
static int txn_open(struct kafka_sink *k)
{
    if (txn_ring_push(&k->ring) == NULL)
        return -1;
    k->open = 1;
    k->txn_index = 0;
    return 0;
}

/* Moves acked_lsn across every leading transaction that is committed and fully delivered. */
static void txn_advance(struct kafka_sink *k)
{
    struct ktxn *t;
    while ((t = txn_ring_done_head(&k->ring)) != NULL) {
        if (t->commit_time != 0 && t->h.end_lsn != 0)
            pgf_hist_record(&k->latency, pgf_pgtime_now() - t->commit_time);
        txn_ring_pop(&k->ring, &k->base.acked_lsn);
    }
}

/* Delivery report, served on our thread by rd_kafka_poll: counts a record down, or records
 * the failure (never as an ack). */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct kafka_sink *k = opaque;
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    size_t bytes = m->len + m->key_len + KAFKA_RECORD_OVERHEAD;
    k->base.inflight_bytes -= bytes < k->base.inflight_bytes ? bytes : k->base.inflight_bytes;
    if (k->base.inflight_msgs)
        k->base.inflight_msgs--;
    if (m->err) {
        k->base.errors++;
        if (!k->failure[0])
            snprintf(k->failure, sizeof k->failure,
                     "delivery to topic %s failed: %s; the slot is not advanced past it, a restart replays it",
                     rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
        return;
    }
    k->base.connected = 1;
    if (seq >= k->ring.head && seq < k->ring.tail && txn_at(k, seq)->pending > 0)
        txn_at(k, seq)->pending--;
}

/* librdkafka's own log lines, through our logger.  May run on librdkafka's threads. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    enum pgf_log_level l = level <= 3 ? PGF_LOG_ERROR : level <= 4 ? PGF_LOG_WARN : level <= 6 ? PGF_LOG_INFO
                                                                                             : PGF_LOG_DEBUG;
    pgf_log(l, "kafka %s: %s", fac, buf);
}

/* Client-level errors: fatal ones fail the sink; transport errors are retried by librdkafka
 * and logged at most every 10 s, so a broker outage does not flood the log. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct kafka_sink *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof why);
        if (!k->failure[0])
            snprintf(k->failure, sizeof k->failure, "fatal producer error: %s", why);
        return;
    }
    k->base.errors++;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        k->base.connected = 0;
    int64_t now = pgf_pgtime_now();
    if (now - k->last_broker_warn_us >= 10000000) {
        k->last_broker_warn_us = now;
        pgf_warn("kafka: %s (%s); retrying", reason, rd_kafka_err2name((rd_kafka_resp_err_t)err));
    }
}

/* Copies s into out, keeping only characters valid in a Kafka topic name. */
static size_t topic_chars(char *out, size_t room, const char *s)
{
    size_t n = 0;
    for (; *s && n + 1 < room; s++, n++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        out[n] = ok ? c : '_';
    }
    out[n] = '\0';
    return n;
}

/* Expands a topic template into out; returns 0, or -1 naming the bad placeholder in errbuf. */
static int expand_topic(const struct kafka_sink_config *cfg, const char *tmpl, const char *schema,
                        const char *table, char *out, size_t room, char *errbuf, size_t errlen)
{
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < room;) {
        if (*p != '{') {
            out[n++] = *p++;
            continue;
        }
        const char *close = strchr(p, '}');
        size_t len = close ? (size_t)(close - p - 1) : 0;
        const char *val = NULL;
        if (close && len == 6 && strncmp(p + 1, "prefix", 6) == 0) val = cfg->topic_prefix;
        else if (close && len == 8 && strncmp(p + 1, "database", 8) == 0) val = cfg->database;
        else if (close && len == 6 && strncmp(p + 1, "schema", 6) == 0) val = schema;
        else if (close && len == 5 && strncmp(p + 1, "table", 5) == 0) val = table;
        if (val == NULL) {
            snprintf(errbuf, errlen, "topic template '%s' has an unknown placeholder at '%s'; allowed: "
                                     "{prefix}, {database}, {schema}, {table}", tmpl, p);
            return -1;
        }
        n += topic_chars(out + n, room - n, val);
        p = close + 1;
    }
    out[n] = '\0';
    if (n == 0) {
        snprintf(errbuf, errlen, "topic template '%s' expands to an empty topic name", tmpl);
        return -1;
    }
    return 0;
}

/* Returns the cached topic of a relation, creating it on first use; NULL with errstr set. */
static struct ktopic *topic_for(struct kafka_sink *k, const struct pgo_relation *rel)
{
    for (size_t i = 0; i < k->ntopics; i++) {
        struct ktopic *t = &k->topics[i];
        /* A renamed table arrives as a new Relation message with the same OID. */
        if (t->oid == rel->oid && strcmp(t->nspname, rel->nspname) == 0 && strcmp(t->relname, rel->relname) == 0)
            return t;
    }
    char name[256];
    if (expand_topic(&k->cfg, k->cfg.topic_template, rel->nspname, rel->relname, name, sizeof name,
                     k->base.errstr, sizeof k->base.errstr))
        return NULL;
    if (k->ntopics == k->topics_cap) {
        size_t ncap = k->topics_cap ? k->topics_cap * 2 : 16;
        struct ktopic *n = realloc(k->topics, ncap * sizeof *n);
        if (n == NULL) {
            sink_fail(&k->base, "out of memory");
            return NULL;
        }
        k->topics = n;
        k->topics_cap = ncap;
    }
    struct ktopic *t = &k->topics[k->ntopics];
    memset(t, 0, sizeof *t);
    t->oid = rel->oid;
    t->nspname = strdup(rel->nspname);
    t->relname = strdup(rel->relname);
    t->rkt = rd_kafka_topic_new(k->rk, name, NULL);
    if (!t->nspname || !t->relname || !t->rkt) {
        free(t->nspname);
        free(t->relname);
        sink_fail(&k->base, "cannot create topic handle %s: %s", name, rd_kafka_err2str(rd_kafka_last_error()));
        return NULL;
    }
    k->ntopics++;
    pgf_info("kafka: %s.%s -> topic %s", rel->nspname, rel->relname, name);
    return t;
}

/* Returns the topic's partition count from broker metadata (cached), or 0 if unknown. */
static int topic_partitions(struct kafka_sink *k, struct ktopic *t)
{
    if (t->partitions > 0)
        return t->partitions;
    /* A topic auto-created by this run's first record may take a few seconds to appear in
     * metadata; a truncate is rare, so waiting here (up to ~10 s) is cheaper than losing order. */
    for (int attempt = 0; attempt < 40 && t->partitions <= 0; attempt++) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(k->rk, 0, t->rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
            md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0)
            t->partitions = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (t->partitions <= 0)
            rd_kafka_poll(k->rk, 250); /* serves delivery reports while we wait */
    }
    return t->partitions;
}

/* Produces one record into the open transaction; value may be NULL (a tombstone).
 * Waits out a full local queue by serving delivery reports.  Returns 0 or -1. */
static int produce(struct kafka_sink *k, rd_kafka_topic_t *rkt, int32_t partition, const void *value,
                   size_t value_len, const void *key, size_t key_len, const struct pgf_event *ev)
{
    char lsn[PGF_LSN_BUFSZ], xid[16], table[256];
    const char *op = pgf_op_name(pgf_op_of(ev->msg));
    if (value == NULL)
        op = "tombstone";
    pgf_lsn_format(ev->lsn, lsn);
    snprintf(xid, sizeof xid, "%" PRIu32, ev->txn ? ev->txn->xid : 0);
    table[0] = '\0';
    if (ev->msg->type == PGO_MSG_INSERT || ev->msg->type == PGO_MSG_UPDATE || ev->msg->type == PGO_MSG_DELETE) {
        snprintf(table, sizeof table, "%s.%s", ev->msg->u.change.rel->nspname, ev->msg->u.change.rel->relname);
    } else if (ev->msg->type == PGO_MSG_TRUNCATE) {
        size_t n = 0;
        for (uint32_t i = 0; i < ev->msg->u.truncate.nrelids && n < sizeof table; i++) {
            const struct pgo_relation *r = ev->msg->u.truncate.rels[i];
            n += (size_t)snprintf(table + n, sizeof table - n, "%s%s.%s", i ? "," : "", r->nspname, r->relname);
        }
    }
    uint64_t seq = k->ring.tail - 1;
    for (;;) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
        rd_kafka_header_add(hdrs, "op", -1, op, -1);
        rd_kafka_header_add(hdrs, "table", -1, table, -1);
        rd_kafka_header_add(hdrs, "lsn", -1, lsn, -1);
        rd_kafka_header_add(hdrs, "xid", -1, xid, -1);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)seq), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        rd_kafka_headers_destroy(hdrs); /* only a successful produce takes ownership */
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return sink_fail(&k->base, "cannot produce to topic %s: %s", rd_kafka_topic_name(rkt),
                             rd_kafka_err2str(err));
        /* Our byte bound normally stops reading first; this is the last line of defence. */
        rd_kafka_poll(k->rk, 100);
    }
    txn_at(k, seq)->pending++;
    k->base.inflight_msgs++;
    k->base.inflight_bytes += value_len + key_len + KAFKA_RECORD_OVERHEAD;
    return 0;
}

/* Encodes and produces one change; see sink_ops. */
static int kafka_emit(struct sink *sink, const struct pgf_event *ev)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    if (k->failure[0])
        return sink_fail(sink, "%s", k->failure);
    if (!k->open && txn_open(k))
        return sink_fail(sink, "out of memory");
    const uint8_t *value, *key;
    size_t value_len, key_len;
    if (pgf_proto_encode(k->proto, ev, k->txn_index++, &value, &value_len, &key, &key_len))
        return sink_fail(sink, "out of memory encoding an event");
    enum pgf_op op = pgf_op_of(ev->msg);
    if (op == PGF_OP_MESSAGE)
        return produce(k, k->msg_rkt, RD_KAFKA_PARTITION_UA, value, value_len, ev->msg->u.message.prefix,
                       strlen(ev->msg->u.message.prefix), ev);
    if (op == PGF_OP_TRUNCATE) {
        /* To every partition of every truncated table's topic, so each partition's consumers
         * see it in order with that partition's rows. */
        const struct pgo_truncate *t = &ev->msg->u.truncate;
        for (uint32_t i = 0; i < t->nrelids; i++) {
            struct ktopic *kt = topic_for(k, t->rels[i]);
            if (kt == NULL)
                return -1;
            int parts = topic_partitions(k, kt);
            if (parts <= 0) {
                pgf_warn("kafka: no partition count for topic %s; truncate goes to one partition",
                         rd_kafka_topic_name(kt->rkt));
                if (produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, value, value_len, NULL, 0, ev))
                    return -1;
                continue;
            }
            for (int p = 0; p < parts; p++)
                if (produce(k, kt->rkt, p, value, value_len, NULL, 0, ev))
                    return -1;
        }
        return 0;
    }
    struct ktopic *kt = topic_for(k, ev->msg->u.change.rel);
    if (kt == NULL)
        return -1;
    /* The key buffer is reused by the next encode; produce copies it (RD_KAFKA_MSG_F_COPY). */
    if (produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, value, value_len, key_len ? key : NULL, key_len, ev))
        return -1;
    if (op == PGF_OP_DELETE && k->cfg.tombstones && key_len > 0)
        return produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, NULL, 0, key, key_len, ev);
    return 0;
}

/* Closes the open transaction entry; its ack comes with the last delivery report. */
static int kafka_commit(struct sink *sink, const struct pgf_txn *txn)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    if (!k->open && txn_open(k)) /* a transaction with no rows for us still needs its place */
        return sink_fail(sink, "out of memory");
    struct ktxn *t = txn_ring_at(&k->ring, k->ring.tail - 1);
    t->h.end_lsn = txn->end_lsn;
    t->h.committed = 1;
    t->commit_time = txn->commit_time;
    k->open = 0;
    txn_advance(k);
    return 0;
}

/* Serves delivery reports without blocking; drains the wake pipe first so none is missed. */
static int kafka_poll(struct sink *sink)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    char drain[64];
    while (read(sink->wake_fd, drain, sizeof drain) > 0)
        ;
    rd_kafka_poll(k->rk, 0);
    txn_advance(k);
    if (k->failure[0])
        return sink_fail(sink, "%s", k->failure);
    return 0;
}

/* Waits up to timeout_ms for every committed transaction to be acked. */
static int kafka_flush(struct sink *sink, int timeout_ms)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    int64_t deadline = pgf_pgtime_now() + (int64_t)timeout_ms * 1000;
    /* An unfinished transaction (after an error mid-way) can never be acked: stop there. */
    while (k->ring.head < k->ring.tail && txn_at(k, k->ring.head)->committed && !k->failure[0] && pgf_pgtime_now() < deadline) {
        rd_kafka_poll(k->rk, 100);
        txn_advance(k);
    }
    if (k->failure[0])
        return sink_fail(sink, "%s", k->failure);
    if (k->ring.head < k->ring.tail && txn_at(k, k->ring.head)->committed) {
        sink_fail(sink, "%zu records still unacknowledged after %d ms; they were not confirmed and "
                        "will be replayed on restart",
                  sink->inflight_msgs, timeout_ms);
        return 1;
    }
    return 0;
}

/* Purges what is still queued (it is not confirmed, so a restart replays it) and frees all. */
static void kafka_close(struct sink *sink)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    if (k->rk) {
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(k->rk, 0);
        for (size_t i = 0; i < k->ntopics; i++) {
            rd_kafka_topic_destroy(k->topics[i].rkt);
            free(k->topics[i].nspname);
            free(k->topics[i].relname);
        }
        if (k->msg_rkt)
            rd_kafka_topic_destroy(k->msg_rkt);
        if (k->mainq)
            rd_kafka_queue_destroy(k->mainq);
        rd_kafka_destroy(k->rk);
    }
    if (sink->wake_fd >= 0)
        close(sink->wake_fd);
    if (k->pipe_wr >= 0)
        close(k->pipe_wr);
    pgf_proto_free(k->proto);
    free(k->topics);
    txn_ring_free(&k->ring);
    free(k);
}

static const struct sink_ops kafka_ops = {
    .name = "kafka",
    .emit = kafka_emit,
    .commit = kafka_commit,
    .poll = kafka_poll,
    .flush = kafka_flush,
    .close = kafka_close,
};

/* Sets one librdkafka property; on failure names the key but never echoes the value,
 * which may be a password. */
static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *errbuf, size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(conf, key, val, why, sizeof why) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errlen, "invalid Kafka setting '%s': %s", key, why);
        return -1;
    }
    return 0;
}

/* Builds the producer configuration: our safe defaults first, the user's settings last. */
static rd_kafka_conf_t *make_conf(struct kafka_sink *k, const struct kafka_sink_config *cfg, char *errbuf,
                                  size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static const char *const defaults[][2] = {
        {"enable.idempotence", "true"}, /* retries cannot duplicate or reorder within a partition */
        {"acks", "all"},
        {"message.timeout.ms", "0"},    /* never give up on a record: back-pressure instead of loss */
        {"linger.ms", "10"},
        {"compression.codec", "lz4"},
        {"queue.buffering.max.messages", "1000000"},
        {"queue.buffering.max.kbytes", "1048576"},
        {"client.id", "pgfanout"},
    };
    for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
        if (conf_set(conf, defaults[i][0], defaults[i][1], errbuf, errlen))
            goto fail;
    if (cfg->brokers && conf_set(conf, "bootstrap.servers", cfg->brokers, errbuf, errlen))
        goto fail;
    for (size_t i = 0; i < cfg->nconf; i++) {
        const char *eq = strchr(cfg->conf[i], '=');
        if (eq == NULL || eq == cfg->conf[i]) {
            snprintf(errbuf, errlen, "invalid --kafka-conf '%.*s...': expected key=value",
                     (int)(eq ? eq - cfg->conf[i] : 20), cfg->conf[i]);
            goto fail;
        }
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - cfg->conf[i]), cfg->conf[i]);
        if (conf_set(conf, key, eq + 1, errbuf, errlen))
            goto fail;
    }
    char val[16];
    size_t vlen = sizeof val;
    if (rd_kafka_conf_get(conf, "enable.idempotence", val, &vlen) == RD_KAFKA_CONF_OK && strcmp(val, "true") != 0)
        pgf_warn("kafka: enable.idempotence is off; retries may duplicate or reorder records");
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* Opens the sink; see sink.h. */
struct sink *kafka_sink_open(const struct kafka_sink_config *cfg, char *errbuf, size_t errlen)
{
    struct kafka_sink *k = calloc(1, sizeof *k);
    if (k == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    k->base.ops = &kafka_ops;
    k->base.wake_fd = -1;
    k->pipe_wr = -1;
    k->cfg = *cfg;
    k->proto = pgf_proto_new(cfg->database ? cfg->database : "");
    k->base.latency = &k->latency;
    k->base.connected = 1; /* until librdkafka says every broker is down */
    if (txn_ring_init(&k->ring, sizeof(struct ktxn)) != 0 || k->proto == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        kafka_close(&k->base);
        return NULL;
    }
    /* Check both templates now, so a typo fails at start, not at the first change. */
    char name[256];
    if (expand_topic(cfg, cfg->topic_template, "s", "t", name, sizeof name, errbuf, errlen) ||
        expand_topic(cfg, cfg->message_topic, "", "", name, sizeof name, errbuf, errlen)) {
        kafka_close(&k->base);
        return NULL;
    }
    rd_kafka_conf_t *conf = make_conf(k, cfg, errbuf, errlen);
    if (conf == NULL) {
        kafka_close(&k->base);
        return NULL;
    }
    char why[512];
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (k->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        snprintf(errbuf, errlen, "cannot create the Kafka producer: %s", why);
        kafka_close(&k->base);
        return NULL;
    }
    k->msg_rkt = rd_kafka_topic_new(k->rk, name, NULL);
    /* librdkafka writes a byte to this pipe when delivery reports wait on its main queue, so
     * the event loop wakes for acks instead of polling on a timer. */
    int fds[2];
    if (k->msg_rkt == NULL || pipe(fds) != 0) {
        snprintf(errbuf, errlen, "cannot set up the Kafka producer: %s", strerror(errno));
        kafka_close(&k->base);
        return NULL;
    }
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    k->base.wake_fd = fds[0];
    k->pipe_wr = fds[1];
    k->mainq = rd_kafka_queue_get_main(k->rk);
    rd_kafka_queue_io_event_enable(k->mainq, k->pipe_wr, "1", 1);
    return &k->base;
}

/* Checks the settings without creating a producer; see sink.h. */
int kafka_sink_check(const struct kafka_sink_config *cfg, char *errbuf, size_t errlen)
{
    char name[256];
    if (expand_topic(cfg, cfg->topic_template, "s", "t", name, sizeof name, errbuf, errlen) ||
        expand_topic(cfg, cfg->message_topic, "", "", name, sizeof name, errbuf, errlen))
        return -1;
    struct kafka_sink *k = calloc(1, sizeof *k);
    if (k == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    rd_kafka_conf_t *conf = make_conf(k, cfg, errbuf, errlen);
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(k);
    return conf ? 0 : -1;
}
