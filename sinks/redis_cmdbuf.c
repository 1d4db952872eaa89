/* redis_cmdbuf.c - a transaction's commands: a spilled prefix in a file, then the rest in memory.
 * See redis_cmdbuf.h. */
#include "sinks/redis_cmdbuf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "sinks/redis_cacheops.h"
#include "sinks/sink.h"

/* Reading spilled entries back goes through a window at least this large, so a run of small
 * entries costs one pread, not one each. */
#define READ_WINDOW (256u << 10)
/* The deduplication set's first size, in slots; it doubles while half full. */
#define SET_MIN 64

/* A growable byte buffer. */
struct buf {
    char *p;
    size_t len, cap;
};

/* Entries are [kind:1][alen:4][a][blen:4][b]; a is the key or channel, b the payload, or a DEL's
 * or UNLINK's lease key (or empty), or for CACHEOPS a is the table and b the row object (empty
 * for the whole table).
 * Offsets run over the spilled prefix first, then mem. */
struct redis_cmdbuf {
    size_t spill_bytes;
    struct buf mem;
    FILE *spill;
    uint64_t spill_len;
    uint64_t sent; /* entry bytes already turned into commands */

    /* Deduplication of what mem holds: offsets+1 of its entries, open addressing. */
    uint32_t *set;
    size_t set_cap, set_used;

    struct buf rd; /* a window of the spill file, at rd_off */
    uint64_t rd_off;
    struct buf args; /* copies of the keys of the DEL being built */
    const struct pgf_cacheops_call *cacheops; /* prefix and mode of CACHEOPS entries */
};

/* One decoded entry; pointers are valid until the next read. */
struct entry {
    int kind;
    const char *a, *b;
    uint32_t alen, blen;
    size_t size;
};

/* Makes an empty buffer; see redis_cmdbuf.h. */
struct redis_cmdbuf *redis_cmdbuf_new(size_t spill_bytes)
{
    struct redis_cmdbuf *b = calloc(1, sizeof *b);
    if (b)
        b->spill_bytes = spill_bytes;
    return b;
}

/* Drops the set itself; the next dedup add allocates a fresh one. */
static void set_free(struct redis_cmdbuf *b)
{
    free(b->set);
    b->set = NULL;
    b->set_cap = b->set_used = 0;
}

/* Empties the buffer; see redis_cmdbuf.h. */
void redis_cmdbuf_reset(struct redis_cmdbuf *b)
{
    free(b->mem.p);
    b->mem = (struct buf){0};
    if (b->spill)
        fclose(b->spill);
    b->spill = NULL;
    b->spill_len = 0;
    b->sent = 0;
    b->rd.len = 0;
    set_free(b);
}

/* Frees everything; see redis_cmdbuf.h. */
void redis_cmdbuf_free(struct redis_cmdbuf *b)
{
    if (b == NULL)
        return;
    redis_cmdbuf_reset(b);
    free(b->rd.p);
    free(b->args.p);
    free(b);
}

