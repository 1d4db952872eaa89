/* event.c - key, before and after of a row change, by pgoutput's rules. */
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
    static const char *const names[] = {"insert", "update", "delete", "truncate", "message", "none"};
    return names[op];
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
