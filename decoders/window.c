/* window.c - the watermark window; the rule is in window.h. */
#include "decoders/window.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A watched table and its key columns. */
struct watched {
    char *schema, *table;
    int ncols;
    char **cols;
};

/* One remembered change: a key of a watched table changed by transaction xid. */
struct entry {
    uint32_t xid;
    unsigned char after_low; /* decoded after the current chunk's low watermark */
    int table;
    char *key; /* NULL: the change's key cannot be told, or a truncate: the chunk is unusable */
    size_t klen;
};

struct pgf_window {
    struct watched *tables;
    int ntables;
    struct entry *e;
    size_t n, cap;
    int low; /* the low watermark of the chunk under way was seen */
};

/* Parses a snapshot; see window.h. */
int pgf_snap_parse(const char *text, struct pgf_snap *s)
{
    memset(s, 0, sizeof *s);
    char *end;
    unsigned long long xmin = strtoull(text, &end, 10);
    if (*end != ':')
        return -1;
    unsigned long long xmax = strtoull(end + 1, &end, 10);
    if (*end != ':')
        return -1;
    s->xmin = (uint32_t)xmin;
    s->xmax = (uint32_t)xmax;
    const char *p = end + 1;
    size_t cap = 0;
    while (*p) {
        unsigned long long x = strtoull(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0'))
            return pgf_snap_free(s), -1;
        if (s->nxip == cap) {
            uint32_t *nx = realloc(s->xip, (cap = cap ? cap * 2 : 8) * sizeof *nx);
            if (nx == NULL)
                return pgf_snap_free(s), -1;
            s->xip = nx;
        }
        s->xip[s->nxip++] = (uint32_t)x;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Frees the in-progress list. */
void pgf_snap_free(struct pgf_snap *s)
{
    free(s->xip);
    s->xip = NULL;
    s->nxip = 0;
}

/* True when a comes before b in xid order (PostgreSQL's modulo-2^32 comparison). */
static int xid_precedes(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

/* Returns whether s sees xid; see window.h. */
int pgf_snap_sees(const struct pgf_snap *s, uint32_t xid)
{
    if (xid_precedes(xid, s->xmin))
        return 1;
    if (!xid_precedes(xid, s->xmax))
        return 0;
    for (size_t i = 0; i < s->nxip; i++)
        if (s->xip[i] == xid)
            return 0;
    return 1;
}

/* Returns a new window. */
struct pgf_window *pgf_window_new(void)
{
    return calloc(1, sizeof(struct pgf_window));
}

/* Forgets every remembered change. */
static void drop_entries(struct pgf_window *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->e[i].key);
    w->n = 0;
}

/* Stops recording and forgets; see window.h. */
void pgf_window_reset(struct pgf_window *w)
{
    drop_entries(w);
    for (int i = 0; i < w->ntables; i++) {
        free(w->tables[i].schema);
        free(w->tables[i].table);
        for (int c = 0; c < w->tables[i].ncols; c++)
            free(w->tables[i].cols[c]);
        free(w->tables[i].cols);
    }
    free(w->tables);
    w->tables = NULL;
    w->ntables = 0;
    w->low = 0;
}

/* Frees the window. */
void pgf_window_free(struct pgf_window *w)
{
    if (w == NULL)
        return;
    pgf_window_reset(w);
    free(w->e);
    free(w);
}

/* Starts watching a table; see window.h. */
int pgf_window_watch(struct pgf_window *w, const char *schema, const char *table, int ncols, const char *const *cols)
{
    struct watched *nt = realloc(w->tables, (size_t)(w->ntables + 1) * sizeof *nt);
    if (nt == NULL)
        return -1;
    w->tables = nt;
    struct watched *t = &nt[w->ntables];
    memset(t, 0, sizeof *t);
    t->schema = strdup(schema);
    t->table = strdup(table);
    t->cols = calloc((size_t)ncols + 1, sizeof *t->cols);
    int ok = t->schema && t->table && t->cols;
    for (int c = 0; ok && c < ncols; c++)
        ok = (t->cols[c] = strdup(cols[c])) != NULL, t->ncols = c + 1;
    if (!ok) {
        for (int c = 0; c < t->ncols; c++)
            free(t->cols[c]);
        free(t->cols);
        free(t->schema);
        free(t->table);
        return -1;
    }
    return w->ntables++;
}

/* Notes the low watermark. */
void pgf_window_low(struct pgf_window *w)
{
    w->low = 1;
}

/* Encodes a key; see window.h.  Each value is its length and bytes, so no two keys collide. */
size_t pgf_window_key(char *buf, size_t cap, const char *const *vals, const int *lens, int n)
{
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        /* "<len>:" or "N;", written by hand: this runs for every row of a chunk. */
        char head[16];
        int hl = 0;
        if (vals[i]) {
            char digits[12];
            int nd = 0;
            for (unsigned v = (unsigned)lens[i]; nd == 0 || v > 0; v /= 10)
                digits[nd++] = (char)('0' + v % 10);
            while (nd > 0)
                head[hl++] = digits[--nd];
            head[hl++] = ':';
        } else {
            head[hl++] = 'N';
            head[hl++] = ';';
        }
        if (need + (size_t)hl <= cap)
            memcpy(buf + need, head, (size_t)hl);
        need += (size_t)hl;
        if (vals[i]) {
            if (need + (size_t)lens[i] <= cap)
                memcpy(buf + need, vals[i], (size_t)lens[i]);
            need += (size_t)lens[i];
        }
    }
    return need;
}

/* Appends an entry (key copied, or NULL for an unusable change); returns 0 or -1. */
static int add_entry(struct pgf_window *w, uint32_t xid, int table, const char *key, size_t klen)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct entry *ne = realloc(w->e, cap * sizeof *ne);
        if (ne == NULL)
            return -1;
        w->e = ne;
        w->cap = cap;
    }
    char *copy = NULL;
    if (key && (copy = malloc(klen ? klen : 1)) == NULL)
        return -1;
    if (key)
        memcpy(copy, key, klen);
    w->e[w->n++] = (struct entry){.xid = xid, .after_low = (unsigned char)w->low, .table = table, .key = copy,
                                  .klen = klen};
    return 0;
}

