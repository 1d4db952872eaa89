/* kafka_sink.c - protobuf events to Kafka with an idempotent librdkafka producer.
 *
 * Each transaction gets an entry in an ordered ring and counts its records still in flight;
 * the delivery report counts them down.  acked_lsn moves only across a prefix of fully
 * delivered transactions, so the slot never passes a record Kafka has not acknowledged
 * (the lesson of Bottled Water).  A failed delivery is never counted as an ack.
 *
 * A record too large for Kafka (over the producer's message.max.bytes, refused at produce
 * time, or over the topic's max.message.bytes, rejected in the delivery report) goes by
 * kafka.on_oversize: fail, dead_letter (a small JSON record naming it takes its place in the
 * transaction's count, so the transaction is acked only once that record is) or skip.
 *
 * With kafka.exactly_once the producer is transactional.  Each Kafka transaction holds whole
 * PostgreSQL transactions (a larger one is split) and, last, a checkpoint record in the state
 * topic: the end LSN of the last whole PostgreSQL transaction in Kafka, and for a split one its
 * commit LSN and how many of its changes are in.  Every PostgreSQL transaction in a Kafka
 * transaction holds one more "pending" (its token) until that Kafka transaction commits, so
 * the slot is confirmed only past what read_committed consumers can see.  After a restart the
 * checkpoint says what to skip.  Commit and abort wait for the brokers, so they run on a thread
 * (kafka_txn.c); records that come meanwhile are held, in order, for the next transaction. */
#include "sinks/kafka_sink.h"

#include "sinks/kafka_conf.h"
#include "sinks/kafka_txn.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/lsn.h"
#include "decoders/event.h"
#include "sinks/proto_event.h"
#include "sinks/sink.h"
#include "sinks/txn_ring.h"
#include "common/histogram.h"

/* What librdkafka holds per queued record beyond its key and value (message struct, headers,
 * batching), measured at about 600 bytes with our four headers.  Counting it makes
 * --max-inflight-bytes bound real memory, not just payload. */
#define KAFKA_RECORD_OVERHEAD 640


/* A partition count looked up for a truncate.  rd_kafka_metadata is librdkafka's only way to
 * ask (2.0.2 has no asynchronous one), and it waits for the broker, so it runs on a thread of
 * its own that touches nothing but this struct and says it is done through the wake pipe: the
 * loop never waits for a slow broker's metadata. */
struct lookup {
    pthread_t thread;
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    int wake_fd;
    atomic_int partitions; /* 0 until found; -1 when none came in time */
    atomic_int cancel;
};

/* What the sink knows of one of its topics, as the topic handle's opaque. */
struct tstate {
    int held;              /* records of the topic in the held queue */
    int partitions;        /* 0 until a truncate needs it; -1 when it could not be found */
    struct lookup *lookup; /* under way, or NULL */
    unsigned blocked_pass; /* the held queue's pass in which a record of the topic had to stay */
};

/* A relation's topic, cached so the template is expanded once per relation. */
struct ktopic {
    uint32_t oid;
    char *nspname, *relname;
    rd_kafka_topic_t *rkt;
};

/* Marks a held truncate that goes to every partition of its topic. */
#define HELD_ALL_PARTITIONS (-100)

/* A record not handed to librdkafka yet, kept in the order found: a dead-letter record (so
 * the delivery callback never waits for queue room), any record while librdkafka's queue is
 * full (back-pressure instead of waiting), and a topic's records behind a truncate whose
 * partition count is being looked up (the truncate goes to every partition, before what
 * follows it).  Counted in flight from the moment it is held. */
struct held {
    struct held *next;
    uint64_t seq;             /* the transaction whose ack waits for this record */
    rd_kafka_topic_t *rkt;
    int32_t partition;        /* RD_KAFKA_PARTITION_UA, one partition, or HELD_ALL_PARTITIONS */
    int32_t next_partition;   /* with HELD_ALL_PARTITIONS: the first one not produced yet */
    rd_kafka_headers_t *hdrs;
    char *value;              /* malloc'd, or NULL for a tombstone */
    size_t value_len, key_len;
    unsigned char key[];
};

struct kafka_sink {
    struct sink base;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int pipe_wr;
    struct kafka_sink_config cfg;
    struct pgf_proto *proto;
    /* kafka.format debezium-json: the encoder, the update whose key change is being written
     * as a delete and an insert, the record being produced (its key-change header), and this
     * run's id (Debezium's runId header). */
    struct pgf_dbz *dbz;
    const struct pgf_event *moved;
    const struct pgf_dbz_record *dbz_rec;
    char run_id[37];

    struct txn_ring ring; /* one txn_head per transaction; pending counts records in flight */
    int open; /* ring.tail - 1 is the transaction being emitted */
    uint32_t txn_index;

    struct ktopic *topics;
    size_t ntopics, topics_cap;
    rd_kafka_topic_t *msg_rkt;
    rd_kafka_topic_t *dl_rkt;      /* the dead-letter topic, with on_oversize dead_letter */
    struct held *held_head, **held_tail;
    unsigned held_pass;
    int queue_full;                /* librdkafka refused a record for want of room: hold the rest */
    size_t max_msg_bytes;          /* the producer's message.max.bytes */
    size_t batch_limit;            /* min(batch.size, message.max.bytes): a record this large
                                    * always travels in a batch of its own */
    uint64_t oversize_dead_lettered, oversize_skipped;

    char failure[SINK_ERRSTR_SIZE]; /* the first delivery failure, set from the delivery callback */
    size_t failure_size; /* when failure names a record too large for Kafka, its size */
    struct pgf_hist latency;
    int64_t last_broker_warn_us;

    /* exactly-once (cfg.exactly_once): */
    struct kafka_txn_worker *txw;
    pthread_t loop_thread;         /* callbacks served elsewhere (a commit's flush) are deferred */
    pthread_mutex_t deferred_mu;
    int deferred_err;
    char deferred_reason[512];
    rd_kafka_topic_t *state_rkt;   /* where each Kafka transaction writes its checkpoint */
    int eo_in_txn;                 /* begin_transaction done: records go into it */
    int eo_committing;             /* the worker commits or aborts: records are held */
    int eo_aborting;
    int eo_txn_timeout_ms;         /* transaction.timeout.ms */
    int eo_closing;                /* committing, but the commit waits for every delivery */
    char eo_ckpt[256];             /* the closing transaction's checkpoint document */
    uint64_t eo_records, eo_bytes; /* in the open Kafka transaction */
    int64_t eo_began_us;
    uint64_t eo_gen;               /* the Kafka transaction records go to now (1, 2, ...) */
    uint64_t eo_done_gen;          /* the last one committed */
    uint64_t eo_end;               /* end LSN of the last whole PostgreSQL transaction written */
    /* the PostgreSQL transaction being emitted: */
    uint64_t eo_cur_commit;        /* its commit LSN */
    uint64_t eo_cur_events;        /* its events so far, skipped ones included */
    uint64_t eo_skip_events;       /* its first events Kafka already holds */
    int eo_skip_all;
    /* what Kafka held at startup (kafka_sink_resume): */
    /* The one PostgreSQL transaction Kafka holds only part of (split, or cut off by a lost
     * connection): its commit LSN and how many of its events are written; 0 when none.  It
     * outlives replays of earlier transactions and is cleared once the transaction ends. */
    uint64_t eo_part_commit, eo_part_events;
    uint64_t eo_commits, eo_splits, eo_skipped;
};

/* One transaction in the ring: pending counts its records in flight. */
struct ktxn {
    struct txn_head h;
    uint64_t commit_lsn; /* for naming a record the broker rejects (the headers lack it) */
    /* exactly-once: eo_gen is the Kafka transaction its last record went to, or goes to when
     * held (none starts committing while records are held, so held ones go to the open one);
     * eo_token holds an ack back until that transaction commits. */
    uint64_t eo_gen;
    int eo_held;
    int eo_token;
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
        int64_t age;
        /* pgf_pgtime_age refuses an infinite commit time, which is no latency. */
        if (t->h.commit_time != 0 && t->h.end_lsn != 0 && pgf_pgtime_age(pgf_pgtime_now(), t->h.commit_time, &age) == 0)
            pgf_hist_record(&k->latency, age);
        txn_ring_pop(&k->ring, &k->base.acked_lsn);
    }
    k->base.pending_since = txn_ring_pending_since(&k->ring);
}

static int eo_can_produce(struct kafka_sink *k);
static void eo_count(struct kafka_sink *k, size_t bytes);
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque);

/* What is known of a record too large for Kafka: from the change when the producer refuses
 * it, from the delivery report and its headers when the broker rejects it. */
