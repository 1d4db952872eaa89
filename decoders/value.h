/* value.h - how a column's PostgreSQL type maps onto event value classes. Pure, no I/O. */
#ifndef PGFANOUT_VALUE_H
#define PGFANOUT_VALUE_H

#include <stdint.h>

/* Built-in type OIDs that get a non-text rendering (from pg_type.dat). */
#define PGF_OID_BOOL 16
#define PGF_OID_BYTEA 17
#define PGF_OID_INT8 20
#define PGF_OID_INT2 21
#define PGF_OID_INT4 23
#define PGF_OID_OID 26
#define PGF_OID_FLOAT4 700
#define PGF_OID_FLOAT8 701

enum pgf_vclass {
    PGF_VCLASS_TEXT = 0, /* rendered as PostgreSQL's own text output */
    PGF_VCLASS_BOOL,
    PGF_VCLASS_INT,
    PGF_VCLASS_FLOAT,
};

/* Returns the value class for a type OID; unknown OIDs (domains, enums, ...) are TEXT. */
enum pgf_vclass pgf_value_class(uint32_t type_oid);

#endif
