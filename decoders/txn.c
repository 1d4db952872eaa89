/* txn.c - transaction assembly and pgoutput changes as events; see txn.h. */
#include "decoders/txn.h"

#include <stdlib.h>
#include <string.h>

struct pgf_txn_asm {
    int has_endpos;
    uint64_t endpos;
    struct pgf_txn txn;
    int in_txn;
    /* PostgreSQL allows origin names of 512 bytes (MAX_RONAME_LEN); a longer one, which no
     * server sends, is cut at a character boundary. */
    char origin[513];
    /* Event scratch, grown to the widest relation seen: [0, cap) key, [cap, 2*cap) before. */
    struct pgf_value *vals;
    size_t cap;
};

/* Copies the C string name into out (room bytes), cut short of room at a UTF-8 character
 * boundary rather than inside a character. */
static void copy_origin(char *out, size_t room, const char *name)
{
    size_t n = strlen(name);
    if (n >= room) {
        n = room - 1;
        while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
            n--; /* name[n] continues a character: cut before the character */
    }
    memcpy(out, name, n);
    out[n] = '\0';
}

/* Returns a new assembler; see txn.h. */
struct pgf_txn_asm *pgf_txn_asm_new(int has_endpos, uint64_t endpos)
{
    struct pgf_txn_asm *a = calloc(1, sizeof *a);
    if (a != NULL) {
        a->has_endpos = has_endpos;
        a->endpos = endpos;
    }
    return a;
}

/* Frees the assembler and its scratch. */
void pgf_txn_asm_free(struct pgf_txn_asm *a)
{
    if (a == NULL)
        return;
    free(a->vals);
    free(a);
}

/* Returns 1 inside Begin..Commit. */
int pgf_txn_asm_in_txn(const struct pgf_txn_asm *a)
{
    return a->in_txn;
}

