/* checkpoint.c - confirmed position = what every sink has acked. */
#include "cdc/checkpoint.h"

/* Remembers the end of the newest transaction handed out. */
void pgf_checkpoint_written(struct pgf_checkpoint *cp, uint64_t end_lsn)
{
    if (end_lsn > cp->written)
        cp->written = end_lsn;
}

/* Remembers a keepalive position seen between transactions. */
void pgf_checkpoint_idle(struct pgf_checkpoint *cp, uint64_t wal_end)
{
    if (wal_end > cp->idle)
        cp->idle = wal_end;
}

/* Lowest ack over all sinks; the keepalive position only once nothing written is unacked,
 * because everything before that position has then been received and delivered. */
uint64_t pgf_checkpoint_update(struct pgf_checkpoint *cp, struct sink *const *sinks, size_t nsinks)
{
    uint64_t acked = cp->written;
    for (size_t i = 0; i < nsinks; i++)
        if (sinks[i]->acked_lsn < acked)
            acked = sinks[i]->acked_lsn;
    if (acked >= cp->written && cp->idle > acked)
        acked = cp->idle;
    if (acked > cp->confirmed)
        cp->confirmed = acked;
    return cp->confirmed;
}
