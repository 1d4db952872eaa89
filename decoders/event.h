/* event.h - what a decoded row change means: its op, its key, its before and after images.
 * Every sink renders the same event, so these rules live here once. Pure, no I/O. */
#ifndef PGFANOUT_EVENT_H
#define PGFANOUT_EVENT_H

#include "decoders/pgoutput.h"

enum pgf_op { PGF_OP_INSERT, PGF_OP_UPDATE, PGF_OP_DELETE, PGF_OP_TRUNCATE, PGF_OP_MESSAGE, PGF_OP_NONE };

/* Returns the op a message carries, or PGF_OP_NONE for begin/commit/relation/type/origin. */
enum pgf_op pgf_op_of(const struct pgo_msg *msg);

/* Returns "insert", "update", "delete", "truncate", "message" or "none". */
const char *pgf_op_name(enum pgf_op op);

/* Returns the key value of column att for a row change, or NULL when att is not a
 * replica-identity column.  Insert and update take it from the new row, falling back to the
 * old image for a column sent as unchanged TOAST; delete takes it from the old key or row. */
const struct pgo_value *pgf_change_key_value(const struct pgo_msg *msg, uint16_t att);

/* Returns the old image of an update or delete, or NULL when there is none worth sending:
 * pgoutput sent no old tuple, or it is a delete's old key, which is the key itself.
 * *only_keys is set for an update's old key ('K'): then only key columns carry meaning. */
const struct pgo_tuple *pgf_change_before(const struct pgo_msg *msg, int *only_keys);

/* Returns the new image of an insert or update, or NULL for delete. */
const struct pgo_tuple *pgf_change_after(const struct pgo_msg *msg);

#endif
