/* kafka_conf.h - a librdkafka configuration from pgfanout's settings, shared by the Kafka sink
 * and the Kafka state store so both read kafka.conf the same way.  Errors name the key, never
 * the value, which may be a password. */
#ifndef PGFANOUT_KAFKA_CONF_H
#define PGFANOUT_KAFKA_CONF_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/* Builds a configuration: defaults (pairs) first, then bootstrap.servers = brokers (when not
 * NULL), then the user's "key=value" items in order, then required (pairs) last, so that
 * kafka.conf can tune anything except what the caller's promises rest on.  Returns it, or
 * NULL with err set. */
rd_kafka_conf_t *kafka_conf_build(const char *const (*defaults)[2], size_t ndefaults, const char *brokers,
                                  const char *const *items, size_t nitems, const char *const (*required)[2],
                                  size_t nrequired, char *err, size_t errlen);

#endif