struct oversize {
    const char *topic;
    char op[16], table[256], lsn[PGF_LSN_BUFSZ], xid[16];
    uint64_t commit_lsn; /* 0 when unknown or not in a transaction */
    const void *key;
    size_t key_len, value_len;
    int by_broker; /* 1: rejected in the delivery report, and still counted in its transaction */
    rd_kafka_resp_err_t err;
};

/* Writes which record o is (table, LSN, transaction, printable key, size, topic) into out. */
static void oversize_what(const struct oversize *o, char *out, size_t room)
{
    char key[200], commit[PGF_LSN_BUFSZ] = "none";
    pgf_proto_key_text(o->key, o->key_len, strcmp(o->op, "message") != 0, key, sizeof key);
    if (o->commit_lsn)
        pgf_lsn_format(o->commit_lsn, commit);
    snprintf(out, room, "table %s, %s at LSN %s (xid %s, commit LSN %s), key %s, %zu bytes (value %zu + key %zu), "
                        "topic %s",
             o->table[0] ? o->table : "(none)", o->op, o->lsn, o->xid, commit, key, o->value_len + o->key_len,
             o->value_len, o->key_len, o->topic);
}

/* Writes the two settings to raise for record o into out, both named even when the
 * producer's already allows the record.  The figure suggested leaves 1 KiB over the record
 * for its headers and the batch framing both limits also count. */
static void oversize_limits(const struct kafka_sink *k, const struct oversize *o, char *out, size_t room)
{
    size_t need = o->value_len + o->key_len + 1024;
    if (k->max_msg_bytes < need)
        snprintf(out, room, "raise both the producer's message.max.bytes (now %zu; --kafka-conf message.max.bytes=N "
                            "or kafka.conf) and topic %s's max.message.bytes (a topic config on the broker) to at "
                            "least %zu",
                 k->max_msg_bytes, o->topic, need);
    else
        snprintf(out, room, "raise topic %s's max.message.bytes (a topic config on the broker) to at least %zu; the "
                            "producer's message.max.bytes (now %zu; --kafka-conf message.max.bytes=N or kafka.conf) "
                            "already allows it",
                 o->topic, need, k->max_msg_bytes);
}

/* The sink's state of topic rkt. */
static struct tstate *tstate_of(rd_kafka_topic_t *rkt)
{
    return rd_kafka_topic_opaque(rkt);
}

/* Creates a topic handle carrying a fresh tstate; NULL when out of memory or refused. */
static rd_kafka_topic_t *topic_new(struct kafka_sink *k, const char *name)
{
    struct tstate *ts = calloc(1, sizeof *ts);
    rd_kafka_topic_conf_t *tc = ts ? rd_kafka_topic_conf_new() : NULL;
    if (tc == NULL) {
        free(ts);
        return NULL;
    }
    rd_kafka_topic_conf_set_opaque(tc, ts);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(k->rk, name, tc); /* takes tc, also on failure */
    if (rkt == NULL)
        free(ts);
    return rkt;
}

/* Stops a partition lookup's thread (it ends within a second) and frees it. */
static void lookup_end(struct lookup *l)
{
    if (l == NULL)
        return;
    atomic_store(&l->cancel, 1);
    pthread_join(l->thread, NULL);
    free(l);
}

/* Destroys a topic handle and its tstate (ending a lookup under way). */
static void topic_destroy(rd_kafka_topic_t *rkt)
{
    if (rkt == NULL)
        return;
    struct tstate *ts = tstate_of(rkt);
    if (ts)
        lookup_end(ts->lookup);
    free(ts);
    rd_kafka_topic_destroy(rkt);
}

/* Holds a record (see struct held), copying value and key and taking hdrs; counts it in
 * flight (and, when count_pending, in transaction seq's pending).  Returns 0, or -1 when out
 * of memory (hdrs are then the caller's). */
static int hold(struct kafka_sink *k, uint64_t seq, rd_kafka_topic_t *rkt, int32_t partition, char *value,
                size_t value_len, const void *key, size_t key_len, rd_kafka_headers_t *hdrs, int count_pending)
{
    struct held *h = malloc(sizeof *h + key_len);
    if (h == NULL)
        return -1;
    h->next = NULL;
    h->seq = seq;
    h->rkt = rkt;
    h->partition = partition;
    h->next_partition = 0;
    h->hdrs = hdrs;
    h->value = value;
    h->value_len = value_len;
    h->key_len = key_len;
    if (key_len)
        memcpy(h->key, key, key_len);
    *k->held_tail = h;
    k->held_tail = &h->next;
    tstate_of(rkt)->held++;
    if (count_pending)
        txn_at(k, seq)->pending++;
    if (k->cfg.exactly_once && seq >= k->ring.head && seq < k->ring.tail) {
        ((struct ktxn *)txn_at(k, seq))->eo_held++;
        ((struct ktxn *)txn_at(k, seq))->eo_gen = k->eo_gen;
    }
    k->base.inflight_msgs++;
    k->base.inflight_bytes += value_len + key_len + KAFKA_RECORD_OVERHEAD;
    return 0;
}

/* Hands one held record (or, for a truncate, its next partitions) to librdkafka.  Returns
 * 1 when it is all out, 0 when librdkafka's queue is full, -1 with k->failure set. */
static int produce_held(struct kafka_sink *k, struct held *h)
{
    struct tstate *ts = tstate_of(h->rkt);
    int32_t first = h->partition, last = h->partition;
    if (h->partition == HELD_ALL_PARTITIONS) {
        /* Without a partition count (none came in time) it goes to one partition, as said. */
        first = ts->partitions > 0 ? h->next_partition : RD_KAFKA_PARTITION_UA;
        last = ts->partitions > 0 ? ts->partitions - 1 : RD_KAFKA_PARTITION_UA;
    }
    for (int32_t p = first; p <= last; p++) {
        /* A truncate's copies after the first share its headers: each produce takes a copy. */
        rd_kafka_headers_t *hdrs = p == last ? h->hdrs : rd_kafka_headers_copy(h->hdrs);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            k->rk, RD_KAFKA_V_RKT(h->rkt), RD_KAFKA_V_PARTITION(p), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_VALUE(h->value, h->value_len), RD_KAFKA_V_KEY(h->key_len ? h->key : NULL, h->key_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE((void *)(uintptr_t)h->seq), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR && p != last)
            rd_kafka_headers_destroy(hdrs);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return 0;
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (!k->failure[0])
                snprintf(k->failure, sizeof k->failure,
                         "cannot produce to topic %s: %s; the slot is not confirmed past its transaction, a "
                         "restart retries it", rd_kafka_topic_name(h->rkt), rd_kafka_err2str(err));
            return -1;
        }
        if (p == last)
            h->hdrs = NULL; /* the last produce took them */
        if (k->cfg.exactly_once) {
            eo_count(k, h->value_len + h->key_len);
            if (h->seq >= k->ring.head && h->seq < k->ring.tail) {
                struct ktxn *t = (struct ktxn *)txn_at(k, h->seq);
                t->eo_gen = k->eo_gen;
                if (p == last && t->eo_held > 0)
                    t->eo_held--;
            }
        }
        if (h->partition == HELD_ALL_PARTITIONS && p != first) {
            /* The hold counted one copy; each further partition is another record. */
            txn_at(k, h->seq)->pending++;
            k->base.inflight_msgs++;
            k->base.inflight_bytes += h->value_len + h->key_len + KAFKA_RECORD_OVERHEAD;
        }
        h->next_partition = p + 1;
    }
    return 1;
}

/* Hands held records to librdkafka in order, never one of a topic before an earlier one of
 * the same topic; a topic waiting for its partition count keeps its records while the others
 * go.  Stops without waiting when librdkafka's queue is full (the next poll goes on).
 * Returns 0, or -1 with k->failure set. */
static int drain_held(struct kafka_sink *k)
{
    if (k->held_head && (k->failure[0] || !eo_can_produce(k)))
        return k->failure[0] ? -1 : 0; /* a Kafka transaction commits: they wait for the next */
    unsigned pass = ++k->held_pass;
    int full = 0;
    struct held **pp = &k->held_head;
    while (*pp && !full) {
        struct held *h = *pp;
        struct tstate *ts = tstate_of(h->rkt);
        if (ts->blocked_pass == pass || (h->partition == HELD_ALL_PARTITIONS && ts->partitions == 0)) {
            ts->blocked_pass = pass;
            pp = &h->next;
            continue;
        }
        int rc = produce_held(k, h);
        if (rc < 0)
            return -1;
        if (rc == 0) {
            full = 1;
            break;
        }
        ts->held--;
        *pp = h->next;
        free(h->value);
        free(h);
    }
    k->held_tail = &k->held_head;
    while (*k->held_tail)
        k->held_tail = &(*k->held_tail)->next;
    k->queue_full = full;
    k->base.backlogged = full;
    return 0;
}