/* Records the key of image row (rel's column order) for table t; an image without every key
 * column as text or NULL records an unusable change.  Returns 0 or -1. */
static int note_image(struct pgf_window *w, uint32_t xid, int t, const struct pgf_relation *rel,
                      const struct pgf_value *row)
{
    const struct watched *wt = &w->tables[t];
    const char *vals[32];
    int lens[32];
    if (wt->ncols > 32)
        return add_entry(w, xid, t, NULL, 0);
    for (int c = 0; c < wt->ncols; c++) {
        int found = 0;
        for (uint16_t a = 0; a < rel->natts && !found; a++) {
            if (strcmp(rel->attrs[a].name, wt->cols[c]) != 0)
                continue;
            found = 1;
            if (row[a].kind == PGF_VALUE_TEXT) {
                vals[c] = row[a].data;
                lens[c] = (int)row[a].len;
            } else if (row[a].kind == PGF_VALUE_NULL) {
                vals[c] = NULL;
                lens[c] = 0;
            } else {
                return add_entry(w, xid, t, NULL, 0);
            }
        }
        if (!found)
            return add_entry(w, xid, t, NULL, 0);
    }
    char small[512];
    size_t need = pgf_window_key(small, sizeof small, vals, lens, wt->ncols);
    if (need <= sizeof small)
        return add_entry(w, xid, t, small, need);
    char *big = malloc(need);
    if (big == NULL)
        return -1;
    pgf_window_key(big, need, vals, lens, wt->ncols);
    int rc = add_entry(w, xid, t, big, need);
    free(big);
    return rc;
}

/* Returns the watched table rel is, or -1. */
static int watched_of(const struct pgf_window *w, const struct pgf_relation *rel)
{
    for (int t = 0; t < w->ntables; t++) {
        const char *nsp = rel->nspname[0] ? rel->nspname : "pg_catalog";
        if (strcmp(w->tables[t].table, rel->relname) == 0 && strcmp(w->tables[t].schema, nsp) == 0)
            return t;
    }
    return -1;
}

