/* pgoutput.c - pgoutput protocol-1 decoder: one reader per message, every length checked. */
#include "decoders/pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

struct pgo_decoder {
    /* Relation cache: open addressing on OID, linear probing; entries are never removed,
     * only replaced, because pgoutput never announces a dropped relation. */
    struct pgf_relation **rels;
    size_t rel_cap; /* power of two */
    size_t rel_count;

    /* Scratch for the message being decoded; reused so steady-state decoding allocates nothing. */
    struct pgf_value *old_vals;
    struct pgf_value *new_vals;
    size_t vals_cap;
    const struct pgf_relation **trunc_rels;
    size_t trunc_cap;

    char errstr[256];
};

/* A bounded cursor over one message; type names the message in errors. */
struct reader {
    struct pgo_decoder *dec;
    const uint8_t *buf;
    size_t len;
    size_t pos;
    int type;
};

/* Returns a static lower-case name for a message type byte. */
const char *pgo_msg_type_name(int type)
{
    switch (type) {
    case PGO_MSG_BEGIN: return "begin";
    case PGO_MSG_COMMIT: return "commit";
    case PGO_MSG_ORIGIN: return "origin";
    case PGO_MSG_RELATION: return "relation";
    case PGO_MSG_TYPE: return "type";
    case PGO_MSG_INSERT: return "insert";
    case PGO_MSG_UPDATE: return "update";
    case PGO_MSG_DELETE: return "delete";
    case PGO_MSG_TRUNCATE: return "truncate";
    case PGO_MSG_MESSAGE: return "message";
    default: return "unknown";
    }
}