/* --- exactly-once --------------------------------------------------------------------- */

/* How long a commit or abort may take, retries included, before it counts as failed. */
#define EO_CALL_TIMEOUT_MS 60000

/* Opens a Kafka transaction unless one is open or committing; returns 0, or -1 with the
 * failure set. */
static int eo_begin(struct kafka_sink *k)
{
    if (k->eo_in_txn || k->eo_committing)
        return 0;
    rd_kafka_error_t *e = rd_kafka_begin_transaction(k->rk);
    if (e) {
        if (!k->failure[0])
            snprintf(k->failure, sizeof k->failure, "cannot begin a Kafka transaction: %s",
                     rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return -1;
    }
    k->eo_in_txn = 1;
    k->eo_records = k->eo_bytes = 0;
    k->eo_began_us = pgf_pgtime_now();
    return 0;
}

/* True when records may go to librdkafka now: always without exactly-once; with it, while a
 * Kafka transaction is open (one is begun here when none is and none is committing). */
static int eo_can_produce(struct kafka_sink *k)
{
    if (!k->cfg.exactly_once)
        return 1;
    return eo_begin(k) == 0 && k->eo_in_txn;
}

/* Counts a record produced into the open Kafka transaction. */
static void eo_count(struct kafka_sink *k, size_t bytes)
{
    k->eo_records++;  /* produced now, so into the open Kafka transaction */
    k->eo_bytes += bytes;
}

/* Writes the checkpoint document: what read_committed consumers hold once the open Kafka
 * transaction commits.  partial: the transaction being emitted is split here. */
static int eo_checkpoint_json(const struct kafka_sink *k, char *out, size_t room)
{
    char end[PGF_LSN_BUFSZ], pc[PGF_LSN_BUFSZ];
    pgf_lsn_format(k->eo_end, end);
    if (k->eo_part_commit)
        return snprintf(out, room, "{\"version\":1,\"system_id\":\"%s\",\"end_lsn\":\"%s\",\"partial\":"
                        "{\"commit_lsn\":\"%s\",\"events\":%" PRIu64 "}}", k->cfg.system_id ? k->cfg.system_id : "",
                        end, pgf_lsn_format(k->eo_part_commit, pc), k->eo_part_events);
    return snprintf(out, room, "{\"version\":1,\"system_id\":\"%s\",\"end_lsn\":\"%s\",\"partial\":null}",
                    k->cfg.system_id ? k->cfg.system_id : "", end);
}

/* Closes the open Kafka transaction: from now on records are held for the next one; its
 * checkpoint (what it holds, as of now) is written and the commit asked once librdkafka has
 * reported every record (eo_commit_ready).  Returns 0. */
static int eo_commit_start(struct kafka_sink *k)
{
    eo_checkpoint_json(k, k->eo_ckpt, sizeof k->eo_ckpt);
    k->eo_gen++; /* what comes now goes to the next one */
    k->eo_in_txn = 0;
    k->eo_committing = k->eo_closing = 1;
    if (k->eo_part_commit)
        k->eo_splits++;
    return 0;
}

/* Asks for the commit of the closing transaction once librdkafka holds nothing of it any more,
 * checkpoint last.  Waiting for that keeps the commit's own flush from serving delivery
 * reports (which count acks) on the worker's thread.  Returns 0, or -1 with the failure set. */
static int eo_commit_ready(struct kafka_sink *k)
{
    if (!k->eo_closing || rd_kafka_outq_len(k->rk) > 0)
        return 0;
    k->eo_closing = 0;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        k->rk, RD_KAFKA_V_RKT(k->state_rkt), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE(k->eo_ckpt, strlen(k->eo_ckpt)),
        RD_KAFKA_V_KEY(k->cfg.checkpoint_key, strlen(k->cfg.checkpoint_key)), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (!k->failure[0])
            snprintf(k->failure, sizeof k->failure, "cannot write the exactly-once checkpoint to topic %s: %s",
                     rd_kafka_topic_name(k->state_rkt), rd_kafka_err2str(err));
        return -1;
    }
    if (kafka_txn_worker_ask(k->txw, KAFKA_TXN_COMMIT, EO_CALL_TIMEOUT_MS) != 0) {
        snprintf(k->failure, sizeof k->failure, "internal error: a Kafka transaction call was already under way");
        return -1;
    }
    return 0;
}

/* Commits the open Kafka transaction when it is over its bounds, or, at a PostgreSQL commit
 * (boundary), when it is old enough or everything in it is delivered.  Returns 0 or -1. */
static int eo_maybe_commit(struct kafka_sink *k, int boundary)
{
    /* Never while records wait in the held queue: they belong to the open transaction. */
    if (!k->cfg.exactly_once || !k->eo_in_txn || k->eo_committing || k->eo_records == 0 || k->held_head ||
        k->failure[0])
        return 0;
    int full = k->eo_records >= k->cfg.txn_max_records || k->eo_bytes >= k->cfg.txn_max_bytes;
    int64_t age_us = pgf_pgtime_now() - k->eo_began_us;
    int old = age_us >= (int64_t)k->cfg.txn_max_ms * 1000;
    if (boundary && (full || old || k->base.inflight_msgs == 0))
        return eo_commit_start(k);
    /* Inside a PostgreSQL transaction only size splits it (a split costs consumers that
     * transaction's atomicity), or a pause long enough (a record key being looked up, a
     * truncate waiting for its partition count) to bring Kafka's transaction timeout near. */
    if (!boundary && (full || age_us >= (int64_t)k->eo_txn_timeout_ms * 500))
        return eo_commit_start(k);
    return 0;
}

/* Serves an error event that a commit's flush took on the transaction thread. */
static void eo_take_deferred(struct kafka_sink *k)
{
    pthread_mutex_lock(&k->deferred_mu);
    int err = k->deferred_err;
    char reason[sizeof k->deferred_reason];
    memcpy(reason, k->deferred_reason, sizeof reason);
    k->deferred_err = 0;
    pthread_mutex_unlock(&k->deferred_mu);
    if (err)
        on_error(k->rk, err, reason, k);
}

/* Takes the worker's outcome: after a commit, every PostgreSQL transaction in it may be
 * acked; after a failure, the sink fails (nothing of the Kafka transaction is acked, so a
 * restart writes it again, and the checkpoint keeps that from duplicating).  Returns 0 or -1. */
static int eo_reap(struct kafka_sink *k)
{
    rd_kafka_error_t *e = NULL;
    if (k->txw == NULL || !kafka_txn_worker_take(k->txw, &e))
        return 0;
    int aborting = k->eo_aborting;
    k->eo_committing = k->eo_aborting = 0;
    if (e == NULL && !aborting) {
        k->eo_done_gen = k->eo_gen - 1;
        for (uint64_t seq = k->ring.head; seq < k->ring.tail; seq++) {
            struct ktxn *t = (struct ktxn *)txn_at(k, seq);
            if (t->eo_token && t->eo_gen <= k->eo_done_gen && t->eo_held == 0) {
                t->eo_token = 0;
                t->h.pending--;
            }
        }
        k->eo_commits++;
        txn_advance(k);
        if (k->ring.head < k->ring.tail) {
            struct ktxn *h = (struct ktxn *)txn_at(k, k->ring.head);
            pgf_debug("kafka: committed transaction %" PRIu64 "; oldest unacked: pending %u, token %d, gen %" PRIu64
                      ", held %d, committed %d", k->eo_done_gen, (unsigned)h->h.pending, h->eo_token, h->eo_gen,
                      h->eo_held, h->h.committed);
        }
        return 0;
    }
    if (e && rd_kafka_error_txn_requires_abort(e) && !aborting) {
        pgf_warn("kafka: the transaction could not commit (%s); aborting it", rd_kafka_error_string(e));
        if (!k->failure[0])
            snprintf(k->failure, sizeof k->failure, "Kafka could not commit a transaction (%s); it was aborted, so "
                     "read_committed consumers never see it, and pgfanout stops without confirming it: a restart "
                     "writes it again", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        k->eo_committing = k->eo_aborting = 1;
        kafka_txn_worker_ask(k->txw, KAFKA_TXN_ABORT, EO_CALL_TIMEOUT_MS);
        return -1;
    }
    if (e && !k->failure[0]) {
        rd_kafka_resp_err_t code = rd_kafka_error_code(e);
        if (code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
            code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH)
            snprintf(k->failure, sizeof k->failure, "this pgfanout was fenced: another instance started with "
                     "transactional.id \"%s\" and writes the output now; this one stops without confirming anything "
                     "it did not commit (%s)", k->cfg.transactional_id, rd_kafka_error_string(e));
        else
            snprintf(k->failure, sizeof k->failure, "Kafka could not %s a transaction: %s; pgfanout stops without "
                     "confirming it, and a restart writes it again", aborting ? "abort" : "commit",
                     rd_kafka_error_string(e));
    }
    if (e)
        rd_kafka_error_destroy(e);
    return k->failure[0] ? -1 : 0;
}

/* Looks up a topic's partition count off the loop (see struct lookup).  A topic that this
 * run's first record auto-creates may take a few seconds to appear in metadata. */
static void *lookup_run(void *arg)
{
    struct lookup *l = arg;
    int found = -1;
    for (int attempt = 0; attempt < 40 && !atomic_load(&l->cancel); attempt++) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(l->rk, 0, l->rkt, &md, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
            md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0)
            found = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (found > 0)
            break;
        nanosleep(&(struct timespec){0, 250 * 1000000L}, NULL);
    }
    atomic_store(&l->partitions, found);
    ssize_t w = write(l->wake_fd, "m", 1); /* the loop reads the result in kafka_poll */
    (void)w;
    return NULL;
}