/* Hashes an entry's kind and key, and its payload when the kind dedups on both (FNV-1a). */
static uint32_t entry_hash(int kind, const char *key, size_t len, const char *p, size_t plen)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    h = (h ^ 0xffu) * 16777619u; /* ("ab","c") and ("a","bc") differ */
    for (size_t i = 0; i < plen; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* Whether a kind's entries are the same only when their payloads are too: a cacheops row is
 * its table and its values; a DEL's lease is a function of its key. */
static int dedup_payload(int kind)
{
    return kind == REDIS_CMD_CACHEOPS;
}

/* Reads the kind, key and payload of the mem entry at off. */
static const char *mem_key(const struct redis_cmdbuf *b, uint32_t off, int *kind, uint32_t *len, const char **p,
                           uint32_t *plen)
{
    const char *e = b->mem.p + off;
    *kind = (unsigned char)e[0];
    memcpy(len, e + 1, 4);
    memcpy(plen, e + 5 + *len, 4);
    *p = e + 9 + *len;
    return e + 5;
}

/* Looks up (kind, key[, payload]) in the set; returns the slot to use and sets *found when the
 * entry is already there. */
static size_t set_slot(const struct redis_cmdbuf *b, int kind, const char *key, size_t len, const char *p,
                       size_t plen, int *found)
{
    if (!dedup_payload(kind))
        plen = 0;
    size_t mask = b->set_cap - 1, i = entry_hash(kind, key, len, p, plen) & mask;
    *found = 0;
    for (; b->set[i] != 0; i = (i + 1) & mask) {
        int k;
        uint32_t l, pl;
        const char *ep;
        const char *s = mem_key(b, b->set[i] - 1, &k, &l, &ep, &pl);
        if (k == kind && l == len && memcmp(s, key, len) == 0 &&
            (!dedup_payload(kind) || (pl == plen && memcmp(ep, p, plen) == 0))) {
            *found = 1;
            break;
        }
    }
    return i;
}

/* Doubles the set, rehashing the entries it holds; returns 0 or -1. */
static int set_grow(struct redis_cmdbuf *b)
{
    size_t ncap = b->set_cap ? b->set_cap * 2 : SET_MIN;
    uint32_t *old = b->set;
    size_t oldcap = b->set_cap;
    if ((b->set = calloc(ncap, sizeof *b->set)) == NULL) {
        b->set = old;
        return -1;
    }
    b->set_cap = ncap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i]) {
            int k, found;
            uint32_t l, pl;
            const char *ep;
            const char *s = mem_key(b, old[i] - 1, &k, &l, &ep, &pl);
            b->set[set_slot(b, k, s, l, ep, pl, &found)] = old[i];
        }
    free(old);
    return 0;
}

/* Appends an entry, deduplicated unless it is a PUBLISH; returns 0 or -1. */
static int add_entry(struct redis_cmdbuf *b, int kind, const char *a, size_t alen, const char *p, size_t plen)
{
    int dedupe = kind != REDIS_CMD_PUBLISH;
    size_t slot = 0;
    if (dedupe) {
        if ((b->set_used + 1) * 2 > b->set_cap && set_grow(b) != 0)
            return -1;
        int found;
        slot = set_slot(b, kind, a, alen, p, plen, &found);
        if (found)
            return 0;
    }
    if (alen > UINT32_MAX - 16 || plen > UINT32_MAX - 16 || b->mem.len + alen + plen + 9 > UINT32_MAX)
        return -1;
    if (sink_grow((void **)&b->mem.p, &b->mem.cap, b->mem.len + 9 + alen + plen) != 0)
        return -1;
    char *e = b->mem.p + b->mem.len;
    uint32_t a32 = (uint32_t)alen, p32 = (uint32_t)plen;
    e[0] = (char)kind;
    memcpy(e + 1, &a32, 4);
    memcpy(e + 5, a, alen);
    memcpy(e + 5 + alen, &p32, 4);
    if (plen)
        memcpy(e + 9 + alen, p, plen);
    if (dedupe) {
        b->set[slot] = (uint32_t)b->mem.len + 1;
        b->set_used++;
    }
    b->mem.len += 9 + alen + plen;
    return 0;
}

/* Appends a key command; see redis_cmdbuf.h. */
int redis_cmdbuf_add_key(struct redis_cmdbuf *b, enum redis_cmd_kind kind, const char *key, size_t len)
{
    if (kind == REDIS_CMD_PUBLISH)
        return -1;
    return add_entry(b, kind, key, len, NULL, 0);
}

/* Appends a key with its lease; see redis_cmdbuf.h. */
int redis_cmdbuf_add_key_lease(struct redis_cmdbuf *b, enum redis_cmd_kind kind, const char *key, size_t len,
                               const char *lease, size_t lease_len)
{
    if (kind != REDIS_CMD_DEL && kind != REDIS_CMD_UNLINK)
        return -1;
    /* Deduplicated on the key alone: its lease is a function of it. */
    return add_entry(b, kind, key, len, lease, lease_len);
}