/* Records an error for the message under r, naming its type and offset; returns code. */
static int fail(struct reader *r, int code, const char *fmt, ...)
{
    char detail[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (r->type >= 0x20 && r->type < 0x7f)
        snprintf(r->dec->errstr, sizeof r->dec->errstr, "%s message ('%c'): %s at offset %zu of %zu",
                 pgo_msg_type_name(r->type), r->type, detail, r->pos, r->len);
    else
        snprintf(r->dec->errstr, sizeof r->dec->errstr, "message type 0x%02x: %s at offset %zu of %zu",
                 (unsigned)r->type & 0xffu, detail, r->pos, r->len);
    return code;
}

/* Fails with TRUNCATED unless n more bytes can be read; what names the field. */
static int need(struct reader *r, size_t n, const char *what)
{
    if (r->len - r->pos < n)
        return fail(r, PGO_ERR_TRUNCATED, "truncated: %s needs %zu bytes, %zu left", what, n,
                    r->len - r->pos);
    return PGO_OK;
}

/* Reads one byte into *v. */
static int rd_u8(struct reader *r, uint8_t *v, const char *what)
{
    int rc = need(r, 1, what);
    if (rc)
        return rc;
    *v = r->buf[r->pos++];
    return PGO_OK;
}

/* Reads a big-endian 16-bit integer into *v. */
static int rd_u16(struct reader *r, uint16_t *v, const char *what)
{
    int rc = need(r, 2, what);
    if (rc)
        return rc;
    *v = (uint16_t)((uint16_t)r->buf[r->pos] << 8 | r->buf[r->pos + 1]);
    r->pos += 2;
    return PGO_OK;
}

/* Reads a big-endian 32-bit integer into *v. */
static int rd_u32(struct reader *r, uint32_t *v, const char *what)
{
    int rc = need(r, 4, what);
    if (rc)
        return rc;
    const uint8_t *p = r->buf + r->pos;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    r->pos += 4;
    return PGO_OK;
}

/* Reads a big-endian 64-bit integer into *v. */
static int rd_u64(struct reader *r, uint64_t *v, const char *what)
{
    int rc = need(r, 8, what);
    if (rc)
        return rc;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | r->buf[r->pos + (size_t)i];
    *v = x;
    r->pos += 8;
    return PGO_OK;
}

/* Points *s at a NUL-terminated string inside the message; fails if no NUL before the end. */
static int rd_str(struct reader *r, const char **s, const char *what)
{
    const uint8_t *nul = memchr(r->buf + r->pos, '\0', r->len - r->pos);
    if (nul == NULL)
        return fail(r, PGO_ERR_TRUNCATED, "truncated: %s has no terminating NUL", what);
    *s = (const char *)(r->buf + r->pos);
    r->pos = (size_t)(nul - r->buf) + 1;
    return PGO_OK;
}

/* Grows the tuple scratch arrays to hold n values; returns PGO_OK or PGO_ERR_OOM. */
static int reserve_vals(struct pgo_decoder *dec, size_t n)
{
    /* Allocated even for n = 0: a row of a relation with no columns is an empty image, not
     * a missing one (NULL), or an insert into CREATE TABLE t () would have no after. */
    if (dec->new_vals != NULL && n <= dec->vals_cap)
        return PGO_OK;
    size_t cap = dec->vals_cap ? dec->vals_cap : 16;
    while (cap < n)
        cap *= 2;
    struct pgf_value *o = realloc(dec->old_vals, cap * sizeof *o);
    if (o == NULL)
        return PGO_ERR_OOM;
    dec->old_vals = o;
    struct pgf_value *nv = realloc(dec->new_vals, cap * sizeof *nv);
    if (nv == NULL)
        return PGO_ERR_OOM;
    dec->new_vals = nv;
    dec->vals_cap = cap;
    return PGO_OK;
}

/* Reads a TupleData into vals (capacity checked against rel) and fills *tup. */
static int rd_tuple(struct reader *r, const struct pgf_relation *rel, struct pgf_value *vals,
                    struct pgo_tuple *tup)
{
    uint16_t natts;
    int rc = rd_u16(r, &natts, "tuple column count");
    if (rc)
        return rc;
    if (natts != rel->natts)
        return fail(r, PGO_ERR_RELATION, "tuple has %u columns but relation %s.%s (OID %u) has %u",
                    natts, rel->nspname, rel->relname, rel->oid, rel->natts);
    for (uint16_t i = 0; i < natts; i++) {
        uint8_t kind;
        if ((rc = rd_u8(r, &kind, "column kind")))
            return rc;
        vals[i].kind = (enum pgf_value_kind)kind;
        vals[i].len = 0;
        vals[i].data = NULL;
        switch (kind) {
        case PGF_VALUE_NULL:
        case PGF_VALUE_UNCHANGED_TOAST:
            break;
        case PGF_VALUE_TEXT:
        case PGF_VALUE_BINARY: {
            uint32_t len;
            if ((rc = rd_u32(r, &len, "column length")))
                return rc;
            if ((rc = need(r, len, "column value")))
                return rc;
            vals[i].len = len;
            vals[i].data = (const char *)(r->buf + r->pos);
            r->pos += len;
            break;
        }
        default:
            r->pos--; /* report the offset of the bad marker itself */
            return fail(r, PGO_ERR_UNKNOWN, "unknown column kind 0x%02x in column %u", kind, i + 1);
        }
    }
    tup->natts = natts;
    tup->values = vals;
    return PGO_OK;
}

/* Returns the cache slot for oid: the entry's slot, or the empty slot where it belongs. */
static struct pgf_relation **rel_slot(const struct pgo_decoder *dec, uint32_t oid)
{
    size_t mask = dec->rel_cap - 1;
    size_t i = (oid * 2654435761u) & mask;
    while (dec->rels[i] != NULL && dec->rels[i]->oid != oid)
        i = (i + 1) & mask;
    return &dec->rels[i];
}

/* Returns the cached relation for oid, or NULL. */
const struct pgf_relation *pgo_decoder_relation(const struct pgo_decoder *dec, uint32_t oid)
{
    return dec->rel_cap ? *rel_slot(dec, oid) : NULL;
}

/* Frees one relation entry and everything it owns. */
static void rel_free(struct pgf_relation *rel)
{
    if (rel == NULL)
        return;
    for (uint16_t i = 0; i < rel->natts; i++)
        free(rel->attrs[i].name);
    free(rel->attrs);
    free(rel->key_atts);
    free(rel->nspname);
    free(rel->relname);
    free(rel);
}

/* Doubles the relation table when it is half full; returns PGO_OK or PGO_ERR_OOM. */
static int rel_grow(struct pgo_decoder *dec)
{
    if (dec->rel_cap && dec->rel_count * 2 < dec->rel_cap)
        return PGO_OK;
    size_t cap = dec->rel_cap ? dec->rel_cap * 2 : 64;
    struct pgf_relation **old = dec->rels;
    size_t old_cap = dec->rel_cap;
    dec->rels = calloc(cap, sizeof *dec->rels);
    if (dec->rels == NULL) {
        dec->rels = old;
        return PGO_ERR_OOM;
    }
    dec->rel_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i])
            *rel_slot(dec, old[i]->oid) = old[i];
    free(old);
    return PGO_OK;
}

/* Looks up the relation a row message names; fails with RELATION if it was never described. */
static int rd_relid(struct reader *r, const struct pgf_relation **rel)
{
    uint32_t oid;
    int rc = rd_u32(r, &oid, "relation OID");
    if (rc)
        return rc;
    *rel = pgo_decoder_relation(r->dec, oid);
    if (*rel == NULL) {
        r->pos -= 4;
        return fail(r, PGO_ERR_RELATION, "relation OID %u was never described by a Relation message",
                    oid);
    }
    return PGO_OK;
}

