/* kafka_sink.h - events to Kafka (protobuf, or Debezium's JSON): the sink's settings, opening
 * it, checking its settings before anything connects, and its own counters. */
#ifndef PGFANOUT_KAFKA_SINK_H
#define PGFANOUT_KAFKA_SINK_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/debezium_event.h"
#include "sinks/sink.h"

/* What the Kafka sink does with a record larger than the broker accepts. */
enum kafka_oversize { KAFKA_OVERSIZE_FAIL = 0, KAFKA_OVERSIZE_DEAD_LETTER, KAFKA_OVERSIZE_SKIP };

/* The records' format: pgfanout.v1.Event, or Debezium's change events in JSON. */
enum kafka_format { KAFKA_FORMAT_PROTOBUF = 0, KAFKA_FORMAT_DEBEZIUM_JSON };

/* What the Kafka sink needs to know; strings are borrowed for the sink's lifetime. */
struct kafka_sink_config {
    const char *brokers;         /* bootstrap.servers */
    const char *topic_template;  /* "{prefix}.{schema}.{table}"; also {database} */
    const char *topic_prefix;
    const char *message_topic;   /* template for logical messages */
    int tombstones;              /* a null-value record after each delete */
    enum kafka_oversize on_oversize;
    const char *dead_letter_topic; /* template for dead_letter records */
    const char *const *conf;     /* extra librdkafka "key=value" settings, applied last */
    size_t nconf;
    const char *database;
    /* Exactly-once (kafka.exactly_once): a transactional producer whose every Kafka
     * transaction also writes its checkpoint (key checkpoint_key in state_topic). */
    int exactly_once;
    const char *transactional_id;
    const char *state_topic;
    const char *checkpoint_key;
    const char *system_id;    /* the server's, written into each checkpoint and checked on resume */
    uint64_t txn_max_records; /* a Kafka transaction's bounds (see README, Exactly once) */
    uint64_t txn_max_bytes;
    int txn_max_ms;
    enum kafka_format format;
    struct pgf_dbz_config dbz;   /* with KAFKA_FORMAT_DEBEZIUM_JSON */
    int dbz_truncates;           /* with it: write op "t" records (else skipped, as Debezium's default) */
};

/* Opens the Kafka sink: an idempotent librdkafka producer (acks=all).  Returns the sink, or
 * NULL with a reason in errbuf (a bad setting names the key; values are never echoed). */
struct sink *kafka_sink_open(const struct kafka_sink_config *cfg, char *errbuf, size_t errlen);

/* Tells an exactly-once Kafka sink what Kafka already holds, from the checkpoint document
 * (json, len bytes) its transactions wrote: it then skips every transaction that committed
 * before the checkpoint's end LSN and the changes of a split transaction already written.
 * Returns 0, or -1 with why in err (not an exactly-once Kafka sink, or a document it cannot
 * read); 1, with why in err, when the checkpoint is another system's (it is not used). */
int kafka_sink_resume(struct sink *sink, const char *json, size_t len, char *err, size_t errlen);

/* For a Kafka sink, sets the records too large for Kafka that went to the dead-letter topic
 * and that were skipped (kafka.on_oversize) and returns 0; returns -1 for any other sink. */
int kafka_sink_oversize_counts(const struct sink *sink, uint64_t *dead_lettered, uint64_t *skipped);

/* The producer's defaults, applied before kafka.conf (kafka_conf_build's pairs): also what
 * bench/kafka_floor measures librdkafka with. */
extern const char *const kafka_producer_defaults[][2];
extern const size_t kafka_producer_ndefaults;

/* Checks the Kafka settings (topic templates, every librdkafka property by name and value)
 * without connecting.  Returns 0, or -1 with the reason in errbuf (values never echoed). */
int kafka_sink_check(const struct kafka_sink_config *cfg, char *errbuf, size_t errlen);

#endif