/* Grows the scratch to natts columns per image; returns 0, or -1 when out of memory. */
static int reserve(struct pgf_txn_asm *a, size_t natts)
{
    /* Allocated even for a relation with no columns, whose events still take a->vals + cap:
     * arithmetic on a NULL pointer is undefined, even adding 0. */
    if (a->vals != NULL && natts <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : 16;
    while (cap < natts)
        cap *= 2;
    struct pgf_value *v = realloc(a->vals, 2 * cap * sizeof *v);
    if (v == NULL)
        return -1;
    a->vals = v;
    a->cap = cap;
    return 0;
}

/* Fills a row change's event from an insert, update or delete, by pgoutput's rules:
 * - key: the replica-identity columns, from the new row for insert and update (a key column
 *   sent as unchanged TOAST takes the old image's value when there is one), from the old key
 *   or row for delete;
 * - before: the old row ('O'), an update's old key ('K', key columns only), or none (no old
 *   tuple, or a delete's old key, which is the key itself);
 * - after: the new row, or none for delete.
 * key and before are written into a's scratch (room checked by the caller). */
static void row_event(struct pgf_txn_asm *a, const struct pgo_msg *msg, struct pgf_event *ev)
{
    const struct pgo_change *c = &msg->u.change;
    const struct pgf_relation *rel = c->rel;
    const struct pgf_value *old = c->old_kind ? c->old_tuple.values : NULL;
    int is_delete = msg->type == PGO_MSG_DELETE;
    struct pgf_value *key = a->vals, *before = a->vals + a->cap;
    for (uint16_t i = 0; i < rel->natts; i++) {
        key[i] = (struct pgf_value){.kind = PGF_VALUE_ABSENT};
        if (!rel->attrs[i].is_key)
            continue;
        if (is_delete)
            key[i] = old[i];
        else if (c->new_tuple.values[i].kind == PGF_VALUE_UNCHANGED_TOAST && old &&
                 old[i].kind != PGF_VALUE_UNCHANGED_TOAST)
            key[i] = old[i]; /* kept out of line and not changed: the old image still has it */
        else
            key[i] = c->new_tuple.values[i];
    }
    ev->rel = rel;
    ev->key = key;
    ev->after = is_delete ? NULL : c->new_tuple.values;
    ev->before = NULL;
    if (c->old_kind == 'O') {
        ev->before = old;
    } else if (c->old_kind == 'K' && !is_delete) {
        for (uint16_t i = 0; i < rel->natts; i++)
            before[i] = rel->attrs[i].is_key ? old[i] : (struct pgf_value){.kind = PGF_VALUE_ABSENT};
        ev->before = before;
    }
}

/* True when --endpos is set and lsn lies beyond it. */
static int past_endpos(const struct pgf_txn_asm *a, uint64_t lsn)
{
    return a->has_endpos && lsn > a->endpos;
}

/* Hands one event on, unless it is our own heartbeat. */
static enum pgf_txn_result hand_on(const struct pgf_event *ev, const struct pgf_txn_consumer *c)
{
    if (ev->op == PGF_OP_MESSAGE && strcmp(ev->message.prefix, PGF_HEARTBEAT_PREFIX) == 0)
        return PGF_TXN_OK;
    return c->event(c->ctx, ev) != 0 ? PGF_TXN_STOPPED : PGF_TXN_OK;
}

/* Builds the event of a change or message at lsn and hands it on. */
static enum pgf_txn_result change(struct pgf_txn_asm *a, uint64_t lsn, const struct pgo_msg *msg,
                                  const struct pgf_txn_consumer *c)
{
    struct pgf_event ev = {.lsn = lsn, .txn = &a->txn};
    switch (msg->type) {
    case PGO_MSG_INSERT: ev.op = PGF_OP_INSERT; break;
    case PGO_MSG_UPDATE: ev.op = PGF_OP_UPDATE; break;
    case PGO_MSG_DELETE: ev.op = PGF_OP_DELETE; break;
    case PGO_MSG_TRUNCATE: ev.op = PGF_OP_TRUNCATE; break;
    default: ev.op = PGF_OP_MESSAGE; break;
    }
    if (ev.op == PGF_OP_MESSAGE) {
        const struct pgo_message *m = &msg->u.message;
        /* A message carries its own record's position; XLogData's may be the commit's. */
        ev.lsn = m->lsn;
        ev.message.transactional = m->transactional;
        ev.message.prefix = m->prefix;
        ev.message.content = m->content;
        ev.message.content_len = m->content_len;
        if (!m->transactional) {
            /* Decoded on its own, outside any transaction: delivered and confirmed as one. */
            if (past_endpos(a, m->lsn))
                return PGF_TXN_ENDPOS;
            /* m->lsn is the end of the message's record (PostgreSQL hands on its endptr),
             * so confirming it skips the message on a replay, which tests the record's start,
             * but not a commit record that starts right there: one past it would lose it. */
            struct pgf_txn alone = {.end_lsn = m->lsn};
            ev.txn = NULL;
            enum pgf_txn_result rc = hand_on(&ev, c);
            if (rc == PGF_TXN_OK && c->commit(c->ctx, &alone) != 0)
                rc = PGF_TXN_STOPPED;
            return rc;
        }
    }
    if (!a->in_txn)
        return PGF_TXN_OUT_OF_STEP;
    if (ev.op == PGF_OP_TRUNCATE) {
        ev.truncate.nrels = msg->u.truncate.nrelids;
        ev.truncate.rels = msg->u.truncate.rels;
        ev.truncate.options = msg->u.truncate.options;
    } else if (ev.op != PGF_OP_MESSAGE) {
        if (reserve(a, msg->u.change.rel->natts) != 0)
            return PGF_TXN_OOM;
        row_event(a, msg, &ev);
    }
    return hand_on(&ev, c);
}

/* Acts on one decoded message; see txn.h. */
enum pgf_txn_result pgf_txn_asm_feed(struct pgf_txn_asm *a, uint64_t lsn, const struct pgo_msg *msg,
                                     const struct pgf_txn_consumer *c)
{
    switch (msg->type) {
    case PGO_MSG_BEGIN:
        /* A transaction that commits after --endpos is not ours to write. */
        if (past_endpos(a, msg->u.begin.final_lsn))
            return PGF_TXN_ENDPOS;
        memset(&a->txn, 0, sizeof a->txn);
        a->txn.xid = msg->u.begin.xid;
        a->txn.commit_lsn = msg->u.begin.final_lsn;
        a->txn.commit_time = msg->u.begin.commit_time;
        a->in_txn = 1;
        return PGF_TXN_OK;
    case PGO_MSG_COMMIT:
        a->txn.end_lsn = msg->u.commit.end_lsn;
        a->txn.commit_time = msg->u.commit.commit_time;
        a->in_txn = 0;
        if (c->commit(c->ctx, &a->txn) != 0)
            return PGF_TXN_STOPPED;
        return a->has_endpos && msg->u.commit.end_lsn >= a->endpos ? PGF_TXN_ENDPOS : PGF_TXN_OK;
    case PGO_MSG_ORIGIN:
        copy_origin(a->origin, sizeof a->origin, msg->u.origin.name);
        a->txn.origin = a->origin;
        return PGF_TXN_OK;
    case PGO_MSG_RELATION:
    case PGO_MSG_TYPE:
        return PGF_TXN_OK;
    case PGO_MSG_INSERT:
    case PGO_MSG_UPDATE:
    case PGO_MSG_DELETE:
    case PGO_MSG_TRUNCATE:
    case PGO_MSG_MESSAGE:
        return change(a, lsn, msg, c);
    }
    return PGF_TXN_OK;
}

/* Closes a cut-off transaction; see txn.h. */
void pgf_txn_asm_abandon(struct pgf_txn_asm *a, const struct pgf_txn_consumer *c)
{
    if (!a->in_txn)
        return;
    a->in_txn = 0;
    struct pgf_txn abandoned = {.end_lsn = 0};
    c->commit(c->ctx, &abandoned);
}