/* Begin: final LSN, commit time, xid. */
static int read_begin(struct reader *r, struct pgo_begin *b)
{
    uint64_t t;
    int rc;
    if ((rc = rd_u64(r, &b->final_lsn, "final LSN")) || (rc = rd_u64(r, &t, "commit time")) ||
        (rc = rd_u32(r, &b->xid, "xid")))
        return rc;
    b->commit_time = (int64_t)t;
    return PGO_OK;
}

/* Commit: flags, commit LSN, end LSN, commit time. */
static int read_commit(struct reader *r, struct pgo_commit *c)
{
    uint64_t t;
    int rc;
    if ((rc = rd_u8(r, &c->flags, "flags")) || (rc = rd_u64(r, &c->commit_lsn, "commit LSN")) ||
        (rc = rd_u64(r, &c->end_lsn, "end LSN")) || (rc = rd_u64(r, &t, "commit time")))
        return rc;
    c->commit_time = (int64_t)t;
    return PGO_OK;
}

/* Origin: origin LSN and name. */
static int read_origin(struct reader *r, struct pgo_origin *o)
{
    int rc;
    if ((rc = rd_u64(r, &o->lsn, "origin LSN")) || (rc = rd_str(r, &o->name, "origin name")))
        return rc;
    return PGO_OK;
}

/* Returns a malloc'd copy of s, or NULL. */
static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Reads one column description; a->name points into the message until copied. */
static int rd_attr(struct reader *r, struct pgf_column *a)
{
    uint8_t flags = 0;
    const char *name = NULL;
    uint32_t typ = 0, mod = 0;
    int rc;
    if ((rc = rd_u8(r, &flags, "column flags")) || (rc = rd_str(r, &name, "column name")) ||
        (rc = rd_u32(r, &typ, "column type OID")) || (rc = rd_u32(r, &mod, "column type modifier")))
        return rc;
    a->name = (char *)name;
    a->is_key = (flags & 1) != 0;
    a->type_oid = typ;
    a->type_mod = (int32_t)mod;
    return PGO_OK;
}

/* Relation: parses into a new cache entry and replaces any entry for the same OID,
 * so rows after a mid-stream ALTER TABLE decode with the new columns. */
static int read_relation(struct reader *r, const struct pgf_relation **out)
{
    uint32_t oid;
    const char *nsp = NULL, *name = NULL; /* set on every success path; GCC 12 -O3 cannot tell */
    uint8_t ident;
    uint16_t natts;
    int rc;
    if ((rc = rd_u32(r, &oid, "relation OID")) || (rc = rd_str(r, &nsp, "namespace")) ||
        (rc = rd_str(r, &name, "relation name")) || (rc = rd_u8(r, &ident, "replica identity")) ||
        (rc = rd_u16(r, &natts, "column count")))
        return rc;
    if (ident != 'd' && ident != 'n' && ident != 'f' && ident != 'i')
        return fail(r, PGO_ERR_BAD, "unknown replica identity 0x%02x", ident);

    /* Validate every column before allocating, so a bad message leaves the cache untouched. */
    size_t cols_at = r->pos;
    for (uint16_t i = 0; i < natts; i++) {
        struct pgf_column a;
        if ((rc = rd_attr(r, &a)))
            return rc;
    }
    if (r->pos != r->len) /* checked here so a bad message never enters the cache */
        return fail(r, PGO_ERR_BAD, "%zu trailing bytes", r->len - r->pos);

    struct pgf_relation *rel = calloc(1, sizeof *rel);
    if (rel == NULL)
        return PGO_ERR_OOM;
    rel->oid = oid;
    rel->replident = (char)ident;
    rel->nspname = dup_str(nsp);
    rel->relname = dup_str(name);
    rel->attrs = calloc(natts ? natts : 1, sizeof *rel->attrs);
    if (!rel->nspname || !rel->relname || !rel->attrs) {
        rel_free(rel);
        return PGO_ERR_OOM;
    }
    r->pos = cols_at;
    for (uint16_t i = 0; i < natts; i++) {
        struct pgf_column a;
        rc = rd_attr(r, &a); /* validated above, so this cannot fail */
        rel->attrs[i] = a;
        rel->attrs[i].name = rc ? NULL : dup_str(a.name);
        rel->natts = (uint16_t)(i + 1); /* so rel_free frees exactly what was set */
        if (rel->attrs[i].name == NULL) {
            rel_free(rel);
            return rc ? rc : PGO_ERR_OOM;
        }
    }
    /* Until cdc/keys.c chooses, the record key is the replica identity, in column order. */
    rel->key_atts = calloc(natts ? natts : 1, sizeof *rel->key_atts);
    if (rel->key_atts == NULL) {
        rel_free(rel);
        return PGO_ERR_OOM;
    }
    for (uint16_t i = 0; i < natts; i++)
        if (rel->attrs[i].is_key)
            rel->key_atts[rel->nkey++] = i;
    rel->names_utf8 = pgf_utf8_valid(rel->nspname, strlen(rel->nspname)) &&
                      pgf_utf8_valid(rel->relname, strlen(rel->relname));
    for (uint16_t i = 0; i < natts && rel->names_utf8; i++)
        rel->names_utf8 = pgf_utf8_valid(rel->attrs[i].name, strlen(rel->attrs[i].name));
    if ((rc = rel_grow(r->dec))) {
        rel_free(rel);
        return rc;
    }
    struct pgf_relation **slot = rel_slot(r->dec, oid);
    if (*slot)
        rel_free(*slot);
    else
        r->dec->rel_count++;
    *slot = rel;
    *out = rel;
    return PGO_OK;
}