/* Starts looking up rkt's partition count, unless known or under way.  Returns 0, or -1 with
 * the reason in the sink's errstr. */
static int lookup_start(struct kafka_sink *k, rd_kafka_topic_t *rkt)
{
    struct tstate *ts = tstate_of(rkt);
    if (ts->partitions != 0 || ts->lookup)
        return 0;
    struct lookup *l = calloc(1, sizeof *l);
    if (l == NULL)
        return sink_fail(&k->base, "out of memory");
    l->rk = k->rk;
    l->rkt = rkt;
    l->wake_fd = k->pipe_wr;
    if (pthread_create(&l->thread, NULL, lookup_run, l) != 0) {
        free(l);
        return sink_fail(&k->base, "cannot start a thread to look up topic %s's partitions",
                         rd_kafka_topic_name(rkt));
    }
    ts->lookup = l;
    return 0;
}

/* Takes the results of finished partition lookups; returns 1 when one finished. */
static int lookups_reap(struct kafka_sink *k)
{
    int any = 0;
    for (size_t i = 0; i < k->ntopics; i++) {
        struct tstate *ts = tstate_of(k->topics[i].rkt);
        if (ts->lookup == NULL || atomic_load(&ts->lookup->partitions) == 0)
            continue;
        ts->partitions = atomic_load(&ts->lookup->partitions);
        lookup_end(ts->lookup);
        ts->lookup = NULL;
        any = 1;
        if (ts->partitions < 0)
            pgf_warn("kafka: no partition count for topic %s; truncate goes to one partition",
                     rd_kafka_topic_name(k->topics[i].rkt));
    }
    return any;
}

/* Holds a dead-letter record for o in transaction seq (see struct held); returns 0, or -1
 * with why set when out of memory. */
static int dead_letter(struct kafka_sink *k, const struct oversize *o, uint64_t seq, char *why, size_t whylen)
{
    char key[200], commit[PGF_LSN_BUFSZ] = "";
    pgf_proto_key_text(o->key, o->key_len, strcmp(o->op, "message") != 0, key, sizeof key);
    if (o->commit_lsn)
        pgf_lsn_format(o->commit_lsn, commit);
    json_t *obj = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:I}",
                            "table", o->table, "op", o->op, "key", key, "lsn", o->lsn, "commit_lsn", commit,
                            "database", k->cfg.database ? k->cfg.database : "", "xid",
                            (json_int_t)strtoll(o->xid, NULL, 10), "size", (json_int_t)(o->value_len + o->key_len),
                            "value_size", (json_int_t)o->value_len, "key_size", (json_int_t)o->key_len, "topic",
                            o->topic, "reason", rd_kafka_err2str(o->err), "rejected_by",
                            o->by_broker ? "broker" : "producer", "limit_setting",
                            o->by_broker ? "max.message.bytes" : "message.max.bytes", "message_max_bytes",
                            (json_int_t)k->max_msg_bytes);
    char *value = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
    rd_kafka_header_add(hdrs, "op", -1, o->op, -1);
    rd_kafka_header_add(hdrs, "table", -1, o->table, -1);
    rd_kafka_header_add(hdrs, "lsn", -1, o->lsn, -1);
    rd_kafka_header_add(hdrs, "xid", -1, o->xid, -1);
    if (value == NULL || hold(k, seq, k->dl_rkt, RD_KAFKA_PARTITION_UA, value, strlen(value), o->key, o->key_len,
                              hdrs, 0) != 0) {
        rd_kafka_headers_destroy(hdrs);
        free(value);
        snprintf(why, whylen, "cannot build the dead-letter record for table %s, LSN %s (out of memory, or a name "
                              "that is not UTF-8); the slot is not confirmed past its transaction",
                 o->table, o->lsn);
        return -1;
    }
    return 0;
}

/* Applies kafka.on_oversize to record o of transaction seq.  A record the broker rejected
 * still counts in seq's pending; one the producer refused does not.  A dead-letter record
 * takes over (or adds) that count, so seq is acked only once the dead-letter record is; a
 * skipped record gives it up.  Returns 0, or -1 with the failure in why. */
static int oversize(struct kafka_sink *k, const struct oversize *o, uint64_t seq, char *why, size_t whylen)
{
    char what[600], limits[300];
    oversize_what(o, what, sizeof what);
    oversize_limits(k, o, limits, sizeof limits);
    const char *by = o->by_broker ? "rejected by the broker" : "refused by the producer";
    k->base.errors++;
    /* The broker judges a whole batch and fails every record in it.  librdkafka's batch
     * writer adds no record to a batch that would grow past min(batch.size,
     * message.max.bytes), and none after one that already has, so only a record at least
     * batch_limit long is sure to have been alone: a smaller one may just have shared a
     * batch with a larger record, or with many others. */
    int alone = !o->by_broker || o->value_len + o->key_len >= k->batch_limit;
    if (!alone) {
        char batch[400];
        snprintf(batch, sizeof batch, " The broker judges a whole batch, and this record is under the producer's "
                                      "batch limit of %zu bytes (batch.size, message.max.bytes), so it may only "
                                      "have shared a batch with others: keep batch.size (--kafka-conf batch.size=N) "
                                      "below topic %s's max.message.bytes.", k->batch_limit, o->topic);
        snprintf(why, whylen, "record too large for Kafka (%s: %s): %s. To deliver it, %s.%s%s The slot is not "
                              "confirmed past this transaction; a restart retries it",
                 by, rd_kafka_err2str(o->err), what, limits, batch,
                 k->cfg.on_oversize != KAFKA_OVERSIZE_FAIL ? " kafka.on_oversize applies only to a record over "
                                                             "the limit on its own."
                                                           : "");
        return -1;
    }
    if (k->cfg.on_oversize == KAFKA_OVERSIZE_SKIP) {
        k->oversize_skipped++;
        if (o->by_broker && seq >= k->ring.head && seq < k->ring.tail && txn_at(k, seq)->pending > 0)
            txn_at(k, seq)->pending--;
        pgf_warn("kafka: skipped a record too large for Kafka (kafka.on_oversize=skip; %s: %s): %s; it is not in "
                 "Kafka. To deliver such records, %s",
                 by, rd_kafka_err2str(o->err), what, limits);
        return 0;
    }
    if (k->cfg.on_oversize == KAFKA_OVERSIZE_DEAD_LETTER) {
        if (dead_letter(k, o, seq, why, whylen) != 0)
            return -1;
        k->oversize_dead_lettered++;
        if (!o->by_broker)
            txn_at(k, seq)->pending++;
        pgf_warn("kafka: record too large for Kafka (%s: %s): %s; a dead-letter record goes to topic %s instead. "
                 "To deliver such records, %s",
                 by, rd_kafka_err2str(o->err), what, rd_kafka_topic_name(k->dl_rkt), limits);
        return 0;
    }
    snprintf(why, whylen, "record too large for Kafka (%s: %s): %s. To deliver it, %s; or set kafka.on_oversize "
                          "(--kafka-on-oversize) to dead_letter or skip. The slot is not confirmed past this "
                          "transaction; a restart retries it",
             by, rd_kafka_err2str(o->err), what, limits);
    return -1;
}