/* Appends a cacheops row; see redis_cmdbuf.h. */
int redis_cmdbuf_add_cacheops(struct redis_cmdbuf *b, const struct pgf_cacheops_call *call, const char *db_table,
                              size_t tlen, const char *row, size_t rowlen)
{
    if (b->cacheops && b->cacheops != call)
        return -1;
    b->cacheops = call;
    return add_entry(b, REDIS_CMD_CACHEOPS, db_table, tlen, row, rowlen);
}

/* Appends a PUBLISH; see redis_cmdbuf.h. */
int redis_cmdbuf_add_publish(struct redis_cmdbuf *b, const char *channel, size_t chlen, const char *payload,
                             size_t len)
{
    return add_entry(b, REDIS_CMD_PUBLISH, channel, chlen, payload, len);
}

/* Spills past the threshold; see redis_cmdbuf.h. */
int redis_cmdbuf_end_change(struct redis_cmdbuf *b, char *err, size_t errlen)
{
    if (b->mem.len <= b->spill_bytes)
        return 0;
    if (b->spill == NULL && (b->spill = tmpfile()) == NULL) {
        snprintf(err, errlen, "cannot create a temporary file for a large transaction: %s", strerror(errno));
        return -1;
    }
    if (fwrite(b->mem.p, 1, b->mem.len, b->spill) != b->mem.len || fflush(b->spill) != 0) {
        snprintf(err, errlen, "cannot write a large transaction to a temporary file: %s", strerror(errno));
        return -1;
    }
    b->spill_len += b->mem.len;
    b->mem.len = 0;
    /* The set holds offsets into mem, which now starts over. */
    if (b->set_used)
        memset(b->set, 0, b->set_cap * sizeof *b->set);
    b->set_used = 0;
    return 0;
}

/* Frees the set; see redis_cmdbuf.h. */
void redis_cmdbuf_seal(struct redis_cmdbuf *b)
{
    set_free(b);
}

/* Total entry bytes; see redis_cmdbuf.h. */
uint64_t redis_cmdbuf_size(const struct redis_cmdbuf *b)
{
    return b->spill_len + b->mem.len;
}

/* Bytes in memory; see redis_cmdbuf.h. */
size_t redis_cmdbuf_memory(const struct redis_cmdbuf *b)
{
    return b->mem.len;
}

/* Whether reading is done; see redis_cmdbuf.h. */
int redis_cmdbuf_unsent(const struct redis_cmdbuf *b)
{
    return b->sent < redis_cmdbuf_size(b);
}

/* Starts over; see redis_cmdbuf.h. */
void redis_cmdbuf_rewind(struct redis_cmdbuf *b)
{
    b->sent = 0;
}

/* Returns len bytes of the spill file at off, through the read window; NULL on error. */
static const char *spill_bytes(struct redis_cmdbuf *b, uint64_t off, size_t len)
{
    if (b->rd.len > 0 && off >= b->rd_off && off + len <= b->rd_off + b->rd.len)
        return b->rd.p + (off - b->rd_off);
    size_t want = len > READ_WINDOW ? len : READ_WINDOW;
    if (want > b->spill_len - off)
        want = (size_t)(b->spill_len - off);
    if (want < len || sink_grow((void **)&b->rd.p, &b->rd.cap, want) != 0)
        return NULL;
    b->rd.len = 0; /* invalid until the read succeeds */
    ssize_t got = pread(fileno(b->spill), b->rd.p, want, (off_t)off);
    if (got < 0 || (size_t)got < len)
        return NULL;
    b->rd.len = (size_t)got;
    b->rd_off = off;
    return b->rd.p;
}