/* Records an event; see window.h. */
int pgf_window_note(struct pgf_window *w, const struct pgf_event *ev)
{
    if (w->ntables == 0 || ev->txn == NULL)
        return 0;
    uint32_t xid = ev->txn->xid;
    if (ev->op == PGF_OP_TRUNCATE) {
        for (uint32_t i = 0; i < ev->truncate.nrels; i++) {
            int t = watched_of(w, ev->truncate.rels[i]);
            if (t >= 0 && add_entry(w, xid, t, NULL, 0) != 0)
                return -1;
        }
        return 0;
    }
    if (ev->op != PGF_OP_INSERT && ev->op != PGF_OP_UPDATE && ev->op != PGF_OP_DELETE)
        return 0;
    int t = watched_of(w, ev->rel);
    if (t < 0)
        return 0;
    if (ev->after && note_image(w, xid, t, ev->rel, ev->after) != 0)
        return -1;
    /* The old key: a delete's key (or its old row under FULL), an update's old image. */
    const struct pgf_value *old = ev->op == PGF_OP_DELETE ? ev->key : ev->before;
    if (old && note_image(w, xid, t, ev->rel, old) != 0)
        return -1;
    if (ev->op == PGF_OP_DELETE && ev->before && ev->before != ev->key && w->e[w->n - 1].key == NULL) {
        /* The key lacked a column the full old row has. */
        free(w->e[--w->n].key);
        if (note_image(w, xid, t, ev->rel, ev->before) != 0)
            return -1;
    }
    return 0;
}

/* FNV-1a over a key. */
static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

/* True when entry e would drop chunk rows of table under snapshot s. */
static int drops(const struct entry *e, int table, const struct pgf_snap *s)
{
    return e->table == table && (e->after_low || !pgf_snap_sees(s, e->xid));
}

/* Counts what would drop rows; see window.h. */
size_t pgf_window_pending(const struct pgf_window *w, int table, const struct pgf_snap *s)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++)
        n += drops(&w->e[i], table, s) ? 1 : 0;
    return n;
}

/* Decides the chunk's rows; see window.h. */
int pgf_window_high(struct pgf_window *w, int table, const struct pgf_snap *s, const char *const *keys,
                    const size_t *klens, size_t n, unsigned char *keep)
{
    /* The keys to drop, in an open-addressed set of entry indexes. */
    size_t ndrop = 0;
    int unusable = 0;
    for (size_t i = 0; i < w->n; i++) {
        struct entry *e = &w->e[i];
        if (!drops(e, table, s))
            continue;
        if (e->key == NULL)
            unusable = 1;
        ndrop++;
    }
    int rc = unusable;
    size_t cap = 16;
    while (cap < ndrop * 2)
        cap *= 2;
    size_t *set = NULL;
    if (!unusable && ndrop > 0 && (set = malloc(cap * sizeof *set)) == NULL)
        return -1;
    if (set) {
        for (size_t j = 0; j < cap; j++)
            set[j] = SIZE_MAX;
        for (size_t i = 0; i < w->n; i++) {
            struct entry *e = &w->e[i];
            if (e->table != table || (!e->after_low && pgf_snap_sees(s, e->xid)))
                continue;
            size_t j = key_hash(e->key, e->klen) & (cap - 1);
            while (set[j] != SIZE_MAX)
                j = (j + 1) & (cap - 1);
            set[j] = i;
        }
    }
    for (size_t r = 0; r < n; r++) {
        keep[r] = !unusable;
        if (set == NULL || unusable)
            continue;
        for (size_t j = key_hash(keys[r], klens[r]) & (cap - 1); set[j] != SIZE_MAX; j = (j + 1) & (cap - 1)) {
            const struct entry *e = &w->e[set[j]];
            if (e->klen == klens[r] && memcmp(e->key, keys[r], klens[r]) == 0) {
                keep[r] = 0;
                break;
            }
        }
    }
    free(set);
    /* Forget what this snapshot saw: every later snapshot sees it too.  What it did not see
     * stays, now as from before the next chunk's low watermark. */
    size_t out = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (pgf_snap_sees(s, w->e[i].xid)) {
            free(w->e[i].key);
            continue;
        }
        w->e[out] = w->e[i];
        w->e[out++].after_low = 0;
    }
    w->n = out;
    w->low = 0;
    return rc;
}

/* Returns the number of remembered changes. */
size_t pgf_window_size(const struct pgf_window *w)
{
    return w->n;
}