/* Copies header name of hdrs into out ("" when absent). */
static void header_str(rd_kafka_headers_t *hdrs, const char *name, char *out, size_t room)
{
    const void *v;
    size_t n;
    out[0] = '\0';
    if (hdrs && rd_kafka_header_get_last(hdrs, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && v)
        snprintf(out, room, "%.*s", (int)n, (const char *)v);
}

/* Delivery report, served on our thread by rd_kafka_poll: counts a record down, or records
 * the failure (never as an ack).  A record the broker rejected as too large goes by
 * kafka.on_oversize; what it needs is in the report and the record's headers, so the hot
 * path keeps no per-record context. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct kafka_sink *k = opaque;
    if (m->rkt == k->state_rkt)
        return; /* a checkpoint, maybe served on the transaction thread: its commit's outcome tells */
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    int live = seq >= k->ring.head && seq < k->ring.tail;
    size_t bytes = m->len + m->key_len + KAFKA_RECORD_OVERHEAD;
    k->base.inflight_bytes -= bytes < k->base.inflight_bytes ? bytes : k->base.inflight_bytes;
    if (k->base.inflight_msgs)
        k->base.inflight_msgs--;
    if (m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && m->rkt != k->dl_rkt && live) {
        struct oversize o = {.topic = rd_kafka_topic_name(m->rkt), .key = m->key, .key_len = m->key_len,
                             .value_len = m->len, .by_broker = 1, .err = m->err,
                             .commit_lsn = ((struct ktxn *)txn_at(k, seq))->commit_lsn};
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_message_headers(m, &hdrs);
        header_str(hdrs, "op", o.op, sizeof o.op);
        header_str(hdrs, "table", o.table, sizeof o.table);
        header_str(hdrs, "lsn", o.lsn, sizeof o.lsn);
        header_str(hdrs, "xid", o.xid, sizeof o.xid);
        /* The broker rejects a whole batch, so several reports may come at once: name the
         * largest record, the one most likely to be over the limit on its own. */
        char why[sizeof k->failure];
        size_t size = m->len + m->key_len;
        if (oversize(k, &o, seq, why, sizeof why) != 0 &&
            (!k->failure[0] || (k->failure_size > 0 && size > k->failure_size))) {
            snprintf(k->failure, sizeof k->failure, "%s", why);
            k->failure_size = size;
        }
        return;
    }
    if (m->err) {
        k->base.errors++;
        if (!k->failure[0] && m->rkt == k->dl_rkt) {
            rd_kafka_headers_t *hdrs = NULL;
            char table[256], lsn[PGF_LSN_BUFSZ];
            rd_kafka_message_headers(m, &hdrs);
            header_str(hdrs, "table", table, sizeof table);
            header_str(hdrs, "lsn", lsn, sizeof lsn);
            snprintf(k->failure, sizeof k->failure,
                     "the dead-letter record for a record too large for Kafka (table %s, LSN %s) could not be "
                     "delivered to topic %s: %s; the slot is not confirmed past its transaction, a restart retries it",
                     table[0] ? table : "(none)", lsn, rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
        } else if (!k->failure[0]) {
            snprintf(k->failure, sizeof k->failure,
                     "delivery to topic %s failed: %s; the slot is not advanced past it, a restart replays it",
                     rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
        }
        return;
    }
    k->base.connected = 1;
    if (live && txn_at(k, seq)->pending > 0)
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
    if (!pthread_equal(pthread_self(), k->loop_thread)) {
        /* Served by a commit's flush on the transaction thread: the loop takes it up. */
        pthread_mutex_lock(&k->deferred_mu);
        if (!k->deferred_err) {
            k->deferred_err = err;
            snprintf(k->deferred_reason, sizeof k->deferred_reason, "%s", reason ? reason : "");
        }
        pthread_mutex_unlock(&k->deferred_mu);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_resp_err_t code = rd_kafka_fatal_error(rk, why, sizeof why);
        if (k->failure[0])
            return;
        if (code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
            code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH)
            snprintf(k->failure, sizeof k->failure, "this pgfanout was fenced: another instance started with "
                     "transactional.id \"%s\" and writes the output now; this one stops without confirming anything "
                     "it did not commit (%s)", k->cfg.transactional_id, why);
        else
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

/* Expands a topic template into out; returns 0, or -1 naming the bad placeholder in errbuf.
 * A NULL schema and table leave {schema} and {table} out of the allowed placeholders. */
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
                                     "{prefix}, {database}%s", tmpl, p, schema ? ", {schema}, {table}" : "");
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
static struct ktopic *topic_for(struct kafka_sink *k, const struct pgf_relation *rel)
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
    t->rkt = topic_new(k, name);
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

/* Adds Debezium's headers of the record being produced to hdrs: the key-change header, then
 * the four __debezium.context ones Kafka Connect adds to every record. */
static void dbz_headers(const struct kafka_sink *k, rd_kafka_headers_t *hdrs)
{
    if (k->dbz_rec && k->dbz_rec->header)
        rd_kafka_header_add(hdrs, k->dbz_rec->header, -1, k->dbz_rec->header_value,
                            (ssize_t)k->dbz_rec->header_len);
    rd_kafka_header_add(hdrs, "__debezium.context.connectorLogicalName", -1, k->cfg.dbz.name, -1);
    rd_kafka_header_add(hdrs, "__debezium.context.taskId", -1, "0", -1);
    rd_kafka_header_add(hdrs, "__debezium.context.connectorName", -1, "postgresql", -1);
    rd_kafka_header_add(hdrs, "__debezium.context.runId", -1, k->run_id, -1);
}

/* Returns the wall clock in nanoseconds since 1970: a Debezium envelope's ts_ms/us/ns. */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Writes v in decimal into out (room for 11 bytes); by hand, since every record's header
 * carries one and snprintf was a measurable share of the main thread. */
static void format_u32(uint32_t v, char out[16])
{
    char tmp[10];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

/* Writes "schema.table" of rel into out (room bytes, at least 1), cut to fit. */
static void qualified_name(const struct pgf_relation *rel, char *out, size_t room)
{
    size_t a = strlen(rel->nspname), b = strlen(rel->relname);
    if (a > room - 1)
        a = room - 1;
    memcpy(out, rel->nspname, a);
    size_t n = a;
    if (n < room - 1)
        out[n++] = '.';
    if (b > room - 1 - n)
        b = room - 1 - n;
    memcpy(out + n, rel->relname, b);
    out[n + b] = '\0';
}

/* Produces one record into the open transaction; value may be NULL (a tombstone), partition
 * may be HELD_ALL_PARTITIONS (a truncate whose topic's partition count is being looked up).
 * Never waits: a record that cannot go now is held (see struct held).  Returns 0 or -1. */
static int produce(struct kafka_sink *k, rd_kafka_topic_t *rkt, int32_t partition, const void *value,
                   size_t value_len, const void *key, size_t key_len, const struct pgf_event *ev)
{
    char lsn[PGF_LSN_BUFSZ], xid[16], table[256];
    const char *op = pgf_op_name(ev->op);
    if (value == NULL)
        op = "tombstone";
    pgf_lsn_format(ev->lsn, lsn);
    format_u32(ev->txn ? ev->txn->xid : 0, xid);
    table[0] = '\0';
    if (ev->rel) {
        qualified_name(ev->rel, table, sizeof table);
    } else if (ev->op == PGF_OP_TRUNCATE) {
        size_t n = 0;
        for (uint32_t i = 0; i < ev->truncate.nrels && n < sizeof table; i++) {
            const struct pgf_relation *r = ev->truncate.rels[i];
            n += (size_t)snprintf(table + n, sizeof table - n, "%s%s.%s", i ? "," : "", r->nspname, r->relname);
        }
    }
    uint64_t seq = k->ring.tail - 1;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(k->dbz ? 9 : 4);
    if (k->dbz) /* Debezium's headers first, in its order; pgfanout's own follow */
        dbz_headers(k, hdrs);
    rd_kafka_header_add(hdrs, "op", -1, op, -1);
    rd_kafka_header_add(hdrs, "table", -1, table, -1);
    rd_kafka_header_add(hdrs, "lsn", -1, lsn, -1);
    rd_kafka_header_add(hdrs, "xid", -1, xid, -1);
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__QUEUE_FULL;
    /* Behind held records of its topic (or a full queue) a record waits its turn. */
    int tried = !k->queue_full && tstate_of(rkt)->held == 0 && partition != HELD_ALL_PARTITIONS;
    if (tried && !eo_can_produce(k)) {
        if (k->failure[0]) {
            rd_kafka_headers_destroy(hdrs);
            return sink_fail(&k->base, "%s", k->failure);
        }
        tried = 0; /* a Kafka transaction commits: held for the next one, in order */
    }
    if (tried)
        err = rd_kafka_producev(k->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(partition),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE((void *)value, value_len),
                                RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_HEADERS(hdrs),
                                RD_KAFKA_V_OPAQUE((void *)(uintptr_t)seq), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        txn_at(k, seq)->pending++;
        if (k->cfg.exactly_once) {
            eo_count(k, value_len + key_len);
            ((struct ktxn *)txn_at(k, seq))->eo_gen = k->eo_gen;
        }
        k->base.inflight_msgs++;
        k->base.inflight_bytes += value_len + key_len + KAFKA_RECORD_OVERHEAD;
        return 0;
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        /* Held, not waited for: the stream stops reading (backlogged) until it drains. */
        char *copy = value_len ? malloc(value_len) : NULL;
        if ((value_len && copy == NULL) ||
            hold(k, seq, rkt, partition, copy, value_len, key, key_len, hdrs, 1) != 0) {
            free(copy);
            rd_kafka_headers_destroy(hdrs);
            return sink_fail(&k->base, "out of memory");
        }
        if (value_len)
            memcpy(copy, value, value_len);
        if (tried) { /* librdkafka is out of room, not just this topic waiting */
            k->queue_full = 1;
            k->base.backlogged = 1;
        }
        return 0;
    }
    rd_kafka_headers_destroy(hdrs); /* only a successful produce takes ownership */
    if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
        /* Over the producer's message.max.bytes: never queued, so not counted. */
        struct oversize o = {.topic = rd_kafka_topic_name(rkt), .key = key, .key_len = key_len,
                             .value_len = value_len, .err = err, .commit_lsn = ev->txn ? ev->txn->commit_lsn : 0};
        snprintf(o.op, sizeof o.op, "%s", op);
        snprintf(o.table, sizeof o.table, "%s", table);
        snprintf(o.lsn, sizeof o.lsn, "%s", lsn);
        snprintf(o.xid, sizeof o.xid, "%s", xid);
        if (oversize(k, &o, seq, k->base.errstr, sizeof k->base.errstr) != 0 || drain_held(k) != 0)
            return k->failure[0] ? sink_fail(&k->base, "%s", k->failure) : -1;
        return 0;
    }
    return sink_fail(&k->base, "cannot produce to topic %s: %s", rd_kafka_topic_name(rkt), rd_kafka_err2str(err));
}

/* Encodes one row event as Debezium's change event and produces it to kt under its JSON
 * key, then a tombstone after a delete (keyless too, as Debezium writes one). */
static int emit_dbz_row(struct kafka_sink *k, const struct pgf_event *ev, struct ktopic *kt)
{
    struct pgf_dbz_record rec;
    if (pgf_dbz_encode(k->dbz, ev, k->moved, now_ns(), &rec))
        return sink_fail(&k->base, "out of memory encoding an event");
    k->dbz_rec = &rec;
    int rc = produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, rec.value, rec.value_len, rec.key, rec.key_len, ev);
    if (rc == 0 && ev->op == PGF_OP_DELETE && k->cfg.tombstones)
        rc = produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, NULL, 0, rec.key, rec.key_len, ev);
    k->dbz_rec = NULL;
    return rc;
}

/* Encodes one row event and produces it to its table's topic under its record key, then a
 * tombstone after a delete. */
static int emit_row(struct kafka_sink *k, const struct pgf_event *ev)
{
    if (k->dbz) {
        struct ktopic *kt = topic_for(k, ev->rel);
        return kt ? emit_dbz_row(k, ev, kt) : -1;
    }
    const uint8_t *value, *key;
    size_t value_len, key_len;
    if (pgf_proto_encode(k->proto, ev, k->txn_index++, &value, &value_len, &key, &key_len))
        return sink_fail(&k->base, "out of memory encoding an event");
    struct ktopic *kt = topic_for(k, ev->rel);
    if (kt == NULL)
        return -1;
    /* The key buffer is reused by the next encode; produce copies it (RD_KAFKA_MSG_F_COPY). */
    if (produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, value, value_len, key_len ? key : NULL, key_len, ev))
        return -1;
    if (ev->op == PGF_OP_DELETE && k->cfg.tombstones && key_len > 0)
        return produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, NULL, 0, key, key_len, ev);
    return 0;
}