/* Reads the entry at offset off; returns 0 or -1 with err set. */
static int read_entry(struct redis_cmdbuf *b, uint64_t off, struct entry *e, char *err, size_t errlen)
{
    const char *p;
    uint32_t alen, blen;
    if (off >= b->spill_len) {
        p = b->mem.p + (off - b->spill_len);
    } else {
        /* Each read covers the earlier ones, so the last pointer holds the whole entry. */
        if ((p = spill_bytes(b, off, 5)) == NULL)
            goto fail;
        memcpy(&alen, p + 1, 4);
        if ((p = spill_bytes(b, off, 9 + (size_t)alen)) == NULL)
            goto fail;
        memcpy(&blen, p + 5 + alen, 4);
        if ((p = spill_bytes(b, off, 9 + (size_t)alen + blen)) == NULL)
            goto fail;
    }
    e->kind = (unsigned char)p[0];
    memcpy(&e->alen, p + 1, 4);
    e->a = p + 5;
    memcpy(&e->blen, p + 5 + e->alen, 4);
    e->b = p + 9 + e->alen;
    e->size = 9 + (size_t)e->alen + e->blen;
    return 0;
fail:
    snprintf(err, errlen, "cannot read a large transaction back from its temporary file: %s",
             strerror(errno ? errno : EIO));
    return -1;
}

/* Copies len bytes into the argument buffer and records where; returns 0 or -1. */
static int put_arg(struct redis_cmdbuf *b, const char *p, size_t len, size_t *off)
{
    if (sink_grow((void **)&b->args.p, &b->args.cap, b->args.len + len + 1) != 0)
        return -1;
    memcpy(b->args.p + b->args.len, p, len);
    *off = b->args.len;
    b->args.len += len;
    return 0;
}

/* Gathers the run of DEL or UNLINK entries starting with e into one command, each key followed
 * by its lease key: one command deletes both, so no fill can land between the two deletes. */
