/* debezium_event.h - one event as Debezium's PostgreSQL connector writes it to Kafka through
 * Kafka Connect's JsonConverter with schemas.enable=false: the change-event envelope (value),
 * the record key, and the key-change header, byte for byte as Debezium 3.6 spells them
 * (tests/fixtures/debezium).  Pure: no I/O, no logging. */
#ifndef PGFANOUT_DEBEZIUM_EVENT_H
#define PGFANOUT_DEBEZIUM_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"

/* Debezium's decimal.handling.mode. */
enum pgf_dbz_decimal { PGF_DBZ_DECIMAL_PRECISE = 0, PGF_DBZ_DECIMAL_STRING, PGF_DBZ_DECIMAL_DOUBLE };
/* Debezium's time.precision.mode. */
enum pgf_dbz_time { PGF_DBZ_TIME_ADAPTIVE = 0, PGF_DBZ_TIME_ADAPTIVE_MICROS, PGF_DBZ_TIME_CONNECT };
/* Debezium's binary.handling.mode. */
enum pgf_dbz_binary { PGF_DBZ_BINARY_BYTES = 0, PGF_DBZ_BINARY_BASE64, PGF_DBZ_BINARY_HEX };

/* How to write events; strings are borrowed for the encoder's lifetime. */
struct pgf_dbz_config {
    enum pgf_dbz_decimal decimal;
    enum pgf_dbz_time time;
    enum pgf_dbz_binary binary;
    const char *name;     /* source.name: Debezium's topic.prefix */
    const char *database; /* source.db */
    const char *version;  /* source.version */
};

/* One encoded record.  Everything points into the encoder's buffers, valid until its next
 * encode. */
struct pgf_dbz_record {
    const char *value; /* the envelope as JSON */
    size_t value_len;
    const char *key;   /* the record key as a JSON object, or NULL: the table has no key */
    size_t key_len;
    const char *header;       /* "__debezium.newkey", "__debezium.oldkey" or NULL */
    const char *header_value; /* that header's value: the other key, as compact JSON */
    size_t header_len;
};

struct pgf_dbz;

/* Returns a new encoder for cfg (copied; its strings borrowed), or NULL out of memory. */
struct pgf_dbz *pgf_dbz_new(const struct pgf_dbz_config *cfg);

/* Frees d (NULL is fine). */
void pgf_dbz_free(struct pgf_dbz *d);

/* Encodes a row event (insert, update, delete, read) or a logical message into *out.
 * moved is the update whose primary-key change ev is half of, or NULL: a delete of the old
 * key then gets the header __debezium.newkey, an insert of the new key __debezium.oldkey.
 * now_ns (nanoseconds since 1970) is the envelope's ts_ms/ts_us/ts_ns, Debezium's processing
 * time.  Returns 0, or -1 out of memory. */
int pgf_dbz_encode(struct pgf_dbz *d, const struct pgf_event *ev, const struct pgf_event *moved, int64_t now_ns,
                   struct pgf_dbz_record *out);

/* Encodes the op "t" record of truncated relation i of truncate event ev (null key) into
 * *out.  Returns 0, or -1 out of memory. */
int pgf_dbz_encode_truncate(struct pgf_dbz *d, const struct pgf_event *ev, uint32_t i, int64_t now_ns,
                            struct pgf_dbz_record *out);

/* Appends to buf (room bytes, NUL-terminated) the Java Double.toString spelling of x
 * (Float.toString when as_float), without quotes: "1.5", "0.0", "-9.99999999999E8", "NaN".
 * Returns the length written.  Exposed for the unit tests. */
size_t pgf_dbz_java_double(double x, int as_float, char *buf, size_t room);

#endif
