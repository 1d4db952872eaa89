/* event.c - op names and snapshot rows as events. */
#include "decoders/event.h"

#include <stddef.h>

#include "decoders/pgoutput.h"

/* Maps a message type to its op. */
enum pgf_op pgf_op_of(const struct pgo_msg *msg)
{
    switch (msg->type) {
    case PGO_MSG_INSERT: return PGF_OP_INSERT;
    case PGO_MSG_UPDATE: return PGF_OP_UPDATE;
    case PGO_MSG_DELETE: return PGF_OP_DELETE;
    case PGO_MSG_TRUNCATE: return PGF_OP_TRUNCATE;
    case PGO_MSG_MESSAGE: return PGF_OP_MESSAGE;
    default: return PGF_OP_NONE;
    }
}

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

/* Returns the key value of column att, or NULL; see event.h. */
const struct pgf_value *pgf_change_key_value(const struct pgo_msg *msg, uint16_t att)
{
    const struct pgo_change *c = &msg->u.change;
    if (att >= c->rel->natts || !c->rel->attrs[att].is_key)
        return NULL;
    if (msg->type == PGO_MSG_DELETE)
        return &c->old_tuple.values[att];
    const struct pgf_value *v = &c->new_tuple.values[att];
    /* A key column kept out of line and not changed is sent as 'u' in the new row;
     * the old image, when there is one, still has its value. */
    if (v->kind == PGF_VALUE_UNCHANGED_TOAST && c->old_kind != 0 &&
        c->old_tuple.values[att].kind != PGF_VALUE_UNCHANGED_TOAST)
        return &c->old_tuple.values[att];
    return v;
}

/* Returns the old image, or NULL; see event.h. */
const struct pgo_tuple *pgf_change_before(const struct pgo_msg *msg, int *only_keys)
{
    const struct pgo_change *c = &msg->u.change;
    *only_keys = c->old_kind == 'K';
    /* A delete's old key is already the event's key; only a whole old row adds anything. */
    if (msg->type == PGO_MSG_DELETE && c->old_kind == 'K')
        return NULL;
    return c->old_kind ? &c->old_tuple : NULL;
}

/* Returns the new image, or NULL for delete. */
const struct pgo_tuple *pgf_change_after(const struct pgo_msg *msg)
{
    return msg->type == PGO_MSG_DELETE ? NULL : &msg->u.change.new_tuple;
}
