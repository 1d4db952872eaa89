/* state_kafka.h - the Kafka store of pgfanout's durable state: one record per slot, keyed by
 * it, in a compacted topic, so the broker keeps the newest document and nothing needs a disk
 * of pgfanout's own. */
#ifndef PGFANOUT_STATE_KAFKA_H
#define PGFANOUT_STATE_KAFKA_H

#include <stddef.h>

#include "cdc/state.h"

struct event_base;

/* Opens the Kafka store: the newest record keyed `key` in the compacted topic `topic`.
 * conf holds nconf "key=value" librdkafka settings (kafka.conf: TLS, SASL...), applied in
 * order to the producer and to load's consumer after our defaults; acks=all and
 * idempotence (producer), read_committed and no commits (consumer) are applied after them,
 * since the store's promises rest on them.  Creates the topic (1 partition, the broker's
 * replication factor, cleanup.policy=compact) unless it exists, waiting up to 30 s: call it
 * before base's loop runs.  Delivery reports are then served from base's loop.  Strings are
 * copied.  Returns the store, or NULL with err set (values of settings never echoed).
 * save's done runs from the loop, never inside save, and must not close the store; close
 * calls the done of saves still pending with an error. */
struct pgf_state_store *pgf_state_kafka_open(struct event_base *base, const char *brokers, const char *const *conf,
                                             size_t nconf, const char *topic, const char *key, char *err,
                                             size_t errlen);

#endif
