/* event.c - op names, snapshot rows as events, and record keys. */
#include "decoders/event.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

/* True when v carries a value a key can use. */
static int usable(const struct pgf_value *v)
{
    return v->kind != PGF_VALUE_ABSENT && v->kind != PGF_VALUE_UNCHANGED_TOAST;
}

/* Picks a record-key column's value; see event.h. */
const struct pgf_value *pgf_event_key_value(const struct pgf_event *ev, uint16_t att)
{
    if (ev->rel == NULL || att >= ev->rel->natts)
        return NULL;
    const struct pgf_value *cands[3] = {NULL, NULL, NULL};
    if (ev->op == PGF_OP_DELETE) {
        cands[0] = ev->before ? &ev->before[att] : NULL;
        cands[1] = ev->key ? &ev->key[att] : NULL;
    } else {
        /* key holds the new row's identity values with unchanged TOAST already resolved. */
        cands[0] = ev->after ? &ev->after[att] : NULL;
        cands[1] = ev->before ? &ev->before[att] : NULL;
        cands[2] = ev->key ? &ev->key[att] : NULL;
    }
    for (int i = 0; i < 3; i++)
        if (cands[i] && usable(cands[i]))
            return cands[i];
    return NULL;
}

/* Compares the old and new record key of an update; see event.h. */
int pgf_event_key_changed(const struct pgf_event *ev)
{
    if (ev->op != PGF_OP_UPDATE || ev->before == NULL || ev->after == NULL || ev->rel->nkey == 0)
        return 0;
    for (uint16_t k = 0; k < ev->rel->nkey; k++) {
        uint16_t att = ev->rel->key_atts[k];
        const struct pgf_value *o = &ev->before[att], *n = &ev->after[att];
        if (!usable(o))
            return 0; /* the old image lacks it: an old key of other columns, say */
        if (n->kind == PGF_VALUE_UNCHANGED_TOAST)
            continue; /* not changed, by definition */
        if (o->kind != n->kind || o->len != n->len || (o->len && memcmp(o->data, n->data, o->len) != 0))
            return 1;
    }
    return 0;
}

/* Copies a record key into rel; see event.h. */
int pgf_relation_set_key(struct pgf_relation *rel, const uint16_t *atts, uint16_t n)
{
    uint16_t *copy = NULL;
    if (n) {
        copy = malloc(n * sizeof *copy);
        if (copy == NULL)
            return -1;
        memcpy(copy, atts, n * sizeof *copy);
    }
    free(rel->key_atts);
    rel->key_atts = copy;
    rel->nkey = n;
    return 0;
}
