/* proto_event.h - events as pgfanout.v1 protobuf messages (see proto/pgfanout/v1/event.proto). */
#ifndef PGFANOUT_PROTO_EVENT_H
#define PGFANOUT_PROTO_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/sink.h"

struct pgf_proto;

/* Returns a new encoder for events of database (copied), or NULL when out of memory.  It keeps
 * its buffers between events, so steady-state encoding allocates nothing. */
struct pgf_proto *pgf_proto_new(const char *database);

/* Frees the encoder and its buffers.  NULL is fine. */
void pgf_proto_free(struct pgf_proto *p);

/* Encodes ev, the txn_index-th event of its transaction, as an Event and, for row events,
 * its record Key.  Returns 0, or -1 when out of memory.  The bytes stay valid until the next
 * call; *key_len is 0 when the row has no key columns (REPLICA IDENTITY NOTHING) or the event
 * is not a row event. */
int pgf_proto_encode(struct pgf_proto *p, const struct pgf_event *ev, uint32_t txn_index,
                     const uint8_t **value, size_t *value_len, const uint8_t **key, size_t *key_len);

/* Writes a printable, bounded rendering of a Kafka record key into out (room bytes, always
 * NUL-terminated; longer renderings end in "..."): a row key (pgfanout.v1.Key) as its
 * columns, "id=100, name='x'"; a logical message's key (row_key 0) as its quoted prefix; bytes
 * that do not decode as hex.  For error messages and dead-letter records; allocates while
 * decoding, so keep it off the hot path. */
void pgf_proto_key_text(const uint8_t *key, size_t len, int row_key, char *out, size_t room);

#endif