/* Sets a cached relation's record key; see pgoutput.h. */
int pgo_decoder_set_key(struct pgo_decoder *dec, uint32_t oid, const uint16_t *atts, uint16_t n)
{
    struct pgf_relation *rel = dec->rel_cap ? *rel_slot(dec, oid) : NULL;
    if (rel == NULL)
        return 0; /* gone: a later Relation message brings its own key */
    for (uint16_t i = 0; i < n; i++)
        if (atts[i] >= rel->natts)
            return -1;
    return pgf_relation_set_key(rel, atts, n);
}

/* Type: OID, namespace, name. */
static int read_type(struct reader *r, struct pgo_type *t)
{
    int rc;
    if ((rc = rd_u32(r, &t->oid, "type OID")) || (rc = rd_str(r, &t->nspname, "type namespace")) ||
        (rc = rd_str(r, &t->typname, "type name")))
        return rc;
    return PGO_OK;
}

/* Reads the byte that announces a tuple and checks it is one of the allowed markers. */
static int rd_marker(struct reader *r, const char *allowed, uint8_t *m)
{
    int rc = rd_u8(r, m, "tuple marker");
    if (rc)
        return rc;
    if (*m == 0 || strchr(allowed, *m) == NULL) {
        r->pos--;
        return fail(r, PGO_ERR_UNKNOWN, "unexpected tuple marker 0x%02x (want one of %s)", *m, allowed);
    }
    return PGO_OK;
}

/* Insert: relation OID, 'N', new tuple. */
static int read_insert(struct reader *r, struct pgo_change *c)
{
    uint8_t m;
    int rc;
    if ((rc = rd_relid(r, &c->rel)) || (rc = reserve_vals(r->dec, c->rel->natts)) ||
        (rc = rd_marker(r, "N", &m)))
        return rc;
    c->old_kind = 0;
    c->old_tuple.natts = 0;
    c->old_tuple.values = NULL;
    return rd_tuple(r, c->rel, r->dec->new_vals, &c->new_tuple);
}

/* Update: relation OID, optional 'K' or 'O' old tuple, then 'N' new tuple. */
static int read_update(struct reader *r, struct pgo_change *c)
{
    uint8_t m;
    int rc;
    if ((rc = rd_relid(r, &c->rel)) || (rc = reserve_vals(r->dec, c->rel->natts)) ||
        (rc = rd_marker(r, "KON", &m)))
        return rc;
    c->old_kind = 0;
    c->old_tuple.natts = 0;
    c->old_tuple.values = NULL;
    if (m != 'N') {
        c->old_kind = (char)m;
        if ((rc = rd_tuple(r, c->rel, r->dec->old_vals, &c->old_tuple)) ||
            (rc = rd_marker(r, "N", &m)))
            return rc;
    }
    return rd_tuple(r, c->rel, r->dec->new_vals, &c->new_tuple);
}

/* Delete: relation OID, 'K' or 'O', old tuple. */
static int read_delete(struct reader *r, struct pgo_change *c)
{
    uint8_t m;
    int rc;
    if ((rc = rd_relid(r, &c->rel)) || (rc = reserve_vals(r->dec, c->rel->natts)) ||
        (rc = rd_marker(r, "KO", &m)))
        return rc;
    c->old_kind = (char)m;
    c->new_tuple.natts = 0;
    c->new_tuple.values = NULL;
    return rd_tuple(r, c->rel, r->dec->old_vals, &c->old_tuple);
}

