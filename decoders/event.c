/* event.c - op names and snapshot rows as events. */
#include "decoders/event.h"

#include <stddef.h>

/* Returns a static name for op. */
const char *pgf_op_name(enum pgf_op op)
{
    static const char *const names[] = {"insert", "update", "delete", "truncate", "message", "read", "none"};
    return names[op];
}

/* Fills a read event from a snapshot row; see event.h. */
void pgf_event_read(struct pgf_event *ev, const struct pgf_relation *rel, const struct pgf_value *row,
                    struct pgf_value *key_out, const struct pgf_txn *txn, uint64_t lsn)
{
    for (uint16_t i = 0; i < rel->natts; i++)
        key_out[i] = rel->attrs[i].is_key ? row[i] : (struct pgf_value){.kind = PGF_VALUE_ABSENT};
    *ev = (struct pgf_event){.op = PGF_OP_READ, .lsn = lsn, .txn = txn, .rel = rel, .key = key_out, .after = row};
}