static int emit_event(struct kafka_sink *k, const struct pgf_event *ev);

/* Produces one change, or skips it when exactly-once says Kafka holds it; see sink_ops. */
static int kafka_emit(struct sink *sink, const struct pgf_event *ev)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    if (k->failure[0])
        return sink_fail(sink, "%s", k->failure);
    if (!k->open) {
        if (txn_open(k))
            return sink_fail(sink, "out of memory");
        ((struct ktxn *)txn_at(k, k->ring.tail - 1))->commit_lsn = ev->txn ? ev->txn->commit_lsn : 0;
        if (k->cfg.exactly_once) {
            /* Commit LSNs order transactions as their end LSNs do, and Begin already has it.  A
             * message alone counts by its record's start, just before its LSN (the record's
             * end, which a commit record may start at). */
            k->eo_cur_commit = ev->txn ? ev->txn->commit_lsn : ev->lsn - 1;
            k->eo_cur_events = 0;
            /* Before eo_end: Kafka holds it (the checkpoint said so), or it is a replay after a
             * reconnect of one already in the open Kafka transaction. */
            k->eo_skip_all = k->eo_cur_commit < k->eo_end;
            k->eo_skip_events = k->eo_cur_commit == k->eo_part_commit ? k->eo_part_events : 0;
        }
    }
    if (k->cfg.exactly_once) {
        k->eo_cur_events++;
        if (k->eo_skip_all || k->eo_cur_events <= k->eo_skip_events) {
            /* Kafka holds it: keep txn_index as the first run numbered it. */
            k->txn_index += ev->op != PGF_OP_MESSAGE && ev->op != PGF_OP_TRUNCATE && pgf_event_key_changed(ev) ? 2 : 1;
            k->eo_skipped++;
            return 0;
        }
        int rc = emit_event(k, ev);
        if (rc == 0 && ev->txn) {
            /* Written (or held for the next Kafka transaction) as far as this event. */
            k->eo_part_commit = k->eo_cur_commit;
            k->eo_part_events = k->eo_cur_events;
        }
        return rc != 0 ? rc : eo_maybe_commit(k, 0) != 0 ? sink_fail(sink, "%s", k->failure) : 0;
    }
    return emit_event(k, ev);
}

/* Encodes and produces one event of the open transaction. */
static int emit_event(struct kafka_sink *k, const struct pgf_event *ev)
{
    struct sink *sink = &k->base;
    enum pgf_op op = ev->op;
    if (op != PGF_OP_MESSAGE && op != PGF_OP_TRUNCATE) {
        if (!pgf_event_key_changed(ev))
            return emit_row(k, ev);
        /* The row moved to another key: as Debezium does, the old key's history ends with a
         * delete (and its tombstone), and the new key's begins with an insert. */
        struct pgf_event del = *ev, ins = *ev;
        del.op = PGF_OP_DELETE;
        del.key = ev->before;
        del.after = NULL;
        ins.op = PGF_OP_INSERT;
        ins.before = NULL;
        k->moved = ev; /* debezium-json names each half's other key in a header */
        int rc = emit_row(k, &del) != 0 ? -1 : emit_row(k, &ins);
        k->moved = NULL;
        return rc;
    }
    const uint8_t *value = NULL, *key = NULL;
    size_t value_len = 0, key_len = 0;
    struct pgf_dbz_record rec;
    if (k->dbz && op == PGF_OP_MESSAGE) {
        if (pgf_dbz_encode(k->dbz, ev, NULL, now_ns(), &rec))
            return sink_fail(sink, "out of memory encoding an event");
        return produce(k, k->msg_rkt, RD_KAFKA_PARTITION_UA, rec.value, rec.value_len, rec.key, rec.key_len, ev);
    }
    if (k->dbz && !k->cfg.dbz_truncates)
        return 0; /* Debezium's default skipped.operations=t */
    if (!k->dbz && pgf_proto_encode(k->proto, ev, k->txn_index++, &value, &value_len, &key, &key_len))
        return sink_fail(sink, "out of memory encoding an event");
    if (op == PGF_OP_MESSAGE)
        return produce(k, k->msg_rkt, RD_KAFKA_PARTITION_UA, value, value_len, ev->message.prefix,
                       strlen(ev->message.prefix), ev);
    /* A truncate goes to every partition of every truncated table's topic, so each
     * partition's consumers see it in order with that partition's rows. */
    const struct pgf_event_truncate *t = &ev->truncate;
    for (uint32_t i = 0; i < t->nrels; i++) {
        struct ktopic *kt = topic_for(k, t->rels[i]);
        if (kt == NULL)
            return -1;
        if (k->dbz) { /* one op "t" record per table, naming it */
            if (pgf_dbz_encode_truncate(k->dbz, ev, i, now_ns(), &rec))
                return sink_fail(sink, "out of memory encoding an event");
            value = (const uint8_t *)rec.value;
            value_len = rec.value_len;
        }
        struct tstate *ts = tstate_of(kt->rkt);
        if (ts->partitions == 0) {
            /* Unknown yet: look it up off the loop and hold the topic's records meanwhile;
             * other topics go on. */
            if (lookup_start(k, kt->rkt) != 0 ||
                produce(k, kt->rkt, HELD_ALL_PARTITIONS, value, value_len, NULL, 0, ev) != 0)
                return -1;
            continue;
        }
        if (ts->partitions < 0 && produce(k, kt->rkt, RD_KAFKA_PARTITION_UA, value, value_len, NULL, 0, ev))
            return -1;
        for (int p = 0; p < ts->partitions; p++)
            if (produce(k, kt->rkt, p, value, value_len, NULL, 0, ev))
                return -1;
    }
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
    t->h.commit_time = txn->commit_time;
    k->open = 0;
    if (k->cfg.exactly_once) {
        /* Cut off (end LSN 0: a lost connection, a stop), its written events stay in
         * eo_part_*, which a replay after a reconnect skips, as a restart would after a
         * checkpoint.  Ended, it is whole. */
        if (txn->end_lsn != 0 && txn->end_lsn > k->eo_end)
            k->eo_end = txn->end_lsn;
        if (k->eo_part_commit && k->eo_part_commit < k->eo_end)
            k->eo_part_commit = k->eo_part_events = 0;
        if (t->eo_gen > k->eo_done_gen) {
            t->eo_token = 1;
            t->h.pending++;
        }
        if (eo_maybe_commit(k, 1) != 0)
            return sink_fail(sink, "%s", k->failure);
    }
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
    lookups_reap(k);
    if (k->cfg.exactly_once) {
        eo_take_deferred(k);
        eo_commit_ready(k);
        eo_reap(k);
    }
    drain_held(k); /* records held for room, a partition count, the dead-letter topic or a commit */
    if (!k->open)
        eo_maybe_commit(k, 1);
    txn_advance(k);
    if (k->failure[0])
        return sink_fail(sink, "%s", k->failure);
    return 0;
}

