/* state.h - pgfanout's own durable state, kept outside the application's database so the
 * least-privilege role (REPLICATION plus SELECT) works: which system and slot it streamed
 * from, the last position it confirmed, and the progress of snapshots.  The document is JSON;
 * a store (a state file, or a compacted Kafka topic) keeps the newest one. */
#ifndef PGFANOUT_STATE_H
#define PGFANOUT_STATE_H

#include <stddef.h>
#include <stdint.h>

/* One table of a snapshot job and how far it got. */
struct pgf_state_table {
    char *schema, *table;
    char *where;      /* the request's filter (SQL), or NULL */
    char **from, **to; /* key bounds (text, inclusive), nkey values each, or NULL */
    char **last_key;  /* the last key acknowledged downstream, nkey values, or NULL before the first chunk */
    int nkey;         /* values in from/to/last_key */
    int done;
    uint64_t rows;    /* rows acknowledged downstream */
    uint64_t chunks;
};

/* The whole document. */
struct pgf_state {
    char system_id[32]; /* IDENTIFY_SYSTEM's systemid; "" when not known */
    char slot[128];
    uint64_t confirmed_lsn; /* the last position confirmed to PostgreSQL (written now and then) */
    char job[32];           /* why the running snapshot job exists: "initial", "backfill", "slot_loss"; "" = none */
    int initial_done;       /* the initial snapshot finished once: snapshot: initial never repeats it */
    struct pgf_state_table *tables;
    size_t ntables;
};

/* Frees what s holds and zeroes it; s itself is the caller's. */
void pgf_state_clear(struct pgf_state *s);

/* Returns the JSON document of s (malloc'd, NUL-terminated), or NULL when out of memory. */
char *pgf_state_to_json(const struct pgf_state *s);

/* Parses a document into *s (cleared first).  Returns 0, or -1 with what is wrong in err. */
int pgf_state_from_json(const char *json, size_t len, struct pgf_state *s, char *err, size_t errlen);

/* Called once a save is durable (err NULL) or has failed (err says why). */
typedef void (*pgf_state_saved_cb)(void *arg, const char *err);

struct pgf_state_store;

/* What every store does. */
struct pgf_state_store_ops {
    const char *name; /* "file" or "kafka" */
    /* Reads the newest document, before the loop runs (it may wait, bounded).  Returns 0 with
     * *json (malloc'd) and *len, 1 when there is none yet, or -1 with err set (the store
     * cannot be read: the caller stops, so no state is silently ignored). */
    int (*load)(struct pgf_state_store *st, char **json, size_t *len, char *err, size_t errlen);
    /* Starts saving a document (copied); done runs later, from the loop, never inside the
     * call.  Returns 0, or -1 with err set when it cannot start (done is not called). */
    int (*save)(struct pgf_state_store *st, const char *json, size_t len, pgf_state_saved_cb done, void *arg,
                char *err, size_t errlen);
    /* Waits up to timeout_ms for saves under way to finish (at exit); returns 0 when none is left. */
    int (*flush)(struct pgf_state_store *st, int timeout_ms);
    /* Releases the store; NULL-safe through pgf_state_store_close. */
    void (*close)(struct pgf_state_store *st);
};

/* The part every store shares; a store embeds it first. */
struct pgf_state_store {
    const struct pgf_state_store_ops *ops;
    char where[512]; /* for messages: the file's path, or the topic and key */
};

/* Closes st; NULL is fine. */
static inline void pgf_state_store_close(struct pgf_state_store *st)
{
    if (st)
        st->ops->close(st);
}

struct event_base;

/* Opens the file store: dir/<slot>.json, written atomically (a temporary file, fsync, rename,
 * fsync of the directory).  The directory must exist and be writable: checked here, so a bad
 * state_dir stops pgfanout before it streams.  Returns the store, or NULL with err set. */
struct pgf_state_store *pgf_state_file_open(struct event_base *base, const char *dir, const char *slot, char *err,
                                            size_t errlen);

#endif
