/* redis_cmdbuf.h - one transaction's Redis commands, collected while it is decoded and replayed
 * as often as the connection needs them.  Keys are deduplicated while the buffer is built, runs
 * of keys become one DEL or UNLINK of up to REDIS_CMDBUF_KEYS_PER_DEL keys, and a buffer that
 * outgrows its memory threshold moves its commands to an unlinked temporary file, so a huge
 * transaction costs disk rather than memory.  No sockets, no logging. */
#ifndef PGFANOUT_REDIS_CMDBUF_H
#define PGFANOUT_REDIS_CMDBUF_H

#include <stddef.h>
#include <stdint.h>

/* Keys per DEL or UNLINK command. */
#define REDIS_CMDBUF_KEYS_PER_DEL 256

/* What one stored command asks of Redis. */
enum redis_cmd_kind {
    REDIS_CMD_DEL = 0,
    REDIS_CMD_UNLINK,
    REDIS_CMD_PUBLISH,
    REDIS_CMD_GEN_LSN,  /* SET key <commit LSN as a decimal> */
    REDIS_CMD_GEN_INCR, /* INCR key */
    REDIS_CMD_CACHEOPS, /* one row object for the cacheops script (see redis_cacheops.h) */
};

/* Row objects per cacheops script call. */
#define REDIS_CMDBUF_ROWS_PER_CACHEOPS 256

struct pgf_cacheops_call;

/* One command ready for redisAsyncCommandArgv.  argv and argl point into the buffer (or into
 * this struct, for the LSN) and stay valid until the next redis_cmdbuf_next on that buffer. */
struct redis_cmd {
    int argc;
    const char *argv[REDIS_CMDBUF_KEYS_PER_DEL + 1];
    size_t argl[REDIS_CMDBUF_KEYS_PER_DEL + 1];
    size_t nkeys; /* keys or channels the command names, for metrics */
    size_t nleases; /* of those keys, how many are lease keys */
    char lsn[24];
};

struct redis_cmdbuf;

/* Returns an empty buffer that spills to a temporary file once it holds more than spill_bytes
 * in memory, or NULL when out of memory.  The caller frees it with redis_cmdbuf_free. */
struct redis_cmdbuf *redis_cmdbuf_new(size_t spill_bytes);

/* Frees the buffer and closes its spill file (which the system then deletes); NULL is fine. */
void redis_cmdbuf_free(struct redis_cmdbuf *b);

/* Appends a DEL, UNLINK, GEN_LSN or GEN_INCR of key (copied) unless the same kind and key is
 * already there since the last spill.  Returns 0, or -1 when out of memory or too large. */
int redis_cmdbuf_add_key(struct redis_cmdbuf *b, enum redis_cmd_kind kind, const char *key, size_t len);

/* Appends a DEL or UNLINK of key together with its lease key (both copied), unless the same
 * kind and key is already there since the last spill; the two are always sent in one command,
 * key first.  A lease_len of 0 is a key without a lease.  Returns 0, or -1 when out of memory,
 * too large, or kind is not DEL or UNLINK. */
int redis_cmdbuf_add_key_lease(struct redis_cmdbuf *b, enum redis_cmd_kind kind, const char *key, size_t len,
                               const char *lease, size_t lease_len);

/* Appends a PUBLISH of payload on channel (both copied); never deduplicated, since two
 * changes' messages differ in what they say.  Returns 0, or -1 when out of memory. */
int redis_cmdbuf_add_publish(struct redis_cmdbuf *b, const char *channel, size_t chlen, const char *payload,
                             size_t len);

/* Appends one cacheops row object (JSON, copied) for db_table (copied), or with rowlen 0 an
 * invalidation of the whole table, unless the same table and row is already there since the
 * last spill: identical row images are sent once.  call (borrowed, the same for every row of
 * this buffer) holds the prefix and mode; it must outlive the buffer.  Consecutive rows of one
 * table become one script call.  Returns 0, or -1 when out of memory or too large. */
int redis_cmdbuf_add_cacheops(struct redis_cmdbuf *b, const struct pgf_cacheops_call *call, const char *db_table,
                              size_t tlen, const char *row, size_t rowlen);

/* Marks the end of one change: past the threshold, the commands held in memory move to the
 * spill file (and deduplication starts afresh).  Returns 0, or -1 with a reason in err. */
int redis_cmdbuf_end_change(struct redis_cmdbuf *b, char *err, size_t errlen);

/* Ends building: frees the deduplication set, which only adding needs.  Nothing may be added
 * afterwards; reading and rewinding still work. */
void redis_cmdbuf_seal(struct redis_cmdbuf *b);

/* Empties the buffer for reuse: drops every command, the spill file and the set. */
void redis_cmdbuf_reset(struct redis_cmdbuf *b);

/* Returns the bytes of stored commands, spilled or not; 0 means there is nothing to send. */
uint64_t redis_cmdbuf_size(const struct redis_cmdbuf *b);

/* Returns the bytes held in memory (what back-pressure should count; spilled bytes are disk). */
size_t redis_cmdbuf_memory(const struct redis_cmdbuf *b);

/* Returns 1 while commands remain to be read by redis_cmdbuf_next, else 0. */
int redis_cmdbuf_unsent(const struct redis_cmdbuf *b);

/* Builds the next command into cmd: up to REDIS_CMDBUF_KEYS_PER_DEL consecutive keys of one
 * kind (a key's lease counted, and never split from it) as one DEL or UNLINK, up to
 * REDIS_CMDBUF_ROWS_PER_CACHEOPS consecutive cacheops rows of one table as one script call, or
 * one PUBLISH, SET (to commit_lsn) or INCR.  Returns 1 with cmd
 * filled, 0 when every command was read, or -1 with a reason in err. */
int redis_cmdbuf_next(struct redis_cmdbuf *b, uint64_t commit_lsn, struct redis_cmd *cmd, char *err, size_t errlen);

/* Starts reading again from the first command, to resend after a lost connection. */
void redis_cmdbuf_rewind(struct redis_cmdbuf *b);

#endif