/* With exactly-once, commits the open Kafka transaction before the deadline (with a partial
 * checkpoint when it ends inside a cut-off PostgreSQL transaction).  Returns 0, 1 when it did
 * not commit in time (what it held is not confirmed), -1 on failure. */
static int eo_finish(struct kafka_sink *k, int64_t deadline)
{
    while (!k->failure[0] && pgf_pgtime_now() < deadline) {
        int left_ms = (int)((deadline - pgf_pgtime_now()) / 1000);
        rd_kafka_poll(k->rk, 0);
        lookups_reap(k); /* a truncate held for its partition count */
        eo_take_deferred(k);
        if (k->eo_closing) {
            rd_kafka_poll(k->rk, left_ms < 100 ? left_ms : 100);
            eo_commit_ready(k);
            continue;
        }
        if (k->eo_committing) {
            kafka_txn_worker_wait(k->txw, left_ms < 250 ? left_ms : 250);
            eo_reap(k);
            continue;
        }
        if (k->held_head) {
            if (drain_held(k) != 0)
                break;
            if (k->held_head)
                rd_kafka_poll(k->rk, left_ms < 100 ? left_ms : 100);
            continue;
        }
        if (k->eo_in_txn && k->eo_records > 0) {
            eo_commit_start(k);
            continue;
        }
        break;
    }
    if (k->failure[0])
        return -1;
    return k->eo_committing || (k->eo_in_txn && k->eo_records > 0) || k->held_head ? 1 : 0;
}

