/* checkpoint.h - the position confirmed to PostgreSQL.  It is the end LSN of the newest
 * transaction that every sink has acked, together with every transaction before it; when
 * nothing is pending, it may move on to the server's keepalive position so that an idle slot
 * does not pin WAL.  It never moves backwards. */
#ifndef PGFANOUT_CHECKPOINT_H
#define PGFANOUT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "sinks/sink.h"

struct pgf_checkpoint {
    uint64_t written;   /* end LSN of the last transaction handed to the sinks */
    uint64_t idle;      /* a keepalive position seen between transactions */
    uint64_t confirmed; /* what we tell the server is flushed */
};

/* Records that the transaction ending at end_lsn was handed to every sink. */
void pgf_checkpoint_written(struct pgf_checkpoint *cp, uint64_t end_lsn);

/* Records a keepalive position received while no transaction was open. */
void pgf_checkpoint_idle(struct pgf_checkpoint *cp, uint64_t wal_end);

/* Recomputes and returns the confirmed position from the sinks' acks. */
uint64_t pgf_checkpoint_update(struct pgf_checkpoint *cp, struct sink *const *sinks, size_t nsinks);

#endif
