/* null_sink.c - the Kafka sink's protobuf encoding with no broker: every event is rendered as
 * its pgfanout.v1 record and dropped, and each transaction is acked at its commit.  For dry
 * runs, and to measure decoding plus encoding apart from any broker. */
#include "sinks/null_sink.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "decoders/event.h"
#include "sinks/proto_event.h"
#include "sinks/sink.h"

struct null_sink {
    struct sink base;
    struct pgf_proto *proto;
    uint32_t txn_index;  /* the event's place in its transaction, as the Kafka sink numbers it */
    uint64_t events;     /* events taken */
    uint64_t records;    /* records encoded: a key-changing update is two, as in Kafka */
    uint64_t bytes;      /* their values and keys */
    int64_t first_ns;    /* monotonic time of the first event, or 0 */
    int64_t last_ns;     /* of the last commit */
};

/* Monotonic nanoseconds, for the rate: wall-clock steps must not skew it. */
static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Encodes one record and counts its bytes; returns 0, or -1 with errstr set. */
static int encode(struct null_sink *s, const struct pgf_event *ev)
{
    const uint8_t *value = NULL, *key = NULL;
    size_t value_len = 0, key_len = 0;
    if (pgf_proto_encode(s->proto, ev, s->txn_index++, &value, &value_len, &key, &key_len) != 0)
        return sink_fail(&s->base, "out of memory encoding an event");
    s->records++;
    s->bytes += value_len + key_len;
    return 0;
}

/* Encodes the event as the Kafka sink's record(s) and drops them. */
static int null_emit(struct sink *sink, const struct pgf_event *ev)
{
    struct null_sink *s = (struct null_sink *)sink;
    if (s->first_ns == 0)
        s->first_ns = mono_ns();
    s->events++;
    if (ev->op == PGF_OP_MESSAGE || ev->op == PGF_OP_TRUNCATE || !pgf_event_key_changed(ev))
        return encode(s, ev);
    /* The Kafka sink writes a row that moved to another key as a delete of the old key and an
     * insert of the new one: the same two encodings cost the same here. */
    struct pgf_event del = *ev, ins = *ev;
    del.op = PGF_OP_DELETE;
    del.key = ev->before;
    del.after = NULL;
    ins.op = PGF_OP_INSERT;
    ins.before = NULL;
    return encode(s, &del) != 0 ? -1 : encode(s, &ins);
}

/* Nothing is held, so the transaction is acked as soon as it ends. */
static int null_commit(struct sink *sink, const struct pgf_txn *txn)
{
    struct null_sink *s = (struct null_sink *)sink;
    s->txn_index = 0;
    s->last_ns = mono_ns();
    if (txn->end_lsn > sink->acked_lsn) /* an abandoned transaction ends at 0 */
        sink->acked_lsn = txn->end_lsn;
    return 0;
}

/* Nothing is asynchronous here. */
static int null_poll(struct sink *sink)
{
    (void)sink;
    return 0;
}

/* Everything committed is already acked. */
static int null_flush(struct sink *sink, int timeout_ms)
{
    (void)sink;
    (void)timeout_ms;
    return 0;
}

/* Logs the totals, the reason to run this sink, and frees it. */
static void null_close(struct sink *sink)
{
    struct null_sink *s = (struct null_sink *)sink;
    /* The rate spans the first event to the last commit: connecting and idling are not encoding. */
    double secs = s->first_ns && s->last_ns > s->first_ns ? (double)(s->last_ns - s->first_ns) / 1e9 : 0;
    pgf_info("null sink: %" PRIu64 " events, %" PRIu64 " records, %" PRIu64 " bytes encoded in %.6f s "
             "(%.0f events/s)",
             s->events, s->records, s->bytes, secs, secs > 0 ? (double)s->events / secs : 0.0);
    pgf_proto_free(s->proto);
    free(s);
}

static const struct sink_ops null_ops = {
    .name = "null",
    .emit = null_emit,
    .commit = null_commit,
    .poll = null_poll,
    .flush = null_flush,
    .close = null_close,
};

/* Opens the sink with its own encoder, as the Kafka sink has. */
struct sink *null_sink_open(const char *database, char *errbuf, size_t errlen)
{
    struct null_sink *s = calloc(1, sizeof *s);
    if (s == NULL || (s->proto = pgf_proto_new(database ? database : "")) == NULL) {
        free(s);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &null_ops;
    s->base.connected = 1;
    s->base.wake_fd = -1;
    return &s->base;
}