/* Waits up to timeout_ms for every committed transaction to be acked. */
static int kafka_flush(struct sink *sink, int timeout_ms)
{
    struct kafka_sink *k = (struct kafka_sink *)sink;
    int64_t deadline = pgf_pgtime_now() + (int64_t)timeout_ms * 1000;
    if (k->cfg.exactly_once) {
        int rc = eo_finish(k, deadline);
        if (rc < 0)
            return sink_fail(sink, "%s", k->failure);
        if (rc > 0) {
            sink_fail(sink, "the open Kafka transaction did not commit in time; what it held is not confirmed, and "
                            "a restart writes it again (once: the last checkpoint says what Kafka holds)");
            return 1;
        }
    }
    /* An unfinished transaction (after an error mid-way) can never be acked: stop there. */
    while (k->ring.head < k->ring.tail && txn_at(k, k->ring.head)->committed && !k->failure[0] && pgf_pgtime_now() < deadline) {
        /* Returns as soon as a delivery report is served; the deadline bounds the wait, and a
         * partition lookup under way (which reports through our pipe, not librdkafka's queue)
         * is looked at every 250 ms. */
        int64_t left_ms = (deadline - pgf_pgtime_now()) / 1000;
        if (k->held_head && left_ms > 250)
            left_ms = 250;
        rd_kafka_poll(k->rk, left_ms > 0 ? (int)left_ms : 0);
        lookups_reap(k);
        drain_held(k);
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
    kafka_txn_worker_stop(k->txw); /* after its call under way: it uses the producer */
    if (k->rk && k->cfg.exactly_once && (k->eo_in_txn || k->eo_closing)) {
        /* Abort what did not commit, so read_committed readers need not wait out the
         * coordinator's timeout for it; it was not confirmed, and a restart writes it. */
        rd_kafka_error_t *e = rd_kafka_abort_transaction(k->rk, 5000);
        if (e)
            rd_kafka_error_destroy(e);
    }
    if (k->rk) {
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(k->rk, 0);
        for (size_t i = 0; i < k->ntopics; i++) {
            topic_destroy(k->topics[i].rkt);
            free(k->topics[i].nspname);
            free(k->topics[i].relname);
        }
        topic_destroy(k->msg_rkt);
        topic_destroy(k->dl_rkt);
        topic_destroy(k->state_rkt);
        if (k->mainq)
            rd_kafka_queue_destroy(k->mainq);
        rd_kafka_destroy(k->rk);
    }
    if (sink->wake_fd >= 0)
        close(sink->wake_fd);
    if (k->pipe_wr >= 0)
        close(k->pipe_wr);
    while (k->held_head) {
        struct held *h = k->held_head;
        k->held_head = h->next;
        rd_kafka_headers_destroy(h->hdrs);
        free(h->value);
        free(h);
    }
    pgf_proto_free(k->proto);
    pgf_dbz_free(k->dbz);
    free(k->topics);
    txn_ring_free(&k->ring);
    pthread_mutex_destroy(&k->deferred_mu);
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

/* The producer's defaults; see kafka_sink.h. */
const char *const kafka_producer_defaults[][2] = {
    {"enable.idempotence", "true"}, /* retries cannot duplicate or reorder within a partition */
    {"acks", "all"},
    {"message.timeout.ms", "0"},    /* never give up on a record: back-pressure instead of loss */
    /* Short: a record at a steady few thousand per second goes out within about a
     * millisecond.  Under load the batches still grow: librdkafka sends at most 5 requests
     * at a time per broker (idempotence), so records that come while those are under way
     * queue up and go together in the next one (up to batch.size), whatever linger.ms. */
    {"linger.ms", "1"},
    {"compression.codec", "lz4"},
    {"queue.buffering.max.messages", "1000000"},
    {"queue.buffering.max.kbytes", "1048576"},
    {"client.id", "pgfanout"},
};
const size_t kafka_producer_ndefaults = sizeof kafka_producer_defaults / sizeof *kafka_producer_defaults;

/* Builds the producer configuration: our safe defaults first, the user's settings last. */
static rd_kafka_conf_t *make_conf(struct kafka_sink *k, const struct kafka_sink_config *cfg, char *errbuf,
                                  size_t errlen)
{
    rd_kafka_conf_t *conf = kafka_conf_build(kafka_producer_defaults, kafka_producer_ndefaults, cfg->brokers, cfg->conf,
                                             cfg->nconf, NULL, 0, errbuf, errlen);
    if (conf == NULL)
        return NULL;
    char val[32];
    size_t vlen = sizeof val;
    if (cfg->exactly_once) {
        /* A transactional producer may not wait for a record longer than a transaction may
         * stay open; a broker outage past that fails the sink, and a restart goes on. */
        if (rd_kafka_conf_get(conf, "transaction.timeout.ms", val, &vlen) != RD_KAFKA_CONF_OK)
            snprintf(val, sizeof val, "60000");
        k->eo_txn_timeout_ms = atoi(val);
        char why[256];
        if (rd_kafka_conf_set(conf, "transactional.id", cfg->transactional_id, why, sizeof why) != RD_KAFKA_CONF_OK ||
            rd_kafka_conf_set(conf, "message.timeout.ms", val, why, sizeof why) != RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "kafka.exactly_once: %s", why);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
        vlen = sizeof val;
    }
    if (rd_kafka_conf_get(conf, "enable.idempotence", val, &vlen) == RD_KAFKA_CONF_OK && strcmp(val, "true") != 0)
        pgf_warn("kafka: enable.idempotence is off; retries may duplicate or reorder records");
    /* The limits a record too large for Kafka is judged and reported by. */
    vlen = sizeof val;
    k->max_msg_bytes = rd_kafka_conf_get(conf, "message.max.bytes", val, &vlen) == RD_KAFKA_CONF_OK
                           ? strtoull(val, NULL, 10) : 1000000;
    vlen = sizeof val;
    size_t batch = rd_kafka_conf_get(conf, "batch.size", val, &vlen) == RD_KAFKA_CONF_OK ? strtoull(val, NULL, 10)
                                                                                         : 1000000;
    k->batch_limit = batch < k->max_msg_bytes ? batch : k->max_msg_bytes;
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    return conf;
}

/* Checks the three topic templates, so a typo fails at start, not at the first change; leaves
 * the message and dead-letter topic names in msg and dl (256 bytes each).  Returns 0 or -1. */
static int check_templates(const struct kafka_sink_config *cfg, char *msg, char *dl, char *errbuf, size_t errlen)
{
    char why[400];
    const char *setting = "kafka.topic_template (--topic-template)";
    int bad = expand_topic(cfg, cfg->topic_template, "s", "t", msg, 256, why, sizeof why);
    if (!bad) {
        setting = "kafka.message_topic (--message-topic)";
        bad = expand_topic(cfg, cfg->message_topic, "", "", msg, 256, why, sizeof why);
    }
    if (!bad) {
        /* One dead-letter topic for every table: the records name their table. */
        setting = "kafka.dead_letter_topic (--dead-letter-topic)";
        bad = expand_topic(cfg, cfg->dead_letter_topic ? cfg->dead_letter_topic : "{prefix}.dead_letter", NULL,
                           NULL, dl, 256, why, sizeof why);
    }
    if (bad)
        snprintf(errbuf, errlen, "%s: %s", setting, why);
    return bad ? -1 : 0;
}

/* Readies exactly-once before the loop runs: registers the transactional.id with its
 * coordinator, which fences any older producer of it and aborts what that one left open (so
 * read_committed readers of the checkpoint are not held up by it), then starts the worker.
 * Returns 0, or -1 with why in errbuf. */
static int eo_open(struct kafka_sink *k, char *errbuf, size_t errlen)
{
    k->eo_gen = 1;
    if ((k->state_rkt = topic_new(k, k->cfg.state_topic)) == NULL) {
        snprintf(errbuf, errlen, "cannot create the state topic handle %s: %s", k->cfg.state_topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    rd_kafka_error_t *e = rd_kafka_init_transactions(k->rk, EO_CALL_TIMEOUT_MS);
    if (e) {
        snprintf(errbuf, errlen, "kafka.exactly_once: cannot start transactions (transactional.id \"%s\"): %s; the "
                 "brokers must be reachable, allow transactions (transaction.state.log.*) and this client the "
                 "IdempotentWrite and transactional-id Write ACLs", k->cfg.transactional_id, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return -1;
    }
    if ((k->txw = kafka_txn_worker_start(k->rk, k->pipe_wr)) == NULL) {
        snprintf(errbuf, errlen, "cannot start the Kafka transaction thread");
        return -1;
    }
    pgf_info("kafka: exactly-once, transactional.id \"%s\"; each transaction's checkpoint goes to topic %s, key %s",
             k->cfg.transactional_id, k->cfg.state_topic, k->cfg.checkpoint_key);
    return 0;
}

/* Reads a checkpoint document into the resume point; see kafka_sink.h. */
int kafka_sink_resume(struct sink *sink, const char *json, size_t len, char *err, size_t errlen)
{
    if (sink->ops != &kafka_ops || !((struct kafka_sink *)sink)->cfg.exactly_once) {
        snprintf(err, errlen, "not an exactly-once Kafka sink");
        return -1;
    }
    struct kafka_sink *k = (struct kafka_sink *)sink;
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, 0, &jerr);
    json_t *partial = json_object_get(doc, "partial");
    const char *end = json_string_value(json_object_get(doc, "end_lsn"));
    const char *pc = json_string_value(json_object_get(partial, "commit_lsn"));
    json_t *pe = json_object_get(partial, "events");
    const char *sys = json_string_value(json_object_get(doc, "system_id"));
    if (sys && sys[0] && k->cfg.system_id && strcmp(sys, k->cfg.system_id) != 0) {
        snprintf(err, errlen, "it was written against system %s, and this server is system %s", sys,
                 k->cfg.system_id);
        json_decref(doc);
        return 1;
    }
    uint64_t e = 0, p = 0;
    int ok = end && pgf_lsn_parse(end, &e) == 0 &&
             (json_is_null(partial) || (pc && pgf_lsn_parse(pc, &p) == 0 && json_is_integer(pe) &&
                                        json_integer_value(pe) >= 0));
    if (ok) {
        k->eo_end = e;
        k->eo_part_commit = json_is_null(partial) ? 0 : p;
        k->eo_part_events = json_is_null(partial) ? 0 : (uint64_t)json_integer_value(pe);
    } else {
        snprintf(err, errlen, "the exactly-once checkpoint is not a document pgfanout wrote (%.200s)",
                 doc ? "fields missing" : jerr.text);
    }
    json_decref(doc);
    return ok ? 0 : -1;
}

/* Writes a random (version 4) UUID into out: Debezium's runId, new at every start.  Reads
 * /dev/urandom once, at startup, not on the loop; falls back to the clock and pid. */
static void make_run_id(char out[37])
{
    uint8_t b[16];
    FILE *f = fopen("/dev/urandom", "rb");
    if (f == NULL || fread(b, 1, sizeof b, f) != sizeof b) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        uint64_t y = (uint64_t)getpid() * UINT64_C(0x9E3779B97F4A7C15) ^ x;
        memcpy(b, &x, 8);
        memcpy(b + 8, &y, 8);
    }
    if (f)
        fclose(f);
    b[6] = (uint8_t)((b[6] & 0x0F) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
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
    k->held_tail = &k->held_head;
    k->loop_thread = pthread_self();
    pthread_mutex_init(&k->deferred_mu, NULL);
    k->cfg = *cfg;
    k->proto = pgf_proto_new(cfg->database ? cfg->database : "");
    k->base.latency = &k->latency;
    k->base.connected = 1; /* until librdkafka says every broker is down */
    if (cfg->format == KAFKA_FORMAT_DEBEZIUM_JSON) {
        k->dbz = pgf_dbz_new(&cfg->dbz);
        make_run_id(k->run_id);
    }
    if (txn_ring_init(&k->ring, sizeof(struct ktxn)) != 0 || k->proto == NULL ||
        (cfg->format == KAFKA_FORMAT_DEBEZIUM_JSON && k->dbz == NULL)) {
        snprintf(errbuf, errlen, "out of memory");
        kafka_close(&k->base);
        return NULL;
    }
    char name[256], dl_name[256];
    if (check_templates(cfg, name, dl_name, errbuf, errlen)) {
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
    k->msg_rkt = topic_new(k, name);
    if (cfg->on_oversize == KAFKA_OVERSIZE_DEAD_LETTER && (k->dl_rkt = topic_new(k, dl_name)) == NULL) {
        snprintf(errbuf, errlen, "cannot create the dead-letter topic handle %s: %s", dl_name,
                 rd_kafka_err2str(rd_kafka_last_error()));
        kafka_close(&k->base);
        return NULL;
    }
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
    if (cfg->exactly_once && eo_open(k, errbuf, errlen) != 0) {
        kafka_close(&k->base);
        return NULL;
    }
    return &k->base;
}

/* Checks the settings without creating a producer; see sink.h. */
int kafka_sink_check(const struct kafka_sink_config *cfg, char *errbuf, size_t errlen)
{
    char name[256], dl_name[256];
    if (check_templates(cfg, name, dl_name, errbuf, errlen))
        return -1;
    if (cfg->exactly_once && cfg->on_oversize != KAFKA_OVERSIZE_FAIL) {
        /* A record the broker rejects fails its whole Kafka transaction (librdkafka aborts a
         * transaction with any failed delivery), so neither could take effect. */
        snprintf(errbuf, errlen, "kafka.on_oversize: %s does not work with kafka.exactly_once (a record the broker "
                 "rejects aborts its whole transaction); use fail, and keep the producer's message.max.bytes "
                 "below the topics' max.message.bytes so that such a record is refused before it is sent",
                 cfg->on_oversize == KAFKA_OVERSIZE_SKIP ? "skip" : "dead_letter");
        return -1;
    }
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

/* Reports the Kafka sink's oversize counters; see sink.h. */
int kafka_sink_oversize_counts(const struct sink *sink, uint64_t *dead_lettered, uint64_t *skipped)
{
    if (sink == NULL || sink->ops != &kafka_ops)
        return -1;
    const struct kafka_sink *k = (const struct kafka_sink *)sink;
    *dead_lettered = k->oversize_dead_lettered;
    *skipped = k->oversize_skipped;
    return 0;
}