static int next_del(struct redis_cmdbuf *b, struct entry *e, struct redis_cmd *cmd, char *err, size_t errlen)
{
    int kind = e->kind, argc = 0;
    size_t offs[REDIS_CMDBUF_KEYS_PER_DEL];
    uint64_t end = redis_cmdbuf_size(b);
    b->args.len = 0;
    cmd->nleases = 0;
    /* Copy the keys: reading further entries may move the spill window under them. */
    for (;;) {
        if (put_arg(b, e->a, e->alen, &offs[argc]) != 0)
            goto oom;
        cmd->argl[argc + 1] = e->alen;
        argc++;
        if (e->blen > 0) {
            if (put_arg(b, e->b, e->blen, &offs[argc]) != 0)
                goto oom;
            cmd->argl[argc + 1] = e->blen;
            argc++;
            cmd->nleases++;
        }
        b->sent += e->size;
        if (b->sent >= end || argc >= REDIS_CMDBUF_KEYS_PER_DEL)
            break;
        if (read_entry(b, b->sent, e, err, errlen) != 0)
            return -1;
        /* The next key and its lease must fit whole. */
        if (e->kind != kind || argc + 1 + (e->blen > 0) > REDIS_CMDBUF_KEYS_PER_DEL)
            break;
    }
    cmd->argv[0] = kind == REDIS_CMD_UNLINK ? "UNLINK" : "DEL";
    for (int i = 0; i < argc; i++)
        cmd->argv[i + 1] = b->args.p + offs[i];
    cmd->nkeys = (size_t)argc;
    cmd->argc = argc + 1;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* Gathers the run of cacheops rows of one table starting with e into one script call: its
 * arguments are copied into args (reading on may move the spill window), the rows joined
 * into one JSON array.  A whole-table entry in the run makes the call whole-table. */
static int next_cacheops(struct redis_cmdbuf *b, struct entry *e, struct redis_cmd *cmd, char *err, size_t errlen)
{
    uint64_t end = redis_cmdbuf_size(b);
    const char *P = b->cacheops ? b->cacheops->prefix : "";
    size_t off_key, off_tbl, off_rows, tlen = e->alen, unused;
    int rows = 0, wide = 0;
    b->args.len = 0;
    if (b->cacheops == NULL) {
        snprintf(err, errlen, "corrupt command buffer (a cacheops row without its settings)");
        return -1;
    }
    if (put_arg(b, P, strlen(P), &off_key) != 0 || put_arg(b, "schemes:", 8, &unused) != 0 ||
        put_arg(b, e->a, e->alen, &unused) != 0 || put_arg(b, e->a, e->alen, &off_tbl) != 0 ||
        put_arg(b, "[", 1, &off_rows) != 0)
        goto oom;
    size_t sklen = off_tbl - off_key;
    for (;;) {
        if (e->blen == 0)
            wide = 1;
        else if ((rows > 0 && put_arg(b, ",", 1, &unused) != 0) || put_arg(b, e->b, e->blen, &unused) != 0)
            goto oom;
        else
            rows++;
        b->sent += e->size;
        if (b->sent >= end || rows >= REDIS_CMDBUF_ROWS_PER_CACHEOPS)
            break;
        if (read_entry(b, b->sent, e, err, errlen) != 0)
            return -1;
        if (e->kind != REDIS_CMD_CACHEOPS || e->alen != tlen || memcmp(e->a, b->args.p + off_tbl, tlen) != 0)
            break;
    }
    if (put_arg(b, "]", 1, &unused) != 0)
        goto oom;
    pgf_cacheops_command(b->cacheops, b->args.p + off_key, sklen, b->args.p + off_tbl, tlen, b->args.p + off_rows,
                         b->args.len - off_rows, wide, cmd);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* Builds the next command; see redis_cmdbuf.h. */
int redis_cmdbuf_next(struct redis_cmdbuf *b, uint64_t commit_lsn, struct redis_cmd *cmd, char *err, size_t errlen)
{
    if (!redis_cmdbuf_unsent(b))
        return 0;
    struct entry e = {0}; /* read_entry fills it; GCC 12 -O3 cannot tell */
    if (read_entry(b, b->sent, &e, err, errlen) != 0)
        return -1;
    switch (e.kind) {
    case REDIS_CMD_DEL:
    case REDIS_CMD_UNLINK:
        if (next_del(b, &e, cmd, err, errlen) != 0)
            return -1;
        cmd->argl[0] = strlen(cmd->argv[0]);
        return 1;
    case REDIS_CMD_CACHEOPS:
        return next_cacheops(b, &e, cmd, err, errlen) != 0 ? -1 : 1;
    case REDIS_CMD_PUBLISH:
        cmd->argv[0] = "PUBLISH", cmd->argv[1] = e.a, cmd->argv[2] = e.b;
        cmd->argl[1] = e.alen, cmd->argl[2] = e.blen;
        cmd->argc = 3;
        break;
    case REDIS_CMD_GEN_LSN:
        /* A decimal position: comparable, and an int to Django's cache, which unpickles
         * anything that is not. */
        snprintf(cmd->lsn, sizeof cmd->lsn, "%" PRIu64, commit_lsn);
        cmd->argv[0] = "SET", cmd->argv[1] = e.a, cmd->argv[2] = cmd->lsn;
        cmd->argl[1] = e.alen, cmd->argl[2] = strlen(cmd->lsn);
        cmd->argc = 3;
        break;
    case REDIS_CMD_GEN_INCR:
        cmd->argv[0] = "INCR", cmd->argv[1] = e.a;
        cmd->argl[1] = e.alen;
        cmd->argc = 2;
        break;
    default:
        snprintf(err, errlen, "corrupt command buffer (entry kind %d)", e.kind);
        return -1;
    }
    cmd->argl[0] = strlen(cmd->argv[0]);
    cmd->nkeys = 1;
    cmd->nleases = 0;
    b->sent += e.size;
    return 1;
}
