/* txn.h - transaction assembly: decoded pgoutput messages in, events grouped by transaction
 * out.  It tracks Begin..Commit, builds each change's event (key, before and after by
 * pgoutput's rules, applied once here), stops at --endpos, drops pgfanout's own heartbeat
 * messages, delivers a non-transactional message as a transaction of its own, and closes a
 * transaction cut off by a reconnect.  Pure: no I/O and no logging; it returns what happened
 * and the caller (cdc/stream.c) logs and decides. */
#ifndef PGFANOUT_TXN_H
#define PGFANOUT_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "decoders/event.h"
#include "decoders/pgoutput.h"

/* The prefix of pgfanout's heartbeat messages, which only move the slot: they are never
 * handed on as events, but their transaction is (so it is confirmed). */
#define PGF_HEARTBEAT_PREFIX "pgfanout.heartbeat"

/* Where assembled events go.  Each callback returns 0, or nonzero to stop: feeding then
 * returns PGF_TXN_STOPPED and the callback's own error stands.  Everything a callback is
 * handed is valid only during the call. */
struct pgf_txn_consumer {
    /* One event of the open transaction; ev->txn is NULL for a non-transactional message. */
    int (*event)(void *ctx, const struct pgf_event *ev);
    /* The end of a transaction (end_lsn set), of a non-transactional message (a transaction
     * with only end_lsn = its LSN + 1), or of an abandoned one (end_lsn 0: ack nothing). */
    int (*commit)(void *ctx, const struct pgf_txn *txn);
    void *ctx;
};

/* What feeding one message did. */
enum pgf_txn_result {
    PGF_TXN_OK = 0,
    PGF_TXN_ENDPOS = 1,      /* --endpos reached: stop reading.  Either a commit at or past it
                              * was delivered, or the message begins a transaction (or is a
                              * non-transactional message) past it and was not delivered */
    PGF_TXN_STOPPED = 2,     /* a consumer callback returned nonzero */
    PGF_TXN_OUT_OF_STEP = 3, /* a change or transactional message outside Begin..Commit */
    PGF_TXN_OOM = 4,         /* no memory for the event scratch; nothing was delivered */
};

struct pgf_txn_asm;

/* Returns a new assembler, or NULL when out of memory.  With has_endpos, it stops at the
 * first transaction that commits past endpos (and at a non-transactional message past it),
 * and after delivering a commit whose end LSN reaches it. */
struct pgf_txn_asm *pgf_txn_asm_new(int has_endpos, uint64_t endpos);

/* Frees the assembler.  NULL is fine. */
void pgf_txn_asm_free(struct pgf_txn_asm *a);

/* Feeds one decoded message, which started at WAL position lsn (the XLogData's start), and
 * hands the resulting events and commits to c.  The events' arrays (key, before images) are
 * the assembler's scratch, valid until the next call; the rest points into msg and the
 * decoder's relation cache.  Relation, Type and heartbeat messages hand on nothing. */
enum pgf_txn_result pgf_txn_asm_feed(struct pgf_txn_asm *a, uint64_t lsn, const struct pgo_msg *msg,
                                     const struct pgf_txn_consumer *c);

/* Returns 1 between a Begin and its Commit, else 0. */
int pgf_txn_asm_in_txn(const struct pgf_txn_asm *a);

/* Closes a transaction cut off by a lost connection (or a stop) without acking it: when one
 * is open, hands c a commit with end_lsn 0 and forgets it.  The slot sends it again. */
void pgf_txn_asm_abandon(struct pgf_txn_asm *a, const struct pgf_txn_consumer *c);

#endif