/* Truncate: relation count, options, relation OIDs. */
static int read_truncate(struct reader *r, struct pgo_truncate *t)
{
    uint32_t n;
    int rc;
    if ((rc = rd_u32(r, &n, "relation count")) || (rc = rd_u8(r, &t->options, "options")))
        return rc;
    /* Check the whole array is present before trusting n for an allocation. */
    if (n > (r->len - r->pos) / 4)
        return fail(r, PGO_ERR_TRUNCATED, "truncated: %u relation OIDs need %zu bytes, %zu left", n,
                    (size_t)n * 4, r->len - r->pos);
    if (n > r->dec->trunc_cap) {
        const struct pgf_relation **a = realloc(r->dec->trunc_rels, n * sizeof *a);
        if (a == NULL)
            return PGO_ERR_OOM;
        r->dec->trunc_rels = a;
        r->dec->trunc_cap = n;
    }
    for (uint32_t i = 0; i < n; i++)
        if ((rc = rd_relid(r, &r->dec->trunc_rels[i])))
            return rc;
    t->nrelids = n;
    t->rels = r->dec->trunc_rels;
    return PGO_OK;
}

/* Message: flags, LSN, prefix, content length, content. */
static int read_message(struct reader *r, struct pgo_message *m)
{
    uint8_t flags;
    int rc;
    if ((rc = rd_u8(r, &flags, "flags")) || (rc = rd_u64(r, &m->lsn, "message LSN")) ||
        (rc = rd_str(r, &m->prefix, "prefix")) || (rc = rd_u32(r, &m->content_len, "content length")) ||
        (rc = need(r, m->content_len, "content")))
        return rc;
    m->transactional = (flags & 1) != 0;
    m->content = (const char *)(r->buf + r->pos);
    r->pos += m->content_len;
    return PGO_OK;
}

/* Decodes one message; see pgoutput.h. */
int pgo_decode(struct pgo_decoder *dec, const uint8_t *buf, size_t len, struct pgo_msg *out)
{
    struct reader r = {.dec = dec, .buf = buf, .len = len, .pos = 0, .type = 0};
    dec->errstr[0] = '\0';
    if (len == 0)
        return fail(&r, PGO_ERR_TRUNCATED, "empty message");
    r.type = buf[0];
    r.pos = 1;
    out->type = (enum pgo_msg_type)r.type;
    int rc;
    switch (r.type) {
    case PGO_MSG_BEGIN: rc = read_begin(&r, &out->u.begin); break;
    case PGO_MSG_COMMIT: rc = read_commit(&r, &out->u.commit); break;
    case PGO_MSG_ORIGIN: rc = read_origin(&r, &out->u.origin); break;
    case PGO_MSG_RELATION: rc = read_relation(&r, &out->u.relation); break;
    case PGO_MSG_TYPE: rc = read_type(&r, &out->u.typ); break;
    case PGO_MSG_INSERT: rc = read_insert(&r, &out->u.change); break;
    case PGO_MSG_UPDATE: rc = read_update(&r, &out->u.change); break;
    case PGO_MSG_DELETE: rc = read_delete(&r, &out->u.change); break;
    case PGO_MSG_TRUNCATE: rc = read_truncate(&r, &out->u.truncate); break;
    case PGO_MSG_MESSAGE: rc = read_message(&r, &out->u.message); break;
    default:
        r.pos = 0;
        return fail(&r, PGO_ERR_UNKNOWN, "unknown message type");
    }
    if (rc == PGO_ERR_OOM)
        return fail(&r, rc, "out of memory");
    if (rc)
        return rc;
    /* Protocol 1 messages have a fixed layout; extra bytes mean we misread the stream. */
    if (r.pos != r.len)
        return fail(&r, PGO_ERR_BAD, "%zu trailing bytes", r.len - r.pos);
    return PGO_OK;
}

/* Returns a new decoder, or NULL when out of memory. */
struct pgo_decoder *pgo_decoder_new(void)
{
    return calloc(1, sizeof(struct pgo_decoder));
}

/* Frees the decoder and all it owns. */
void pgo_decoder_free(struct pgo_decoder *dec)
{
    if (dec == NULL)
        return;
    for (size_t i = 0; i < dec->rel_cap; i++)
        rel_free(dec->rels[i]);
    free(dec->rels);
    free(dec->old_vals);
    free(dec->new_vals);
    free(dec->trunc_rels);
    free(dec);
}

/* Returns the last error text, "" after a success. */
const char *pgo_decoder_errstr(const struct pgo_decoder *dec)
{
    return dec->errstr;
}
